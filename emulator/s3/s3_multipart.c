/* s3_multipart.c - S3 multipart uploads: CreateMultipartUpload, UploadPart,
 * UploadPartCopy, CompleteMultipartUpload, AbortMultipartUpload, ListParts,
 * ListMultipartUploads.
 *
 * Parts are data files like objects (s3_data.c), one row each in s3_parts;
 * uploading a part number again replaces it.  CompleteMultipartUpload
 * checks the list it is given as S3 does (ascending part numbers:
 * InvalidPartOrder; each part uploaded with that ETag and checksum:
 * InvalidPart; every part but the last at least 5 MiB: EntityTooSmall),
 * concatenates the parts into a new data file and, in one transaction,
 * puts the object in place and forgets the upload; parts left out of the
 * list are discarded, as S3 discards them.
 *
 * The object's ETag is S3's multipart ETag: the MD5 of the concatenated
 * binary MD5s of the parts, in hex, followed by "-" and the number of parts.
 * Its checksum follows the upload's x-amz-checksum-algorithm and
 * x-amz-checksum-type: COMPOSITE (the default where the algorithm allows it)
 * is the algorithm over the concatenated binary part checksums, base64, with
 * "-N"; FULL_OBJECT (CRCs only) is computed over the object while the parts
 * are concatenated. */
#include "s3.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "cleanup.h"
#include "digest.h"
#include "fsutil.h"
#include "store.h"
#include "xalloc.h"

#define LIST_MAX 1000

static int
no_such_upload (struct s3_call *s, const char *id)
{
  s3_error_extra (s, "UploadId", id);
  return s3_fail (s, 404, "NoSuchUpload", "The specified upload does not exist. The upload ID may be invalid, or the "
                  "upload may have been aborted or completed.");
}

/* The upload ?uploadId= names, which must be for this bucket and key. */
static int
load_upload (struct s3_call *s, json_t **row)
{
  const char *id = s3_query (s, "uploadId");
  _cleanup_error_ kiln_error *err = NULL;
  *row = emu_db_query_one (s->c->emu, &err, "SELECT * FROM s3_uploads WHERE id = ? AND bucket = ? AND key = ?",
                           id ? id : "", s->bucket, s->key);
  if (*row == NULL)
    return err ? s3_fail_internal (s, err) : no_such_upload (s, id ? id : "");
  return 0;
}

static void
strip_quotes (char *etag)
{
  size_t n = strlen (etag);
  if (n >= 2 && etag[0] == '"' && etag[n - 1] == '"')
    {
      memmove (etag, etag + 1, n - 2);
      etag[n - 2] = '\0';
    }
}

/* ---- creating ---- */

static int
create_upload (struct s3_call *s)
{
  enum s3_algorithm alg;
  if (s3_requested_algorithm (s, "x-amz-checksum-algorithm", &alg) < 0)
    return -1;
  const struct s3_algorithm_info *info = s3_algorithm_info (alg);
  const char *type = s3_header (s, "x-amz-checksum-type");
  if (type && strcasecmp (type, "COMPOSITE") != 0 && strcasecmp (type, "FULL_OBJECT") != 0)
    return s3_fail (s, 400, "InvalidRequest", "Value for x-amz-checksum-type header is invalid.");
  if (type && info == NULL)
    return s3_fail (s, 400, "InvalidRequest", "The x-amz-checksum-type header can only be used with the "
                    "x-amz-checksum-algorithm header.");
  const char *checksum_type = NULL;
  if (info)
    {
      bool full = type ? strcasecmp (type, "FULL_OBJECT") == 0 : !info->composite;
      if ((full && !info->full_object) || (!full && !info->composite))
        return s3_fail (s, 400, "InvalidRequest", "The %s checksum type cannot be used with the %s checksum "
                        "algorithm.", full ? "FULL_OBJECT" : "COMPOSITE", info->name);
      checksum_type = full ? "FULL_OBJECT" : "COMPOSITE";
    }
  _cleanup_json_ json_t *meta = s3_metadata_from_request (s);
  _cleanup_free_ char *metadata = json_dumps (meta, JSON_COMPACT | JSON_SORT_KEYS);
  char uuid[37], id[65];
  emu_new_uuid (s->c->emu, uuid);
  size_t j = 0;
  for (size_t i = 0; uuid[i]; i++)
    if (uuid[i] != '-')
      id[j++] = uuid[i];
  id[j] = '\0';
  char seq[24], initiated[24];
  snprintf (initiated, sizeof initiated, "%lld", (long long) s->c->now);
  _cleanup_error_ kiln_error *err = NULL;
  if (emu_db_next_seq (s->c->emu, seq, &err) < 0
      || emu_db_exec (s->c->emu, &err, "INSERT INTO s3_uploads (id, bucket, key, account, initiated, content_type, "
                      "metadata, checksum_algorithm, checksum_type, seq) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                      id, s->bucket, s->key, s->c->account, initiated, s3_content_type (s), metadata,
                      info ? info->name : NULL, checksum_type, seq)
             < 0)
    return s3_fail_internal (s, err);
  if (info)
    {
      s3_header_add (s, "x-amz-checksum-algorithm", info->name);
      s3_header_add (s, "x-amz-checksum-type", checksum_type);
    }
  s3_xml_begin (s, "InitiateMultipartUploadResult");
  s3_xml_text (s, "Bucket", s->bucket);
  s3_xml_text (s, "Key", s->key);
  s3_xml_text (s, "UploadId", id);
  s3_xml_finish (s);
  return 0;
}

