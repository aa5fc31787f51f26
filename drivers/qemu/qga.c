/* qga.c - the QEMU guest agent client (see qga.h).
 *
 * Reading replies: the agent writes one JSON object per line, and before the
 * answer to guest-sync-delimited a 0xFF byte.  0xFF never occurs in JSON text
 * (it is not valid UTF-8), so wherever it appears in a line, what precedes it
 * is debris of an earlier exchange and is dropped.  While syncing, whole lines
 * are dropped until the first 0xFF; after it, only {"return": OUR_ID} ends
 * the sync.  qemu-ga answers the lone 0xFF we send with a parse error object,
 * which arrives before its 0xFF and is dropped with the rest.
 *
 * Requests carry an "id" which the agent echoes; a reply with another id is
 * stale and skipped.  (An agent that does not echo ids is still understood:
 * a reply without one is taken as ours, which the sync makes safe.)
 *
 * Processes run through guest-exec with captured output, and are followed
 * with guest-exec-status, polled at 10 ms doubling to 200 ms: short commands
 * answer fast, long ones cost few round trips.  guest-exec has no working
 * directory, no "extra" environment (its env replaces the whole
 * environment) and no timeout, so kiln_qga_run wraps the program in a small
 * /bin/sh script (POSIX sh, busybox's ash included) that does the first two
 * and makes the program a session and process group leader; at the deadline
 * the client kills that group with another guest-exec. */
#include "qga.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cleanup.h"
#include "digest.h"
#include "log.h"
#include "process.h"
#include "qmp.h"
#include "fsutil.h"
#include "target.h"
#include "xalloc.h"
#include "clock.h"

#define POLL_FIRST_MS 10
#define POLL_MAX_MS 200
/* After SIGKILL, how long the process has to be reported gone. */
#define KILL_WAIT_MS 30000
/* How long the agent gets to report the end of the kill command itself. */
#define KILLER_WAIT_MS 10000
/* The marker of the wrapper's own failures on stderr. */
#define WRAPPER_MARK "kiln-wrapper: "
/* JSON numbers beyond 2^53 are not exact everywhere. */
#define SYNC_ID_MASK ((UINT64_C (1) << 52) - 1)

struct kiln_qga {
  struct kiln_qemu_chan chan;
  bool synced;
  json_int_t next_id;
};

static double
seconds (int timeout_ms)
{
  return timeout_ms / 1000.0;
}

static int
remaining (int64_t deadline)
{
  if (deadline == 0)
    return -1;
  int64_t left = deadline - kiln_monotonic_ms ();
  return left < 0 ? 0 : left > INT32_MAX ? INT32_MAX : (int) left;
}

static void
sleep_ms (int ms)
{
  struct timespec ts = {ms / 1000, (long) (ms % 1000) * 1000000};
  while (nanosleep (&ts, &ts) < 0 && errno == EINTR)
    ;
}

static json_int_t
fresh_id (void)
{
  uint64_t v = 0;
  if (getrandom (&v, sizeof v, GRND_NONBLOCK) != (ssize_t) sizeof v)
    v = (uint64_t) kiln_monotonic_ms () * 2654435761u ^ (uint64_t) getpid () << 20;
  v &= SYNC_ID_MASK;
  return (json_int_t) (v ? v : 1);
}

static struct kiln_qga *
qga_new (void)
{
  struct kiln_qga *g = calloc (1, sizeof *g);
  if (g == NULL)
    abort ();
  g->chan.fd = -1;
  /* Request ids start anywhere: replies meant for another client of this
   * channel (a kiln before us) do not match ours by chance. */
  g->next_id = fresh_id ();
  return g;
}

int
kiln_qga_connect (const char *socket_path, int timeout_ms, struct kiln_qga **out, kiln_error **err)
{
  *out = NULL;
  struct kiln_qga *g = qga_new ();
  if (kiln_qemu_chan_connect (&g->chan, socket_path, "guest agent", timeout_ms, err) < 0)
    {
      kiln_qga_close (g);
      return -1;
    }
  *out = g;
  return 0;
}

