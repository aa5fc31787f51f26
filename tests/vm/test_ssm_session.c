/* test_ssm_session.c - the SSM target operations (drivers/ec2/ssm_session.c)
 * against kiln-emulator running a real guest (suite 'vm', TAP).
 *
 * Usage: test_ssm_session KILN_EMULATOR; the image comes from
 * $KILN_TEST_IMAGE and without it the whole test is skipped ("1..0 # SKIP").
 * The emulator is started in qemu mode on a kernel-chosen port with its state
 * in a temporary directory, the image imported, one t3.micro launched, and
 * every operation exercised through SendCommand and GetCommandInvocation as
 * the EC2 driver uses them: kiln_ssm_shell; kiln_ssm_run with quoting, env,
 * cwd, exit codes, both streams large and small, a timeout the guest
 * enforces and the wrapper's own failures; a ~200 KB random file put, read
 * back through get_file and through a run's stdout; stat of a file, a
 * directory, a symlink and nothing; and a cancellation from another thread.
 * How many commands a small run costs is counted with ListCommands, and the
 * times are printed as TAP comments.  The instance is terminated and the
 * emulator stopped at the end. */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "aws_client.h"
#include "aws_config.h"
#include "buf.h"
#include "cleanup.h"
#include "fsutil.h"
#include "process.h"
#include "ec2/ssm_session.h"
#include "tap.h"
#include "xalloc.h"

#define BOOT_TIMEOUT_S 600
#define PUT_SIZE 200003 /* no multiple of any chunk size */

static char *tmp;
static pid_t emulator_pid = -1;

static void diag (const char *fmt, ...) __attribute__ ((format (printf, 1, 2)));

/* A TAP diagnostic, each line prefixed with "# ". */
static void
diag (const char *fmt, ...)
{
  char *text = NULL;
  va_list ap;
  va_start (ap, fmt);
  text = kiln_xvasprintf (fmt, ap);
  va_end (ap);
  for (char *line = text; *line;)
    {
      char *nl = strchr (line, '\n');
      size_t n = nl ? (size_t) (nl - line) : strlen (line);
      printf ("# %.*s\n", (int) n, line);
      line += n + (nl ? 1 : 0);
    }
  free (text);
}

/* text with newlines and backslashes escaped, for TAP lines (which must
 * not break); from a ring of 8 buffers, so several fit in one tap_ok. */
static const char *
esc (const char *text)
{
  static char *ring[8];
  static int next;
  struct kiln_buf b = KILN_BUF_INIT;
  for (const char *p = text ? text : ""; *p; p++)
    if (*p == '\n')
      kiln_buf_puts (&b, "\\n");
    else if (*p == '\\')
      kiln_buf_puts (&b, "\\\\");
    else
      kiln_buf_append (&b, p, 1);
  free (ring[next]);
  ring[next] = kiln_buf_steal (&b);
  const char *r = ring[next];
  next = (next + 1) % 8;
  return r;
}

static void
stop_emulator (void)
{
  if (emulator_pid > 0)
    {
      kill (emulator_pid, SIGTERM);
      if (kiln_process_wait_exit (emulator_pid, 60000, NULL) == 0)
        {
          kill (emulator_pid, SIGKILL);
          kiln_process_wait_exit (emulator_pid, -1, NULL);
        }
      emulator_pid = -1;
    }
}

static void
cleanup_tmp (void)
{
  stop_emulator ();
  if (tmp && getenv ("KILN_TEST_KEEP") == NULL)
    kiln_remove_tree (tmp, NULL);
  free (tmp);
  tmp = NULL;
}

static char *
path_in_tmp (const char *name)
{
  char *p = NULL;
  p = kiln_xasprintf ("%s/%s", tmp, name);
  return p;
}

/* Runs argv here to completion; its stdout (trimmed) in *out when asked. */
static bool
run_tool (char *const *argv, char **out)
{
  struct kiln_process_spec spec = {.argv = argv, .timeout_ms = 300000};
  struct kiln_process_result res = {0};
  _cleanup_error_ kiln_error *e = NULL;
  bool ok = kiln_process_run (&spec, &res, &e) == 0 && res.exit_code == 0;
  if (!ok)
    diag ("%s: %s%s", argv[0], e ? esc (kiln_error_message (e)) : "exit status ", e ? "" : esc (kiln_buf_str (&res.err)));
  if (ok && out)
    {
      char *s = kiln_buf_steal (&res.out);
      size_t l = strlen (s);
      while (l > 0 && (s[l - 1] == '\n' || s[l - 1] == ' '))
        s[--l] = '\0';
      *out = s;
    }
  kiln_process_result_release (&res);
  return ok;
}

