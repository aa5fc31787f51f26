/* ssm_session.c - the target operations on an EC2 instance over SSM Run
 * Command (see ssm_session.h for the contract).
 *
 * Everything is an AWS-RunShellScript command, sent with SendCommand and
 * followed with GetCommandInvocation until it ends.  kiln's own commands are
 * small POSIX sh scripts (dash, bash and busybox ash alike) that print one
 * header line, "kiln-ssm KIND key=value ...", then named sections ("--out",
 * "--data", ...) and a closing "--end", so a reply cut short is noticed.
 *
 * Data never relies on the 24,000 characters GetCommandInvocation shows of
 * stdout except in pieces made to fit: a command's output goes to files in a
 * scratch directory and comes back one chunk per command, encoded with
 * base64(1) (16 KiB raw: 22,136 characters with its 76-column lines) or,
 * where base64(1) is missing, od(1) hex (11 KiB raw: 22,528 characters).
 * Each script picks the encoding itself and names it in its header.  The
 * common case costs one SendCommand: the run script inlines both streams when
 * they fit in one chunk together and then removes its files.  Uploads go the
 * other way in chunks of 32 KiB (base64, about 44 KB of command text) or
 * 10 KiB (printf octal escapes, 40 KB), each written at its own offset with
 * dd(1) so a SendCommand the client repeats after a lost reply does no harm;
 * the file is assembled beside its destination, checked (size, and SHA-256
 * when sha256sum(1) exists) and renamed into place.
 *
 * Timeouts of kiln_ssm_run are enforced on the instance by a watchdog shell,
 * not by SSM: the program runs in its own session (setsid(1) when present)
 * and the watchdog TERMs, then KILLs, its process group when the time is up,
 * leaving a marker so the timeout reads as timed_out rather than a failure.
 * The watchdog also kills the program when the run script itself disappears
 * (CancelCommand, SSM's executionTimeout), since a program in its own session
 * would otherwise outlive the agent's kill. */
#include "ssm_session.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "cancel.h"
#include "cleanup.h"
#include "digest.h"
#include "fsutil.h"
#include "xalloc.h"
#include "clock.h"

#define STR_(x) #x
#define STR(x) STR_ (x)

#define DOCUMENT "AWS-RunShellScript"
/* SendCommand's TimeoutSeconds: how long SSM may wait to deliver a command
 * (the agent restarting after a reboot, say) before it is DeliveryTimedOut. */
#define DELIVERY_TIMEOUT_S 600
#define DEFAULT_EXECUTION_TIMEOUT_S 3600
#define MAX_EXECUTION_TIMEOUT_S 172800
/* kiln's own scripts: hashing or listing a big file may take a while. */
#define INTERNAL_TIMEOUT_S 3600
/* SSM's executionTimeout for a run beyond the command's own timeout: the
 * watchdog's grace before KILL and the output's measuring. */
#define RUN_TIMEOUT_MARGIN_S 120
/* Polling gives up this long after every SSM deadline has passed. */
#define POLL_SLACK_S 300
/* On AWS an invocation shows up shortly after SendCommand; until then
 * GetCommandInvocation answers InvocationDoesNotExist. */
#define INVOCATION_APPEAR_S 60
#define DEFAULT_POLL_INITIAL_MS 200
#define DEFAULT_POLL_MAX_MS 2000

/* Raw bytes per downloaded chunk, by encoding (see the top of the file). */
#define B64_CHUNK 16384
#define HEX_CHUNK 11264
/* Raw bytes per uploaded chunk, by encoding. */
#define UP_B64_CHUNK 32768
#define UP_OCT_CHUNK 10240
/* Lines of base64 sent in a here-document. */
#define UP_B64_LINE 76
/* How much of a failed command's stderr goes into an error message. */
#define STDERR_IN_MESSAGE 600

/* The markers of the run wrapper's own failures, on the program's stderr
 * with exit status 127 (as the QEMU guest agent wrapper does). */
#define MARK_NO_CWD "kiln-ssm: cannot change directory"
#define MARK_NOT_FOUND "kiln-ssm: command not found"

/* What every data-moving script starts with: the encoding the instance can
 * produce and the raw size of a chunk whose encoding fits in one reply;
 * kiln_chunk FILE K prints chunk K of FILE encoded. */
static const char download_prelude[]
    = "if command -v base64 >/dev/null 2>&1; then ke=b64 kc=" STR (B64_CHUNK) "; else ke=hex kc=" STR (
        HEX_CHUNK) "; fi\n"
        "kiln_enc () { if [ \"$ke\" = b64 ]; then base64; else od -An -v -tx1 | tr -d ' \\n'; echo; fi; }\n"
        "kiln_chunk () { dd if=\"$1\" bs=\"$kc\" skip=\"$2\" count=1 2>/dev/null | kiln_enc; }\n";

/* The run watchdog, as sh -c's script: $1 the program's pid (a process
 * group leader when setsid exists), $2 the run script's pid, $3 the timeout
 * in seconds (0: none), $4 the run's scratch directory, where it leaves the
 * marker "t" when the time is up.  It polls once a second and exits when
 * the program does.  When the run script is gone (cancelled), nobody will
 * read the output: it kills the program and removes the directory. */
static const char watchdog_script[]
    = "p=$1 m=$2 t=$3 d=$4 s=$(date +%s)\n"
      "kg () { kill -$1 -\"$p\" 2>/dev/null || kill -$1 \"$p\" 2>/dev/null; }\n"
      "while kill -0 \"$p\" 2>/dev/null; do\n"
      "  if ! kill -0 \"$m\" 2>/dev/null; then kg 9; sleep 1; rm -rf \"$d\"; exit 0; fi\n"
      "  if [ \"$t\" -gt 0 ] && [ $(($(date +%s) - s)) -ge \"$t\" ]; then\n"
      "    : >\"$d/t\"; kg 15; i=0\n"
      "    while [ $i -lt 10 ] && kill -0 \"$p\" 2>/dev/null; do sleep 1; i=$((i + 1)); done\n"
      "    kg 9; exit 0\n"
      "  fi\n"
      "  sleep 1\n"
      "done\n";

/* ---- small helpers ---- */

char *
kiln_shell_quote (const char *s)
{
  struct kiln_buf b = KILN_BUF_INIT;
  kiln_buf_puts (&b, "'");
  for (const char *p = s ? s : ""; *p; p++)
    if (*p == '\'')
      kiln_buf_puts (&b, "'\\''");
    else
      kiln_buf_append (&b, p, 1);
  kiln_buf_puts (&b, "'");
  return kiln_buf_steal (&b);
}

