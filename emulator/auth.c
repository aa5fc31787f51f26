/* auth.c - SigV4 verification policy for kiln-emulator (auth.h).
 *
 * common/aws/sigv4.c recomputes signatures; this file decides what a valid
 * request is here: a known access key, a region and service kiln-emulator
 * serves, a date within EMU_CLOCK_SKEW_SECONDS of the server's clock (header
 * form) or a presigned URL not yet expired, and a payload hash that matches
 * the body received.  Messages follow AWS's wording where clients show it.
 *
 * S3 adds its own payload rules: header-signed requests must say what they
 * signed in x-amz-content-sha256 (a hex SHA-256, UNSIGNED-PAYLOAD, or one of
 * the aws-chunked STREAMING-* forms), and object data arrives in a file
 * (req->upload) whose raw hash and chunk signatures were checked while it
 * was received (emu_auth_stream_*, used by s3_upload.c). */
#include "auth.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cleanup.h"
#include "log.h"
#include "services.h"
#include "store.h"
#include "digest.h"
#include "xalloc.h"

#define STREAMING_UNSIGNED_TRAILER "STREAMING-UNSIGNED-PAYLOAD-TRAILER"
#define STREAMING_SIGNED_TRAILER "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER"

void
emu_auth_release (struct emu_auth *a)
{
  free (a->account);
  free (a->region);
  free (a->service);
  free (a->access_key_id);
  memset (a, 0, sizeof *a);
}

static enum emu_auth_failure
fail (char **message, enum emu_auth_failure kind, const char *fmt, ...) __attribute__ ((format (printf, 3, 4)));