/* Starts the emulator on a kernel-chosen port; returns the port. */
static int
start_emulator (const char *emulator, const char *state_dir)
{
  _cleanup_free_ char *out_path = path_in_tmp ("emulator.out");
  _cleanup_strv_ char **argv = kiln_strv_new (emulator, "--instances", "qemu", "--listen", "127.0.0.1:0",
                                              "--state-dir", state_dir, NULL);
  struct kiln_process_spawn_spec spec = {.argv = argv, .stdout_path = out_path, .stderr_path = out_path};
  _cleanup_error_ kiln_error *e = NULL;
  if (kiln_process_spawn (&spec, &emulator_pid, &e) < 0)
    {
      diag ("%s", esc (kiln_error_message (e)));
      return -1;
    }
  static const char mark[] = "listening on http://127.0.0.1:";
  double deadline = seconds_now () + 60;
  while (seconds_now () < deadline)
    {
      struct kiln_buf b = KILN_BUF_INIT;
      int port = -1;
      if (kiln_read_file (out_path, &b, NULL) == 0 && strstr (kiln_buf_str (&b), mark))
        port = atoi (strstr (kiln_buf_str (&b), mark) + strlen (mark));
      kiln_buf_release (&b);
      if (port > 0)
        return port;
      if (kiln_process_wait_exit (emulator_pid, 0, NULL) == 1)
        {
          emulator_pid = -1;
          diag ("the emulator exited before listening");
          return -1;
        }
      struct timespec ts = {0, 20 * 1000 * 1000};
      nanosleep (&ts, NULL);
    }
  diag ("the emulator printed no port within 60 s");
  return -1;
}

/* ---- AWS ---- */

struct fake_env {
  const char *vars[8];
};

static const char *
fake_getenv (const char *name, void *opaque)
{
  const struct fake_env *fe = opaque;
  size_t l = strlen (name);
  for (int i = 0; i < 8 && fe->vars[i]; i++)
    if (strncmp (fe->vars[i], name, l) == 0 && fe->vars[i][l] == '=')
      return fe->vars[i] + l + 1;
  return NULL;
}

static const struct fake_env test_env = {{"HOME=/nonexistent/kiln-test", "AWS_ACCESS_KEY_ID=test",
                                          "AWS_SECRET_ACCESS_KEY=test", "AWS_REGION=us-east-1"}};
static const struct kiln_aws_env aws_env = {fake_getenv, (void *) &test_env};

static struct kiln_aws_client *
client_for (const char *service, const char *endpoint)
{
  struct kiln_aws_config *cfg = NULL;
  _cleanup_error_ kiln_error *e = NULL;
  if (kiln_aws_config_load (&aws_env, NULL, &cfg, &e) < 0)
    {
      diag ("%s", esc (kiln_error_message (e)));
      return NULL;
    }
  struct kiln_aws_client_options o = {.endpoint_url = endpoint, .region = "us-east-1", .timeout_seconds = 60};
  struct kiln_aws_client *c = NULL;
  if (kiln_aws_client_new (cfg, service, &o, &c, &e) < 0)
    diag ("%s", esc (kiln_error_message (e)));
  kiln_aws_config_free (cfg);
  return c;
}

