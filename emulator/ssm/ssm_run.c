/* ssm_run.c - SendCommand's invocations run in the guests, as jobs on each
 * instance's queue (jobs.h), so commands run one at a time and in order,
 * never during a boot or a capture.
 *
 * An invocation goes Pending -> InProgress -> Success, Failed, TimedOut or
 * Cancelled with its output, as the SSM agent reports it: a failed script
 * gets the agent's "failed to run commands: exit status N" line, a timeout
 * its "execution timeout" line.  Before the end is recorded, the whole
 * output goes to the command's OutputS3BucketName through the S3 service's
 * store_object slot (services.h), so a client that sees the final status
 * finds it there.  Invocations an instance can no longer run (terminated,
 * or dropped from its queue) fail as Undeliverable; those under way when
 * the emulator stopped fail at the next start, and Pending ones run then. */
#include "ssm.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cleanup.h"
#include "log.h"
#include "services.h"
#include "store.h"
#include "vmhost.h"
#include "xalloc.h"

/* Longest SSM executionTimeout AWS accepts (48 hours). */
#define MAX_EXECUTION_TIMEOUT 172800

/* The AWS-RunShellScript parameters of a command, checked when it was sent. */
struct shell_params {
  char *script;
  char *cwd;
  int timeout;
};

static int
read_shell_params (json_t *params, struct shell_params *out)
{
  struct kiln_buf script = KILN_BUF_INIT;
  size_t i;
  json_t *line;
  json_array_foreach (json_object_get (params, "commands"), i, line)
    {
      kiln_buf_puts (&script, json_string_value (line) ? json_string_value (line) : "");
      kiln_buf_puts (&script, "\n");
    }
  out->script = script.data ? kiln_buf_steal (&script) : kiln_xstrdup ("");
  const char *cwd = json_string_value (json_array_get (json_object_get (params, "workingDirectory"), 0));
  out->cwd = cwd && *cwd ? kiln_xstrdup (cwd) : NULL;
  const char *t = json_string_value (json_array_get (json_object_get (params, "executionTimeout"), 0));
  out->timeout = t ? atoi (t) : 3600;
  if (out->timeout <= 0 || out->timeout > MAX_EXECUTION_TIMEOUT)
    out->timeout = 3600;
  return 0;
}

/* The S3 key under which the agent puts a plugin's output, as
 * BuildS3Path (Go's path.Join) makes it:
 * "[<prefix>/]<command>/<instance>/awsrunShellScript/0.awsrunShellScript",
 * repeated and trailing slashes of the prefix dropped. */
static char *
output_key_base (const char *prefix, const char *command, const char *instance)
{
  struct kiln_buf b = KILN_BUF_INIT;
  size_t len = strlen (prefix);
  while (len > 1 && prefix[len - 1] == '/')
    len--;
  for (size_t i = 0; i < len; i++)
    if (prefix[i] != '/' || i == 0 || prefix[i - 1] != '/')
      kiln_buf_append (&b, prefix + i, 1);
  if (b.len > 0 && b.data[b.len - 1] != '/')
    kiln_buf_puts (&b, "/");
  kiln_buf_printf (&b, "%s/%s/awsrunShellScript/0.awsrunShellScript", command, instance);
  return kiln_buf_steal (&b);
}

/* Writes an invocation's whole stdout and stderr to the bucket its command
 * named (if any), as the SSM agent does before it reports the end: each
 * stream as an object <key base>/stdout and /stderr, only when not empty.
 * Records where they went, or why they could not go, in
 * invocation_outputs.  A bucket that is missing, another account's or in
 * another region fails the upload only: the agent logs it and the
 * invocation keeps its status; here the log says it and the output URLs
 * stay empty (ssm_commands.c) rather than name objects that are not
 * there. */
