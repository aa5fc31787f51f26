/* ssm_commands.c - SSM Run Command: SendCommand, GetCommandInvocation,
 * ListCommands, ListCommandInvocations, CancelCommand, and
 * DescribeInstanceInformation (which instances can take commands).
 *
 * A command is one row plus an invocation per instance.  Invocations start
 * Pending; the VM host runs them in their guest through the guest agent
 * (vmhost.c) and records the real exit code and output.  A command's status
 * is derived from its invocations when read, as SSM reports it.  Output is
 * kept whole; what the API shows is cut where AWS cuts it (24,000 characters
 * of stdout and 8,000 of stderr in GetCommandInvocation, 2,500 in a
 * plugin's Output).  A command sent with OutputS3BucketName gets the whole
 * stdout and stderr in that bucket too, written by vmhost.c as each
 * invocation ends (table invocation_outputs), with the URLs SSM gives. */
#include "ssm.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cleanup.h"
#include "ec2.h"
#include "store.h"
#include "vmhost.h"
#include "xalloc.h"

#define RUN_SHELL_SCRIPT "AWS-RunShellScript"
#define PLUGIN_NAME "aws:runShellScript"
#define MAX_INSTANCES_PER_COMMAND 50
#define STDOUT_CUT 24000
/* GetCommandInvocation shows less of stderr than of stdout. */
#define STDERR_CUT 8000
#define PLUGIN_OUTPUT_CUT 2500
#define DEFAULT_EXECUTION_TIMEOUT "3600"
#define MAX_EXECUTION_TIMEOUT 172800L

/* ---- small helpers ---- */

static int
fail_validation (struct emu_call *c, const char *fmt, ...) __attribute__ ((format (printf, 2, 3)));

static int
fail_validation (struct emu_call *c, const char *fmt, ...)
{
  va_list ap;
  va_start (ap, fmt);
  _cleanup_free_ char *msg = NULL;
  msg = kiln_xvasprintf (fmt, ap);
  va_end (ap);
  return emu_fail (c, 400, "ValidationException", "%s", msg);
}

/* A string member of the input: NULL when absent; fails when present with
 * another type. */
static int
input_string (struct emu_call *c, const char *name, bool required, const char **out)
{
  json_t *v = json_object_get (c->input, name);
  *out = NULL;
  if (v == NULL || json_is_null (v))
    return required ? fail_validation (c, "1 validation error detected: Value null at '%s' failed to satisfy "
                                       "constraint: Member must not be null", name)
                    : 0;
  if (!json_is_string (v))
    return emu_fail (c, 400, "SerializationException", "'%s' must be a string", name);
  *out = json_string_value (v);
  return 0;
}

/* An array of strings (new reference, empty when absent). */
static json_t *
input_string_list (struct emu_call *c, const char *name)
{
  json_t *v = json_object_get (c->input, name);
  if (v == NULL || json_is_null (v))
    return json_array ();
  size_t i;
  json_t *item;
  if (json_is_array (v))
    {
      bool ok = true;
      json_array_foreach (v, i, item)
        ok = ok && json_is_string (item);
      if (ok)
        return json_incref (v);
    }
  emu_fail (c, 400, "SerializationException", "'%s' must be a list of strings", name);
  return NULL;
}

static int
input_max_results (struct emu_call *c, long long max, long long *out)
{
  json_t *v = json_object_get (c->input, "MaxResults");
  *out = max;
  if (v == NULL)
    return 0;
  if (!json_is_integer (v) || json_integer_value (v) < 1 || json_integer_value (v) > max)
    return fail_validation (c, "1 validation error detected: Value at 'maxResults' failed to satisfy constraint: "
                            "Member must have value between 1 and %lld", max);
  *out = json_integer_value (v);
  return 0;
}

/* NextToken: an offset this emulator handed out ("kiln-N"). */
static int
input_offset (struct emu_call *c, size_t *out)
{
  const char *token;
  *out = 0;
  if (input_string (c, "NextToken", false, &token) < 0)
    return -1;
  if (token == NULL)
    return 0;
  char *end;
  unsigned long long n = strncmp (token, "kiln-", 5) == 0 ? strtoull (token + 5, &end, 10) : 0;
  if (strncmp (token, "kiln-", 5) != 0 || token[5] == '\0' || *end != '\0')
    return emu_fail (c, 400, "InvalidNextToken", "The specified token is not valid.");
  *out = (size_t) n;
  return 0;
}

static void
set_next_token (struct emu_call *c, size_t next, size_t total)
{
  if (next >= total)
    return;
  char token[32];
  snprintf (token, sizeof token, "kiln-%zu", next);
  json_object_set_new (c->output, "NextToken", json_string (token));
}

/* The first max characters (UTF-8 code points) of s, as a JSON string. */
static json_t *
cut_text (const char *s, size_t max_chars)
{
  size_t chars = 0, i = 0;
  for (; s[i] && chars < max_chars; i++)
    if (((unsigned char) s[i] & 0xc0) != 0x80)
      chars++;
  /* Step over the rest of the last character. */
  while (s[i] && ((unsigned char) s[i] & 0xc0) == 0x80)
    i++;
  return json_stringn (s, i);
}

static void
iso_time (long long t, char out[32])
{
  emu_format_time ((time_t) t, out);
}

/* ---- statuses ---- */

