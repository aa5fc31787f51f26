/* test_process.c - kiln_process_run, kiln_process_spawn, kiln_process_wait_exit
 * and the strv helpers (TAP output).
 *
 * Children that need exact output are this program itself, re-executed
 * through /proc/self/exe with a "--child-..." first argument, so the test
 * depends on no tool beyond sh, cat and sleep. */
#include <errno.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cleanup.h"
#include "process.h"
#include "tap.h"

#define MIB (1024 * 1024)
#define _unused_ __attribute__ ((unused))





/* --- child modes --------------------------------------------------------- */

static int
write_fully (int fd, const char *data, size_t len)
{
  while (len > 0)
    {
      ssize_t n = write (fd, data, len);
      if (n < 0 && errno == EINTR)
        continue;
      if (n < 0)
        return -1;
      data += n;
      len -= (size_t) n;
    }
  return 0;
}

/* Writes out_bytes of 'o' to stdout and err_bytes of 'e' to stderr,
 * alternating 64 KiB blocks, with blocking writes: a parent that drains only
 * one stream at a time deadlocks on this. */
static int
child_spew (size_t out_bytes, size_t err_bytes)
{
  static char out_block[65536], err_block[65536];
  memset (out_block, 'o', sizeof out_block);
  memset (err_block, 'e', sizeof err_block);
  while (out_bytes > 0 || err_bytes > 0)
    {
      size_t n = out_bytes < sizeof out_block ? out_bytes : sizeof out_block;
      if (n && write_fully (1, out_block, n) < 0)
        return 1;
      out_bytes -= n;
      n = err_bytes < sizeof err_block ? err_bytes : sizeof err_block;
      if (n && write_fully (2, err_block, n) < 0)
        return 1;
      err_bytes -= n;
    }
  return 0;
}

/* --- helpers ------------------------------------------------------------- */

struct output_counts {
  size_t out;
  size_t err;
  bool bad_stream;
};

static void
count_output (void *opaque, enum kiln_stream stream, const char *data _unused_, size_t len)
{
  struct output_counts *c = opaque;
  if (stream == KILN_STREAM_STDOUT)
    c->out += len;
  else if (stream == KILN_STREAM_STDERR)
    c->err += len;
  else
    c->bad_stream = true;
}

static bool
all_bytes (const struct kiln_buf *b, char c)
{
  for (size_t i = 0; i < b->len; i++)
    if (b->data[i] != c)
      return false;
  return true;
}

static int
run_argv (char *const *argv, struct kiln_process_result *res, kiln_error **err)
{
  struct kiln_process_spec spec = {.argv = argv};
  return kiln_process_run (&spec, res, err);
}

/* --- tests --------------------------------------------------------------- */

static bool
test_big_interleaved_output (void)
{
  char *argv[] = {"/proc/self/exe", "--child-spew", "8388608", "8388608", NULL};
  struct output_counts counts = {0};
  struct kiln_process_spec spec = {
    .argv = argv, .on_output = count_output, .opaque = &counts, .timeout_ms = 60000};
  struct kiln_process_result res;
  _cleanup_error_ kiln_error *err = NULL;
  int r = kiln_process_run (&spec, &res, &err);
  bool ok = r == 0 && res.exit_code == 0 && !res.timed_out && res.out.len == 8 * MIB && res.err.len == 8 * MIB
            && res.out_total == 8 * MIB && res.err_total == 8 * MIB && all_bytes (&res.out, 'o')
            && all_bytes (&res.err, 'e') && counts.out == 8 * MIB && counts.err == 8 * MIB && !counts.bad_stream;
  if (!ok)
    printf ("# r=%d exit=%d out=%zu err=%zu cb=%zu/%zu %s\n", r, res.exit_code, res.out.len, res.err.len,
            counts.out, counts.err, kiln_error_message (err));
  kiln_process_result_release (&res);
  return ok;
}