/* RunInstances, then DescribeInstances until running; the id, or NULL. */
static char *
launch (struct kiln_aws_client *ec2, const char *ami)
{
  struct kiln_aws_params p = KILN_AWS_PARAMS_INIT;
  kiln_aws_params_add (&p, "ImageId", ami);
  kiln_aws_params_add (&p, "InstanceType", "t3.micro");
  kiln_aws_params_add (&p, "MinCount", "1");
  kiln_aws_params_add (&p, "MaxCount", "1");
  xmlDoc *doc = NULL;
  _cleanup_error_ kiln_error *e = NULL;
  int r = kiln_aws_ec2_call (ec2, "RunInstances", &p, &doc, NULL, &e);
  kiln_aws_params_release (&p);
  char *id = r == 0 ? kiln_aws_xml_text (kiln_aws_xml_root (doc), "instancesSet/item/instanceId") : NULL;
  xmlFreeDoc (doc);
  if (id == NULL)
    {
      diag ("RunInstances: %s", e ? esc (kiln_error_message (e)) : "no instance id");
      return NULL;
    }
  double deadline = seconds_now () + BOOT_TIMEOUT_S;
  while (seconds_now () < deadline)
    {
      kiln_aws_params_add (&p, "InstanceId.1", id);
      doc = NULL;
      kiln_error_freep (&e);
      r = kiln_aws_ec2_call (ec2, "DescribeInstances", &p, &doc, NULL, &e);
      kiln_aws_params_release (&p);
      _cleanup_free_ char *state = r == 0 ? kiln_aws_xml_text (kiln_aws_xml_root (doc), "reservationSet/item/"
                                                               "instancesSet/item/instanceState/name")
                                          : NULL;
      xmlFreeDoc (doc);
      if (r < 0)
        diag ("DescribeInstances: %s", esc (kiln_error_message (e)));
      else if (state && strcmp (state, "running") == 0)
        return id;
      else if (state && strcmp (state, "pending") != 0)
        {
          diag ("instance %s is %s", id, state);
          break;
        }
      sleep (1);
    }
  free (id);
  return NULL;
}

static void
terminate (struct kiln_aws_client *ec2, const char *id)
{
  struct kiln_aws_params p = KILN_AWS_PARAMS_INIT;
  kiln_aws_params_add (&p, "InstanceId.1", id);
  xmlDoc *doc = NULL;
  _cleanup_error_ kiln_error *e = NULL;
  int r = kiln_aws_ec2_call (ec2, "TerminateInstances", &p, &doc, NULL, &e);
  kiln_aws_params_release (&p);
  xmlFreeDoc (doc);
  tap_ok (r == 0, "TerminateInstances %s%s%s", id, r ? ": " : "", r ? esc (kiln_error_message (e)) : "");
}

/* How many commands the instance has been sent (ListCommands, all pages). */
static long
count_commands (struct kiln_aws_client *ssm, const char *instance)
{
  long n = 0;
  _cleanup_free_ char *token = NULL;
  do
    {
      _cleanup_json_ json_t *in = json_pack ("{s:s, s:i}", "InstanceId", instance, "MaxResults", 50);
      if (token)
        json_object_set_new (in, "NextToken", json_string (token));
      _cleanup_json_ json_t *out = NULL;
      _cleanup_error_ kiln_error *e = NULL;
      if (kiln_aws_json_call (ssm, "AmazonSSM.ListCommands", in, &out, NULL, &e) < 0)
        {
          diag ("ListCommands: %s", esc (kiln_error_message (e)));
          return -1;
        }
      n += (long) json_array_size (json_object_get (out, "Commands"));
      free (token);
      const char *next = json_string_value (json_object_get (out, "NextToken"));
      token = next ? kiln_xstrdup (next) : NULL;
    }
  while (token);
  return n;
}

/* ---- the operations ---- */

static struct kiln_ssm_session *session;

/* Runs argv; the result in *res (released by the caller); true when the
 * call succeeded. */
static bool
run (char *const *argv, char *const *env, const char *cwd, int timeout, struct kiln_target_result *res,
     kiln_error **e)
{
  struct kiln_target_command cmd = {.argv = argv, .env = env, .cwd = cwd, .timeout_seconds = timeout};
  return kiln_ssm_run (session, &cmd, res, e) == 0;
}

static bool
buf_is (const struct kiln_buf *b, const char *want)
{
  return b->len == strlen (want) && memcmp (kiln_buf_str (b), want, b->len) == 0;
}

