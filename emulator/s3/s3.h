/* s3.h - kiln-emulator's S3 (rest-xml, API 2006-03-01): the entry points the
 * rest of the emulator uses, and what the s3_*.c files share.
 *
 * Files, one idea each:
 *   s3_protocol.c  routing (method, path or virtual host, query
 *                  subresources), access checks, XML replies and errors
 *   s3_buckets.c   CreateBucket, HeadBucket, DeleteBucket, ListBuckets,
 *                  GetBucketLocation
 *   s3_objects.c   PutObject, GetObject, HeadObject, DeleteObject(s),
 *                  CopyObject, ListObjects and ListObjectsV2
 *   s3_multipart.c multipart uploads and their parts
 *   s3_upload.c    object data as it arrives: aws-chunked decoding, chunk
 *                  signatures, digests, the temporary file (server.c feeds it)
 *   s3_data.c      where object data lives on disk (by generated id)
 *   s3_checksum.c  CRC32, CRC32C, CRC64NVME, SHA1, SHA256 and MD5, streaming
 *
 * State: the tables s3_buckets, s3_objects, s3_uploads and s3_parts
 * (store.c); object and part data are files DATA_DIR/s3/data/<id>, never
 * named after a key, so no key can reach outside the bucket.  Bucket names
 * are global across accounts; a bucket belongs to one account and lives in
 * the region it was created in. */
#ifndef KILN_EMULATOR_S3_H
#define KILN_EMULATOR_S3_H

#include <stdbool.h>
#include <stdint.h>

#include <openssl/evp.h>

#include "emulator.h"

/* Largest object a single PutObject or UploadPart takes (S3's 5 GiB). */
#define S3_MAX_PUT_SIZE (5ULL * 1024 * 1024 * 1024)
/* Smallest part of a multipart upload other than the last (5 MiB). */
#define S3_MIN_PART_SIZE (5ULL * 1024 * 1024)
#define S3_MAX_PART_NUMBER 10000
#define S3_MAX_KEY_LEN 1024
#define S3_XMLNS "http://s3.amazonaws.com/doc/2006-03-01/"

/* ---- entry points (emulator.c, server.c) ---- */

/* Runs the S3 operation c->req asks for (c is authenticated: account and
 * region known) and writes its reply or its S3 error into resp. */
void emu_s3_serve (struct emu_call *c, struct emu_response *resp);
/* The error recorded on c in S3's shape: <Error><Code/><Message/>
 * <Resource/><RequestId/></Error>, no body for HEAD. */
void emu_s3_error_reply (struct emu_call *c, struct emu_response *resp);
/* Whether a request whose signature names no service (none, or unreadable)
 * is meant for S3: it carries no X-Amz-Target and no EC2 Action, whether in
 * the query or a form body. */
bool emu_s3_unsigned_looks_like_s3 (const struct emu_request *req);
/* Whether head (a request without its body yet) is an S3 PutObject or
 * UploadPart, whose body is object data to stream to a file. */
bool emu_s3_is_object_write (const struct emu_request *head);

/* ---- checksums (s3_checksum.c) ---- */

enum s3_algorithm {
  S3_ALG_NONE = 0,
  S3_ALG_CRC32,
  S3_ALG_CRC32C,
  S3_ALG_CRC64NVME,
  S3_ALG_SHA1,
  S3_ALG_SHA256,
  S3_ALG_MD5,       /* ETags and Content-MD5 only, never a flexible checksum */
};
#define S3_CHECKSUM_MAX 32

struct s3_algorithm_info {
  const char *name;     /* "CRC32", as in x-amz-checksum-algorithm */
  const char *header;   /* "x-amz-checksum-crc32" */
  const char *element;  /* "ChecksumCRC32" */
  size_t len;           /* raw digest length in bytes */
  bool composite;       /* multipart uploads may combine part checksums */
  bool full_object;     /* multipart uploads may checksum the whole object */
};

/* Information on a flexible checksum algorithm (NULL for NONE and MD5). */
const struct s3_algorithm_info *s3_algorithm_info (enum s3_algorithm alg);
/* By name, case-insensitive ("crc32"); S3_ALG_NONE when unknown. */
enum s3_algorithm s3_algorithm_by_name (const char *name);
/* By header name, case-insensitive ("x-amz-checksum-crc32"); NONE when
 * unknown. */
enum s3_algorithm s3_algorithm_by_header (const char *name);

/* An incremental digest of one algorithm. */
struct s3_hash {
  enum s3_algorithm alg;
  uint64_t crc;
  EVP_MD_CTX *md;
};
void s3_hash_init (struct s3_hash *h, enum s3_algorithm alg);
void s3_hash_update (struct s3_hash *h, const void *data, size_t len);
/* The digest into out (big-endian for CRCs, as S3 sends them); returns its
 * length, 0 for NONE.  The hash can be used again after s3_hash_init. */