static bool
finished (const char *status)
{
  return strcmp (status, "Success") == 0 || strcmp (status, "Failed") == 0 || strcmp (status, "TimedOut") == 0
         || strcmp (status, "Cancelled") == 0;
}

/* A command's status from its invocations, as SSM summarizes: in progress
 * while any runs, else the worst outcome. */
static const char *
command_status (json_t *invocations, size_t *completed, size_t *errors)
{
  bool any_running = false, all_pending = true, any_failed = false, any_timed_out = false, any_cancelled = false;
  *completed = *errors = 0;
  size_t i;
  json_t *inv;
  json_array_foreach (invocations, i, inv)
    {
      const char *s = emu_row_str (inv, "status");
      if (strcmp (s, "Pending") != 0)
        all_pending = false;
      if (!finished (s))
        {
          any_running = true;
          continue;
        }
      (*completed)++;
      if (strcmp (s, "Failed") == 0)
        any_failed = true, (*errors)++;
      else if (strcmp (s, "TimedOut") == 0)
        any_timed_out = true, (*errors)++;
      else if (strcmp (s, "Cancelled") == 0)
        any_cancelled = true;
    }
  if (json_array_size (invocations) == 0)
    return "Pending";
  if (any_running)
    return all_pending ? "Pending" : "InProgress";
  if (any_timed_out)
    return "TimedOut";
  if (any_failed)
    return "Failed";
  if (any_cancelled)
    return "Cancelled";
  return "Success";
}

/* ---- SendCommand ---- */

/* The instances Targets names: InstanceIds (any case: AWS's own examples
 * write "instanceids"), tag:<key> or tag-key. */
static int
resolve_targets (struct emu_call *c, json_t *targets, json_t *ids)
{
  size_t i;
  json_t *t;
  json_array_foreach (targets, i, t)
    {
      const char *key = json_string_value (json_object_get (t, "Key"));
      json_t *values = json_object_get (t, "Values");
      if (key == NULL || !json_is_array (values))
        return fail_validation (c, "Targets[%zu]: Key and Values are required", i);
      size_t k;
      json_t *v;
      if (strcasecmp (key, "InstanceIds") == 0)
        {
          json_array_foreach (values, k, v)
            json_array_append (ids, v);
          continue;
        }
      if (strncmp (key, "tag:", 4) != 0 && strcmp (key, "tag-key") != 0)
        return emu_fail (c, 400, "InvalidParameters", "Targets key '%s' is not supported by kiln-emulator (use "
                         "InstanceIds, tag:<key> or tag-key)", key);
      json_array_foreach (values, k, v)
        {
          _cleanup_error_ kiln_error *err = NULL;
          bool by_key = strcmp (key, "tag-key") == 0;
          _cleanup_json_ json_t *rows = emu_db_query (
              c->emu, &err, "SELECT t.resource_id AS id FROM tags t JOIN instances i ON i.id = t.resource_id WHERE "
              "t.account = ? AND t.region = ? AND t.key = ? AND (? = '1' OR t.value = ?) AND i.state = 'running' "
              "ORDER BY i.seq", c->account, c->region, by_key ? json_string_value (v) : key + 4,
              by_key ? "1" : "0", json_string_value (v));
          if (rows == NULL)
            return emu_fail_internal (c, err);
          size_t r;
          json_t *row;
          json_array_foreach (rows, r, row)
            json_array_append_new (ids, json_string (emu_row_str (row, "id")));
        }
    }
  return 0;
}

/* AWS-RunShellScript's parameters: commands (required), workingDirectory,
 * executionTimeout; each a list of strings. */
static int
check_shell_parameters (struct emu_call *c, json_t *params)
{
  const char *name;
  json_t *value;
  json_object_foreach (params, name, value)
    {
      if (strcmp (name, "commands") != 0 && strcmp (name, "workingDirectory") != 0
          && strcmp (name, "executionTimeout") != 0)
        return emu_fail (c, 400, "InvalidParameters", "Parameter \"%s\" is not defined in the document "
                         RUN_SHELL_SCRIPT ".", name);
      size_t i;
      json_t *item;
      if (!json_is_array (value))
        return emu_fail (c, 400, "InvalidParameters", "Parameter \"%s\" must be a list of strings.", name);
      json_array_foreach (value, i, item)
        if (!json_is_string (item))
          return emu_fail (c, 400, "InvalidParameters", "Parameter \"%s\" must be a list of strings.", name);
    }
  json_t *commands = json_object_get (params, "commands");
  if (commands == NULL || json_array_size (commands) == 0)
    return emu_fail (c, 400, "InvalidParameters", "Parameter \"commands\" is required by " RUN_SHELL_SCRIPT ".");
  json_t *timeout = json_object_get (params, "executionTimeout");
  if (timeout)
    {
      const char *t = json_string_value (json_array_get (timeout, 0));
      char *end;
      long n = t ? strtol (t, &end, 10) : 0;
      if (json_array_size (timeout) != 1 || t == NULL || *t == '\0' || *end != '\0' || n < 1
          || n > MAX_EXECUTION_TIMEOUT)
        return emu_fail (c, 400, "InvalidParameters", "Parameter \"executionTimeout\" must be one whole number of "
                         "seconds from 1 to %ld.", MAX_EXECUTION_TIMEOUT);
    }
  if (json_object_get (params, "workingDirectory") && json_array_size (json_object_get (params, "workingDirectory")) > 1)
    return emu_fail (c, 400, "InvalidParameters", "Parameter \"workingDirectory\" takes one value.");
  return 0;
}

