/* sts_protocol.c - STS on awsQuery (sts.h): the form parameters read as
 * EC2 Query reads them (query.h), replies wrapped as awsQuery wraps them,
 * errors in awsQuery's <ErrorResponse> (not EC2's <Response><Errors>).
 *
 * The operations are a table, as every service's are: GetCallerIdentity,
 * the call infrastructure tools (Terraform, the CDK, `aws sts
 * get-caller-identity`) make first to learn the account they act in, and
 * GetSessionToken, temporary credentials (sts_sessions) that auth.c
 * accepts for every service with their session token until they expire. */
#include "sts.h"

#include <libxml/xmlwriter.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cleanup.h"
#include "digest.h"
#include "query.h"
#include "store.h"
#include "xalloc.h"
#include "xml_doc.h"

#define STS_XMLNS "https://sts.amazonaws.com/doc/2011-06-15/"
#define STS_VERSION "2011-06-15"

/* The caller: an account's root user (kiln-emulator's credentials are its
 * accounts' own). */
static int
get_caller_identity (struct emu_call *c)
{
  _cleanup_free_ char *arn = kiln_xasprintf ("arn:aws:iam::%s:root", c->account);
  emu_xml_text (c, "Arn", arn);
  emu_xml_text (c, "UserId", c->account);
  emu_xml_text (c, "Account", c->account);
  return 0;
}

/* Root users' sessions last an hour at most, whatever DurationSeconds says
 * (AWS's rule for account owners); IAM users' bounds are checked anyway. */
#define SESSION_MIN_SECONDS 900
#define SESSION_MAX_SECONDS 129600
#define ROOT_SESSION_MAX_SECONDS 3600
/* Ended sessions are forgotten a day after their end. */
#define SESSION_FORGET_AFTER 86400

/* "ASIA" and 16 characters of AWS's key alphabet (A-Z, 2-7). */
static void
new_session_key (struct kiln_emu *emu, char out[21])
{
  static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
  unsigned char bytes[16];
  emu_random_bytes (emu, bytes, sizeof bytes);
  memcpy (out, "ASIA", 4);
  for (size_t i = 0; i < 16; i++)
    out[4 + i] = alphabet[bytes[i] % 32];
  out[20] = '\0';
}

static char *
random_base64 (struct kiln_emu *emu, size_t n)
{
  unsigned char bytes[120];
  emu_random_bytes (emu, bytes, n);
  return kiln_base64_encode (bytes, n);
}

/* Temporary credentials of the caller's account, good for DurationSeconds
 * (an hour at most for the root user every kiln-emulator account signs
 * as); every service accepts them with their session token (auth.c). */
static int
get_session_token (struct emu_call *c)
{
  if (c->session)
    return emu_fail (c, 403, "AccessDenied", "Cannot call GetSessionToken with session credentials");
  if (emu_param (c, "SerialNumber") || emu_param (c, "TokenCode"))
    return emu_fail (c, 403, "AccessDenied", "MultiFactorAuthentication failed: kiln-emulator's accounts have no "
                     "MFA devices, so SerialNumber and TokenCode cannot be checked.");
  long long duration;
  const char *given = emu_param (c, "DurationSeconds");
  if (given && emu_param_int (c, "DurationSeconds", 0, LLONG_MIN, LLONG_MAX, &duration) < 0)
    return -1;
  if (given && (duration < SESSION_MIN_SECONDS || duration > SESSION_MAX_SECONDS))
    return emu_fail (c, 400, "ValidationError", "1 validation error detected: Value '%lld' at 'durationSeconds' "
                     "failed to satisfy constraint: Member must have value %s %d", duration,
                     duration < SESSION_MIN_SECONDS ? "greater than or equal to" : "less than or equal to",
                     duration < SESSION_MIN_SECONDS ? SESSION_MIN_SECONDS : SESSION_MAX_SECONDS);
  if (!given || duration > ROOT_SESSION_MAX_SECONDS)
    duration = ROOT_SESSION_MAX_SECONDS;

  char key[21];
  new_session_key (c->emu, key);
  _cleanup_free_ char *secret = random_base64 (c->emu, 30);
  _cleanup_free_ char *token = random_base64 (c->emu, 120);
  char expires[24], created[24], forget[24];
  snprintf (expires, sizeof expires, "%lld", (long long) c->now + duration);
  snprintf (created, sizeof created, "%lld", (long long) c->now);
  snprintf (forget, sizeof forget, "%lld", (long long) c->now - SESSION_FORGET_AFTER);
  _cleanup_error_ kiln_error *err = NULL;
  if (emu_db_exec (c->emu, &err, "DELETE FROM sts_sessions WHERE expires < ?", forget) < 0
      || emu_db_exec (c->emu, &err, "INSERT INTO sts_sessions (access_key_id, secret, token, account, expires, "
                      "created) VALUES (?, ?, ?, ?, ?, ?)", key, secret, token, c->account, expires, created) < 0)
    return emu_fail_internal (c, err);
  emu_xml_start (c, "Credentials");
  emu_xml_text (c, "AccessKeyId", key);
  emu_xml_text (c, "SecretAccessKey", secret);
  emu_xml_text (c, "SessionToken", token);
  emu_xml_time (c, "Expiration", c->now + duration);
  emu_xml_end (c);
  return 0;
}