size_t s3_hash_final (struct s3_hash *h, unsigned char out[S3_CHECKSUM_MAX]);
void s3_hash_release (struct s3_hash *h);
/* The digest of one buffer, base64 into a malloc'd string. */
char *s3_checksum_base64 (enum s3_algorithm alg, const void *data, size_t len);

/* ---- data files (s3_data.c) ---- */

/* Makes DATA_DIR/s3/{data,tmp}; the first time in this process, removes
 * what a previous run left in tmp. */
int s3_data_ready (struct kiln_emu *emu, kiln_error **err);
/* S3's start slot (services.h): with a state directory, s3_data_ready
 * before the first request, so a killed emulator's leftovers (unfinished
 * bodies, data files no row names) go at once. */
int s3_start (struct kiln_emu *emu, kiln_error **err);
/* A new empty temporary file under DATA_DIR/s3/tmp: its descriptor, its
 * malloc'd path in *path. */
int s3_data_temp (struct kiln_emu *emu, char **path, kiln_error **err);
/* Makes the temporary file tmp_path (open as fd) a data file with a new
 * id (32 hex digits into id): synced first when the emulator keeps state,
 * then renamed.  On failure the temporary file is removed. */
int s3_data_publish (struct kiln_emu *emu, const char *tmp_path, int fd, char id[33], kiln_error **err);
/* Opens a data file read-only. */
int s3_data_open (struct kiln_emu *emu, const char *id, kiln_error **err);
/* Removes a data file (NULL or a missing one is fine). */
void s3_data_remove (struct kiln_emu *emu, const char *id);
/* Copies len bytes of in from offset into out, feeding every byte to the
 * digests given (either may be NULL). */
int s3_data_copy (int in, uint64_t offset, uint64_t len, int out, struct s3_hash *a, struct s3_hash *b,
                  kiln_error **err);

/* ---- object data as it arrives (s3_upload.c) ---- */

struct emu_stream_auth;

/* The body of a PutObject or UploadPart: decoded (plain or aws-chunked),
 * digested and written to a temporary file while it arrives.  Handlers
 * read the outcome; the temporary file is removed by emu_upload_free
 * unless a handler published it. */
struct emu_upload {
  /* First: what auth.c reads of any streamed body (emulator.h). */
  struct emu_streamed_body streamed;
  struct kiln_emu *emu;
  char *tmp_path;            /* NULL once published or when never made */
  int fd;

  /* What the request said about its body. */
  bool signed_chunks;        /* STREAMING-AWS4-HMAC-SHA256-PAYLOAD[-TRAILER] */
  bool signed_trailer;       /* ...-TRAILER: the trailer is signed too */
  bool has_length;           /* Content-Length or x-amz-decoded-content-length given */
  uint64_t declared_length;  /* decoded length the request announced */
  char *trailer_name;        /* x-amz-trailer, lowercase, or NULL */

  /* What arrived. */
  uint64_t raw_len;          /* bytes on the wire (after HTTP chunking) */
  uint64_t size;             /* object bytes, decoded */
  bool complete;             /* the whole body arrived and decoded cleanly */
  unsigned char md5[16];
  enum s3_algorithm algorithm; /* the flexible checksum computed, if any */
  unsigned char checksum[S3_CHECKSUM_MAX];
  size_t checksum_len;
  char *trailer_value;       /* the checksum the trailer carried (base64) */
  /* The first problem met: S3 code, HTTP status, message; NULL when none. */
  char *error_code;
  int error_status;
  char *error_message;

  /* Decoder state (s3_upload.c). */
  int state;
  char line[512];
  size_t line_len;
  uint64_t chunk_left;
  uint64_t last_chunk_size;
  char chunk_signature[65];
  struct kiln_buf trailers;  /* "name:value\n" lines, for a signed trailer */
  char *pending;             /* write-behind buffer */
  size_t pending_len;
  EVP_MD_CTX *md5_ctx;
  EVP_MD_CTX *raw_ctx;
  EVP_MD_CTX *chunk_ctx;
  struct s3_hash hash;
  struct emu_stream_auth *stream_auth;
};

/* Called by server.c with the request's head: NULL when the body is not
 * object data (it is buffered in memory as any other body), else an upload
 * that takes the body through emu_upload_feed.  Never fails: a problem
 * (no data directory, a request that cannot be decoded) is kept in the
 * upload and reported when the request is answered. */
struct emu_upload *emu_upload_begin (struct kiln_emu *emu, const struct emu_request *head);
void emu_upload_feed (struct emu_upload *u, const void *data, size_t len);
/* The body ended as the request said it would: flushes the file and checks
 * that the decoding reached its end.  Not called for a body cut short. */
