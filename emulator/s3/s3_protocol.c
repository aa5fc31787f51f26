/* s3_protocol.c - S3's REST/XML protocol (s3.h): which bucket and key a
 * request names, which operation it is, whether the caller may touch the
 * bucket, and the XML replies and errors.
 *
 * Bucket and key.  Path style: http://HOST:PORT/bucket/key.  Virtual-host
 * style: the Host header names the bucket, as "bucket.localhost",
 * "bucket.s3.localhost", "bucket.s3.REGION.localhost" (or the same under
 * amazonaws.com with the "s3" label) and the whole path is the key.  The
 * path arrives decoded once (server.c), which is S3's rule: the key is what
 * the client encoded, whatever it contains ("../", spaces, any UTF-8); it
 * names a row, never a file.
 *
 * Operation.  By method, whether there is a key, and query subresources
 * (?uploads, ?uploadId=, ?partNumber=, ?delete, ?location, ?list-type=2)
 * plus x-amz-copy-source; the handlers are tables per area (s3_buckets.c,
 * s3_objects.c, s3_multipart.c).  Subresources kiln-emulator does not
 * implement (?acl, ?tagging, ?versioning, ...) answer 501 NotImplemented
 * rather than being mistaken for the plain operation.
 *
 * Access.  Bucket names are global; a bucket belongs to the account that
 * made it (anyone else gets 403 AccessDenied) and lives in its region: a
 * request signed for another region gets 400 AuthorizationHeaderMalformed
 * naming the right one in <Region> and x-amz-bucket-region, which is what
 * lets SDKs re-sign and retry there, as with S3.
 *
 * Errors: <Error><Code/><Message/>...<Resource/><RequestId/><HostId/>
 * </Error> with the operation's extra elements (<BucketName>, <Key>, ...);
 * replies to HEAD have no body, as S3's. */
#include "s3.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <libxml/parser.h>

#include "auth.h"
#include "cleanup.h"
#include "digest.h"
#include "store.h"
#include "xalloc.h"
#include "utf8.h"
#include "xml_doc.h"

/* What S3 answers in x-amz-id-2; one value is as good as another here. */
#define HOST_ID "kiln-emulator"

/* Subresources of buckets and objects that select an operation this
 * emulator does not implement. */
static const char *const unimplemented[] = {
  "accelerate", "acl", "analytics", "attributes", "cors", "encryption", "intelligent-tiering", "inventory",
  "legal-hold", "lifecycle", "logging", "metadataConfiguration", "metrics", "notification", "object-lock",
  "ownershipControls", "policy", "policyStatus", "publicAccessBlock", "replication", "requestPayment",
  "restore", "retention", "select", "session", "tagging", "torrent", "versioning", "versions", "website",
  NULL,
};

/* ---- small helpers ---- */

const char *
s3_query (struct s3_call *s, const char *name)
{
  return emu_request_query (s->req, name);
}

const char *
s3_header (struct s3_call *s, const char *name)
{
  return emu_request_header (s->req, name);
}

int
s3_query_int (struct s3_call *s, const char *name, long long def, long long min, long long max, long long *out)
{
  const char *v = s3_query (s, name);
  if (v == NULL)
    {
      *out = def;
      return 0;
    }
  char *end;
  errno = 0;
  long long n = strtoll (v, &end, 10);
  if (*v == '\0' || *end != '\0' || errno)
    return s3_fail (s, 400, "InvalidArgument", "Provided %s not an integer or within integer range", name);
  if (n < min)
    return s3_fail (s, 400, "InvalidArgument", "Argument %s must be an integer between %lld and %lld", name, min,
                    max);
  *out = n > max ? max : n;
  return 0;
}