static json_t *command_json (struct emu_call *c, json_t *row, json_t *invocations);

/* A member's length against SSM's constraint, in SSM's words. */
static int
check_length (struct emu_call *c, const char *member, const char *value, size_t min, size_t max)
{
  size_t len = strlen (value);
  if (len < min)
    return fail_validation (c, "1 validation error detected: Value '%s' at '%s' failed to satisfy constraint: "
                            "Member must have length greater than or equal to %zu", value, member, min);
  if (len > max)
    return fail_validation (c, "1 validation error detected: Value at '%s' failed to satisfy constraint: Member "
                            "must have length less than or equal to %zu", member, max);
  return 0;
}

/* OutputS3BucketName / OutputS3KeyPrefix / OutputS3Region.  SSM checks
 * only their lengths when the command is sent: the agent writes the output
 * when the command ends, and a bucket that is missing or not writable then
 * costs the output objects only (vmhost.c), never the command.  SSM finds a
 * bucket's region itself (OutputS3Region is deprecated and ignored);
 * kiln-emulator writes only to buckets of the call's region, so a region
 * given must be that one. */
static int
check_output_location (struct emu_call *c, const char *bucket, const char *prefix, const char *s3_region)
{
  if ((bucket && check_length (c, "outputS3BucketName", bucket, 3, 63) < 0)
      || (prefix && check_length (c, "outputS3KeyPrefix", prefix, 0, 500) < 0)
      || (s3_region && check_length (c, "outputS3Region", s3_region, 3, 20) < 0))
    return -1;
  if (s3_region && strcmp (s3_region, c->region) != 0)
    return emu_fail (c, 400, "InvalidOutputLocation", "OutputS3Region %s is not the region of this call (%s): "
                     "kiln-emulator writes command output only to buckets in the region the command is sent in",
                     s3_region, c->region);
  return 0;
}

