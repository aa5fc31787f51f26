/* s3_client.c - S3's operations over aws_client's rest-xml protocol (see
 * s3_client.h).
 *
 * The client is an aws_client for service "s3" (display name "S3", so
 * messages read "S3 GetObject s3://b/k: ..."): signing, the x-amz-content-
 * sha256 header, retries with backoff, error documents and the transport are
 * all aws_client's.  What is S3's own stays here: path or virtual-host
 * addressing, a region defaulting to us-east-1, no overall time limit unless
 * one is asked for, bodies streamed from files with their real SHA-256,
 * ListObjectsV2's pages and multipart upload.  Replies are read with libxml2
 * (through aws_client and xml_doc.h), matching elements by local name so
 * S3's namespace does not matter; ListObjectsV2 is asked for
 * encoding-type=url so keys with characters XML 1.0 cannot carry survive. */
#include "s3_client.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "aws_client.h"
#include "buf.h"
#include "cleanup.h"
#include "digest.h"
#include "log.h"
#include "xalloc.h"
#include "xml_doc.h"

/* S3's retries: fewer than EC2's, the first pauses short. */
#define S3_MAX_ATTEMPTS 3
#define S3_BASE_DELAY_MS 200L
#define MAX_LIST_PAGES 1000000

struct kiln_s3_client {
  struct kiln_aws_client *aws;   /* service "s3" */
  bool path_style;
  char *expected_owner;
};

/* ---- XML pieces ---- */

int
kiln_s3_xml_unescape (const char *s, size_t len, char **out)
{
  *out = NULL;
  struct kiln_buf b = KILN_BUF_INIT;
  kiln_buf_puts (&b, "<t>");
  kiln_buf_append (&b, s, len);
  kiln_buf_puts (&b, "</t>");
  xmlDoc *doc = kiln_xml_parse_untrusted (b.data, b.len, "s3-text.xml");
  kiln_buf_release (&b);
  xmlNode *root = kiln_aws_xml_root (doc);
  /* Text only: markup in s is not text to decode. */
  bool text = root != NULL;
  for (xmlNode *n = root ? root->children : NULL; n; n = n->next)
    text &= n->type == XML_TEXT_NODE;
  if (text)
    *out = kiln_aws_xml_text (root, NULL);
  if (doc)
    xmlFreeDoc (doc);
  return *out ? 0 : -1;
}

void
kiln_s3_parse_error (const char *xml, char **code, char **message)
{
  struct kiln_aws_error e = {0};
  if (xml)
    kiln_aws_parse_ec2_error (xml, strlen (xml), &e);
  *code = e.code;
  *message = e.message;
  e.code = e.message = NULL;
  kiln_aws_error_release (&e);
}

/* ---- client ---- */

void
kiln_s3_client_free (struct kiln_s3_client *c)
{
  if (c == NULL)
    return;
  kiln_aws_client_free (c->aws);
  free (c->expected_owner);
  free (c);
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
  const struct kiln_aws_config *cfg = opts->config ? opts->config : loaded;
  /* S3 needs a region only for the signing scope and the default endpoint;
   * with none configured, use us-east-1 as the AWS CLI does for S3 rather
   * than fail (emulators accept any region). */
  const char *region = opts->region && *opts->region ? opts->region : kiln_aws_config_region (cfg);
  struct kiln_aws_client_options ao = {
    .endpoint_url = opts->endpoint_url,
    .region = region && *region ? region : "us-east-1",
    .retry = {.max_attempts = S3_MAX_ATTEMPTS, .base_delay_ms = S3_BASE_DELAY_MS},
    /* Objects may be large: no limit unless the caller sets one. */
    .timeout_seconds = opts->timeout_seconds > 0 ? opts->timeout_seconds : -1,
    .insecure = opts->insecure,
    .display_name = "S3",
  };
  struct kiln_aws_client *aws = NULL;
  int r = kiln_aws_client_new (cfg, "s3", &ao, &aws, err);
  kiln_aws_config_free (loaded);
  if (r < 0)
    return -1;
  struct kiln_s3_client *c = kiln_xcalloc (1, sizeof *c);
  c->aws = aws;
  c->path_style = kiln_aws_client_endpoint_custom (aws) || opts->force_path_style;
  c->expected_owner = opts->expected_bucket_owner && *opts->expected_bucket_owner
                          ? kiln_xstrdup (opts->expected_bucket_owner)
                          : NULL;
  *out = c;
  return 0;
}

