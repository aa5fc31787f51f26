/* aws_client.c - the AWS API client: EC2 query, awsJson1_1, rest-json and
 * rest-xml calls, signed, retried and decoded (see aws_client.h).
 *
 * Every call goes through aws_send(), which runs the retry loop around
 * aws_attempt().  An attempt builds the header set, signs it with SigV4 at the
 * hooks' clock, performs the exchange through the hooks' transport (a body
 * from memory or streamed from a file rewound first, a reply to memory or a
 * file) and wipes the credential-bearing header lines.  The loop classifies
 * what came back — a transport failure, a 2xx, or an error reply decoded by
 * the protocol's parser — and either pauses (full jitter) and tries again or
 * turns it into a kiln_error plus a struct kiln_aws_error.  The public calls
 * only encode their request and decode the 2xx reply; s3_client.c is S3's
 * operations on kiln_aws_rest_xml_call, with no transport of its own.
 *
 * XML is read with libxml2 (network access and DTD loading off, entity
 * expansion left to the predefined entities), once the library's global state
 * is initialised, which is done under pthread_once so clients can be made
 * from several threads. */
#include "aws_client.h"

#include <ctype.h>
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include <libxml/parser.h>

#include "buf.h"
#include "cleanup.h"
#include "digest.h"
#include "log.h"
#include "xalloc.h"
#include "xml_doc.h"

#ifndef KILN_VERSION
#define KILN_VERSION "unknown"
#endif

#define EC2_CONTENT_TYPE "application/x-www-form-urlencoded; charset=utf-8"
#define JSON_CONTENT_TYPE "application/x-amz-json-1.1"

/* What kiln knows of each service: the name requests are signed for and,
 * for awsJson1_1 services, the X-Amz-Target prefix.  A service id not listed
 * signs under its own name. */
struct service_info {
  const char *id;
  const char *signing_name;
  const char *json_target_prefix;
};

static const struct service_info known_services[] = {
  {"ec2", "ec2", NULL},
  {"ssm", "ssm", "AmazonSSM"},
  {"ecr", "ecr", "AmazonEC2ContainerRegistry_V20150921"},
  {"ebs", "ebs", NULL},
  {"s3", "s3", NULL},
  {"imagebuilder", "imagebuilder", NULL},
};

struct kiln_aws_client {
  char *service;             /* "ec2" */
  char *display_name;        /* "ec2", or what the options say ("S3") */
  char *signing_name;        /* "ec2" */
  const char *json_target_prefix; /* static, or NULL */
  char *region;
  char *endpoint;            /* "http://127.0.0.1:4566" */
  char *scheme;              /* "http" */
  char *authority;           /* "127.0.0.1:4566": the Host header */
  char *base_path;           /* decoded path from the endpoint URL: "" or "/prefix" */
  bool endpoint_custom;      /* configured, not AWS's own */
  struct kiln_aws_credentials creds;
  struct kiln_aws_retry_policy retry; /* defaults applied */
  long timeout_seconds;      /* per attempt; 0: none */
  bool insecure;
  struct kiln_aws_hooks hooks; /* every member set */
};

/* ---- the real world, behind the hooks ---- */

static time_t
real_now (void *opaque)
{
  return time (NULL);
}

/* One nanosleep: a signal ends the pause early, so a kiln being interrupted
 * reaches its cleanup without waiting out a backoff. */
static void
real_sleep_ms (long ms, void *opaque)
{
  if (ms <= 0)
    return;
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
  nanosleep (&ts, NULL);
}

static double
real_random (void *opaque)
{
  uint64_t v;
  if (getrandom (&v, sizeof v, GRND_NONBLOCK) != (ssize_t) sizeof v)
    {
      /* Jitter only spreads clients apart; a weak source is acceptable. */
      struct timespec ts;
      clock_gettime (CLOCK_MONOTONIC, &ts);
      v = (uint64_t) ts.tv_nsec * 0x9E3779B97F4A7C15ull ^ (uint64_t) ts.tv_sec;
    }
  return (double) (v >> 11) / (double) (1ull << 53);
}

static int
real_perform (const struct kiln_http_request *req, struct kiln_http_response *resp, kiln_error **err, void *opaque)
{
  return kiln_http_perform (req, resp, err);
}

/* ---- the client ---- */

void
kiln_aws_client_free (struct kiln_aws_client *c)
{
  if (c == NULL)
    return;
  kiln_aws_credentials_release (&c->creds);
  free (c->service);
  free (c->display_name);
  free (c->signing_name);
  free (c->region);
  free (c->endpoint);
  free (c->scheme);
  free (c->authority);
  free (c->base_path);
  free (c);
}

static const struct service_info *
find_service (const char *id)
{
  for (size_t i = 0; i < sizeof known_services / sizeof known_services[0]; i++)
    if (strcmp (known_services[i].id, id) == 0)
      return &known_services[i];
  return NULL;
}

