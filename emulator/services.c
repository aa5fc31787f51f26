/* services.c - the table of kiln-emulator's services and the routing over
 * it (see services.h).  Each entry points at the service's own protocol
 * file; this file holds their claims, the one place that says which request
 * shape belongs to which service. */
#include "services.h"

#include <string.h>
#include <strings.h>

#include "ebs.h"
#include "ec2.h"
#include "s3.h"
#include "ssm.h"
#include "sts.h"

/* The Host header without its port, lower case compared. */
static bool
host_starts (const struct emu_request *req, const char *prefix)
{
  const char *host = emu_request_header (req, "Host");
  return host && strncasecmp (host, prefix, strlen (prefix)) == 0;
}

static bool
form_post (const struct emu_request *req)
{
  const char *type = emu_request_header (req, "Content-Type");
  return strcmp (req->method, "POST") == 0 && type
         && strncasecmp (type, "application/x-www-form-urlencoded", 33) == 0;
}

/* S3's host names: s3.*, s3-*.*, BUCKET.s3.* (virtual hosts). */
static bool
s3_host (const struct emu_request *req)
{
  const char *host = emu_request_header (req, "Host");
  return host && (strncasecmp (host, "s3.", 3) == 0 || strncasecmp (host, "s3-", 3) == 0 || strcasestr (host, ".s3."));
}

static enum emu_claim
ec2_claim (const struct emu_request *req)
{
  if (host_starts (req, "ec2.") && !s3_host (req))
    return EMU_CLAIM_ENDPOINT;
  return emu_request_query (req, "Action") != NULL || form_post (req) ? EMU_CLAIM_SHAPE : EMU_CLAIM_NONE;
}

static enum emu_claim
ssm_claim (const struct emu_request *req)
{
  if (host_starts (req, "ssm.") && !s3_host (req))
    return EMU_CLAIM_ENDPOINT;
  /* SSM is the one awsJson service here: any X-Amz-Target could be its
   * (and gets its UnknownOperationException when it is not). */
  const char *target = emu_request_header (req, "X-Amz-Target");
  if (target == NULL)
    return EMU_CLAIM_NONE;
  return strncmp (target, "AmazonSSM.", 10) == 0 ? EMU_CLAIM_SHAPE : EMU_CLAIM_FALLBACK;
}

static enum emu_claim
ebs_claim (const struct emu_request *req)
{
  if (host_starts (req, "ebs.") && !s3_host (req))
    return EMU_CLAIM_ENDPOINT;
  const char *p = req->path ? req->path : "";
  return strcmp (p, "/snapshots") == 0 || strncmp (p, "/snapshots/", 11) == 0 ? EMU_CLAIM_SHAPE : EMU_CLAIM_NONE;
}

static enum emu_claim
s3_claim (const struct emu_request *req)
{
  if (s3_host (req))
    return EMU_CLAIM_ENDPOINT;
  if (!emu_s3_unsigned_looks_like_s3 (req))
    return EMU_CLAIM_NONE;
  /* S3 alone makes clients say what they signed of the body. */
  return emu_request_header (req, "X-Amz-Content-Sha256") ? EMU_CLAIM_SHAPE : EMU_CLAIM_FALLBACK;
}

static enum emu_claim
sts_claim (const struct emu_request *req)
{
  if (host_starts (req, "sts.") && !s3_host (req))
    return EMU_CLAIM_ENDPOINT;
  /* The same Query shape as EC2's: STS takes it when its credential scope
   * says sts (EC2 keeps what nothing names). */
  return emu_request_query (req, "Action") != NULL || form_post (req) ? EMU_CLAIM_FALLBACK : EMU_CLAIM_NONE;
}

/* EC2 Query's and awsJson's names for an authentication failure. */
static void
auth_error_query_json (enum emu_auth_failure kind, bool json, int *status, const char **code)
{
  switch (kind)
    {
    case EMU_AUTH_MISSING:
      *status = json ? 400 : 401;
      *code = json ? "MissingAuthenticationTokenException" : "MissingAuthenticationToken";
      return;
    case EMU_AUTH_INCOMPLETE:
    case EMU_AUTH_UNSUPPORTED:
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
    case EMU_AUTH_EXPIRED_TOKEN:
      /* EC2 says RequestExpired for temporary credentials past their time. */
      *status = 400;
      *code = json ? "ExpiredTokenException" : "RequestExpired";
      return;
    case EMU_AUTH_OK:
      break;
    }
  *status = 500;
  *code = "InternalError";
}

static void
query_auth_error (enum emu_auth_failure kind, bool presigned, int *status, const char **code)
{
  (void) presigned;
  auth_error_query_json (kind, false, status, code);
}

