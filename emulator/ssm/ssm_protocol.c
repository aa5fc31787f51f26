/* ssm_protocol.c - awsJson1_1 as SSM speaks it: POST / with
 * X-Amz-Target: AmazonSSM.<Operation> and a JSON object body; the reply is a
 * JSON object, an error is {"__type": code, "message": text} with its HTTP
 * status.  Handlers read c->input and fill c->output. */
#include "ssm.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "auth.h"
#include "cleanup.h"
#include "xalloc.h"

#define SSM_TARGET_PREFIX "AmazonSSM."

static const struct emu_operation *const ssm_tables[] = {
  emu_ssm_command_ops, emu_ssm_parameter_ops, NULL,
};

void
emu_ssm_error_reply (struct emu_call *c, struct emu_response *resp)
{
  _cleanup_json_ json_t *body = json_pack ("{s:s, s:s}", "__type", c->error_code, "message",
                                           c->error_message ? c->error_message : "");
  _cleanup_free_ char *text = json_dumps (body, JSON_COMPACT);
  kiln_buf_reset (&resp->body);
  kiln_buf_puts (&resp->body, text);
  resp->status = c->error_status;
  free (resp->content_type);
  resp->content_type = kiln_xstrdup ("application/x-amz-json-1.1");
}

void
emu_ssm_serve (struct emu_call *c, struct emu_response *resp)
{
  const char *target = emu_request_header (c->req, "X-Amz-Target");
  if (strcmp (c->req->method, "POST") != 0)
    {
      emu_fail (c, 400, "UnknownOperationException", "SSM is served by POST /, not %s.", c->req->method);
      goto out;
    }
  if (target == NULL || strncmp (target, SSM_TARGET_PREFIX, strlen (SSM_TARGET_PREFIX)) != 0)
    {
      emu_fail (c, 400, "UnknownOperationException", "X-Amz-Target '%s' does not name an SSM operation "
                "(AmazonSSM.<Operation>).", target ? target : "");
      goto out;
    }
  c->operation = target + strlen (SSM_TARGET_PREFIX);
  emu_handler_fn fn = emu_operation_find (ssm_tables, c->operation);
  if (fn == NULL)
    {
      emu_fail (c, 400, "UnknownOperationException", "The operation %s is not one kiln-emulator's SSM serves.",
                c->operation);
      goto out;
    }
  json_error_t jerr;
  c->input = c->req->body_len ? json_loadb (c->req->body, c->req->body_len, 0, &jerr) : json_object ();
  if (c->input == NULL)
    {
      emu_fail (c, 400, "SerializationException", "The request body is not JSON: line %d column %d: %s",
                jerr.line, jerr.column, jerr.text);
      goto out;
    }
  if (!json_is_object (c->input))
    {
      emu_fail (c, 400, "SerializationException", "The request body must be a JSON object.");
      goto out;
    }
  c->output = json_object ();
  if (fn (c) < 0 || c->error_code)
    {
      if (c->error_code == NULL)
        emu_fail (c, 500, "InternalServerError", "%s failed without saying why", c->operation);
      goto out;
    }
  {
    _cleanup_free_ char *text = json_dumps (c->output, JSON_COMPACT);
    kiln_buf_puts (&resp->body, text);
  }
  resp->status = 200;
  resp->content_type = kiln_xstrdup ("application/x-amz-json-1.1");

out:
  if (c->error_code)
    emu_ssm_error_reply (c, resp);
  json_decref (c->input);
  json_decref (c->output);
  c->input = c->output = NULL;
}
