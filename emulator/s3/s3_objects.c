/* s3_objects.c - S3 objects: PutObject, GetObject, HeadObject,
 * DeleteObject, DeleteObjects, CopyObject, ListObjects, ListObjectsV2.
 *
 * An object is a row of s3_objects and a data file (s3_data.c).  PutObject
 * publishes the file its body was streamed into, then swaps the row in a
 * transaction and removes the replaced file after the commit; GetObject
 * reads the row and opens its file under the database lock, so a reader
 * gets the old object or the new one whole, never a mix, and the server
 * sends it from the descriptor (Range: one range, 206 with Content-Range,
 * or 416 InvalidRange).  ETags are the MD5 of the data (multipart objects'
 * come from s3_multipart.c); the flexible checksum an object was stored with
 * is returned when asked (x-amz-checksum-mode: ENABLED) and the whole
 * object is read, as S3 does (a range has no checksum to check).
 *
 * Listing walks keys in byte order from a cursor: each key under the
 * prefix, or the common prefix it rolls up into at the delimiter; after a
 * common prefix the walk jumps past every key under it (keys are UTF-8, so
 * prefix + 0xFF sorts after all of them).  Continuation tokens are the last
 * key or common prefix returned, base64.  encoding-type=url encodes keys
 * and prefixes in replies (newer SDKs ask for it and decode). */
#include "s3.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cleanup.h"
#include "digest.h"
#include "fsutil.h"
#include "store.h"
#include "utf8.h"
#include "xalloc.h"

#define LIST_MAX_KEYS 1000
#define LIST_BATCH "1000"
#define DELETE_MAX_KEYS 1000
#define USER_METADATA_MAX 2048

/* ---- conditions ---- */

/* Whether an If-Match style list ("a", W/"b", *) names etag (no quotes). */
static bool
etag_matches (const char *list, const char *etag)
{
  _cleanup_free_ char *copy = kiln_xstrdup (list);
  char *save = NULL;
  for (char *t = strtok_r (copy, ",", &save); t; t = strtok_r (NULL, ",", &save))
    {
      while (*t == ' ' || *t == '\t')
        t++;
      size_t n = strlen (t);
      while (n && (t[n - 1] == ' ' || t[n - 1] == '\t'))
        t[--n] = '\0';
      if (strcmp (t, "*") == 0)
        return true;
      if (strncmp (t, "W/", 2) == 0)
        t += 2, n -= 2;
      if (n >= 2 && t[0] == '"' && t[n - 1] == '"')
        {
          t[n - 1] = '\0';
          t++;
        }
      if (strcmp (t, etag) == 0)
        return true;
    }
  return false;
}

static int
precondition_failed (struct s3_call *s, const char *condition)
{
  s3_error_extra (s, "Condition", condition);
  return s3_fail (s, 412, "PreconditionFailed", "At least one of the pre-conditions you specified did not hold");
}

/* GET/HEAD conditions on row: 0 to go on, 1 for 304 Not Modified, -1 on
 * failure (412). */
static int
read_conditions (struct s3_call *s, json_t *row, const char *prefix_name)
{
  char name[96];
  const char *etag = emu_row_str (row, "etag");
  time_t modified = (time_t) emu_row_int (row, "modified");
  snprintf (name, sizeof name, "%sIf-Match", prefix_name);
  const char *if_match = s3_header (s, name);
  snprintf (name, sizeof name, "%sIf-None-Match", prefix_name);
  const char *if_none = s3_header (s, name);
  snprintf (name, sizeof name, "%sIf-Modified-Since", prefix_name);
  const char *if_mod = s3_header (s, name);
  snprintf (name, sizeof name, "%sIf-Unmodified-Since", prefix_name);
  const char *if_unmod = s3_header (s, name);
  time_t t;
  if (if_match && !etag_matches (if_match, etag))
    return precondition_failed (s, "If-Match");
  if (if_match == NULL && if_unmod && s3_parse_http_date (if_unmod, &t) && modified > t)
    return precondition_failed (s, "If-Unmodified-Since");
  bool copy = *prefix_name != '\0';
  if (if_none && etag_matches (if_none, etag))
    return copy ? precondition_failed (s, "If-None-Match") : 1;
  if (if_none == NULL && if_mod && s3_parse_http_date (if_mod, &t) && modified <= t)
    return copy ? precondition_failed (s, "If-Modified-Since") : 1;
  return 0;
}

/* ---- storing ---- */

/* The row of o at bucket/key, replacing the one there. */
static int
object_row_insert (struct kiln_emu *emu, const char *bucket, const char *key, const struct s3_new_object *o,
                   time_t now, kiln_error **err)
{
  char size[24], modified[24];
  snprintf (size, sizeof size, "%llu", (unsigned long long) o->size);
  snprintf (modified, sizeof modified, "%lld", (long long) now);
  const struct s3_algorithm_info *info = s3_algorithm_info (o->algorithm);
  if (emu_db_exec (emu, err, "INSERT OR REPLACE INTO s3_objects (bucket, key, data, size, etag, content_type, "
                   "metadata, checksum_algorithm, checksum, checksum_type, part_sizes, modified) "
                   "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                   bucket, key, o->data, size, o->etag, o->content_type, o->metadata ? o->metadata : "{}",
                   info ? info->name : NULL, info ? o->checksum : NULL, info ? o->checksum_type : NULL,
                   o->part_sizes, modified)
      < 0)
    return -1;
  return 0;
}