static bool
test_stdin_echo (void)
{
  size_t len = MIB;
  _cleanup_free_ char *input = malloc (len);
  CHECK (input != NULL);
  for (size_t i = 0; i < len; i++)
    input[i] = (char) ((i * 7919u) >> 3);
  char *argv[] = {"cat", NULL};
  struct kiln_process_spec spec = {.argv = argv, .stdin_data = input, .stdin_len = len, .timeout_ms = 30000};
  struct kiln_process_result res;
  _cleanup_error_ kiln_error *err = NULL;
  int r = kiln_process_run (&spec, &res, &err);
  bool ok = r == 0 && res.exit_code == 0 && res.out.len == len && memcmp (res.out.data, input, len) == 0;
  kiln_process_result_release (&res);
  return ok;
}

static bool
test_stdin_not_read (void)
{
  /* The child exits without reading: our writes hit EPIPE, which must not
   * kill us with SIGPIPE nor turn into an error. */
  size_t len = 4 * MIB;
  _cleanup_free_ char *input = calloc (1, len);
  CHECK (input != NULL);
  char *argv[] = {"sh", "-c", "exit 0", NULL};
  struct kiln_process_spec spec = {.argv = argv, .stdin_data = input, .stdin_len = len, .timeout_ms = 30000};
  struct kiln_process_result res;
  _cleanup_error_ kiln_error *err = NULL;
  int r = kiln_process_run (&spec, &res, &err);
  bool ok = r == 0 && res.exit_code == 0;
  kiln_process_result_release (&res);

  sigset_t pending;
  sigpending (&pending);
  CHECK (!sigismember (&pending, SIGPIPE));
  return ok;
}

static bool
test_stdin_default_devnull (void)
{
  char *argv[] = {"sh", "-c", "wc -c", NULL};
  struct kiln_process_result res;
  _cleanup_error_ kiln_error *err = NULL;
  CHECK (run_argv (argv, &res, &err) == 0);
  bool ok = res.exit_code == 0 && atoi (kiln_buf_str (&res.out)) == 0;
  kiln_process_result_release (&res);
  return ok;
}

static bool
test_exit_codes (void)
{
  char *zero[] = {"sh", "-c", "exit 0", NULL};
  char *three[] = {"sh", "-c", "exit 3", NULL};
  char *high[] = {"sh", "-c", "exit 255", NULL};
  struct kiln_process_result res;
  _cleanup_error_ kiln_error *err = NULL;

  CHECK (run_argv (zero, &res, &err) == 0);
  CHECK (res.exit_code == 0 && res.term_signal == 0 && !res.timed_out);
  kiln_process_result_release (&res);
  CHECK (run_argv (three, &res, &err) == 0);
  CHECK (res.exit_code == 3 && res.term_signal == 0);
  kiln_process_result_release (&res);
  CHECK (run_argv (high, &res, &err) == 0);
  CHECK (res.exit_code == 255);
  kiln_process_result_release (&res);
  return true;
}

static bool
test_killed_by_signal (void)
{
  char *argv[] = {"sh", "-c", "kill -KILL $$", NULL};
  struct kiln_process_result res;
  _cleanup_error_ kiln_error *err = NULL;
  CHECK (run_argv (argv, &res, &err) == 0);
  bool ok = res.exit_code == -1 && res.term_signal == SIGKILL && !res.timed_out;
  kiln_process_result_release (&res);
  return ok;
}

static bool
test_timeout (void)
{
  char *argv[] = {"sleep", "30", NULL};
  struct kiln_process_spec spec = {.argv = argv, .timeout_ms = 500};
  struct kiln_process_result res;
  _cleanup_error_ kiln_error *err = NULL;
  double start = seconds_now ();
  int r = kiln_process_run (&spec, &res, &err);
  double elapsed = seconds_now () - start;
  printf ("# sleep 30 with 500 ms timeout returned after %.2f s\n", elapsed);
  bool ok = r == 0 && res.timed_out && res.exit_code == -1 && res.term_signal == SIGTERM && elapsed >= 0.45
            && elapsed < 3.0;
  kiln_process_result_release (&res);
  return ok;
}

