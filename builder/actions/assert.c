/* assert.c - Assert: the step's inputs are one comparison or logical
 * expression (the same language as a step's `if`); the step succeeds when it
 * is true and fails otherwise, so onFailure and maxAttempts apply as usual. */
#include "actions.h"
#include "cleanup.h"
#include "condition.h"
#include "component.h"

static int
assert_run (struct kiln_action_ctx *ctx, kiln_error **err)
{
  struct kiln_condition *cond = NULL;
  if (kiln_condition_parse (ctx->component->doc, ctx->step->inputs, false, &cond, NULL, NULL, err) < 0)
    return -1;
  struct kiln_condition_env env = {.target = ctx->target, .expand = ctx->expand, .opaque = ctx->expand_opaque};
  bool value = false;
  int r = kiln_condition_eval (cond, &env, &value, err);
  if (r == 0 && !value)
    {
      /* Show what was compared: the operands as expanded. */
      _cleanup_free_ char *baseline = NULL;
      _cleanup_free_ char *compared = NULL;
      if (cond->operand)
        ctx->expand (ctx->expand_opaque, cond->operand, &baseline, NULL);
      if (cond->value)
        ctx->expand (ctx->expand_opaque, cond->value, &compared, NULL);
      if (baseline && compared)
        r = kiln_fail (err, "assertion is false: %s '%s' with value '%s'", kiln_condition_op_name (cond->op),
                       baseline, compared);
      else if (baseline)
        r = kiln_fail (err, "assertion is false: %s '%s'", kiln_condition_op_name (cond->op), baseline);
      else
        r = kiln_fail (err, "assertion is false: %s", kiln_condition_op_name (cond->op));
    }
  kiln_condition_free (cond);
  return r;
}

const struct kiln_action kiln_action_assert = {
  .name = "Assert",
  .shape = KILN_INPUTS_CONDITION,
  .run = assert_run,
};