struct kiln_qga *
kiln_qga_open_fd (int fd)
{
  struct kiln_qga *g = qga_new ();
  kiln_qemu_chan_adopt (&g->chan, fd, "guest agent");
  return g;
}

void
kiln_qga_close (struct kiln_qga *g)
{
  if (g == NULL)
    return;
  kiln_qemu_chan_close (&g->chan);
  free (g);
}

bool
kiln_qga_synced (const struct kiln_qga *g)
{
  return g->synced;
}

void
kiln_qga_invalidate (struct kiln_qga *g)
{
  g->synced = false;
}

/* The next line with any 0xFF debris removed; *delimited tells whether the
 * line held a 0xFF. */
static int
read_line (struct kiln_qga *g, int64_t deadline, char **text, size_t *len, bool *delimited, kiln_error **err)
{
  char *line;
  size_t n;
  if (kiln_qemu_chan_read_line (&g->chan, deadline, &line, &n, err) < 0)
    return -1;
  char *ff = memrchr (line, 0xFF, n);
  *delimited = ff != NULL;
  if (ff)
    {
      n -= (size_t) (ff + 1 - line);
      line = ff + 1;
    }
  *text = line;
  *len = n;
  return 0;
}

static int
timeout_error (kiln_error **err, const char *command, int timeout_ms)
{
  return kiln_error_set (err, KILN_ERR_TIMEOUT, 0, "guest agent did not answer '%s' within %g s", command,
                         seconds (timeout_ms));
}

static int
remote_error (kiln_error **err, const char *command, json_t *error)
{
  const char *cls = json_string_value (json_object_get (error, "class"));
  const char *desc = json_string_value (json_object_get (error, "desc"));
  return kiln_error_set (err, KILN_ERR_REMOTE, 0, "guest agent command '%s' failed: %s: %s", command,
                         cls ? cls : "Error", desc ? desc : "(no description)");
}

/* Whether msg is a reply to request id: echoes it, or (an agent that does
 * not echo) carries no id at all. */
static bool
reply_matches (json_t *msg, json_int_t id)
{
  json_t *reply_id = json_object_get (msg, "id");
  return reply_id == NULL || (json_is_integer (reply_id) && json_integer_value (reply_id) == id);
}

static int
sync_until (struct kiln_qga *g, int64_t deadline, int timeout_ms, kiln_error **err)
{
  g->synced = false;
  json_int_t id = fresh_id ();
  _cleanup_json_ json_t *request
      = json_pack ("{s:s, s:{s:I}, s:I}", "execute", "guest-sync-delimited", "arguments", "id", id, "id", id);
  _cleanup_free_ char *text = json_dumps (request, JSON_COMPACT);
  _cleanup_free_ char *wire = NULL;
  /* 0xFF first: the agent drops whatever half request it holds. */
  if (text == NULL)
    abort ();
  wire = kiln_xasprintf ("\xff%s\n", text);
  if (kiln_qemu_chan_send (&g->chan, wire, strlen (wire), deadline, err) < 0)
    {
      if (*err && (*err)->code == KILN_ERR_TIMEOUT)
        return timeout_error (err, "guest-sync-delimited", timeout_ms);
      return kiln_error_prefix (err, "sync with the guest agent");
    }

  bool seen_delimiter = false;
  for (;;)
    {
      char *line;
      size_t len;
      bool delimited;
      if (read_line (g, deadline, &line, &len, &delimited, err) < 0)
        {
          if (*err && (*err)->code == KILN_ERR_TIMEOUT)
            return timeout_error (err, "guest-sync-delimited", timeout_ms);
          return kiln_error_prefix (err, "sync with the guest agent");
        }
      seen_delimiter = seen_delimiter || delimited;
      _cleanup_json_ json_t *msg = len ? json_loadb (line, len, 0, NULL) : NULL;
      if (!json_is_object (msg))
        continue;
      json_t *reply_id = json_object_get (msg, "id");
      json_t *error = json_object_get (msg, "error");
      if (error && json_is_integer (reply_id) && json_integer_value (reply_id) == id)
        return remote_error (err, "guest-sync-delimited", error);
      if (!seen_delimiter)
        continue;
      json_t *ret = json_object_get (msg, "return");
      if (json_is_integer (ret) && json_integer_value (ret) == id)
        {
          g->synced = true;
          return 0;
        }
      kiln_log_debug ("guest agent: skipping a stale reply while syncing");
    }
}

