/* auth.h - SigV4 verification of every request kiln-emulator receives.
 *
 * A pure function of the request, the accounts and the clock: it names the
 * caller's account, the region and the service from the credential scope, or
 * says which way the request failed.  How a failure is spelled on the wire
 * differs by protocol (EC2's AuthFailure vs SSM's UnrecognizedClientException),
 * so each service maps the kind (emulator.h) to its code (services.h,
 * auth_error). */
#ifndef KILN_EMULATOR_AUTH_H
#define KILN_EMULATOR_AUTH_H

#include "emulator.h"


struct emu_auth {
  char *account;           /* the caller's account id, once its key is known */
  bool session;            /* temporary credentials (an STS session) */
  char *region;
  char *service;
  char *access_key_id;     /* as sent, also on failure when known */
  bool presigned;          /* signed in the query string */
};

void emu_auth_release (struct emu_auth *a);

/* Verifies req at time now.  On failure returns the kind and a message for
 * the reply in *message (malloc'd); out->service is filled whenever the
 * credential scope could be read, so the caller can pick the protocol. */
enum emu_auth_failure emu_auth_verify (struct kiln_emu *emu, const struct emu_request *req, time_t now,
                                       struct emu_auth *out, char **message);


/* ---- aws-chunked bodies with signed chunks (S3) ----
 *
 * A body sent with x-amz-content-sha256 STREAMING-AWS4-HMAC-SHA256-PAYLOAD
 * signs each chunk over the previous chunk's signature, the first over the
 * request's own (the seed).  The chunks arrive before the request is
 * answered, so the upload (s3_upload.c) checks them as they come with what
 * emu_auth_stream_begin derived from the request's head; emu_auth_verify
 * later checks the seed itself, and accepts a streaming request only when
 * every chunk checked. */
struct emu_stream_auth {
  unsigned char key[KILN_SHA256_LEN];
  char amz_date[KILN_SIGV4_AMZ_DATE_LEN + 1];
  char *scope;
  char previous[KILN_SHA256_LEN * 2 + 1];
};

/* NULL when head's signature cannot seed a chain (no Authorization header,
 * malformed, unknown access key, no X-Amz-Date); the chunks then cannot be
 * checked, and the request fails in emu_auth_verify. */
struct emu_stream_auth *emu_auth_stream_begin (struct kiln_emu *emu, const struct emu_request *head);
/* Whether claimed is the signature of the next chunk, whose data hashes to
 * chunk_sha256_hex; the chain moves on either way. */
bool emu_auth_stream_chunk (struct emu_stream_auth *s, const char *chunk_sha256_hex, const char *claimed);
/* Whether claimed is the signature of the trailer whose canonical text
 * ("name:value\n" per header) hashes to trailer_sha256_hex. */
bool emu_auth_stream_trailer (struct emu_stream_auth *s, const char *trailer_sha256_hex, const char *claimed);
void emu_auth_stream_free (struct emu_stream_auth *s);


#endif