static enum emu_auth_failure
fail (char **message, enum emu_auth_failure kind, const char *fmt, ...)
{
  va_list ap;
  va_start (ap, fmt);
  *message = kiln_xvasprintf (fmt, ap);
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

/* The credentials an access key names: an account's own (emulator.c), or
 * an STS session's (sts_sessions), with its token and expiry. */
struct credentials {
  char *account;
  char *secret;
  char *token;               /* NULL for an account's own key */
  time_t expires;
};

static void
credentials_release (struct credentials *c)
{
  free (c->account);
  free (c->secret);
  free (c->token);
}

#define _cleanup_credentials_ __attribute__ ((cleanup (credentials_release)))

static bool
credentials_find (struct kiln_emu *emu, const char *access_key_id, struct credentials *out)
{
  const struct emu_account *account = emu_account_by_key (emu, access_key_id);
  if (account)
    {
      out->account = kiln_xstrdup (account->id);
      out->secret = kiln_xstrdup (account->secret_access_key);
      return true;
    }
  /* Sessions' keys start ASIA, as AWS's temporary keys do: nothing else
   * costs a query. */
  if (emu->db == NULL || strncmp (access_key_id, "ASIA", 4) != 0)
    return false;
  _cleanup_error_ kiln_error *err = NULL;
  _cleanup_json_ json_t *row = emu_db_query_one (emu, &err, "SELECT account, secret, token, expires FROM "
                                                 "sts_sessions WHERE access_key_id = ?", access_key_id);
  if (row == NULL)
    {
      if (err)
        kiln_log_warn ("emulator: look up session key %s: %s", access_key_id, kiln_error_message (err));
      return false;
    }
  out->account = kiln_xstrdup (emu_row_str (row, "account"));
  out->secret = kiln_xstrdup (emu_row_str (row, "secret"));
  out->token = kiln_xstrdup (emu_row_str (row, "token"));
  out->expires = (time_t) emu_row_int (row, "expires");
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
  bool sigv2 = authorization ? strncmp (authorization, "AWS ", 4) == 0
                             : emu_request_query (req, "AWSAccessKeyId") != NULL && emu_request_query (req, "Signature") != NULL;
  out->presigned = authorization == NULL;
  if (sigv2)
    return fail (message, EMU_AUTH_UNSUPPORTED, "The authorization mechanism you have provided is not supported. "
                 "Please use AWS4-HMAC-SHA256.");
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
  out->presigned = auth.presigned;
  enum emu_auth_failure result = EMU_AUTH_OK;

  _cleanup_credentials_ struct credentials cred = {0};
  const char *token = emu_request_header (req, "X-Amz-Security-Token");
  if (token == NULL)
    token = emu_request_query (req, "X-Amz-Security-Token");
  if (!credentials_find (emu, auth.access_key_id, &cred))
    {
      result = fail (message, EMU_AUTH_UNKNOWN_KEY, "The security token included in the request is invalid "
                     "(access key '%s' is not one of kiln-emulator's accounts or sessions).", auth.access_key_id);
      goto out;
    }
  /* A session's key is good only with its own token, and only until it
   * expires; an account's own key takes no token (a signed garbage token
   * was once accepted). */
  if (cred.token == NULL && token)
    {
      result = fail (message, EMU_AUTH_UNKNOWN_KEY, "The security token included in the request is invalid "
                     "(access key '%s' is an account's own, which takes no session token).", auth.access_key_id);
      goto out;
    }
  if (cred.token && (token == NULL || strcmp (token, cred.token) != 0))
    {
      result = fail (message, EMU_AUTH_UNKNOWN_KEY, "The security token included in the request is invalid "
                     "(%s for the session of access key '%s').", token ? "not the token" : "no token",
                     auth.access_key_id);
      goto out;
    }
  if (cred.token && now >= cred.expires)
    {
      char when[32];
      emu_format_time (cred.expires, when);
      result = fail (message, EMU_AUTH_EXPIRED_TOKEN, "The security token included in the request is expired "
                     "(the session of access key '%s' ended at %s).", auth.access_key_id, when);
      goto out;
    }
  if (!emu_region_known (auth.region))
    {
      result = fail (message, EMU_AUTH_BAD_SCOPE, "Credential should be scoped to a valid region, not '%s'.",
                     auth.region);
      goto out;
    }
  if (emu_service_find (auth.service) == NULL)
    {
      struct kiln_buf names = KILN_BUF_INIT;
      for (size_t i = 0; emu_services[i]; i++)
        kiln_buf_printf (&names, "%s%s", i ? ", " : "", emu_services[i]->name);
      result = fail (message, EMU_AUTH_BAD_SCOPE, "Credential should be scoped to a service kiln-emulator "
                     "serves (%s), not '%s'.", kiln_buf_str (&names), auth.service);
      kiln_buf_release (&names);
      goto out;
    }
  bool s3 = strcmp (auth.service, "s3") == 0;

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

  /* Set when the body's chunks are signed and one of them (or the trailer)
   * was not; reported once the seed signature itself checked. */
  const char *stream_problem = NULL;
  const char *payload_hash = NULL;
  if (req->head_only)
    {
      /* Only the head has arrived.  A signature over a declared payload
       * hash (S3 and EBS say it in x-amz-content-sha256; S3's presigned
       * URLs sign UNSIGNED-PAYLOAD) is checked now, so no body is read for
       * a request that will be refused; EC2 and SSM sign the body's own
       * hash, checked once it is here. */
      const char *declared = emu_request_header (req, "X-Amz-Content-Sha256");
      bool may_declare = s3 || strcmp (auth.service, "ebs") == 0;
      if (auth.presigned)
        payload_hash = s3 ? KILN_SIGV4_UNSIGNED_PAYLOAD : NULL;
      else if (may_declare && declared
               && (is_hex64 (declared) || strcmp (declared, KILN_SIGV4_UNSIGNED_PAYLOAD) == 0
                   || strcmp (declared, KILN_SIGV4_STREAMING_PAYLOAD) == 0
                   || strcmp (declared, STREAMING_SIGNED_TRAILER) == 0
                   || strcmp (declared, STREAMING_UNSIGNED_TRAILER) == 0))
        payload_hash = declared;
      if (payload_hash == NULL)
        {
          out->account = kiln_xstrdup (cred.account);
          out->session = cred.token != NULL;
          goto out;
        }
      goto verify;
    }

  /* The payload: what the body hashes to; a client's x-amz-content-sha256
   * must agree with it (UNSIGNED-PAYLOAD is the client's choice to make).
   * Object data in a file was hashed as it arrived, when the request
   * signed a hash ("" otherwise).  A body is hashed only when something
   * compares with its hash: not for a request that signed UNSIGNED-PAYLOAD
   * or a streaming form (EBS's PutSnapshotBlock sends 512 KiB that way). */
  char body_hash[KILN_SHA256_LEN * 2 + 1] = "";
  /* A streamed body's object begins with its summary (emulator.h). */
  const struct emu_streamed_body *upload = (const struct emu_streamed_body *) req->upload;
  const char *claimed = emu_request_header (req, "X-Amz-Content-Sha256");
  /* Only S3 and EBS direct let a client leave its payload unsigned; EC2 and
   * SSM sign what the body hashes to, whatever a header claims (a body
   * swapped under UNSIGNED-PAYLOAD was once accepted). */
  bool unsigned_allowed = s3 || strcmp (auth.service, "ebs") == 0;
  if (upload)
    snprintf (body_hash, sizeof body_hash, "%s", upload->raw_sha256);
  else if (claimed == NULL || auth.presigned || is_hex64 (claimed) || !unsigned_allowed)
    kiln_sha256_hex (req->body ? req->body : "", req->body_len, body_hash);
  payload_hash = *body_hash ? body_hash : KILN_SIGV4_UNSIGNED_PAYLOAD;
  if (s3 && !auth.presigned)
    {
      if (claimed == NULL)
        {
          result = fail (message, EMU_AUTH_INCOMPLETE, "Missing required header for this request: "
                         "x-amz-content-sha256");
          goto out;
        }
      bool streaming_signed = strcmp (claimed, KILN_SIGV4_STREAMING_PAYLOAD) == 0
                              || strcmp (claimed, STREAMING_SIGNED_TRAILER) == 0;
      if (is_hex64 (claimed))
        {
          if (strcasecmp (claimed, body_hash) != 0)
            {
              result = fail (message, EMU_AUTH_BAD_PAYLOAD, "The provided 'x-amz-content-sha256' header does not "
                             "match what was computed.");
              goto out;
            }
        }
      else if (streaming_signed || strcmp (claimed, STREAMING_UNSIGNED_TRAILER) == 0)
        {
          if (upload == NULL || !upload->aws_chunked)
            {
              result = fail (message, EMU_AUTH_INCOMPLETE, "x-amz-content-sha256 %s is accepted with an "
                             "aws-chunked body (Content-Encoding: aws-chunked) of PutObject or UploadPart only.",
                             claimed);
              goto out;
            }
          if (streaming_signed && !upload->signatures_ok)
            stream_problem = "The chunk signature we calculated does not match the signature you provided.";
        }
      else if (strcmp (claimed, KILN_SIGV4_UNSIGNED_PAYLOAD) != 0)
        {
          result = fail (message, EMU_AUTH_INCOMPLETE, "x-amz-content-sha256 must be UNSIGNED-PAYLOAD, "
                         STREAMING_UNSIGNED_TRAILER ", " KILN_SIGV4_STREAMING_PAYLOAD ", "
                         STREAMING_SIGNED_TRAILER " or a valid sha256 value.");
          goto out;
        }
      payload_hash = claimed;
    }
  else if (claimed && !auth.presigned)
    {
      if (is_hex64 (claimed) && strcasecmp (claimed, body_hash) != 0)
        {
          result = fail (message, EMU_AUTH_BAD_PAYLOAD, "The provided 'x-amz-content-sha256' header does not "
                         "match what was computed.");
          goto out;
        }
      /* EBS: UNSIGNED-PAYLOAD is the client's to choose (PutSnapshotBlock);
       * elsewhere the signature must cover the body's hash. */
      if (unsigned_allowed && !is_hex64 (claimed) && strcmp (claimed, KILN_SIGV4_UNSIGNED_PAYLOAD) != 0)
        {
          result = fail (message, EMU_AUTH_INCOMPLETE, "x-amz-content-sha256 must be UNSIGNED-PAYLOAD or a valid "
                         "sha256 value.");
          goto out;
        }
      if (unsigned_allowed)
        payload_hash = claimed;
    }

  /* Presigned: SDKs sign the body's hash for these services (S3 is the one
   * that signs UNSIGNED-PAYLOAD), so that is tried first, then the other. */
verify:;
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
  int verified = kiln_sigv4_verify (&sreq, &auth, cred.secret, &computed, &verr);
  if (verified < 0 && auth.presigned && verr && verr->code != KILN_ERR_INVALID)
    {
      kiln_sigv4_result_release (&computed);
      kiln_error_free (verr);
      verr = NULL;
      sreq.payload_hash = KILN_SIGV4_UNSIGNED_PAYLOAD;
      verified = kiln_sigv4_verify (&sreq, &auth, cred.secret, &computed, &verr);
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
  if (stream_problem)
    {
      result = fail (message, EMU_AUTH_MISMATCH, "%s", stream_problem);
      goto out;
    }
  out->account = kiln_xstrdup (cred.account);
  out->session = cred.token != NULL;

out:
  kiln_sigv4_auth_release (&auth);
  return result;
}

/* ---- signed chunks ---- */

struct emu_stream_auth *
emu_auth_stream_begin (struct kiln_emu *emu, const struct emu_request *head)
{
  const char *authorization = emu_request_header (head, "Authorization");
  const char *amz_date = emu_request_header (head, "X-Amz-Date");
  if (authorization == NULL || amz_date == NULL || strlen (amz_date) != KILN_SIGV4_AMZ_DATE_LEN)
    return NULL;
  struct kiln_sigv4_auth auth = {0};
  _cleanup_error_ kiln_error *err = NULL;
  if (kiln_sigv4_parse_authorization (authorization, &auth, &err) < 0)
    return NULL;
  _cleanup_credentials_ struct credentials cred = {0};
  struct emu_stream_auth *s = NULL;
  if (credentials_find (emu, auth.access_key_id, &cred))
    {
      s = kiln_xcalloc (1, sizeof *s);
      kiln_sigv4_signing_key (cred.secret, auth.date, auth.region, auth.service, s->key);
      snprintf (s->amz_date, sizeof s->amz_date, "%s", amz_date);
      s->scope = kiln_xasprintf ("%s/%s/%s/aws4_request", auth.date, auth.region, auth.service);
      snprintf (s->previous, sizeof s->previous, "%s", auth.signature);
    }
  kiln_sigv4_auth_release (&auth);
  return s;
}

bool
emu_auth_stream_chunk (struct emu_stream_auth *s, const char *chunk_sha256_hex, const char *claimed)
{
  char sig[KILN_SHA256_LEN * 2 + 1];
  kiln_sigv4_chunk_signature (s->key, s->amz_date, s->scope, s->previous, chunk_sha256_hex, sig);
  bool ok = claimed && strcasecmp (sig, claimed) == 0;
  memcpy (s->previous, sig, sizeof sig);
  return ok;
}

bool
emu_auth_stream_trailer (struct emu_stream_auth *s, const char *trailer_sha256_hex, const char *claimed)
{
  _cleanup_free_ char *sts = NULL;
  sts = kiln_xasprintf (KILN_SIGV4_ALGORITHM "-TRAILER\n%s\n%s\n%s\n%s", s->amz_date, s->scope, s->previous,
                        trailer_sha256_hex);
  unsigned char mac[KILN_SHA256_LEN];
  kiln_hmac_sha256 (s->key, sizeof s->key, sts, strlen (sts), mac);
  char sig[KILN_SHA256_LEN * 2 + 1];
  kiln_hex_encode (mac, sizeof mac, sig);
  return claimed && strcasecmp (sig, claimed) == 0;
}

void
emu_auth_stream_free (struct emu_stream_auth *s)
{
  if (s == NULL)
    return;
  free (s->scope);
  free (s);
}