int
kiln_qga_sync (struct kiln_qga *g, int timeout_ms, kiln_error **err)
{
  return sync_until (g, kiln_qemu_deadline (timeout_ms), timeout_ms, err);
}

int
kiln_qga_call (struct kiln_qga *g, const char *command, json_t *arguments, json_t **ret, int timeout_ms,
               kiln_error **err)
{
  if (ret)
    *ret = NULL;
  int64_t deadline = kiln_qemu_deadline (timeout_ms);
  if (!g->synced && sync_until (g, deadline, timeout_ms, err) < 0)
    {
      if (*err && (*err)->code == KILN_ERR_TIMEOUT)
        return timeout_error (err, command, timeout_ms);
      return -1;
    }

  json_int_t id = g->next_id++;
  _cleanup_json_ json_t *request = json_pack ("{s:s, s:I}", "execute", command, "id", id);
  if (arguments)
    json_object_set (request, "arguments", arguments);
  if (kiln_qemu_chan_send_json (&g->chan, request, deadline, err) < 0)
    {
      g->synced = false;
      if (*err && (*err)->code == KILN_ERR_TIMEOUT)
        return timeout_error (err, command, timeout_ms);
      return kiln_error_prefix (err, "send '%s' to the guest agent", command);
    }

  for (;;)
    {
      char *line;
      size_t len;
      bool delimited;
      if (read_line (g, deadline, &line, &len, &delimited, err) < 0)
        {
          /* The reply may still come: it must not be taken for the next one's. */
          g->synced = false;
          if (*err && (*err)->code == KILN_ERR_TIMEOUT)
            return timeout_error (err, command, timeout_ms);
          return kiln_error_prefix (err, "guest agent command '%s'", command);
        }
      if (len == 0)
        continue;
      json_error_t je;
      _cleanup_json_ json_t *msg = json_loadb (line, len, 0, &je);
      if (!json_is_object (msg))
        {
          g->synced = false;
          return kiln_error_set (err, KILN_ERR_REMOTE, 0, "guest agent answered '%s' with something that is not "
                                 "a JSON object: %.80s", command, line);
        }
      if (!reply_matches (msg, id))
        {
          kiln_log_debug ("guest agent: skipping a stale reply while waiting for '%s'", command);
          continue;
        }
      json_t *error = json_object_get (msg, "error");
      if (error)
        return remote_error (err, command, error);
      json_t *value = json_object_get (msg, "return");
      if (value == NULL)
        continue; /* neither return nor error: not a reply at all */
      if (ret)
        *ret = json_incref (value);
      return 0;
    }
}

int
kiln_qga_ping (struct kiln_qga *g, int timeout_ms, kiln_error **err)
{
  return kiln_qga_call (g, "guest-ping", NULL, NULL, timeout_ms, err);
}

int
kiln_qga_info (struct kiln_qga *g, json_t **info, int timeout_ms, kiln_error **err)
{
  return kiln_qga_call (g, "guest-info", NULL, info, timeout_ms, err);
}