/* ---- parts ---- */

static int
part_number (struct s3_call *s, long long *n)
{
  const char *v = s3_query (s, "partNumber");
  char *end;
  errno = 0;
  *n = v ? strtoll (v, &end, 10) : 0;
  if (v == NULL || *v == '\0' || *end || errno || *n < 1 || *n > S3_MAX_PART_NUMBER)
    {
      s3_error_extra (s, "ArgumentName", "partNumber");
      s3_error_extra (s, "ArgumentValue", v ? v : "");
      return s3_fail (s, 400, "InvalidArgument", "Part number must be an integer between 1 and 10000, inclusive");
    }
  return 0;
}

/* Records part number n of the upload (data file already published),
 * replacing one uploaded before; the data file is removed when the upload
 * is gone meanwhile, the replaced one after the commit. */
static int
store_part (struct s3_call *s, const char *upload_id, long long n, const char *data, uint64_t size,
            const char *etag, const char *checksum)
{
  struct kiln_emu *emu = s->c->emu;
  _cleanup_error_ kiln_error *err = NULL;
  char number[24], size_s[24], modified[24];
  snprintf (number, sizeof number, "%lld", n);
  snprintf (size_s, sizeof size_s, "%llu", (unsigned long long) size);
  snprintf (modified, sizeof modified, "%lld", (long long) s->c->now);
  if (emu_db_begin (emu, &err) < 0)
    {
      s3_data_remove (emu, data);
      return s3_fail_internal (s, err);
    }
  _cleanup_json_ json_t *up = emu_db_query_one (emu, &err, "SELECT id FROM s3_uploads WHERE id = ?", upload_id);
  _cleanup_json_ json_t *old = NULL;
  if (up)
    old = emu_db_query_one (emu, &err, "SELECT data FROM s3_parts WHERE upload = ? AND number = ?", upload_id,
                            number);
  if (err || up == NULL
      || emu_db_exec (emu, &err, "INSERT OR REPLACE INTO s3_parts (upload, number, data, size, etag, checksum, "
                      "modified) VALUES (?, ?, ?, ?, ?, ?, ?)", upload_id, number, data, size_s, etag, checksum,
                      modified)
             < 0
      || emu_db_end (emu, true, &err) < 0)
    {
      emu_db_end (emu, false, NULL);
      s3_data_remove (emu, data);
      return err ? s3_fail_internal (s, err) : no_such_upload (s, upload_id);
    }
  if (old)
    s3_data_remove (emu, emu_row_str (old, "data"));
  return 0;
}

static int
upload_part (struct s3_call *s)
{
  long long n;
  _cleanup_json_ json_t *up = NULL;
  if (part_number (s, &n) < 0 || load_upload (s, &up) < 0)
    return -1;
  enum s3_algorithm alg = s3_algorithm_by_name (emu_row_str (up, "checksum_algorithm"));
  if (s3_upload_verify (s, alg) < 0)
    return -1;
  struct emu_upload *u = s->upload;
  char etag[33];
  kiln_hex_encode (u->md5, 16, etag);
  _cleanup_free_ char *checksum = u->checksum_len ? kiln_base64_encode (u->checksum, u->checksum_len) : NULL;
  char data[33];
  if (s3_upload_publish (s, data) < 0
      || store_part (s, emu_row_str (up, "id"), n, data, u->size, etag, checksum) < 0)
    return -1;
  s3_header_addf (s, "ETag", "\"%s\"", etag);
  const struct s3_algorithm_info *info = s3_algorithm_info (u->algorithm);
  if (info && checksum)
    s3_header_add (s, info->header, checksum);
  s->resp->status = 200;
  return 0;
}

