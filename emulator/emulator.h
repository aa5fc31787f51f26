/* emulator.h - kiln-emulator's core: one request in, one response out.
 *
 * The HTTP server (server.c) turns what libmicrohttpd received into a
 * `struct emu_request` and hands it to kiln_emu_handle() (dispatch.h), which
 * is the whole emulator as a function: SigV4 verification (auth.c) names the
 * account, region and service; the service from the table (services.h)
 * decodes the operation's parameters and finds the handler in its table;
 * the handler reads and writes the state store (store.c) and queues slow
 * work (jobs.h), on instances that really run through the VM host
 * (vmhost.c).  This header holds the types every part shares and the
 * helpers emulator.c implements for all of them.
 *
 * Every handler sees a `struct emu_call`: who is calling (account, region),
 * the decoded input, and where the output goes.  A handler fails with
 * emu_fail(), which records the AWS error code, HTTP status and message the
 * protocol encodes in its own error shape. */
#ifndef KILN_EMULATOR_EMULATOR_H
#define KILN_EMULATOR_EMULATOR_H

#include <jansson.h>
#include <libxml/xmlwriter.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdbool.h>
#include <stddef.h>
#include <time.h>

#include "buf.h"
#include "error.h"
#include "sigv4.h"

#define EMU_DEFAULT_LISTEN "127.0.0.1:4566"
/* Largest request body accepted (EC2's own limit on a Query request is far
 * below; UserData is at most 16 KiB). */
#define EMU_MAX_BODY (10u * 1024 * 1024)
/* SigV4: requests dated further than this from the server's clock fail. */
#define EMU_CLOCK_SKEW_SECONDS (15 * 60)

struct emu_account {
  char *id;                 /* 12 digits */
  char *access_key_id;
  char *secret_access_key;
};

enum emu_instances_mode {
  EMU_INSTANCES_MOCK,       /* API only: no guests, commands fail clearly */
  EMU_INSTANCES_QEMU,       /* every instance is a QEMU guest (drivers/qemu) */
};

struct emu_jobs;

struct kiln_emu {
  struct emu_account *accounts;
  size_t n_accounts;
  char *state_dir;          /* NULL: state in memory, nothing on disk but guests' disks */
  char *data_dir;           /* disks and instance directories: state_dir, or a temporary one */
  bool own_data_dir;        /* data_dir is temporary and removed at exit */
  enum emu_instances_mode instances;
  const char *accel;        /* qemu instances: --accel (NULL: $KILN_ACCEL, else auto) */
  const char *cpu_model;    /* and --cpu (NULL: the accelerator's model) */
  time_t fixed_now;         /* tests: the clock; 0 = real time */
  unsigned long long id_seed; /* tests: deterministic ids when non-zero */

  sqlite3 *db;
  pthread_mutex_t db_lock;  /* one connection, serialized */
  struct emu_jobs *jobs;    /* background work's queues (jobs.c) */
  bool s3_ready;            /* S3's data directories made, leftovers removed (s3_data.c) */
};

struct emu_upload;

/* How a request failed authentication (auth.c decides; each service names
 * it in its own terms, services.h auth_error). */
enum emu_auth_failure {
  EMU_AUTH_OK,
  EMU_AUTH_MISSING,        /* no Authorization header and no X-Amz-Signature */
  EMU_AUTH_INCOMPLETE,     /* malformed Authorization, missing date or signed header */
  EMU_AUTH_UNKNOWN_KEY,    /* the access key is nobody's */
  EMU_AUTH_MISMATCH,       /* the signature is not the one the secret gives */
  EMU_AUTH_EXPIRED,        /* dated too far from now, or a presigned URL past its expiry */
  EMU_AUTH_BAD_SCOPE,      /* a region or service this emulator does not serve */
  EMU_AUTH_BAD_PAYLOAD,    /* x-amz-content-sha256 does not match the body */
  EMU_AUTH_UNSUPPORTED,    /* signed another way than SigV4 (SigV2: "AWS key:sig", AWSAccessKeyId=) */
  EMU_AUTH_EXPIRED_TOKEN,  /* temporary credentials (an STS session) past their expiration */
};

/* What authentication needs of a body a service took as it arrived
 * (services.h, body_* slots).  A service's upload object begins with one
 * (its first member), so the core reads it without knowing the service. */
struct emu_streamed_body {
  char raw_sha256[65];       /* hex SHA-256 of the raw body when the request
                              * signed one, else "" */
  bool aws_chunked;          /* Content-Encoding has aws-chunked */
  bool signatures_ok;        /* signed chunks: every chunk (and trailer) so far checked */
};

/* A request as received.  Path and query are decoded; header names keep the
 * case they were sent in. */
struct emu_request {
  const char *method;
  const char *path;
  /* The query string as sent (after '?', still encoded), or NULL when the
   * request has none; query is its decoding. */
  const char *raw_query;
  const struct kiln_sigv4_pair *query;
  size_t n_query;
  const struct kiln_sigv4_pair *headers;
  size_t n_headers;
  const char *body;
  size_t body_len;
  /* S3 object data (PutObject, UploadPart) is not in body: server.c
   * streams it into a file as it arrives (s3.h); NULL otherwise. */
  struct emu_upload *upload;
  /* Only the head has arrived (server.c asks before reading a body):
   * authentication decides what the head alone can (key, scope, date, and
   * signatures over a declared payload hash), and nothing is served. */
  bool head_only;
};