int
kiln_aws_client_new (const struct kiln_aws_config *cfg, const char *service_id,
                     const struct kiln_aws_client_options *opts, struct kiln_aws_client **out, kiln_error **err)
{
  static const struct kiln_aws_client_options no_options = {0};
  *out = NULL;
  if (opts == NULL)
    opts = &no_options;
  if (service_id == NULL || *service_id == '\0')
    return kiln_fail_invalid (err, "AWS client: no service named");
  for (const char *p = service_id; *p; p++)
    if (!(islower ((unsigned char) *p) || isdigit ((unsigned char) *p) || *p == '-'))
      return kiln_fail_invalid (err, "AWS client: '%s' is not a service id (lowercase, like \"ec2\")", service_id);

  struct kiln_aws_client *c = kiln_xcalloc (1, sizeof *c);
  struct kiln_aws_endpoint ep = {0};
  int ret = -1;
  const struct service_info *info = find_service (service_id);
  c->service = kiln_xstrdup (service_id);
  c->display_name = kiln_xstrdup (opts->display_name ? opts->display_name : service_id);
  c->signing_name = kiln_xstrdup (info ? info->signing_name : service_id);
  c->json_target_prefix = info ? info->json_target_prefix : NULL;

  const char *region = opts->region && *opts->region ? opts->region : kiln_aws_config_region (cfg);
  if (region == NULL || *region == '\0')
    {
      kiln_fail_invalid (err,
                         "%s: no region configured (give --region, set AWS_REGION or AWS_DEFAULT_REGION, "
                         "or set region in profile '%s')",
                         c->display_name, kiln_aws_config_profile (cfg));
      goto out;
    }
  c->region = kiln_xstrdup (region);
  if (kiln_aws_config_credentials (cfg, &c->creds, err) < 0)
    {
      kiln_error_prefix (err, "%s", c->display_name);
      goto out;
    }
  if (kiln_aws_config_endpoint (cfg, service_id, opts->endpoint_url, c->region, &ep, err) < 0)
    {
      kiln_error_prefix (err, "%s", c->display_name);
      goto out;
    }
  c->endpoint = kiln_xstrdup (ep.url);
  c->endpoint_custom = ep.custom;
  if (kiln_aws_endpoint_split (&ep, &c->scheme, &c->authority, &c->base_path, err) < 0)
    {
      kiln_error_prefix (err, "%s", c->display_name);
      goto out;
    }

  c->retry.max_attempts = opts->retry.max_attempts > 0 ? opts->retry.max_attempts : KILN_AWS_DEFAULT_MAX_ATTEMPTS;
  c->retry.base_delay_ms = opts->retry.base_delay_ms > 0 ? opts->retry.base_delay_ms : KILN_AWS_DEFAULT_BASE_DELAY_MS;
  c->retry.max_delay_ms = opts->retry.max_delay_ms > 0 ? opts->retry.max_delay_ms : KILN_AWS_DEFAULT_MAX_DELAY_MS;
  c->timeout_seconds = opts->timeout_seconds > 0   ? opts->timeout_seconds
                       : opts->timeout_seconds < 0 ? 0
                                                   : KILN_AWS_DEFAULT_TIMEOUT_SECONDS;
  c->insecure = opts->insecure;
  if (opts->hooks)
    c->hooks = *opts->hooks;
  if (c->hooks.now == NULL)
    c->hooks.now = real_now;
  if (c->hooks.sleep_ms == NULL)
    c->hooks.sleep_ms = real_sleep_ms;
  if (c->hooks.random == NULL)
    c->hooks.random = real_random;
  if (c->hooks.perform == NULL)
    c->hooks.perform = real_perform;
  kiln_xml_init ();
  kiln_log_debug ("%s: endpoint %s (from %s), region %s, credentials from %s", service_id, c->endpoint, ep.source,
                  c->region, c->creds.source ? c->creds.source : "?");
  *out = c;
  c = NULL;
  ret = 0;
out:
  kiln_aws_endpoint_release (&ep);
  kiln_aws_client_free (c);
  return ret;
}

const char *
kiln_aws_client_service (const struct kiln_aws_client *c)
{
  return c->service;
}

const char *
kiln_aws_client_region (const struct kiln_aws_client *c)
{
  return c->region;
}

const char *
kiln_aws_client_endpoint (const struct kiln_aws_client *c)
{
  return c->endpoint;
}

const char *
kiln_aws_client_signing_name (const struct kiln_aws_client *c)
{
  return c->signing_name;
}

const char *
kiln_aws_client_authority (const struct kiln_aws_client *c)
{
  return c->authority;
}

bool
kiln_aws_client_endpoint_custom (const struct kiln_aws_client *c)
{
  return c->endpoint_custom;
}

/* ---- errors ---- */

void
kiln_aws_error_release (struct kiln_aws_error *e)
{
  if (e == NULL)
    return;
  free (e->code);
  free (e->message);
  free (e->request_id);
  memset (e, 0, sizeof *e);
}

bool
kiln_aws_error_is (const struct kiln_aws_error *e, const char *code)
{
  return e && e->code && code && strcmp (e->code, code) == 0;
}

/* The text of node's first child named by any of names (NULL-terminated):
 * AWS spells the request id RequestID, RequestId or requestId. */
static char *
xml_text_any (xmlNode *node, const char *const *names)
{
  for (; *names; names++)
    {
      char *t = kiln_aws_xml_text (node, *names);
      if (t)
        return t;
    }
  return NULL;
}