/* "bytes=A-B" within size. */
static int
copy_range (struct s3_call *s, uint64_t size, uint64_t *first, uint64_t *len)
{
  const char *r = s3_header (s, "x-amz-copy-source-range");
  *first = 0;
  *len = size;
  if (r == NULL)
    return 0;
  unsigned long long a, b;
  char tail;
  if (sscanf (r, "bytes=%llu-%llu%c", &a, &b, &tail) != 2 || b < a)
    {
      s3_error_extra (s, "ArgumentName", "x-amz-copy-source-range");
      s3_error_extra (s, "ArgumentValue", r);
      return s3_fail (s, 400, "InvalidArgument", "The x-amz-copy-source-range value must be of the form "
                      "bytes=first-last where first and last are the zero-based offsets of the first and last bytes "
                      "to copy");
    }
  if (b >= size)
    return s3_fail (s, 400, "InvalidRequest", "The specified copy range is invalid for the source object size");
  *first = a;
  *len = b - a + 1;
  return 0;
}

static int
upload_part_copy (struct s3_call *s)
{
  long long n;
  _cleanup_json_ json_t *up = NULL, *src = NULL;
  _cleanup_close_ int in = -1;
  if (part_number (s, &n) < 0 || load_upload (s, &up) < 0 || s3_copy_source (s, &src, &in) < 0)
    return -1;
  uint64_t first, len;
  if (copy_range (s, (uint64_t) emu_row_int (src, "size"), &first, &len) < 0)
    return -1;
  if (len > S3_MAX_PUT_SIZE)
    return s3_fail (s, 400, "InvalidRequest", "The specified copy range is larger than %llu bytes",
                    (unsigned long long) S3_MAX_PUT_SIZE);
  enum s3_algorithm alg = s3_algorithm_by_name (emu_row_str (up, "checksum_algorithm"));
  struct kiln_emu *emu = s->c->emu;
  _cleanup_error_ kiln_error *err = NULL;
  _cleanup_unlink_ char *tmp = NULL;
  _cleanup_close_ int out = s3_data_temp (emu, &tmp, &err);
  if (out < 0)
    return s3_fail_internal (s, err);
  struct s3_hash md5 = {0}, ck = {0};
  s3_hash_init (&md5, S3_ALG_MD5);
  s3_hash_init (&ck, alg);
  int r = s3_data_copy (in, first, len, out, &md5, alg ? &ck : NULL, &err);
  unsigned char raw_md5[S3_CHECKSUM_MAX], raw_ck[S3_CHECKSUM_MAX];
  s3_hash_final (&md5, raw_md5);
  size_t ck_len = s3_hash_final (&ck, raw_ck);
  s3_hash_release (&md5);
  s3_hash_release (&ck);
  if (r < 0)
    return s3_fail_internal (s, err);
  char data[33], etag[33];
  if (s3_data_publish (emu, tmp, out, data, &err) < 0)
    return s3_fail_internal (s, err);
  free (kiln_steal_pointer (&tmp));
  kiln_hex_encode (raw_md5, 16, etag);
  _cleanup_free_ char *checksum = ck_len ? kiln_base64_encode (raw_ck, ck_len) : NULL;
  if (store_part (s, emu_row_str (up, "id"), n, data, len, etag, checksum) < 0)
    return -1;
  s3_xml_begin (s, "CopyPartResult");
  s3_xml_time (s, "LastModified", s->c->now);
  s3_xml_textf (s, "ETag", "\"%s\"", etag);
  const struct s3_algorithm_info *info = s3_algorithm_info (alg);
  if (info && checksum)
    s3_xml_text (s, info->element, checksum);
  s3_xml_finish (s);
  return 0;
}

/* ---- completing ---- */

struct listed_part {
  long long number;
  char *etag;
  char *checksum;     /* the upload algorithm's element, if given */
  json_t *row;        /* the stored part (borrowed from the query result) */
};

static void
listed_parts_free (struct listed_part *p, size_t n)
{
  for (size_t i = 0; i < n; i++)
    {
      free (p[i].etag);
      free (p[i].checksum);
    }
  free (p);
}

