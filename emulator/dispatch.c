/* dispatch.c - kiln-emulator's front door (dispatch.h): kiln_emu_handle()
 * verifies a request's signature (auth.c), picks its service from the
 * table (services.h) and hands the call to that service; and the start and
 * stop of what runs beside requests (the VM host, the services' start
 * slots).
 *
 * Which error shape an unauthenticated request gets is the service's the
 * request routes to (its endpoint or its shape, else its scope): a request
 * carrying X-Amz-Target speaks awsJson1_1, a scope naming ebs gets
 * rest-json, S3's requests S3's XML, anything else EC2 Query. */
#include "dispatch.h"

#include <stdlib.h>
#include <string.h>

#include "auth.h"
#include "cleanup.h"
#include "log.h"
#include "services.h"
#include "vmhost.h"
#include "xalloc.h"

void
kiln_emu_handle (struct kiln_emu *emu, const struct emu_request *req, struct emu_response *resp)
{
  memset (resp, 0, sizeof *resp);
  struct emu_call c = {.emu = emu, .req = req, .now = emu_now (emu)};
  emu_new_uuid (emu, c.request_id);

  /* A query string that is not form encoding is refused as such before
   * its signature (computed over bytes that mean nothing) is checked. */
  struct emu_auth auth = {0};
  _cleanup_free_ char *message = NULL;
  bool query_ok = req->raw_query == NULL || emu_form_parse (&c, req->raw_query, strlen (req->raw_query)) == 0;
  emu_params_free (&c);
  enum emu_auth_failure kind = query_ok ? emu_auth_verify (emu, req, c.now, &auth, &message) : EMU_AUTH_OK;
  /* The service is the request's (its endpoint, or its shape), not merely
   * what its signature names (services.h); a scope for another service is
   * then that service's signature error. */
  const struct emu_service *service = emu_service_route (req, auth.service);
  if (query_ok && kind == EMU_AUTH_OK && strcmp (auth.service, service->name) != 0)
    {
      free (message);
      message = kiln_xasprintf ("Credential should be scoped to correct service: '%s', not '%s'.", service->name,
                                auth.service);
      kind = EMU_AUTH_BAD_SCOPE;
    }
  if (!query_ok)
    kiln_log_debug ("emulator: %s %s refused: %s", req->method, req->path, c.error_message);
  else if (kind != EMU_AUTH_OK)
    {
      int status;
      const char *code;
      service->auth_error (kind, auth.presigned, &status, &code);
      emu_fail (&c, status, code, "%s", message);
      kiln_log_debug ("emulator: %s %s refused: %s: %s", req->method, req->path, code, message);
    }
  else if (req->head_only)
    {
      /* The head passed what it can be checked for: the body may come. */
      emu_auth_release (&auth);
      return;
    }
  else
    {
      c.account = auth.account;
      c.session = auth.session;
      c.region = auth.region;
      c.service = auth.service;
      for (size_t i = 0; emu_services[i]; i++)
        if (emu_services[i]->tick)
          emu_services[i]->tick (emu, c.now);
      service->serve (&c, resp);
    }
  if (c.error_code && resp->status == 0)
    service->error_reply (&c, resp);
  emu_response_add_header (resp, service->request_id_header, c.request_id);
  free (c.error_code);
  free (c.error_message);
  emu_auth_release (&auth);
}

/* ---- start and stop ---- */

int
emu_start (struct kiln_emu *emu, kiln_error **err)
{
  if (emu_vmhost_init (emu, err) < 0 || emu_services_start (emu, err) < 0)
    return -1;
  return 0;
}

void
emu_stop (struct kiln_emu *emu)
{
  emu_vmhost_shutdown (emu);
}