int
kiln_aws_parse_ec2_error (const char *body, size_t len, struct kiln_aws_error *e)
{
  if (body == NULL || len == 0)
    return -1;
  xmlDoc *doc = kiln_xml_parse_untrusted (body, len, "aws-reply.xml");
  if (doc == NULL)
    return -1;
  xmlNode *root = kiln_aws_xml_root (doc);
  /* EC2: <Response><Errors><Error>; other query services:
   * <ErrorResponse><Error>. */
  xmlNode *error = kiln_aws_xml_find (root, "Errors/Error");
  if (error == NULL)
    error = kiln_aws_xml_child (root, "Error");
  if (error == NULL && root && xmlStrcmp (root->name, BAD_CAST "Error") == 0)
    error = root;
  static const char *const request_id_names[] = {"RequestID", "RequestId", "requestId", NULL};
  free (e->code);
  free (e->message);
  free (e->request_id);
  e->code = error ? kiln_aws_xml_text (error, "Code") : NULL;
  e->message = error ? kiln_aws_xml_text (error, "Message") : NULL;
  e->request_id = xml_text_any (root, request_id_names);
  xmlFreeDoc (doc);
  if (e->code && *e->code == '\0')
    {
      free (e->code);
      e->code = NULL;
    }
  return e->code ? 0 : -1;
}

int
kiln_aws_parse_json_error (const struct kiln_http_response *resp, struct kiln_aws_error *e)
{
  free (e->code);
  free (e->message);
  free (e->request_id);
  e->code = e->message = e->request_id = NULL;
  const char *rid = kiln_http_response_header (resp, "x-amzn-requestid");
  if (rid == NULL)
    rid = kiln_http_response_header (resp, "x-amz-request-id");
  if (rid)
    e->request_id = kiln_xstrdup (rid);

  _cleanup_json_ json_t *body = NULL;
  if (resp->body.len > 0)
    body = json_loadb (resp->body.data, resp->body.len, 0, NULL);
  if (json_is_object (body))
    {
      const char *type = json_string_value (json_object_get (body, "__type"));
      if (type == NULL)
        type = json_string_value (json_object_get (body, "code"));
      if (type)
        {
          const char *hash = strrchr (type, '#');
          e->code = kiln_xstrdup (hash ? hash + 1 : type);
        }
      const char *msg = json_string_value (json_object_get (body, "message"));
      if (msg == NULL)
        msg = json_string_value (json_object_get (body, "Message"));
      if (msg)
        e->message = kiln_xstrdup (msg);
    }
  if (e->code == NULL)
    {
      /* "ThrottlingException:http://internal.amazon.com/coral/..." */
      const char *h = kiln_http_response_header (resp, "x-amzn-errortype");
      if (h && *h)
        e->code = kiln_xstrndup (h, strcspn (h, ":"));
    }
  if (e->code && *e->code == '\0')
    {
      free (e->code);
      e->code = NULL;
    }
  return e->code ? 0 : -1;
}

/* ---- retry policy ---- */

bool
kiln_aws_retryable (long http_status, const char *code)
{
  /* Throttling and transient codes as the AWS SDKs classify them. */
  static const char *const retryable_codes[] = {
    "RequestLimitExceeded",
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestThrottled",
    "RequestThrottledException",
    "TooManyRequestsException",
    "ProvisionedThroughputExceededException",
    "EC2ThrottledException",
    "SlowDown",
    "PriorRequestNotComplete",
    "ServiceUnavailable",
    "InternalError",
    "InternalFailure",
    "InternalServerError",
    "RequestTimeout",
    "RequestTimeoutException",
  };
  if (http_status == 429 || http_status == 500 || http_status == 502 || http_status == 503 || http_status == 504)
    return true;
  if (code)
    for (size_t i = 0; i < sizeof retryable_codes / sizeof retryable_codes[0]; i++)
      if (strcmp (code, retryable_codes[i]) == 0)
        return true;
  return false;
}

long
kiln_aws_retry_delay_ms (const struct kiln_aws_retry_policy *policy, int attempt, double u)
{
  long base = policy && policy->base_delay_ms > 0 ? policy->base_delay_ms : KILN_AWS_DEFAULT_BASE_DELAY_MS;
  long cap = policy && policy->max_delay_ms > 0 ? policy->max_delay_ms : KILN_AWS_DEFAULT_MAX_DELAY_MS;
  if (attempt < 1)
    attempt = 1;
  /* base * 2^(attempt-1), stopping at the cap before it can overflow. */
  long ceiling = base < cap ? base : cap;
  for (int i = 1; i < attempt && ceiling < cap; i++)
    ceiling = ceiling > cap / 2 ? cap : ceiling * 2;
  if (!(u > 0))   /* also catches NaN */
    u = 0;
  if (u > 1)
    u = 1;
  return (long) (u * (double) ceiling);
}

/* ---- one request, signed and retried ---- */

enum wire_protocol {
  PROTOCOL_EC2_QUERY,
  PROTOCOL_JSON_1_1,
  PROTOCOL_REST,             /* rest-json: errors as awsJson's */
  PROTOCOL_REST_XML,         /* S3: <Error><Code> errors, or none (HEAD) */
};

