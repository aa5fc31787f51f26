/* exec.c - the ExecuteBash and ExecuteBinary action modules: run a user's
 * commands on the target and report their standard output.
 *
 * ExecuteBash writes every entry of `commands` into one script (joined by
 * newlines, as AWSTOE's input.sh) in the target's scratch directory and runs
 * it with bash; ExecuteBinary runs `path` with `arguments` directly, without a
 * shell.  Both share the way a finished command becomes the step's result
 * (finish_command below):
 *   - output `stdout`: everything the command wrote to stdout, minus ONE
 *     trailing newline, so `echo 3` chains as "3";
 *   - exit 194 asks for a reboot: the module sets ctx->reboot_requested and
 *     succeeds; the executor reboots and runs the same step again;
 *   - any other non-zero exit fails the step with the status and the last
 *     line the command wrote to stderr;
 *   - a command still running at the step's deadline has been killed by the
 *     target and fails with KILN_ERR_TIMEOUT.
 * Output streams to the step's console as it arrives. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "actions.h"
#include "cleanup.h"
#include "xalloc.h"

/* The exit status with which a script asks for a reboot (Linux). */
#define REBOOT_EXIT_CODE 194

/* Script files in the scratch directory carry this process's id and a counter,
 * so concurrent steps and runs never share one. */
static unsigned script_counter;

/* Appends s[0..len) to out, replacing every byte that does not start a valid
 * UTF-8 sequence with U+FFFD: a JSON string must be valid UTF-8, and a
 * command may print anything. */
static void
append_utf8_sanitized (struct kiln_buf *out, const char *s, size_t len)
{
  static const char replacement[] = "\xEF\xBF\xBD";
  const unsigned char *p = (const unsigned char *) s;
  size_t i = 0;
  while (i < len)
    {
      unsigned char c = p[i];
      size_t n = 0;
      unsigned min = 0, cp = 0;
      if (c < 0x80)
        n = 1, cp = c;
      else if (c >= 0xC2 && c <= 0xDF)
        n = 2, cp = c & 0x1F, min = 0x80;
      else if (c >= 0xE0 && c <= 0xEF)
        n = 3, cp = c & 0x0F, min = 0x800;
      else if (c >= 0xF0 && c <= 0xF4)
        n = 4, cp = c & 0x07, min = 0x10000;
      bool ok = n > 0 && i + n <= len;
      for (size_t k = 1; ok && k < n; k++)
        {
          if ((p[i + k] & 0xC0) != 0x80)
            ok = false;
          cp = (cp << 6) | (p[i + k] & 0x3F);
        }
      if (ok && (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)))
        ok = false;
      if (ok)
        {
          kiln_buf_append (out, p + i, n);
          i += n;
        }
      else
        {
          kiln_buf_append (out, replacement, sizeof replacement - 1);
          i++;
        }
    }
}

/* The last non-blank line of text, as [*start, *start + *len). */
static void
last_line (const struct kiln_buf *text, const char **start, size_t *len)
{
  const char *s = kiln_buf_str (text);
  size_t end = text->len;
  while (end > 0 && (s[end - 1] == '\n' || s[end - 1] == '\r' || s[end - 1] == ' ' || s[end - 1] == '\t'))
    end--;
  size_t begin = end;
  while (begin > 0 && s[begin - 1] != '\n')
    begin--;
  *start = s + begin;
  *len = end - begin;
}

/* Turns a finished command into the step's outcome (see the top of the file).
 * `what` names the command in errors ("commands", "'/usr/bin/tool'"). */
static int
finish_command (struct kiln_action_ctx *ctx, const char *what, const struct kiln_target_result *res,
                kiln_error **err)
{
  struct kiln_buf out = KILN_BUF_INIT;
  size_t n = res->out.len;
  if (n > 0 && res->out.data[n - 1] == '\n')
    n--;
  append_utf8_sanitized (&out, kiln_buf_str (&res->out), n);
  json_object_set_new (ctx->outputs, "stdout", json_stringn (kiln_buf_str (&out), out.len));
  kiln_buf_release (&out);

  if (res->timed_out)
    return kiln_error_set (err, KILN_ERR_TIMEOUT, 0, "%s timed out after %d seconds", what, ctx->timeout_seconds);
  if (res->exit_code == REBOOT_EXIT_CODE)
    {
      kiln_action_note (ctx, "%s exited with status %d: reboot requested", what, REBOOT_EXIT_CODE);
      ctx->reboot_requested = true;
      return 0;
    }
  if (res->exit_code == 0)
    return 0;

  const char *line;
  size_t len;
  last_line (&res->err, &line, &len);
  struct kiln_buf why = KILN_BUF_INIT;
  append_utf8_sanitized (&why, line, len);
  if (res->exit_code < 0)
    kiln_fail (err, "%s terminated on a signal%s%s", what, why.len ? ": " : "", kiln_buf_str (&why));
  else
    kiln_fail (err, "%s exited with status %d%s%s", what, res->exit_code, why.len ? ": " : "", kiln_buf_str (&why));
  kiln_buf_release (&why);
  return -1;
}

