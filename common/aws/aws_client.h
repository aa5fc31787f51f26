/* aws_client.h - one client for every AWS API kiln calls: EC2 (query
 * protocol, XML replies), awsJson1_1 services such as SSM, rest-json (EBS
 * direct, Image Builder) and rest-xml (S3, through s3_client.h).
 *
 * A client is made for one service id ("ec2", "ssm", "ebs", "s3",
 * "imagebuilder") from a loaded kiln_aws_config: credentials as the SDKs find
 * them, the region (an explicit --region wins) and the endpoint through
 * kiln_aws_config_endpoint (an explicit --endpoint-url, then
 * AWS_ENDPOINT_URL_<SERVICE>, AWS_ENDPOINT_URL, the config files, then AWS's
 * own).  Everything is resolved when the client is made, so a missing region
 * or credential is reported before the first request; after that the client
 * holds no mutable state and may be used from several threads at once
 * (provided its hooks may be).  To talk to another region, make another
 * client.
 *
 * Calls:
 *   kiln_aws_ec2_call       Action=X&Version=2016-11-15&<params> POSTed
 *                           form-encoded, the reply parsed into an xmlDoc;
 *   kiln_aws_json_call      POST / with X-Amz-Target and an
 *                           application/x-amz-json-1.1 body, the reply a json_t;
 *   kiln_aws_rest_call      METHOD path?query with headers, errors as JSON;
 *   kiln_aws_rest_xml_call  the same with S3's XML errors and replies.
 * All sign with SigV4 (Authorization header, payload hash of the body, sent
 * as X-Amz-Content-SHA256 by the REST protocols) and retry throttling, 5xx
 * replies and transport failures with exponential backoff and full jitter,
 * signing each attempt afresh (a new X-Amz-Date).  Other client errors are
 * never retried.  XML, here as everywhere in kiln, is read by libxml2
 * through xml_doc.h.
 *
 * Errors.  A failed call fills the kiln_error with a message naming the
 * service, the operation, AWS's code and message:
 *   "ec2 RunInstances: InvalidAMIID.NotFound: The image id '[ami-1]' does not exist"
 * (rest-xml adds the resource and the HTTP status, as S3's users expect:
 *   "S3 GetObject s3://b/k: NoSuchKey: The specified key does not exist. (HTTP 404)")
 * and, when the caller asks, a struct kiln_aws_error with the parts (HTTP
 * status, code, message, request id, attempts) so a driver can branch on
 * codes such as IncorrectInstanceState without parsing messages.  kiln_error
 * codes: KILN_ERR_NOT_FOUND for codes naming something missing (*NotFound*,
 * NoSuch*, InvocationDoesNotExist) or HTTP 404, KILN_ERR_REMOTE for other
 * AWS errors and unreadable replies, the transport's own code (KILN_ERR_IO,
 * KILN_ERR_TIMEOUT) when no reply came, KILN_ERR_INVALID for bad arguments.
 *
 * Secrets.  The secret key, session token (sent as X-Amz-Security-Token),
 * Authorization header and signatures never reach a log line or an error
 * message, and request bodies (which may carry SecureString values or user
 * data) are not logged either.  Header lines holding credentials are wiped
 * after each attempt. */
#ifndef KILN_COMMON_AWS_CLIENT_H
#define KILN_COMMON_AWS_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <time.h>

#include <jansson.h>
#include <libxml/tree.h>

#include "aws_config.h"
#include "error.h"
#include "http_client.h"
#include "sigv4.h"

/* The EC2 query API version every kiln EC2 request names. */
#define KILN_AWS_EC2_API_VERSION "2016-11-15"

/* Retry policy defaults: 5 attempts (AWS's legacy mode for EC2), pauses drawn
 * from [0, min(20 s, 500 ms * 2^(n-1))] after attempt n. */
#define KILN_AWS_DEFAULT_MAX_ATTEMPTS 5
#define KILN_AWS_DEFAULT_BASE_DELAY_MS 500L
#define KILN_AWS_DEFAULT_MAX_DELAY_MS 20000L
/* Per-attempt limit on one HTTP exchange when the options give none. */
#define KILN_AWS_DEFAULT_TIMEOUT_SECONDS 60L

struct kiln_aws_retry_policy {
  int max_attempts;      /* 0: default; 1: never retry */
  long base_delay_ms;    /* 0: default */
  long max_delay_ms;     /* 0: default; the cap on any one pause */
};