int
kiln_qga_shutdown (struct kiln_qga *g, const char *mode, int timeout_ms, kiln_error **err)
{
  int64_t deadline = kiln_qemu_deadline (timeout_ms);
  if (!g->synced && sync_until (g, deadline, timeout_ms, err) < 0)
    {
      if (*err && (*err)->code == KILN_ERR_TIMEOUT)
        return timeout_error (err, "guest-shutdown", timeout_ms);
      return -1;
    }
  json_int_t id = g->next_id++;
  _cleanup_json_ json_t *request
      = json_pack ("{s:s, s:{s:s}, s:I}", "execute", "guest-shutdown", "arguments", "mode", mode, "id", id);
  /* Whatever happens next, the agent that answers later is another one. */
  g->synced = false;
  if (kiln_qemu_chan_send_json (&g->chan, request, deadline, err) < 0)
    return kiln_error_prefix (err, "send 'guest-shutdown' to the guest agent");

  /* Until the deadline, an error reply may come; silence means success. */
  for (;;)
    {
      char *line;
      size_t len;
      bool delimited;
      _cleanup_error_ kiln_error *read_err = NULL;
      if (read_line (g, deadline, &line, &len, &delimited, &read_err) < 0)
        return 0; /* silence (or the agent going away): taken */
      _cleanup_json_ json_t *msg = len ? json_loadb (line, len, 0, NULL) : NULL;
      if (!json_is_object (msg) || !reply_matches (msg, id))
        continue;
      json_t *error = json_object_get (msg, "error");
      if (error)
        return remote_error (err, "guest-shutdown", error);
      return 0;
    }
}

/* --- processes ---------------------------------------------------------- */

void
kiln_qga_exec_result_release (struct kiln_qga_exec_result *res)
{
  kiln_buf_release (&res->out);
  kiln_buf_release (&res->err);
}

static json_t *
string_array (char *const *v)
{
  json_t *a = json_array ();
  for (size_t i = 0; v && v[i]; i++)
    json_array_append_new (a, json_string (v[i]));
  return a;
}

/* guest-exec; *pid gets the guest's pid. */
static int
start_process (struct kiln_qga *g, const struct kiln_qga_exec_spec *spec, int64_t *pid, kiln_error **err)
{
  _cleanup_json_ json_t *args = json_pack ("{s:s, s:o, s:b}", "path", spec->path, "arg", string_array (spec->args),
                                           "capture-output", spec->capture);
  if (args == NULL)
    return kiln_fail_invalid (err, "guest command line is not valid UTF-8");
  if (spec->env)
    json_object_set_new (args, "env", string_array (spec->env));
  if (spec->input)
    {
      _cleanup_free_ char *b64 = kiln_base64_encode (spec->input, spec->input_len);
      json_object_set_new (args, "input-data", json_string (b64));
    }
  _cleanup_json_ json_t *ret = NULL;
  if (kiln_qga_call (g, "guest-exec", args, &ret, spec->call_timeout_ms, err) < 0)
    return -1;
  json_t *p = json_object_get (ret, "pid");
  if (!json_is_integer (p))
    return kiln_error_set (err, KILN_ERR_REMOTE, 0, "guest agent answered 'guest-exec' without a pid");
  *pid = json_integer_value (p);
  return 0;
}

static int
decode_output (json_t *status, const char *key, struct kiln_buf *into, kiln_error **err)
{
  const char *b64 = json_string_value (json_object_get (status, key));
  if (b64 == NULL)
    return 0;
  unsigned char *data = NULL;
  size_t len = 0;
  if (kiln_base64_decode (b64, strlen (b64), &data, &len) < 0)
    return kiln_error_set (err, KILN_ERR_REMOTE, 0, "guest agent sent malformed base64 in '%s'", key);
  kiln_buf_append (into, data, len);
  free (data);
  return 0;
}

/* One guest-exec-status: *exited says whether the process is done, and
 * then res holds its status and output. */
