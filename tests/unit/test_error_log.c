/* test_error_log.c - the common/ basics every other file leans on: the error
 * object and its context chain (error.h), the levels of the diagnostics on
 * stderr (log.h), and the child pid that _cleanup_pid_ kills and reaps when
 * its variable goes out of scope (cleanup.h). */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cleanup.h"
#include "error.h"
#include "log.h"
#include "tap.h"

/* ---- error.h ------------------------------------------------------------------ */

static bool
test_error_set_errno (void)
{
  _cleanup_error_ kiln_error *err = NULL;
  CHECK (kiln_fail_errno (&err, ENOENT, "open '%s'", "/x") == -1);
  CHECK (err != NULL);
  CHECK (err->code == KILN_ERR_IO && err->errnum == ENOENT);
  CHECK (strcmp (kiln_error_message (err), "open '/x': No such file or directory") == 0);
  return true;
}

static bool
test_error_chain (void)
{
  _cleanup_error_ kiln_error *err = NULL;
  kiln_error_set (&err, KILN_ERR_NOT_FOUND, 0, "no such key '%s'", "k");
  CHECK (kiln_error_prefix (&err, "read '%s'", "doc.yml") == -1);
  CHECK (kiln_error_prefix (&err, "validate") == -1);
  /* The outermost context comes first; code and errno are the cause's. */
  CHECK (strcmp (kiln_error_message (err), "validate: read 'doc.yml': no such key 'k'") == 0);
  CHECK (err->code == KILN_ERR_NOT_FOUND && err->errnum == 0);
  return true;
}

static bool
test_error_prefix_without_error (void)
{
  _cleanup_error_ kiln_error *err = NULL;
  CHECK (kiln_error_prefix (&err, "step '%s'", "A") == -1);
  CHECK (err != NULL && err->code == KILN_ERR_FAILED);
  CHECK (strcmp (kiln_error_message (err), "step 'A'") == 0);
  /* A caller that wants no details passes NULL: still -1, nothing made. */
  CHECK (kiln_error_prefix (NULL, "ignored") == -1);
  CHECK (kiln_error_set (NULL, KILN_ERR_IO, EIO, "ignored") == -1);
  return true;
}

static bool
test_error_replace_and_move (void)
{
  _cleanup_error_ kiln_error *err = NULL, *other = NULL;
  kiln_fail (&err, "first");
  kiln_fail_invalid (&err, "second");
  CHECK (err->code == KILN_ERR_INVALID && strcmp (err->message, "second") == 0);

  kiln_error_set (&other, KILN_ERR_TIMEOUT, 0, "late");
  kiln_error_move (&err, &other);
  CHECK (other == NULL);
  CHECK (err->code == KILN_ERR_TIMEOUT && strcmp (err->message, "late") == 0);

  kiln_error_move (NULL, &err); /* frees what it cannot hand over */
  CHECK (err == NULL);
  CHECK (strcmp (kiln_error_message (NULL), "unknown error") == 0);
  return true;
}

/* ---- log.h -------------------------------------------------------------------- */

/* Runs fn with stderr going into a pipe; returns what it wrote (malloc'd). */
static char *
capture_stderr (void (*fn) (void))
{
  int fds[2];
  if (pipe (fds) < 0)
    abort ();
  fflush (stderr);
  int saved = dup (STDERR_FILENO);
  dup2 (fds[1], STDERR_FILENO);
  close (fds[1]);
  fn ();
  fflush (stderr);
  dup2 (saved, STDERR_FILENO);
  close (saved);
  /* The write end is closed now: read to end of file. */
  size_t cap = 65536, len = 0;
  char *out = malloc (cap);
  ssize_t n;
  while ((n = read (fds[0], out + len, cap - 1 - len)) > 0)
    len += (size_t) n;
  out[len] = '\0';
  close (fds[0]);
  return out;
}

static void
log_every_level (void)
{
  kiln_log_error ("e %d", 1);
  kiln_log_warn ("w %s", "2");
  kiln_log_info ("i");
  kiln_log_debug ("d");
}