static bool
test_shell (void)
{
  struct kiln_buf out = KILN_BUF_INIT;
  int code = 0;
  _cleanup_error_ kiln_error *e = NULL;
  double t0 = seconds_now ();
  int r = kiln_ssm_shell (session, "echo hello; echo oops >&2; exit 3", NULL, 60, &out, &code, &e);
  diag ("first command (the guest may still be booting): %.1f s", seconds_now () - t0);
  bool ok = tap_ok (r == 0 && code == 3 && buf_is (&out, "hello\n"),
                    "kiln_ssm_shell: exit status 3 is no error, stdout 'hello' (%d, %d, '%s')%s%s", r, code,
                    esc (kiln_buf_str (&out)), e ? ": " : "", e ? esc (kiln_error_message (e)) : "");
  kiln_buf_release (&out);
  kiln_error_freep (&e);
  r = kiln_ssm_shell (session, "pwd", "/etc", 60, &out, &code, &e);
  tap_ok (r == 0 && code == 0 && buf_is (&out, "/etc\n"), "kiln_ssm_shell in cwd /etc: '%s'%s%s",
          esc (kiln_buf_str (&out)), e ? " " : "", e ? esc (kiln_error_message (e)) : "");
  kiln_buf_release (&out);
  kiln_error_freep (&e);
  t0 = seconds_now ();
  r = kiln_ssm_shell (session, "sleep 20", NULL, 2, &out, &code, &e);
  tap_ok (r < 0 && e && e->code == KILN_ERR_TIMEOUT && strstr (e->message, session->instance_id)
              && seconds_now () - t0 < 15,
          "kiln_ssm_shell past executionTimeout: KILN_ERR_TIMEOUT after %.1f s (%s)", seconds_now () - t0,
          esc (kiln_error_message (e)));
  kiln_buf_release (&out);
  return ok;
}

struct seen {
  int calls[3];
  size_t bytes[3];
};

static void
on_output (void *opaque, int stream, const char *data, size_t len)
{
  struct seen *seen = opaque;
  (void) data;
  if (stream == 1 || stream == 2)
    {
      seen->calls[stream]++;
      seen->bytes[stream] += len;
    }
}

/* The session as a target, so output reaches on_output the way the EC2
 * driver's instances deliver it (kiln_target_run). */
static int
session_run (struct kiln_target *t, const struct kiln_target_command *cmd, struct kiln_target_result *res,
             kiln_error **err)
{
  return kiln_ssm_run (t->priv, cmd, res, err);
}

static const struct kiln_target_ops session_ops = {.name = "ssm-session", .run = session_run};

static void
test_run_small (struct kiln_aws_client *ssm)
{
  _cleanup_error_ kiln_error *e = NULL;
  struct kiln_target_result res;
  /* Quoting: spaces, quotes, $, a newline, an empty argument, a backslash. */
  char *argv[] = {"printf", "[%s]", "a b", "it's", "\"q\"", "$HOME `x`", "line\nbreak", "", "back\\slash", NULL};
  long before = count_commands (ssm, session->instance_id);
  double t0 = seconds_now ();
  bool ok = run (argv, NULL, NULL, 60, &res, &e);
  double took = seconds_now () - t0;
  long after = count_commands (ssm, session->instance_id);
  tap_ok (ok && res.exit_code == 0 && !res.timed_out
              && buf_is (&res.out, "[a b][it's][\"q\"][$HOME `x`][line\nbreak][][back\\slash]") && res.err.len == 0,
          "run: argv quoted as given: '%s'%s%s", esc (kiln_buf_str (&res.out)), e ? " " : "",
          e ? esc (kiln_error_message (e)) : "");
  tap_ok (before >= 0 && after - before == 1, "a small run costs %ld SendCommand (%.2f s)", after - before, took);
  kiln_target_result_release (&res);

  kiln_error_freep (&e);
  char *env_argv[] = {"sh", "-c", "printf '%s|%s|%s' \"$FOO\" \"$QUOTE\" \"$PWD\"", NULL};
  char *env[] = {"FOO=bar baz", "QUOTE=it's \"$x\"", NULL};
  ok = run (env_argv, env, "/usr/bin", 60, &res, &e);
  tap_ok (ok && res.exit_code == 0 && buf_is (&res.out, "bar baz|it's \"$x\"|/usr/bin"), "run: env and cwd: '%s'%s%s",
          esc (kiln_buf_str (&res.out)), e ? " " : "", e ? esc (kiln_error_message (e)) : "");
  kiln_target_result_release (&res);

  kiln_error_freep (&e);
  char *fail_argv[] = {"sh", "-c", "echo out; echo err >&2; exit 7", NULL};
  struct seen seen = {0};
  struct kiln_target_command cmd = {.argv = fail_argv, .timeout_seconds = 60, .on_output = on_output, .opaque = &seen};
  struct kiln_target as_target = {.ops = &session_ops, .priv = session};
  ok = kiln_target_run (&as_target, &cmd, &res, &e) == 0;
  tap_ok (ok && res.exit_code == 7 && !res.timed_out && buf_is (&res.out, "out\n") && buf_is (&res.err, "err\n")
              && seen.calls[1] == 1 && seen.calls[2] == 1 && seen.bytes[1] == 4 && seen.bytes[2] == 4,
          "run: exit status 7 with stdout and stderr apart, on_output once per stream (%d, '%s', '%s')%s%s",
          res.exit_code,
          esc (kiln_buf_str (&res.out)), esc (kiln_buf_str (&res.err)), e ? " " : "", e ? esc (kiln_error_message (e)) : "");
  kiln_target_result_release (&res);

  kiln_error_freep (&e);
  ok = run (argv, NULL, "/nonexistent/dir", 60, &res, &e);
  tap_ok (!ok && e && e->code == KILN_ERR_NOT_FOUND && strstr (e->message, "/nonexistent/dir")
              && strstr (e->message, session->instance_id),
          "run: a missing cwd is KILN_ERR_NOT_FOUND (%s)", esc (kiln_error_message (e)));
  kiln_target_result_release (&res);

  kiln_error_freep (&e);
  char *missing_argv[] = {"kiln-no-such-program", NULL};
  ok = run (missing_argv, NULL, NULL, 60, &res, &e);
  tap_ok (!ok && e && e->code == KILN_ERR_NOT_FOUND && strstr (e->message, "command not found"),
          "run: a missing program is KILN_ERR_NOT_FOUND (%s)", esc (kiln_error_message (e)));
  kiln_target_result_release (&res);

  kiln_error_freep (&e);
  char *bad_env[] = {"1X=y", NULL};
  ok = run (argv, bad_env, NULL, 60, &res, &e);
  tap_ok (!ok && e && e->code == KILN_ERR_INVALID, "run: a bad env name is KILN_ERR_INVALID (%s)",
          esc (kiln_error_message (e)));
  kiln_target_result_release (&res);
}