static bool
test_timeout_with_grandchild (void)
{
  char *argv[] = {"sh", "-c", "sleep 30 & sleep 30", NULL};
  struct kiln_process_spec spec = {.argv = argv, .timeout_ms = 500};
  struct kiln_process_result res;
  _cleanup_error_ kiln_error *err = NULL;
  double start = seconds_now ();
  int r = kiln_process_run (&spec, &res, &err);
  double elapsed = seconds_now () - start;
  printf ("# grandchild case returned after %.2f s\n", elapsed);
  bool ok = r == 0 && res.timed_out && elapsed < 3.0;
  kiln_process_result_release (&res);
  return ok;
}

static bool
test_timeout_term_ignored (void)
{
  /* Everything in the group ignores SIGTERM: SIGKILL after the grace period. */
  char *argv[] = {"sh", "-c", "trap '' TERM; sleep 30", NULL};
  struct kiln_process_spec spec = {.argv = argv, .timeout_ms = 300};
  struct kiln_process_result res;
  _cleanup_error_ kiln_error *err = NULL;
  double start = seconds_now ();
  int r = kiln_process_run (&spec, &res, &err);
  double elapsed = seconds_now () - start;
  printf ("# TERM-ignoring child returned after %.2f s\n", elapsed);
  bool ok = r == 0 && res.timed_out && res.term_signal == SIGKILL && elapsed >= 2.0 && elapsed < 5.0;
  kiln_process_result_release (&res);
  return ok;
}

static bool
test_grandchild_holds_pipes (void)
{
  /* The child exits at once but a background grandchild keeps stdout open:
   * we stop reading about a second later and the grandchild is killed. */
  char *argv[] = {"sh", "-c", "sleep 30 & echo done", NULL};
  struct kiln_process_result res;
  _cleanup_error_ kiln_error *err = NULL;
  double start = seconds_now ();
  int r = run_argv (argv, &res, &err);
  double elapsed = seconds_now () - start;
  printf ("# child with lingering grandchild returned after %.2f s\n", elapsed);
  bool ok = r == 0 && res.exit_code == 0 && !res.timed_out && strcmp (kiln_buf_str (&res.out), "done\n") == 0
            && elapsed < 3.0;
  kiln_process_result_release (&res);
  return ok;
}

static bool
test_grandchild_other_group (void)
{
  /* A grandchild in its own session is out of reach of the group kill; the
   * drain limit alone must end the wait. */
  if (access ("/usr/bin/setsid", X_OK) != 0 && access ("/bin/setsid", X_OK) != 0)
    {
      printf ("# setsid not installed, skipped\n");
      return true;
    }
  char *argv[] = {"sh", "-c", "setsid sleep 4 & echo x", NULL};
  struct kiln_process_result res;
  _cleanup_error_ kiln_error *err = NULL;
  double start = seconds_now ();
  int r = run_argv (argv, &res, &err);
  double elapsed = seconds_now () - start;
  printf ("# grandchild in another session: returned after %.2f s\n", elapsed);
  bool ok = r == 0 && res.exit_code == 0 && elapsed < 3.0;
  kiln_process_result_release (&res);
  return ok;
}

static bool
test_env_override (void)
{
  setenv ("KILN_TEST_VAR", "original", 1);
  setenv ("KILN_TEST_KEEP", "kept", 1);
  char *argv[] = {"sh", "-c",
                  "echo \"$KILN_TEST_VAR $KILN_TEST_KEEP $KILN_TEST_NEW\"; env | grep -c '^KILN_TEST_VAR='", NULL};
  char *env[] = {"KILN_TEST_VAR=override", "KILN_TEST_NEW=new", NULL};
  struct kiln_process_spec spec = {.argv = argv, .env = env};
  struct kiln_process_result res;
  _cleanup_error_ kiln_error *err = NULL;
  CHECK (kiln_process_run (&spec, &res, &err) == 0);
  bool ok = res.exit_code == 0 && strcmp (kiln_buf_str (&res.out), "override kept new\n1\n") == 0;
  if (!ok)
    printf ("# got '%s'\n", kiln_buf_str (&res.out));
  kiln_process_result_release (&res);

  char *bad_env[] = {"NO_EQUALS_SIGN", NULL};
  spec.env = bad_env;
  CHECK (kiln_process_run (&spec, &res, &err) < 0);
  CHECK (err->code == KILN_ERR_INVALID);
  kiln_process_result_release (&res);
  return ok;
}