static int
invalid_part (struct s3_call *s, const char *upload_id, const struct listed_part *p)
{
  char number[24];
  snprintf (number, sizeof number, "%lld", p->number);
  s3_error_extra (s, "UploadId", upload_id);
  s3_error_extra (s, "PartNumber", number);
  s3_error_extra (s, "ETag", p->etag);
  return s3_fail (s, 400, "InvalidPart", "One or more of the specified parts could not be found.  The part may not "
                  "have been uploaded, or the specified entity tag may not have matched the part's entity tag.");
}

/* The parts the request lists, checked against what was uploaded. */
static int
listed_parts (struct s3_call *s, json_t *up, json_t *stored, struct listed_part **out, size_t *n_out)
{
  const char *upload_id = emu_row_str (up, "id");
  const struct s3_algorithm_info *info = s3_algorithm_info (s3_algorithm_by_name (emu_row_str (up,
                                                                                               "checksum_algorithm")));
  xmlDocPtr doc = s3_xml_parse (s);
  if (doc == NULL)
    return -1;
  xmlNodePtr root = xmlDocGetRootElement (doc);
  struct listed_part *parts = NULL;
  size_t n = 0;
  int r = 0;
  if (strcmp ((const char *) root->name, "CompleteMultipartUpload") != 0)
    r = s3_fail (s, 400, "MalformedXML", "The XML you provided was not well-formed or did not validate against our "
                 "published schema.");
  for (xmlNodePtr node = root->children; r == 0 && node; node = node->next)
    {
      if (node->type != XML_ELEMENT_NODE || strcmp ((const char *) node->name, "Part") != 0)
        continue;
      parts = realloc (parts, (n + 1) * sizeof *parts);
      if (parts == NULL)
        abort ();
      struct listed_part *p = &parts[n++];
      memset (p, 0, sizeof *p);
      _cleanup_free_ char *number = s3_xml_child_text (node, "PartNumber");
      p->etag = s3_xml_child_text (node, "ETag");
      if (info)
        p->checksum = s3_xml_child_text (node, info->element);
      char *end = NULL;
      p->number = number ? strtoll (number, &end, 10) : 0;
      if (number == NULL || *number == '\0' || *end || p->etag == NULL)
        r = s3_fail (s, 400, "MalformedXML", "The XML you provided was not well-formed or did not validate against "
                     "our published schema.");
    }
  xmlFreeDoc (doc);
  if (r == 0 && n == 0)
    r = s3_fail (s, 400, "MalformedXML", "The XML you provided was not well-formed or did not validate against our "
                 "published schema.");
  for (size_t i = 1; r == 0 && i < n; i++)
    if (parts[i].number <= parts[i - 1].number)
      r = s3_fail (s, 400, "InvalidPartOrder", "The list of parts was not in ascending order. Parts must be ordered "
                   "by part number.");
  for (size_t i = 0; r == 0 && i < n; i++)
    {
      struct listed_part *p = &parts[i];
      strip_quotes (p->etag);
      size_t k;
      json_t *row;
      json_array_foreach (stored, k, row)
        if (emu_row_int (row, "number") == p->number)
          p->row = row;
      if (p->row == NULL || strcmp (emu_row_str (p->row, "etag"), p->etag) != 0
          || (p->checksum && *p->checksum && strcmp (emu_row_str (p->row, "checksum"), p->checksum) != 0))
        r = invalid_part (s, upload_id, p);
    }
  for (size_t i = 0; r == 0 && i + 1 < n; i++)
    if ((uint64_t) emu_row_int (parts[i].row, "size") < S3_MIN_PART_SIZE)
      {
        char size[24], number[24];
        snprintf (size, sizeof size, "%lld", emu_row_int (parts[i].row, "size"));
        snprintf (number, sizeof number, "%lld", parts[i].number);
        s3_error_extra (s, "ProposedSize", size);
        s3_error_extra (s, "MinSizeAllowed", "5242880");
        s3_error_extra (s, "PartNumber", number);
        s3_error_extra (s, "ETag", parts[i].etag);
        r = s3_fail (s, 400, "EntityTooSmall", "Your proposed upload is smaller than the minimum allowed size");
      }
  if (r < 0)
    {
      listed_parts_free (parts, n);
      return -1;
    }
  *out = parts;
  *n_out = n;
  return 0;
}

/* The parts' data concatenated into a new data file; when full is given,
 * the whole object's checksum is computed on the way. */