static int
send_command (struct emu_call *c)
{
  const char *document, *comment, *bucket, *prefix, *s3_region;
  if (input_string (c, "DocumentName", true, &document) < 0 || input_string (c, "Comment", false, &comment) < 0
      || input_string (c, "OutputS3BucketName", false, &bucket) < 0
      || input_string (c, "OutputS3KeyPrefix", false, &prefix) < 0
      || input_string (c, "OutputS3Region", false, &s3_region) < 0)
    return -1;
  const char *doc_name = strrchr (document, '/') && strncmp (document, "arn:", 4) == 0 ? strrchr (document, '/') + 1
                                                                                        : document;
  if (strcmp (doc_name, RUN_SHELL_SCRIPT) != 0)
    return emu_fail (c, 400, "InvalidDocument", "Document %s does not exist in your account (kiln-emulator runs "
                     RUN_SHELL_SCRIPT ")", document);
  if (check_output_location (c, bucket, prefix, s3_region) < 0)
    return -1;
  if (comment && strlen (comment) > 100)
    return fail_validation (c, "1 validation error detected: Value at 'comment' failed to satisfy constraint: Member "
                            "must have length less than or equal to 100");
  json_t *timeout_v = json_object_get (c->input, "TimeoutSeconds");
  if (timeout_v && (!json_is_integer (timeout_v) || json_integer_value (timeout_v) < 30
                    || json_integer_value (timeout_v) > 2592000))
    return fail_validation (c, "1 validation error detected: Value at 'timeoutSeconds' failed to satisfy constraint: "
                            "Member must have value between 30 and 2592000");
  long long delivery_timeout = timeout_v ? json_integer_value (timeout_v) : 3600;

  json_t *params = json_object_get (c->input, "Parameters");
  if (params == NULL)
    params = json_object ();
  else
    json_incref (params);
  _cleanup_json_ json_t *params_ref = params;
  if (!json_is_object (params))
    return emu_fail (c, 400, "SerializationException", "'Parameters' must be a map of lists of strings");
  if (check_shell_parameters (c, params) < 0)
    return -1;

  _cleanup_json_ json_t *ids = input_string_list (c, "InstanceIds");
  if (ids == NULL)
    return -1;
  json_t *targets = json_object_get (c->input, "Targets");
  if (targets && !json_is_array (targets))
    return emu_fail (c, 400, "SerializationException", "'Targets' must be a list");
  if (json_array_size (ids) && json_array_size (targets))
    return fail_validation (c, "InstanceIds and Targets cannot be used together");
  if (json_array_size (ids) == 0 && json_array_size (targets) == 0)
    return fail_validation (c, "InstanceIds or Targets is required");
  if (targets && resolve_targets (c, targets, ids) < 0)
    return -1;
  if (json_array_size (ids) > MAX_INSTANCES_PER_COMMAND)
    return fail_validation (c, "1 validation error detected: Value at 'instanceIds' failed to satisfy constraint: "
                            "Member must have length less than or equal to %d", MAX_INSTANCES_PER_COMMAND);

  /* Every instance must be one of the caller's, running (its agent is the
   * one that takes commands). */
  _cleanup_error_ kiln_error *err = NULL;
  _cleanup_json_ json_t *unique = json_array ();
  _cleanup_json_ json_t *seen = json_object ();
  size_t i;
  json_t *id;
  json_array_foreach (ids, i, id)
    {
      const char *s = json_string_value (id);
      if (json_object_get (seen, s))
        continue;
      json_object_set_new (seen, s, json_true ());
      _cleanup_json_ json_t *row = emu_db_query_one (c->emu, &err, "SELECT state FROM instances WHERE id = ? AND "
                                                     "account = ? AND region = ?", s, c->account, c->region);
      if (row == NULL && err)
        return emu_fail_internal (c, err);
      if (row == NULL || strcmp (emu_row_str (row, "state"), "running") != 0)
        return emu_fail (c, 400, "InvalidInstanceId", "Instances [[%s]] not in a valid state for account %s", s,
                         c->account);
      json_array_append (unique, id);
    }
  if (json_array_size (unique) == 0)
    return emu_fail (c, 400, "InvalidInstanceId", "The Targets given match no running instance");

  char command_id[37], now[24], expires[24], timeout_s[24], seq[24];
  emu_new_uuid (c->emu, command_id);
  snprintf (now, sizeof now, "%lld", (long long) c->now);
  snprintf (expires, sizeof expires, "%lld", (long long) c->now + delivery_timeout);
  json_t *exec_timeout = json_object_get (params, "executionTimeout");
  snprintf (timeout_s, sizeof timeout_s, "%s",
            exec_timeout ? json_string_value (json_array_get (exec_timeout, 0)) : DEFAULT_EXECUTION_TIMEOUT);
  _cleanup_free_ char *params_text = json_dumps (params, JSON_COMPACT | JSON_SORT_KEYS);
  _cleanup_free_ char *ids_text = json_dumps (unique, JSON_COMPACT);
  _cleanup_free_ char *targets_text = targets ? json_dumps (targets, JSON_COMPACT) : NULL;
  json_t *mc = json_object_get (c->input, "MaxConcurrency"), *me = json_object_get (c->input, "MaxErrors");

  if (emu_db_begin (c->emu, &err) < 0)
    return emu_fail_internal (c, err);
  int r = emu_db_next_seq (c->emu, seq, &err);
  if (r == 0)
    r = emu_db_exec (c->emu, &err, "INSERT INTO commands (id, account, region, document_name, document_version, "
                     "comment, parameters, targets, instance_ids, requested, expires, timeout_seconds, "
                     "output_bucket, output_prefix, max_concurrency, max_errors, seq) VALUES (?, ?, ?, ?, "
                     "'$DEFAULT', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                     command_id, c->account, c->region, RUN_SHELL_SCRIPT, comment ? comment : "", params_text,
                     targets_text, ids_text, now, expires, timeout_s, bucket && *bucket ? bucket : NULL,
                     bucket && *bucket ? (prefix ? prefix : "") : NULL,
                     json_string_value (mc) ? json_string_value (mc) : "50",
                     json_string_value (me) ? json_string_value (me) : "0", seq);
  json_array_foreach (unique, i, id)
    if (r >= 0)
      {
        char inv_seq[24];
        r = emu_db_next_seq (c->emu, inv_seq, &err);
        if (r == 0)
          r = emu_db_exec (c->emu, &err, "INSERT INTO invocations (command_id, instance_id, account, region, status, "
                           "status_details, requested, seq) VALUES (?, ?, ?, ?, 'Pending', 'Pending', ?, ?)",
                           command_id, json_string_value (id), c->account, c->region, now, inv_seq);
      }
  if (r < 0)
    {
      emu_db_end (c->emu, false, NULL);
      return emu_fail_internal (c, err);
    }
  if (emu_db_end (c->emu, true, &err) < 0)
    return emu_fail_internal (c, err);
  json_array_foreach (unique, i, id)
    ssm_run_queue (c->emu, command_id, json_string_value (id));

  _cleanup_json_ json_t *row = emu_db_query_one (c->emu, &err, "SELECT * FROM commands WHERE id = ?", command_id);
  _cleanup_json_ json_t *pending = json_array ();
  json_array_foreach (unique, i, id)
    json_array_append_new (pending, json_pack ("{s:s}", "status", "Pending"));
  if (row == NULL)
    return emu_fail_internal (c, err);
  json_object_set_new (c->output, "Command", command_json (c, row, pending));
  return 0;
}