/* What the client needs from the outside world, replaceable for tests.  Every
 * NULL member means the real thing: time(), nanosleep(), a uniform draw from
 * getrandom(), kiln_http_perform().  opaque is passed to each. */
struct kiln_aws_hooks {
  /* The wall clock, for X-Amz-Date. */
  time_t (*now) (void *opaque);
  /* Pauses between attempts. */
  void (*sleep_ms) (long ms, void *opaque);
  /* A uniform draw from [0, 1] for the jitter. */
  double (*random) (void *opaque);
  /* Performs one HTTP exchange, with kiln_http_perform's contract. */
  int (*perform) (const struct kiln_http_request *req, struct kiln_http_response *resp, kiln_error **err,
                  void *opaque);
  void *opaque;
};

struct kiln_aws_client_options {
  const char *endpoint_url;       /* --endpoint-url: wins over configuration */
  const char *region;             /* --region: wins over configuration */
  struct kiln_aws_retry_policy retry;
  /* Limit on each attempt; 0: KILN_AWS_DEFAULT_TIMEOUT_SECONDS, <0: none. */
  long timeout_seconds;
  bool insecure;                  /* ignore TLS certificate errors */
  const struct kiln_aws_hooks *hooks; /* copied; NULL: the real world */
  /* What messages call the service ("S3"); NULL: the service id. */
  const char *display_name;
};

struct kiln_aws_client;

/* Makes a client for service_id from cfg (which need not outlive the
 * client, except that an injected kiln_aws_env must, as aws_config.h says).
 * Fails, naming the service, when there are no credentials, no region
 * (options, AWS_REGION, AWS_DEFAULT_REGION or the profile) or no usable
 * endpoint.  opts may be NULL. */
int kiln_aws_client_new (const struct kiln_aws_config *cfg, const char *service_id,
                         const struct kiln_aws_client_options *opts, struct kiln_aws_client **out,
                         kiln_error **err);
void kiln_aws_client_free (struct kiln_aws_client *c);

const char *kiln_aws_client_service (const struct kiln_aws_client *c);  /* "ec2" */
const char *kiln_aws_client_region (const struct kiln_aws_client *c);   /* "us-east-1" */
const char *kiln_aws_client_endpoint (const struct kiln_aws_client *c); /* "http://127.0.0.1:4566" */
/* The name requests are signed for (the credential scope's service). */
const char *kiln_aws_client_signing_name (const struct kiln_aws_client *c);
/* The endpoint's host[:port] ("127.0.0.1:4566"), the Host header's default. */
const char *kiln_aws_client_authority (const struct kiln_aws_client *c);
/* True when the endpoint was configured (an emulator, a private endpoint)
 * rather than AWS's own (kiln_aws_endpoint's custom). */
bool kiln_aws_client_endpoint_custom (const struct kiln_aws_client *c);

/* ---- Errors ---- */

/* The parts of a failed call.  A zeroed struct is empty; release it with
 * kiln_aws_error_release.  code and message are NULL when no AWS error came
 * back (a transport failure, or a reply that was not AWS's error shape). */
struct kiln_aws_error {
  long http_status;     /* 0 when no HTTP reply was received */
  char *code;           /* "InvalidInstanceID.NotFound", "ParameterNotFound" */
  char *message;
  char *request_id;
  int attempts;         /* how many requests were sent */
};

void kiln_aws_error_release (struct kiln_aws_error *e);

/* True when e carries the AWS error code code. */
bool kiln_aws_error_is (const struct kiln_aws_error *e, const char *code);

/* ---- EC2 query parameters ---- */

/* An ordered list of decoded name/value pairs, sent in the order added after
 * Action and Version.  The helpers number lists from 1 as the query protocol
 * does; Filter.N and TagSpecification.N are numbered across calls. */
struct kiln_aws_params {
  struct kiln_sigv4_pair *items;   /* names and values malloc'd */
  size_t n;
  size_t cap;
  int n_filters;
  int n_tag_specifications;
};

#define KILN_AWS_PARAMS_INIT {NULL, 0, 0, 0, 0}

/* A key and a value, for the tag helpers. */
struct kiln_aws_tag {
  const char *key;
  const char *value;
};