static bool
test_timeout (void)
{
  _cleanup_error_ kiln_error *e = NULL;
  struct kiln_target_result res;
  char *argv[] = {"sh", "-c", "echo started; sleep 6; touch /tmp/kiln-timeout-survived", NULL};
  double t0 = seconds_now ();
  bool ok = run (argv, NULL, NULL, 2, &res, &e);
  double took = seconds_now () - t0;
  tap_ok (ok && res.timed_out && res.exit_code == -1 && buf_is (&res.out, "started\n") && took < 20,
          "run: timeout 2 s is timed_out with exit -1 after %.1f s, output kept ('%s')%s%s", took,
          esc (kiln_buf_str (&res.out)), e ? " " : "", e ? esc (kiln_error_message (e)) : "");
  kiln_target_result_release (&res);
  /* The whole process group went: the sleep's follower never runs. */
  sleep (7);
  struct kiln_target_stat st;
  kiln_error_freep (&e);
  int r = kiln_ssm_stat (session, "/tmp/kiln-timeout-survived", &st, &e);
  return tap_ok (r == 0 && !st.exists, "run: the timed-out command's process group was killed%s%s", e ? ": " : "",
                 e ? esc (kiln_error_message (e)) : "");
}

static bool
write_random_file (const char *path, size_t size, struct kiln_buf *data)
{
  kiln_buf_reset (data);
  unsigned char block[4096];
  while (data->len < size)
    {
      size_t n = size - data->len < sizeof block ? size - data->len : sizeof block;
      if (getrandom (block, n, 0) != (ssize_t) n)
        return false;
      kiln_buf_append (data, block, n);
    }
  return kiln_write_file_atomic (path, data->data, data->len, 0644, NULL) == 0;
}