static int
poll_process (struct kiln_qga *g, int64_t pid, int call_timeout_ms, bool *exited, struct kiln_qga_exec_result *res,
              kiln_error **err)
{
  _cleanup_json_ json_t *args = json_pack ("{s:I}", "pid", (json_int_t) pid);
  _cleanup_json_ json_t *st = NULL;
  if (kiln_qga_call (g, "guest-exec-status", args, &st, call_timeout_ms, err) < 0)
    return -1;
  *exited = json_is_true (json_object_get (st, "exited"));
  if (!*exited || res == NULL)
    return 0;
  json_t *code = json_object_get (st, "exitcode");
  json_t *sig = json_object_get (st, "signal");
  res->exit_code = json_is_integer (code) ? (int) json_integer_value (code) : -1;
  res->term_signal = json_is_integer (sig) ? (int) json_integer_value (sig) : 0;
  if (res->term_signal)
    res->exit_code = -1;
  res->out_truncated = json_is_true (json_object_get (st, "out-truncated"));
  res->err_truncated = json_is_true (json_object_get (st, "err-truncated"));
  if (decode_output (st, "out-data", &res->out, err) < 0 || decode_output (st, "err-data", &res->err, err) < 0)
    return -1;
  return 0;
}

/* Polls until the process has exited or deadline (0: none) has passed;
 * *exited tells which. */
static int
follow_process (struct kiln_qga *g, int64_t pid, int64_t deadline, int call_timeout_ms, volatile sig_atomic_t *cancel,
                bool *exited, struct kiln_qga_exec_result *res, kiln_error **err)
{
  int pause = POLL_FIRST_MS;
  for (;;)
    {
      if (poll_process (g, pid, call_timeout_ms, exited, res, err) < 0)
        return -1;
      if (*exited || (cancel && *cancel))
        return 0;
      int left = remaining (deadline);
      if (left == 0)
        return 0;
      sleep_ms (left > 0 && left < pause ? left : pause);
      pause = pause * 2 > POLL_MAX_MS ? POLL_MAX_MS : pause * 2;
    }
}

char **
kiln_qga_kill_args (int64_t pid, bool group)
{
  char pid_text[32];
  snprintf (pid_text, sizeof pid_text, "%lld", (long long) pid);
  /* No "--": dash's kill takes it for a pid.  "-9 -PID" is the one spelling
   * dash, bash and busybox ash all read as "the group PID". */
  return kiln_strv_new ("-c", group ? "kill -9 -\"$1\" 2>/dev/null || kill -9 \"$1\"" : "kill -9 \"$1\"",
                        "kiln-kill", pid_text, NULL);
}

/* SIGKILL for the guest process pid (and its group when asked), through
 * another guest-exec; the killer itself is followed to its end so the agent
 * forgets it. */
static int
kill_process (struct kiln_qga *g, int64_t pid, bool group, int call_timeout_ms, kiln_error **err)
{
  _cleanup_strv_ char **args = kiln_qga_kill_args (pid, group);
  struct kiln_qga_exec_spec killer = {.path = "/bin/sh", .args = args, .call_timeout_ms = call_timeout_ms};
  int64_t killer_pid;
  if (start_process (g, &killer, &killer_pid, err) < 0)
    return kiln_error_prefix (err, "kill guest process %lld", (long long) pid);
  bool exited = false;
  if (follow_process (g, killer_pid, kiln_qemu_deadline (KILLER_WAIT_MS), call_timeout_ms, NULL, &exited, NULL, err)
      < 0)
    return kiln_error_prefix (err, "kill guest process %lld", (long long) pid);
  return 0;
}