static bool
test_path_override_used_for_lookup (void)
{
  /* argv[0] is found through the child's PATH, overrides included. */
  char *argv[] = {"kiln-test-fake-tool", NULL};
  char dir[] = "/tmp/kiln-test-path-XXXXXX";
  CHECK (mkdtemp (dir) != NULL);
  _cleanup_free_ char *tool = NULL;
  CHECK (asprintf (&tool, "%s/kiln-test-fake-tool", dir) > 0);
  FILE *f = fopen (tool, "w");
  CHECK (f != NULL);
  fputs ("#!/bin/sh\necho found\n", f);
  fclose (f);
  chmod (tool, 0755);
  _cleanup_free_ char *path_entry = NULL;
  CHECK (asprintf (&path_entry, "PATH=%s:/usr/bin:/bin", dir) > 0);
  char *env[] = {path_entry, NULL};
  struct kiln_process_spec spec = {.argv = argv, .env = env};
  struct kiln_process_result res;
  _cleanup_error_ kiln_error *err = NULL;
  int r = kiln_process_run (&spec, &res, &err);
  bool ok = r == 0 && res.exit_code == 0 && strcmp (kiln_buf_str (&res.out), "found\n") == 0;
  if (!ok)
    printf ("# r=%d %s\n", r, kiln_error_message (err));
  kiln_process_result_release (&res);
  unlink (tool);
  rmdir (dir);
  return ok;
}

static bool
test_cwd (void)
{
  char *argv[] = {"pwd", NULL};
  struct kiln_process_spec spec = {.argv = argv, .cwd = "/"};
  struct kiln_process_result res;
  _cleanup_error_ kiln_error *err = NULL;
  CHECK (kiln_process_run (&spec, &res, &err) == 0);
  bool ok = res.exit_code == 0 && strcmp (kiln_buf_str (&res.out), "/\n") == 0;
  kiln_process_result_release (&res);
  return ok;
}

static bool
test_missing_cwd (void)
{
  char *argv[] = {"pwd", NULL};
  struct kiln_process_spec spec = {.argv = argv, .cwd = "/nonexistent-kiln-dir"};
  struct kiln_process_result res;
  _cleanup_error_ kiln_error *err = NULL;
  CHECK (kiln_process_run (&spec, &res, &err) < 0);
  kiln_process_result_release (&res);
  printf ("# %s\n", kiln_error_message (err));
  CHECK (strcmp (err->message, "change directory to '/nonexistent-kiln-dir': No such file or directory") == 0);
  return true;
}

static bool
test_missing_program (void)
{
  char *argv[] = {"kiln-no-such-program", "arg", NULL};
  struct kiln_process_result res;
  _cleanup_error_ kiln_error *err = NULL;
  CHECK (run_argv (argv, &res, &err) < 0);
  kiln_process_result_release (&res);
  printf ("# %s\n", kiln_error_message (err));
  CHECK (strcmp (err->message, "execute 'kiln-no-such-program': No such file or directory") == 0);
  CHECK (err->code == KILN_ERR_NOT_FOUND && err->errnum == ENOENT);

  char *not_exec[] = {"/etc/passwd", NULL};
  kiln_error_freep (&err);
  CHECK (run_argv (not_exec, &res, &err) < 0);
  kiln_process_result_release (&res);
  CHECK (strcmp (err->message, "execute '/etc/passwd': Permission denied") == 0);
  return true;
}

static bool
test_capture_limit (void)
{
  char *argv[] = {"/proc/self/exe", "--child-spew", "100000", "30000", NULL};
  struct output_counts counts = {0};
  struct kiln_process_spec spec = {
    .argv = argv, .capture_limit = 1000, .on_output = count_output, .opaque = &counts};
  struct kiln_process_result res;
  _cleanup_error_ kiln_error *err = NULL;
  CHECK (kiln_process_run (&spec, &res, &err) == 0);
  bool ok = res.exit_code == 0 && res.out.len == 1000 && res.err.len == 1000 && res.out_total == 100000
            && res.err_total == 30000 && counts.out == 100000 && counts.err == 30000 && all_bytes (&res.out, 'o');
  kiln_process_result_release (&res);
  return ok;
}