static void
put_quoted (struct kiln_buf *b, const char *s)
{
  _cleanup_free_ char *q = kiln_shell_quote (s);
  kiln_buf_puts (b, q);
}

static const char *
scratch_of (const struct kiln_ssm_session *s)
{
  return s->scratch_dir && *s->scratch_dir ? s->scratch_dir : "/tmp";
}


static bool
cancel_raised (const struct kiln_ssm_session *s)
{
  return s->cancel && *s->cancel;
}

/* The end of text without trailing newlines, and at most max characters of
 * it, for messages. */
static int
trimmed_length (const char *text, size_t max)
{
  size_t len = strlen (text);
  while (len > 0 && (text[len - 1] == '\n' || text[len - 1] == '\r' || text[len - 1] == ' '))
    len--;
  return (int) (len > max ? max : len);
}

/* ---- reading kiln's replies ---- */

/* The line of text starting with "kiln-ssm KIND " (kind given), or NULL. */
static const char *
header_line (const char *text, const char *kind)
{
  size_t klen = strlen (kind);
  for (const char *line = text; line && *line;)
    {
      if (strncmp (line, "kiln-ssm ", 9) == 0 && strncmp (line + 9, kind, klen) == 0
          && (line[9 + klen] == ' ' || line[9 + klen] == '\n' || line[9 + klen] == '\0'))
        return line;
      line = strchr (line, '\n');
      if (line)
        line++;
    }
  return NULL;
}

/* The value of key=VALUE on a header line, into value (size bytes). */
static bool
field_str (const char *line, const char *key, char *value, size_t size)
{
  size_t klen = strlen (key);
  const char *end = strchr (line, '\n');
  if (end == NULL)
    end = line + strlen (line);
  for (const char *p = line; p < end; p++)
    if ((p == line || p[-1] == ' ') && (size_t) (end - p) > klen && strncmp (p, key, klen) == 0 && p[klen] == '=')
      {
        const char *v = p + klen + 1;
        size_t n = strcspn (v, " \n");
        if (v + n > end || n >= size)
          return false;
        memcpy (value, v, n);
        value[n] = '\0';
        return true;
      }
  return false;
}

static bool
field_ull (const char *line, const char *key, unsigned long long *out)
{
  char v[32];
  if (!field_str (line, key, v, sizeof v) || v[0] < '0' || v[0] > '9')
    return false;
  char *end;
  errno = 0;
  *out = strtoull (v, &end, 10);
  return errno == 0 && *end == '\0';
}

static bool
field_int (const char *line, const char *key, int *out)
{
  char v[32];
  if (!field_str (line, key, v, sizeof v))
    return false;
  char *end;
  errno = 0;
  long n = strtol (v, &end, 10);
  if (errno || *end || end == v || n < INT32_MIN || n > INT32_MAX)
    return false;
  *out = (int) n;
  return true;
}

/* The text of section "--NAME" (up to the next "--" line), or false. */
static bool
section (const char *text, const char *name, const char **data, size_t *len)
{
  size_t nlen = strlen (name);
  for (const char *line = text; line && *line;)
    {
      if (line[0] == '-' && line[1] == '-' && strncmp (line + 2, name, nlen) == 0 && line[2 + nlen] == '\n')
        {
          const char *start = line + 3 + nlen;
          const char *end = start;
          while (*end && !(end[0] == '-' && end[1] == '-' && (end == start || end[-1] == '\n')))
            end++;
          if (*end == '\0')
            return false; /* no closing line: the reply was cut */
          *data = start;
          *len = (size_t) (end - start);
          return true;
        }
      line = strchr (line, '\n');
      if (line)
        line++;
    }
  return false;
}

static bool
has_end (const char *text)
{
  return strncmp (text, "--end\n", 6) == 0 || strstr (text, "\n--end\n") != NULL
         || (strlen (text) >= 6 && strcmp (text + strlen (text) - 6, "\n--end") == 0);
}

/* Decodes a section's text in encoding enc ("b64" or "hex"), whitespace
 * ignored, appending the bytes to out. */
static int
decode_payload (const char *data, size_t len, const char *enc, struct kiln_buf *out, kiln_error **err)
{
  _cleanup_free_ char *clean = malloc (len + 1);
  if (clean == NULL)
    abort ();
  size_t n = 0;
  for (size_t i = 0; i < len; i++)
    if (data[i] != '\n' && data[i] != '\r' && data[i] != ' ' && data[i] != '\t')
      clean[n++] = data[i];
  clean[n] = '\0';
  if (strcmp (enc, "b64") == 0)
    {
      if (n == 0)
        return 0;
      _cleanup_free_ unsigned char *raw = NULL;
      size_t raw_len = 0;
      if (kiln_base64_decode (clean, n, &raw, &raw_len) < 0)
        return kiln_error_set (err, KILN_ERR_REMOTE, 0, "the instance sent malformed base64");
      kiln_buf_append (out, raw, raw_len);
      return 0;
    }
  if (strcmp (enc, "hex") == 0)
    {
      if (n % 2)
        return kiln_error_set (err, KILN_ERR_REMOTE, 0, "the instance sent malformed hex");
      for (size_t i = 0; i < n; i += 2)
        {
          int hi = kiln_hex_digit_value (clean[i]), lo = kiln_hex_digit_value (clean[i + 1]);
          if (hi < 0 || lo < 0)
            return kiln_error_set (err, KILN_ERR_REMOTE, 0, "the instance sent malformed hex");
          char c = (char) (hi << 4 | lo);
          kiln_buf_append (out, &c, 1);
        }
      return 0;
    }
  return kiln_error_set (err, KILN_ERR_REMOTE, 0, "the instance used an unknown encoding '%s'", enc);
}

static size_t
chunk_size_of (const char *enc)
{
  return strcmp (enc, "b64") == 0 ? B64_CHUNK : strcmp (enc, "hex") == 0 ? HEX_CHUNK : 0;
}

/* ---- one command ---- */

struct invocation {
  char *command_id;
  char *status;         /* Success, Failed, TimedOut, Cancelled */
  char *details;        /* StatusDetails: Success, Failed, ExecutionTimedOut, Undeliverable, ... */
  int response_code;
  struct kiln_buf out;  /* StandardOutputContent */
  struct kiln_buf err;  /* StandardErrorContent */
};

