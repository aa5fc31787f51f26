/* sigv4.h - AWS Signature Version 4, both directions, with no I/O.
 *
 * A client signs a request (kiln_sigv4_sign: Authorization header form;
 * kiln_sigv4_presign: query-string form); a server that received a signed
 * request parses the Authorization header or the X-Amz-* query parameters
 * (kiln_sigv4_parse_authorization / kiln_sigv4_parse_presigned) and recomputes
 * the signature from what it received (kiln_sigv4_verify).  Every step's
 * intermediate string (canonical request, string to sign) is returned so tests
 * can compare them with AWS's published vectors and a server can show them in
 * a SignatureDoesNotMatch reply, as S3 does.
 *
 * Encoding contract.  Paths and query parameters are passed DECODED (the bytes
 * the caller means, e.g. the S3 key "a b/c"); this module encodes them the AWS
 * way: unreserved characters A-Z a-z 0-9 - _ . ~ are kept, every other byte
 * becomes %XX with uppercase hex, and in paths '/' is kept.  The same encoding
 * is what goes on the wire (kiln_sigv4_uri_encode), so what is signed is what
 * is sent.  S3 signs that once-encoded path as is; every other service
 * normalizes the path and encodes it a second time (flags below;
 * kiln_sigv4_service_flags picks them from the service name).  A server first
 * decodes the path and query it received (kiln_sigv4_uri_decode,
 * kiln_sigv4_parse_query).
 *
 * Headers: names are matched without regard to case and lowercased; values are
 * trimmed and inner runs of whitespace collapse to one space; a name given
 * several times is signed once with its values joined by ',' in the order
 * given.  Every header passed to kiln_sigv4_sign is signed, and it must include
 * "host" and "x-amz-date" (equal to the signer's amz_date).
 *
 * Secrets: nothing here logs, and no error message contains a secret key, a
 * session token or a signature. */
#ifndef KILN_COMMON_AWS_SIGV4_H
#define KILN_COMMON_AWS_SIGV4_H

#include <stdbool.h>
#include <stddef.h>
#include <time.h>

#include "buf.h"
#include "digest.h"
#include "error.h"

#define KILN_SIGV4_ALGORITHM "AWS4-HMAC-SHA256"
#define KILN_SIGV4_UNSIGNED_PAYLOAD "UNSIGNED-PAYLOAD"
/* Payload hash of an aws-chunked body whose chunks are signed one by one. */
#define KILN_SIGV4_STREAMING_PAYLOAD "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"
/* SHA-256 of the empty string: the payload hash of a request with no body. */
#define KILN_SIGV4_EMPTY_SHA256 "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
/* Length of an X-Amz-Date value, YYYYMMDDTHHMMSSZ. */
#define KILN_SIGV4_AMZ_DATE_LEN 16
/* Longest X-Amz-Expires AWS accepts (7 days). */
#define KILN_SIGV4_MAX_EXPIRES 604800L

/* A name and a value: a header or a decoded query parameter.  A NULL value is
 * the same as "" (a query parameter written without '='). */
struct kiln_sigv4_pair {
  const char *name;
  const char *value;
};

enum kiln_sigv4_flags {
  /* Remove "." and ".." segments and empty segments ("//") before encoding. */
  KILN_SIGV4_NORMALIZE_PATH = 1u << 0,
  /* Encode the (once-encoded) path a second time for the canonical request. */
  KILN_SIGV4_DOUBLE_ENCODE = 1u << 1,
};

/* 0 for "s3" (S3 signs the path as sent), NORMALIZE_PATH | DOUBLE_ENCODE for
 * any other service (EC2, SSM, EBS, ...). */
unsigned kiln_sigv4_service_flags (const char *service);

/* The parts of an HTTP request that are signed. */
struct kiln_sigv4_request {
  const char *method;                   /* "GET", "PUT", ... */
  const char *path;                     /* decoded; NULL or "" means "/" */
  const struct kiln_sigv4_pair *query;  /* decoded parameters, any order */
  size_t n_query;
  const struct kiln_sigv4_pair *headers; /* any order, names in any case */
  size_t n_headers;
  /* Lowercase hex SHA-256 of the body, or "UNSIGNED-PAYLOAD" (or another
   * literal such as STREAMING-AWS4-HMAC-SHA256-PAYLOAD).  NULL: the empty-body
   * hash for kiln_sigv4_sign, "UNSIGNED-PAYLOAD" for kiln_sigv4_presign. */
  const char *payload_hash;
  unsigned flags;                       /* enum kiln_sigv4_flags */
};