int
kiln_qga_exec (struct kiln_qga *g, const struct kiln_qga_exec_spec *spec, struct kiln_qga_exec_result *res,
               kiln_error **err)
{
  *res = (struct kiln_qga_exec_result){.exit_code = -1, .out = KILN_BUF_INIT, .err = KILN_BUF_INIT};
  if (start_process (g, spec, &res->pid, err) < 0)
    return -1;
  int64_t deadline = spec->timeout_ms > 0 ? kiln_monotonic_ms () + spec->timeout_ms : 0;
  bool exited = false;
  if (follow_process (g, res->pid, deadline, spec->call_timeout_ms, spec->cancel, &exited, res, err) < 0)
    return kiln_error_prefix (err, "follow guest process %lld ('%s')", (long long) res->pid, spec->path);
  if (exited)
    return 0;

  bool cancelled = spec->cancel && *spec->cancel;
  kiln_log_debug ("guest process %lld ('%s') %s: killing it", (long long) res->pid, spec->path,
                  cancelled ? "is cancelled" : "passed its deadline");
  res->timed_out = !cancelled;
  if (kill_process (g, res->pid, spec->kill_group, spec->call_timeout_ms, err) < 0)
    return -1;
  if (follow_process (g, res->pid, kiln_qemu_deadline (KILL_WAIT_MS), spec->call_timeout_ms, NULL, &exited, res, err)
      < 0)
    return kiln_error_prefix (err, "follow guest process %lld ('%s')", (long long) res->pid, spec->path);
  if (!exited)
    return kiln_error_set (err, KILN_ERR_TIMEOUT, 0, "guest process %lld ('%s') did not end within %g s of SIGKILL",
                           (long long) res->pid, spec->path, seconds (KILL_WAIT_MS));
  res->exit_code = -1;
  if (cancelled)
    return kiln_error_set (err, KILN_ERR_CANCELLED, 0, "guest process %lld ('%s') stopped: interrupted",
                           (long long) res->pid, spec->path);
  return 0;
}

/* $1: working directory or ""; $2: how many NAME=VALUE follow; then the
 * program and its arguments.  The program becomes a session (and so process
 * group) leader with the pid guest-exec reported, whose group the deadline
 * kills.  setsid(1) forks when its caller already leads a group, which would
 * lose the exit status: then the shell, already the leader, execs directly. */
static const char wrapper_script[] =
  "if [ -n \"$1\" ]; then cd \"$1\" 2>/dev/null || { echo \"" WRAPPER_MARK "cannot change directory to $1\" >&2; "
  "exit 127; }; fi\n"
  "n=$2; shift 2\n"
  "while [ \"$n\" -gt 0 ]; do export \"$1\"; shift; n=$((n - 1)); done\n"
  "command -v \"$1\" >/dev/null 2>&1 || { echo \"" WRAPPER_MARK "command not found: $1\" >&2; exit 127; }\n"
  "command -v setsid >/dev/null 2>&1 || exec \"$@\"\n"
  "g=; read -r _ _ _ _ g _ 2>/dev/null </proc/$$/stat\n"
  "[ \"$g\" = \"$$\" ] && exec \"$@\"\n"
  "exec setsid \"$@\"\n";

char **
kiln_qga_run_args (const struct kiln_qga_run_spec *spec)
{
  char count[32];
  snprintf (count, sizeof count, "%zu", kiln_strv_length (spec->env));
  char **args = kiln_strv_new ("-c", wrapper_script, "kiln-run", spec->cwd ? spec->cwd : "", count, NULL);
  for (size_t i = 0; spec->env && spec->env[i]; i++)
    kiln_strv_push (&args, spec->env[i]);
  for (size_t i = 0; spec->argv && spec->argv[i]; i++)
    kiln_strv_push (&args, spec->argv[i]);
  return args;
}

static bool
starts_with (const struct kiln_buf *b, const char *prefix)
{
  return b->len >= strlen (prefix) && memcmp (b->data, prefix, strlen (prefix)) == 0;
}