int
s3_object_put_row (struct s3_call *s, const struct s3_new_object *o, char **old_data, kiln_error **err)
{
  struct kiln_emu *emu = s->c->emu;
  *old_data = NULL;
  _cleanup_json_ json_t *bucket = emu_db_query_one (emu, err, "SELECT 1 AS x FROM s3_buckets WHERE name = ?",
                                                    s->bucket);
  if (bucket == NULL)
    {
      if (*err)
        return -1;
      s3_error_extra (s, "BucketName", s->bucket);
      return s3_fail (s, 404, "NoSuchBucket", "The specified bucket does not exist");
    }
  _cleanup_json_ json_t *old = emu_db_query_one (emu, err, "SELECT data, etag FROM s3_objects WHERE bucket = ? "
                                                 "AND key = ?", s->bucket, s->key);
  if (old == NULL && *err)
    return -1;
  const char *if_none = s3_header (s, "If-None-Match");
  const char *if_match = s3_header (s, "If-Match");
  if (if_none && old && etag_matches (if_none, emu_row_str (old, "etag")))
    return precondition_failed (s, "If-None-Match");
  if (if_match && old == NULL)
    return s3_fail_no_such_key (s);
  if (if_match && !etag_matches (if_match, emu_row_str (old, "etag")))
    return precondition_failed (s, "If-Match");

  if (object_row_insert (emu, s->bucket, s->key, o, s->c->now, err) < 0)
    return -1;
  if (old)
    *old_data = kiln_xstrdup (emu_row_str (old, "data"));
  return 0;
}

/* Stores the object whose data file is data_id, removing that file when it
 * does not get stored and the file it replaced when it does. */
static int
store_object (struct s3_call *s, const struct s3_new_object *o)
{
  struct kiln_emu *emu = s->c->emu;
  _cleanup_error_ kiln_error *err = NULL;
  _cleanup_free_ char *old = NULL;
  if (emu_db_begin (emu, &err) < 0)
    {
      s3_data_remove (emu, o->data);
      return s3_fail_internal (s, err);
    }
  int r = s3_object_put_row (s, o, &old, &err);
  if (emu_db_end (emu, r == 0, r == 0 ? &err : NULL) < 0 || r < 0)
    {
      s3_data_remove (emu, o->data);
      return err ? s3_fail_internal (s, err) : -1;
    }
  s3_data_remove (emu, old);
  return 0;
}

static void
checksum_headers (struct s3_call *s, const char *algorithm, const char *value, const char *type)
{
  const struct s3_algorithm_info *info = s3_algorithm_info (s3_algorithm_by_name (algorithm));
  if (info == NULL || value == NULL)
    return;
  s3_header_add (s, info->header, value);
  if (type)
    s3_header_add (s, "x-amz-checksum-type", type);
}

/* The size of the user metadata S3 limits: x-amz-meta-* names (without the
 * prefix) and values. */
static size_t
user_metadata_size (json_t *m)
{
  size_t n = 0;
  const char *name;
  json_t *v;
  json_object_foreach (m, name, v)
    if (strncmp (name, "x-amz-meta-", 11) == 0)
      n += strlen (name) - 11 + strlen (json_string_value (v) ? json_string_value (v) : "");
  return n;
}

static int
put_object (struct s3_call *s)
{
  if (s3_upload_verify (s, S3_ALG_NONE) < 0)
    return -1;
  _cleanup_json_ json_t *meta = s3_metadata_from_request (s);
  if (user_metadata_size (meta) > USER_METADATA_MAX)
    {
      s3_error_extra (s, "MaxSizeAllowed", "2048");
      return s3_fail (s, 400, "MetadataTooLarge", "Your metadata headers exceed the maximum allowed metadata size.");
    }
  struct emu_upload *u = s->upload;
  char etag[33];
  kiln_hex_encode (u->md5, 16, etag);
  _cleanup_free_ char *checksum = u->checksum_len ? kiln_base64_encode (u->checksum, u->checksum_len) : NULL;
  _cleanup_free_ char *metadata = json_dumps (meta, JSON_COMPACT | JSON_SORT_KEYS);
  char data[33];
  if (s3_upload_publish (s, data) < 0)
    return -1;
  struct s3_new_object o = {
    .data = data, .size = u->size, .etag = etag, .content_type = s3_content_type (s), .metadata = metadata,
    .algorithm = u->algorithm, .checksum = checksum, .checksum_type = checksum ? "FULL_OBJECT" : NULL,
  };
  if (store_object (s, &o) < 0)
    return -1;
  s3_header_addf (s, "ETag", "\"%s\"", etag);
  const struct s3_algorithm_info *info = s3_algorithm_info (u->algorithm);
  checksum_headers (s, info ? info->name : NULL, checksum, "FULL_OBJECT");
  s->resp->status = 200;
  return 0;
}

/* ---- reading ---- */

/* The object's row and an open descriptor on its data, read together under
 * the database lock (a writer swaps rows and removes files only holding
 * it).  Returns 1 when there is no such object. */