static void
invocation_release (struct invocation *inv)
{
  free (inv->command_id);
  free (inv->status);
  free (inv->details);
  kiln_buf_release (&inv->out);
  kiln_buf_release (&inv->err);
  memset (inv, 0, sizeof *inv);
}

static bool
terminal (const char *status)
{
  return strcmp (status, "Success") == 0 || strcmp (status, "Failed") == 0 || strcmp (status, "TimedOut") == 0
         || strcmp (status, "Cancelled") == 0;
}

/* StatusDetails compared without AWS's occasional spaces ("Delivery Timed
 * Out" in the console, "DeliveryTimedOut" in the API). */
static bool
details_is (const char *details, const char *want)
{
  for (; *details || *want; details++)
    {
      if (*details == ' ')
        continue;
      if (*details != *want)
        return false;
      want++;
    }
  return true;
}

/* CancelCommand, for when kiln stops waiting; errors are logged away: the
 * caller is already failing. */
static void
cancel_command (struct kiln_ssm_session *s, const char *command_id)
{
  _cleanup_json_ json_t *in = json_pack ("{s:s, s:[s]}", "CommandId", command_id, "InstanceIds", s->instance_id);
  _cleanup_json_ json_t *out = NULL;
  _cleanup_error_ kiln_error *e = NULL;
  kiln_aws_json_call (s->ssm, "AmazonSSM.CancelCommand", in, &out, NULL, &e);
}

static const char *
json_str (json_t *o, const char *key)
{
  const char *v = json_string_value (json_object_get (o, key));
  return v ? v : "";
}

/* Sends script as one AWS-RunShellScript command (in cwd when non-NULL, for
 * at most exec_timeout seconds) and polls its invocation until it ends.
 * Returns 0 with inv filled whatever the status, -1 when the command could
 * not be sent or followed, was cancelled (KILN_ERR_CANCELLED, after
 * CancelCommand) or outlived every SSM deadline (KILN_ERR_TIMEOUT). */
static int
invoke (struct kiln_ssm_session *s, const char *script, const char *cwd, int exec_timeout, struct invocation *inv,
        kiln_error **err)
{
  memset (inv, 0, sizeof *inv);
  if (cancel_raised (s))
    return kiln_error_set (err, KILN_ERR_CANCELLED, 0, "interrupted before the command was sent");

  char timeout_text[16];
  snprintf (timeout_text, sizeof timeout_text, "%d", exec_timeout);
  _cleanup_json_ json_t *params = json_pack ("{s:[s], s:[s]}", "commands", script, "executionTimeout", timeout_text);
  if (params == NULL)
    return kiln_fail_invalid (err, "the command is not valid UTF-8");
  if (cwd && *cwd)
    {
      json_t *wd = json_pack ("[s]", cwd);
      if (wd == NULL)
        return kiln_fail_invalid (err, "the working directory is not valid UTF-8");
      json_object_set_new (params, "workingDirectory", wd);
    }
  _cleanup_json_ json_t *in = json_pack ("{s:s, s:[s], s:O, s:i}", "DocumentName", DOCUMENT, "InstanceIds",
                                         s->instance_id, "Parameters", params, "TimeoutSeconds", DELIVERY_TIMEOUT_S);
  _cleanup_json_ json_t *sent = NULL;
  if (kiln_aws_json_call (s->ssm, "AmazonSSM.SendCommand", in, &sent, NULL, err) < 0)
    return -1;
  const char *id = json_string_value (json_object_get (json_object_get (sent, "Command"), "CommandId"));
  if (id == NULL)
    return kiln_error_set (err, KILN_ERR_REMOTE, 0, "SendCommand answered without a CommandId");
  inv->command_id = kiln_xstrdup (id);

  long pause = s->poll_initial_ms > 0 ? s->poll_initial_ms : DEFAULT_POLL_INITIAL_MS;
  long pause_max = s->poll_max_ms > 0 ? s->poll_max_ms : DEFAULT_POLL_MAX_MS;
  int64_t started = kiln_monotonic_ms ();
  int64_t appear_deadline = started + INVOCATION_APPEAR_S * 1000LL;
  int64_t deadline = started + (int64_t) (DELIVERY_TIMEOUT_S + exec_timeout + POLL_SLACK_S) * 1000;
  _cleanup_json_ json_t *query = json_pack ("{s:s, s:s}", "CommandId", id, "InstanceId", s->instance_id);
  for (;;)
    {
      if (!kiln_pause_ms (s->cancel, pause))
        {
          cancel_command (s, inv->command_id);
          return kiln_error_set (err, KILN_ERR_CANCELLED, 0, "interrupted: command %s cancelled", inv->command_id);
        }
      if (pause < pause_max)
        pause = pause * 3 / 2 < pause_max ? pause * 3 / 2 : pause_max;

      _cleanup_json_ json_t *got = NULL;
      struct kiln_aws_error ae = {0};
      _cleanup_error_ kiln_error *e = NULL;
      int r = kiln_aws_json_call (s->ssm, "AmazonSSM.GetCommandInvocation", query, &got, &ae, &e);
      bool not_yet = r < 0 && kiln_aws_error_is (&ae, "InvocationDoesNotExist") && kiln_monotonic_ms () < appear_deadline;
      kiln_aws_error_release (&ae);
      if (r < 0 && !not_yet)
        {
          kiln_error_move (err, &e);
          return kiln_error_prefix (err, "follow command %s", inv->command_id);
        }
      const char *status = r == 0 ? json_str (got, "Status") : "";
      if (r == 0 && terminal (status))
        {
          inv->status = kiln_xstrdup (status);
          inv->details = kiln_xstrdup (json_str (got, "StatusDetails"));
          json_t *code = json_object_get (got, "ResponseCode");
          inv->response_code = json_is_integer (code) ? (int) json_integer_value (code) : -1;
          kiln_buf_puts (&inv->out, json_str (got, "StandardOutputContent"));
          kiln_buf_puts (&inv->err, json_str (got, "StandardErrorContent"));
          return 0;
        }
      if (kiln_monotonic_ms () > deadline)
        {
          cancel_command (s, inv->command_id);
          return kiln_error_set (err, KILN_ERR_TIMEOUT, 0, "command %s still %s after %lld s", inv->command_id,
                                 *status ? status : "unknown", (long long) ((kiln_monotonic_ms () - started) / 1000));
        }
    }
}

/* The error for an invocation that did not end as its caller needs, with its
 * status and the start of its stderr. */