int
kiln_qga_run (struct kiln_qga *g, const struct kiln_qga_run_spec *spec, struct kiln_qga_exec_result *res,
              kiln_error **err)
{
  *res = (struct kiln_qga_exec_result){.exit_code = -1, .out = KILN_BUF_INIT, .err = KILN_BUF_INIT};
  if (spec->argv == NULL || spec->argv[0] == NULL || spec->argv[0][0] == '\0')
    return kiln_fail_invalid (err, "run on the guest: empty command line");
  for (size_t i = 0; spec->env && spec->env[i]; i++)
    if (!kiln_target_env_entry_valid (spec->env[i]))
      return kiln_fail_invalid (err, "environment entry '%s' is not NAME=VALUE with a shell variable name",
                                spec->env[i]);

  _cleanup_strv_ char **args = kiln_qga_run_args (spec);
  struct kiln_qga_exec_spec exec = {
    .path = "/bin/sh",
    .args = args,
    .input = spec->input,
    .input_len = spec->input_len,
    .capture = true,
    .timeout_ms = spec->timeout_ms,
    .call_timeout_ms = spec->call_timeout_ms,
    .kill_group = true,
    .cancel = spec->cancel,
  };
  if (kiln_qga_exec (g, &exec, res, err) < 0)
    return kiln_error_prefix (err, "run '%s' on the guest", spec->argv[0]);
  if (res->exit_code == 127 && !res->timed_out)
    {
      if (starts_with (&res->err, WRAPPER_MARK "cannot change directory"))
        return kiln_error_set (err, KILN_ERR_NOT_FOUND, 0, "change directory to '%s' on the guest: no such "
                               "directory (or not accessible)", spec->cwd);
      if (starts_with (&res->err, WRAPPER_MARK "command not found"))
        return kiln_error_set (err, KILN_ERR_NOT_FOUND, 0, "execute '%s' on the guest: command not found",
                               spec->argv[0]);
    }
  return 0;
}

/* --- files -------------------------------------------------------------- */

static int
file_open (struct kiln_qga *g, const char *path, const char *mode, int call_timeout_ms, json_int_t *handle,
           kiln_error **err)
{
  _cleanup_json_ json_t *args = json_pack ("{s:s, s:s}", "path", path, "mode", mode);
  if (args == NULL)
    return kiln_fail_invalid (err, "guest path is not valid UTF-8");
  _cleanup_json_ json_t *ret = NULL;
  if (kiln_qga_call (g, "guest-file-open", args, &ret, call_timeout_ms, err) < 0)
    return -1;
  if (!json_is_integer (ret))
    return kiln_error_set (err, KILN_ERR_REMOTE, 0, "guest agent answered 'guest-file-open' without a handle");
  *handle = json_integer_value (ret);
  return 0;
}

static int
file_close (struct kiln_qga *g, json_int_t handle, int call_timeout_ms, kiln_error **err)
{
  _cleanup_json_ json_t *args = json_pack ("{s:I}", "handle", handle);
  return kiln_qga_call (g, "guest-file-close", args, NULL, call_timeout_ms, err);
}

static int
read_some (int fd, char *buf, size_t size, size_t *got)
{
  *got = 0;
  while (*got < size)
    {
      ssize_t n = read (fd, buf + *got, size - *got);
      if (n < 0 && errno == EINTR)
        continue;
      if (n < 0)
        return -1;
      if (n == 0)
        break;
      *got += (size_t) n;
    }
  return 0;
}