struct aws_request {
  enum wire_protocol protocol;
  const char *operation;     /* for messages: "RunInstances" */
  const char *resource;      /* for messages, after the operation; or NULL */
  const char *content_type;  /* or NULL: no Content-Type */
  const char *target;        /* X-Amz-Target, or NULL */
  const void *body;
  size_t body_len;           /* of body or body_file */
  /* REST protocols; the others POST to the endpoint's path. */
  const char *method;        /* NULL: POST */
  const char *path;          /* decoded, below the endpoint's base path; NULL: "/" */
  const struct kiln_sigv4_pair *query;
  size_t n_query;
  const struct kiln_sigv4_pair *headers; /* more headers, signed */
  size_t n_headers;
  bool unsigned_payload;
  FILE *body_file;           /* rewound for each attempt */
  const char *payload_hash;  /* or NULL: the SHA-256 of body */
  const char *host;          /* NULL: the endpoint's authority */
  const char *response_path;
};

static bool
rest_protocol (enum wire_protocol p)
{
  return p == PROTOCOL_REST || p == PROTOCOL_REST_XML;
}

static void
wipe_free (char *s)
{
  if (s)
    {
      explicit_bzero (s, strlen (s));
      free (s);
    }
}

/* Builds, signs and performs one attempt at the hooks' current time. */
static int
aws_attempt (struct kiln_aws_client *c, const struct aws_request *r, struct kiln_http_response *resp,
             kiln_error **err)
{
  char amz_date[KILN_SIGV4_AMZ_DATE_LEN + 1];
  kiln_sigv4_format_amz_date (c->hooks.now (c->hooks.opaque), amz_date);
  char payload_hash[KILN_SHA256_LEN * 2 + 1];
  if (r->unsigned_payload || r->payload_hash)
    snprintf (payload_hash, sizeof payload_hash, "%s",
              r->unsigned_payload ? KILN_SIGV4_UNSIGNED_PAYLOAD : r->payload_hash);
  else
    kiln_sha256_hex (r->body, r->body_len, payload_hash);
  if (r->body_file && fseeko (r->body_file, 0, SEEK_SET) != 0)
    return kiln_fail_errno (err, errno, "rewind the request body");
  const char *host = r->host ? r->host : c->authority;
  _cleanup_free_ char *path = NULL;
  path = kiln_xasprintf ("%s%s", c->base_path, r->path ? r->path : "/");
  const char *method = r->method ? r->method : "POST";

  /* Names as they go on the wire; sigv4 lowercases them for signing. */
  size_t cap = 6 + r->n_headers;
  _cleanup_free_ struct kiln_sigv4_pair *h = kiln_xcalloc (cap, sizeof *h);
  size_t nh = 0;
  if (r->content_type)
    h[nh++] = (struct kiln_sigv4_pair){"Content-Type", r->content_type};
  h[nh++] = (struct kiln_sigv4_pair){"Host", host};
  if (rest_protocol (r->protocol))
    h[nh++] = (struct kiln_sigv4_pair){"X-Amz-Content-SHA256", payload_hash};
  for (size_t i = 0; i < r->n_headers; i++)
    h[nh++] = r->headers[i];
  h[nh++] = (struct kiln_sigv4_pair){"X-Amz-Date", amz_date};
  if (c->creds.session_token)
    h[nh++] = (struct kiln_sigv4_pair){"X-Amz-Security-Token", c->creds.session_token};
  if (r->target)
    h[nh++] = (struct kiln_sigv4_pair){"X-Amz-Target", r->target};

  struct kiln_sigv4_request sreq = {
    .method = method,
    .path = path,
    .query = r->query,
    .n_query = r->n_query,
    .headers = h,
    .n_headers = nh,
    .payload_hash = payload_hash,
    .flags = kiln_sigv4_service_flags (c->signing_name),
  };
  struct kiln_sigv4_signer signer = {
    .access_key_id = c->creds.access_key_id,
    .secret_access_key = c->creds.secret_access_key,
    .session_token = c->creds.session_token,
    .amz_date = amz_date,
    .region = c->region,
    .service = c->signing_name,
  };
  struct kiln_sigv4_result sig = {0};
  if (kiln_sigv4_sign (&sreq, &signer, &sig, err) < 0)
    return -1;

  _cleanup_free_ char *enc_path = kiln_sigv4_uri_encode (path, true);
  struct kiln_buf url = KILN_BUF_INIT;
  kiln_buf_printf (&url, "%s://%s%s", c->scheme, host, enc_path);
  for (size_t i = 0; i < r->n_query; i++)
    {
      kiln_buf_puts (&url, i == 0 ? "?" : "&");
      kiln_sigv4_uri_encode_buf (&url, r->query[i].name, strlen (r->query[i].name), false);
      kiln_buf_puts (&url, "=");
      kiln_sigv4_uri_encode_buf (&url, r->query[i].value, strlen (r->query[i].value), false);
    }

  _cleanup_free_ char **lines = kiln_xcalloc (nh + 3, sizeof *lines);
  size_t nl = 0;
  for (size_t i = 0; i < nh; i++)
    lines[nl++] = kiln_xasprintf ("%s: %s", h[i].name, h[i].value);
  lines[nl++] = kiln_xasprintf ("Authorization: %s", sig.authorization);
  lines[nl++] = kiln_xasprintf ("User-Agent: kiln/%s", KILN_VERSION);
  lines[nl] = NULL;

  struct kiln_http_request hreq = {
    .method = method,
    .url = kiln_buf_str (&url),
    .headers = (const char *const *) lines,
    .body = r->body_file ? NULL : r->body,
    .body_file = r->body_file,
    .body_len = r->body_len,
    .response_path = r->response_path,
    .timeout_seconds = c->timeout_seconds,
    .insecure = c->insecure,
  };
  int ret = c->hooks.perform (&hreq, resp, err, c->hooks.opaque);
  kiln_buf_release (&url);
  /* The token and Authorization lines derive from the credentials. */
  for (size_t i = 0; i < nl; i++)
    wipe_free (lines[i]);
  if (sig.authorization)
    explicit_bzero (sig.authorization, strlen (sig.authorization));
  explicit_bzero (sig.signature, sizeof sig.signature);
  kiln_sigv4_result_release (&sig);
  return ret;
}