static void
log_long_line (void)
{
  char big[6000];
  memset (big, 'x', sizeof big - 1);
  big[sizeof big - 1] = '\0';
  kiln_log_error ("%s", big);
}

static bool
test_log_default_level (void)
{
  /* The level a program starts with: warnings and errors only. */
  CHECK (kiln_log_get_level () == KILN_LOG_WARN);
  _cleanup_free_ char *out = capture_stderr (log_every_level);
  CHECK (strcmp (out, "kiln: error: e 1\nkiln: warn: w 2\n") == 0);
  return true;
}

static bool
test_log_levels (void)
{
  kiln_log_set_level (KILN_LOG_ERROR);
  _cleanup_free_ char *errors = capture_stderr (log_every_level);
  kiln_log_set_level (KILN_LOG_INFO);
  _cleanup_free_ char *info = capture_stderr (log_every_level);
  kiln_log_set_level (KILN_LOG_DEBUG);
  _cleanup_free_ char *debug = capture_stderr (log_every_level);
  kiln_log_set_level (KILN_LOG_WARN);
  CHECK (strcmp (errors, "kiln: error: e 1\n") == 0);
  CHECK (strcmp (info, "kiln: error: e 1\nkiln: warn: w 2\nkiln: info: i\n") == 0);
  CHECK (strcmp (debug, "kiln: error: e 1\nkiln: warn: w 2\nkiln: info: i\nkiln: debug: d\n") == 0);
  return true;
}

static bool
test_log_level_names (void)
{
  CHECK (kiln_log_level_parse ("error") == KILN_LOG_ERROR);
  CHECK (kiln_log_level_parse ("warn") == KILN_LOG_WARN);
  CHECK (kiln_log_level_parse ("info") == KILN_LOG_INFO);
  CHECK (kiln_log_level_parse ("debug") == KILN_LOG_DEBUG);
  CHECK (kiln_log_level_parse ("DEBUG") == -1 && kiln_log_level_parse ("") == -1);

  setenv ("KILN_LOG", "debug", 1);
  kiln_log_init_from_env ();
  CHECK (kiln_log_get_level () == KILN_LOG_DEBUG);
  setenv ("KILN_LOG", "loud", 1); /* not a level: the level stays */
  kiln_log_init_from_env ();
  CHECK (kiln_log_get_level () == KILN_LOG_DEBUG);
  unsetenv ("KILN_LOG");
  kiln_log_set_level (KILN_LOG_WARN);
  return true;
}

static bool
test_log_long_line (void)
{
  /* A message too long for one line is cut, still one line. */
  _cleanup_free_ char *out = capture_stderr (log_long_line);
  size_t len = strlen (out);
  CHECK (strncmp (out, "kiln: error: xxx", 16) == 0);
  CHECK (len > 4000 && len <= 4096);
  CHECK (out[len - 1] == '\n' && strchr (out, '\n') == out + len - 1);
  return true;
}

/* ---- cleanup.h: _cleanup_pid_ ------------------------------------------------- */

/* Gone: not running and not a zombie (already reaped, so not our child
 * any more). */
static bool
pid_is_gone (pid_t pid)
{
  errno = 0;
  bool no_child = waitpid (pid, NULL, WNOHANG) < 0 && errno == ECHILD;
  errno = 0;
  bool no_process = kill (pid, 0) < 0 && errno == ESRCH;
  return no_child && no_process;
}

/* Starts a child that leads its own process group (as common/process.c's
 * do) and runs until killed; if grandchild is non-NULL the child first forks
 * a grandchild in the same group and reports its pid. */
static pid_t
start_sleeper (pid_t *grandchild)
{
  int fds[2];
  if (pipe (fds) < 0)
    abort ();
  pid_t pid = fork ();
  if (pid < 0)
    abort ();
  if (pid == 0)
    {
      setpgid (0, 0);
      pid_t g = 0;
      if (grandchild && (g = fork ()) == 0)
        {
          for (;;)
            pause ();
        }
      if (write (fds[1], &g, sizeof g) != sizeof g)
        _exit (1);
      for (;;)
        pause ();
    }
  close (fds[1]);
  pid_t g = 0;
  if (read (fds[0], &g, sizeof g) != sizeof g)
    abort ();
  close (fds[0]);
  if (grandchild)
    *grandchild = g;
  return pid;
}

