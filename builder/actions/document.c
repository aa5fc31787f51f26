/* document.c - ExecuteDocument: runs another component document, with its
 * own phases and parameters, inside the current run and on the same target.
 *
 * Validation already loaded documents named by literal paths (relative to
 * the naming document's folder), checked nesting (at most 3 levels below the
 * user's document) and cycles; a path built from expressions is loaded and
 * validated when the step runs.  The step's outputs are the nested run's
 * summary, and its detailedOutput the nested tree. */
#include <string.h>

#include "actions.h"
#include "cleanup.h"
#include "executor.h"

static const struct kiln_input_field document_fields[] = {
  {"document", KILN_IN_STRING, true},
  {"document-s3-bucket-owner", KILN_IN_STRING, false},
  {"phases", KILN_IN_STRING, false},
  {"parameters", KILN_IN_NAME_VALUES, false},
  {NULL, 0, false},
};

static const char *const document_outputs[] = {"executedStepCount", "executionId", "failedStepCount",
                                               "failureMessage", "ignoredFailedStepCount", "status", NULL};

static int
execute_document_run (struct kiln_action_ctx *ctx, kiln_error **err)
{
  const char *document = NULL, *phases = NULL, *owner = NULL;
  if (kiln_input_required_string (ctx->inputs, "document", NULL, &document, err) < 0
      || kiln_input_string (ctx->inputs, "phases", NULL, &phases, err) < 0
      || kiln_input_string (ctx->inputs, "document-s3-bucket-owner", NULL, &owner, err) < 0)
    return -1;
  if (owner && *owner)
    return kiln_error_set (err, KILN_ERR_UNSUPPORTED, 0,
                           "document-s3-bucket-owner applies to S3 documents, which ExecuteDocument does not fetch");
  json_t *parameters = json_object_get (ctx->inputs, "parameters");
  _cleanup_json_ json_t *summary = NULL;
  _cleanup_json_ json_t *detail = NULL;
  int r = kiln_executor_run_nested (ctx->executor, ctx->component, ctx->depth, document, phases, parameters, &summary,
                                    &detail, err);
  if (summary)
    {
      const char *key;
      json_t *v;
      json_object_foreach (summary, key, v)
      {
        if (strcmp (key, "logUrl") == 0)
          continue;
        if (json_is_string (v))
          json_object_set (ctx->outputs, key, v);
        else
          json_object_set_new (ctx->outputs, key, json_sprintf ("%" JSON_INTEGER_FORMAT, json_integer_value (v)));
      }
    }
  if (detail)
    ctx->detail = json_incref (detail);
  return r;
}

const struct kiln_action kiln_action_execute_document = {
  .name = "ExecuteDocument",
  .shape = KILN_INPUTS_MAP,
  .fields = document_fields,
  .outputs = document_outputs,
  .run = execute_document_run,
};