static volatile sig_atomic_t cancel_flag;

static void
cancel_on_output (void *opaque _unused_, enum kiln_stream stream _unused_, const char *data _unused_,
                  size_t len _unused_)
{
  cancel_flag = 1;
}

static bool
test_cancel (void)
{
  char *argv[] = {"sh", "-c", "echo started; sleep 30", NULL};
  cancel_flag = 0;
  struct kiln_process_spec spec = {.argv = argv, .on_output = cancel_on_output, .cancel = &cancel_flag};
  struct kiln_process_result res;
  _cleanup_error_ kiln_error *err = NULL;
  double start = seconds_now ();
  int r = kiln_process_run (&spec, &res, &err);
  double elapsed = seconds_now () - start;
  kiln_process_result_release (&res);
  CHECK (r < 0 && err && err->code == KILN_ERR_CANCELLED);
  printf ("# %s (after %.2f s)\n", kiln_error_message (err), elapsed);
  CHECK (elapsed < 3.0);
  return true;
}

static bool
test_empty_argv (void)
{
  char *argv[] = {NULL};
  struct kiln_process_result res;
  _cleanup_error_ kiln_error *err = NULL;
  CHECK (run_argv (argv, &res, &err) < 0);
  CHECK (err->code == KILN_ERR_INVALID);
  kiln_process_result_release (&res);
  return true;
}

static bool
test_sigpipe_ignored_by_caller (void)
{
  /* A caller that ignores SIGPIPE must not pass that on to its children:
   * `yes | head -c1` then ends because yes dies of SIGPIPE. */
  struct sigaction ign = {.sa_handler = SIG_IGN}, old;
  sigaction (SIGPIPE, &ign, &old);
  char *argv[] = {"sh", "-c", "yes | head -c 1 >/dev/null; echo ok", NULL};
  struct kiln_process_spec spec = {.argv = argv, .timeout_ms = 10000};
  struct kiln_process_result res;
  _cleanup_error_ kiln_error *err = NULL;
  int r = kiln_process_run (&spec, &res, &err);
  sigaction (SIGPIPE, &old, NULL);
  bool ok = r == 0 && !res.timed_out && strcmp (kiln_buf_str (&res.out), "ok\n") == 0;
  kiln_process_result_release (&res);
  return ok;
}

static bool
test_strv (void)
{
  _cleanup_strv_ char **v = kiln_strv_new ("a", "bc", NULL);
  CHECK (kiln_strv_length (v) == 2);
  CHECK (strcmp (v[0], "a") == 0 && strcmp (v[1], "bc") == 0 && v[2] == NULL);
  kiln_strv_push (&v, "d");
  CHECK (kiln_strv_length (v) == 3 && strcmp (v[2], "d") == 0 && v[3] == NULL);

  _cleanup_strv_ char **empty = kiln_strv_new (NULL, NULL);
  CHECK (empty != NULL && kiln_strv_length (empty) == 0);
  _cleanup_strv_ char **grown = NULL;
  kiln_strv_push (&grown, "x");
  CHECK (kiln_strv_length (grown) == 1 && strcmp (grown[0], "x") == 0);
  CHECK (kiln_strv_length (NULL) == 0);
  return true;
}

/* --- kiln_process_spawn and kiln_process_wait_exit ---------------------- */

static bool
file_equals (const char *path, const char *expected)
{
  char buf[4096];
  FILE *f = fopen (path, "r");
  if (f == NULL)
    return false;
  size_t n = fread (buf, 1, sizeof buf - 1, f);
  fclose (f);
  buf[n] = '\0';
  if (strcmp (buf, expected) != 0)
    {
      printf ("# %s holds '%s'\n", path, buf);
      return false;
    }
  return true;
}