/* The Command structure of ListCommands and SendCommand. */
static json_t *
command_json (struct emu_call *c, json_t *row, json_t *invocations)
{
  size_t completed, errors;
  const char *status = command_status (invocations, &completed, &errors);
  json_error_t jerr;
  json_t *params = json_loads (emu_row_str (row, "parameters"), 0, &jerr);
  json_t *ids = json_loads (emu_row_str (row, "instance_ids"), 0, &jerr);
  json_t *targets = emu_row_str_or_null (row, "targets") ? json_loads (emu_row_str (row, "targets"), 0, &jerr) : NULL;
  json_t *cmd;
  cmd = json_pack ("{s:s, s:s, s:s, s:s, s:I, s:o, s:o, s:o, s:I, s:s, s:s, s:s, s:s, s:I, s:I, s:I, s:I, "
                  "s:I, s:{s:b}}",
                  "CommandId", emu_row_str (row, "id"), "DocumentName", emu_row_str (row, "document_name"),
                  "DocumentVersion", emu_row_str (row, "document_version"), "Comment", emu_row_str (row, "comment"),
                  "ExpiresAfter", (json_int_t) emu_row_int (row, "expires"), "Parameters",
                  params ? params : json_object (), "InstanceIds", ids ? ids : json_array (), "Targets",
                  targets ? targets : json_array (), "RequestedDateTime", (json_int_t) emu_row_int (row, "requested"),
                  "Status", status, "StatusDetails", status, "MaxConcurrency", emu_row_str (row, "max_concurrency"),
                  "MaxErrors", emu_row_str (row, "max_errors"), "TargetCount",
                  (json_int_t) json_array_size (invocations), "CompletedCount", (json_int_t) completed,
                  "ErrorCount", (json_int_t) errors, "DeliveryTimedOutCount", (json_int_t) 0, "TimeoutSeconds",
                  (json_int_t) (emu_row_int (row, "expires") - emu_row_int (row, "requested")),
                  "CloudWatchOutputConfig", "CloudWatchOutputEnabled", 0);
  /* The output location the command was sent with (only then: a command
   * without one shows none). */
  if (emu_row_str_or_null (row, "output_bucket"))
    {
      json_object_set_new (cmd, "OutputS3Region", json_string (emu_row_str (row, "region")));
      json_object_set_new (cmd, "OutputS3BucketName", json_string (emu_row_str (row, "output_bucket")));
      json_object_set_new (cmd, "OutputS3KeyPrefix", json_string (emu_row_str (row, "output_prefix")));
    }
  return cmd;
}

/* ---- reading ---- */

static json_t *
invocations_of (struct emu_call *c, const char *command_id, kiln_error **err)
{
  return emu_db_query (c->emu, err, "SELECT * FROM invocations WHERE command_id = ? ORDER BY seq", command_id);
}

/* What an invocation row needs for its output location: the command's
 * bucket and prefix, and where the output went (invocation_outputs). */
#define OUTPUT_COLUMNS "c.output_bucket, c.output_prefix, o.key_base AS output_key, o.error AS output_error"
#define OUTPUT_JOIN "LEFT JOIN invocation_outputs o ON o.command_id = v.command_id AND o.instance_id = v.instance_id"

/* StandardOutputUrl or StandardErrorUrl (stream "stdout" or "stderr") as
 * SSM gives it, https://s3.<region>.amazonaws.com/<bucket>/<key>: set once
 * the invocation ended and its output was written to the bucket (both
 * URLs, as SSM does, even when a stream was empty and the agent wrote no
 * object for it); "" before, without a bucket, or when writing failed.  A
 * client reads the object by bucket and key, never through this URL. */
static json_t *
output_url (struct emu_call *c, json_t *row, const char *stream)
{
  const char *bucket = emu_row_str_or_null (row, "output_bucket");
  const char *key = emu_row_str_or_null (row, "output_key");
  if (bucket == NULL || key == NULL || emu_row_str_or_null (row, "output_error"))
    return json_string ("");
  _cleanup_free_ char *url = NULL;
  url = kiln_xasprintf ("https://s3.%s.amazonaws.com/%s/%s/%s", c->region, bucket, key, stream);
  return json_string (url);
}

static const char *
elapsed (json_t *inv, char out[32])
{
  long long started = emu_row_int (inv, "started"), ended = emu_row_int (inv, "ended");
  if (started == 0 || ended == 0)
    return "";
  snprintf (out, 32, "PT%lldS", ended - started);
  return out;
}

static int
get_command_invocation (struct emu_call *c)
{
  const char *command_id, *instance_id, *plugin;
  if (input_string (c, "CommandId", true, &command_id) < 0 || input_string (c, "InstanceId", true, &instance_id) < 0
      || input_string (c, "PluginName", false, &plugin) < 0)
    return -1;
  _cleanup_error_ kiln_error *err = NULL;
  _cleanup_json_ json_t *row = emu_db_query_one (
      c->emu, &err, "SELECT v.*, c.comment, c.document_name, c.document_version, " OUTPUT_COLUMNS " FROM invocations "
      "v JOIN commands c ON c.id = v.command_id " OUTPUT_JOIN " WHERE v.command_id = ? AND v.instance_id = ? AND "
      "v.account = ? AND v.region = ?",
      command_id, instance_id, c->account, c->region);
  if (row == NULL)
    return err ? emu_fail_internal (c, err) : emu_fail (c, 400, "InvocationDoesNotExist", "%s", "");
  if (plugin && strcmp (plugin, PLUGIN_NAME) != 0)
    return emu_fail (c, 400, "InvalidPluginName", "The plugin name %s is not valid for this command.", plugin);
  char started[32] = "", ended[32] = "", took[32];
  if (emu_row_int (row, "started"))
    iso_time (emu_row_int (row, "started"), started);
  if (emu_row_int (row, "ended"))
    iso_time (emu_row_int (row, "ended"), ended);
  json_t *o = c->output;
  json_object_set_new (o, "CommandId", json_string (command_id));
  json_object_set_new (o, "InstanceId", json_string (instance_id));
  json_object_set_new (o, "Comment", json_string (emu_row_str (row, "comment")));
  json_object_set_new (o, "DocumentName", json_string (emu_row_str (row, "document_name")));
  json_object_set_new (o, "DocumentVersion", json_string (emu_row_str (row, "document_version")));
  json_object_set_new (o, "PluginName", json_string (PLUGIN_NAME));
  json_object_set_new (o, "ResponseCode", json_integer (emu_row_int (row, "response_code")));
  json_object_set_new (o, "ExecutionStartDateTime", json_string (started));
  json_object_set_new (o, "ExecutionElapsedTime", json_string (elapsed (row, took)));
  json_object_set_new (o, "ExecutionEndDateTime", json_string (ended));
  json_object_set_new (o, "Status", json_string (emu_row_str (row, "status")));
  json_object_set_new (o, "StatusDetails", json_string (emu_row_str (row, "status_details")));
  json_object_set_new (o, "StandardOutputContent", cut_text (emu_row_str (row, "stdout"), STDOUT_CUT));
  json_object_set_new (o, "StandardOutputUrl", output_url (c, row, "stdout"));
  json_object_set_new (o, "StandardErrorContent", cut_text (emu_row_str (row, "stderr"), STDERR_CUT));
  json_object_set_new (o, "StandardErrorUrl", output_url (c, row, "stderr"));
  json_object_set_new (o, "CloudWatchOutputConfig", json_pack ("{s:s, s:b}", "CloudWatchLogGroupName", "",
                                                               "CloudWatchOutputEnabled", 0));
  return 0;
}

