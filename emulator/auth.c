/* auth.c - SigV4 verification policy for kiln-emulator (auth.h).
 *
 * common/sigv4.c recomputes signatures; this file decides what a valid
 * request is here: a known access key, a region and service kiln-emulator
 * serves, a date within EMU_CLOCK_SKEW_SECONDS of the server's clock (header
 * form) or a presigned URL not yet expired, and a payload hash that matches
 * the body received.  Messages follow AWS's wording where clients show it. */
#include "auth.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cleanup.h"
#include "digest.h"
#include "xalloc.h"

void
emu_auth_release (struct emu_auth *a)
{
  free (a->region);
  free (a->service);
  free (a->access_key_id);
  memset (a, 0, sizeof *a);
}

const char *
emu_request_header (const struct emu_request *req, const char *name)
{
  for (size_t i = 0; i < req->n_headers; i++)
    if (strcasecmp (req->headers[i].name, name) == 0)
      return req->headers[i].value;
  return NULL;
}

static enum emu_auth_failure
fail (char **message, enum emu_auth_failure kind, const char *fmt, ...) __attribute__ ((format (printf, 3, 4)));

static enum emu_auth_failure
fail (char **message, enum emu_auth_failure kind, const char *fmt, ...)
{
  va_list ap;
  va_start (ap, fmt);
  if (vasprintf (message, fmt, ap) < 0)
    abort ();
  va_end (ap);
  return kind;
}

static bool
is_hex64 (const char *s)
{
  if (strlen (s) != 64)
    return false;
  for (const char *p = s; *p; p++)
    if (kiln_hex_digit_value (*p) < 0)
      return false;
  return true;
}