void
s3_http_date (time_t t, char out[32])
{
  static const char days[7][4] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
  static const char months[12][4] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                     "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
  struct tm tm;
  gmtime_r (&t, &tm);
  snprintf (out, 32, "%s, %02d %s %04d %02d:%02d:%02d GMT", days[tm.tm_wday], tm.tm_mday, months[tm.tm_mon],
            tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
}

bool
s3_parse_http_date (const char *s, time_t *out)
{
  static const char *const formats[] = {"%a, %d %b %Y %H:%M:%S GMT", "%A, %d-%b-%y %H:%M:%S GMT",
                                        "%a %b %e %H:%M:%S %Y", "%Y-%m-%dT%H:%M:%S", NULL};
  for (size_t i = 0; formats[i]; i++)
    {
      struct tm tm = {0};
      const char *end = strptime (s, formats[i], &tm);
      if (end && (*end == '\0' || *end == '.' || *end == 'Z'))
        {
          *out = timegm (&tm);
          return true;
        }
    }
  return false;
}

void
s3_canonical_id (const char *account, char out[65])
{
  _cleanup_free_ char *text = NULL;
  text = kiln_xasprintf ("kiln-emulator canonical user %s", account);
  kiln_sha256_hex (text, strlen (text), out);
}

/* ---- errors ---- */

int
s3_fail (struct s3_call *s, int status, const char *code, const char *fmt, ...)
{
  if (s->c->error_code)
    return -1;
  _cleanup_free_ char *message = NULL;
  va_list ap;
  va_start (ap, fmt);
  message = kiln_xvasprintf (fmt, ap);
  va_end (ap);
  return emu_fail (s->c, status, code, "%s", message);
}

void
s3_error_extra (struct s3_call *s, const char *name, const char *value)
{
  if (s->c->error_code)
    return; /* the first error's extras only */
  if (s->error_extra == NULL)
    s->error_extra = json_array ();
  /* jansson keeps only valid UTF-8; what a client sent may be anything. */
  _cleanup_free_ char *safe = kiln_utf8_for_xml (value ? value : "");
  json_array_append_new (s->error_extra, json_pack ("[s, s]", name, safe));
}

int
s3_fail_no_such_key (struct s3_call *s)
{
  s3_error_extra (s, "Key", s->key);
  return s3_fail (s, 404, "NoSuchKey", "The specified key does not exist.");
}

int
s3_fail_internal (struct s3_call *s, kiln_error *err)
{
  return emu_fail_internal (s->c, err);
}

static void
error_reply (struct emu_call *c, struct emu_response *resp, json_t *extra)
{
  kiln_buf_reset (&resp->body);
  resp->status = c->error_status;
  free (resp->content_type);
  resp->content_type = NULL;
  if (resp->body_from_file)
    {
      close (resp->body_fd);
      resp->body_from_file = false;
    }
  if (strcmp (c->req->method, "HEAD") == 0)
    return;
  resp->content_type = kiln_xstrdup ("application/xml");
  xmlBufferPtr buf = xmlBufferCreate ();
  xmlTextWriterPtr w = xmlNewTextWriterMemory (buf, 0);
  xmlTextWriterStartDocument (w, "1.0", "UTF-8", NULL);
  xmlTextWriterStartElement (w, BAD_CAST "Error");
  xmlTextWriterWriteElement (w, BAD_CAST "Code", BAD_CAST c->error_code);
  kiln_xml_write_text_element (w, "Message", c->error_message ? c->error_message : "");
  size_t i;
  json_t *pair;
  json_array_foreach (extra, i, pair)
    kiln_xml_write_text_element (w, json_string_value (json_array_get (pair, 0)),
                                 json_string_value (json_array_get (pair, 1)));
  kiln_xml_write_text_element (w, "Resource", c->req->path ? c->req->path : "/");
  xmlTextWriterWriteElement (w, BAD_CAST "RequestId", BAD_CAST c->request_id);
  xmlTextWriterWriteElement (w, BAD_CAST "HostId", BAD_CAST HOST_ID);
  xmlTextWriterEndElement (w);
  xmlTextWriterEndDocument (w);
  xmlFreeTextWriter (w);
  kiln_buf_append (&resp->body, xmlBufferContent (buf), (size_t) xmlBufferLength (buf));
  xmlBufferFree (buf);
}

void
emu_s3_error_reply (struct emu_call *c, struct emu_response *resp)
{
  error_reply (c, resp, NULL);
  emu_response_add_header (resp, "x-amz-id-2", HOST_ID);
}

bool
emu_s3_unsigned_looks_like_s3 (const struct emu_request *req)
{
  if (emu_request_header (req, "X-Amz-Target") || emu_request_query (req, "Action"))
    return false;
  const char *type = emu_request_header (req, "Content-Type");
  if (strcmp (req->method, "POST") == 0 && type && strncasecmp (type, "application/x-www-form-urlencoded", 33) == 0)
    return false;
  return true;
}

/* ---- the reply ---- */

void
s3_header_add (struct s3_call *s, const char *name, const char *value)
{
  emu_response_add_header (s->resp, name, value);
}

void
s3_header_addf (struct s3_call *s, const char *name, const char *fmt, ...)
{
  _cleanup_free_ char *v = NULL;
  va_list ap;
  va_start (ap, fmt);
  v = kiln_xvasprintf (fmt, ap);
  va_end (ap);
  s3_header_add (s, name, v);
}

void
s3_xml_begin (struct s3_call *s, const char *root)
{
  s->xml_buf = xmlBufferCreate ();
  s->c->xml = xmlNewTextWriterMemory (s->xml_buf, 0);
  xmlTextWriterStartDocument (s->c->xml, "1.0", "UTF-8", NULL);
  xmlTextWriterStartElement (s->c->xml, BAD_CAST root);
  xmlTextWriterWriteAttribute (s->c->xml, BAD_CAST "xmlns", BAD_CAST S3_XMLNS);
}

void
s3_xml_finish (struct s3_call *s)
{
  xmlTextWriterEndDocument (s->c->xml);
  xmlFreeTextWriter (s->c->xml);
  s->c->xml = NULL;
  kiln_buf_reset (&s->resp->body);
  kiln_buf_append (&s->resp->body, xmlBufferContent (s->xml_buf), (size_t) xmlBufferLength (s->xml_buf));
  xmlBufferFree (s->xml_buf);
  s->xml_buf = NULL;
  if (s->resp->status == 0)
    s->resp->status = 200;
  free (s->resp->content_type);
  s->resp->content_type = kiln_xstrdup ("application/xml");
}

void
s3_xml_start (struct s3_call *s, const char *name)
{
  xmlTextWriterStartElement (s->c->xml, BAD_CAST name);
}

void
s3_xml_end (struct s3_call *s)
{
  xmlTextWriterFullEndElement (s->c->xml);
}

void
s3_xml_text (struct s3_call *s, const char *name, const char *value)
{
  if (value)
    kiln_xml_write_text_element (s->c->xml, name, value);
}

void
s3_xml_textf (struct s3_call *s, const char *name, const char *fmt, ...)
{
  _cleanup_free_ char *v = NULL;
  va_list ap;
  va_start (ap, fmt);
  v = kiln_xvasprintf (fmt, ap);
  va_end (ap);
  s3_xml_text (s, name, v);
}

void
s3_xml_time (struct s3_call *s, const char *name, time_t t)
{
  char text[32];
  emu_format_time (t, text);
  s3_xml_text (s, name, text);
}

void
s3_xml_owner (struct s3_call *s, const char *element, const char *account)
{
  char id[65];
  s3_canonical_id (account, id);
  s3_xml_start (s, element);
  s3_xml_text (s, "ID", id);
  s3_xml_text (s, "DisplayName", account);
  s3_xml_end (s);
}

void
s3_xml_key (struct s3_call *s, const char *name, const char *value, bool url)
{
  if (value == NULL)
    return;
  _cleanup_free_ char *enc = url ? kiln_sigv4_uri_encode (value, true) : NULL;
  s3_xml_text (s, name, enc ? enc : value);
}

/* ---- request bodies ---- */

xmlDocPtr
s3_xml_parse (struct s3_call *s)
{
  if (s->req->body_len == 0 || s->req->body_len > (size_t) 0x7fffffff)
    {
      s3_fail (s, 400, "MalformedXML", "The XML you provided was not well-formed or did not validate against our "
               "published schema.");
      return NULL;
    }
  /* A DOCTYPE is refused with the rest of what is not S3's XML: its
   * entities could make one request cost gigabytes (xml_doc.h). */
  xmlDocPtr doc = kiln_xml_parse_untrusted (s->req->body, s->req->body_len, "request.xml");
  if (doc == NULL || xmlDocGetRootElement (doc) == NULL)
    {
      xmlFreeDoc (doc);
      s3_fail (s, 400, "MalformedXML", "The XML you provided was not well-formed or did not validate against our "
               "published schema.");
      return NULL;
    }
  return doc;
}

xmlNodePtr
s3_xml_child (xmlNodePtr node, const char *name)
{
  for (xmlNodePtr n = node ? node->children : NULL; n; n = n->next)
    if (n->type == XML_ELEMENT_NODE && strcmp ((const char *) n->name, name) == 0)
      return n;
  return NULL;
}

char *
s3_xml_child_text (xmlNodePtr node, const char *name)
{
  xmlNodePtr n = name ? s3_xml_child (node, name) : node;
  if (n == NULL)
    return NULL;
  xmlChar *text = xmlNodeGetContent (n);
  char *r = kiln_xstrdup ((const char *) text);
  xmlFree (text);
  return r;
}

/* ---- object metadata ---- */

static const char *const stored_headers[] = {
  "Cache-Control", "Content-Disposition", "Content-Encoding", "Content-Language", "Expires",
  "x-amz-website-redirect-location", NULL,
};

json_t *
s3_metadata_from_request (struct s3_call *s)
{
  json_t *m = json_object ();
  for (size_t i = 0; i < s->req->n_headers; i++)
    {
      const char *name = s->req->headers[i].name;
      if (strncasecmp (name, "x-amz-meta-", 11) != 0)
        continue;
      _cleanup_free_ char *lower = kiln_xstrdup (name);
      for (char *p = lower; *p; p++)
        *p = (char) tolower ((unsigned char) *p);
      json_object_set_new (m, lower, json_string (s->req->headers[i].value ? s->req->headers[i].value : ""));
    }
  for (size_t i = 0; stored_headers[i]; i++)
    {
      const char *v = s3_header (s, stored_headers[i]);
      if (v == NULL)
        continue;
      if (strcmp (stored_headers[i], "Content-Encoding") == 0)
        {
          /* aws-chunked described the request, not the object. */
          struct kiln_buf kept = KILN_BUF_INIT;
          _cleanup_free_ char *copy = kiln_xstrdup (v);
          char *save = NULL;
          for (char *t = strtok_r (copy, ",", &save); t; t = strtok_r (NULL, ",", &save))
            {
              while (*t == ' ')
                t++;
              size_t n = strlen (t);
              while (n && t[n - 1] == ' ')
                t[--n] = '\0';
              if (n && strcasecmp (t, "aws-chunked") != 0)
                kiln_buf_printf (&kept, "%s%s", kept.len ? "," : "", t);
            }
          if (kept.len)
            json_object_set_new (m, stored_headers[i], json_string (kiln_buf_str (&kept)));
          kiln_buf_release (&kept);
          continue;
        }
      json_object_set_new (m, stored_headers[i], json_string (v));
    }
  return m;
}

void
s3_metadata_to_reply (struct s3_call *s, const char *metadata_json)
{
  _cleanup_json_ json_t *m = json_loads (metadata_json ? metadata_json : "{}", 0, NULL);
  const char *name;
  json_t *value;
  json_object_foreach (m, name, value)
    if (json_is_string (value))
      s3_header_add (s, name, json_string_value (value));
}

const char *
s3_content_type (struct s3_call *s)
{
  const char *t = s3_header (s, "Content-Type");
  return t && *t ? t : "binary/octet-stream";
}

int
s3_requested_algorithm (struct s3_call *s, const char *header, enum s3_algorithm *out)
{
  const char *v = s3_header (s, header);
  *out = S3_ALG_NONE;
  if (v == NULL || *v == '\0')
    return 0;
  *out = s3_algorithm_by_name (v);
  if (*out == S3_ALG_NONE)
    return s3_fail (s, 400, "InvalidRequest", "Checksum algorithm provided is unsupported. Please try again with "
                    "any of the valid types: [CRC32, CRC32C, CRC64NVME, SHA1, SHA256]");
  return 0;
}

/* ---- bucket and key ---- */

/* The bucket a virtual-host style Host header names (malloc'd), or NULL
 * when the request is path style. */
static char *
virtual_host_bucket (const char *host_header)
{
  if (host_header == NULL || *host_header == '\0' || host_header[0] == '[')
    return NULL;
  _cleanup_free_ char *host = kiln_xstrdup (host_header);
  for (char *p = host; *p; p++)
    *p = (char) tolower ((unsigned char) *p);
  char *colon = strrchr (host, ':');
  if (colon)
    *colon = '\0';
  static const char *const suffixes[] = {".localhost", ".amazonaws.com", NULL};
  for (size_t i = 0; suffixes[i]; i++)
    {
      size_t hl = strlen (host), sl = strlen (suffixes[i]);
      if (hl <= sl || strcmp (host + hl - sl, suffixes[i]) != 0)
        continue;
      host[hl - sl] = '\0';
      const char *rest = host;
      if (strcmp (rest, "s3") == 0 || (strncmp (rest, "s3.", 3) == 0 && emu_region_known (rest + 3)))
        return NULL;
      size_t rl = strlen (rest);
      if (rl > 3 && strcmp (rest + rl - 3, ".s3") == 0)
        return kiln_xstrndup (rest, rl - 3);
      for (const char *p = strstr (rest, ".s3."); p; p = strstr (p + 1, ".s3."))
        if (emu_region_known (p + 4))
          return kiln_xstrndup (rest, (size_t) (p - rest));
      return i == 0 ? kiln_xstrdup (rest) : NULL;
    }
  return NULL;
}

/* Splits the request into bucket and key (either may come back NULL). */
static void
target_of (const struct emu_request *req, char **bucket, char **key)
{
  *bucket = virtual_host_bucket (emu_request_header (req, "Host"));
  const char *path = req->path && *req->path ? req->path : "/";
  if (*path == '/')
    path++;
  if (*bucket == NULL)
    {
      const char *slash = strchr (path, '/');
      if (*path)
        *bucket = slash ? kiln_xstrndup (path, (size_t) (slash - path)) : kiln_xstrdup (path);
      path = slash ? slash + 1 : "";
    }
  *key = *bucket && *path ? kiln_xstrdup (path) : NULL;
}

bool
emu_s3_is_object_write (const struct emu_request *head)
{
  if (strcmp (head->method, "PUT") != 0 || emu_request_header (head, "x-amz-copy-source"))
    return false;
  /* Only requests signed for S3. */
  struct kiln_sigv4_auth auth = {0};
  const char *authorization = emu_request_header (head, "Authorization");
  int parsed = authorization ? kiln_sigv4_parse_authorization (authorization, &auth, NULL)
                             : kiln_sigv4_parse_presigned (head->query, head->n_query, &auth, NULL);
  bool s3 = parsed == 0 && auth.service && strcmp (auth.service, "s3") == 0;
  kiln_sigv4_auth_release (&auth);
  if (!s3)
    return false;
  _cleanup_free_ char *bucket = NULL, *key = NULL;
  target_of (head, &bucket, &key);
  if (key == NULL)
    return false;
  for (size_t i = 0; unimplemented[i]; i++)
    if (emu_request_query (head, unimplemented[i]))
      return false;
  return true;
}

/* ---- routing ---- */

static const struct s3_operation *
find_operation (const char *name)
{
  static const struct s3_operation *const tables[] = {emu_s3_bucket_ops, emu_s3_object_ops, emu_s3_multipart_ops,
                                                      NULL};
  for (size_t t = 0; tables[t]; t++)
    for (const struct s3_operation *op = tables[t]; op->name; op++)
      if (strcmp (op->name, name) == 0)
        return op;
  return NULL;
}

/* The operation's name, or NULL with the error recorded. */
static const char *
route (struct s3_call *s)
{
  const char *m = s->req->method;
  for (size_t i = 0; unimplemented[i]; i++)
    if (s3_query (s, unimplemented[i]))
      {
        s3_fail (s, 501, "NotImplemented", "kiln-emulator's S3 does not implement the ?%s subresource.",
                 unimplemented[i]);
        return NULL;
      }
  bool upload_id = s3_query (s, "uploadId") != NULL;
  if (s->bucket == NULL)
    {
      if (strcmp (m, "GET") == 0)
        return "ListBuckets";
    }
  else if (s->key == NULL)
    {
      if (strcmp (m, "PUT") == 0)
        return "CreateBucket";
      if (strcmp (m, "HEAD") == 0)
        return "HeadBucket";
      if (strcmp (m, "DELETE") == 0)
        return "DeleteBucket";
      if (strcmp (m, "GET") == 0)
        {
          if (s3_query (s, "location"))
            return "GetBucketLocation";
          if (s3_query (s, "uploads"))
            return "ListMultipartUploads";
          const char *lt = s3_query (s, "list-type");
          if (lt && strcmp (lt, "2") == 0)
            return "ListObjectsV2";
          return "ListObjects";
        }
      if (strcmp (m, "POST") == 0 && s3_query (s, "delete"))
        return "DeleteObjects";
    }
  else
    {
      bool copy = s3_header (s, "x-amz-copy-source") != NULL;
      if (strcmp (m, "PUT") == 0)
        {
          if (upload_id || s3_query (s, "partNumber"))
            return copy ? "UploadPartCopy" : "UploadPart";
          return copy ? "CopyObject" : "PutObject";
        }
      if (strcmp (m, "GET") == 0)
        return upload_id ? "ListParts" : "GetObject";
      if (strcmp (m, "HEAD") == 0)
        return "HeadObject";
      if (strcmp (m, "DELETE") == 0)
        return upload_id ? "AbortMultipartUpload" : "DeleteObject";
      if (strcmp (m, "POST") == 0)
        {
          if (s3_query (s, "uploads"))
            return "CreateMultipartUpload";
          if (upload_id)
            return "CompleteMultipartUpload";
        }
    }
  s3_error_extra (s, "Method", m);
  s3_error_extra (s, "ResourceType", s->bucket == NULL ? "SERVICE" : s->key == NULL ? "BUCKET" : "OBJECT");
  s3_fail (s, 405, "MethodNotAllowed", "The specified method is not allowed against this resource.");
  return NULL;
}

/* The bucket exists, is the caller's and lives in the region signed for. */
static int
check_bucket (struct s3_call *s, bool any_region)
{
  _cleanup_error_ kiln_error *err = NULL;
  s->bucket_row = emu_db_query_one (s->c->emu, &err, "SELECT name, account, region, created FROM s3_buckets "
                                    "WHERE name = ?", s->bucket);
  if (s->bucket_row == NULL)
    {
      if (err)
        return s3_fail_internal (s, err);
      s3_error_extra (s, "BucketName", s->bucket);
      return s3_fail (s, 404, "NoSuchBucket", "The specified bucket does not exist");
    }
  const char *region = emu_row_str (s->bucket_row, "region");
  if (!any_region && strcmp (region, s->c->region) != 0)
    {
      /* A header SDKs read on HEAD, where there is no body. */
      s3_header_add (s, "x-amz-bucket-region", region);
      s3_error_extra (s, "Region", region);
      bool presigned = emu_request_header (s->req, "Authorization") == NULL;
      if (presigned)
        return s3_fail (s, 400, "AuthorizationQueryParametersError", "Error parsing the X-Amz-Credential parameter; "
                        "the region '%s' is wrong; expecting '%s'", s->c->region, region);
      return s3_fail (s, 400, "AuthorizationHeaderMalformed", "The authorization header is malformed; the region "
                      "'%s' is wrong; expecting '%s'", s->c->region, region);
    }
  if (strcmp (emu_row_str (s->bucket_row, "account"), s->c->account) != 0)
    return s3_fail (s, 403, "AccessDenied", "Access Denied");
  return 0;
}

void
emu_s3_serve (struct emu_call *c, struct emu_response *resp)
{
  struct s3_call s = {.c = c, .resp = resp, .req = c->req};
  struct emu_upload *own_upload = NULL;
  target_of (c->req, &s.bucket, &s.key);
  const char *name = route (&s);
  const struct s3_operation *op = name ? find_operation (name) : NULL;
  if (name && op == NULL)
    s3_fail (&s, 501, "NotImplemented", "kiln-emulator's S3 does not implement %s.", name);
  if (op == NULL)
    goto out;
  c->operation = op->name;
  if (s.key && strlen (s.key) > S3_MAX_KEY_LEN)
    {
      s3_error_extra (&s, "KeyName", s.key);
      s3_fail (&s, 400, "KeyTooLongError", "Your key is too long");
      goto out;
    }
  if (s.key && !kiln_utf8_valid (s.key))
    {
      s3_fail (&s, 400, "InvalidURI", "Couldn't parse the specified URI: the key is not valid UTF-8.");
      goto out;
    }
  if (op->needs_bucket && check_bucket (&s, strcmp (op->name, "GetBucketLocation") == 0) < 0)
    goto out;
  s.upload = c->req->upload;
  if (s.upload == NULL && emu_s3_is_object_write (c->req))
    s.upload = own_upload = emu_upload_from_memory (c->emu, c->req);
  if (op->fn (&s) < 0 && c->error_code == NULL)
    s3_fail (&s, 500, "InternalError", "%s failed without saying why", op->name);
  if (c->error_code == NULL && resp->status == 0)
    resp->status = 200;

out:
  if (c->xml)
    {
      xmlFreeTextWriter (c->xml);
      c->xml = NULL;
    }
  if (s.xml_buf)
    xmlBufferFree (s.xml_buf);
  if (c->error_code)
    error_reply (c, resp, s.error_extra);
  emu_response_add_header (resp, "x-amz-id-2", HOST_ID);
  json_decref (s.error_extra);
  json_decref (s.bucket_row);
  emu_upload_free (own_upload);
  free (s.bucket);
  free (s.key);
}

void
emu_s3_auth_error (enum emu_auth_failure kind, bool presigned, int *status, const char **code)
{
  const char *malformed = presigned ? "AuthorizationQueryParametersError" : "AuthorizationHeaderMalformed";
  switch (kind)
    {
    case EMU_AUTH_MISSING:
      *status = 403;
      *code = "AccessDenied";
      return;
    case EMU_AUTH_INCOMPLETE:
    case EMU_AUTH_BAD_SCOPE:
      *status = 400;
      *code = malformed;
      return;
    case EMU_AUTH_UNKNOWN_KEY:
      *status = 403;
      *code = "InvalidAccessKeyId";
      return;
    case EMU_AUTH_MISMATCH:
      *status = 403;
      *code = "SignatureDoesNotMatch";
      return;
    case EMU_AUTH_EXPIRED:
      *status = 403;
      *code = presigned ? "AccessDenied" : "RequestTimeTooSkewed";
      return;
    case EMU_AUTH_BAD_PAYLOAD:
      *status = 400;
      *code = "XAmzContentSHA256Mismatch";
      return;
    case EMU_AUTH_UNSUPPORTED:
      *status = 400;
      *code = "InvalidRequest";
      return;
    case EMU_AUTH_EXPIRED_TOKEN:
      *status = 400;
      *code = "ExpiredToken";
      return;
    case EMU_AUTH_OK:
      break;
    }
  *status = 500;
  *code = "InternalError";
}