int
kiln_qga_file_put (struct kiln_qga *g, const char *local_path, const char *path, int call_timeout_ms,
                   kiln_error **err)
{
  _cleanup_close_ int fd = open (local_path, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return kiln_error_set (err, errno == ENOENT ? KILN_ERR_NOT_FOUND : KILN_ERR_IO, errno, "open '%s'", local_path);
  json_int_t handle;
  if (file_open (g, path, "w", call_timeout_ms, &handle, err) < 0)
    return kiln_error_prefix (err, "write '%s' on the guest", path);

  _cleanup_free_ char *chunk = malloc (KILN_QGA_FILE_CHUNK);
  if (chunk == NULL)
    abort ();
  int r = 0;
  for (;;)
    {
      size_t got;
      if (read_some (fd, chunk, KILN_QGA_FILE_CHUNK, &got) < 0)
        {
          r = kiln_fail_errno (err, errno, "read '%s'", local_path);
          break;
        }
      if (got == 0)
        break;
      _cleanup_free_ char *b64 = kiln_base64_encode ((const unsigned char *) chunk, got);
      _cleanup_json_ json_t *args = json_pack ("{s:I, s:s}", "handle", handle, "buf-b64", b64);
      _cleanup_json_ json_t *ret = NULL;
      if (kiln_qga_call (g, "guest-file-write", args, &ret, call_timeout_ms, err) < 0)
        {
          r = kiln_error_prefix (err, "write '%s' on the guest", path);
          break;
        }
      json_t *count = json_object_get (ret, "count");
      if (!json_is_integer (count) || (size_t) json_integer_value (count) != got)
        {
          r = kiln_error_set (err, KILN_ERR_REMOTE, 0, "write '%s' on the guest: the agent wrote %lld of %zu bytes",
                              path, (long long) json_integer_value (count), got);
          break;
        }
      if (got < KILN_QGA_FILE_CHUNK)
        break;
    }
  /* Closed whatever happened: the agent keeps open handles forever. */
  _cleanup_error_ kiln_error *close_err = NULL;
  if (file_close (g, handle, call_timeout_ms, r < 0 ? &close_err : err) < 0 && r == 0)
    return kiln_error_prefix (err, "close '%s' on the guest", path);
  return r;
}



/* Reads the open guest file handle into fd until its end. */
static int
copy_out (struct kiln_qga *g, json_int_t handle, int fd, const char *path, const char *local_path,
          int call_timeout_ms, kiln_error **err)
{
  for (;;)
    {
      _cleanup_json_ json_t *args = json_pack ("{s:I, s:i}", "handle", handle, "count", KILN_QGA_FILE_CHUNK);
      _cleanup_json_ json_t *ret = NULL;
      if (kiln_qga_call (g, "guest-file-read", args, &ret, call_timeout_ms, err) < 0)
        return kiln_error_prefix (err, "read '%s' on the guest", path);
      const char *b64 = json_string_value (json_object_get (ret, "buf-b64"));
      json_t *count = json_object_get (ret, "count");
      if (b64 == NULL || !json_is_integer (count))
        return kiln_error_set (err, KILN_ERR_REMOTE, 0, "read '%s' on the guest: malformed guest-file-read reply",
                               path);
      unsigned char *data = NULL;
      size_t len = 0;
      if (kiln_base64_decode (b64, strlen (b64), &data, &len) < 0 || len != (size_t) json_integer_value (count))
        {
          free (data);
          return kiln_error_set (err, KILN_ERR_REMOTE, 0, "read '%s' on the guest: bad data in guest-file-read reply",
                                 path);
        }
      int w = kiln_write_all (fd, data, len);
      free (data);
      if (w < 0)
        return kiln_fail_errno (err, errno, "write '%s'", local_path);
      if (json_is_true (json_object_get (ret, "eof")) || len == 0)
        return 0;
    }
}

int
kiln_qga_file_get (struct kiln_qga *g, const char *path, const char *local_path, int call_timeout_ms,
                   kiln_error **err)
{
  _cleanup_unlink_ char *tmp = NULL;
  _cleanup_close_ int fd = kiln_make_temp_beside (local_path, &tmp, err);
  if (fd < 0)
    return -1;

  json_int_t handle;
  if (file_open (g, path, "r", call_timeout_ms, &handle, err) < 0)
    return kiln_error_prefix (err, "read '%s' on the guest", path);
  int r = copy_out (g, handle, fd, path, local_path, call_timeout_ms, err);
  _cleanup_error_ kiln_error *close_err = NULL;
  if (file_close (g, handle, call_timeout_ms, r < 0 ? &close_err : err) < 0 && r == 0)
    return kiln_error_prefix (err, "close '%s' on the guest", path);
  if (r < 0)
    return -1;
  if (fchmod (fd, 0644) < 0 || fsync (fd) < 0)
    return kiln_fail_errno (err, errno, "write '%s'", tmp);
  if (rename (tmp, local_path) < 0)
    return kiln_fail_errno (err, errno, "rename '%s' to '%s'", tmp, local_path);
  free (kiln_steal_pointer (&tmp));
  return 0;
}