static bool
test_spawn_streams_env_cwd (void)
{
  char dir[] = "/tmp/kiln-test-spawn-XXXXXX";
  CHECK (mkdtemp (dir) != NULL);
  _cleanup_free_ char *in_path = NULL, *out_path = NULL;
  CHECK (asprintf (&in_path, "%s/in", dir) > 0 && asprintf (&out_path, "%s/out", dir) > 0);
  FILE *f = fopen (in_path, "w");
  CHECK (f != NULL);
  fputs ("from stdin\n", f);
  fclose (f);

  char *argv[] = {"sh", "-c", "cat; echo \"$KILN_SPAWN_VAR\"; pwd; echo err >&2; exit 3", NULL};
  char *env[] = {"KILN_SPAWN_VAR=value", NULL};
  struct kiln_process_spawn_spec spec = {
    .argv = argv, .env = env, .cwd = "/", .stdin_path = in_path, .stdout_path = out_path, .stderr_path = out_path};
  _cleanup_error_ kiln_error *err = NULL;
  pid_t pid = 0;
  CHECK (kiln_process_spawn (&spec, &pid, &err) == 0 && pid > 0);
  CHECK (getpgid (pid) == pid || getpgid (pid) < 0);
  int status = 0;
  CHECK (kiln_process_wait_exit (pid, 10000, &status) == 1);
  CHECK (WIFEXITED (status) && WEXITSTATUS (status) == 3);
  bool ok = file_equals (out_path, "from stdin\nvalue\n/\nerr\n");
  /* Reaped: a second wait says it is not our child. */
  CHECK (kiln_process_wait_exit (pid, 0, NULL) < 0 && errno == ECHILD);
  unlink (in_path);
  unlink (out_path);
  rmdir (dir);
  return ok;
}

static bool
test_spawn_failures (void)
{
  char *argv[] = {"kiln-no-such-program", NULL};
  struct kiln_process_spawn_spec spec = {.argv = argv};
  _cleanup_error_ kiln_error *err = NULL;
  pid_t pid = 1234;
  CHECK (kiln_process_spawn (&spec, &pid, &err) < 0 && pid == 0);
  printf ("# %s\n", kiln_error_message (err));
  CHECK (strcmp (err->message, "execute 'kiln-no-such-program': No such file or directory") == 0);

  char *pwd[] = {"pwd", NULL};
  struct kiln_process_spawn_spec in_missing = {.argv = pwd, .cwd = "/nonexistent-kiln-dir"};
  kiln_error_freep (&err);
  CHECK (kiln_process_spawn (&in_missing, &pid, &err) < 0);
  CHECK (strcmp (err->message, "change directory to '/nonexistent-kiln-dir': No such file or directory") == 0);

  struct kiln_process_spawn_spec bad_out = {.argv = pwd, .stdout_path = "/nonexistent-kiln-dir/out"};
  kiln_error_freep (&err);
  CHECK (kiln_process_spawn (&bad_out, &pid, &err) < 0);
  printf ("# %s\n", kiln_error_message (err));
  CHECK (strstr (err->message, "/nonexistent-kiln-dir/out") != NULL);

  char *empty[] = {NULL};
  struct kiln_process_spawn_spec none = {.argv = empty};
  kiln_error_freep (&err);
  CHECK (kiln_process_spawn (&none, &pid, &err) < 0 && err->code == KILN_ERR_INVALID);
  return true;
}

static bool
test_wait_exit_timeout (void)
{
  char *argv[] = {"sleep", "30", NULL};
  struct kiln_process_spawn_spec spec = {.argv = argv};
  _cleanup_error_ kiln_error *err = NULL;
  pid_t pid = 0;
  CHECK (kiln_process_spawn (&spec, &pid, &err) == 0);
  CHECK (kiln_process_wait_exit (pid, 0, NULL) == 0);
  double start = seconds_now ();
  int r = kiln_process_wait_exit (pid, 300, NULL);
  double elapsed = seconds_now () - start;
  printf ("# wait_exit with 300 ms on a sleeper returned %d after %.2f s\n", r, elapsed);
  kill (pid, SIGTERM);
  int status = 0;
  start = seconds_now ();
  CHECK (kiln_process_wait_exit (pid, -1, &status) == 1);
  double reaped = seconds_now () - start;
  CHECK (WIFSIGNALED (status) && WTERMSIG (status) == SIGTERM);
  return r == 0 && elapsed >= 0.28 && elapsed < 2.0 && reaped < 1.0;
}