/* Who signs, when, and for which region and service. */
struct kiln_sigv4_signer {
  const char *access_key_id;
  const char *secret_access_key;
  /* Temporary credentials' token or NULL.  Header form: the request must carry
   * it as the x-amz-security-token header (checked, so a forgotten header is
   * an error here rather than a 403 later).  Query form: it is added as
   * X-Amz-Security-Token. */
  const char *session_token;
  const char *amz_date;                 /* YYYYMMDDTHHMMSSZ, UTC */
  const char *region;                   /* "us-east-1" */
  const char *service;                  /* signing name: "s3", "ec2", ... */
};

/* What signing (or recomputing) produced.  Release with
 * kiln_sigv4_result_release; a zeroed struct is empty. */
struct kiln_sigv4_result {
  char *canonical_request;
  char *string_to_sign;
  char *credential_scope;               /* YYYYMMDD/region/service/aws4_request */
  char *signed_headers;                 /* "host;x-amz-date" */
  /* Header form: the canonical query (valid in a URL as is).  Query form: the
   * whole query string to send, X-Amz-Signature last. */
  char *query_string;
  /* Header form: the Authorization header's value.  NULL otherwise. */
  char *authorization;
  char signature[KILN_SHA256_LEN * 2 + 1];
};

void kiln_sigv4_result_release (struct kiln_sigv4_result *r);

/* Signs req for the Authorization header.  Fails (KILN_ERR_INVALID) on a
 * malformed amz_date, a missing host or x-amz-date header, an x-amz-date that
 * differs from signer->amz_date, or a session token the headers do not carry.
 * On failure *out is left empty. */
int kiln_sigv4_sign (const struct kiln_sigv4_request *req, const struct kiln_sigv4_signer *signer,
                     struct kiln_sigv4_result *out, kiln_error **err);

/* Signs req in query-string form (a presigned URL valid for expires_seconds,
 * 1 .. KILN_SIGV4_MAX_EXPIRES).  req->headers are the headers to sign, usually
 * just host; req->query must not already hold X-Amz-* signing parameters.  The
 * URL to hand out is scheme://host + kiln_sigv4_uri_encode(path, true) + "?" +
 * out->query_string. */
int kiln_sigv4_presign (const struct kiln_sigv4_request *req, const struct kiln_sigv4_signer *signer,
                        long expires_seconds, struct kiln_sigv4_result *out, kiln_error **err);

/* ---- Verification (server side) ---- */

/* What a signed request claims, from its Authorization header or its query. */
struct kiln_sigv4_auth {
  bool presigned;            /* from the query string */
  char *access_key_id;
  char *date;                /* YYYYMMDD from the credential scope */
  char *region;
  char *service;
  char **signed_headers;     /* lowercase names as listed, NULL-terminated */
  char *signature;           /* 64 lowercase hex digits */
  char *amz_date;            /* presigned: X-Amz-Date; header form: NULL */
  long expires;              /* presigned: X-Amz-Expires; header form: -1 */
  char *session_token;       /* presigned: X-Amz-Security-Token or NULL */
};

void kiln_sigv4_auth_release (struct kiln_sigv4_auth *a);

/* Parses "AWS4-HMAC-SHA256 Credential=AK/20150830/us-east-1/service/aws4_request,
 * SignedHeaders=host;x-amz-date, Signature=<hex>" (spaces after the commas are
 * optional).  KILN_ERR_INVALID when malformed or another algorithm. */
int kiln_sigv4_parse_authorization (const char *value, struct kiln_sigv4_auth *out, kiln_error **err);

/* Reads X-Amz-Algorithm, X-Amz-Credential, X-Amz-Date, X-Amz-Expires,
 * X-Amz-SignedHeaders, X-Amz-Signature (and X-Amz-Security-Token) from decoded
 * query parameters.  Returns 1 when there is no X-Amz-Signature parameter (the
 * request is not presigned; *out untouched), 0 when parsed, -1 when malformed. */
int kiln_sigv4_parse_presigned (const struct kiln_sigv4_pair *query, size_t n_query,
                                struct kiln_sigv4_auth *out, kiln_error **err);