static int
open_object (struct s3_call *s, const char *bucket, const char *key, json_t **row, int *fd)
{
  struct kiln_emu *emu = s->c->emu;
  _cleanup_error_ kiln_error *err = NULL;
  *fd = -1;
  pthread_mutex_lock (&emu->db_lock);
  *row = emu_db_query_one (emu, &err, "SELECT * FROM s3_objects WHERE bucket = ? AND key = ?", bucket, key);
  if (*row)
    *fd = s3_data_open (emu, emu_row_str (*row, "data"), &err);
  pthread_mutex_unlock (&emu->db_lock);
  if (*row == NULL)
    return err ? s3_fail_internal (s, err) : 1;
  if (*fd < 0)
    {
      json_decref (*row);
      *row = NULL;
      return s3_fail_internal (s, err);
    }
  return 0;
}

/* A Range header: 1 with [*first, *last] when it asks for one satisfiable
 * range, 0 when it is to be ignored (absent, malformed, several ranges:
 * S3 then sends the whole object), -1 when unsatisfiable (416 recorded). */
static int
parse_range (struct s3_call *s, const char *h, uint64_t size, uint64_t *first, uint64_t *last)
{
  if (h == NULL || strncmp (h, "bytes=", 6) != 0 || strchr (h, ','))
    return 0;
  const char *spec = h + 6;
  const char *dash = strchr (spec, '-');
  if (dash == NULL)
    return 0;
  char *end;
  errno = 0;
  if (dash == spec)
    {
      /* bytes=-N: the last N bytes */
      if (!isdigit ((unsigned char) dash[1]))
        return 0;
      unsigned long long n = strtoull (dash + 1, &end, 10);
      if (*end || errno)
        return 0;
      if (n == 0 || size == 0)
        goto unsatisfiable;
      *first = n >= size ? 0 : size - n;
      *last = size - 1;
      return 1;
    }
  if (!isdigit ((unsigned char) *spec))
    return 0;
  unsigned long long a = strtoull (spec, &end, 10);
  if (end != dash || errno)
    return 0;
  unsigned long long b = size ? size - 1 : 0;
  if (dash[1])
    {
      if (!isdigit ((unsigned char) dash[1]))
        return 0;
      b = strtoull (dash + 1, &end, 10);
      if (*end || errno || b < a)
        return 0;
    }
  if (a >= size)
    goto unsatisfiable;
  *first = a;
  *last = b >= size ? size - 1 : b;
  return 1;

unsatisfiable:
  {
    char actual[24];
    snprintf (actual, sizeof actual, "%llu", (unsigned long long) size);
    s3_header_addf (s, "Content-Range", "bytes */%llu", (unsigned long long) size);
    s3_error_extra (s, "RangeRequested", h);
    s3_error_extra (s, "ActualObjectSize", actual);
    return s3_fail (s, 416, "InvalidRange", "The requested range is not satisfiable");
  }
}

static const char *const overrides[][2] = {
  {"response-content-type", "Content-Type"},
  {"response-content-language", "Content-Language"},
  {"response-expires", "Expires"},
  {"response-cache-control", "Cache-Control"},
  {"response-content-disposition", "Content-Disposition"},
  {"response-content-encoding", "Content-Encoding"},
};

static int
get_or_head (struct s3_call *s)
{
  long long part = 0;
  if (s3_query_int (s, "partNumber", 0, 1, S3_MAX_PART_NUMBER, &part) < 0)
    return -1;
  const char *range = s3_header (s, "Range");
  if (part && range)
    return s3_fail (s, 400, "InvalidRequest", "Cannot specify both Range header and partNumber query parameter");
  _cleanup_json_ json_t *row = NULL;
  _cleanup_close_ int fd = -1;
  int r = open_object (s, s->bucket, s->key, &row, &fd);
  if (r < 0)
    return -1;
  if (r == 1)
    return s3_fail_no_such_key (s);

  uint64_t size = (uint64_t) emu_row_int (row, "size");
  const char *etag = emu_row_str (row, "etag");
  time_t modified = (time_t) emu_row_int (row, "modified");
  char last_modified[32];
  s3_http_date (modified, last_modified);

  int cond = read_conditions (s, row, "");
  if (cond < 0)
    return -1;
  if (cond == 1)
    {
      s3_header_addf (s, "ETag", "\"%s\"", etag);
      s3_header_add (s, "Last-Modified", last_modified);
      s->resp->status = 304;
      return 0;
    }

  uint64_t first = 0, last = size ? size - 1 : 0;
  bool partial = false;
  _cleanup_json_ json_t *parts = json_loads (emu_row_str (row, "part_sizes"), 0, NULL);
  if (part)
    {
      size_t n = json_is_array (parts) ? json_array_size (parts) : 1;
      if ((size_t) part > n)
        {
          s3_header_addf (s, "x-amz-mp-parts-count", "%zu", n);
          return s3_fail (s, 416, "InvalidPartNumber", "The requested partnumber is not satisfiable");
        }
      if (json_is_array (parts))
        {
          uint64_t off = 0;
          for (size_t i = 0; i + 1 < (size_t) part; i++)
            off += (uint64_t) json_integer_value (json_array_get (parts, i));
          uint64_t len = (uint64_t) json_integer_value (json_array_get (parts, (size_t) part - 1));
          first = off;
          last = off + len - 1;
          partial = true;
        }
    }
  else
    {
      int pr = parse_range (s, range, size, &first, &last);
      if (pr < 0)
        return -1;
      partial = pr == 1;
    }

  s3_header_add (s, "Last-Modified", last_modified);
  s3_header_addf (s, "ETag", "\"%s\"", etag);
  s3_header_add (s, "Accept-Ranges", "bytes");
  if (part && json_is_array (parts))
    s3_header_addf (s, "x-amz-mp-parts-count", "%zu", json_array_size (parts));
  if (partial)
    s3_header_addf (s, "Content-Range", "bytes %llu-%llu/%llu", (unsigned long long) first,
                    (unsigned long long) last, (unsigned long long) size);
  const char *mode = s3_header (s, "x-amz-checksum-mode");
  if (mode && strcasecmp (mode, "ENABLED") == 0 && !partial)
    checksum_headers (s, emu_row_str (row, "checksum_algorithm"), emu_row_str_or_null (row, "checksum"),
                      emu_row_str_or_null (row, "checksum_type"));

  /* Stored headers, unless the query overrides them. */
  _cleanup_json_ json_t *meta = json_loads (emu_row_str (row, "metadata"), 0, NULL);
  for (size_t i = 0; i < sizeof overrides / sizeof overrides[0]; i++)
    {
      const char *v = s3_query (s, overrides[i][0]);
      if (v == NULL)
        continue;
      if (meta)
        json_object_del (meta, overrides[i][1]);
      if (strcmp (overrides[i][1], "Content-Type") != 0)
        s3_header_add (s, overrides[i][1], v);
    }
  const char *name;
  json_t *value;
  json_object_foreach (meta, name, value)
    if (json_is_string (value))
      s3_header_add (s, name, json_string_value (value));
  const char *type = s3_query (s, "response-content-type");
  s->resp->content_type = kiln_xstrdup (type ? type : emu_row_str (row, "content_type"));

  s->resp->status = partial && (range || json_is_array (parts)) ? 206 : 200;
  s->resp->body_from_file = true;
  s->resp->body_fd = kiln_steal_fd (&fd);
  s->resp->body_offset = first;
  s->resp->body_length = size ? last - first + 1 : 0;
  return 0;
}