static int
invocation_error (const struct invocation *inv, int code, const char *what, kiln_error **err)
{
  const char *text = kiln_buf_str (&inv->err);
  int len = trimmed_length (text, STDERR_IN_MESSAGE);
  return kiln_error_set (err, code, 0, "command %s %s (%s/%s, exit status %d)%s%.*s", inv->command_id, what,
                         inv->status, inv->details, inv->response_code, len ? ": " : "", len, text);
}

/* Sorts a terminal invocation: 0 when the command ran to an exit status
 * (Success, or Failed with a ResponseCode), else the error. */
static int
check_ran (const struct invocation *inv, kiln_error **err)
{
  if (strcmp (inv->status, "Success") == 0)
    return 0;
  if (strcmp (inv->status, "Failed") == 0)
    {
      if (details_is (inv->details, "Undeliverable"))
        return invocation_error (inv, KILN_ERR_REMOTE, "could not be delivered", err);
      if (details_is (inv->details, "Terminated"))
        return invocation_error (inv, KILN_ERR_REMOTE, "ended with its instance", err);
      if (inv->response_code < 0)
        return invocation_error (inv, KILN_ERR_REMOTE, "did not run", err);
      return 0;
    }
  if (strcmp (inv->status, "TimedOut") == 0)
    return invocation_error (inv, KILN_ERR_TIMEOUT,
                             details_is (inv->details, "DeliveryTimedOut") ? "was not delivered in time"
                                                                             : "ran out of time",
                             err);
  return invocation_error (inv, KILN_ERR_REMOTE, "was cancelled", err);
}

/* Runs one of kiln's own scripts, which exit 0 unless something on the
 * instance went wrong: *out gets its stdout. */
static int
invoke_ok (struct kiln_ssm_session *s, const char *script, struct kiln_buf *out, kiln_error **err)
{
  struct invocation inv;
  if (invoke (s, script, NULL, INTERNAL_TIMEOUT_S, &inv, err) < 0)
    {
      invocation_release (&inv);
      return -1;
    }
  int r = check_ran (&inv, err);
  if (r == 0 && inv.response_code != 0)
    r = invocation_error (&inv, KILN_ERR_REMOTE, "failed", err);
  if (r == 0)
    {
      *out = inv.out;
      inv.out = (struct kiln_buf) KILN_BUF_INIT;
    }
  invocation_release (&inv);
  return r;
}

/* Best-effort removal of scratch files after a failure (not after a
 * cancellation: then kiln must stop, not talk to the instance again). */
static void
cleanup_paths (struct kiln_ssm_session *s, const char *const *paths, const kiln_error *why)
{
  if (why && why->code == KILN_ERR_CANCELLED)
    return;
  struct kiln_buf script = KILN_BUF_INIT;
  kiln_buf_puts (&script, "rm -rf");
  for (size_t i = 0; paths[i]; i++)
    {
      kiln_buf_puts (&script, " ");
      put_quoted (&script, paths[i]);
    }
  kiln_buf_puts (&script, "\n");
  struct kiln_buf out = KILN_BUF_INIT;
  _cleanup_error_ kiln_error *e = NULL;
  invoke_ok (s, kiln_buf_str (&script), &out, &e);
  kiln_buf_release (&out);
  kiln_buf_release (&script);
}

/* ---- kiln_ssm_shell ---- */

int
kiln_ssm_shell (struct kiln_ssm_session *s, const char *script, const char *cwd, int timeout_seconds,
                struct kiln_buf *out, int *exit_code, kiln_error **err)
{
  *exit_code = -1;
  int timeout = timeout_seconds > 0 ? timeout_seconds : DEFAULT_EXECUTION_TIMEOUT_S;
  if (timeout > MAX_EXECUTION_TIMEOUT_S)
    timeout = MAX_EXECUTION_TIMEOUT_S;
  struct invocation inv;
  int r = invoke (s, script, cwd, timeout, &inv, err);
  if (r == 0)
    r = check_ran (&inv, err);
  if (r == 0)
    {
      *exit_code = inv.response_code;
      if (out)
        kiln_buf_append (out, inv.out.data ? inv.out.data : "", inv.out.len);
    }
  invocation_release (&inv);
  if (r < 0)
    return kiln_error_prefix (err, "ssm %s: command", s->instance_id);
  return 0;
}

/* ---- fetching a file's chunks ---- */

/* Appends chunk index (of chunk bytes, in encoding enc) of file on the
 * instance to data, checking it has expect bytes; after, when non-NULL, is
 * script run once the chunk is read (the last fetch removes files). */
static int
fetch_chunk (struct kiln_ssm_session *s, const char *file, unsigned long long index, const char *enc,
             size_t expect, const char *after, struct kiln_buf *data, kiln_error **err)
{
  struct kiln_buf script = KILN_BUF_INIT;
  kiln_buf_puts (&script, download_prelude);
  kiln_buf_puts (&script, "echo \"kiln-ssm chunk enc=$ke\"\necho --data\nkiln_chunk ");
  put_quoted (&script, file);
  kiln_buf_printf (&script, " %llu\necho --end\n", index);
  if (after)
    kiln_buf_puts (&script, after);
  struct kiln_buf out = KILN_BUF_INIT;
  int r = invoke_ok (s, kiln_buf_str (&script), &out, err);
  kiln_buf_release (&script);
  const char *text = kiln_buf_str (&out);
  const char *header = r == 0 ? header_line (text, "chunk") : NULL;
  char got_enc[8];
  const char *payload;
  size_t payload_len;
  size_t before = data->len;
  if (r == 0 && (header == NULL || !field_str (header, "enc", got_enc, sizeof got_enc) || strcmp (got_enc, enc) != 0
                 || !section (text, "data", &payload, &payload_len) || !has_end (text)))
    r = kiln_error_set (err, KILN_ERR_REMOTE, 0, "unexpected reply reading chunk %llu: '%.80s'", index, text);
  if (r == 0)
    r = decode_payload (payload, payload_len, enc, data, err);
  if (r == 0 && data->len - before != expect)
    r = kiln_error_set (err, KILN_ERR_REMOTE, 0, "chunk %llu has %zu bytes, expected %zu (did the file change?)",
                        index, data->len - before, expect);
  kiln_buf_release (&out);
  return r;
}

/* ---- kiln_ssm_run ---- */

/* The run script: the program in the background with its streams in files
 * under dir, the watchdog beside it, then a header with the exit status and
 * sizes, and whichever streams fit inline ("--out", "--err"). */