static void
upload_output (struct kiln_emu *emu, const char *command, const char *instance, const char *out,
               const char *err_text)
{
  _cleanup_error_ kiln_error *err = NULL;
  _cleanup_json_ json_t *cmd = emu_db_query_one (emu, &err, "SELECT account, region, output_bucket, output_prefix "
                                                 "FROM commands WHERE id = ?", command);
  if (cmd == NULL || emu_row_str_or_null (cmd, "output_bucket") == NULL)
    {
      if (err)
        kiln_log_warn ("emulator: command output: %s", kiln_error_message (err));
      return;
    }
  const char *bucket = emu_row_str (cmd, "output_bucket");
  const struct emu_service *s3 = emu_service_find ("s3");
  _cleanup_free_ char *base = output_key_base (emu_row_str (cmd, "output_prefix"), command, instance);
  const char *why = NULL;
  _cleanup_free_ char *failure = NULL;
  const char *streams[2][2] = {{"stdout", out}, {"stderr", err_text}};
  for (size_t i = 0; i < 2 && failure == NULL; i++)
    {
      if (*streams[i][1] == '\0')
        continue;
      _cleanup_free_ char *key = NULL;
      key = kiln_xasprintf ("%s/%s", base, streams[i][0]);
      int r = s3 == NULL ? kiln_fail (&err, "this kiln-emulator has no S3")
                         : s3->store_object (emu, emu_row_str (cmd, "account"), emu_row_str (cmd, "region"), bucket,
                                             key, streams[i][1], strlen (streams[i][1]), "binary/octet-stream",
                                             emu_now (emu), &why, &err);
      if (r < 0)
        failure = kiln_xasprintf ("write s3://%s/%s: %s", bucket, key, kiln_error_message (err));
      if (r > 0)
        failure = kiln_xasprintf ("write s3://%s/%s: the bucket %s %s", bucket, key, bucket, why);
    }
  if (failure)
    kiln_log_warn ("emulator: command %s on %s: the output was not uploaded: %s", command, instance, failure);
  emu_db_update (emu, "command output", "INSERT OR REPLACE INTO invocation_outputs (command_id, instance_id, bucket, "
             "key_base, error) VALUES (?, ?, ?, ?, ?)", command, instance, bucket, base, failure);
}

/* Records an invocation's end.  The output goes to S3 first when the
 * command asked for it (not for an invocation the agent never got:
 * Undeliverable), so a client that sees the final status finds it there. */
static void
finish_invocation (struct kiln_emu *emu, const char *command, const char *instance, const char *status,
                   const char *details, int code, const char *out, const char *err_text)
{
  char now[24], code_s[16];
  if (strcmp (details, "Undeliverable") != 0)
    upload_output (emu, command, instance, out, err_text);
  emu_now_text (emu, now);
  snprintf (code_s, sizeof code_s, "%d", code);
  emu_db_update (emu, "invocation", "UPDATE invocations SET status = ?, status_details = ?, response_code = ?, "
             "stdout = ?, stderr = ?, ended = ? WHERE command_id = ? AND instance_id = ?", status, details, code_s,
             out, err_text, now, command, instance);
}

