/* action_support.c - what every action module shares: typed reads of expanded
 * inputs with errors that name the field, notes into the step's output, and
 * running a command on the target with the step's deadline. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "action.h"
#include "cleanup.h"

static int
wrong_type (kiln_error **err, const char *where, const char *key, const char *expected, json_t *v)
{
  _cleanup_free_ char *shown = json_is_string (v) ? strdup (json_string_value (v)) : json_dumps (v, JSON_ENCODE_ANY);
  return kiln_fail_invalid (err, "%s%sinput '%s' must be %s, not '%s'", where ? where : "", where ? ": " : "", key,
                            expected, shown ? shown : "?");
}

int
kiln_input_string (json_t *obj, const char *key, const char *where, const char **out, kiln_error **err)
{
  json_t *v = json_object_get (obj, key);
  if (v == NULL || json_is_null (v))
    return 0;
  if (!json_is_string (v))
    return wrong_type (err, where, key, "a string", v);
  *out = json_string_value (v);
  return 0;
}

int
kiln_input_required_string (json_t *obj, const char *key, const char *where, const char **out, kiln_error **err)
{
  const char *s = NULL;
  if (kiln_input_string (obj, key, where, &s, err) < 0)
    return -1;
  if (s == NULL)
    return kiln_fail_invalid (err, "%s%sinput '%s' is required", where ? where : "", where ? ": " : "", key);
  *out = s;
  return 0;
}

int
kiln_input_bool (json_t *obj, const char *key, const char *where, bool *out, kiln_error **err)
{
  json_t *v = json_object_get (obj, key);
  if (v == NULL || json_is_null (v))
    return 0;
  if (json_is_boolean (v))
    {
      *out = json_is_true (v);
      return 0;
    }
  if (json_is_string (v) && strcasecmp (json_string_value (v), "true") == 0)
    *out = true;
  else if (json_is_string (v) && strcasecmp (json_string_value (v), "false") == 0)
    *out = false;
  else
    return wrong_type (err, where, key, "true or false", v);
  return 0;
}

int
kiln_input_int (json_t *obj, const char *key, const char *where, long *out, kiln_error **err)
{
  json_t *v = json_object_get (obj, key);
  if (v == NULL || json_is_null (v))
    return 0;
  if (json_is_integer (v))
    {
      *out = (long) json_integer_value (v);
      return 0;
    }
  if (json_is_string (v))
    {
      const char *s = json_string_value (v);
      char *end = NULL;
      long l = strtol (s, &end, 10);
      if (*s != '\0' && end && *end == '\0')
        {
          *out = l;
          return 0;
        }
    }
  return wrong_type (err, where, key, "an integer", v);
}

int
kiln_input_string_list (json_t *obj, const char *key, const char *where, json_t **out, kiln_error **err)
{
  json_t *v = json_object_get (obj, key);
  if (v == NULL || json_is_null (v))
    {
      *out = json_array ();
      return 0;
    }
  if (json_is_string (v))
    {
      *out = json_pack ("[O]", v);
      return 0;
    }
  if (!json_is_array (v))
    return wrong_type (err, where, key, "a list of strings", v);
  size_t i;
  json_t *item;
  json_array_foreach (v, i, item)
    if (!json_is_string (item))
      return wrong_type (err, where, key, "a list of strings", v);
  *out = json_incref (v);
  return 0;
}

void
kiln_action_note (struct kiln_action_ctx *ctx, const char *fmt, ...)
{
  if (ctx->output == NULL)
    return;
  struct kiln_buf b = KILN_BUF_INIT;
  va_list ap;
  va_start (ap, fmt);
  kiln_buf_vprintf (&b, fmt, ap);
  va_end (ap);
  kiln_buf_puts (&b, "\n");
  ctx->output (ctx->output_opaque, 1, b.data, b.len);
  kiln_buf_release (&b);
}

int
kiln_action_run_command (struct kiln_action_ctx *ctx, char *const *argv, const char *cwd,
                         struct kiln_target_result *res, kiln_error **err)
{
  struct kiln_target_command cmd = {
    .argv = argv,
    .cwd = cwd,
    .timeout_seconds = ctx->timeout_seconds,
    .on_output = ctx->output,
    .opaque = ctx->output_opaque,
  };
  if (kiln_target_run (ctx->target, &cmd, res, err) < 0)
    return -1;
  ctx->exit_code = res->exit_code;
  return 0;
}

int
kiln_action_run_checked (struct kiln_action_ctx *ctx, char *const *argv, kiln_error **err)
{
  struct kiln_target_result res = {0};
  struct kiln_target_command cmd = {.argv = argv, .timeout_seconds = ctx->timeout_seconds};
  if (kiln_target_run (ctx->target, &cmd, &res, err) < 0)
    return -1;
  int r = 0;
  if (res.timed_out)
    r = kiln_error_set (err, KILN_ERR_TIMEOUT, 0, "'%s' timed out after %d s", argv[0], ctx->timeout_seconds);
  else if (res.exit_code != 0)
    {
      /* The command's own complaint is the most useful message. */
      struct kiln_buf *why = res.err.len ? &res.err : &res.out;
      size_t n = why->len;
      while (n > 0 && (why->data[n - 1] == '\n' || why->data[n - 1] == ' '))
        n--;
      r = kiln_fail (err, "%s exited with status %d%s%.*s", argv[0], res.exit_code, n ? ": " : "", (int) n,
                     n ? why->data : "");
    }
  kiln_target_result_release (&res);
  return r;
}