/* ---- deleting ---- */

/* Deletes key from the bucket (nothing to delete is fine). */
static int
delete_key (struct s3_call *s, const char *key, kiln_error **err)
{
  struct kiln_emu *emu = s->c->emu;
  if (emu_db_begin (emu, err) < 0)
    return -1;
  _cleanup_json_ json_t *row = emu_db_query_one (emu, err, "SELECT data FROM s3_objects WHERE bucket = ? AND key = ?",
                                                 s->bucket, key);
  if ((row == NULL && *err)
      || (row && emu_db_exec (emu, err, "DELETE FROM s3_objects WHERE bucket = ? AND key = ?", s->bucket, key) < 0))
    {
      emu_db_end (emu, false, NULL);
      return -1;
    }
  if (emu_db_end (emu, true, err) < 0)
    return -1;
  if (row)
    s3_data_remove (emu, emu_row_str (row, "data"));
  return 0;
}

static int
delete_object (struct s3_call *s)
{
  _cleanup_error_ kiln_error *err = NULL;
  if (delete_key (s, s->key, &err) < 0)
    return s3_fail_internal (s, err);
  s->resp->status = 204;
  return 0;
}

/* A small body's Content-MD5 and x-amz-checksum-* headers (DeleteObjects
 * must carry one). */
static int
check_body_digests (struct s3_call *s)
{
  bool any = false;
  const char *md5 = s3_header (s, "Content-MD5");
  if (md5)
    {
      any = true;
      unsigned char raw[16];
      struct s3_hash h = {0};
      s3_hash_init (&h, S3_ALG_MD5);
      s3_hash_update (&h, s->req->body, s->req->body_len);
      unsigned char got[S3_CHECKSUM_MAX];
      s3_hash_final (&h, got);
      s3_hash_release (&h);
      unsigned char *want = NULL;
      size_t n = 0;
      bool ok = kiln_base64_decode (md5, strlen (md5), &want, &n) == 0 && n == 16;
      if (ok)
        memcpy (raw, want, 16);
      free (want);
      if (!ok)
        return s3_fail (s, 400, "InvalidDigest", "The Content-MD5 you specified was invalid.");
      if (memcmp (raw, got, 16) != 0)
        return s3_fail (s, 400, "BadDigest", "The Content-MD5 you specified did not match what we received.");
    }
  for (size_t i = 0; i < s->req->n_headers; i++)
    {
      enum s3_algorithm alg = s3_algorithm_by_header (s->req->headers[i].name);
      if (alg == S3_ALG_NONE)
        continue;
      any = true;
      _cleanup_free_ char *got = s3_checksum_base64 (alg, s->req->body, s->req->body_len);
      if (strcmp (got, s->req->headers[i].value ? s->req->headers[i].value : "") != 0)
        return s3_fail (s, 400, "BadDigest", "The %s you specified did not match the calculated checksum.",
                        s3_algorithm_info (alg)->name);
    }
  if (!any)
    return s3_fail (s, 400, "InvalidRequest", "Missing required header for this request: Content-MD5");
  return 0;
}