static void
job_command (struct emu_worker *w, const char *command)
{
  struct kiln_emu *emu = w->emu;
  _cleanup_error_ kiln_error *err = NULL;
  _cleanup_json_ json_t *row = emu_db_query_one (
      emu, &err, "SELECT v.status, c.parameters, i.state, i.agent_online FROM invocations v "
      "JOIN commands c ON c.id = v.command_id JOIN instances i ON i.id = v.instance_id "
      "WHERE v.command_id = ? AND v.instance_id = ?", command, w->queue);
  if (row == NULL)
    {
      if (err)
        kiln_log_warn ("emulator: command: %s", kiln_error_message (err));
      return;
    }
  if (strcmp (emu_row_str (row, "status"), "Pending") != 0)
    return; /* cancelled while queued */
  if (emu->instances == EMU_INSTANCES_MOCK)
    {
      finish_invocation (emu, command, w->queue, "Failed", "Undeliverable", -1, "",
                         "kiln-emulator runs with --instances mock: its instances have no guest to run commands in");
      return;
    }
  if (emu_guest (w) == NULL || strcmp (emu_row_str (row, "state"), "running") != 0)
    {
      finish_invocation (emu, command, w->queue, "Failed", "Undeliverable", -1, "",
                         "kiln-emulator: the instance is not running");
      return;
    }
  json_error_t jerr;
  _cleanup_json_ json_t *params = json_loads (emu_row_str (row, "parameters"), 0, &jerr);
  struct shell_params sp = {0};
  read_shell_params (params, &sp);

  char now[24];
  emu_now_text (emu, now);
  emu_db_update (emu, "invocation", "UPDATE invocations SET status = 'InProgress', status_details = 'InProgress', "
             "started = ? WHERE command_id = ? AND instance_id = ? AND status = 'Pending'", now, command, w->queue);

  char *const argv[] = {(char *) "/bin/sh", (char *) "-c", sp.script, NULL};
  struct kiln_target_command cmd = {.argv = argv, .cwd = sp.cwd, .timeout_seconds = sp.timeout};
  struct kiln_target_result res = {0};
  int r = kiln_target_run (kiln_instance_target (emu_guest (w)), &cmd, &res, &err);

  bool cancelled = emu_worker_take_cancel (w);

  const char *out = res.out.data ? res.out.data : "";
  struct kiln_buf err_text = KILN_BUF_INIT;
  kiln_buf_puts (&err_text, res.err.data ? res.err.data : "");
  if (emu_worker_quitting (w))
    finish_invocation (emu, command, w->queue, "Failed", "Failed", -1, out,
                       "kiln-emulator stopped while the command ran");
  else if (cancelled || (r < 0 && err && err->code == KILN_ERR_CANCELLED))
    finish_invocation (emu, command, w->queue, "Cancelled", "Cancelled", -1, out, kiln_buf_str (&err_text));
  else if (r < 0)
    {
      kiln_buf_printf (&err_text, "kiln-emulator: the command could not run: %s", kiln_error_message (err));
      finish_invocation (emu, command, w->queue, "Failed", "Failed", -1, out, kiln_buf_str (&err_text));
    }
  else if (res.timed_out)
    {
      kiln_buf_printf (&err_text, "%sfailed to run commands: the execution timeout of %d seconds passed",
                       err_text.len && err_text.data[err_text.len - 1] != '\n' ? "\n" : "", sp.timeout);
      finish_invocation (emu, command, w->queue, "TimedOut", "ExecutionTimedOut", -1, out, kiln_buf_str (&err_text));
    }
  else if (res.exit_code != 0)
    {
      /* The SSM agent adds this line to a failed script's stderr. */
      kiln_buf_printf (&err_text, "%sfailed to run commands: exit status %d",
                       err_text.len && err_text.data[err_text.len - 1] != '\n' ? "\n" : "", res.exit_code);
      finish_invocation (emu, command, w->queue, "Failed", "Failed", res.exit_code, out, kiln_buf_str (&err_text));
    }
  else
    finish_invocation (emu, command, w->queue, "Success", "Success", 0, out, kiln_buf_str (&err_text));
  kiln_buf_release (&err_text);
  kiln_target_result_release (&res);
  free (sp.script);
  free (sp.cwd);
}


static void
run_command (struct emu_worker *w, const struct emu_job *job)
{
  job_command (w, job->arg[0]);
}

static void
command_dropped (struct kiln_emu *emu, const char *queue, const struct emu_job *job)
{
  ssm_instance_ended (emu, queue);
}

/* keeps_cancel: a command popped just as its instance is terminated must
 * not start. */
static const struct emu_job_kind command_job = {
  .name = "command", .run = run_command, .dropped = command_dropped, .keeps_cancel = true,
};

void
ssm_run_queue (struct kiln_emu *emu, const char *command_id, const char *instance_id)
{
  emu_jobs_queue (emu, instance_id, &command_job, command_id, NULL, false);
}

void
ssm_run_cancel (struct kiln_emu *emu, const char *command_id, const char *instance_id)
{
  emu_jobs_cancel_running (emu, instance_id, &command_job, command_id);
}

void
ssm_instance_ended (struct kiln_emu *emu, const char *instance_id)
{
  char now[24];
  emu_now_text (emu, now);
  emu_db_update (emu, "invocations", "UPDATE invocations SET status = 'Failed', status_details = 'Undeliverable', "
                 "stderr = stderr || 'kiln-emulator: the instance was terminated before the command ran', ended = ? "
                 "WHERE instance_id = ? AND status IN ('Pending', 'Delayed')", now, instance_id);
}

int
ssm_start (struct kiln_emu *emu, kiln_error **err)
{
  char now[24];
  emu_now_text (emu, now);
  emu_db_update (emu, "recover", "UPDATE invocations SET status = 'Failed', status_details = 'Failed', ended = ?, "
                 "stderr = stderr || 'kiln-emulator restarted while the command ran' WHERE status = 'InProgress'", now);
  /* Commands still waiting for their turn get it again, behind the boots
   * the VM host queued. */
  _cleanup_json_ json_t *pending = emu_db_query0 (emu, err, "SELECT command_id, instance_id FROM invocations "
                                                  "WHERE status = 'Pending' ORDER BY seq");
  if (pending == NULL)
    return -1;
  size_t i;
  json_t *row;
  json_array_foreach (pending, i, row)
    ssm_run_queue (emu, emu_row_str (row, "command_id"), emu_row_str (row, "instance_id"));
  return 0;
}