static int
assemble (struct s3_call *s, const struct listed_part *parts, size_t n, struct s3_hash *full, char data[33])
{
  struct kiln_emu *emu = s->c->emu;
  _cleanup_error_ kiln_error *err = NULL;
  _cleanup_unlink_ char *tmp = NULL;
  _cleanup_close_ int out = s3_data_temp (emu, &tmp, &err);
  if (out < 0)
    return s3_fail_internal (s, err);
  for (size_t i = 0; i < n; i++)
    {
      _cleanup_close_ int in = s3_data_open (emu, emu_row_str (parts[i].row, "data"), &err);
      if (in < 0)
        {
          if (err && err->errnum == ENOENT)
            return no_such_upload (s, s3_query (s, "uploadId"));
          return s3_fail_internal (s, err);
        }
      if (s3_data_copy (in, 0, (uint64_t) emu_row_int (parts[i].row, "size"), out, full, NULL, &err) < 0)
        return s3_fail_internal (s, err);
    }
  if (s3_data_publish (emu, tmp, out, data, &err) < 0)
    return s3_fail_internal (s, err);
  free (kiln_steal_pointer (&tmp));
  return 0;
}

static int
complete_upload (struct s3_call *s)
{
  struct kiln_emu *emu = s->c->emu;
  _cleanup_json_ json_t *up = NULL;
  if (load_upload (s, &up) < 0)
    return -1;
  const char *upload_id = emu_row_str (up, "id");
  _cleanup_error_ kiln_error *err = NULL;
  _cleanup_json_ json_t *stored = emu_db_query (emu, &err, "SELECT number, data, size, etag, checksum FROM s3_parts "
                                                "WHERE upload = ? ORDER BY number", upload_id);
  if (stored == NULL)
    return s3_fail_internal (s, err);
  struct listed_part *parts = NULL;
  size_t n = 0;
  if (listed_parts (s, up, stored, &parts, &n) < 0)
    return -1;

  enum s3_algorithm alg = s3_algorithm_by_name (emu_row_str (up, "checksum_algorithm"));
  const struct s3_algorithm_info *info = s3_algorithm_info (alg);
  const char *type = emu_row_str_or_null (up, "checksum_type");
  bool full = info && type && strcmp (type, "FULL_OBJECT") == 0;
  const char *claimed_type = s3_header (s, "x-amz-checksum-type");
  int r = 0;
  if (claimed_type && (type == NULL || strcasecmp (claimed_type, type) != 0))
    r = s3_fail (s, 400, "InvalidRequest", "The upload was created using the %s checksum mode. The complete request "
                 "must use the same checksum mode.", type ? type : "null");

  /* ETag, size, part sizes and (composite) checksum from the parts. */
  struct s3_hash etag_hash = {0}, composite = {0};
  s3_hash_init (&etag_hash, S3_ALG_MD5);
  s3_hash_init (&composite, info && !full ? alg : S3_ALG_NONE);
  uint64_t total = 0;
  _cleanup_json_ json_t *sizes = json_array ();
  for (size_t i = 0; r == 0 && i < n; i++)
    {
      const char *hex = emu_row_str (parts[i].row, "etag");
      unsigned char md5[16];
      for (size_t k = 0; k < 16; k++)
        md5[k] = (unsigned char) (kiln_hex_digit_value (hex[2 * k]) * 16 + kiln_hex_digit_value (hex[2 * k + 1]));
      s3_hash_update (&etag_hash, md5, 16);
      uint64_t size = (uint64_t) emu_row_int (parts[i].row, "size");
      total += size;
      json_array_append_new (sizes, json_integer ((json_int_t) size));
      if (info && !full)
        {
          unsigned char *raw = NULL;
          size_t len = 0;
          const char *ck = emu_row_str (parts[i].row, "checksum");
          if (kiln_base64_decode (ck, strlen (ck), &raw, &len) < 0 || len != info->len)
            r = invalid_part (s, upload_id, &parts[i]);
          else
            s3_hash_update (&composite, raw, len);
          free (raw);
        }
    }
  const char *mp_size = s3_header (s, "x-amz-mp-object-size");
  if (r == 0 && mp_size && strtoull (mp_size, NULL, 10) != total)
    r = s3_fail (s, 400, "InvalidRequest", "The provided 'x-amz-mp-object-size' header value %s does not match what "
                 "was computed: %llu", mp_size, (unsigned long long) total);
  unsigned char raw[S3_CHECKSUM_MAX];
  char etag[48];
  s3_hash_final (&etag_hash, raw);
  kiln_hex_encode (raw, 16, etag);
  snprintf (etag + 32, sizeof etag - 32, "-%zu", n);
  _cleanup_free_ char *checksum = NULL;
  if (info && !full)
    {
      size_t len = s3_hash_final (&composite, raw);
      _cleanup_free_ char *b64 = kiln_base64_encode (raw, len);
      checksum = kiln_xasprintf ("%s-%zu", b64, n);
    }
  s3_hash_release (&etag_hash);
  s3_hash_release (&composite);

  char data[33] = "";
  struct s3_hash whole = {0};
  s3_hash_init (&whole, full ? alg : S3_ALG_NONE);
  if (r == 0)
    r = assemble (s, parts, n, full ? &whole : NULL, data);
  if (r == 0 && full)
    {
      size_t len = s3_hash_final (&whole, raw);
      checksum = kiln_base64_encode (raw, len);
    }
  s3_hash_release (&whole);
  listed_parts_free (parts, n);
  if (r < 0)
    return -1;

  /* A checksum of the whole object sent with the request must agree. */
  const char *claimed = info ? s3_header (s, info->header) : NULL;
  if (claimed && strncmp (claimed, checksum, strcspn (checksum, "-")) != 0)
    {
      s3_data_remove (emu, data);
      return s3_fail (s, 400, "BadDigest", "The %s you specified did not match the calculated checksum.", info->name);
    }

  _cleanup_free_ char *part_sizes = json_dumps (sizes, JSON_COMPACT);
  struct s3_new_object o = {
    .data = data, .size = total, .etag = etag, .content_type = emu_row_str (up, "content_type"),
    .metadata = emu_row_str (up, "metadata"), .algorithm = alg, .checksum = checksum,
    .checksum_type = info ? type : NULL, .part_sizes = part_sizes,
  };
  _cleanup_free_ char *old = NULL;
  _cleanup_json_ json_t *still = NULL;
  if (emu_db_begin (emu, &err) < 0)
    {
      s3_data_remove (emu, data);
      return s3_fail_internal (s, err);
    }
  still = emu_db_query_one (emu, &err, "SELECT id FROM s3_uploads WHERE id = ?", upload_id);
  if (still == NULL)
    r = err ? -1 : no_such_upload (s, upload_id);
  else
    {
      r = s3_object_put_row (s, &o, &old, &err);
      if (r == 0)
        r = emu_db_exec (emu, &err, "DELETE FROM s3_parts WHERE upload = ?", upload_id) < 0
                    || emu_db_exec (emu, &err, "DELETE FROM s3_uploads WHERE id = ?", upload_id) < 0
                ? -1
                : 0;
    }
  if (emu_db_end (emu, r == 0, r == 0 ? &err : NULL) < 0 || r < 0)
    {
      s3_data_remove (emu, data);
      return err ? s3_fail_internal (s, err) : -1;
    }
  s3_data_remove (emu, old);
  size_t i;
  json_t *row;
  json_array_foreach (stored, i, row)
    s3_data_remove (emu, emu_row_str (row, "data"));

  s3_xml_begin (s, "CompleteMultipartUploadResult");
  const char *host = s3_header (s, "Host");
  _cleanup_free_ char *key_enc = kiln_sigv4_uri_encode (s->key, true);
  s3_xml_textf (s, "Location", "http://%s/%s/%s", host ? host : "localhost", s->bucket, key_enc);
  s3_xml_text (s, "Bucket", s->bucket);
  s3_xml_text (s, "Key", s->key);
  s3_xml_textf (s, "ETag", "\"%s\"", etag);
  if (info && checksum)
    {
      s3_xml_text (s, info->element, checksum);
      s3_xml_text (s, "ChecksumType", type);
    }
  s3_xml_finish (s);
  return 0;
}