static bool
transport_retryable (const kiln_error *e)
{
  return e && (e->code == KILN_ERR_IO || e->code == KILN_ERR_TIMEOUT);
}

/* What messages call the request: "ec2 RunInstances", "S3 GetObject s3://b/k". */
static char *
request_label (const struct kiln_aws_client *c, const struct aws_request *r)
{
  return kiln_xasprintf ("%s %s%s%s", c->display_name, r->operation, r->resource ? " " : "",
                         r->resource ? r->resource : "");
}

static void
pause_before_retry (struct kiln_aws_client *c, const char *label, int attempt, const char *why)
{
  long ms = kiln_aws_retry_delay_ms (&c->retry, attempt, c->hooks.random (c->hooks.opaque));
  kiln_log_info ("%s: %s; attempt %d of %d in %ld ms", label, why, attempt + 1, c->retry.max_attempts, ms);
  c->hooks.sleep_ms (ms, c->hooks.opaque);
}

static int
error_kind (long http_status, const char *code)
{
  if (http_status == 404)
    return KILN_ERR_NOT_FOUND;
  if (code
      && (strstr (code, "NotFound") != NULL || strncmp (code, "NoSuch", 6) == 0
          || strcmp (code, "InvocationDoesNotExist") == 0))
    return KILN_ERR_NOT_FOUND;
  return KILN_ERR_REMOTE;
}

/* Reads the error reply as r's protocol spells it into ae. */
static void
parse_error_reply (const struct aws_request *r, const struct kiln_http_response *resp, struct kiln_aws_error *ae)
{
  if (r->protocol == PROTOCOL_EC2_QUERY || r->protocol == PROTOCOL_REST_XML)
    kiln_aws_parse_ec2_error (resp->body.data, resp->body.len, ae);
  else
    kiln_aws_parse_json_error (resp, ae);
  const char *rid;
  if (r->protocol == PROTOCOL_REST_XML && ae->request_id == NULL
      && (rid = kiln_http_response_header (resp, "x-amz-request-id")))
    ae->request_id = kiln_xstrdup (rid);
}

/* The kiln_error for an error reply that will not be retried. */
static int
fail_with_reply (const struct aws_request *r, const char *label, const struct kiln_aws_error *ae,
                 kiln_error **err)
{
  char gave_up[48] = "";
  if (ae->attempts > 1)
    snprintf (gave_up, sizeof gave_up, " (gave up after %d attempts)", ae->attempts);
  /* rest-xml (S3) messages end with the status; a HEAD error has no body,
   * so the status is all there is to say. */
  char status[32] = "";
  if (r->protocol == PROTOCOL_REST_XML)
    snprintf (status, sizeof status, " (HTTP %ld)", ae->http_status);
  int kind = error_kind (ae->http_status, ae->code);
  if (ae->code)
    return kiln_error_set (err, kind, 0, "%s: %s%s%s%s%s", label, ae->code, ae->message && *ae->message ? ": " : "",
                           ae->message ? ae->message : "", status, gave_up);
  if (r->protocol == PROTOCOL_REST_XML)
    return kiln_error_set (err, kind, 0, "%s: %s%s%s", label,
                           ae->http_status == 404   ? "not found"
                           : ae->http_status == 403 ? "access denied"
                                                    : "request failed",
                           status, gave_up);
  return kiln_error_set (err, kind, 0, "%s: HTTP %ld without an AWS error in the reply%s", label, ae->http_status,
                         gave_up);
}

/* Sends r until it succeeds, fails for good or runs out of attempts.  0 with
 * a 2xx reply in *resp; otherwise -1 with *err and *ae filled. */
static int
aws_send (struct kiln_aws_client *c, const struct aws_request *r, struct kiln_http_response *resp,
          struct kiln_aws_error *ae, kiln_error **err)
{
  _cleanup_free_ char *label = request_label (c, r);
  for (int attempt = 1;; attempt++)
    {
      _cleanup_error_ kiln_error *e = NULL;
      kiln_http_response_release (resp);
      kiln_aws_error_release (ae);
      ae->attempts = attempt;
      bool last = attempt >= c->retry.max_attempts;
      if (aws_attempt (c, r, resp, &e) < 0)
        {
          if (transport_retryable (e) && !last)
            {
              pause_before_retry (c, label, attempt, kiln_error_message (e));
              continue;
            }
          int code = e ? e->code : KILN_ERR_FAILED;
          if (attempt > 1)
            return kiln_error_set (err, code, 0, "%s: %s (gave up after %d attempts)", label, kiln_error_message (e),
                                   attempt);
          kiln_error_move (err, &e);
          return kiln_error_prefix (err, "%s", label);
        }
      ae->http_status = resp->status;
      if (resp->status >= 200 && resp->status < 300)
        return 0;

      parse_error_reply (r, resp, ae);
      if (kiln_aws_retryable (resp->status, ae->code) && !last)
        {
          char why[160];
          snprintf (why, sizeof why, "%s (HTTP %ld)", ae->code ? ae->code : "server error", resp->status);
          pause_before_retry (c, label, attempt, why);
          continue;
        }
      return fail_with_reply (r, label, ae, err);
    }
}

