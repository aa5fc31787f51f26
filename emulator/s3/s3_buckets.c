/* s3_buckets.c - S3 buckets: CreateBucket, HeadBucket, DeleteBucket,
 * ListBuckets, GetBucketLocation.
 *
 * A bucket's name is global: one account has it, in the region it was
 * created in.  CreateBucket follows S3's rules: the LocationConstraint
 * body names the region (none means us-east-1, and naming us-east-1
 * explicitly is refused as S3 refuses it); a request signed for us-east-1
 * may create a bucket in any region (the global endpoint), one signed for
 * another region only there.  Creating a bucket you already own is 409
 * BucketAlreadyOwnedByYou, except in us-east-1 where S3, for legacy
 * compatibility, answers 200; someone else's name is 409
 * BucketAlreadyExists.  DeleteBucket refuses a bucket with objects
 * (BucketNotEmpty) and aborts its multipart uploads. */
#include "s3.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cleanup.h"
#include "digest.h"
#include "store.h"
#include "xalloc.h"

#define DEFAULT_REGION "us-east-1"

/* S3's naming rules for general purpose buckets. */
static bool
valid_bucket_name (const char *n)
{
  size_t len = strlen (n);
  if (len < 3 || len > 63)
    return false;
  if (!isalnum ((unsigned char) n[0]) || !isalnum ((unsigned char) n[len - 1]))
    return false;
  bool all_ip = true;
  int dots = 0;
  for (size_t i = 0; i < len; i++)
    {
      char ch = n[i];
      if (!(islower ((unsigned char) ch) || isdigit ((unsigned char) ch) || ch == '.' || ch == '-'))
        return false;
      if (ch == '.' && n[i + 1] == '.')
        return false;
      if (ch == '.')
        dots++;
      else if (!isdigit ((unsigned char) ch))
        all_ip = false;
    }
  if (all_ip && dots == 3)
    return false;
  static const char *const bad_prefixes[] = {"xn--", "sthree-", "amzn-s3-demo-", NULL};
  static const char *const bad_suffixes[] = {"-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3", NULL};
  for (size_t i = 0; bad_prefixes[i]; i++)
    if (strncmp (n, bad_prefixes[i], strlen (bad_prefixes[i])) == 0)
      return false;
  for (size_t i = 0; bad_suffixes[i]; i++)
    {
      size_t sl = strlen (bad_suffixes[i]);
      if (len > sl && strcmp (n + len - sl, bad_suffixes[i]) == 0)
        return false;
    }
  return true;
}

/* The LocationConstraint of a CreateBucketConfiguration body (malloc'd),
 * NULL when the body gives none; -1 on a malformed body. */
static int
location_constraint (struct s3_call *s, char **out)
{
  *out = NULL;
  if (s->req->body_len == 0)
    return 0;
  xmlDocPtr doc = s3_xml_parse (s);
  if (doc == NULL)
    return -1;
  xmlNodePtr root = xmlDocGetRootElement (doc);
  int r = 0;
  if (strcmp ((const char *) root->name, "CreateBucketConfiguration") != 0)
    r = s3_fail (s, 400, "MalformedXML", "The XML you provided was not well-formed or did not validate against "
                 "our published schema.");
  else
    {
      char *lc = s3_xml_child_text (root, "LocationConstraint");
      if (lc && *lc)
        *out = lc;
      else
        free (lc);
    }
  xmlFreeDoc (doc);
  return r;
}

static int
create_bucket (struct s3_call *s)
{
  if (!valid_bucket_name (s->bucket))
    {
      s3_error_extra (s, "BucketName", s->bucket);
      return s3_fail (s, 400, "InvalidBucketName", "The specified bucket is not valid.");
    }
  _cleanup_free_ char *lc = NULL;
  if (location_constraint (s, &lc) < 0)
    return -1;
  if (lc && (!emu_region_known (lc) || strcmp (lc, DEFAULT_REGION) == 0))
    {
      s3_error_extra (s, "LocationConstraint", lc);
      return s3_fail (s, 400, "InvalidLocationConstraint", "The specified location-constraint is not valid");
    }
  const char *region = lc ? lc : DEFAULT_REGION;
  if (strcmp (s->c->region, DEFAULT_REGION) != 0 && strcmp (region, s->c->region) != 0)
    return s3_fail (s, 400, "IllegalLocationConstraintException", "The %s location constraint is incompatible "
                    "for the region specific endpoint this request was sent to.", lc ? lc : "unspecified");

  _cleanup_error_ kiln_error *err = NULL;
  char created[24];
  snprintf (created, sizeof created, "%lld", (long long) s->c->now);
  int n = emu_db_exec (s->c->emu, &err, "INSERT OR IGNORE INTO s3_buckets (name, account, region, created) "
                       "VALUES (?, ?, ?, ?)", s->bucket, s->c->account, region, created);
  if (n < 0)
    return s3_fail_internal (s, err);
  if (n == 0)
    {
      _cleanup_json_ json_t *row = emu_db_query_one (s->c->emu, &err, "SELECT account, region FROM s3_buckets "
                                                     "WHERE name = ?", s->bucket);
      if (row == NULL && err)
        return s3_fail_internal (s, err);
      s3_error_extra (s, "BucketName", s->bucket);
      if (row && strcmp (emu_row_str (row, "account"), s->c->account) == 0)
        {
          if (strcmp (emu_row_str (row, "region"), DEFAULT_REGION) != 0 || strcmp (region, DEFAULT_REGION) != 0)
            return s3_fail (s, 409, "BucketAlreadyOwnedByYou", "Your previous request to create the named bucket "
                            "succeeded and you already own it.");
          /* us-east-1's legacy answer: success, nothing changes. */
        }
      else
        return s3_fail (s, 409, "BucketAlreadyExists", "The requested bucket name is not available. The bucket "
                        "namespace is shared by all users of the system. Please select a different name and try "
                        "again.");
    }
  s3_header_addf (s, "Location", "/%s", s->bucket);
  s->resp->status = 200;
  return 0;
}