static int
delete_objects (struct s3_call *s)
{
  if (check_body_digests (s) < 0)
    return -1;
  xmlDocPtr doc = s3_xml_parse (s);
  if (doc == NULL)
    return -1;
  xmlNodePtr root = xmlDocGetRootElement (doc);
  size_t count = 0;
  for (xmlNodePtr n = root->children; n; n = n->next)
    if (n->type == XML_ELEMENT_NODE && strcmp ((const char *) n->name, "Object") == 0)
      count++;
  if (strcmp ((const char *) root->name, "Delete") != 0 || count == 0 || count > DELETE_MAX_KEYS)
    {
      xmlFreeDoc (doc);
      return s3_fail (s, 400, "MalformedXML", "The XML you provided was not well-formed or did not validate against "
                      "our published schema.");
    }
  _cleanup_free_ char *quiet_text = s3_xml_child_text (root, "Quiet");
  bool quiet = quiet_text && strcasecmp (quiet_text, "true") == 0;
  s3_xml_begin (s, "DeleteResult");
  for (xmlNodePtr n = root->children; n; n = n->next)
    {
      if (n->type != XML_ELEMENT_NODE || strcmp ((const char *) n->name, "Object") != 0)
        continue;
      _cleanup_free_ char *key = s3_xml_child_text (n, "Key");
      const char *code = NULL, *message = NULL;
      _cleanup_error_ kiln_error *err = NULL;
      if (key == NULL || *key == '\0' || strlen (key) > S3_MAX_KEY_LEN || !kiln_utf8_valid (key))
        code = "InvalidArgument", message = "Invalid key";
      else if (delete_key (s, key, &err) < 0)
        code = "InternalError", message = kiln_error_message (err);
      if (code)
        {
          s3_xml_start (s, "Error");
          s3_xml_text (s, "Key", key ? key : "");
          s3_xml_text (s, "Code", code);
          s3_xml_text (s, "Message", message);
          s3_xml_end (s);
        }
      else if (!quiet)
        {
          s3_xml_start (s, "Deleted");
          s3_xml_text (s, "Key", key);
          s3_xml_end (s);
        }
    }
  xmlFreeDoc (doc);
  s3_xml_finish (s);
  return 0;
}

/* ---- copying ---- */

int
s3_copy_source (struct s3_call *s, json_t **row, int *fd)
{
  *row = NULL;
  *fd = -1;
  const char *header = s3_header (s, "x-amz-copy-source");
  const char *q = strchr (header, '?');
  size_t len = q ? (size_t) (q - header) : strlen (header);
  size_t n = 0;
  _cleanup_free_ char *path = kiln_sigv4_uri_decode (header, len, false, &n);
  if (q && strncmp (q, "?versionId=", 11) == 0 && strcmp (q + 11, "null") != 0)
    return s3_fail (s, 400, "InvalidArgument", "Invalid version id specified");
  const char *p = path;
  if (*p == '/')
    p++;
  const char *slash = strchr (p, '/');
  if (strlen (path) != n || slash == NULL || slash == p || slash[1] == '\0')
    {
      s3_error_extra (s, "ArgumentName", "x-amz-copy-source");
      s3_error_extra (s, "ArgumentValue", header);
      return s3_fail (s, 400, "InvalidArgument", "Copy Source must mention the source bucket and key: "
                      "sourcebucket/sourcekey");
    }
  _cleanup_free_ char *bucket = kiln_xstrndup (p, (size_t) (slash - p));
  const char *key = slash + 1;
  _cleanup_error_ kiln_error *err = NULL;
  _cleanup_json_ json_t *b = emu_db_query_one (s->c->emu, &err, "SELECT account FROM s3_buckets WHERE name = ?",
                                               bucket);
  if (b == NULL)
    {
      if (err)
        return s3_fail_internal (s, err);
      s3_error_extra (s, "BucketName", bucket);
      return s3_fail (s, 404, "NoSuchBucket", "The specified bucket does not exist");
    }
  if (strcmp (emu_row_str (b, "account"), s->c->account) != 0)
    return s3_fail (s, 403, "AccessDenied", "Access Denied");
  int r = open_object (s, bucket, key, row, fd);
  if (r < 0)
    return -1;
  if (r == 1)
    {
      s3_error_extra (s, "Key", key);
      return s3_fail (s, 404, "NoSuchKey", "The specified key does not exist.");
    }
  if (read_conditions (s, *row, "x-amz-copy-source-") < 0)
    {
      json_decref (*row);
      *row = NULL;
      close (*fd);
      *fd = -1;
      return -1;
    }
  return 0;
}