static void
test_files (void)
{
  _cleanup_error_ kiln_error *e = NULL;
  _cleanup_free_ char *local = path_in_tmp ("up.bin"), *back = path_in_tmp ("back.bin");
  struct kiln_buf data = KILN_BUF_INIT;
  if (!tap_ok (write_random_file (local, PUT_SIZE, &data), "a %d-byte random file", PUT_SIZE))
    return;

  double t0 = seconds_now ();
  int r = kiln_ssm_put_file (session, local, "/tmp/kiln-up.bin", 0751, &e);
  tap_ok (r == 0, "put_file %d bytes (%.1f s)%s%s", PUT_SIZE, seconds_now () - t0, e ? ": " : "",
          e ? esc (kiln_error_message (e)) : "");
  struct kiln_target_stat st;
  kiln_error_freep (&e);
  r = kiln_ssm_stat (session, "/tmp/kiln-up.bin", &st, &e);
  tap_ok (r == 0 && st.exists && st.is_file && !st.is_dir && !st.is_symlink && st.mode == 0751
              && st.size == PUT_SIZE && st.uid == 0,
          "stat: a regular file, mode %04o, %llu bytes, uid %u%s%s", (unsigned) st.mode,
          (unsigned long long) st.size, (unsigned) st.uid, e ? ": " : "", e ? esc (kiln_error_message (e)) : "");

  /* Replacing keeps nothing of the old file, and an empty file works. */
  _cleanup_free_ char *empty = path_in_tmp ("empty");
  kiln_write_file_atomic (empty, "", 0, 0644, NULL);
  kiln_error_freep (&e);
  r = kiln_ssm_put_file (session, empty, "/tmp/kiln-empty", 0600, &e);
  kiln_error_freep (&e);
  int r2 = r == 0 ? kiln_ssm_stat (session, "/tmp/kiln-empty", &st, &e) : -1;
  tap_ok (r == 0 && r2 == 0 && st.is_file && st.size == 0 && st.mode == 0600, "put_file of an empty file%s%s",
          e ? ": " : "", e ? esc (kiln_error_message (e)) : "");

  kiln_error_freep (&e);
  t0 = seconds_now ();
  r = kiln_ssm_get_file (session, "/tmp/kiln-up.bin", back, &e);
  struct kiln_buf got = KILN_BUF_INIT;
  if (r == 0)
    kiln_read_file (back, &got, NULL);
  tap_ok (r == 0 && got.len == data.len && memcmp (got.data, data.data, data.len) == 0,
          "get_file gives back the same %zu bytes (%.1f s)%s%s", got.len, seconds_now () - t0, e ? ": " : "",
          e ? esc (kiln_error_message (e)) : "");
  kiln_buf_release (&got);

  /* Large streams: stdout 300,003 binary bytes, then stderr the same. */
  struct kiln_buf want = KILN_BUF_INIT;
  kiln_buf_append (&want, data.data, data.len);
  kiln_buf_append (&want, data.data, 100000);
  struct kiln_target_result res;
  kiln_error_freep (&e);
  char *cat_out[] = {"sh", "-c", "cat /tmp/kiln-up.bin; head -c 100000 /tmp/kiln-up.bin; echo small >&2", NULL};
  t0 = seconds_now ();
  bool ok = run (cat_out, NULL, NULL, 300, &res, &e);
  tap_ok (ok && res.exit_code == 0 && res.out.len == want.len && memcmp (res.out.data, want.data, want.len) == 0
              && buf_is (&res.err, "small\n"),
          "run: %zu bytes of binary stdout byte for byte, small stderr (%.1f s)%s%s", res.out.len,
          seconds_now () - t0, e ? " " : "", e ? esc (kiln_error_message (e)) : "");
  kiln_target_result_release (&res);
  kiln_error_freep (&e);
  char *cat_err[] = {"sh", "-c", "cat /tmp/kiln-up.bin >&2; echo small; exit 1", NULL};
  ok = run (cat_err, NULL, NULL, 300, &res, &e);
  tap_ok (ok && res.exit_code == 1 && res.err.len == data.len && memcmp (res.err.data, data.data, data.len) == 0
              && buf_is (&res.out, "small\n"),
          "run: %zu bytes of stderr byte for byte, small stdout%s%s", res.err.len, e ? " " : "",
          e ? esc (kiln_error_message (e)) : "");
  kiln_target_result_release (&res);
  kiln_buf_release (&want);
  kiln_buf_release (&data);

  kiln_error_freep (&e);
  r = kiln_ssm_put_file (session, local, "/nonexistent/dir/file", 0644, &e);
  tap_ok (r < 0 && e && e->code == KILN_ERR_NOT_FOUND && strstr (e->message, "/nonexistent/dir/file")
              && strstr (e->message, session->instance_id),
          "put_file into a missing directory is KILN_ERR_NOT_FOUND (%s)", esc (kiln_error_message (e)));
  kiln_error_freep (&e);
  r = kiln_ssm_get_file (session, "/tmp/kiln-no-such-file", back, &e);
  tap_ok (r < 0 && e && e->code == KILN_ERR_NOT_FOUND, "get_file of a missing file is KILN_ERR_NOT_FOUND (%s)",
          esc (kiln_error_message (e)));
}