static bool
test_cleanup_pid_kills_and_reaps (void)
{
  pid_t seen;
  {
    _cleanup_pid_ pid_t pid = start_sleeper (NULL);
    seen = pid;
    if (!(kill (pid, 0) == 0))
      return false;
  }
  CHECK (pid_is_gone (seen));
  return true;
}

static bool
test_cleanup_pid_reaps_exited (void)
{
  /* A child that already exited is a zombie until reaped: the cleanup must
   * reap it all the same. */
  pid_t seen = fork ();
  if (seen == 0)
    _exit (0);
  {
    _cleanup_pid_ pid_t pid = seen;
    siginfo_t si;
    /* Wait for the exit without reaping. */
    if (waitid (P_PID, (id_t) pid, &si, WEXITED | WNOWAIT) < 0)
      return false;
  }
  CHECK (pid_is_gone (seen));
  return true;
}

static bool
test_cleanup_pid_kills_the_group (void)
{
  /* As subreaper, an orphaned grandchild becomes ours, so its end can be
   * checked: it must die of SIGKILL with its parent's group. */
  CHECK (prctl (PR_SET_CHILD_SUBREAPER, 1) == 0);
  pid_t child, grandchild = 0;
  {
    _cleanup_pid_ pid_t pid = start_sleeper (&grandchild);
    child = pid;
  }
  CHECK (pid_is_gone (child));
  CHECK (grandchild > 0);
  /* Waits at most 10 s, so a survivor fails the test rather than hang it
   * (and is then killed here, not left behind). */
  int status = 0;
  pid_t r = 0;
  for (int i = 0; i < 1000 && r == 0; i++)
    {
      r = waitpid (grandchild, &status, WNOHANG);
      if (r == 0)
        usleep (10000);
    }
  if (r == 0)
    {
      kill (grandchild, SIGKILL);
      waitpid (grandchild, NULL, 0);
    }
  prctl (PR_SET_CHILD_SUBREAPER, 0);
  CHECK (r == grandchild);
  CHECK (WIFSIGNALED (status) && WTERMSIG (status) == SIGKILL);
  return true;
}

static bool
test_cleanup_pid_zero (void)
{
  /* 0 (nothing started) is left alone, errno included. */
  errno = EAGAIN;
  {
    _cleanup_pid_ pid_t pid = 0;
    (void) pid;
  }
  CHECK (errno == EAGAIN);
  return true;
}

int
main (void)
{
  tap_ok (test_error_set_errno (), "error: errno appends strerror, code IO");
  tap_ok (test_error_chain (), "error: prefixes chain outermost first, keeping the cause's code");
  tap_ok (test_error_prefix_without_error (), "error: prefix with no error makes one; NULL err is allowed");
  tap_ok (test_error_replace_and_move (), "error: set replaces, move hands over, message of NULL");
  tap_ok (test_log_default_level (), "log: default level prints error and warn only, exact format");
  tap_ok (test_log_levels (), "log: below the level is not printed, at or above is");
  tap_ok (test_log_level_names (), "log: level names and KILN_LOG");
  tap_ok (test_log_long_line (), "log: an overlong message is cut to one line");
  tap_ok (test_cleanup_pid_kills_and_reaps (), "_cleanup_pid_: a running child is killed and reaped");
  tap_ok (test_cleanup_pid_reaps_exited (), "_cleanup_pid_: an exited child is reaped, no zombie left");
  tap_ok (test_cleanup_pid_kills_the_group (), "_cleanup_pid_: the child's process group dies too");
  tap_ok (test_cleanup_pid_zero (), "_cleanup_pid_: pid 0 is left alone");
  return tap_done ();
}