void kiln_aws_params_release (struct kiln_aws_params *p);
/* name=value (both copied; a NULL value is ""). */
void kiln_aws_params_add (struct kiln_aws_params *p, const char *name, const char *value);
/* name=<printf(value_fmt, ...)>: numbers, booleans. */
void kiln_aws_params_addf (struct kiln_aws_params *p, const char *name, const char *value_fmt, ...)
    __attribute__ ((format (printf, 3, 4)));
/* prefix.1=values[0] ... prefix.n=values[n-1] ("InstanceId", "SecurityGroupId"). */
void kiln_aws_params_add_list (struct kiln_aws_params *p, const char *prefix, const char *const *values, size_t n);
/* The next Filter.N: Filter.N.Name=name, Filter.N.Value.1..n=values. */
void kiln_aws_params_add_filter (struct kiln_aws_params *p, const char *name, const char *const *values, size_t n);
/* prefix.1.Key, prefix.1.Value, ... (CreateTags' "Tag"). */
void kiln_aws_params_add_tags (struct kiln_aws_params *p, const char *prefix, const struct kiln_aws_tag *tags,
                               size_t n);
/* The next TagSpecification.N: .ResourceType=resource_type ("instance",
 * "image", "snapshot", "volume"), .Tag.M.Key/.Tag.M.Value. */
void kiln_aws_params_add_tag_specification (struct kiln_aws_params *p, const char *resource_type,
                                            const struct kiln_aws_tag *tags, size_t n);

/* The form body for action: "Action=<action>&Version=2016-11-15&..." with
 * names and values encoded as SigV4 encodes them (%20 for a space, unreserved
 * characters kept).  malloc'd. */
char *kiln_aws_ec2_form_body (const char *action, const struct kiln_aws_params *params);

/* ---- Calls ---- */

/* Calls EC2's action with params (NULL: none).  On success *doc is the parsed
 * reply (free with xmlFreeDoc); on failure *doc is NULL.  aws_err may be NULL;
 * otherwise it must be zeroed or hold an earlier call's result (released
 * here) and is filled either way: on success with the HTTP status, attempts
 * and request id, on failure with AWS's code and message as well.  The caller
 * releases it. */
int kiln_aws_ec2_call (struct kiln_aws_client *c, const char *action, const struct kiln_aws_params *params,
                       xmlDoc **doc, struct kiln_aws_error *aws_err, kiln_error **err);

/* Calls an awsJson1_1 operation.  target is the X-Amz-Target value
 * ("AmazonSSM.SendCommand"); a bare operation name ("SendCommand") gets the
 * service's prefix when the service has a known one (ssm: AmazonSSM, ecr).
 * input is borrowed (NULL sends "{}").  On success *output is a new reference
 * to the reply object ({} for an empty body); on failure it is NULL and
 * aws_err (when non-NULL) is filled as for kiln_aws_ec2_call. */
int kiln_aws_json_call (struct kiln_aws_client *c, const char *target, json_t *input, json_t **output,
                        struct kiln_aws_error *aws_err, kiln_error **err);

/* ---- Retry policy, exposed for tests ---- */

/* True for replies worth another attempt: throttling codes
 * (RequestLimitExceeded, Throttling, ThrottlingException,
 * TooManyRequestsException, and their kin), transient ones
 * (ServiceUnavailable, InternalError, InternalServerError, RequestTimeout),
 * and HTTP 429, 500, 502, 503 and 504 whatever the code.  code may be NULL. */
bool kiln_aws_retryable (long http_status, const char *code);

/* The pause after failed attempt number attempt (1-based):
 * u * min(max_delay, base_delay * 2^(attempt-1)), u in [0, 1] (clamped).
 * Zeros in policy mean the defaults. */
long kiln_aws_retry_delay_ms (const struct kiln_aws_retry_policy *policy, int attempt, double u);

/* ---- Reading EC2's XML without caring for its namespace ----
 *
 * Elements are matched by local name, so the same code reads
 * <DescribeInstancesResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/">
 * and an unqualified document.  A path is local names joined by '/', each
 * step taking the first matching element child ("reservationSet/item/
 * instancesSet/item/instanceId"); NULL or "" is the node itself. */