/* ---- aborting and listing ---- */

static int
abort_upload (struct s3_call *s)
{
  struct kiln_emu *emu = s->c->emu;
  _cleanup_json_ json_t *up = NULL;
  if (load_upload (s, &up) < 0)
    return -1;
  const char *id = emu_row_str (up, "id");
  _cleanup_error_ kiln_error *err = NULL;
  if (emu_db_begin (emu, &err) < 0)
    return s3_fail_internal (s, err);
  _cleanup_json_ json_t *parts = emu_db_query (emu, &err, "SELECT data FROM s3_parts WHERE upload = ?", id);
  if (parts == NULL || emu_db_exec (emu, &err, "DELETE FROM s3_parts WHERE upload = ?", id) < 0
      || emu_db_exec (emu, &err, "DELETE FROM s3_uploads WHERE id = ?", id) < 0 || emu_db_end (emu, true, &err) < 0)
    {
      emu_db_end (emu, false, NULL);
      return s3_fail_internal (s, err);
    }
  size_t i;
  json_t *row;
  json_array_foreach (parts, i, row)
    s3_data_remove (emu, emu_row_str (row, "data"));
  s->resp->status = 204;
  return 0;
}

static int
list_parts (struct s3_call *s)
{
  _cleanup_json_ json_t *up = NULL;
  if (load_upload (s, &up) < 0)
    return -1;
  long long max, marker;
  if (s3_query_int (s, "max-parts", LIST_MAX, 0, LIST_MAX, &max) < 0
      || s3_query_int (s, "part-number-marker", 0, 0, S3_MAX_PART_NUMBER, &marker) < 0)
    return -1;
  char marker_s[24], limit[24];
  snprintf (marker_s, sizeof marker_s, "%lld", marker);
  snprintf (limit, sizeof limit, "%lld", max + 1);
  _cleanup_error_ kiln_error *err = NULL;
  _cleanup_json_ json_t *rows = emu_db_query (s->c->emu, &err, "SELECT number, size, etag, checksum, modified FROM "
                                              "s3_parts WHERE upload = ? AND number > ? ORDER BY number LIMIT ?",
                                              emu_row_str (up, "id"), marker_s, limit);
  if (rows == NULL)
    return s3_fail_internal (s, err);
  bool truncated = json_array_size (rows) > (size_t) max;
  const struct s3_algorithm_info *info
      = s3_algorithm_info (s3_algorithm_by_name (emu_row_str (up, "checksum_algorithm")));
  s3_xml_begin (s, "ListPartsResult");
  s3_xml_text (s, "Bucket", s->bucket);
  s3_xml_text (s, "Key", s->key);
  s3_xml_text (s, "UploadId", emu_row_str (up, "id"));
  s3_xml_text (s, "PartNumberMarker", marker_s);
  long long next = marker;
  size_t i;
  json_t *row;
  json_array_foreach (rows, i, row)
    if (i < (size_t) max)
      next = emu_row_int (row, "number");
  s3_xml_textf (s, "NextPartNumberMarker", "%lld", next);
  s3_xml_textf (s, "MaxParts", "%lld", max);
  s3_xml_text (s, "IsTruncated", truncated ? "true" : "false");
  json_array_foreach (rows, i, row)
    {
      if (i == (size_t) max)
        break;
      s3_xml_start (s, "Part");
      s3_xml_text (s, "PartNumber", emu_row_str (row, "number"));
      s3_xml_time (s, "LastModified", (time_t) emu_row_int (row, "modified"));
      s3_xml_textf (s, "ETag", "\"%s\"", emu_row_str (row, "etag"));
      s3_xml_text (s, "Size", emu_row_str (row, "size"));
      if (info)
        s3_xml_text (s, info->element, emu_row_str_or_null (row, "checksum"));
      s3_xml_end (s);
    }
  s3_xml_owner (s, "Initiator", emu_row_str (up, "account"));
  s3_xml_owner (s, "Owner", emu_row_str (up, "account"));
  s3_xml_text (s, "StorageClass", "STANDARD");
  if (info)
    {
      s3_xml_text (s, "ChecksumAlgorithm", info->name);
      s3_xml_text (s, "ChecksumType", emu_row_str_or_null (up, "checksum_type"));
    }
  s3_xml_finish (s);
  return 0;
}