const char *
kiln_s3_client_endpoint (const struct kiln_s3_client *c)
{
  return kiln_aws_client_endpoint (c->aws);
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
  const char *payload_hash;              /* NULL: the hash of body */
  const char *content_type;
  FILE *body_file;                       /* rewound to 0 for each attempt */
  const void *body;                      /* or body_len bytes from memory */
  size_t body_len;
  const char *response_path;
};

/* Sends call through the rest-xml protocol: the bucket in the path (path
 * style, or a bucket name with a '.', which would break the TLS wildcard
 * certificate) or in the host name.  doc as kiln_aws_rest_xml_call's. */
static int
s3_call (struct kiln_s3_client *c, const struct s3_call *call, struct kiln_http_response *resp, xmlDoc **doc,
         kiln_error **err)
{
  bool path_style = c->path_style || strchr (call->bucket, '.') != NULL;
  const char *key = call->key ? call->key : "";
  _cleanup_free_ char *host = NULL, *path = NULL, *resource = NULL;
  if (path_style)
    path = kiln_xasprintf ("/%s%s%s", call->bucket, call->key ? "/" : "", key);
  else
    {
      host = kiln_xasprintf ("%s.%s", call->bucket, kiln_aws_client_authority (c->aws));
      path = kiln_xasprintf ("/%s", key);
    }
  resource = kiln_xasprintf ("s3://%s/%s", call->bucket, key);
  const struct kiln_sigv4_pair owner[] = {{"x-amz-expected-bucket-owner", c->expected_owner}};
  struct kiln_aws_rest_request req = {
    .operation = call->op,
    .method = call->method,
    .path = path,
    .query = call->query,
    .n_query = call->n_query,
    .headers = c->expected_owner ? owner : NULL,
    .n_headers = c->expected_owner ? 1 : 0,
    .content_type = call->content_type,
    .body = call->body,
    .body_len = call->body_len,
    .body_file = call->body_file,
    .payload_hash = call->payload_hash,
    .host = host,
    .resource = resource,
    .response_path = call->response_path,
  };
  return kiln_aws_rest_xml_call (c->aws, &req, resp, doc, NULL, err);
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
  int r = s3_call (c, &call, &resp, NULL, err);
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
    .body_len = (size_t) st.st_size,
  };
  struct kiln_http_response resp = {0};
  int r = s3_call (c, &call, &resp, NULL, err);
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
  int r = s3_call (c, &call, &resp, NULL, err);
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
parse_list_page (xmlDoc *doc, struct kiln_s3_listing *out, bool *truncated, char **token, const char *what,
                 kiln_error **err)
{
  xmlNode *root = kiln_aws_xml_root (doc);
  if (root == NULL || xmlStrcmp (root->name, BAD_CAST "ListBucketResult") != 0)
    return kiln_error_set (err, KILN_ERR_REMOTE, 0, "S3 ListObjectsV2 %s: the reply is not a ListBucketResult", what);
  _cleanup_free_ char *enc = kiln_aws_xml_text (root, "EncodingType");
  bool url_encoded = enc && strcmp (enc, "url") == 0;

  for (xmlNode *entry = kiln_aws_xml_child (root, "Contents"); entry; entry = kiln_aws_xml_next (entry))
    {
      _cleanup_free_ char *key = kiln_aws_xml_text (entry, "Key");
      _cleanup_free_ char *size = kiln_aws_xml_text (entry, "Size");
      if (key == NULL)
        return kiln_error_set (err, KILN_ERR_REMOTE, 0, "S3 ListObjectsV2 %s: an entry without a valid <Key>", what);
      struct kiln_s3_object o = {0};
      o.key = url_encoded ? kiln_sigv4_uri_decode (key, strlen (key), true, NULL) : kiln_xstrdup (key);
      if (size && !parse_u64 (size, &o.info.size))
        {
          free (o.key);
          return kiln_error_set (err, KILN_ERR_REMOTE, 0, "S3 ListObjectsV2 %s: bad <Size> for an entry", what);
        }
      o.info.etag = kiln_aws_xml_text (entry, "ETag");
      o.info.last_modified = kiln_aws_xml_text (entry, "LastModified");
      struct kiln_s3_object *v = realloc (out->objects, (out->n + 1) * sizeof *v);
      if (v == NULL)
        abort ();
      out->objects = v;
      out->objects[out->n++] = o;
    }
  _cleanup_free_ char *trunc = kiln_aws_xml_text (root, "IsTruncated");
  *truncated = trunc && strcmp (trunc, "true") == 0;
  *token = kiln_aws_xml_text (root, "NextContinuationToken");
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
      _cleanup_ (xmlFreeDoc) xmlDoc *doc = NULL;
      int r = s3_call (c, &call, &resp, &doc, err);
      bool truncated = false;
      char *next = NULL;
      if (r == 0)
        r = parse_list_page (doc, out, &truncated, &next, what, err);
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
  int r = s3_call (c, &call, &resp, NULL, err);
  kiln_http_response_release (&resp);
  return r;
}