static void
test_stat (void)
{
  _cleanup_error_ kiln_error *e = NULL;
  struct kiln_target_stat st;
  int r = kiln_ssm_stat (session, "/tmp/kiln-no-such-path", &st, &e);
  tap_ok (r == 0 && !st.exists, "stat: a missing path is exists = false%s%s", e ? ": " : "",
          e ? esc (kiln_error_message (e)) : "");
  kiln_error_freep (&e);
  r = kiln_ssm_stat (session, "/etc", &st, &e);
  tap_ok (r == 0 && st.exists && st.is_dir && !st.is_file && !st.is_symlink && st.mode == 0755,
          "stat: /etc is a directory, mode %04o%s%s", (unsigned) st.mode, e ? ": " : "",
          e ? esc (kiln_error_message (e)) : "");
  kiln_error_freep (&e);
  struct kiln_target_result res;
  char *ln[] = {"ln", "-sf", "/etc/passwd", "/tmp/kiln link's", NULL};
  bool ok = run (ln, NULL, NULL, 60, &res, &e) && res.exit_code == 0;
  kiln_target_result_release (&res);
  r = ok ? kiln_ssm_stat (session, "/tmp/kiln link's", &st, &e) : -1;
  tap_ok (r == 0 && st.exists && st.is_symlink && !st.is_file && st.size == strlen ("/etc/passwd"),
          "stat: a symlink is the link itself (lstat)%s%s", e ? ": " : "", e ? esc (kiln_error_message (e)) : "");
  kiln_error_freep (&e);
  r = kiln_ssm_stat (session, "/tmp/kiln link's/", &st, &e);
  tap_ok (r == 0 && !st.exists, "stat: a path through a file is missing%s%s", e ? ": " : "",
          e ? esc (kiln_error_message (e)) : "");
}

static volatile sig_atomic_t cancel_flag;

static void *
raise_cancel (void *arg)
{
  (void) arg;
  sleep (3);
  cancel_flag = 1;
  return NULL;
}

static void
test_cancel (void)
{
  _cleanup_error_ kiln_error *e = NULL;
  struct kiln_target_result res;
  /* The probe below sees a running sleep. */
  struct kiln_buf out = KILN_BUF_INIT;
  int code = -1;
  int r = kiln_ssm_shell (session, "n=40; sleep $n & sleep 1; ps -o args | grep -c '[s]leep 40'; kill $!", NULL, 60, &out,
                          &code, &e);
  tap_ok (r == 0 && code == 0 && atoi (kiln_buf_str (&out)) == 1, "ps on the instance shows a running sleep 40 "
          "('%s')%s%s", esc (kiln_buf_str (&out)), e ? " " : "", e ? esc (kiln_error_message (e)) : "");
  kiln_buf_release (&out);
  kiln_error_freep (&e);

  char *argv[] = {"sh", "-c", "sleep 40; echo done", "kiln-cancel-probe", NULL};
  cancel_flag = 0;
  session->cancel = &cancel_flag;
  pthread_t thread;
  pthread_create (&thread, NULL, raise_cancel, NULL);
  double t0 = seconds_now ();
  bool ok = run (argv, NULL, NULL, 120, &res, &e);
  double took = seconds_now () - t0;
  pthread_join (thread, NULL);
  kiln_target_result_release (&res);
  tap_ok (!ok && e && e->code == KILN_ERR_CANCELLED && took < 10,
          "run: the cancel flag stops the wait with KILN_ERR_CANCELLED after %.1f s (%s)", took,
          esc (kiln_error_message (e)));
  session->cancel = NULL;

  /* CancelCommand kills the run script; its watchdog then kills the program. */
  bool gone = false;
  double deadline = seconds_now () + 60;
  while (!gone && seconds_now () < deadline)
    {
      out = (struct kiln_buf) KILN_BUF_INIT;
      kiln_error_freep (&e);
      if (kiln_ssm_shell (session, "ps -o args | grep -c '[s]leep 40' || true", NULL, 60, &out, &code, &e) == 0)
        gone = atoi (kiln_buf_str (&out)) == 0;
      else
        diag ("%s", esc (kiln_error_message (e)));
      kiln_buf_release (&out);
      if (!gone)
        sleep (2);
    }
  tap_ok (gone, "the cancelled program is killed on the instance");
}