static int
copy_object (struct s3_call *s)
{
  _cleanup_json_ json_t *src = NULL;
  _cleanup_close_ int in = -1;
  if (s3_copy_source (s, &src, &in) < 0)
    return -1;
  const char *directive = s3_header (s, "x-amz-metadata-directive");
  if (directive && strcmp (directive, "COPY") != 0 && strcmp (directive, "REPLACE") != 0)
    return s3_fail (s, 400, "InvalidArgument", "Unknown metadata directive.");
  bool replace = directive && strcmp (directive, "REPLACE") == 0;
  const char *header = s3_header (s, "x-amz-copy-source");
  _cleanup_free_ char *self = NULL;
  self = kiln_xasprintf ("%s/%s", s->bucket, s->key);
  _cleanup_free_ char *decoded = kiln_sigv4_uri_decode (header, strcspn (header, "?"), false, NULL);
  if (!replace && strcmp (decoded[0] == '/' ? decoded + 1 : decoded, self) == 0)
    return s3_fail (s, 400, "InvalidRequest", "This copy request is illegal because it is trying to copy an object "
                    "to itself without changing the object's metadata, storage class, website redirect location or "
                    "encryption attributes.");

  enum s3_algorithm alg;
  if (s3_requested_algorithm (s, "x-amz-checksum-algorithm", &alg) < 0)
    return -1;
  if (alg == S3_ALG_NONE)
    alg = s3_algorithm_by_name (emu_row_str (src, "checksum_algorithm"));
  uint64_t size = (uint64_t) emu_row_int (src, "size");
  if (size > S3_MAX_PUT_SIZE)
    return s3_fail (s, 400, "InvalidRequest", "The specified copy source is larger than the maximum allowable size "
                    "for a copy source: %llu", (unsigned long long) S3_MAX_PUT_SIZE);

  struct kiln_emu *emu = s->c->emu;
  _cleanup_error_ kiln_error *err = NULL;
  _cleanup_unlink_ char *tmp = NULL;
  _cleanup_close_ int out = s3_data_temp (emu, &tmp, &err);
  if (out < 0)
    return s3_fail_internal (s, err);
  struct s3_hash md5 = {0}, ck = {0};
  s3_hash_init (&md5, S3_ALG_MD5);
  s3_hash_init (&ck, alg);
  int r = s3_data_copy (in, 0, size, out, &md5, alg ? &ck : NULL, &err);
  unsigned char raw_md5[S3_CHECKSUM_MAX], raw_ck[S3_CHECKSUM_MAX];
  s3_hash_final (&md5, raw_md5);
  size_t ck_len = s3_hash_final (&ck, raw_ck);
  s3_hash_release (&md5);
  s3_hash_release (&ck);
  if (r < 0)
    return s3_fail_internal (s, err);
  char data[33];
  if (s3_data_publish (emu, tmp, out, data, &err) < 0)
    return s3_fail_internal (s, err);
  free (kiln_steal_pointer (&tmp));

  char etag[33];
  kiln_hex_encode (raw_md5, 16, etag);
  _cleanup_free_ char *checksum = ck_len ? kiln_base64_encode (raw_ck, ck_len) : NULL;
  _cleanup_json_ json_t *meta = replace ? s3_metadata_from_request (s) : NULL;
  _cleanup_free_ char *metadata = meta ? json_dumps (meta, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
  struct s3_new_object o = {
    .data = data, .size = size, .etag = etag,
    .content_type = replace ? s3_content_type (s) : emu_row_str (src, "content_type"),
    .metadata = replace ? metadata : emu_row_str (src, "metadata"),
    .algorithm = alg, .checksum = checksum, .checksum_type = checksum ? "FULL_OBJECT" : NULL,
  };
  if (store_object (s, &o) < 0)
    return -1;
  s3_xml_begin (s, "CopyObjectResult");
  s3_xml_time (s, "LastModified", s->c->now);
  s3_xml_textf (s, "ETag", "\"%s\"", etag);
  const struct s3_algorithm_info *info = s3_algorithm_info (alg);
  if (info && checksum)
    {
      s3_xml_text (s, info->element, checksum);
      s3_xml_text (s, "ChecksumType", "FULL_OBJECT");
    }
  s3_xml_finish (s);
  return 0;
}

/* ---- listing ---- */

/* The common prefix key rolls up into (malloc'd), or NULL. */
static char *
common_prefix (const char *key, const char *prefix, const char *delimiter)
{
  size_t plen = strlen (prefix);
  if (delimiter == NULL || *delimiter == '\0' || strncmp (key, prefix, plen) != 0)
    return NULL;
  const char *d = strstr (key + plen, delimiter);
  return d ? kiln_xstrndup (key, (size_t) (d - key) + strlen (delimiter)) : NULL;
}

/* The cursor that skips everything a common prefix covers. */
static char *
past (const char *common)
{
  char *p;
  p = kiln_xasprintf ("%s\xff", common);
  return p;
}

static int
list_objects (struct s3_call *s, bool v2)
{
  struct kiln_emu *emu = s->c->emu;
  const char *prefix = s3_query (s, "prefix");
  if (prefix == NULL)
    prefix = "";
  const char *delimiter = s3_query (s, "delimiter");
  if (delimiter && *delimiter == '\0')
    delimiter = NULL;
  long long max;
  if (s3_query_int (s, "max-keys", LIST_MAX_KEYS, 0, LIST_MAX_KEYS, &max) < 0)
    return -1;
  const char *encoding = s3_query (s, "encoding-type");
  if (encoding && strcmp (encoding, "url") != 0)
    {
      s3_error_extra (s, "ArgumentName", "encoding-type");
      s3_error_extra (s, "ArgumentValue", encoding);
      return s3_fail (s, 400, "InvalidArgument", "Invalid Encoding Method specified in Request");
    }
  bool url = encoding != NULL;
  const char *token = v2 ? s3_query (s, "continuation-token") : NULL;
  const char *start_after = v2 ? s3_query (s, "start-after") : NULL;
  const char *marker = v2 ? NULL : s3_query (s, "marker");
  const char *fetch = s3_query (s, "fetch-owner");
  bool owner = !v2 || (fetch && strcmp (fetch, "true") == 0);

  /* Where the walk starts: after the token's or marker's key, past all of
   * a common prefix it names; after start-after. */
  _cleanup_free_ char *cursor = NULL;
  _cleanup_free_ char *resume = NULL;
  if (token)
    {
      unsigned char *raw = NULL;
      size_t n = 0;
      if (kiln_base64_decode (token, strlen (token), &raw, &n) < 0 || n == 0 || memchr (raw, '\0', n))
        {
          free (raw);
          s3_error_extra (s, "ArgumentName", "continuation-token");
          return s3_fail (s, 400, "InvalidArgument", "The continuation token provided is incorrect");
        }
      resume = kiln_xstrndup ((const char *) raw, n);
      free (raw);
    }
  else if (marker && *marker)
    resume = kiln_xstrdup (marker);
  if (resume)
    {
      _cleanup_free_ char *cp = common_prefix (resume, prefix, delimiter);
      cursor = cp ? past (cp) : kiln_xstrdup (resume);
    }
  else if (start_after)
    cursor = kiln_xstrdup (start_after);

  _cleanup_json_ json_t *contents = json_array ();
  _cleanup_json_ json_t *prefixes = json_array ();
  _cleanup_free_ char *last = NULL;
  bool truncated = false, done = false;
  long long count = 0;
  size_t plen = strlen (prefix);
  while (!done)
    {
      _cleanup_error_ kiln_error *err = NULL;
      _cleanup_json_ json_t *rows = emu_db_query (emu, &err, "SELECT key, size, etag, modified, checksum_algorithm, "
                                                  "checksum_type FROM s3_objects WHERE bucket = ? AND key > ? "
                                                  "AND key >= ? ORDER BY key LIMIT " LIST_BATCH,
                                                  s->bucket, cursor ? cursor : "", prefix);
      if (rows == NULL)
        return s3_fail_internal (s, err);
      bool jumped = false;
      size_t i;
      json_t *row;
      json_array_foreach (rows, i, row)
        {
          const char *key = emu_row_str (row, "key");
          if (strncmp (key, prefix, plen) != 0)
            {
              done = true;
              break;
            }
          if (count == max)
            {
              truncated = true;
              done = true;
              break;
            }
          char *cp = common_prefix (key, prefix, delimiter);
          free (last);
          count++;
          if (cp)
            {
              json_array_append_new (prefixes, json_string (cp));
              last = cp;
              free (cursor);
              cursor = past (cp);
              jumped = true;
              break;
            }
          json_array_append (contents, row);
          last = kiln_xstrdup (key);
          free (cursor);
          cursor = kiln_xstrdup (key);
        }
      if (!jumped && json_array_size (rows) < 1000)
        done = true;
    }
  truncated = truncated && last != NULL;

  s3_xml_begin (s, "ListBucketResult");
  s3_xml_text (s, "Name", s->bucket);
  s3_xml_key (s, "Prefix", prefix, url);
  if (v2)
    {
      if (token)
        s3_xml_text (s, "ContinuationToken", token);
      if (truncated)
        {
          _cleanup_free_ char *next = kiln_base64_encode ((const unsigned char *) last, strlen (last));
          s3_xml_text (s, "NextContinuationToken", next);
        }
      s3_xml_textf (s, "KeyCount", "%lld", count);
      s3_xml_key (s, "StartAfter", start_after, url);
    }
  else
    {
      s3_xml_key (s, "Marker", marker ? marker : "", url);
      if (truncated)
        s3_xml_key (s, "NextMarker", last, url);
    }
  s3_xml_textf (s, "MaxKeys", "%lld", max);
  s3_xml_key (s, "Delimiter", delimiter, url);
  if (url)
    s3_xml_text (s, "EncodingType", "url");
  s3_xml_text (s, "IsTruncated", truncated ? "true" : "false");
  size_t i;
  json_t *row;
  json_array_foreach (contents, i, row)
    {
      s3_xml_start (s, "Contents");
      s3_xml_key (s, "Key", emu_row_str (row, "key"), url);
      s3_xml_time (s, "LastModified", (time_t) emu_row_int (row, "modified"));
      s3_xml_textf (s, "ETag", "\"%s\"", emu_row_str (row, "etag"));
      s3_xml_text (s, "ChecksumAlgorithm", emu_row_str_or_null (row, "checksum_algorithm"));
      s3_xml_text (s, "ChecksumType", emu_row_str_or_null (row, "checksum_type"));
      s3_xml_text (s, "Size", emu_row_str (row, "size"));
      if (owner)
        s3_xml_owner (s, "Owner", s->c->account);
      s3_xml_text (s, "StorageClass", "STANDARD");
      s3_xml_end (s);
    }
  json_array_foreach (prefixes, i, row)
    {
      s3_xml_start (s, "CommonPrefixes");
      s3_xml_key (s, "Prefix", json_string_value (row), url);
      s3_xml_end (s);
    }
  s3_xml_finish (s);
  return 0;
}

static int
list_objects_v1 (struct s3_call *s)
{
  return list_objects (s, false);
}

static int
list_objects_v2 (struct s3_call *s)
{
  return list_objects (s, true);
}

/* ---- objects for other services ---- */

int
s3_bucket_usable (struct kiln_emu *emu, const char *account, const char *region, const char *bucket,
                  const char **why, kiln_error **err)
{
  _cleanup_json_ json_t *row = emu_db_query_one (emu, err, "SELECT account, region FROM s3_buckets WHERE name = ?",
                                                 bucket);
  if (row == NULL && *err)
    return -1;
  if (row == NULL)
    *why = "does not exist";
  else if (strcmp (emu_row_str (row, "account"), account) != 0)
    *why = "belongs to another account (access denied)";
  else if (strcmp (emu_row_str (row, "region"), region) != 0)
    *why = "is in another region";
  else
    return 0;
  return 1;
}

int
s3_object_link (struct kiln_emu *emu, const char *account, const char *region, const char *bucket, const char *key,
                char **path, uint64_t *size, const char **why, kiln_error **err)
{
  *path = NULL;
  *size = 0;
  /* The tmp directory is swept on the first S3 use in a process: make
   * sure that has happened before a link is put there. */
  _cleanup_free_ char *tmp = NULL;
  {
    _cleanup_close_ int fd = s3_data_temp (emu, &tmp, err);
    if (fd < 0)
      return -1;
  }
  unlink (tmp);
  /* Under the lock: writers replace rows and remove files only holding it. */
  pthread_mutex_lock (&emu->db_lock);
  int r = s3_bucket_usable (emu, account, region, bucket, why, err);
  _cleanup_json_ json_t *row = NULL;
  if (r == 0)
    {
      row = emu_db_query_one (emu, err, "SELECT data, size FROM s3_objects WHERE bucket = ? AND key = ?", bucket,
                              key);
      if (row == NULL)
        {
          r = *err ? -1 : 1;
          *why = "has no such key";
        }
    }
  if (r == 0)
    {
      _cleanup_free_ char *data = NULL;
      data = kiln_xasprintf ("%s/s3/data/%s", emu->data_dir, emu_row_str (row, "data"));
      if (link (data, tmp) < 0)
        r = kiln_fail_errno (err, errno, "link '%s' to '%s'", data, tmp);
    }
  pthread_mutex_unlock (&emu->db_lock);
  if (r != 0)
    return r;
  *size = (uint64_t) emu_row_int (row, "size");
  *path = kiln_steal_pointer (&tmp);
  return 0;
}

/* The MD5 of a file, hex, as S3's ETag of a single-part object. */
static int
file_md5 (int fd, char out[33], kiln_error **err)
{
  struct s3_hash h = {0};
  s3_hash_init (&h, S3_ALG_MD5);
  _cleanup_free_ char *buf = kiln_xcalloc (1, 1 << 20);
  off_t off = 0;
  for (;;)
    {
      ssize_t n = pread (fd, buf, 1 << 20, off);
      if (n < 0 && errno == EINTR)
        continue;
      if (n < 0)
        {
          s3_hash_release (&h);
          return kiln_fail_errno (err, errno, "read object data");
        }
      if (n == 0)
        break;
      s3_hash_update (&h, buf, (size_t) n);
      off += n;
    }
  unsigned char md5[S3_CHECKSUM_MAX];
  s3_hash_final (&h, md5);
  s3_hash_release (&h);
  kiln_hex_encode (md5, 16, out);
  return 0;
}

int
s3_object_store_file (struct kiln_emu *emu, const char *account, const char *region, const char *bucket,
                      const char *key, const char *tmp_path, const char *content_type, time_t now, const char **why,
                      kiln_error **err)
{
  _cleanup_close_ int fd = open (tmp_path, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    {
      int e = errno;
      unlink (tmp_path);
      return kiln_fail_errno (err, e, "open '%s'", tmp_path);
    }
  struct stat st;
  char etag[33], data[33];
  if (fstat (fd, &st) < 0 || file_md5 (fd, etag, err) < 0)
    {
      if (*err == NULL)
        kiln_fail_errno (err, errno, "stat '%s'", tmp_path);
      unlink (tmp_path);
      return -1;
    }
  if (s3_data_publish (emu, tmp_path, fd, data, err) < 0)
    return -1;
  struct s3_new_object o = {
    .data = data, .size = (uint64_t) st.st_size, .etag = etag, .content_type = content_type, .metadata = "{}",
  };
  _cleanup_json_ json_t *old = NULL;
  if (emu_db_begin (emu, err) < 0)
    {
      s3_data_remove (emu, data);
      return -1;
    }
  int r = s3_bucket_usable (emu, account, region, bucket, why, err);
  if (r == 0)
    {
      old = emu_db_query_one (emu, err, "SELECT data FROM s3_objects WHERE bucket = ? AND key = ?", bucket, key);
      if (old == NULL && *err)
        r = -1;
    }
  if (r == 0)
    r = object_row_insert (emu, bucket, key, &o, now, err);
  if (emu_db_end (emu, r == 0, r == 0 ? err : NULL) < 0 || r != 0)
    {
      s3_data_remove (emu, data);
      return r != 0 ? r : -1;
    }
  if (old)
    s3_data_remove (emu, emu_row_str (old, "data"));
  return 0;
}

int
s3_object_store_data (struct kiln_emu *emu, const char *account, const char *region, const char *bucket,
                      const char *key, const void *data, size_t len, const char *content_type, time_t now,
                      const char **why, kiln_error **err)
{
  _cleanup_free_ char *tmp = NULL;
  {
    _cleanup_close_ int fd = s3_data_temp (emu, &tmp, err);
    if (fd < 0)
      return -1;
    if (kiln_write_all (fd, data, len) < 0)
      {
        int e = errno;
        unlink (tmp);
        return kiln_fail_errno (err, e, "write '%s'", tmp);
      }
  }
  return s3_object_store_file (emu, account, region, bucket, key, tmp, content_type, now, why, err);
}

const struct s3_operation emu_s3_object_ops[] = {
  {"PutObject", put_object, true},
  {"GetObject", get_or_head, true},
  {"HeadObject", get_or_head, true},
  {"DeleteObject", delete_object, true},
  {"DeleteObjects", delete_objects, true},
  {"CopyObject", copy_object, true},
  {"ListObjects", list_objects_v1, true},
  {"ListObjectsV2", list_objects_v2, true},
  {NULL, NULL, false},
};