static const struct emu_operation sts_ops[] = {
  {"GetCallerIdentity", get_caller_identity},
  {"GetSessionToken", get_session_token},
  {NULL, NULL},
};

static const struct emu_operation *const sts_tables[] = {sts_ops, NULL};

void
emu_sts_error_reply (struct emu_call *c, struct emu_response *resp)
{
  xmlBufferPtr buf;
  xmlTextWriterPtr w = emu_xml_document_begin (&buf);
  xmlTextWriterStartElement (w, BAD_CAST "ErrorResponse");
  xmlTextWriterWriteAttribute (w, BAD_CAST "xmlns", BAD_CAST STS_XMLNS);
  xmlTextWriterStartElement (w, BAD_CAST "Error");
  xmlTextWriterWriteElement (w, BAD_CAST "Type", BAD_CAST (c->error_status >= 500 ? "Receiver" : "Sender"));
  xmlTextWriterWriteElement (w, BAD_CAST "Code", BAD_CAST c->error_code);
  kiln_xml_write_text_element (w, "Message", c->error_message ? c->error_message : "");
  xmlTextWriterEndElement (w);
  xmlTextWriterWriteElement (w, BAD_CAST "RequestId", BAD_CAST c->request_id);
  xmlTextWriterEndElement (w);
  emu_xml_document_finish (w, buf, resp, c->error_status, "text/xml");
}

void
emu_sts_serve (struct emu_call *c, struct emu_response *resp)
{
  if (emu_query_decode (c, "STS Query") < 0)
    goto out;
  const char *action = emu_param (c, "Action");
  if (action == NULL || *action == '\0')
    {
      emu_fail (c, 400, "MissingAction", "The request must contain the parameter Action.");
      goto out;
    }
  c->operation = action;
  const char *version = emu_param (c, "Version");
  emu_handler_fn fn = emu_operation_find (sts_tables, action);
  if (fn == NULL || (version && strcmp (version, STS_VERSION) != 0))
    {
      emu_fail (c, 400, "InvalidAction", "Could not find operation %s for version %s.", action,
                version ? version : "NO_VERSION_SPECIFIED");
      goto out;
    }

  static const struct emu_query_style sts_style = {
    .xmlns = STS_XMLNS, .result_wrapper = true, .content_type = "text/xml", .internal_code = "InternalFailure",
  };
  emu_query_run (c, resp, action, fn, &sts_style);

out:
  if (c->error_code)
    emu_sts_error_reply (c, resp);
  emu_params_free (c);
}

void
emu_sts_auth_error (enum emu_auth_failure kind, bool presigned, int *status, const char **code)
{
  (void) presigned;
  *status = 403;
  switch (kind)
    {
    case EMU_AUTH_MISSING:
      *code = "MissingAuthenticationToken";
      return;
    case EMU_AUTH_INCOMPLETE:
    case EMU_AUTH_UNSUPPORTED:
      *status = 400;
      *code = "IncompleteSignature";
      return;
    case EMU_AUTH_UNKNOWN_KEY:
      *code = "InvalidClientTokenId";
      return;
    case EMU_AUTH_EXPIRED_TOKEN:
      *code = "ExpiredToken";
      return;
    case EMU_AUTH_MISMATCH:
    case EMU_AUTH_EXPIRED:
    case EMU_AUTH_BAD_SCOPE:
    case EMU_AUTH_BAD_PAYLOAD:
      *code = "SignatureDoesNotMatch";
      return;
    case EMU_AUTH_OK:
      break;
    }
  *status = 500;
  *code = "InternalFailure";
}