static int
list_uploads (struct s3_call *s)
{
  long long max;
  if (s3_query_int (s, "max-uploads", LIST_MAX, 0, LIST_MAX, &max) < 0)
    return -1;
  const char *prefix = s3_query (s, "prefix");
  const char *delimiter = s3_query (s, "delimiter");
  const char *key_marker = s3_query (s, "key-marker");
  const char *id_marker = s3_query (s, "upload-id-marker");
  const char *encoding = s3_query (s, "encoding-type");
  if (encoding && strcmp (encoding, "url") != 0)
    return s3_fail (s, 400, "InvalidArgument", "Invalid Encoding Method specified in Request");
  bool url = encoding != NULL;
  if (delimiter && *delimiter == '\0')
    delimiter = NULL;
  size_t plen = prefix ? strlen (prefix) : 0;
  _cleanup_error_ kiln_error *err = NULL;
  _cleanup_json_ json_t *rows = emu_db_query (s->c->emu, &err, "SELECT id, key, account, initiated, seq, "
                                              "checksum_algorithm, checksum_type FROM s3_uploads WHERE bucket = ? "
                                              "ORDER BY key, seq", s->bucket);
  if (rows == NULL)
    return s3_fail_internal (s, err);
  /* After the markers: keys past key-marker, or at it and initiated after
   * upload-id-marker (every upload at it when no id is given). */
  long long marker_seq = -1;
  if (key_marker && id_marker)
    {
      size_t i;
      json_t *row;
      json_array_foreach (rows, i, row)
        if (strcmp (emu_row_str (row, "id"), id_marker) == 0)
          marker_seq = emu_row_int (row, "seq");
    }
  _cleanup_json_ json_t *shown = json_array ();
  _cleanup_json_ json_t *prefixes = json_array ();
  bool truncated = false;
  const char *next_key = NULL, *next_id = NULL;
  size_t i;
  json_t *row;
  json_array_foreach (rows, i, row)
    {
      const char *key = emu_row_str (row, "key");
      if (prefix && strncmp (key, prefix, plen) != 0)
        continue;
      if (key_marker && *key_marker)
        {
          int cmp = strcmp (key, key_marker);
          if (cmp < 0 || (cmp == 0 && (id_marker == NULL || emu_row_int (row, "seq") <= marker_seq)))
            continue;
        }
      const char *d = delimiter ? strstr (key + plen, delimiter) : NULL;
      _cleanup_free_ char *cp = d ? kiln_xstrndup (key, (size_t) (d - key) + strlen (delimiter)) : NULL;
      size_t np = json_array_size (prefixes);
      if (cp && np && strcmp (json_string_value (json_array_get (prefixes, np - 1)), cp) == 0)
        continue;
      if ((long long) (json_array_size (shown) + np) == max)
        {
          truncated = true;
          break;
        }
      if (cp)
        json_array_append_new (prefixes, json_string (cp));
      else
        {
          json_array_append (shown, row);
          next_key = key;
          next_id = emu_row_str (row, "id");
        }
    }
  s3_xml_begin (s, "ListMultipartUploadsResult");
  s3_xml_text (s, "Bucket", s->bucket);
  s3_xml_key (s, "KeyMarker", key_marker ? key_marker : "", url);
  s3_xml_text (s, "UploadIdMarker", id_marker ? id_marker : "");
  if (truncated)
    {
      s3_xml_key (s, "NextKeyMarker", next_key, url);
      s3_xml_text (s, "NextUploadIdMarker", next_id);
    }
  s3_xml_key (s, "Prefix", prefix, url);
  s3_xml_key (s, "Delimiter", delimiter, url);
  s3_xml_textf (s, "MaxUploads", "%lld", max);
  if (url)
    s3_xml_text (s, "EncodingType", "url");
  s3_xml_text (s, "IsTruncated", truncated ? "true" : "false");
  json_array_foreach (shown, i, row)
    {
      s3_xml_start (s, "Upload");
      s3_xml_key (s, "Key", emu_row_str (row, "key"), url);
      s3_xml_text (s, "UploadId", emu_row_str (row, "id"));
      s3_xml_owner (s, "Initiator", emu_row_str (row, "account"));
      s3_xml_owner (s, "Owner", emu_row_str (row, "account"));
      s3_xml_text (s, "StorageClass", "STANDARD");
      s3_xml_time (s, "Initiated", (time_t) emu_row_int (row, "initiated"));
      s3_xml_text (s, "ChecksumAlgorithm", emu_row_str_or_null (row, "checksum_algorithm"));
      s3_xml_text (s, "ChecksumType", emu_row_str_or_null (row, "checksum_type"));
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

const struct s3_operation emu_s3_multipart_ops[] = {
  {"CreateMultipartUpload", create_upload, true},
  {"UploadPart", upload_part, true},
  {"UploadPartCopy", upload_part_copy, true},
  {"CompleteMultipartUpload", complete_upload, true},
  {"AbortMultipartUpload", abort_upload, true},
  {"ListParts", list_parts, true},
  {"ListMultipartUploads", list_uploads, true},
  {NULL, NULL, false},
};