/* Recomputes the signature of a received request and compares it (in constant
 * time) with auth->signature.  req holds what was received, decoded: every
 * query parameter (X-Amz-Signature is left out of the canonical query by this
 * function) and every header (only those auth->signed_headers names are used;
 * one that is listed but absent is an error).  req->payload_hash is the hash
 * the server computed over the body it received (services without
 * x-amz-content-sha256, e.g. EC2's query API), or NULL to take the
 * x-amz-content-sha256 header's value (header form; its absence is an error)
 * or "UNSIGNED-PAYLOAD" (query form).  A server that trusts the header should
 * still check that the body matches it.  The date signed is the
 * x-amz-date header (header form) or auth->amz_date (query form) and must agree
 * with the credential scope's date.  Checking the access key's existence, the
 * clock skew and expiry is the caller's policy (see kiln_sigv4_parse_amz_date).
 *
 * Returns 0 when the signature matches.  Otherwise -1: KILN_ERR_INVALID for a
 * request that cannot be checked (missing header, bad date), KILN_ERR_FAILED
 * with "signature does not match" for a mismatch.  In both of the latter cases
 * *out (if non-NULL) holds what was computed when it got that far, for the
 * error reply; the caller releases it either way. */
int kiln_sigv4_verify (const struct kiln_sigv4_request *req, const struct kiln_sigv4_auth *auth,
                       const char *secret_access_key, struct kiln_sigv4_result *out, kiln_error **err);

/* The primitive under kiln_sigv4_verify, for servers with their own policy:
 * computes the canonical request, string to sign and signature of req signed
 * at amz_date for region/service, using only the headers named in
 * signed_headers (lowercase, NULL-terminated; NULL: all of req->headers) and
 * req->query as given.  req->payload_hash NULL means the empty-body hash.
 * out->authorization is left NULL. */
int kiln_sigv4_compute (const struct kiln_sigv4_request *req, char *const *signed_headers,
                        const char *secret_access_key, const char *amz_date, const char *region,
                        const char *service, struct kiln_sigv4_result *out, kiln_error **err);

/* aws-chunked bodies (payload hash KILN_SIGV4_STREAMING_PAYLOAD): chunk n is
 * signed over "AWS4-HMAC-SHA256-PAYLOAD", the date, the credential scope, the
 * signature of chunk n-1 (the request's own signature for the first chunk),
 * the empty-string hash and the chunk data's SHA-256 (hex; the final chunk is
 * empty).  signing_key comes from kiln_sigv4_signing_key. */
void kiln_sigv4_chunk_signature (const unsigned char signing_key[KILN_SHA256_LEN], const char *amz_date,
                                 const char *credential_scope, const char *previous_signature,
                                 const char *chunk_sha256_hex, char out[KILN_SHA256_LEN * 2 + 1]);

/* ---- Building blocks ---- */

/* Appends s[0..len) encoded: unreserved bytes kept, '/' kept when keep_slash,
 * everything else %XX (uppercase hex). */
void kiln_sigv4_uri_encode_buf (struct kiln_buf *b, const char *s, size_t len, bool keep_slash);
/* The same into a malloc'd string. */
char *kiln_sigv4_uri_encode (const char *s, bool keep_slash);
/* Decodes %XX sequences (a '%' not followed by two hex digits is kept as is);
 * '+' becomes a space only when plus_is_space.  Returns a malloc'd string and
 * its length in *out_len (if non-NULL); a decoded %00 truncates the C string
 * view, so callers that care check out_len. */
char *kiln_sigv4_uri_decode (const char *s, size_t len, bool plus_is_space, size_t *out_len);

/* Splits a raw query string ("a=1&b=%20x&c") into decoded pairs ('+' is kept
 * as '+', as AWS SDKs sign it).  *out is a malloc'd array whose names and
 * values are malloc'd; free with kiln_sigv4_pairs_free. */
void kiln_sigv4_parse_query (const char *query, struct kiln_sigv4_pair **out, size_t *n_out);
void kiln_sigv4_pairs_free (struct kiln_sigv4_pair *pairs, size_t n);

/* The canonical URI of a decoded path under flags; malloc'd. */
char *kiln_sigv4_canonical_uri (const char *path, unsigned flags);
/* The canonical query string of decoded parameters (encoded, sorted by name
 * then value, "name=value" joined by '&'); malloc'd, "" when n is 0. */
char *kiln_sigv4_canonical_query (const struct kiln_sigv4_pair *query, size_t n);

/* kSigning = HMAC chain over "AWS4"+secret, date (YYYYMMDD), region, service,
 * "aws4_request". */
void kiln_sigv4_signing_key (const char *secret_access_key, const char *date, const char *region,
                             const char *service, unsigned char out[KILN_SHA256_LEN]);

/* Formats t (UTC) as YYYYMMDDTHHMMSSZ. */
void kiln_sigv4_format_amz_date (time_t t, char out[KILN_SIGV4_AMZ_DATE_LEN + 1]);
/* Parses YYYYMMDDTHHMMSSZ; KILN_ERR_INVALID when malformed. */
int kiln_sigv4_parse_amz_date (const char *s, time_t *out, kiln_error **err);

#endif