enum emu_auth_failure
emu_auth_verify (struct kiln_emu *emu, const struct emu_request *req, time_t now, struct emu_auth *out,
                 char **message)
{
  memset (out, 0, sizeof *out);
  *message = NULL;
  struct kiln_sigv4_auth auth = {0};
  _cleanup_error_ kiln_error *err = NULL;
  _cleanup_error_ kiln_error *verr = NULL;

  const char *authorization = emu_request_header (req, "Authorization");
  if (authorization)
    {
      if (kiln_sigv4_parse_authorization (authorization, &auth, &err) < 0)
        return fail (message, EMU_AUTH_INCOMPLETE, "Authorization header requires 'Credential', 'Signature' and "
                     "'SignedHeaders' parameters with the AWS4-HMAC-SHA256 algorithm (%s).",
                     kiln_error_message (err));
    }
  else
    {
      int r = kiln_sigv4_parse_presigned (req->query, req->n_query, &auth, &err);
      if (r == 1)
        return fail (message, EMU_AUTH_MISSING, "Missing Authentication Token");
      if (r < 0)
        return fail (message, EMU_AUTH_INCOMPLETE, "The request signature does not conform to AWS standards: %s",
                     kiln_error_message (err));
    }

  out->access_key_id = kiln_xstrdup (auth.access_key_id);
  out->region = kiln_xstrdup (auth.region);
  out->service = kiln_xstrdup (auth.service);
  enum emu_auth_failure result = EMU_AUTH_OK;

  const struct emu_account *account = emu_account_by_key (emu, auth.access_key_id);
  if (account == NULL)
    {
      result = fail (message, EMU_AUTH_UNKNOWN_KEY, "The security token included in the request is invalid "
                     "(access key '%s' is not one of kiln-emulator's accounts).", auth.access_key_id);
      goto out;
    }
  if (!emu_region_known (auth.region))
    {
      result = fail (message, EMU_AUTH_BAD_SCOPE, "Credential should be scoped to a valid region, not '%s'.",
                     auth.region);
      goto out;
    }
  if (strcmp (auth.service, "ec2") != 0 && strcmp (auth.service, "ssm") != 0)
    {
      result = fail (message, EMU_AUTH_BAD_SCOPE, "Credential should be scoped to a service kiln-emulator "
                     "serves (ec2, ssm), not '%s'.", auth.service);
      goto out;
    }

  /* The date: header form's X-Amz-Date within the skew, presigned form's
   * date plus expiry still ahead. */
  const char *amz_date = auth.presigned ? auth.amz_date : emu_request_header (req, "X-Amz-Date");
  time_t signed_at;
  if (amz_date == NULL)
    {
      result = fail (message, EMU_AUTH_INCOMPLETE, "Authorization header requires existence of either a "
                     "'X-Amz-Date' or a 'Date' header.");
      goto out;
    }
  if (kiln_sigv4_parse_amz_date (amz_date, &signed_at, NULL) < 0)
    {
      result = fail (message, EMU_AUTH_INCOMPLETE, "Invalid X-Amz-Date '%s': expected YYYYMMDDTHHMMSSZ.", amz_date);
      goto out;
    }
  if (auth.presigned)
    {
      if (now > signed_at + auth.expires)
        {
          result = fail (message, EMU_AUTH_EXPIRED, "Request has expired (signed at %s for %ld seconds).", amz_date,
                         auth.expires);
          goto out;
        }
      if (signed_at > now + EMU_CLOCK_SKEW_SECONDS)
        {
          result = fail (message, EMU_AUTH_EXPIRED, "Request is not yet valid (signed at %s).", amz_date);
          goto out;
        }
    }
  else if (signed_at < now - EMU_CLOCK_SKEW_SECONDS || signed_at > now + EMU_CLOCK_SKEW_SECONDS)
    {
      char now_s[KILN_SIGV4_AMZ_DATE_LEN + 1];
      kiln_sigv4_format_amz_date (now, now_s);
      result = fail (message, EMU_AUTH_EXPIRED, "Signature expired: %s is now %s than %s (%s %s 15 min.)", amz_date,
                     signed_at < now ? "earlier" : "later", now_s, now_s, signed_at < now ? "-" : "+");
      goto out;
    }

  /* The payload: what the body hashes to; a client's x-amz-content-sha256
   * must agree with it (UNSIGNED-PAYLOAD is the client's choice to make). */
  char body_hash[KILN_SHA256_LEN * 2 + 1];
  kiln_sha256_hex (req->body ? req->body : "", req->body_len, body_hash);
  const char *claimed = emu_request_header (req, "X-Amz-Content-Sha256");
  const char *payload_hash = body_hash;
  if (claimed && !auth.presigned)
    {
      if (is_hex64 (claimed) && strcasecmp (claimed, body_hash) != 0)
        {
          result = fail (message, EMU_AUTH_BAD_PAYLOAD, "The provided 'x-amz-content-sha256' header does not "
                         "match what was computed.");
          goto out;
        }
      payload_hash = claimed;
    }

  /* Presigned: SDKs sign the body's hash for these services (S3 is the one
   * that signs UNSIGNED-PAYLOAD), so that is tried first, then the other. */
  struct kiln_sigv4_request sreq = {
    .method = req->method,
    .path = req->path,
    .query = req->query,
    .n_query = req->n_query,
    .headers = req->headers,
    .n_headers = req->n_headers,
    .payload_hash = payload_hash,
    .flags = kiln_sigv4_service_flags (auth.service),
  };
  struct kiln_sigv4_result computed = {0};
  int verified = kiln_sigv4_verify (&sreq, &auth, account->secret_access_key, &computed, &verr);
  if (verified < 0 && auth.presigned && verr && verr->code != KILN_ERR_INVALID)
    {
      kiln_sigv4_result_release (&computed);
      kiln_error_free (verr);
      verr = NULL;
      sreq.payload_hash = KILN_SIGV4_UNSIGNED_PAYLOAD;
      verified = kiln_sigv4_verify (&sreq, &auth, account->secret_access_key, &computed, &verr);
    }
  if (verified < 0)
    {
      if (verr && verr->code == KILN_ERR_INVALID)
        result = fail (message, EMU_AUTH_INCOMPLETE, "The request signature does not conform to AWS standards: %s",
                       kiln_error_message (verr));
      else
        result = fail (message, EMU_AUTH_MISMATCH, "The request signature we calculated does not match the "
                       "signature you provided. Check your AWS Secret Access Key and signing method. Consult the "
                       "service documentation for details.");
      kiln_sigv4_result_release (&computed);
      goto out;
    }
  kiln_sigv4_result_release (&computed);
  out->account = account;

out:
  kiln_sigv4_auth_release (&auth);
  return result;
}

void
emu_auth_error (enum emu_auth_failure kind, bool json, int *status, const char **code)
{
  switch (kind)
    {
    case EMU_AUTH_MISSING:
      *status = json ? 400 : 401;
      *code = json ? "MissingAuthenticationTokenException" : "MissingAuthenticationToken";
      return;
    case EMU_AUTH_INCOMPLETE:
      *status = 400;
      *code = json ? "IncompleteSignatureException" : "IncompleteSignature";
      return;
    case EMU_AUTH_UNKNOWN_KEY:
      *status = json ? 400 : 401;
      *code = json ? "UnrecognizedClientException" : "AuthFailure";
      return;
    case EMU_AUTH_MISMATCH:
      *status = json ? 400 : 403;
      *code = json ? "InvalidSignatureException" : "SignatureDoesNotMatch";
      return;
    case EMU_AUTH_EXPIRED:
      *status = 400;
      *code = json ? "InvalidSignatureException" : "RequestExpired";
      return;
    case EMU_AUTH_BAD_SCOPE:
      *status = json ? 400 : 401;
      *code = json ? "InvalidSignatureException" : "AuthFailure";
      return;
    case EMU_AUTH_BAD_PAYLOAD:
      *status = 400;
      *code = json ? "InvalidSignatureException" : "SignatureDoesNotMatch";
      return;
    case EMU_AUTH_OK:
      break;
    }
  *status = 500;
  *code = "InternalError";
}