void emu_upload_finish (struct emu_upload *u);
/* Closes and removes the temporary file unless published; safe on NULL. */
void emu_upload_free (struct emu_upload *u);
/* An upload made from a body already in memory (requests that reach
 * kiln_emu_handle without going through server.c, e.g. golden tests). */
struct emu_upload *emu_upload_from_memory (struct kiln_emu *emu, const struct emu_request *req);

/* ---- one S3 call (s3_protocol.c) ---- */

struct s3_call {
  struct emu_call *c;
  struct emu_response *resp;
  const struct emu_request *req;
  char *bucket;              /* NULL for ListBuckets */
  char *key;                 /* NULL for bucket operations */
  json_t *bucket_row;        /* the bucket's s3_buckets row once checked */
  struct emu_upload *upload; /* PutObject, UploadPart */
  /* Extra elements of an error reply (<Key>, <Region>, ...), in order. */
  json_t *error_extra;
  xmlBufferPtr xml_buf;
};

typedef int (*s3_handler_fn) (struct s3_call *s);

struct s3_operation {
  const char *name;
  s3_handler_fn fn;
  bool needs_bucket;         /* the bucket must exist, be the caller's and in the signed region */
};

extern const struct s3_operation emu_s3_bucket_ops[];
extern const struct s3_operation emu_s3_object_ops[];
extern const struct s3_operation emu_s3_multipart_ops[];

/* Errors: records the S3 error on the call and returns -1. */
int s3_fail (struct s3_call *s, int status, const char *code, const char *fmt, ...)
    __attribute__ ((format (printf, 4, 5)));
/* Adds <name>value</name> to the error reply. */
void s3_error_extra (struct s3_call *s, const char *name, const char *value);
int s3_fail_no_such_key (struct s3_call *s);
int s3_fail_internal (struct s3_call *s, kiln_error *err);

/* Query parameters (decoded): the value, "" for a name without '=', NULL
 * when absent. */
const char *s3_query (struct s3_call *s, const char *name);
const char *s3_header (struct s3_call *s, const char *name);
/* An integer query parameter in [min, max]; def when absent; fails with
 * InvalidArgument otherwise. */
int s3_query_int (struct s3_call *s, const char *name, long long def, long long min, long long max,
                  long long *out);

/* The reply: status and headers. */
void s3_header_add (struct s3_call *s, const char *name, const char *value);
void s3_header_addf (struct s3_call *s, const char *name, const char *fmt, ...)
    __attribute__ ((format (printf, 3, 4)));
/* An XML reply: starts the document with root (xmlns S3's) in c->xml;
 * s3_xml_finish puts it in the response with status 200. */
void s3_xml_begin (struct s3_call *s, const char *root);
void s3_xml_finish (struct s3_call *s);
void s3_xml_start (struct s3_call *s, const char *name);
void s3_xml_end (struct s3_call *s);
/* <name>value</name>; nothing when value is NULL. */
void s3_xml_text (struct s3_call *s, const char *name, const char *value);
void s3_xml_textf (struct s3_call *s, const char *name, const char *fmt, ...)
    __attribute__ ((format (printf, 3, 4)));
void s3_xml_time (struct s3_call *s, const char *name, time_t t);
/* <Owner><ID/><DisplayName/></Owner> (or another element name) of an account. */
void s3_xml_owner (struct s3_call *s, const char *element, const char *account);
/* A key (or prefix) element, URL-encoded when the listing asked for
 * encoding-type=url; nothing when value is NULL. */
void s3_xml_key (struct s3_call *s, const char *name, const char *value, bool url);

/* Parses a small XML request body; NULL (MalformedXML recorded) when it is
 * not XML.  Free with xmlFreeDoc. */
xmlDocPtr s3_xml_parse (struct s3_call *s);
/* The first child element of node named name (namespace ignored), or NULL. */
xmlNodePtr s3_xml_child (xmlNodePtr node, const char *name);
/* Its text, malloc'd ("" when empty). */
char *s3_xml_child_text (xmlNodePtr node, const char *name);

/* Times: HTTP dates (Last-Modified) into out[32]; parsing them back. */
void s3_http_date (time_t t, char out[32]);
bool s3_parse_http_date (const char *s, time_t *out);
/* The canonical user id S3 shows for an account (64 hex digits). */
void s3_canonical_id (const char *account, char out[65]);

/* Object metadata from the request's headers: a JSON object of
 * lowercase header name -> value for x-amz-meta-*, Cache-Control,
 * Content-Disposition, Content-Encoding (aws-chunked removed),
 * Content-Language and Expires. */
