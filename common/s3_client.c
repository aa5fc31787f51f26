/* s3_client.c - GetObject, PutObject, HeadObject and ListObjectsV2 (see
 * s3_client.h).
 *
 * Every operation goes through s3_call(), which builds the URL (path or
 * virtual-host style), the signed header set, signs with SigV4 at the current
 * time, performs the request and turns an S3 error document into a kiln_error.
 * Transient failures (a transport error, 500, 502, 503 SlowDown, 504) are
 * retried a few times with growing pauses; each attempt is signed afresh.
 *
 * S3's XML replies are read with a small scanner instead of an XML library
 * (common/ does not link libxml2).  That is sound for the elements read here
 * because S3 escapes '<' and '&' inside text, so "<Key>" can only be markup;
 * entities are decoded, and ListObjectsV2 is asked for encoding-type=url so
 * keys with characters XML 1.0 cannot carry survive too. */
#include "s3_client.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "buf.h"
#include "cleanup.h"
#include "digest.h"
#include "http_client.h"
#include "log.h"
#include "sigv4.h"
#include "xalloc.h"

#define MAX_ATTEMPTS 3
#define MAX_LIST_PAGES 1000000

struct kiln_s3_client {
  struct kiln_aws_credentials creds;
  char *region;
  char *endpoint;          /* "http://127.0.0.1:9000" */
  char *scheme;            /* "http" */
  char *authority;         /* "127.0.0.1:9000" */
  char *base_path;         /* "" or "/prefix" from the endpoint URL */
  bool path_style;
  char *expected_owner;
  bool insecure;
  long timeout;
};



/* ---- XML ---- */

static void
put_utf8 (struct kiln_buf *b, unsigned long cp)
{
  char u[4];
  size_t n;
  if (cp < 0x80)
    u[0] = (char) cp, n = 1;
  else if (cp < 0x800)
    u[0] = (char) (0xC0 | (cp >> 6)), u[1] = (char) (0x80 | (cp & 0x3F)), n = 2;
  else if (cp < 0x10000)
    u[0] = (char) (0xE0 | (cp >> 12)), u[1] = (char) (0x80 | ((cp >> 6) & 0x3F)),
    u[2] = (char) (0x80 | (cp & 0x3F)), n = 3;
  else
    u[0] = (char) (0xF0 | (cp >> 18)), u[1] = (char) (0x80 | ((cp >> 12) & 0x3F)),
    u[2] = (char) (0x80 | ((cp >> 6) & 0x3F)), u[3] = (char) (0x80 | (cp & 0x3F)), n = 4;
  kiln_buf_append (b, u, n);
}