/* ListCommands / ListCommandInvocations filters: Status, DocumentName,
 * InvokedAfter, InvokedBefore. */
static int
filters_match (struct emu_call *c, json_t *row, const char *status, bool *match)
{
  *match = true;
  json_t *filters = json_object_get (c->input, "Filters");
  size_t i;
  json_t *f;
  json_array_foreach (filters, i, f)
    {
      const char *key = json_string_value (json_object_get (f, "key"));
      const char *value = json_string_value (json_object_get (f, "value"));
      if (key == NULL || value == NULL)
        return fail_validation (c, "Filters[%zu]: key and value are required", i);
      if (strcmp (key, "Status") == 0)
        *match = *match && strcmp (value, status) == 0;
      else if (strcmp (key, "DocumentName") == 0)
        *match = *match && strcmp (value, emu_row_str (row, "document_name")) == 0;
      else if (strcmp (key, "InvokedAfter") == 0 || strcmp (key, "InvokedBefore") == 0)
        {
          struct tm tm = {0};
          const char *end = strptime (value, "%Y-%m-%dT%H:%M:%S", &tm);
          if (end == NULL)
            return emu_fail (c, 400, "InvalidFilterValue", "'%s' is not a time (YYYY-MM-DDTHH:MM:SSZ)", value);
          long long t = (long long) timegm (&tm), requested = emu_row_int (row, "requested");
          *match = *match && (key[7] == 'A' ? requested >= t : requested <= t);
        }
      else
        return emu_fail (c, 400, "InvalidFilterKey", "The filter key %s is not supported by kiln-emulator (Status, "
                         "DocumentName, InvokedAfter, InvokedBefore)", key);
    }
  return 0;
}

static int
list_commands (struct emu_call *c)
{
  const char *command_id, *instance_id;
  long long max;
  size_t offset;
  if (input_string (c, "CommandId", false, &command_id) < 0 || input_string (c, "InstanceId", false, &instance_id) < 0
      || input_max_results (c, 50, &max) < 0 || input_offset (c, &offset) < 0)
    return -1;
  _cleanup_error_ kiln_error *err = NULL;
  _cleanup_json_ json_t *rows = emu_db_query (
      c->emu, &err, "SELECT * FROM commands WHERE account = ? AND region = ? AND (? IS NULL OR id = ?) AND "
      "(? IS NULL OR id IN (SELECT command_id FROM invocations WHERE instance_id = ?)) ORDER BY seq DESC",
      c->account, c->region, command_id, command_id, instance_id, instance_id);
  if (rows == NULL)
    return emu_fail_internal (c, err);
  if (command_id && json_array_size (rows) == 0)
    return emu_fail (c, 400, "InvalidCommandId", "%s", "");
  json_t *out = json_array ();
  json_object_set_new (c->output, "Commands", out);
  size_t kept = 0, i;
  json_t *row;
  json_array_foreach (rows, i, row)
    {
      _cleanup_json_ json_t *invs = invocations_of (c, emu_row_str (row, "id"), &err);
      if (invs == NULL)
        return emu_fail_internal (c, err);
      size_t completed, errors;
      const char *status = command_status (invs, &completed, &errors);
      bool match;
      if (filters_match (c, row, status, &match) < 0)
        return -1;
      if (!match)
        continue;
      if (kept >= offset && kept < offset + (size_t) max)
        json_array_append_new (out, command_json (c, row, invs));
      kept++;
    }
  set_next_token (c, offset + (size_t) max, kept);
  return 0;
}