static void
build_run_script (struct kiln_buf *b, const struct kiln_target_command *cmd, const char *dir)
{
  kiln_buf_puts (b, download_prelude);
  kiln_buf_puts (b, "d=");
  put_quoted (b, dir);
  kiln_buf_puts (b, "\nmkdir -m 700 \"$d\" || exit 125\n"
                    "if command -v setsid >/dev/null 2>&1; then ks=setsid; else ks=; fi\n"
                    "(\n");
  if (cmd->cwd && *cmd->cwd)
    {
      kiln_buf_puts (b, "  cd ");
      put_quoted (b, cmd->cwd);
      kiln_buf_puts (b, " 2>/dev/null || { echo '" MARK_NO_CWD "' >&2; exit 127; }\n");
    }
  for (size_t i = 0; cmd->env && cmd->env[i]; i++)
    {
      kiln_buf_puts (b, "  export ");
      put_quoted (b, cmd->env[i]);
      kiln_buf_puts (b, "\n");
    }
  kiln_buf_puts (b, "  command -v ");
  put_quoted (b, cmd->argv[0]);
  kiln_buf_puts (b, " >/dev/null 2>&1 || { echo '" MARK_NOT_FOUND "' >&2; exit 127; }\n  exec $ks");
  for (size_t i = 0; cmd->argv[i]; i++)
    {
      kiln_buf_puts (b, " ");
      put_quoted (b, cmd->argv[i]);
    }
  kiln_buf_printf (b, "\n) </dev/null >\"$d/o\" 2>\"$d/e\" &\n"
                      "p=$!\n"
                      "$ks sh -c ");
  put_quoted (b, watchdog_script);
  kiln_buf_printf (b, " kiln-watchdog \"$p\" \"$$\" %d \"$d\" </dev/null >/dev/null 2>&1 &\n"
                      "w=$!\n"
                      "wait \"$p\"; rc=$?\n"
                      "kill \"$w\" 2>/dev/null\n"
                      "to=0; if [ -e \"$d/t\" ]; then to=1; kill -9 -\"$p\" 2>/dev/null; fi\n"
                      "o=$(wc -c <\"$d/o\") && e=$(wc -c <\"$d/e\") || exit 125\n"
                      "o=$((o)) e=$((e)) b=$kc io=0 ie=0\n"
                      "echo \"kiln-ssm run rc=$rc to=$to enc=$ke out=$o err=$e\"\n"
                      "if [ \"$o\" -le \"$b\" ]; then echo --out; kiln_enc <\"$d/o\"; b=$((b - o)) io=1; fi\n"
                      "if [ \"$e\" -le \"$b\" ]; then echo --err; kiln_enc <\"$d/e\"; ie=1; fi\n"
                      "echo --end\n"
                      "if [ $io = 1 ] && [ $ie = 1 ]; then rm -rf \"$d\"; fi\n",
                   cmd->timeout_seconds > 0 ? cmd->timeout_seconds : 0);
}

static bool
starts_with (const struct kiln_buf *b, const char *prefix)
{
  return b->len >= strlen (prefix) && memcmp (b->data, prefix, strlen (prefix)) == 0;
}

/* Reads the streams of a finished run into res: inline sections, then
 * chunks of whatever did not fit, the last fetch removing dir. */
static int
collect_run_output (struct kiln_ssm_session *s, const char *text, const char *dir, struct kiln_target_result *res,
                    kiln_error **err)
{
  const char *header = header_line (text, "run");
  char enc[8];
  unsigned long long size[2];
  int rc, to;
  if (header == NULL || !field_int (header, "rc", &rc) || !field_int (header, "to", &to)
      || !field_str (header, "enc", enc, sizeof enc) || !field_ull (header, "out", &size[0])
      || !field_ull (header, "err", &size[1]) || !has_end (text) || chunk_size_of (enc) == 0)
    return kiln_error_set (err, KILN_ERR_REMOTE, 0, "unexpected reply from the run script: '%.120s'", text);
  size_t chunk = chunk_size_of (enc);
  static const char *const names[2] = {"out", "err"};
  struct kiln_buf *bufs[2] = {&res->out, &res->err};
  bool inlined[2];
  for (int i = 0; i < 2; i++)
    {
      const char *data;
      size_t len;
      inlined[i] = section (text, names[i], &data, &len);
      if (inlined[i] && decode_payload (data, len, enc, bufs[i], err) < 0)
        return -1;
      if (inlined[i] && bufs[i]->len != size[i])
        return kiln_error_set (err, KILN_ERR_REMOTE, 0, "std%s came back with %zu bytes, expected %llu", names[i],
                               bufs[i]->len, size[i]);
    }
  int last = !inlined[1] ? 1 : !inlined[0] ? 0 : -1;
  _cleanup_free_ char *remove = NULL;
  {
    _cleanup_free_ char *q = kiln_shell_quote (dir);
    remove = kiln_xasprintf ("rm -rf %s\n", q);
  }
  for (int i = 0; i < 2; i++)
    {
      if (inlined[i])
        continue;
      _cleanup_free_ char *file = NULL;
      file = kiln_xasprintf ("%s/%c", dir, names[i][0]);
      unsigned long long n = (size[i] + chunk - 1) / chunk;
      for (unsigned long long k = 0; k < n; k++)
        {
          size_t expect = k + 1 < n ? chunk : (size_t) (size[i] - k * chunk);
          const char *after = i == last && k + 1 == n ? remove : NULL;
          if (fetch_chunk (s, file, k, enc, expect, after, bufs[i], err) < 0)
            {
              const char *paths[] = {dir, NULL};
              cleanup_paths (s, paths, *err);
              return kiln_error_prefix (err, "read std%s", names[i]);
            }
        }
    }
  res->exit_code = to ? -1 : rc;
  res->timed_out = to != 0;
  return 0;
}

/* The program's exit status is what sh's wait reports: a program killed by
 * a signal other than the timeout's reads as 128+N, not -1 (the shell cannot
 * tell the two apart).  A missing cwd or program is KILN_ERR_NOT_FOUND, as
 * on the QEMU driver's guests. */