/* Hands the call's error parts to the caller, or drops them. */
static void
give_aws_error (struct kiln_aws_error *dst, struct kiln_aws_error *src)
{
  if (dst)
    {
      kiln_aws_error_release (dst);
      *dst = *src;
      memset (src, 0, sizeof *src);
    }
  else
    kiln_aws_error_release (src);
}

/* ---- EC2 query ---- */

void
kiln_aws_params_release (struct kiln_aws_params *p)
{
  if (p == NULL)
    return;
  for (size_t i = 0; i < p->n; i++)
    {
      free ((char *) p->items[i].name);
      free ((char *) p->items[i].value);
    }
  free (p->items);
  memset (p, 0, sizeof *p);
}

/* Appends a pair whose strings the list takes over. */
static void
params_take (struct kiln_aws_params *p, char *name, char *value)
{
  if (p->n == p->cap)
    {
      size_t cap = p->cap ? p->cap * 2 : 16;
      struct kiln_sigv4_pair *v = realloc (p->items, cap * sizeof *v);
      if (v == NULL)
        abort ();
      p->items = v;
      p->cap = cap;
    }
  p->items[p->n++] = (struct kiln_sigv4_pair){name, value};
}

void
kiln_aws_params_add (struct kiln_aws_params *p, const char *name, const char *value)
{
  params_take (p, kiln_xstrdup (name), kiln_xstrdup (value));
}

void
kiln_aws_params_addf (struct kiln_aws_params *p, const char *name, const char *value_fmt, ...)
{
  va_list ap;
  va_start (ap, value_fmt);
  char *value = kiln_xvasprintf (value_fmt, ap);
  va_end (ap);
  params_take (p, kiln_xstrdup (name), value);
}

void
kiln_aws_params_add_list (struct kiln_aws_params *p, const char *prefix, const char *const *values, size_t n)
{
  for (size_t i = 0; i < n; i++)
    params_take (p, kiln_xasprintf ("%s.%zu", prefix, i + 1), kiln_xstrdup (values[i]));
}

void
kiln_aws_params_add_filter (struct kiln_aws_params *p, const char *name, const char *const *values, size_t n)
{
  int f = ++p->n_filters;
  params_take (p, kiln_xasprintf ("Filter.%d.Name", f), kiln_xstrdup (name));
  for (size_t i = 0; i < n; i++)
    params_take (p, kiln_xasprintf ("Filter.%d.Value.%zu", f, i + 1), kiln_xstrdup (values[i]));
}

void
kiln_aws_params_add_tags (struct kiln_aws_params *p, const char *prefix, const struct kiln_aws_tag *tags, size_t n)
{
  for (size_t i = 0; i < n; i++)
    {
      params_take (p, kiln_xasprintf ("%s.%zu.Key", prefix, i + 1), kiln_xstrdup (tags[i].key));
      params_take (p, kiln_xasprintf ("%s.%zu.Value", prefix, i + 1), kiln_xstrdup (tags[i].value));
    }
}

void
kiln_aws_params_add_tag_specification (struct kiln_aws_params *p, const char *resource_type,
                                       const struct kiln_aws_tag *tags, size_t n)
{
  int s = ++p->n_tag_specifications;
  params_take (p, kiln_xasprintf ("TagSpecification.%d.ResourceType", s), kiln_xstrdup (resource_type));
  _cleanup_free_ char *prefix = kiln_xasprintf ("TagSpecification.%d.Tag", s);
  kiln_aws_params_add_tags (p, prefix, tags, n);
}

static void
form_append (struct kiln_buf *b, const char *name, const char *value)
{
  if (b->len > 0)
    kiln_buf_puts (b, "&");
  kiln_sigv4_uri_encode_buf (b, name, strlen (name), false);
  kiln_buf_puts (b, "=");
  if (value)
    kiln_sigv4_uri_encode_buf (b, value, strlen (value), false);
}

char *
kiln_aws_ec2_form_body (const char *action, const struct kiln_aws_params *params)
{
  struct kiln_buf b = KILN_BUF_INIT;
  form_append (&b, "Action", action);
  form_append (&b, "Version", KILN_AWS_EC2_API_VERSION);
  for (size_t i = 0; params && i < params->n; i++)
    form_append (&b, params->items[i].name, params->items[i].value);
  return kiln_buf_steal (&b);
}

/* Parses a 2xx reply into *doc; a body that is not XML is an error. */
static int
parse_xml_reply (const struct kiln_aws_client *c, const struct aws_request *r, const struct kiln_http_response *resp,
                 xmlDoc **doc, kiln_error **err)
{
  *doc = kiln_xml_parse_untrusted (resp->body.data, resp->body.len, "aws-reply.xml");
  if (*doc && kiln_aws_xml_root (*doc))
    return 0;
  if (*doc)
    xmlFreeDoc (*doc);
  *doc = NULL;
  _cleanup_free_ char *label = request_label (c, r);
  return kiln_error_set (err, KILN_ERR_REMOTE, 0, "%s: the reply (HTTP %ld, %zu bytes) is not XML", label,
                         resp->status, resp->body.len);
}