/* Nothing of kiln's is left in the scratch directory or beside files put. */
static void
test_leftovers (void)
{
  _cleanup_error_ kiln_error *e = NULL;
  struct kiln_buf out = KILN_BUF_INIT;
  int code = -1;
  int r = -1;
  for (int attempt = 0; attempt < 5; attempt++)
    {
      kiln_buf_reset (&out);
      kiln_error_freep (&e);
      r = kiln_ssm_shell (session, "ls -d /tmp/kiln-ssm-* /tmp/*.kiln-* 2>/dev/null; true", NULL, 60, &out, &code,
                          &e);
      if (r < 0 || out.len == 0)
        break;
      sleep (2);
    }
  tap_ok (r == 0 && out.len == 0, "no scratch files left on the instance ('%s')%s%s", esc (kiln_buf_str (&out)),
          e ? " " : "", e ? esc (kiln_error_message (e)) : "");
  kiln_buf_release (&out);
}

int
main (int argc, char **argv)
{
  const char *image = getenv ("KILN_TEST_IMAGE");
  if (image == NULL || *image == '\0')
    {
      printf ("1..0 # SKIP KILN_TEST_IMAGE is not set\n");
      return 0;
    }
  if (argc < 2)
    {
      printf ("1..0 # SKIP no kiln-emulator given\n");
      return 0;
    }
  const char *emulator = argv[1];

  {
    _cleanup_free_ char *q = kiln_shell_quote ("it's $x");
    _cleanup_free_ char *empty = kiln_shell_quote ("");
    tap_ok (strcmp (q, "'it'\\''s $x'") == 0 && strcmp (empty, "''") == 0, "kiln_shell_quote: %s %s", q, empty);
  }

  _cleanup_error_ kiln_error *e = NULL;
  if (kiln_make_temp_dir ("kiln-ssm-test", &tmp, &e) < 0)
    {
      tap_ok (false, "temporary directory: %s", esc (kiln_error_message (e)));
      return tap_done ();
    }
  atexit (cleanup_tmp);
  _cleanup_free_ char *state = path_in_tmp ("state");
  _cleanup_strv_ char **import
      = kiln_strv_new (emulator, "import-image", image, "--name", "kiln-ssm-test", "--state-dir", state, NULL);
  _cleanup_free_ char *ami = NULL;
  bool imported = run_tool (import, &ami) && strncmp (ami, "ami-", 4) == 0;
  if (!tap_ok (imported, "import-image made %s", ami ? ami : "nothing"))
    return tap_done ();
  int port = start_emulator (emulator, state);
  if (!tap_ok (port > 0, "kiln-emulator listening on port %d", port))
    return tap_done ();
  char endpoint[64];
  snprintf (endpoint, sizeof endpoint, "http://127.0.0.1:%d", port);
  struct kiln_aws_client *ec2 = client_for ("ec2", endpoint);
  struct kiln_aws_client *ssm = ec2 ? client_for ("ssm", endpoint) : NULL;
  if (!tap_ok (ec2 && ssm, "clients for ec2 and ssm at %s", endpoint))
    {
      kiln_aws_client_free (ec2);
      return tap_done ();
    }

  double t0 = seconds_now ();
  _cleanup_free_ char *instance = launch (ec2, ami);
  if (tap_ok (instance != NULL, "instance %s running after %.1f s", instance ? instance : "-", seconds_now () - t0))
    {
      struct kiln_ssm_session s = {.ssm = ssm, .instance_id = instance};
      session = &s;
      t0 = seconds_now ();
      if (test_shell ())
        {
          test_run_small (ssm);
          test_stat ();
          test_files ();
          test_timeout ();
          test_cancel ();
          test_leftovers ();
        }
      diag ("operations took %.1f s", seconds_now () - t0);
      terminate (ec2, instance);
    }
  kiln_aws_client_free (ssm);
  kiln_aws_client_free (ec2);
  stop_emulator ();
  return tap_done ();
}