int
kiln_ssm_run (struct kiln_ssm_session *s, const struct kiln_target_command *cmd, struct kiln_target_result *res,
              kiln_error **err)
{
  *res = (struct kiln_target_result){.exit_code = -1, .out = KILN_BUF_INIT, .err = KILN_BUF_INIT};
  if (cmd->argv == NULL || cmd->argv[0] == NULL || cmd->argv[0][0] == '\0')
    return kiln_fail_invalid (err, "ssm %s: run: empty command line", s->instance_id);
  const char *name = cmd->argv[0];
  for (size_t i = 0; cmd->env && cmd->env[i]; i++)
    if (!kiln_target_env_entry_valid (cmd->env[i]))
      return kiln_fail_invalid (err, "ssm %s: run '%s': environment entry '%.*s' is not NAME=VALUE with a shell "
                                "variable name", s->instance_id, name, (int) strcspn (cmd->env[i], "="), cmd->env[i]);

  char tag[17];
  kiln_random_hex (tag, 8);
  _cleanup_free_ char *dir = NULL;
  dir = kiln_xasprintf ("%s/kiln-ssm-%s", scratch_of (s), tag);
  struct kiln_buf script = KILN_BUF_INIT;
  build_run_script (&script, cmd, dir);

  /* SSM's own limit is a backstop: the watchdog enforces the command's. */
  long exec_timeout = cmd->timeout_seconds > 0 ? (long) cmd->timeout_seconds + RUN_TIMEOUT_MARGIN_S
                                               : MAX_EXECUTION_TIMEOUT_S;
  if (exec_timeout > MAX_EXECUTION_TIMEOUT_S)
    exec_timeout = MAX_EXECUTION_TIMEOUT_S;
  struct invocation inv;
  int r = invoke (s, kiln_buf_str (&script), NULL, (int) exec_timeout, &inv, err);
  kiln_buf_release (&script);
  if (r == 0)
    r = check_ran (&inv, err);
  if (r == 0 && inv.response_code != 0)
    r = invocation_error (&inv, KILN_ERR_REMOTE, "(the run wrapper) failed", err);
  if (r == 0)
    r = collect_run_output (s, kiln_buf_str (&inv.out), dir, res, err);
  invocation_release (&inv);
  if (r < 0)
    {
      kiln_target_result_release (res);
      *res = (struct kiln_target_result){.exit_code = -1, .out = KILN_BUF_INIT, .err = KILN_BUF_INIT};
      return kiln_error_prefix (err, "ssm %s: run '%s'", s->instance_id, name);
    }

  if (res->exit_code == 127 && !res->timed_out)
    {
      if (starts_with (&res->err, MARK_NO_CWD))
        {
          kiln_target_result_release (res);
          *res = (struct kiln_target_result){.exit_code = -1, .out = KILN_BUF_INIT, .err = KILN_BUF_INIT};
          return kiln_error_set (err, KILN_ERR_NOT_FOUND, 0, "ssm %s: run '%s': change directory to '%s': no such "
                                 "directory (or not accessible)", s->instance_id, name, cmd->cwd);
        }
      if (starts_with (&res->err, MARK_NOT_FOUND))
        {
          kiln_target_result_release (res);
          *res = (struct kiln_target_result){.exit_code = -1, .out = KILN_BUF_INIT, .err = KILN_BUF_INIT};
          return kiln_error_set (err, KILN_ERR_NOT_FOUND, 0, "ssm %s: run '%s': command not found", s->instance_id,
                                 name);
        }
    }
  /* SSM gives output only at the end: kiln_target_run hands it to
   * cmd->on_output, once per stream. */
  return 0;
}

/* ---- kiln_ssm_put_file ---- */

/* One upload chunk's data as script text: a base64 here-document or printf
 * octal escapes, written to part. */
static void
put_chunk_data (struct kiln_buf *b, const unsigned char *data, size_t len, bool octal)
{
  if (!octal)
    {
      _cleanup_free_ char *text = kiln_base64_encode (data, len);
      size_t n = strlen (text);
      kiln_buf_puts (b, "base64 -d >\"$t.part\" <<'KILN_EOF'\n");
      for (size_t i = 0; i < n; i += UP_B64_LINE)
        {
          kiln_buf_append (b, text + i, n - i < UP_B64_LINE ? n - i : UP_B64_LINE);
          kiln_buf_puts (b, "\n");
        }
      kiln_buf_puts (b, "KILN_EOF\n");
      return;
    }
  kiln_buf_puts (b, "{\n");
  for (size_t i = 0; i < len; i += 1024)
    {
      kiln_buf_puts (b, "printf '");
      for (size_t j = i; j < len && j < i + 1024; j++)
        kiln_buf_printf (b, "\\%03o", data[j]);
      kiln_buf_puts (b, "'\n");
    }
  kiln_buf_puts (b, "} >\"$t.part\"\n");
}

/* Reads up to len bytes at offset of fd into data. */
static int
read_at (int fd, unsigned char *data, size_t len, off_t offset, const char *path, kiln_error **err)
{
  size_t done = 0;
  while (done < len)
    {
      ssize_t n = pread (fd, data + done, len - done, offset + (off_t) done);
      if (n < 0 && errno == EINTR)
        continue;
      if (n < 0)
        return kiln_fail_errno (err, errno, "read '%s'", path);
      if (n == 0)
        return kiln_error_set (err, KILN_ERR_IO, 0, "read '%s': the file shrank while it was sent", path);
      done += (size_t) n;
    }
  return 0;
}

/* Sends the local file in chunks of the given encoding.  Returns 1 when the
 * instance has no base64(1) (only asked of the first base64 command: nothing
 * was written), 0 when the file is in place, -1 on errors. */