json_t *s3_metadata_from_request (struct s3_call *s);
/* The same headers put on the reply. */
void s3_metadata_to_reply (struct s3_call *s, const char *metadata_json);
/* The Content-Type an object gets (S3's default binary/octet-stream). */
const char *s3_content_type (struct s3_call *s);
/* The flexible checksum algorithm a request names (x-amz-checksum-algorithm
 * or x-amz-sdk-checksum-algorithm); fails with InvalidRequest on an unknown
 * one.  *out is NONE when none is named. */
int s3_requested_algorithm (struct s3_call *s, const char *header, enum s3_algorithm *out);

/* ---- objects shared with multipart (s3_objects.c) ---- */

/* An object about to take its key. */
struct s3_new_object {
  const char *data;          /* data file id */
  uint64_t size;
  const char *etag;          /* without quotes */
  const char *content_type;
  const char *metadata;      /* JSON text */
  enum s3_algorithm algorithm;
  const char *checksum;      /* base64, "-N" suffixed when composite; NULL when none */
  const char *checksum_type; /* FULL_OBJECT, COMPOSITE or NULL */
  const char *part_sizes;    /* JSON array for multipart objects, else NULL */
};

/* Within a transaction the caller began (emu_db_begin): checks that the
 * bucket still exists and the request's If-Match / If-None-Match against
 * the object the key has now, then puts o there.  *old_data gets the
 * replaced object's data id (malloc'd, NULL when none), to remove after
 * the commit.  Returns -1 with *err for a database problem, -1 with an S3
 * error recorded (NoSuchBucket, PreconditionFailed, ...) otherwise. */
int s3_object_put_row (struct s3_call *s, const struct s3_new_object *o, char **old_data, kiln_error **err);

/* The source an x-amz-copy-source header names, opened: its row and a
 * read descriptor (the caller closes it).  The source bucket must be the
 * caller's.  Fails with S3's errors (NoSuchBucket, NoSuchKey, AccessDenied,
 * PreconditionFailed for the x-amz-copy-source-if-* headers). */
int s3_copy_source (struct s3_call *s, json_t **row, int *fd);

/* ---- objects for other services (EC2 VM import/export) ---- */

/* Whether account, signed for region, may use bucket as S3 lets it (its
 * own bucket, in that region): 0 when it may; 1 when not, *why (static
 * text) saying why, to follow "bucket NAME "; -1 on a database error. */
int s3_bucket_usable (struct kiln_emu *emu, const char *account, const char *region, const char *bucket,
                      const char **why, kiln_error **err);
/* Gives object bucket/key's data a second name under DATA_DIR/s3/tmp
 * (*path, malloc'd; the caller unlinks it), so it stays readable whatever
 * happens to the object meanwhile; *size is the object's size.  0; 1 when
 * account may not read it (s3_bucket_usable) or there is no such key (*why
 * says which); -1 on error. */
int s3_object_link (struct kiln_emu *emu, const char *account, const char *region, const char *bucket, const char *key,
                    char **path, uint64_t *size, const char **why, kiln_error **err);
/* Stores tmp_path (a file under DATA_DIR/s3/tmp, from s3_data_temp,
 * written whole and closed) as object bucket/key, replacing any, with the
 * MD5 ETag PutObject would give it, if account may still write the bucket
 * (s3_bucket_usable).  The file is consumed either way.  0; 1 (*why); -1. */
int s3_object_store_file (struct kiln_emu *emu, const char *account, const char *region, const char *bucket,
                          const char *key, const char *tmp_path, const char *content_type, time_t now,
                          const char **why, kiln_error **err);
/* The same for data in memory (len bytes of data): written to a temporary
 * file, then stored as s3_object_store_file does.  0; 1 (*why); -1. */
int s3_object_store_data (struct kiln_emu *emu, const char *account, const char *region, const char *bucket,
                          const char *key, const void *data, size_t len, const char *content_type, time_t now,
                          const char **why, kiln_error **err);

/* PutObject and UploadPart: the body arrived whole and decoded, is not over
 * S3_MAX_PUT_SIZE, and matches the Content-MD5 and the flexible checksum
 * (header or trailer) the request sent (BadDigest otherwise).  expected is
 * the algorithm the object or upload must have (NONE: any or none); the
 * upload's algorithm is then what was computed. */
int s3_upload_verify (struct s3_call *s, enum s3_algorithm expected);
/* Publishes the upload's temporary file as a data file (s3_data_publish). */
int s3_upload_publish (struct s3_call *s, char id[33]);

/* S3's names for an authentication failure (s3_protocol.c). */
void emu_s3_auth_error (enum emu_auth_failure kind, bool presigned, int *status, const char **code);

#endif