static json_t *
plugin_json (struct emu_call *c, json_t *inv)
{
  struct kiln_buf output = KILN_BUF_INIT;
  kiln_buf_puts (&output, emu_row_str (inv, "stdout"));
  if (*emu_row_str (inv, "stderr"))
    {
      kiln_buf_puts (&output, "\n\n----------ERROR-------\n");
      kiln_buf_puts (&output, emu_row_str (inv, "stderr"));
    }
  json_t *p = json_pack ("{s:s, s:s, s:s, s:I, s:o, s:o, s:o, s:s, s:s, s:s}", "Name", PLUGIN_NAME, "Status",
                         emu_row_str (inv, "status"), "StatusDetails", emu_row_str (inv, "status_details"),
                         "ResponseCode", (json_int_t) emu_row_int (inv, "response_code"), "Output",
                         cut_text (kiln_buf_str (&output), PLUGIN_OUTPUT_CUT), "StandardOutputUrl",
                         output_url (c, inv, "stdout"), "StandardErrorUrl", output_url (c, inv, "stderr"),
                         "OutputS3Region", emu_row_str_or_null (inv, "output_bucket") ? c->region : "",
                         "OutputS3BucketName", emu_row_str (inv, "output_bucket"), "OutputS3KeyPrefix",
                         emu_row_str (inv, "output_prefix"));
  if (emu_row_int (inv, "started"))
    json_object_set_new (p, "ResponseStartDateTime", json_integer (emu_row_int (inv, "started")));
  if (emu_row_int (inv, "ended"))
    json_object_set_new (p, "ResponseFinishDateTime", json_integer (emu_row_int (inv, "ended")));
  kiln_buf_release (&output);
  return p;
}

static int
list_command_invocations (struct emu_call *c)
{
  const char *command_id, *instance_id;
  long long max;
  size_t offset;
  if (input_string (c, "CommandId", false, &command_id) < 0 || input_string (c, "InstanceId", false, &instance_id) < 0
      || input_max_results (c, 50, &max) < 0 || input_offset (c, &offset) < 0)
    return -1;
  json_t *details_v = json_object_get (c->input, "Details");
  if (details_v && !json_is_boolean (details_v))
    return emu_fail (c, 400, "SerializationException", "'Details' must be a boolean");
  bool details = json_is_true (details_v);
  _cleanup_error_ kiln_error *err = NULL;
  _cleanup_json_ json_t *rows = emu_db_query (
      c->emu, &err, "SELECT v.*, c.comment, c.document_name, c.document_version, " OUTPUT_COLUMNS " FROM "
      "invocations v JOIN commands c ON c.id = v.command_id " OUTPUT_JOIN " WHERE v.account = ? AND v.region = ? AND "
      "(? IS NULL OR v.command_id = ?) AND "
      "(? IS NULL OR v.instance_id = ?) ORDER BY v.seq DESC", c->account, c->region, command_id, command_id,
      instance_id, instance_id);
  if (rows == NULL)
    return emu_fail_internal (c, err);
  if (command_id && json_array_size (rows) == 0)
    {
      _cleanup_json_ json_t *cmd = emu_db_query_one (c->emu, &err, "SELECT id FROM commands WHERE id = ? AND "
                                                     "account = ? AND region = ?", command_id, c->account, c->region);
      if (cmd == NULL)
        return err ? emu_fail_internal (c, err) : emu_fail (c, 400, "InvalidCommandId", "%s", "");
    }
  json_t *out = json_array ();
  json_object_set_new (c->output, "CommandInvocations", out);
  size_t kept = 0, i;
  json_t *row;
  json_array_foreach (rows, i, row)
    {
      bool match;
      if (filters_match (c, row, emu_row_str (row, "status"), &match) < 0)
        return -1;
      if (!match)
        continue;
      if (kept >= offset && kept < offset + (size_t) max)
        {
          json_t *plugins = json_array ();
          if (details)
            json_array_append_new (plugins, plugin_json (c, row));
          json_array_append_new (
              out, json_pack ("{s:s, s:s, s:s, s:s, s:s, s:s, s:I, s:s, s:s, s:s, s:o, s:o, s:o, s:{s:b}}",
                              "CommandId", emu_row_str (row, "command_id"), "InstanceId",
                              emu_row_str (row, "instance_id"), "InstanceName", "", "Comment",
                              emu_row_str (row, "comment"), "DocumentName", emu_row_str (row, "document_name"),
                              "DocumentVersion", emu_row_str (row, "document_version"), "RequestedDateTime",
                              (json_int_t) emu_row_int (row, "requested"), "Status", emu_row_str (row, "status"),
                              "StatusDetails", emu_row_str (row, "status_details"), "TraceOutput", "",
                              "StandardOutputUrl", output_url (c, row, "stdout"), "StandardErrorUrl",
                              output_url (c, row, "stderr"), "CommandPlugins", plugins,
                              "CloudWatchOutputConfig", "CloudWatchOutputEnabled", 0));
        }
      kept++;
    }
  set_next_token (c, offset + (size_t) max, kept);
  return 0;
}