/* Sends one request whose body is body (len bytes, signed with its hash). */
static int
s3_call_body (struct kiln_s3_client *c, struct s3_call *call, const void *body, size_t len,
              struct kiln_http_response *resp, xmlDoc **doc, kiln_error **err)
{
  call->body = body;
  call->body_len = len;
  return s3_call (c, call, resp, doc, err);
}

static void
multipart_abort (struct kiln_s3_client *c, const char *bucket, const char *key, const char *upload_id)
{
  const struct kiln_sigv4_pair q[] = {{"uploadId", upload_id}};
  struct s3_call call = {.op = "AbortMultipartUpload", .method = "DELETE", .bucket = bucket, .key = key,
                         .query = q, .n_query = 1};
  struct kiln_http_response resp = {0};
  _cleanup_error_ kiln_error *e = NULL;
  if (s3_call (c, &call, &resp, NULL, &e) < 0)
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
  xmlDoc *created = NULL;
  int r = s3_call (c, &create, &resp, &created, err);
  kiln_http_response_release (&resp);
  if (r < 0)
    return -1;
  _cleanup_free_ char *upload_id = kiln_aws_xml_text (kiln_aws_xml_root (created), "UploadId");
  xmlFreeDoc (created);
  if (upload_id == NULL || *upload_id == '\0')
    return kiln_error_set (err, KILN_ERR_REMOTE, 0, "S3 CreateMultipartUpload s3://%s/%s: no UploadId in the reply",
                           bucket, key);

  size_t n_parts = (size_t) ((size + part_size - 1) / part_size);
  _cleanup_strv_ char **etags = calloc (n_parts + 1, sizeof *etags);
  _cleanup_free_ void *buf = malloc ((size_t) part_size);
  if (etags == NULL || buf == NULL)
    abort ();
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
      r = s3_call_body (c, &part, buf, len, &resp, NULL, err);
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
      _cleanup_ (xmlFreeDoc) xmlDoc *reply = NULL;
      r = s3_call_body (c, &complete, body, strlen (body), &resp, &reply, err);
      kiln_http_response_release (&resp);
      /* S3 may answer 200 and still put an error in the body. */
      xmlNode *root = kiln_aws_xml_root (reply);
      if (r == 0 && xmlStrcmp (root->name, BAD_CAST "Error") == 0)
        {
          _cleanup_free_ char *code = kiln_aws_xml_text (root, "Code");
          _cleanup_free_ char *message = kiln_aws_xml_text (root, "Message");
          r = kiln_error_set (err, KILN_ERR_REMOTE, 0, "S3 CompleteMultipartUpload s3://%s/%s: %s%s%s", bucket,
                              key, code ? code : "error", message ? ": " : "", message ? message : "");
        }
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
