/* auth.h - SigV4 verification of every request kiln-emulator receives.
 *
 * A pure function of the request, the accounts and the clock: it names the
 * caller's account, the region and the service from the credential scope, or
 * says which way the request failed.  How a failure is spelled on the wire
 * differs by protocol (EC2's AuthFailure vs SSM's UnrecognizedClientException),
 * so the protocol maps the kind to its code (emu_auth_error). */
#ifndef KILN_EMULATOR_AUTH_H
#define KILN_EMULATOR_AUTH_H

#include "emulator.h"

enum emu_auth_failure {
  EMU_AUTH_OK,
  EMU_AUTH_MISSING,        /* no Authorization header and no X-Amz-Signature */
  EMU_AUTH_INCOMPLETE,     /* malformed Authorization, missing date or signed header */
  EMU_AUTH_UNKNOWN_KEY,    /* the access key is nobody's */
  EMU_AUTH_MISMATCH,       /* the signature is not the one the secret gives */
  EMU_AUTH_EXPIRED,        /* dated too far from now, or a presigned URL past its expiry */
  EMU_AUTH_BAD_SCOPE,      /* a region or service this emulator does not serve */
  EMU_AUTH_BAD_PAYLOAD,    /* x-amz-content-sha256 does not match the body */
};

struct emu_auth {
  const struct emu_account *account;
  char *region;
  char *service;
  char *access_key_id;     /* as sent, also on failure when known */
};

void emu_auth_release (struct emu_auth *a);

/* Verifies req at time now.  On failure returns the kind and a message for
 * the reply in *message (malloc'd); out->service is filled whenever the
 * credential scope could be read, so the caller can pick the protocol. */
enum emu_auth_failure emu_auth_verify (struct kiln_emu *emu, const struct emu_request *req, time_t now,
                                       struct emu_auth *out, char **message);

/* How a protocol spells a failure: json selects awsJson1_1's codes (SSM),
 * else EC2 Query's. */
void emu_auth_error (enum emu_auth_failure kind, bool json, int *status, const char **code);

/* A header's value (case-insensitive name), or NULL. */
const char *emu_request_header (const struct emu_request *req, const char *name);

#endif
