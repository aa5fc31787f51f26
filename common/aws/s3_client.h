/* s3_client.h - the few S3 operations kiln needs, on aws_client's rest-xml
 * protocol.
 *
 * GetObject into a local file, PutObject from a local file (single request,
 * up to 5 GiB, streamed, payload signed with the file's real SHA-256),
 * HeadObject, ListObjectsV2 (every page), DeleteObject and multipart upload.
 * Signing (SigV4, header form), retries (3 attempts, backoff with jitter) and
 * the transport are aws_client's; credentials, region and endpoint come from
 * aws_config (service id "s3"), the region defaulting to us-east-1.
 *
 * Addressing: path style (https://endpoint/bucket/key) whenever the endpoint is
 * configured rather than AWS's own (an emulator, MinIO), when force_path_style
 * is set, or when the bucket name has a '.' (which would break the TLS
 * wildcard certificate); virtual-host style (https://bucket.s3.region...)
 * otherwise.
 *
 * Errors name the operation and the object ("S3 GetObject s3://b/k: ...") and
 * carry S3's <Code> and <Message>; a missing object or bucket is
 * KILN_ERR_NOT_FOUND, other S3 errors KILN_ERR_REMOTE.  Credentials never
 * appear in messages. */
#ifndef KILN_COMMON_AWS_S3_CLIENT_H
#define KILN_COMMON_AWS_S3_CLIENT_H

#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "aws_config.h"
#include "error.h"

/* Largest object a single PutObject may carry. */
#define KILN_S3_MAX_PUT_SIZE (5ULL * 1024 * 1024 * 1024)

struct kiln_s3_options {
  /* An already loaded configuration (borrowed, used only while the client
   * is made); NULL: load the profile's from env. */
  const struct kiln_aws_config *config;
  const struct kiln_aws_env *env;    /* NULL: the process environment */
  const char *profile;               /* NULL: AWS_PROFILE or "default" */
  const char *region;                /* NULL: configured region, else us-east-1 */
  const char *endpoint_url;          /* explicit endpoint (wins over configuration) */
  /* Account id sent as x-amz-expected-bucket-owner on every request, so a
   * bucket that changed hands is refused by S3 rather than written to. */
  const char *expected_bucket_owner;
  bool force_path_style;
  bool insecure;                     /* ignore TLS certificate errors */
  long timeout_seconds;              /* per request; 0: no overall limit */
};

struct kiln_s3_client;

/* Resolves credentials, region and endpoint now, so a misconfiguration is
 * reported before any transfer. */
int kiln_s3_client_new (const struct kiln_s3_options *opts, struct kiln_s3_client **out, kiln_error **err);
void kiln_s3_client_free (struct kiln_s3_client *c);

/* The endpoint in use ("https://s3.eu-west-1.amazonaws.com") and whether
 * requests are path-style for ordinary bucket names. */
const char *kiln_s3_client_endpoint (const struct kiln_s3_client *c);
bool kiln_s3_client_path_style (const struct kiln_s3_client *c);

struct kiln_s3_object_info {
  uint64_t size;
  char *etag;              /* as S3 sends it, quotes included */
  char *last_modified;     /* HTTP date (HEAD) or ISO 8601 (list) */
  char *content_type;      /* HEAD only; NULL when absent */
};

void kiln_s3_object_info_release (struct kiln_s3_object_info *info);

/* Downloads the object to dest_path (written beside it, renamed into place on
 * success; an existing file is replaced). */
int kiln_s3_get_object (struct kiln_s3_client *c, const char *bucket, const char *key, const char *dest_path,
                        kiln_error **err);

/* Uploads src_path as the object.  content_type NULL: application/octet-stream. */
int kiln_s3_put_object (struct kiln_s3_client *c, const char *bucket, const char *key, const char *src_path,
                        const char *content_type, kiln_error **err);

/* KILN_ERR_NOT_FOUND when there is no such object (or bucket). */
int kiln_s3_head_object (struct kiln_s3_client *c, const char *bucket, const char *key,
                         struct kiln_s3_object_info *out, kiln_error **err);

struct kiln_s3_object {
  char *key;
  struct kiln_s3_object_info info;
};

struct kiln_s3_listing {
  struct kiln_s3_object *objects;   /* in S3's order (UTF-8 binary order of keys) */
  size_t n;
};

void kiln_s3_listing_release (struct kiln_s3_listing *l);

/* Every object whose key starts with prefix (NULL or "": all), following
 * continuation tokens to the end. */
int kiln_s3_list_objects (struct kiln_s3_client *c, const char *bucket, const char *prefix,
                          struct kiln_s3_listing *out, kiln_error **err);

/* Removes the object (S3 answers 204 also when there was none). */
int kiln_s3_delete_object (struct kiln_s3_client *c, const char *bucket, const char *key, kiln_error **err);

#define KILN_S3_MIN_PART_SIZE (5ULL * 1024 * 1024)
#define KILN_S3_DEFAULT_PART_SIZE (64ULL * 1024 * 1024)
#define KILN_S3_MAX_PARTS 10000

struct kiln_s3_upload_options {
  uint64_t part_size;              /* 0: KILN_S3_DEFAULT_PART_SIZE; grown to keep within 10000 parts */
  volatile sig_atomic_t *cancel;   /* checked between parts */
  void (*progress) (uint64_t done, uint64_t total, void *opaque);
  void *progress_opaque;
};

/* Uploads src_path as the object: one PutObject when it fits in one part,
 * else a multipart upload (CreateMultipartUpload, UploadPart of each part
 * with its payload hash signed, CompleteMultipartUpload).  A failed or
 * interrupted multipart upload is aborted, so no parts linger.  o may be
 * NULL. */
int kiln_s3_upload_file (struct kiln_s3_client *c, const char *bucket, const char *key, const char *src_path,
                         const struct kiln_s3_upload_options *o, kiln_error **err);

/* Splits "s3://bucket/key/with/slashes" into bucket and key ("" for
 * "s3://bucket" or "s3://bucket/").  Both malloc'd.  KILN_ERR_INVALID for
 * anything else, naming the URI. */
int kiln_s3_parse_uri (const char *uri, char **bucket, char **key, kiln_error **err);

/* ---- Pieces exposed for tests ---- */

/* Decodes XML text as libxml2 reads it from S3's replies: the five XML
 * entities and numeric character references (&#65; &#x41;), into a malloc'd
 * string; -1 on a malformed or unknown reference, or markup. */
int kiln_s3_xml_unescape (const char *s, size_t len, char **out);

/* Reads S3's error document (kiln_aws_parse_ec2_error): *code and *message
 * (malloc'd, NULL when absent). */
void kiln_s3_parse_error (const char *xml, char **code, char **message);

#endif