static bool
valid_operation_name (const char *s)
{
  if (s == NULL || *s == '\0')
    return false;
  for (; *s; s++)
    if (!(isalnum ((unsigned char) *s) || *s == '_' || *s == '.'))
      return false;
  return true;
}

int
kiln_aws_ec2_call (struct kiln_aws_client *c, const char *action, const struct kiln_aws_params *params,
                   xmlDoc **doc, struct kiln_aws_error *aws_err, kiln_error **err)
{
  *doc = NULL;
  struct kiln_aws_error ae = {0};
  if (!valid_operation_name (action))
    {
      give_aws_error (aws_err, &ae);
      return kiln_fail_invalid (err, "%s: '%s' is not an action name", c->display_name, action ? action : "");
    }
  _cleanup_free_ char *body = kiln_aws_ec2_form_body (action, params);
  struct aws_request r = {
    .protocol = PROTOCOL_EC2_QUERY,
    .operation = action,
    .content_type = EC2_CONTENT_TYPE,
    .body = body,
    .body_len = strlen (body),
  };
  struct kiln_http_response resp = {0};
  int ret = aws_send (c, &r, &resp, &ae, err);
  if (ret == 0)
    ret = parse_xml_reply (c, &r, &resp, doc, err);
  if (ret == 0)
    {
      free (ae.request_id);
      ae.request_id = kiln_aws_xml_text (kiln_aws_xml_root (*doc), "requestId");
    }
  kiln_http_response_release (&resp);
  give_aws_error (aws_err, &ae);
  return ret;
}

/* ---- awsJson1_1 ---- */

int
kiln_aws_json_call (struct kiln_aws_client *c, const char *target, json_t *input, json_t **output,
                    struct kiln_aws_error *aws_err, kiln_error **err)
{
  *output = NULL;
  struct kiln_aws_error ae = {0};
  if (!valid_operation_name (target) || target[strlen (target) - 1] == '.')
    {
      give_aws_error (aws_err, &ae);
      return kiln_fail_invalid (err, "%s: '%s' is not an operation name", c->display_name, target ? target : "");
    }
  _cleanup_free_ char *full_target = NULL;
  if (strchr (target, '.') == NULL)
    {
      if (c->json_target_prefix == NULL)
        {
          give_aws_error (aws_err, &ae);
          return kiln_fail_invalid (err, "%s %s: the X-Amz-Target needs a prefix (\"Prefix.%s\")", c->display_name,
                                    target, target);
        }
      full_target = kiln_xasprintf ("%s.%s", c->json_target_prefix, target);
    }
  else
    full_target = kiln_xstrdup (target);
  const char *operation = strrchr (full_target, '.') + 1;

  if (input && !json_is_object (input))
    {
      give_aws_error (aws_err, &ae);
      return kiln_fail_invalid (err, "%s %s: the input must be a JSON object", c->display_name, operation);
    }
  /* jansson keeps keys in insertion order, so the body is deterministic. */
  _cleanup_free_ char *body = input ? json_dumps (input, JSON_COMPACT) : kiln_xstrdup ("{}");
  if (body == NULL)
    {
      give_aws_error (aws_err, &ae);
      return kiln_fail_invalid (err, "%s %s: the input cannot be encoded as JSON", c->display_name, operation);
    }
  struct aws_request r = {
    .protocol = PROTOCOL_JSON_1_1,
    .operation = operation,
    .content_type = JSON_CONTENT_TYPE,
    .target = full_target,
    .body = body,
    .body_len = strlen (body),
  };
  struct kiln_http_response resp = {0};
  int ret = aws_send (c, &r, &resp, &ae, err);
  explicit_bzero (body, strlen (body)); /* may carry SecureString values */
  if (ret == 0)
    {
      const char *rid = kiln_http_response_header (&resp, "x-amzn-requestid");
      if (rid)
        ae.request_id = kiln_xstrdup (rid);
      json_error_t jerr;
      json_t *out = resp.body.len ? json_loadb (resp.body.data, resp.body.len, 0, &jerr) : json_object ();
      if (!json_is_object (out))
        {
          json_decref (out);
          ret = kiln_error_set (err, KILN_ERR_REMOTE, 0, "%s %s: the reply (HTTP %ld, %zu bytes) is not a JSON object",
                                c->display_name, operation, resp.status, resp.body.len);
        }
      else
        *output = out;
    }
  kiln_http_response_release (&resp);
  give_aws_error (aws_err, &ae);
  return ret;
}

/* ---- XML reading ---- */

static bool
is_element (const xmlNode *n, const char *name)
{
  return n->type == XML_ELEMENT_NODE && (name == NULL || xmlStrcmp (n->name, BAD_CAST name) == 0);
}

xmlNode *
kiln_aws_xml_root (xmlDoc *doc)
{
  return doc ? xmlDocGetRootElement (doc) : NULL;
}

xmlNode *
kiln_aws_xml_child (xmlNode *node, const char *name)
{
  if (node == NULL || name == NULL)
    return NULL;
  for (xmlNode *n = node->children; n; n = n->next)
    if (is_element (n, name))
      return n;
  return NULL;
}