struct emu_response {
  int status;
  char *content_type;       /* malloc'd */
  struct kiln_buf body;
  struct kiln_sigv4_pair *headers; /* extra headers, malloc'd names and values */
  size_t n_headers;
  /* When body_from_file: the body is body_length bytes of body_fd from
   * body_offset, sent without being read into memory (S3 GetObject); the
   * response owns the descriptor. */
  bool body_from_file;
  int body_fd;
  unsigned long long body_offset;
  unsigned long long body_length;
};

void emu_response_release (struct emu_response *r);
void emu_response_add_header (struct emu_response *r, const char *name, const char *value);

/* ---- one call to an operation ---- */

struct emu_param {
  char *name;
  char *value;
};

struct emu_call {
  struct kiln_emu *emu;
  const struct emu_request *req;
  const char *account;      /* the caller's account id */
  const char *region;       /* from the credential scope */
  bool session;             /* signed with an STS session's temporary credentials */
  const char *service;      /* signing name: "ec2", "ssm" */
  const char *operation;    /* "RunInstances", "SendCommand" */
  char request_id[37];
  time_t now;

  /* EC2 Query input: decoded form/query parameters, sorted by name. */
  struct emu_param *params;
  size_t n_params;
  /* EC2 output: the writer is inside <OperationResponse>, after <requestId>. */
  xmlTextWriterPtr xml;

  /* awsJson1_1 input (an object, never NULL) and output (an object the
   * handler fills; starts empty). */
  json_t *input;
  json_t *output;

  /* Set by emu_fail. */
  int error_status;
  char *error_code;
  char *error_message;
  /* rest-json (EBS direct): the error's Reason, a string literal or NULL;
   * set with the error by ebs_fail. */
  const char *error_reason;
};

/* Records an AWS error (HTTP status, code such as "InvalidInstanceID.NotFound",
 * message) on the call and returns -1.  The first error recorded wins. */
int emu_fail (struct emu_call *c, int status, const char *code, const char *fmt, ...)
    __attribute__ ((format (printf, 4, 5)));
/* The common case: 400 InvalidParameterValue. */
#define emu_fail_param(c, ...) emu_fail ((c), 400, "InvalidParameterValue", __VA_ARGS__)
/* An internal problem (database, disk): 500 InternalError with err's message. */
int emu_fail_internal (struct emu_call *c, kiln_error *err);

typedef int (*emu_handler_fn) (struct emu_call *c);

struct emu_operation {
  const char *name;
  emu_handler_fn fn;
};

/* Each service's operations are tables of these, ended by {NULL, NULL}
 * (ec2/ec2.h, ssm/ssm.h); its serve and error reply are in its header, and
 * its entry in services.c. */
/* The handler of operation name in tables (NULL-terminated list of
 * {NULL, NULL}-ended tables), or NULL. */
emu_handler_fn emu_operation_find (const struct emu_operation *const *tables, const char *name);

/* ---- form encoding (EC2 Query; the core checks a query string with it) ---- */

/* Splits form-encoded text ('+' is a space) into c->params, failing the
 * call with MalformedQueryString on a pair without a name or a broken
 * %-escape; emu_params_free releases them. */
int emu_form_parse (struct emu_call *c, const char *text, size_t len);
/* Appends a parameter (name and value malloc'd, owned by the call). */
void emu_params_add (struct emu_call *c, char *name, char *value);
void emu_params_free (struct emu_call *c);

/* ---- the request (request.c) ---- */

/* A header's value (case-insensitive name), or NULL. */
const char *emu_request_header (const struct emu_request *req, const char *name);
/* The value of query parameter name ("" when it has none), or NULL. */
const char *emu_request_query (const struct emu_request *req, const char *name);

/* ---- shared helpers (emulator.c) ---- */

time_t emu_now (struct kiln_emu *emu);
/* emu_now as decimal seconds, the form the store keeps times in. */
void emu_now_text (struct kiln_emu *emu, char out[24]);
/* "i-0123456789abcdef0": prefix, '-', 17 lowercase hex digits; malloc'd. */
char *emu_new_id (struct kiln_emu *emu, const char *prefix);
/* n random bytes (deterministic under a test id_seed). */
void emu_random_bytes (struct kiln_emu *emu, unsigned char *out, size_t n);
/* A random UUID (request ids, command ids) into out[37]. */
void emu_new_uuid (struct kiln_emu *emu, char out[37]);
/* ISO 8601 UTC with milliseconds, as EC2 writes times: 2026-11-24T10:00:00.000Z. */
void emu_format_time (time_t t, char out[32]);

/* Accounts: the one an access key belongs to, or NULL. */
const struct emu_account *emu_account_by_key (struct kiln_emu *emu, const char *access_key_id);
bool emu_account_exists (struct kiln_emu *emu, const char *account_id);
/* Loads --accounts FILE, or the default test/test and test2/test2 accounts
 * when path is NULL. */
int emu_accounts_load (struct kiln_emu *emu, const char *path, kiln_error **err);

/* Regions kiln-emulator serves (NULL-terminated) and whether name is one. */
extern const char *const emu_regions[];
bool emu_region_known (const char *name);

#endif