static bool
test_spawn_dies_with_parent (void)
{
  /* A middle process spawns a sleeper and is SIGKILLed: PR_SET_PDEATHSIG
   * must take the sleeper down.  We become a subreaper so the orphan is
   * handed to us and its end can be observed with waitpid. */
  CHECK (prctl (PR_SET_CHILD_SUBREAPER, 1) == 0);
  int fds[2];
  CHECK (pipe (fds) == 0);
  pid_t middle = fork ();
  CHECK (middle >= 0);
  if (middle == 0)
    {
      close (fds[0]);
      char *argv[] = {"sleep", "30", NULL};
      struct kiln_process_spawn_spec spec = {.argv = argv};
      pid_t pid = 0;
      if (kiln_process_spawn (&spec, &pid, NULL) < 0)
        _exit (1);
      if (write (fds[1], &pid, sizeof pid) != (ssize_t) sizeof pid)
        _exit (1);
      pause ();
      _exit (0);
    }
  close (fds[1]);
  pid_t sleeper = 0;
  ssize_t n = read (fds[0], &sleeper, sizeof sleeper);
  close (fds[0]);
  kill (middle, SIGKILL);
  waitpid (middle, NULL, 0);
  bool ok = false;
  if (n == (ssize_t) sizeof sleeper && sleeper > 0)
    {
      int status = 0;
      double start = seconds_now ();
      int r = kiln_process_wait_exit (sleeper, 5000, &status);
      printf ("# orphaned sleeper: wait %d after %.2f s\n", r, seconds_now () - start);
      ok = r == 1 && WIFSIGNALED (status) && WTERMSIG (status) == SIGKILL;
      if (r == 0)
        {
          kill (sleeper, SIGKILL);
          kiln_process_wait_exit (sleeper, -1, NULL);
        }
    }
  prctl (PR_SET_CHILD_SUBREAPER, 0);
  return ok;
}

int
main (int argc, char **argv)
{
  if (argc == 4 && strcmp (argv[1], "--child-spew") == 0)
    return child_spew (strtoull (argv[2], NULL, 10), strtoull (argv[3], NULL, 10));

  tap_ok (test_big_interleaved_output (), "8 MiB on stdout and stderr interleaved");
  tap_ok (test_stdin_echo (), "1 MiB of stdin echoed by cat");
  tap_ok (test_stdin_not_read (), "stdin the child never reads");
  tap_ok (test_stdin_default_devnull (), "stdin defaults to /dev/null");
  tap_ok (test_exit_codes (), "exit codes");
  tap_ok (test_killed_by_signal (), "killed by a signal");
  tap_ok (test_timeout (), "timeout stops sleep 30 quickly");
  tap_ok (test_timeout_with_grandchild (), "timeout kills the whole process group");
  tap_ok (test_timeout_term_ignored (), "SIGKILL after the grace period");
  tap_ok (test_grandchild_holds_pipes (), "grandchild holding the pipes does not keep us");
  tap_ok (test_grandchild_other_group (), "grandchild in another session does not keep us");
  tap_ok (test_env_override (), "environment overrides");
  tap_ok (test_path_override_used_for_lookup (), "PATH override decides the program lookup");
  tap_ok (test_cwd (), "working directory");
  tap_ok (test_missing_cwd (), "missing working directory is reported");
  tap_ok (test_missing_program (), "missing program is reported");
  tap_ok (test_capture_limit (), "capture_limit keeps a prefix and counts everything");
  tap_ok (test_cancel (), "cancel flag");
  tap_ok (test_empty_argv (), "empty argv is rejected");
  tap_ok (test_sigpipe_ignored_by_caller (), "children start with SIGPIPE at its default");
  tap_ok (test_strv (), "strv helpers");
  tap_ok (test_spawn_streams_env_cwd (), "spawn: stdin/stdout/stderr files, env, cwd, exit status");
  tap_ok (test_spawn_failures (), "spawn: exec, chdir and open failures are reported");
  tap_ok (test_wait_exit_timeout (), "wait_exit: timeout, then reap");
  tap_ok (test_spawn_dies_with_parent (), "spawn: the child dies with a SIGKILLed parent");

  return tap_done ();
}