xmlNode *
kiln_aws_xml_find (xmlNode *node, const char *path)
{
  if (path == NULL)
    return node;
  const char *p = path;
  while (node && *p)
    {
      size_t len = strcspn (p, "/");
      if (len > 0)
        {
          char step[128];
          if (len >= sizeof step)
            return NULL;
          memcpy (step, p, len);
          step[len] = '\0';
          node = kiln_aws_xml_child (node, step);
        }
      p += len;
      if (*p == '/')
        p++;
    }
  return node;
}

xmlNode *
kiln_aws_xml_next (xmlNode *node)
{
  if (node == NULL)
    return NULL;
  for (xmlNode *n = node->next; n; n = n->next)
    if (n->type == XML_ELEMENT_NODE && xmlStrcmp (n->name, node->name) == 0)
      return n;
  return NULL;
}

size_t
kiln_aws_xml_count (xmlNode *node)
{
  size_t n = 0;
  for (; node; node = kiln_aws_xml_next (node))
    n++;
  return n;
}

char *
kiln_aws_xml_text (xmlNode *node, const char *path)
{
  xmlNode *n = kiln_aws_xml_find (node, path);
  if (n == NULL)
    return NULL;
  xmlChar *content = xmlNodeGetContent (n);
  char *r = kiln_xstrdup ((const char *) content);
  xmlFree (content);
  return r;
}

char *
kiln_aws_xml_tag (xmlNode *node, const char *key)
{
  if (key == NULL)
    return NULL;
  for (xmlNode *item = kiln_aws_xml_find (node, "tagSet/item"); item; item = kiln_aws_xml_next (item))
    {
      _cleanup_free_ char *k = kiln_aws_xml_text (item, "key");
      if (k && strcmp (k, key) == 0)
        {
          char *v = kiln_aws_xml_text (item, "value");
          return v ? v : kiln_xstrdup ("");
        }
    }
  return NULL;
}

/* ---- REST (rest-json, rest-xml) ---- */

/* Checks req, makes it the request r for protocol and sends it (aws_send). */
static int
rest_send (struct kiln_aws_client *c, const struct kiln_aws_rest_request *req, enum wire_protocol protocol,
           struct aws_request *r, struct kiln_http_response *resp, struct kiln_aws_error *ae, kiln_error **err)
{
  memset (resp, 0, sizeof *resp);
  if (req->path == NULL || req->path[0] != '/' || req->method == NULL || req->operation == NULL)
    return kiln_fail_invalid (err, "%s: a REST call needs an operation, a method and a path starting with '/'",
                              c->display_name);
  if (req->body_file && req->payload_hash == NULL && !req->unsigned_payload)
    return kiln_fail_invalid (err, "%s %s: a body streamed from a file needs its payload hash", c->display_name,
                              req->operation);
  *r = (struct aws_request){
    .protocol = protocol,
    .operation = req->operation,
    .resource = req->resource,
    .content_type = req->content_type,
    .body = req->body,
    .body_len = req->body_len,
    .method = req->method,
    .path = req->path,
    .query = req->query,
    .n_query = req->n_query,
    .headers = req->headers,
    .n_headers = req->n_headers,
    .unsigned_payload = req->unsigned_payload,
    .body_file = req->body_file,
    .payload_hash = req->payload_hash,
    .host = req->host,
    .response_path = req->response_path,
  };
  return aws_send (c, r, resp, ae, err);
}

int
kiln_aws_rest_call (struct kiln_aws_client *c, const struct kiln_aws_rest_request *req,
                    struct kiln_http_response *resp, struct kiln_aws_error *aws_err, kiln_error **err)
{
  struct kiln_aws_error ae = {0};
  struct aws_request r;
  int ret = rest_send (c, req, PROTOCOL_REST, &r, resp, &ae, err);
  if (ret < 0 && ae.code && resp->body.len > 0)
    {
      /* rest-json errors may say why in a Reason field (EBS direct). */
      _cleanup_json_ json_t *body = json_loadb (resp->body.data, resp->body.len, 0, NULL);
      const char *reason = json_string_value (json_object_get (body, "Reason"));
      if (reason && err && *err)
        {
          char *m = NULL;
          m = kiln_xasprintf ("%s (reason: %s)", (*err)->message, reason);
          free ((*err)->message);
          (*err)->message = m;
        }
    }
  give_aws_error (aws_err, &ae);
  return ret;
}

int
kiln_aws_rest_xml_call (struct kiln_aws_client *c, const struct kiln_aws_rest_request *req,
                        struct kiln_http_response *resp, xmlDoc **doc, struct kiln_aws_error *aws_err,
                        kiln_error **err)
{
  if (doc)
    *doc = NULL;
  struct kiln_aws_error ae = {0};
  struct aws_request r;
  int ret = rest_send (c, req, PROTOCOL_REST_XML, &r, resp, &ae, err);
  if (ret == 0)
    {
      const char *rid = kiln_http_response_header (resp, "x-amz-request-id");
      if (rid)
        ae.request_id = kiln_xstrdup (rid);
      if (doc)
        ret = parse_xml_reply (c, &r, resp, doc, err);
    }
  give_aws_error (aws_err, &ae);
  return ret;
}