int
kiln_s3_xml_unescape (const char *s, size_t len, char **out)
{
  static const struct {
    const char *name;
    char c;
  } named[] = {{"amp", '&'}, {"lt", '<'}, {"gt", '>'}, {"quot", '"'}, {"apos", '\''}};
  struct kiln_buf b = KILN_BUF_INIT;
  kiln_buf_append (&b, "", 0);
  for (size_t i = 0; i < len; i++)
    {
      if (s[i] != '&')
        {
          kiln_buf_append (&b, &s[i], 1);
          continue;
        }
      const char *semi = memchr (s + i, ';', len - i);
      if (semi == NULL || semi - (s + i) > 12)
        goto bad;
      const char *ref = s + i + 1;
      size_t rl = (size_t) (semi - ref);
      bool done = false;
      for (size_t k = 0; k < sizeof named / sizeof named[0] && !done; k++)
        if (rl == strlen (named[k].name) && memcmp (ref, named[k].name, rl) == 0)
          {
            kiln_buf_append (&b, &named[k].c, 1);
            done = true;
          }
      if (!done)
        {
          if (rl < 2 || ref[0] != '#')
            goto bad;
          bool hex = ref[1] == 'x' || ref[1] == 'X';
          const char *d = ref + (hex ? 2 : 1);
          size_t dl = rl - (hex ? 2 : 1);
          if (dl == 0 || dl > 8)
            goto bad;
          unsigned long cp = 0;
          for (size_t k = 0; k < dl; k++)
            {
              int v;
              char ch = d[k];
              if (ch >= '0' && ch <= '9')
                v = ch - '0';
              else if (hex && ch >= 'a' && ch <= 'f')
                v = ch - 'a' + 10;
              else if (hex && ch >= 'A' && ch <= 'F')
                v = ch - 'A' + 10;
              else
                goto bad;
              cp = cp * (hex ? 16 : 10) + (unsigned long) v;
            }
          if (cp == 0 || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
            goto bad;
          put_utf8 (&b, cp);
        }
      i = (size_t) (semi - s);
    }
  *out = kiln_buf_steal (&b);
  return 0;
bad:
  kiln_buf_release (&b);
  *out = NULL;
  return -1;
}

/* Finds the first <tag>...</tag> (or an empty <tag/>) in [start, end).  On
 * success sets the content span and *after (just past the element). */
static bool
xml_find (const char *start, const char *end, const char *tag, const char **content, size_t *len,
          const char **after)
{
  char open[64], close[64], empty[64];
  snprintf (open, sizeof open, "<%s>", tag);
  snprintf (close, sizeof close, "</%s>", tag);
  snprintf (empty, sizeof empty, "<%s/>", tag);
  if (start == NULL || end <= start)
    return false;
  const char *o = memmem (start, (size_t) (end - start), open, strlen (open));
  const char *e = memmem (start, (size_t) (end - start), empty, strlen (empty));
  if (e && (o == NULL || e < o))
    {
      *content = e;
      *len = 0;
      if (after)
        *after = e + strlen (empty);
      return true;
    }
  if (o == NULL)
    return false;
  const char *body = o + strlen (open);
  const char *c = memmem (body, (size_t) (end - body), close, strlen (close));
  if (c == NULL)
    return false;
  *content = body;
  *len = (size_t) (c - body);
  if (after)
    *after = c + strlen (close);
  return true;
}

/* The unescaped text of the first <tag> in [start, end), or NULL. */
static char *
xml_text (const char *start, const char *end, const char *tag)
{
  const char *content;
  size_t len;
  char *r = NULL;
  if (!xml_find (start, end, tag, &content, &len, NULL))
    return NULL;
  if (kiln_s3_xml_unescape (content, len, &r) < 0)
    return NULL;
  return r;
}

void
kiln_s3_parse_error (const char *xml, char **code, char **message)
{
  const char *end = xml ? xml + strlen (xml) : NULL;
  *code = xml ? xml_text (xml, end, "Code") : NULL;
  *message = xml ? xml_text (xml, end, "Message") : NULL;
}

/* ---- client ---- */

void
kiln_s3_client_free (struct kiln_s3_client *c)
{
  if (c == NULL)
    return;
  kiln_aws_credentials_release (&c->creds);
  free (c->region);
  free (c->endpoint);
  free (c->scheme);
  free (c->authority);
  free (c->base_path);
  free (c->expected_owner);
  free (c);
}

/* Fills c from the configuration: credentials, region, endpoint parts. */
static int
client_setup (struct kiln_s3_client *c, const struct kiln_s3_options *opts, const struct kiln_aws_config *cfg,
              struct kiln_aws_endpoint *ep, kiln_error **err)
{
  if (kiln_aws_config_credentials (cfg, &c->creds, err) < 0)
    return -1;
  /* S3 needs a region only for the signing scope and the default endpoint;
   * with none configured, use us-east-1 as the AWS CLI does for S3 rather
   * than fail (emulators accept any region). */
  const char *region = opts->region && *opts->region ? opts->region : kiln_aws_config_region (cfg);
  c->region = kiln_xstrdup (region ? region : "us-east-1");
  if (kiln_aws_config_endpoint (cfg, "s3", opts->endpoint_url, c->region, ep, err) < 0)
    return -1;
  c->endpoint = kiln_xstrdup (ep->url);
  if (kiln_aws_endpoint_split (ep, &c->scheme, &c->authority, &c->base_path, err) < 0)
    return -1;
  c->path_style = ep->custom || opts->force_path_style;
  c->expected_owner = opts->expected_bucket_owner && *opts->expected_bucket_owner
                          ? kiln_xstrdup (opts->expected_bucket_owner)
                          : NULL;
  c->insecure = opts->insecure;
  c->timeout = opts->timeout_seconds;
  return 0;
}

int
kiln_s3_client_new (const struct kiln_s3_options *opts, struct kiln_s3_client **out, kiln_error **err)
{
  static const struct kiln_s3_options defaults = {0};
  if (opts == NULL)
    opts = &defaults;
  struct kiln_aws_config *loaded = NULL;
  if (opts->config == NULL && kiln_aws_config_load (opts->env, opts->profile, &loaded, err) < 0)
    return kiln_error_prefix (err, "S3");
  struct kiln_s3_client *c = kiln_xcalloc (1, sizeof *c);
  struct kiln_aws_endpoint ep = {0};
  int r = client_setup (c, opts, opts->config ? opts->config : loaded, &ep, err);
  kiln_aws_endpoint_release (&ep);
  kiln_aws_config_free (loaded);
  if (r < 0)
    {
      kiln_s3_client_free (c);
      return kiln_error_prefix (err, "S3");
    }
  *out = c;
  return 0;
}

const char *
kiln_s3_client_endpoint (const struct kiln_s3_client *c)
{
  return c->endpoint;
}

bool
kiln_s3_client_path_style (const struct kiln_s3_client *c)
{
  return c->path_style;
}

/* One S3 request. */
struct s3_call {
  const char *op;                        /* "GetObject", for messages */
  const char *method;
  const char *bucket;
  const char *key;                       /* NULL for bucket-level requests */
  const struct kiln_sigv4_pair *query;
  size_t n_query;
  const char *payload_hash;              /* NULL: empty body */
  const char *content_type;
  FILE *body_file;                       /* rewound to 0 for each attempt */
  const void *body;                      /* or body_len bytes from memory */
  uint64_t body_len;
  const char *response_path;
};

static bool
retryable_status (long s)
{
  return s == 500 || s == 502 || s == 503 || s == 504;
}

/* Builds, signs and performs one attempt. */
static int
s3_attempt (struct kiln_s3_client *c, const struct s3_call *call, struct kiln_http_response *resp,
            kiln_error **err)
{
  bool path_style = c->path_style || strchr (call->bucket, '.') != NULL;
  _cleanup_free_ char *host = NULL, *raw_path = NULL;
  if (path_style)
    {
      host = kiln_xstrdup (c->authority);
      raw_path = kiln_xasprintf ("%s/%s%s%s", c->base_path, call->bucket, call->key ? "/" : "",
                                 call->key ? call->key : "");
    }
  else
    {
      host = kiln_xasprintf ("%s.%s", call->bucket, c->authority);
      raw_path = kiln_xasprintf ("%s/%s", c->base_path, call->key ? call->key : "");
    }

  char amz_date[KILN_SIGV4_AMZ_DATE_LEN + 1];
  kiln_sigv4_format_amz_date (time (NULL), amz_date);
  const char *payload_hash = call->payload_hash ? call->payload_hash : KILN_SIGV4_EMPTY_SHA256;

  struct kiln_sigv4_pair h[8];
  size_t nh = 0;
  h[nh++] = (struct kiln_sigv4_pair){"host", host};
  h[nh++] = (struct kiln_sigv4_pair){"x-amz-date", amz_date};
  h[nh++] = (struct kiln_sigv4_pair){"x-amz-content-sha256", payload_hash};
  if (c->creds.session_token)
    h[nh++] = (struct kiln_sigv4_pair){"x-amz-security-token", c->creds.session_token};
  if (c->expected_owner)
    h[nh++] = (struct kiln_sigv4_pair){"x-amz-expected-bucket-owner", c->expected_owner};
  if (call->content_type)
    h[nh++] = (struct kiln_sigv4_pair){"content-type", call->content_type};

  struct kiln_sigv4_request sreq = {
    .method = call->method,
    .path = raw_path,
    .query = call->query,
    .n_query = call->n_query,
    .headers = h,
    .n_headers = nh,
    .payload_hash = payload_hash,
    .flags = kiln_sigv4_service_flags ("s3"),
  };
  struct kiln_sigv4_signer signer = {
    .access_key_id = c->creds.access_key_id,
    .secret_access_key = c->creds.secret_access_key,
    .session_token = c->creds.session_token,
    .amz_date = amz_date,
    .region = c->region,
    .service = "s3",
  };
  struct kiln_sigv4_result sig = {0};
  if (kiln_sigv4_sign (&sreq, &signer, &sig, err) < 0)
    return -1;

  _cleanup_free_ char *enc_path = kiln_sigv4_uri_encode (raw_path, true);
  _cleanup_free_ char *url = NULL;
  url = kiln_xasprintf ("%s://%s%s%s%s", c->scheme, host, enc_path, *sig.query_string ? "?" : "", sig.query_string);

  /* The same headers, as sent, plus the Authorization. */
  char *lines[10] = {0};
  size_t nl = 0;
  for (size_t i = 0; i < nh; i++)
    lines[nl++] = kiln_xasprintf ("%s: %s", h[i].name, h[i].value);
  lines[nl++] = kiln_xasprintf ("Authorization: %s", sig.authorization);
  lines[nl] = NULL;

  if (call->body_file && fseeko (call->body_file, 0, SEEK_SET) != 0)
    {
      int e = errno;
      for (size_t i = 0; i < nl; i++)
        free (lines[i]);
      kiln_sigv4_result_release (&sig);
      return kiln_fail_errno (err, e, "rewind the upload");
    }
  struct kiln_http_request hreq = {
    .method = call->method,
    .url = url,
    .headers = (const char *const *) lines,
    .body = call->body,
    .body_file = call->body_file,
    .body_len = call->body_len,
    .response_path = call->response_path,
    .timeout_seconds = c->timeout,
    .insecure = c->insecure,
  };
  int r = kiln_http_perform (&hreq, resp, err);
  for (size_t i = 0; i < nl; i++)
    {
      /* The Authorization line and token header are credentials-derived. */
      explicit_bzero (lines[i], strlen (lines[i]));
      free (lines[i]);
    }
  kiln_sigv4_result_release (&sig);
  return r;
}

/* "s3://bucket/key" for messages. */
static char *
object_name (const struct s3_call *call)
{
  char *r = NULL;
  r = kiln_xasprintf ("s3://%s/%s", call->bucket, call->key ? call->key : "");
  return r;
}

static int
s3_call (struct kiln_s3_client *c, const struct s3_call *call, struct kiln_http_response *resp, kiln_error **err)
{
  _cleanup_free_ char *name = object_name (call);
  for (int attempt = 1;; attempt++)
    {
      kiln_error *e = NULL;
      kiln_http_response_release (resp);
      int r = s3_attempt (c, call, resp, &e);
      bool transient = r < 0 ? (e && (e->code == KILN_ERR_IO || e->code == KILN_ERR_TIMEOUT))
                             : retryable_status (resp->status);
      if (transient && attempt < MAX_ATTEMPTS)
        {
          kiln_error_free (e);
          struct timespec ts = {0, 200L * 1000 * 1000 * attempt};
          nanosleep (&ts, NULL);
          continue;
        }
      if (r < 0)
        {
          kiln_error_move (err, &e);
          return kiln_error_prefix (err, "S3 %s %s", call->op, name);
        }
      break;
    }
  if (resp->status >= 200 && resp->status < 300)
    return 0;

  _cleanup_free_ char *code = NULL, *message = NULL;
  kiln_s3_parse_error (kiln_buf_str (&resp->body), &code, &message);
  int kind = KILN_ERR_REMOTE;
  if (resp->status == 404 || (code && (strcmp (code, "NoSuchKey") == 0 || strcmp (code, "NoSuchBucket") == 0)))
    kind = KILN_ERR_NOT_FOUND;
  if (code)
    return kiln_error_set (err, kind, 0, "S3 %s %s: %s%s%s (HTTP %ld)", call->op, name, code, message ? ": " : "",
                           message ? message : "", resp->status);
  return kiln_error_set (err, kind, 0, "S3 %s %s: %s (HTTP %ld)", call->op, name,
                         resp->status == 404   ? "not found"
                         : resp->status == 403 ? "access denied"
                                               : "request failed",
                         resp->status);
}

static int
check_names (const char *op, const char *bucket, const char *key, bool key_required, kiln_error **err)
{
  if (bucket == NULL || *bucket == '\0' || strchr (bucket, '/'))
    return kiln_fail_invalid (err, "S3 %s: invalid bucket name '%s'", op, bucket ? bucket : "");
  if (key_required && (key == NULL || *key == '\0'))
    return kiln_fail_invalid (err, "S3 %s s3://%s/: no object key", op, bucket);
  return 0;
}

int
kiln_s3_get_object (struct kiln_s3_client *c, const char *bucket, const char *key, const char *dest_path,
                    kiln_error **err)
{
  if (check_names ("GetObject", bucket, key, true, err) < 0)
    return -1;
  struct s3_call call = {.op = "GetObject", .method = "GET", .bucket = bucket, .key = key,
                         .response_path = dest_path};
  struct kiln_http_response resp = {0};
  int r = s3_call (c, &call, &resp, err);
  kiln_http_response_release (&resp);
  return r;
}

int
kiln_s3_put_object (struct kiln_s3_client *c, const char *bucket, const char *key, const char *src_path,
                    const char *content_type, kiln_error **err)
{
  if (check_names ("PutObject", bucket, key, true, err) < 0)
    return -1;
  _cleanup_fclose_ FILE *f = fopen (src_path, "rbe");
  if (f == NULL)
    return kiln_fail_errno (err, errno, "S3 PutObject s3://%s/%s: open '%s'", bucket, key, src_path);
  struct stat st;
  if (fstat (fileno (f), &st) < 0)
    return kiln_fail_errno (err, errno, "S3 PutObject s3://%s/%s: stat '%s'", bucket, key, src_path);
  if (!S_ISREG (st.st_mode))
    return kiln_fail_invalid (err, "S3 PutObject s3://%s/%s: '%s' is not a regular file", bucket, key, src_path);
  if ((uint64_t) st.st_size > KILN_S3_MAX_PUT_SIZE)
    return kiln_error_set (err, KILN_ERR_UNSUPPORTED, 0,
                           "S3 PutObject s3://%s/%s: '%s' is larger than the 5 GiB a single upload may carry",
                           bucket, key, src_path);
  /* The payload is signed with its real hash, so S3 rejects a body that was
   * corrupted (or changed) on the way. */
  char hash[KILN_DIGEST_HEX_MAX];
  if (kiln_digest_file_hex ("SHA256", src_path, hash, err) < 0)
    return kiln_error_prefix (err, "S3 PutObject s3://%s/%s", bucket, key);
  struct s3_call call = {
    .op = "PutObject",
    .method = "PUT",
    .bucket = bucket,
    .key = key,
    .payload_hash = hash,
    .content_type = content_type ? content_type : "application/octet-stream",
    .body_file = f,
    .body_len = (uint64_t) st.st_size,
  };
  struct kiln_http_response resp = {0};
  int r = s3_call (c, &call, &resp, err);
  kiln_http_response_release (&resp);
  return r;
}

void
kiln_s3_object_info_release (struct kiln_s3_object_info *info)
{
  if (info == NULL)
    return;
  free (info->etag);
  free (info->last_modified);
  free (info->content_type);
  memset (info, 0, sizeof *info);
}

static bool
parse_u64 (const char *s, uint64_t *out)
{
  if (s == NULL || !isdigit ((unsigned char) *s))
    return false;
  char *end = NULL;
  errno = 0;
  unsigned long long v = strtoull (s, &end, 10);
  if (errno || *end)
    return false;
  *out = v;
  return true;
}

int
kiln_s3_head_object (struct kiln_s3_client *c, const char *bucket, const char *key,
                     struct kiln_s3_object_info *out, kiln_error **err)
{
  memset (out, 0, sizeof *out);
  if (check_names ("HeadObject", bucket, key, true, err) < 0)
    return -1;
  struct s3_call call = {.op = "HeadObject", .method = "HEAD", .bucket = bucket, .key = key};
  struct kiln_http_response resp = {0};
  int r = s3_call (c, &call, &resp, err);
  if (r == 0)
    {
      const char *len = kiln_http_response_header (&resp, "content-length");
      if (!parse_u64 (len, &out->size))
        r = kiln_error_set (err, KILN_ERR_REMOTE, 0, "S3 HeadObject s3://%s/%s: no valid Content-Length", bucket,
                            key);
      const char *v;
      if ((v = kiln_http_response_header (&resp, "etag")))
        out->etag = kiln_xstrdup (v);
      if ((v = kiln_http_response_header (&resp, "last-modified")))
        out->last_modified = kiln_xstrdup (v);
      if ((v = kiln_http_response_header (&resp, "content-type")))
        out->content_type = kiln_xstrdup (v);
      if (r < 0)
        kiln_s3_object_info_release (out);
    }
  kiln_http_response_release (&resp);
  return r;
}

void
kiln_s3_listing_release (struct kiln_s3_listing *l)
{
  if (l == NULL)
    return;
  for (size_t i = 0; i < l->n; i++)
    {
      free (l->objects[i].key);
      kiln_s3_object_info_release (&l->objects[i].info);
    }
  free (l->objects);
  memset (l, 0, sizeof *l);
}

/* Appends the <Contents> entries of one ListObjectsV2 page. */
static int
parse_list_page (const char *xml, struct kiln_s3_listing *out, bool *truncated, char **token, const char *what,
                 kiln_error **err)
{
  const char *end = xml + strlen (xml);
  const char *content;
  size_t len;
  if (strstr (xml, "<ListBucketResult") == NULL)
    return kiln_error_set (err, KILN_ERR_REMOTE, 0, "S3 ListObjectsV2 %s: the reply is not a ListBucketResult", what);
  _cleanup_free_ char *enc = xml_text (xml, end, "EncodingType");
  bool url_encoded = enc && strcmp (enc, "url") == 0;

  const char *p = xml;
  const char *after;
  while (xml_find (p, end, "Contents", &content, &len, &after))
    {
      const char *cend = content + len;
      _cleanup_free_ char *key = xml_text (content, cend, "Key");
      _cleanup_free_ char *size = xml_text (content, cend, "Size");
      if (key == NULL)
        return kiln_error_set (err, KILN_ERR_REMOTE, 0, "S3 ListObjectsV2 %s: an entry without a valid <Key>", what);
      struct kiln_s3_object o = {0};
      o.key = url_encoded ? kiln_sigv4_uri_decode (key, strlen (key), true, NULL) : kiln_xstrdup (key);
      if (size && !parse_u64 (size, &o.info.size))
        {
          free (o.key);
          return kiln_error_set (err, KILN_ERR_REMOTE, 0, "S3 ListObjectsV2 %s: bad <Size> for an entry", what);
        }
      o.info.etag = xml_text (content, cend, "ETag");
      o.info.last_modified = xml_text (content, cend, "LastModified");
      struct kiln_s3_object *v = realloc (out->objects, (out->n + 1) * sizeof *v);
      if (v == NULL)
        abort ();
      out->objects = v;
      out->objects[out->n++] = o;
      p = after;
    }
  _cleanup_free_ char *trunc = xml_text (xml, end, "IsTruncated");
  *truncated = trunc && strcmp (trunc, "true") == 0;
  *token = xml_text (xml, end, "NextContinuationToken");
  return 0;
}

int
kiln_s3_list_objects (struct kiln_s3_client *c, const char *bucket, const char *prefix,
                      struct kiln_s3_listing *out, kiln_error **err)
{
  memset (out, 0, sizeof *out);
  if (check_names ("ListObjectsV2", bucket, NULL, false, err) < 0)
    return -1;
  _cleanup_free_ char *what = NULL;
  what = kiln_xasprintf ("s3://%s/%s", bucket, prefix ? prefix : "");
  _cleanup_free_ char *token = NULL;
  for (int page = 0; page < MAX_LIST_PAGES; page++)
    {
      struct kiln_sigv4_pair q[4];
      size_t nq = 0;
      q[nq++] = (struct kiln_sigv4_pair){"list-type", "2"};
      q[nq++] = (struct kiln_sigv4_pair){"encoding-type", "url"};
      if (prefix && *prefix)
        q[nq++] = (struct kiln_sigv4_pair){"prefix", prefix};
      if (token)
        q[nq++] = (struct kiln_sigv4_pair){"continuation-token", token};
      struct s3_call call = {.op = "ListObjectsV2", .method = "GET", .bucket = bucket, .query = q, .n_query = nq};
      struct kiln_http_response resp = {0};
      int r = s3_call (c, &call, &resp, err);
      bool truncated = false;
      char *next = NULL;
      if (r == 0)
        r = parse_list_page (kiln_buf_str (&resp.body), out, &truncated, &next, what, err);
      kiln_http_response_release (&resp);
      if (r == 0 && truncated && (next == NULL || *next == '\0' || (token && strcmp (next, token) == 0)))
        r = kiln_error_set (err, KILN_ERR_REMOTE, 0,
                            "S3 ListObjectsV2 %s: truncated listing without a new continuation token", what);
      if (r < 0)
        {
          free (next);
          kiln_s3_listing_release (out);
          return -1;
        }
      free (token);
      token = next;
      if (!truncated)
        return 0;
    }
  kiln_s3_listing_release (out);
  return kiln_error_set (err, KILN_ERR_REMOTE, 0, "S3 ListObjectsV2 %s: more than %d pages", what, MAX_LIST_PAGES);
}

/* ---- DeleteObject and multipart upload ---- */

int
kiln_s3_delete_object (struct kiln_s3_client *c, const char *bucket, const char *key, kiln_error **err)
{
  if (check_names ("DeleteObject", bucket, key, true, err) < 0)
    return -1;
  struct s3_call call = {.op = "DeleteObject", .method = "DELETE", .bucket = bucket, .key = key};
  struct kiln_http_response resp = {0};
  int r = s3_call (c, &call, &resp, err);
  kiln_http_response_release (&resp);
  return r;
}

/* Sends one request whose body is body (len bytes, signed with its hash). */
static int
s3_call_body (struct kiln_s3_client *c, struct s3_call *call, const void *body, size_t len,
              struct kiln_http_response *resp, kiln_error **err)
{
  char hash[KILN_DIGEST_HEX_MAX];
  if (kiln_digest_buffer_hex ("SHA256", body, len, hash, err) < 0)
    return -1;
  call->payload_hash = hash;
  call->body = body;
  call->body_len = len;
  return s3_call (c, call, resp, err);
}

static void
multipart_abort (struct kiln_s3_client *c, const char *bucket, const char *key, const char *upload_id)
{
  const struct kiln_sigv4_pair q[] = {{"uploadId", upload_id}};
  struct s3_call call = {.op = "AbortMultipartUpload", .method = "DELETE", .bucket = bucket, .key = key,
                         .query = q, .n_query = 1};
  struct kiln_http_response resp = {0};
  _cleanup_error_ kiln_error *e = NULL;
  if (s3_call (c, &call, &resp, &e) < 0)
    kiln_log_warn ("%s (its parts stay in the bucket until a lifecycle rule or an abort removes them)",
                   kiln_error_message (e));
  kiln_http_response_release (&resp);
}

/* Reads exactly len bytes at offset; a file that shrank is an error. */
static int
read_part (int fd, const char *path, uint64_t offset, void *buf, size_t len, kiln_error **err)
{
  size_t done = 0;
  while (done < len)
    {
      ssize_t n = pread (fd, (char *) buf + done, len - done, (off_t) (offset + done));
      if (n < 0 && errno == EINTR)
        continue;
      if (n < 0)
        return kiln_fail_errno (err, errno, "read '%s'", path);
      if (n == 0)
        return kiln_fail (err, "'%s' shrank while it was uploaded", path);
      done += (size_t) n;
    }
  return 0;
}

/* The parts and their ETags so far, for CompleteMultipartUpload. */
static char *
complete_body (char *const *etags, size_t n)
{
  struct kiln_buf b = {0};
  kiln_buf_puts (&b, "<CompleteMultipartUpload xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">");
  for (size_t i = 0; i < n; i++)
    {
      kiln_buf_printf (&b, "<Part><PartNumber>%zu</PartNumber><ETag>", i + 1);
      /* ETags are quoted hex: only the quotes need escaping. */
      for (const char *p = etags[i]; *p; p++)
        if (*p == '"')
          kiln_buf_puts (&b, "&quot;");
        else if (*p == '&')
          kiln_buf_puts (&b, "&amp;");
        else if (*p == '<')
          kiln_buf_puts (&b, "&lt;");
        else
          kiln_buf_append (&b, p, 1);
      kiln_buf_puts (&b, "</ETag></Part>");
    }
  kiln_buf_puts (&b, "</CompleteMultipartUpload>");
  return kiln_buf_steal (&b);
}

static int
multipart_upload (struct kiln_s3_client *c, const char *bucket, const char *key, int fd, const char *src_path,
                  uint64_t size, uint64_t part_size, const struct kiln_s3_upload_options *o, kiln_error **err)
{
  const struct kiln_sigv4_pair create_q[] = {{"uploads", ""}};
  struct s3_call create = {.op = "CreateMultipartUpload", .method = "POST", .bucket = bucket, .key = key,
                           .query = create_q, .n_query = 1, .content_type = "application/octet-stream"};
  struct kiln_http_response resp = {0};
  if (s3_call (c, &create, &resp, err) < 0)
    {
      kiln_http_response_release (&resp);
      return -1;
    }
  const char *xml = kiln_buf_str (&resp.body);
  _cleanup_free_ char *upload_id = xml_text (xml, xml + strlen (xml), "UploadId");
  kiln_http_response_release (&resp);
  if (upload_id == NULL || *upload_id == '\0')
    return kiln_error_set (err, KILN_ERR_REMOTE, 0, "S3 CreateMultipartUpload s3://%s/%s: no UploadId in the reply",
                           bucket, key);

  size_t n_parts = (size_t) ((size + part_size - 1) / part_size);
  _cleanup_strv_ char **etags = calloc (n_parts + 1, sizeof *etags);
  _cleanup_free_ void *buf = malloc ((size_t) part_size);
  if (etags == NULL || buf == NULL)
    abort ();
  int r = 0;
  uint64_t done = 0;
  for (size_t i = 0; i < n_parts && r == 0; i++)
    {
      if (o && o->cancel && *o->cancel)
        {
          r = kiln_error_set (err, KILN_ERR_CANCELLED, 0, "S3 upload to s3://%s/%s: interrupted", bucket, key);
          break;
        }
      uint64_t offset = (uint64_t) i * part_size;
      size_t len = (size_t) (size - offset < part_size ? size - offset : part_size);
      if ((r = read_part (fd, src_path, offset, buf, len, err)) < 0)
        break;
      char number[24];
      snprintf (number, sizeof number, "%zu", i + 1);
      const struct kiln_sigv4_pair q[] = {{"partNumber", number}, {"uploadId", upload_id}};
      struct s3_call part = {.op = "UploadPart", .method = "PUT", .bucket = bucket, .key = key, .query = q,
                             .n_query = 2};
      r = s3_call_body (c, &part, buf, len, &resp, err);
      const char *etag = r == 0 ? kiln_http_response_header (&resp, "etag") : NULL;
      if (r == 0 && (etag == NULL || *etag == '\0'))
        r = kiln_error_set (err, KILN_ERR_REMOTE, 0, "S3 UploadPart s3://%s/%s part %zu: no ETag in the reply",
                            bucket, key, i + 1);
      if (r == 0)
        etags[i] = kiln_xstrdup (etag);
      kiln_http_response_release (&resp);
      done += len;
      if (r == 0 && o && o->progress)
        o->progress (done, size, o->progress_opaque);
    }
  if (r == 0)
    {
      _cleanup_free_ char *body = complete_body (etags, n_parts);
      const struct kiln_sigv4_pair q[] = {{"uploadId", upload_id}};
      struct s3_call complete = {.op = "CompleteMultipartUpload", .method = "POST", .bucket = bucket, .key = key,
                                 .query = q, .n_query = 1, .content_type = "application/xml"};
      r = s3_call_body (c, &complete, body, strlen (body), &resp, err);
      /* S3 may answer 200 and still put an error in the body. */
      const char *reply = kiln_buf_str (&resp.body);
      if (r == 0 && strstr (reply, "<Error>") != NULL)
        {
          _cleanup_free_ char *code = NULL, *message = NULL;
          kiln_s3_parse_error (reply, &code, &message);
          r = kiln_error_set (err, KILN_ERR_REMOTE, 0, "S3 CompleteMultipartUpload s3://%s/%s: %s%s%s", bucket,
                              key, code ? code : "error", message ? ": " : "", message ? message : "");
        }
      kiln_http_response_release (&resp);
    }
  if (r < 0)
    multipart_abort (c, bucket, key, upload_id);
  return r;
}

int
kiln_s3_upload_file (struct kiln_s3_client *c, const char *bucket, const char *key, const char *src_path,
                     const struct kiln_s3_upload_options *o, kiln_error **err)
{
  if (check_names ("upload", bucket, key, true, err) < 0)
    return -1;
  _cleanup_close_ int fd = open (src_path, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return kiln_fail_errno (err, errno, "S3 upload to s3://%s/%s: open '%s'", bucket, key, src_path);
  struct stat st;
  if (fstat (fd, &st) < 0)
    return kiln_fail_errno (err, errno, "S3 upload to s3://%s/%s: stat '%s'", bucket, key, src_path);
  if (!S_ISREG (st.st_mode))
    return kiln_fail_invalid (err, "S3 upload to s3://%s/%s: '%s' is not a regular file", bucket, key, src_path);
  uint64_t size = (uint64_t) st.st_size;
  uint64_t part = o && o->part_size ? o->part_size : KILN_S3_DEFAULT_PART_SIZE;
  if (part < KILN_S3_MIN_PART_SIZE)
    part = KILN_S3_MIN_PART_SIZE;
  /* S3 takes at most 10000 parts: grow them for very large files. */
  while ((size + part - 1) / part > KILN_S3_MAX_PARTS)
    part *= 2;
  if (size <= part)
    {
      int r = kiln_s3_put_object (c, bucket, key, src_path, NULL, err);
      if (r == 0 && o && o->progress)
        o->progress (size, size, o->progress_opaque);
      return r;
    }
  return multipart_upload (c, bucket, key, fd, src_path, size, part, o, err);
}

int
kiln_s3_parse_uri (const char *uri, char **bucket, char **key, kiln_error **err)
{
  *bucket = *key = NULL;
  if (uri == NULL || strncmp (uri, "s3://", 5) != 0)
    return kiln_fail_invalid (err, "'%s' is not an S3 URI (s3://bucket/key)", uri ? uri : "");
  const char *b = uri + 5;
  size_t bl = strcspn (b, "/");
  if (bl == 0)
    return kiln_fail_invalid (err, "S3 URI '%s' has no bucket name", uri);
  for (size_t i = 0; i < bl; i++)
    if (!(isalnum ((unsigned char) b[i]) || b[i] == '.' || b[i] == '-' || b[i] == '_'))
      return kiln_fail_invalid (err, "S3 URI '%s': '%.*s' is not a valid bucket name", uri, (int) bl, b);
  *bucket = kiln_xstrndup (b, bl);
  *key = kiln_xstrdup (b[bl] == '/' ? b + bl + 1 : "");
  return 0;
}