static int
head_bucket (struct s3_call *s)
{
  s3_header_add (s, "x-amz-bucket-region", emu_row_str (s->bucket_row, "region"));
  s3_header_add (s, "x-amz-access-point-alias", "false");
  s->resp->status = 200;
  return 0;
}

static int
get_bucket_location (struct s3_call *s)
{
  const char *region = emu_row_str (s->bucket_row, "region");
  s3_xml_begin (s, "LocationConstraint");
  if (strcmp (region, DEFAULT_REGION) != 0)
    xmlTextWriterWriteString (s->c->xml, BAD_CAST region);
  s3_xml_finish (s);
  return 0;
}

static int
delete_bucket (struct s3_call *s)
{
  struct kiln_emu *emu = s->c->emu;
  _cleanup_error_ kiln_error *err = NULL;
  if (emu_db_begin (emu, &err) < 0)
    return s3_fail_internal (s, err);
  _cleanup_json_ json_t *any = emu_db_query_one (emu, &err, "SELECT 1 AS x FROM s3_objects WHERE bucket = ? LIMIT 1",
                                                 s->bucket);
  _cleanup_json_ json_t *parts = NULL;
  if (err)
    goto fail;
  if (any)
    {
      emu_db_end (emu, false, NULL);
      s3_error_extra (s, "BucketName", s->bucket);
      return s3_fail (s, 409, "BucketNotEmpty", "The bucket you tried to delete is not empty");
    }
  parts = emu_db_query (emu, &err, "SELECT p.data FROM s3_parts p JOIN s3_uploads u ON p.upload = u.id "
                        "WHERE u.bucket = ?", s->bucket);
  if (parts == NULL
      || emu_db_exec (emu, &err, "DELETE FROM s3_parts WHERE upload IN (SELECT id FROM s3_uploads WHERE bucket = ?)",
                      s->bucket) < 0
      || emu_db_exec (emu, &err, "DELETE FROM s3_uploads WHERE bucket = ?", s->bucket) < 0
      || emu_db_exec (emu, &err, "DELETE FROM s3_buckets WHERE name = ?", s->bucket) < 0)
    goto fail;
  if (emu_db_end (emu, true, &err) < 0)
    return s3_fail_internal (s, err);
  size_t i;
  json_t *row;
  json_array_foreach (parts, i, row)
    s3_data_remove (emu, emu_row_str (row, "data"));
  s->resp->status = 204;
  return 0;

fail:
  emu_db_end (emu, false, NULL);
  return s3_fail_internal (s, err);
}

static int
list_buckets (struct s3_call *s)
{
  long long max;
  if (s3_query_int (s, "max-buckets", 10000, 1, 10000, &max) < 0)
    return -1;
  const char *prefix = s3_query (s, "prefix");
  const char *region = s3_query (s, "bucket-region");
  const char *token = s3_query (s, "continuation-token");
  _cleanup_free_ char *after = NULL;
  if (token && *token)
    {
      unsigned char *raw = NULL;
      size_t n = 0;
      if (kiln_base64_decode (token, strlen (token), &raw, &n) < 0 || n == 0 || memchr (raw, '\0', n))
        {
          free (raw);
          return s3_fail (s, 400, "InvalidArgument", "The continuation token provided is incorrect");
        }
      after = kiln_xstrndup ((const char *) raw, n);
      free (raw);
    }
  _cleanup_error_ kiln_error *err = NULL;
  _cleanup_json_ json_t *rows = emu_db_query (s->c->emu, &err, "SELECT name, region, created FROM s3_buckets "
                                              "WHERE account = ? AND name > ? ORDER BY name", s->c->account,
                                              after ? after : "");
  if (rows == NULL)
    return s3_fail_internal (s, err);
  s3_xml_begin (s, "ListAllMyBucketsResult");
  s3_xml_start (s, "Buckets");
  long long count = 0;
  const char *last = NULL;
  bool truncated = false;
  size_t i;
  json_t *row;
  json_array_foreach (rows, i, row)
    {
      const char *name = emu_row_str (row, "name");
      if (prefix && strncmp (name, prefix, strlen (prefix)) != 0)
        continue;
      if (region && *region && strcmp (emu_row_str (row, "region"), region) != 0)
        continue;
      if (count == max)
        {
          truncated = true;
          break;
        }
      s3_xml_start (s, "Bucket");
      s3_xml_text (s, "Name", name);
      s3_xml_time (s, "CreationDate", (time_t) emu_row_int (row, "created"));
      s3_xml_text (s, "BucketRegion", emu_row_str (row, "region"));
      s3_xml_end (s);
      count++;
      last = name;
    }
  s3_xml_end (s);
  s3_xml_owner (s, "Owner", s->c->account);
  if (truncated && last)
    {
      _cleanup_free_ char *next = kiln_base64_encode ((const unsigned char *) last, strlen (last));
      s3_xml_text (s, "ContinuationToken", next);
    }
  s3_xml_text (s, "Prefix", prefix);
  s3_xml_finish (s);
  return 0;
}

const struct s3_operation emu_s3_bucket_ops[] = {
  {"CreateBucket", create_bucket, false},
  {"HeadBucket", head_bucket, true},
  {"DeleteBucket", delete_bucket, true},
  {"ListBuckets", list_buckets, false},
  {"GetBucketLocation", get_bucket_location, true},
  {NULL, NULL, false},
};