static int
put_chunks (struct kiln_ssm_session *s, int fd, const char *local_path, uint64_t size, const char *sha256,
            const char *path, const char *tmp, mode_t mode, bool octal, kiln_error **err)
{
  /* The directory part of path, which must exist. */
  const char *slash = strrchr (path, '/');
  _cleanup_free_ char *parent = slash == NULL ? kiln_xstrdup (".")
                                : slash == path ? kiln_xstrdup ("/")
                                                : kiln_xstrndup (path, (size_t) (slash - path));
  size_t chunk = octal ? UP_OCT_CHUNK : UP_B64_CHUNK;
  uint64_t n = size ? (size + chunk - 1) / chunk : 1;
  _cleanup_free_ unsigned char *data = malloc (chunk);
  if (data == NULL)
    abort ();
  for (uint64_t k = 0; k < n; k++)
    {
      uint64_t offset = k * chunk;
      size_t len = size - offset < chunk ? (size_t) (size - offset) : chunk;
      if (read_at (fd, data, len, (off_t) offset, local_path, err) < 0)
        return -1;
      struct kiln_buf b = KILN_BUF_INIT;
      kiln_buf_puts (&b, "f=");
      put_quoted (&b, path);
      kiln_buf_puts (&b, " t=");
      put_quoted (&b, tmp);
      kiln_buf_puts (&b, "\n");
      if (k == 0)
        {
          kiln_buf_puts (&b, "[ -d ");
          put_quoted (&b, parent);
          kiln_buf_puts (&b, " ] || { echo 'kiln-ssm put noparent'; echo --end; exit 0; }\n"
                             "if [ -d \"$f\" ] && [ ! -L \"$f\" ]; then echo 'kiln-ssm put isdir'; echo --end; "
                             "exit 0; fi\n"
                             "(umask 077 && : >\"$t\") || exit 1\n");
          if (!octal)
            kiln_buf_puts (&b, "command -v base64 >/dev/null 2>&1 || { echo 'kiln-ssm put enc=none'; echo --end; "
                               "exit 0; }\n");
        }
      if (len)
        {
          put_chunk_data (&b, data, len, octal);
          kiln_buf_printf (&b, "dd if=\"$t.part\" of=\"$t\" bs=%zu seek=%llu conv=notrunc 2>/dev/null || { echo "
                               "\"kiln-ssm: writing $t failed\" >&2; exit 1; }\nrm -f \"$t.part\"\n",
                           chunk, (unsigned long long) k);
        }
      kiln_buf_puts (&b, "echo \"kiln-ssm put have=$(wc -c <\"$t\")\"\n");
      if (k + 1 == n)
        kiln_buf_printf (&b,
                         "h=-; if command -v sha256sum >/dev/null 2>&1; then h=$(sha256sum <\"$t\") && h=${h%%%% *}; fi\n"
                         "if [ \"$h\" != - ] && [ \"$h\" != %s ]; then rm -f \"$t\"; echo \"kiln-ssm: SHA-256 "
                         "mismatch after the copy\" >&2; exit 1; fi\n"
                         "chmod %04o \"$t\" && mv -f \"$t\" \"$f\" || { rm -f \"$t\"; exit 1; }\n"
                         "echo \"kiln-ssm done sha256=$h\"\n",
                         sha256, (unsigned) (mode & 07777));
      kiln_buf_puts (&b, "echo --end\n");
      struct kiln_buf out = KILN_BUF_INIT;
      int r = invoke_ok (s, kiln_buf_str (&b), &out, err);
      kiln_buf_release (&b);
      const char *text = kiln_buf_str (&out);
      const char *have_line = r == 0 ? header_line (text, "put") : NULL;
      char enc[8];
      unsigned long long have = 0;
      uint64_t want = offset + len;
      if (r == 0 && k == 0 && have_line && strncmp (have_line, "kiln-ssm put noparent", 21) == 0)
        r = kiln_error_set (err, KILN_ERR_NOT_FOUND, 0, "the parent directory does not exist on the instance");
      else if (r == 0 && k == 0 && have_line && strncmp (have_line, "kiln-ssm put isdir", 18) == 0)
        r = kiln_error_set (err, KILN_ERR_INVALID, 0, "a directory is in the way");
      else if (r == 0 && k == 0 && !octal && have_line && field_str (have_line, "enc", enc, sizeof enc))
        {
          kiln_buf_release (&out);
          return 1;
        }
      else if (r == 0 && (have_line == NULL || !field_ull (have_line, "have", &have) || !has_end (text)))
        r = kiln_error_set (err, KILN_ERR_REMOTE, 0, "unexpected reply writing chunk %llu: '%.80s'",
                            (unsigned long long) k, text);
      else if (r == 0 && have != want)
        r = kiln_error_set (err, KILN_ERR_REMOTE, 0, "the copy has %llu bytes after chunk %llu, expected %llu", have,
                            (unsigned long long) k, (unsigned long long) want);
      else if (r == 0 && k + 1 == n && header_line (text, "done") == NULL)
        r = kiln_error_set (err, KILN_ERR_REMOTE, 0, "unexpected reply finishing the copy: '%.80s'", text);
      kiln_buf_release (&out);
      if (r < 0)
        return -1;
    }
  return 0;
}

int
kiln_ssm_put_file (struct kiln_ssm_session *s, const char *local_path, const char *path, mode_t mode,
                   kiln_error **err)
{
  _cleanup_close_ int fd = open (local_path, O_RDONLY | O_CLOEXEC);
  struct stat st;
  if (fd < 0 || fstat (fd, &st) < 0)
    {
      kiln_fail_errno (err, errno, "open '%s'", local_path);
      return kiln_error_prefix (err, "ssm %s: put '%s'", s->instance_id, path);
    }
  char sha256[KILN_DIGEST_HEX_MAX];
  if (kiln_digest_file_hex ("SHA256", local_path, sha256, err) < 0)
    return kiln_error_prefix (err, "ssm %s: put '%s'", s->instance_id, path);
  char tag[17];
  kiln_random_hex (tag, 8);
  _cleanup_free_ char *tmp = NULL;
  tmp = kiln_xasprintf ("%s.kiln-%s", path, tag);
  int r = put_chunks (s, fd, local_path, (uint64_t) st.st_size, sha256, path, tmp, mode, false, err);
  if (r == 1)
    r = put_chunks (s, fd, local_path, (uint64_t) st.st_size, sha256, path, tmp, mode, true, err);
  if (r < 0)
    {
      _cleanup_free_ char *part = NULL;
      part = kiln_xasprintf ("%s.part", tmp);
      const char *paths[] = {tmp, part, NULL};
      cleanup_paths (s, paths, *err);
      return kiln_error_prefix (err, "ssm %s: put '%s'", s->instance_id, path);
    }
  return 0;
}

/* ---- kiln_ssm_get_file ---- */