/* Runs argv on the target with the step's deadline and streamed output, then
 * finishes as above. */
static int
run_and_finish (struct kiln_action_ctx *ctx, char *const *argv, const char *what, kiln_error **err)
{
  struct kiln_target_result res = {.exit_code = -1, .out = KILN_BUF_INIT, .err = KILN_BUF_INIT};
  /* A command that cannot start fails with the target's message, which
   * names the program ("execute 'bash': No such file or directory"). */
  if (kiln_action_run_command (ctx, argv, NULL, &res, err) < 0)
    {
      kiln_target_result_release (&res);
      return -1;
    }
  int r = finish_command (ctx, what, &res, err);
  kiln_target_result_release (&res);
  return r;
}

static int
execute_bash_run (struct kiln_action_ctx *ctx, kiln_error **err)
{
  _cleanup_json_ json_t *commands = NULL;
  if (kiln_input_string_list (ctx->inputs, "commands", NULL, &commands, err) < 0)
    return -1;

  /* AWSTOE joins the commands into one script; each entry (possibly a
   * multi-line block) becomes a line, and the script ends with a newline. */
  struct kiln_buf script = KILN_BUF_INIT;
  size_t i;
  json_t *cmd;
  json_array_foreach (commands, i, cmd)
    {
      kiln_buf_puts (&script, json_string_value (cmd));
      kiln_buf_puts (&script, "\n");
    }

  const char *scratch = ctx->target->scratch_dir ? ctx->target->scratch_dir : "/tmp";
  _cleanup_free_ char *path = NULL;
  path = kiln_xasprintf ("%s/execute-bash-%ld-%u.sh", scratch, (long) getpid (), ++script_counter);
  int r = kiln_target_put_data (ctx->target, kiln_buf_str (&script), script.len, path, 0700, err);
  kiln_buf_release (&script);
  if (r < 0)
    return kiln_error_prefix (err, "write the script '%s'", path);

  char *argv[] = {(char *) "bash", path, NULL};
  r = run_and_finish (ctx, argv, "commands", err);

  /* The script is ours; failing to remove it does not change the outcome. */
  char *rm[] = {(char *) "rm", (char *) "-f", (char *) "--", path, NULL};
  struct kiln_target_command cmd_rm = {.argv = rm, .timeout_seconds = 60};
  struct kiln_target_result res = {.out = KILN_BUF_INIT, .err = KILN_BUF_INIT};
  _cleanup_error_ kiln_error *ignored = NULL;
  kiln_target_run (ctx->target, &cmd_rm, &res, &ignored);
  kiln_target_result_release (&res);
  return r;
}

static int
execute_binary_run (struct kiln_action_ctx *ctx, kiln_error **err)
{
  const char *path = NULL;
  _cleanup_json_ json_t *args = NULL;
  if (kiln_input_required_string (ctx->inputs, "path", NULL, &path, err) < 0
      || kiln_input_string_list (ctx->inputs, "arguments", NULL, &args, err) < 0)
    return -1;
  if (*path == '\0')
    return kiln_fail_invalid (err, "input 'path' is empty");

  size_t n = json_array_size (args);
  _cleanup_free_ char **argv = calloc (n + 2, sizeof *argv);
  if (argv == NULL)
    abort ();
  argv[0] = (char *) path;
  for (size_t i = 0; i < n; i++)
    argv[i + 1] = (char *) json_string_value (json_array_get (args, i));

  _cleanup_free_ char *what = NULL;
  what = kiln_xasprintf ("'%s'", path);
  return run_and_finish (ctx, argv, what, err);
}

static const struct kiln_input_field execute_bash_fields[] = {
  {"commands", KILN_IN_STRING_LIST, true},
  {NULL, 0, false},
};

static const struct kiln_input_field execute_binary_fields[] = {
  {"path", KILN_IN_STRING, true},
  {"arguments", KILN_IN_STRING_LIST, false},
  {NULL, 0, false},
};

static const char *const stdout_output[] = {"stdout", NULL};

const struct kiln_action kiln_action_execute_bash = {
  .name = "ExecuteBash",
  .shape = KILN_INPUTS_MAP,
  .fields = execute_bash_fields,
  .outputs = stdout_output,
  .run = execute_bash_run,
};

const struct kiln_action kiln_action_execute_binary = {
  .name = "ExecuteBinary",
  .shape = KILN_INPUTS_MAP,
  .fields = execute_binary_fields,
  .outputs = stdout_output,
  .run = execute_binary_run,
};