static void
json_auth_error (enum emu_auth_failure kind, bool presigned, int *status, const char **code)
{
  (void) presigned;
  auth_error_query_json (kind, true, status, code);
}

/* EBS direct answers every SigV4 failure with 403. */
static void
ebs_auth_error (enum emu_auth_failure kind, bool presigned, int *status, const char **code)
{
  (void) presigned;
  auth_error_query_json (kind, true, status, code);
  *status = 403;
}

static const struct emu_service ssm_service = {
  .name = "ssm",
  .claim = ssm_claim,
  .serve = emu_ssm_serve,
  .error_reply = emu_ssm_error_reply,
  .auth_error = json_auth_error,
  .request_id_header = "x-amzn-RequestId",
  .start = ssm_start,
  .instance_ended = ssm_instance_ended,
};

static const struct emu_service ec2_service = {
  .name = "ec2",
  .claim = ec2_claim,
  .serve = emu_ec2_serve,
  .error_reply = emu_ec2_error_reply,
  .auth_error = query_auth_error,
  .request_id_header = "x-amzn-requestid",
  .start = ec2_start,
};

static const struct emu_service ebs_service = {
  .name = "ebs",
  .claim = ebs_claim,
  .serve = emu_ebs_serve,
  .error_reply = emu_ebs_error_reply,
  .auth_error = ebs_auth_error,
  .request_id_header = "x-amzn-RequestId",
  .tick = emu_ebs_expire,
};

static const struct emu_service s3_service = {
  .name = "s3",
  .claim = s3_claim,
  .serve = emu_s3_serve,
  .error_reply = emu_s3_error_reply,
  .auth_error = emu_s3_auth_error,
  .request_id_header = "x-amz-request-id",
  .body_streams = emu_s3_is_object_write,
  .body_begin = emu_upload_begin,
  .body_feed = emu_upload_feed,
  .body_finish = emu_upload_finish,
  .body_free = emu_upload_free,
  .start = s3_start,
  .store_object = s3_object_store_data,
};

static const struct emu_service sts_service = {
  .name = "sts",
  .claim = sts_claim,
  .serve = emu_sts_serve,
  .error_reply = emu_sts_error_reply,
  .auth_error = emu_sts_auth_error,
  .request_id_header = "x-amzn-RequestId",
};

const struct emu_service *const emu_services[] = {&ssm_service, &ec2_service, &ebs_service, &s3_service,
                                                  &sts_service, NULL};

const struct emu_service *
emu_service_route (const struct emu_request *req, const char *scope_service)
{
  enum emu_claim claims[sizeof emu_services / sizeof emu_services[0]];
  for (size_t i = 0; emu_services[i]; i++)
    {
      claims[i] = emu_services[i]->claim (req);
      if (claims[i] == EMU_CLAIM_ENDPOINT)
        return emu_services[i];
    }
  const struct emu_service *scoped = NULL;
  for (size_t i = 0; scope_service && emu_services[i]; i++)
    if (strcmp (emu_services[i]->name, scope_service) == 0)
      {
        if (claims[i] > EMU_CLAIM_NONE)
          return emu_services[i];
        scoped = emu_services[i];
      }
  const struct emu_service *best = &ec2_service;
  enum emu_claim best_claim = EMU_CLAIM_NONE;
  for (size_t i = 0; emu_services[i]; i++)
    if (claims[i] > best_claim)
      {
        best = emu_services[i];
        best_claim = claims[i];
      }
  /* A clear shape beats the scope; a mere fallback does not. */
  if (best_claim < EMU_CLAIM_SHAPE && scoped)
    return scoped;
  return best;
}

const struct emu_service *
emu_service_streaming (const struct emu_request *head)
{
  for (size_t i = 0; emu_services[i]; i++)
    if (emu_services[i]->body_streams && emu_services[i]->body_streams (head))
      return emu_services[i];
  return NULL;
}

const struct emu_service *
emu_service_find (const char *name)
{
  for (size_t i = 0; emu_services[i]; i++)
    if (strcmp (emu_services[i]->name, name) == 0)
      return emu_services[i];
  return NULL;
}

int
emu_services_start (struct kiln_emu *emu, kiln_error **err)
{
  for (size_t i = 0; emu_services[i]; i++)
    if (emu_services[i]->start && emu_services[i]->start (emu, err) < 0)
      return kiln_error_prefix (err, "start %s", emu_services[i]->name);
  return 0;
}

void
emu_services_instance_ended (struct kiln_emu *emu, const char *instance_id)
{
  for (size_t i = 0; emu_services[i]; i++)
    if (emu_services[i]->instance_ended)
      emu_services[i]->instance_ended (emu, instance_id);
}