static int
get_into (struct kiln_ssm_session *s, const char *path, int fd, const char *local_tmp, kiln_error **err)
{
  struct kiln_buf b = KILN_BUF_INIT;
  kiln_buf_puts (&b, download_prelude);
  kiln_buf_puts (&b, "f=");
  put_quoted (&b, path);
  kiln_buf_puts (&b, "\nif [ ! -e \"$f\" ]; then echo 'kiln-ssm get missing'; echo --end; exit 0; fi\n"
                     "if [ ! -f \"$f\" ]; then echo 'kiln-ssm get notfile'; echo --end; exit 0; fi\n"
                     "n=$(wc -c <\"$f\") || exit 1\n"
                     "h=-; if command -v sha256sum >/dev/null 2>&1; then h=$(sha256sum <\"$f\") && h=${h%% *}; fi\n"
                     "echo \"kiln-ssm get size=$((n)) enc=$ke sha256=$h\"\n"
                     "echo --data\nkiln_chunk \"$f\" 0\necho --end\n");
  struct kiln_buf out = KILN_BUF_INIT;
  int r = invoke_ok (s, kiln_buf_str (&b), &out, err);
  kiln_buf_release (&b);
  if (r < 0)
    return -1;
  const char *text = kiln_buf_str (&out);
  const char *header = header_line (text, "get");
  char enc[8], sha256[KILN_DIGEST_HEX_MAX];
  unsigned long long size = 0;
  const char *payload;
  size_t payload_len;
  struct kiln_buf data = KILN_BUF_INIT;
  if (header && strncmp (header, "kiln-ssm get missing", 20) == 0)
    r = kiln_error_set (err, KILN_ERR_NOT_FOUND, 0, "no such file on the instance");
  else if (header && strncmp (header, "kiln-ssm get notfile", 20) == 0)
    r = kiln_error_set (err, KILN_ERR_INVALID, 0, "not a regular file");
  else if (header == NULL || !field_ull (header, "size", &size) || !field_str (header, "enc", enc, sizeof enc)
           || !field_str (header, "sha256", sha256, sizeof sha256) || chunk_size_of (enc) == 0
           || !section (text, "data", &payload, &payload_len) || !has_end (text))
    r = kiln_error_set (err, KILN_ERR_REMOTE, 0, "unexpected reply: '%.80s'", text);
  else
    r = decode_payload (payload, payload_len, enc, &data, err);
  kiln_buf_release (&out);
  if (r < 0)
    {
      kiln_buf_release (&data);
      return -1;
    }

  size_t chunk = chunk_size_of (enc);
  unsigned long long n = (size + chunk - 1) / chunk;
  size_t first = size < chunk ? (size_t) size : chunk;
  if (data.len != first)
    r = kiln_error_set (err, KILN_ERR_REMOTE, 0, "chunk 0 has %zu bytes, expected %zu (did the file change?)",
                        data.len, first);
  _cleanup_fclose_ FILE *f = r == 0 ? fdopen (dup (fd), "w") : NULL;
  if (r == 0 && f == NULL)
    r = kiln_fail_errno (err, errno, "write '%s'", local_tmp);
  for (unsigned long long k = 0; r == 0 && k < n; k++)
    {
      if (k > 0)
        {
          size_t expect = k + 1 < n ? chunk : (size_t) (size - k * chunk);
          r = fetch_chunk (s, path, k, enc, expect, NULL, &data, err);
        }
      if (r == 0 && data.len && fwrite (data.data, 1, data.len, f) != data.len)
        r = kiln_fail_errno (err, errno, "write '%s'", local_tmp);
      kiln_buf_reset (&data);
    }
  kiln_buf_release (&data);
  if (r == 0 && (fflush (f) != 0 || fsync (fd) < 0))
    r = kiln_fail_errno (err, errno, "write '%s'", local_tmp);
  if (r < 0)
    return -1;

  struct stat st;
  if (fstat (fd, &st) < 0)
    return kiln_fail_errno (err, errno, "stat '%s'", local_tmp);
  if ((unsigned long long) st.st_size != size)
    return kiln_error_set (err, KILN_ERR_REMOTE, 0, "got %llu bytes, expected %llu",
                           (unsigned long long) st.st_size, size);
  if (strcmp (sha256, "-") != 0)
    {
      char local_sha[KILN_DIGEST_HEX_MAX];
      if (kiln_digest_file_hex ("SHA256", local_tmp, local_sha, err) < 0)
        return -1;
      if (strcmp (local_sha, sha256) != 0)
        return kiln_error_set (err, KILN_ERR_REMOTE, 0, "the copy's SHA-256 differs from the file's (did the file "
                               "change while it was read?)");
    }
  return 0;
}

int
kiln_ssm_get_file (struct kiln_ssm_session *s, const char *path, const char *local_path, kiln_error **err)
{
  _cleanup_unlink_ char *tmp = NULL;
  _cleanup_close_ int fd = kiln_make_temp_beside (local_path, &tmp, err);
  if (fd < 0)
    return kiln_error_prefix (err, "ssm %s: get '%s'", s->instance_id, path);
  if (get_into (s, path, fd, tmp, err) < 0)
    return kiln_error_prefix (err, "ssm %s: get '%s'", s->instance_id, path);
  if (fchmod (fd, 0644) < 0)
    {
      kiln_fail_errno (err, errno, "chmod '%s'", tmp);
      return kiln_error_prefix (err, "ssm %s: get '%s'", s->instance_id, path);
    }
  if (rename (tmp, local_path) < 0)
    {
      kiln_fail_errno (err, errno, "rename '%s' to '%s'", tmp, local_path);
      return kiln_error_prefix (err, "ssm %s: get '%s'", s->instance_id, path);
    }
  free (kiln_steal_pointer (&tmp));
  return 0;
}

/* ---- kiln_ssm_stat ---- */

int
kiln_ssm_stat (struct kiln_ssm_session *s, const char *path, struct kiln_target_stat *st, kiln_error **err)
{
  memset (st, 0, sizeof *st);
  struct kiln_buf b = KILN_BUF_INIT;
  kiln_buf_puts (&b, "f=");
  put_quoted (&b, path);
  /* stat(1) without -L is lstat; %f is the raw st_mode in hex. */
  kiln_buf_puts (&b, "\nif [ -e \"$f\" ] || [ -L \"$f\" ]; then\n"
                     "  s=$(stat -c '%f %u %g %s' -- \"$f\") || exit 1\n"
                     "  echo \"kiln-ssm stat $s\"\n"
                     "else echo 'kiln-ssm stat missing'; fi\n");
  struct kiln_buf out = KILN_BUF_INIT;
  int r = invoke_ok (s, kiln_buf_str (&b), &out, err);
  kiln_buf_release (&b);
  const char *text = kiln_buf_str (&out);
  const char *line = r == 0 ? header_line (text, "stat") : NULL;
  if (r == 0 && line && strncmp (line, "kiln-ssm stat missing", 21) == 0)
    st->exists = false;
  else if (r == 0 && (line == NULL || strncmp (line, "kiln-ssm stat ", 14) != 0
                      || !kiln_target_stat_from_text (line + 14, st)))
    r = kiln_error_set (err, KILN_ERR_REMOTE, 0, "unexpected output from stat(1) on the instance: '%.80s'", text);
  kiln_buf_release (&out);
  if (r < 0)
    return kiln_error_prefix (err, "ssm %s: stat '%s'", s->instance_id, path);
  return 0;
}