static int
cancel_command (struct emu_call *c)
{
  const char *command_id;
  if (input_string (c, "CommandId", true, &command_id) < 0)
    return -1;
  _cleanup_json_ json_t *only = input_string_list (c, "InstanceIds");
  if (only == NULL)
    return -1;
  _cleanup_error_ kiln_error *err = NULL;
  _cleanup_json_ json_t *cmd = emu_db_query_one (c->emu, &err, "SELECT id FROM commands WHERE id = ? AND account = ? "
                                                 "AND region = ?", command_id, c->account, c->region);
  if (cmd == NULL)
    return err ? emu_fail_internal (c, err) : emu_fail (c, 400, "InvalidCommandId", "%s", "");
  _cleanup_json_ json_t *invs = invocations_of (c, command_id, &err);
  if (invs == NULL)
    return emu_fail_internal (c, err);
  char now[24];
  snprintf (now, sizeof now, "%lld", (long long) c->now);
  size_t i;
  json_t *inv;
  json_array_foreach (invs, i, inv)
    {
      const char *instance = emu_row_str (inv, "instance_id");
      if (json_array_size (only))
        {
          bool listed = false;
          size_t k;
          json_t *id;
          json_array_foreach (only, k, id)
            listed = listed || strcmp (json_string_value (id), instance) == 0;
          if (!listed)
            continue;
        }
      const char *status = emu_row_str (inv, "status");
      if (strcmp (status, "Pending") == 0 || strcmp (status, "Delayed") == 0)
        {
          if (emu_db_exec (c->emu, &err, "UPDATE invocations SET status = 'Cancelled', status_details = 'Cancelled', "
                           "ended = ? WHERE command_id = ? AND instance_id = ? AND status IN ('Pending', 'Delayed')",
                           now, command_id, instance) < 0)
            return emu_fail_internal (c, err);
        }
      else if (strcmp (status, "InProgress") == 0)
        {
          if (emu_db_exec (c->emu, &err, "UPDATE invocations SET status = 'Cancelling', status_details = "
                           "'Cancelling' WHERE command_id = ? AND instance_id = ? AND status = 'InProgress'",
                           command_id, instance) < 0)
            return emu_fail_internal (c, err);
          ssm_run_cancel (c->emu, command_id, instance);
        }
    }
  return 0;
}

/* ---- DescribeInstanceInformation ---- */

/* Whether the instance passes InstanceInformationFilterList ({key,
 * valueSet}) and Filters ({Key, Values}). */
static int
information_match (struct emu_call *c, json_t *row, json_t *tags, bool *match)
{
  *match = true;
  static const char *const lists[] = {"InstanceInformationFilterList", "Filters"};
  for (size_t l = 0; l < 2; l++)
    {
      size_t i;
      json_t *f;
      json_array_foreach (json_object_get (c->input, lists[l]), i, f)
        {
          const char *key = json_string_value (json_object_get (f, l == 0 ? "key" : "Key"));
          json_t *values = json_object_get (f, l == 0 ? "valueSet" : "Values");
          if (key == NULL || !json_is_array (values))
            return emu_fail (c, 400, "InvalidInstanceInformationFilterValue", "%s[%zu]: a key and values are "
                             "required", lists[l], i);
          const char *have = NULL;
          if (strcmp (key, "InstanceIds") == 0)
            have = emu_row_str (row, "id");
          else if (strcmp (key, "PingStatus") == 0)
            have = "Online";
          else if (strcmp (key, "PlatformTypes") == 0)
            have = "Linux";
          else if (strcmp (key, "ResourceType") == 0)
            have = "EC2Instance";
          else if (l == 1 && strncmp (key, "tag:", 4) == 0)
            have = json_string_value (json_object_get (tags, key + 4));
          else
            return emu_fail (c, 400, "InvalidFilterKey", "The filter key %s is not supported by kiln-emulator", key);
          bool any = false;
          size_t k;
          json_t *v;
          json_array_foreach (values, k, v)
            any = any || (have && json_string_value (v) && strcmp (have, json_string_value (v)) == 0);
          *match = *match && any;
        }
    }
  return 0;
}

static int
describe_instance_information (struct emu_call *c)
{
  long long max;
  size_t offset;
  if (input_max_results (c, 50, &max) < 0 || input_offset (c, &offset) < 0)
    return -1;
  _cleanup_error_ kiln_error *err = NULL;
  /* Instances whose agent answers: the guest agent stands in for SSM's. */
  _cleanup_json_ json_t *rows = emu_db_query (c->emu, &err, "SELECT * FROM instances WHERE account = ? AND region = ? "
                                              "AND state = 'running' AND agent_online = 1 ORDER BY seq", c->account,
                                              c->region);
  if (rows == NULL)
    return emu_fail_internal (c, err);
  json_t *out = json_array ();
  json_object_set_new (c->output, "InstanceInformationList", out);
  size_t kept = 0, i;
  json_t *row;
  json_array_foreach (rows, i, row)
    {
      _cleanup_json_ json_t *tags = NULL;
      bool match;
      tags = emu_tags_of (c, emu_row_str (row, "id"));
      if (tags == NULL)
        return -1;
      if (information_match (c, row, tags, &match) < 0)
        return -1;
      if (!match)
        continue;
      if (kept >= offset && kept < offset + (size_t) max)
        json_array_append_new (
            out, json_pack ("{s:s, s:s, s:I, s:s, s:b, s:s, s:s, s:s, s:s, s:s, s:s, s:s}", "InstanceId",
                            emu_row_str (row, "id"), "PingStatus", "Online", "LastPingDateTime", (json_int_t) c->now,
                            "AgentVersion", "kiln-emulator/qemu-guest-agent", "IsLatestVersion", 1, "PlatformType",
                            "Linux", "PlatformName", "Linux", "PlatformVersion", "", "ResourceType", "EC2Instance",
                            "IPAddress", emu_row_str (row, "private_ip"), "ComputerName", emu_row_str (row, "id"),
                            "AssociationStatus", "Success"));
      kept++;
    }
  set_next_token (c, offset + (size_t) max, kept);
  return 0;
}

const struct emu_operation emu_ssm_command_ops[] = {
  {"SendCommand", send_command},
  {"GetCommandInvocation", get_command_invocation},
  {"ListCommands", list_commands},
  {"ListCommandInvocations", list_command_invocations},
  {"CancelCommand", cancel_command},
  {"DescribeInstanceInformation", describe_instance_information},
  {NULL, NULL},
};