/* The document's root element, or NULL. */
xmlNode *kiln_aws_xml_root (xmlDoc *doc);
/* The first element child of node named name, or NULL. */
xmlNode *kiln_aws_xml_child (xmlNode *node, const char *name);
/* The element at path under node, or NULL. */
xmlNode *kiln_aws_xml_find (xmlNode *node, const char *path);
/* The next element sibling with node's local name: iterates the items of a
 * set, as in
 *   for (xmlNode *i = kiln_aws_xml_find (root, "reservationSet/item"); i;
 *        i = kiln_aws_xml_next (i)) */
xmlNode *kiln_aws_xml_next (xmlNode *node);
/* How many elements kiln_aws_xml_next visits from node (0 for NULL). */
size_t kiln_aws_xml_count (xmlNode *node);
/* The text of the element at path (entities decoded), malloc'd; NULL when
 * there is no such element.  An empty element is "". */
char *kiln_aws_xml_text (xmlNode *node, const char *path);
/* The value of the tag named key in node's tagSet ("tagSet/item" with
 * key/value children), malloc'd, or NULL. */
char *kiln_aws_xml_tag (xmlNode *node, const char *key);

/* Reads an XML error document, EC2's (<Response><Errors><Error><Code>,
 * <Message>, <RequestID>), other query services' (<ErrorResponse><Error>) or
 * S3's (<Error><Code>) into e's code, message and request_id (NULL when absent);
 * http_status and attempts are left alone.  Returns 0 when a code was found. */
int kiln_aws_parse_ec2_error (const char *body, size_t len, struct kiln_aws_error *e);
/* Reads an awsJson1_1 error: __type (any "prefix#" stripped, or the
 * x-amzn-errortype header's part before ':' when the body has none), message
 * or Message, and the x-amzn-requestid header.  Returns 0 when a code was
 * found. */
int kiln_aws_parse_json_error (const struct kiln_http_response *resp, struct kiln_aws_error *e);

/* ---- REST (rest-json: EBS direct, Image Builder; rest-xml: S3) ----
 *
 * One request to METHOD path?query with the given headers and body; the
 * reply, whatever its body (JSON, XML or binary), is the caller's in *resp
 * (release it with kiln_http_response_release).  Errors, retries and their
 * messages as the other protocols; a rest-json error's Reason field is
 * added to the message.  unsigned_payload signs UNSIGNED-PAYLOAD instead of
 * the body's hash (what EBS's PutSnapshotBlock expects). */
struct kiln_aws_rest_request {
  const char *operation;                 /* for messages: "PutSnapshotBlock" */
  const char *method;                    /* "GET", "PUT", "POST", "HEAD", ... */
  const char *path;                      /* decoded, below the endpoint's path: "/snapshots/snap-1/blocks/0" */
  const struct kiln_sigv4_pair *query;   /* decoded names and values */
  size_t n_query;
  const struct kiln_sigv4_pair *headers; /* sent and signed */
  size_t n_headers;
  const char *content_type;              /* NULL: none */
  const void *body;
  size_t body_len;                       /* of body or body_file */
  bool unsigned_payload;
  /* Streams body_len bytes from the file instead of body, from offset 0 on
   * every attempt; payload_hash must then be given (or unsigned_payload). */
  FILE *body_file;
  const char *payload_hash;              /* the body's SHA-256 in hex, when known; NULL: computed */
  const char *host;                      /* Host and the URL's authority; NULL: the endpoint's */
  const char *resource;                  /* named in messages after the operation: "s3://b/k" */
  const char *response_path;             /* a 2xx body is written there (http_client.h) */
};

int kiln_aws_rest_call (struct kiln_aws_client *c, const struct kiln_aws_rest_request *req,
                        struct kiln_http_response *resp, struct kiln_aws_error *aws_err, kiln_error **err);

/* The rest-xml protocol (S3's): as kiln_aws_rest_call, but an error reply is
 * <Error><Code>..</Code><Message>..</Message></Error> (or no body at all, as
 * for HEAD: then the status speaks, "not found (HTTP 404)"), and messages
 * end with the HTTP status.  When doc is non-NULL the 2xx reply is parsed
 * into *doc (free with xmlFreeDoc), a body that is not XML being an error.
 * aws_err as for kiln_aws_ec2_call. */
int kiln_aws_rest_xml_call (struct kiln_aws_client *c, const struct kiln_aws_rest_request *req,
                            struct kiln_http_response *resp, xmlDoc **doc, struct kiln_aws_error *aws_err,
                            kiln_error **err);

#endif
