/* process.c - running child processes with captured output and a deadline
 * (see process.h).
 *
 * The child is forked, made the leader of a new process group, given its
 * stdio, environment and working directory, and exec'd.  A chdir or exec that
 * fails in the child is sent back over a close-on-exec pipe as (stage, errno),
 * so the caller reads "execute 'foo': No such file or directory" rather than
 * guessing from an exit status of 127.
 *
 * The parent then runs one poll() loop that feeds stdin, drains stdout and
 * stderr, and watches the deadline, the caller's cancel flag and the child's
 * exit (through a pidfd where the kernel has them, else by polling waitid
 * every few milliseconds).  The exited child is observed with WNOWAIT and
 * only reaped at the very end: while it is a zombie its pid, and so its
 * process group id, cannot be reused, so signalling the group is always safe.
 *
 * A grandchild that inherited the pipes may keep them open long after the
 * child has gone; output is read for at most DRAIN_AFTER_EXIT_MS after the
 * exit, then the group is killed and the loop ends regardless.  A process that
 * left the group (setsid) is out of reach of that kill: we only stop waiting
 * for it.
 *
 * kiln_process_spawn() shares the child setup and its exec report, adds
 * PR_SET_PDEATHSIG, and returns as soon as the program runs; its caller
 * watches and reaps the child with kiln_process_wait_exit(). */
#include "process.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cleanup.h"
#include "xalloc.h"
#include "clock.h"

extern char **environ;

/* How long a child has between SIGTERM and SIGKILL. */
#define TERM_GRACE_MS 2000
/* How long output is still read after the child itself has exited. */
#define DRAIN_AFTER_EXIT_MS 1000
/* Without a pidfd the exit is noticed by polling at this interval. */
#define EXIT_POLL_MS 20
/* A cancel flag set by a signal handler outside poll() is noticed within this. */
#define CANCEL_POLL_MS 100
#define READ_CHUNK 65536

/* What the child reports when it cannot become the program. */
enum child_stage { STAGE_SETUP = 1, STAGE_CHDIR, STAGE_EXEC };

struct child_failure {
  int stage;
  int errnum;
};

static void
close_fd (int *fd)
{
  if (*fd >= 0)
    close (*fd);
  *fd = -1;
}

static size_t
env_name_length (const char *entry)
{
  const char *eq = strchr (entry, '=');
  return eq ? (size_t) (eq - entry) : strlen (entry);
}

/* The child's environment: the current one with each override replacing the
 * entry of the same name.  The vector borrows its strings from environ and
 * spec->env; only the vector itself is malloc'd. */
static int
build_environment (char *const *overrides, char ***out, kiln_error **err)
{
  size_t n_current = kiln_strv_length (environ);
  size_t n_over = kiln_strv_length (overrides);
  for (size_t i = 0; i < n_over; i++)
    if (strchr (overrides[i], '=') == NULL || overrides[i][0] == '=')
      return kiln_fail_invalid (err, "environment entry '%s' is not NAME=VALUE", overrides[i]);

  _cleanup_free_ char **env = calloc (n_current + n_over + 1, sizeof *env);
  if (env == NULL)
    abort ();
  size_t n = 0;
  for (size_t i = 0; i < n_current; i++)
    {
      size_t name_len = env_name_length (environ[i]);
      bool overridden = false;
      for (size_t j = 0; j < n_over && !overridden; j++)
        overridden = env_name_length (overrides[j]) == name_len
                     && strncmp (overrides[j], environ[i], name_len) == 0;
      if (!overridden)
        env[n++] = environ[i];
    }
  for (size_t j = 0; j < n_over; j++)
    {
      /* A name given twice in the overrides: the later entry wins. */
      size_t name_len = env_name_length (overrides[j]);
      bool repeated = false;
      for (size_t k = j + 1; k < n_over && !repeated; k++)
        repeated = env_name_length (overrides[k]) == name_len
                   && strncmp (overrides[k], overrides[j], name_len) == 0;
      if (!repeated)
        env[n++] = overrides[j];
    }
  env[n] = NULL;
  *out = kiln_steal_pointer (&env);
  return 0;
}

static int
make_pipe (int *read_end, int *write_end, const char *what, kiln_error **err)
{
  int fds[2];
  if (pipe2 (fds, O_CLOEXEC) < 0)
    return kiln_fail_errno (err, errno, "create pipe for %s", what);
  *read_end = fds[0];
  *write_end = fds[1];
  return 0;
}

static int
set_nonblocking (int fd)
{
  int flags = fcntl (fd, F_GETFL);
  if (flags < 0)
    return -1;
  return fcntl (fd, F_SETFL, flags | O_NONBLOCK);
}

static void __attribute__ ((noreturn))
child_fail (int report_fd, int stage)
{
  struct child_failure failure = {stage, errno};
  ssize_t ignored = write (report_fd, &failure, sizeof failure);
  (void) ignored;
  _exit (127);
}

/* Runs in the forked child: only async-signal-safe calls from here on, since
 * the parent may have other threads holding locks we would inherit. */
static void __attribute__ ((noreturn))
exec_child (char *const *argv, const char *cwd, char **env, int stdin_fd, int out_fd, int err_fd,
            int report_fd, pid_t die_with)
{
  setpgid (0, 0);

  /* A long-running child of a kiln that is SIGKILLed must not outlive it.
   * The parent may have died between fork() and prctl(): then getppid() no
   * longer names it and we give up at once. */
  if (die_with > 0)
    {
      if (prctl (PR_SET_PDEATHSIG, SIGKILL) < 0)
        child_fail (report_fd, STAGE_SETUP);
      if (getppid () != die_with)
        _exit (127);
    }

  /* Ignored signals survive exec; a program should start with the defaults
   * and an empty mask whatever the caller did with its own (SIGPIPE above all). */
  struct sigaction dfl;
  memset (&dfl, 0, sizeof dfl);
  dfl.sa_handler = SIG_DFL;
  for (int sig = 1; sig < NSIG; sig++)
    if (sig != SIGKILL && sig != SIGSTOP)
      sigaction (sig, &dfl, NULL);
  sigset_t none;
  sigemptyset (&none);
  sigprocmask (SIG_SETMASK, &none, NULL);

  /* Lift the sources above 2 first so one dup2 cannot clobber another source
   * that happens to sit on 0, 1 or 2 (a caller with closed stdio). */
  int sources[3] = {stdin_fd, out_fd, err_fd};
  for (int i = 0; i < 3; i++)
    {
      sources[i] = fcntl (sources[i], F_DUPFD_CLOEXEC, 3);
      if (sources[i] < 0)
        child_fail (report_fd, STAGE_SETUP);
    }
  for (int i = 0; i < 3; i++)
    if (dup2 (sources[i], i) < 0)
      child_fail (report_fd, STAGE_SETUP);

  if (cwd && chdir (cwd) < 0)
    child_fail (report_fd, STAGE_CHDIR);

  /* execvp searches the PATH of environ, so point environ at the child's
   * environment: a PATH override then also decides where argv[0] is found. */
  environ = env;
  execvp (argv[0], argv);
  child_fail (report_fd, STAGE_EXEC);
}

/* Waits for the child's report (the close-on-exec pipe closes on a
 * successful exec with nothing written).  Returns 0 when the child is running
 * the program; else reaps it, zeroes *pid and fails naming the step. */
static int
check_exec_report (int report_read, pid_t *pid, const char *program, const char *cwd, kiln_error **err)
{
  struct child_failure failure;
  ssize_t n;
  do
    n = read (report_read, &failure, sizeof failure);
  while (n < 0 && errno == EINTR);
  if (n != (ssize_t) sizeof failure)
    return 0;
  int status;
  while (waitpid (*pid, &status, 0) < 0 && errno == EINTR)
    ;
  *pid = 0;
  int code = failure.errnum == ENOENT ? KILN_ERR_NOT_FOUND : KILN_ERR_IO;
  switch (failure.stage)
    {
    case STAGE_CHDIR:
      return kiln_error_set (err, code, failure.errnum, "change directory to '%s'", cwd);
    case STAGE_EXEC:
      return kiln_error_set (err, code, failure.errnum, "execute '%s'", program);
    default:
      return kiln_error_set (err, KILN_ERR_IO, failure.errnum, "set up the process for '%s'", program);
    }
}

/* The state of one run's poll loop. */
struct run_state {
  const struct kiln_process_spec *spec;
  struct kiln_process_result *result;
  pid_t pid;
  int out_fd;
  int err_fd;
  int in_fd;       /* write end of the child's stdin, -1 once done */
  int pidfd;       /* readable when the child exits, -1 when unavailable */
  size_t in_offset;
  bool exited;     /* the child has exited (observed, not yet reaped) */
  bool term_sent;
  bool kill_sent;
  bool cancelled;
  int64_t deadline;    /* 0: none */
  int64_t kill_at;     /* when SIGKILL follows SIGTERM */
  int64_t drain_until; /* when reading stops after the exit */
};

static void
take_output (struct run_state *st, enum kiln_stream stream, const char *data, size_t len)
{
  const struct kiln_process_spec *spec = st->spec;
  struct kiln_buf *buf = stream == KILN_STREAM_STDOUT ? &st->result->out : &st->result->err;
  size_t *total = stream == KILN_STREAM_STDOUT ? &st->result->out_total : &st->result->err_total;

  *total += len;
  size_t keep = len;
  if (spec->capture_limit > 0)
    {
      size_t room = buf->len < spec->capture_limit ? spec->capture_limit - buf->len : 0;
      if (keep > room)
        keep = room;
    }
  if (keep > 0)
    kiln_buf_append (buf, data, keep);
  if (spec->on_output)
    spec->on_output (spec->opaque, stream, data, len);
}

/* Reads what is available on *fd; closes it at end of file. */
static int
read_output (struct run_state *st, int *fd, enum kiln_stream stream, kiln_error **err)
{
  char chunk[READ_CHUNK];
  ssize_t n;
  do
    n = read (*fd, chunk, sizeof chunk);
  while (n < 0 && errno == EINTR);
  if (n < 0)
    {
      if (errno == EAGAIN || errno == EWOULDBLOCK)
        return 0;
      return kiln_fail_errno (err, errno, "read %s of '%s'",
                              stream == KILN_STREAM_STDOUT ? "stdout" : "stderr", st->spec->argv[0]);
    }
  if (n == 0)
    close_fd (fd);
  else
    take_output (st, stream, chunk, (size_t) n);
  return 0;
}

/* Writes what the pipe takes of the remaining stdin data.  A child that does
 * not read its stdin (EPIPE) is not an error: the rest is dropped. */
static void
feed_input (struct run_state *st)
{
  const char *data = st->spec->stdin_data;
  size_t left = st->spec->stdin_len - st->in_offset;
  if (left > 0)
    {
      ssize_t n;
      do
        n = write (st->in_fd, data + st->in_offset, left);
      while (n < 0 && errno == EINTR);
      if (n < 0)
        {
          if (errno == EAGAIN || errno == EWOULDBLOCK)
            return;
          close_fd (&st->in_fd);
          return;
        }
      st->in_offset += (size_t) n;
    }
  if (st->in_offset == st->spec->stdin_len)
    close_fd (&st->in_fd);
}

static bool
child_has_exited (pid_t pid)
{
  siginfo_t info;
  memset (&info, 0, sizeof info);
  int r;
  do
    r = waitid (P_PID, (id_t) pid, &info, WEXITED | WNOHANG | WNOWAIT);
  while (r < 0 && errno == EINTR);
  /* ECHILD would mean someone else reaped it (SIGCHLD ignored): gone either way. */
  return r < 0 ? errno == ECHILD : info.si_pid == pid;
}

static void
stop_child (struct run_state *st, int64_t now)
{
  kill (-st->pid, SIGTERM);
  st->term_sent = true;
  st->kill_at = now + TERM_GRACE_MS;
}

static int
min_timeout (int current, int64_t when, int64_t now)
{
  int64_t wait = when > now ? when - now : 0;
  if (wait > INT32_MAX)
    wait = INT32_MAX;
  return current < 0 || wait < current ? (int) wait : current;
}

static int
pump (struct run_state *st, kiln_error **err)
{
  const struct kiln_process_spec *spec = st->spec;
  for (;;)
    {
      int64_t now = kiln_monotonic_ms ();

      if (!st->exited && child_has_exited (st->pid))
        {
          st->exited = true;
          st->drain_until = now + DRAIN_AFTER_EXIT_MS;
          close_fd (&st->in_fd);
        }
      if (st->exited && ((st->out_fd < 0 && st->err_fd < 0) || now >= st->drain_until))
        return 0;

      if (!st->exited && !st->term_sent)
        {
          if (spec->cancel && *spec->cancel)
            {
              st->cancelled = true;
              stop_child (st, now);
            }
          else if (st->deadline > 0 && now >= st->deadline)
            {
              st->result->timed_out = true;
              stop_child (st, now);
            }
        }
      if (st->term_sent && !st->kill_sent && !st->exited && now >= st->kill_at)
        {
          kill (-st->pid, SIGKILL);
          st->kill_sent = true;
        }

      struct pollfd fds[4];
      nfds_t nfds = 0;
      int out_slot = -1, err_slot = -1, in_slot = -1;
      if (st->out_fd >= 0)
        {
          out_slot = (int) nfds;
          fds[nfds++] = (struct pollfd){.fd = st->out_fd, .events = POLLIN};
        }
      if (st->err_fd >= 0)
        {
          err_slot = (int) nfds;
          fds[nfds++] = (struct pollfd){.fd = st->err_fd, .events = POLLIN};
        }
      if (st->in_fd >= 0)
        {
          in_slot = (int) nfds;
          fds[nfds++] = (struct pollfd){.fd = st->in_fd, .events = POLLOUT};
        }
      if (!st->exited && st->pidfd >= 0)
        fds[nfds++] = (struct pollfd){.fd = st->pidfd, .events = POLLIN};

      int timeout = -1;
      if (st->exited)
        timeout = min_timeout (timeout, st->drain_until, now);
      else
        {
          if (st->pidfd < 0)
            timeout = EXIT_POLL_MS;
          if (!st->term_sent && st->deadline > 0)
            timeout = min_timeout (timeout, st->deadline, now);
          if (!st->term_sent && spec->cancel)
            timeout = min_timeout (timeout, now + CANCEL_POLL_MS, now);
          if (st->term_sent && !st->kill_sent)
            timeout = min_timeout (timeout, st->kill_at, now);
        }

      if (poll (fds, nfds, timeout) < 0)
        {
          if (errno == EINTR)
            continue;
          return kiln_fail_errno (err, errno, "wait for '%s'", spec->argv[0]);
        }

      /* POLLHUP without POLLIN still needs a read to see end of file. */
      if (out_slot >= 0 && fds[out_slot].revents
          && read_output (st, &st->out_fd, KILN_STREAM_STDOUT, err) < 0)
        return -1;
      if (err_slot >= 0 && fds[err_slot].revents
          && read_output (st, &st->err_fd, KILN_STREAM_STDERR, err) < 0)
        return -1;
      if (in_slot >= 0 && st->in_fd >= 0 && fds[in_slot].revents)
        {
          if (fds[in_slot].revents & (POLLERR | POLLHUP))
            close_fd (&st->in_fd);
          else
            feed_input (st);
        }
    }
}

/* Writing to a pipe whose reader is gone raises SIGPIPE, which would kill a
 * caller that has not ignored it.  The signal is blocked in this thread while
 * we write, and one we caused is consumed before the mask is restored. */
struct sigpipe_guard {
  sigset_t old_mask;
  bool was_pending;
};

static void
sigpipe_block (struct sigpipe_guard *g)
{
  sigset_t set, pending;
  sigemptyset (&set);
  sigaddset (&set, SIGPIPE);
  sigpending (&pending);
  g->was_pending = sigismember (&pending, SIGPIPE);
  pthread_sigmask (SIG_BLOCK, &set, &g->old_mask);
}

static void
sigpipe_restore (struct sigpipe_guard *g)
{
  sigset_t set, pending;
  sigemptyset (&set);
  sigaddset (&set, SIGPIPE);
  sigpending (&pending);
  if (!g->was_pending && sigismember (&pending, SIGPIPE))
    {
      struct timespec zero = {0, 0};
      while (sigtimedwait (&set, NULL, &zero) < 0 && errno == EINTR)
        ;
    }
  pthread_sigmask (SIG_SETMASK, &g->old_mask, NULL);
}

static int
open_pidfd (pid_t pid)
{
#ifdef SYS_pidfd_open
  /* pidfd_open always returns a close-on-exec descriptor. */
  return (int) syscall (SYS_pidfd_open, pid, 0);
#else
  (void) pid;
  return -1;
#endif
}

static void
record_status (struct kiln_process_result *result, int status)
{
  if (WIFEXITED (status))
    {
      result->exit_code = WEXITSTATUS (status);
      result->term_signal = 0;
    }
  else if (WIFSIGNALED (status))
    {
      result->exit_code = -1;
      result->term_signal = WTERMSIG (status);
    }
}

static int
reap (pid_t pid, int *status)
{
  pid_t r;
  do
    r = waitpid (pid, status, 0);
  while (r < 0 && errno == EINTR);
  return r < 0 ? -1 : 0;
}

int
kiln_process_run (const struct kiln_process_spec *spec, struct kiln_process_result *result,
                  kiln_error **err)
{
  memset (result, 0, sizeof *result);
  result->exit_code = -1;
  if (spec->argv == NULL || spec->argv[0] == NULL || spec->argv[0][0] == '\0')
    return kiln_fail_invalid (err, "run a process: empty command line");
  const char *program = spec->argv[0];

  _cleanup_free_ char **env = NULL;
  if (build_environment (spec->env, &env, err) < 0)
    return -1;

  _cleanup_close_ int stdin_read = -1;
  _cleanup_close_ int stdin_write = -1;
  _cleanup_close_ int out_read = -1;
  _cleanup_close_ int out_write = -1;
  _cleanup_close_ int err_read = -1;
  _cleanup_close_ int err_write = -1;
  _cleanup_close_ int report_read = -1;
  _cleanup_close_ int report_write = -1;
  _cleanup_close_ int pidfd = -1;

  if (spec->stdin_data)
    {
      if (make_pipe (&stdin_read, &stdin_write, "stdin", err) < 0)
        return -1;
    }
  else
    {
      stdin_read = open ("/dev/null", O_RDONLY | O_CLOEXEC);
      if (stdin_read < 0)
        return kiln_fail_errno (err, errno, "open '/dev/null'");
    }
  if (make_pipe (&out_read, &out_write, "stdout", err) < 0
      || make_pipe (&err_read, &err_write, "stderr", err) < 0
      || make_pipe (&report_read, &report_write, "exec status", err) < 0)
    return -1;

  _cleanup_pid_ pid_t pid = fork ();
  if (pid < 0)
    return kiln_fail_errno (err, errno, "fork for '%s'", program);
  if (pid == 0)
    exec_child (spec->argv, spec->cwd, env, stdin_read, out_write, err_write, report_write, 0);

  /* Also from this side, so the group exists before we might signal it. */
  setpgid (pid, pid);
  close_fd (&stdin_read);
  close_fd (&out_write);
  close_fd (&err_write);
  close_fd (&report_write);

  if (check_exec_report (report_read, &pid, program, spec->cwd, err) < 0)
    return -1;

  if (set_nonblocking (out_read) < 0 || set_nonblocking (err_read) < 0
      || (stdin_write >= 0 && set_nonblocking (stdin_write) < 0))
    return kiln_fail_errno (err, errno, "set up pipes for '%s'", program);
  pidfd = open_pidfd (pid);

  struct run_state st = {
    .spec = spec,
    .result = result,
    .pid = pid,
    .out_fd = kiln_steal_fd (&out_read),
    .err_fd = kiln_steal_fd (&err_read),
    .in_fd = kiln_steal_fd (&stdin_write),
    .pidfd = pidfd,
    .deadline = spec->timeout_ms > 0 ? kiln_monotonic_ms () + spec->timeout_ms : 0,
  };

  struct sigpipe_guard guard;
  bool feeding = st.in_fd >= 0;
  if (feeding)
    sigpipe_block (&guard);
  int r = pump (&st, err);
  close_fd (&st.in_fd);
  if (feeding)
    sigpipe_restore (&guard);
  close_fd (&st.out_fd);
  close_fd (&st.err_fd);
  if (r < 0)
    return -1;

  /* Whatever the child left behind in its group goes with it. */
  kill (-pid, SIGKILL);
  int status = 0;
  if (reap (pid, &status) < 0)
    {
      int saved = errno;
      pid = 0;
      return kiln_fail_errno (err, saved, "wait for '%s'", program);
    }
  pid = 0;
  record_status (result, status);

  if (st.cancelled)
    return kiln_error_set (err, KILN_ERR_CANCELLED, 0, "'%s' was cancelled", program);
  return 0;
}

void
kiln_process_result_release (struct kiln_process_result *result)
{
  kiln_buf_release (&result->out);
  kiln_buf_release (&result->err);
}

/* Opens what a spawned child gets as stream fd: /dev/null when path is NULL,
 * else path (read-only for stdin; created and appended to for output, so
 * stdout and stderr may name the same file). */
static int
open_spawn_stream (int fd, const char *path, int *out, kiln_error **err)
{
  int flags = fd == 0 ? O_RDONLY : O_WRONLY | O_CREAT | O_APPEND;
  const char *name = path ? path : "/dev/null";
  *out = open (name, flags | O_CLOEXEC | O_NOCTTY, 0644);
  if (*out < 0)
    return kiln_fail_errno (err, errno, "open '%s' for the child's %s", name,
                            fd == 0 ? "stdin" : fd == 1 ? "stdout" : "stderr");
  return 0;
}

int
kiln_process_spawn (const struct kiln_process_spawn_spec *spec, pid_t *pid_out, kiln_error **err)
{
  *pid_out = 0;
  if (spec->argv == NULL || spec->argv[0] == NULL || spec->argv[0][0] == '\0')
    return kiln_fail_invalid (err, "start a process: empty command line");
  const char *program = spec->argv[0];

  _cleanup_free_ char **env = NULL;
  if (build_environment (spec->env, &env, err) < 0)
    return -1;

  _cleanup_close_ int in_fd = -1;
  _cleanup_close_ int out_fd = -1;
  _cleanup_close_ int err_fd = -1;
  _cleanup_close_ int report_read = -1;
  _cleanup_close_ int report_write = -1;
  if (open_spawn_stream (0, spec->stdin_path, &in_fd, err) < 0
      || open_spawn_stream (1, spec->stdout_path, &out_fd, err) < 0
      || open_spawn_stream (2, spec->stderr_path, &err_fd, err) < 0)
    return kiln_error_prefix (err, "start '%s'", program);
  if (make_pipe (&report_read, &report_write, "exec status", err) < 0)
    return -1;

  /* Read before fork: the child compares it with getppid() after prctl(). */
  pid_t parent = getpid ();
  pid_t pid = fork ();
  if (pid < 0)
    return kiln_fail_errno (err, errno, "fork for '%s'", program);
  if (pid == 0)
    exec_child (spec->argv, spec->cwd, env, in_fd, out_fd, err_fd, report_write, spec->outlive_parent ? 0 : parent);

  setpgid (pid, pid);
  close_fd (&report_write);
  if (check_exec_report (report_read, &pid, program, spec->cwd, err) < 0)
    return -1;
  *pid_out = pid;
  return 0;
}

int
kiln_process_wait_exit (pid_t pid, int timeout_ms, int *status)
{
  int dummy;
  if (status == NULL)
    status = &dummy;
  int64_t deadline = timeout_ms > 0 ? kiln_monotonic_ms () + timeout_ms : 0;
  _cleanup_close_ int pidfd = timeout_ms != 0 ? open_pidfd (pid) : -1;
  for (;;)
    {
      pid_t r = waitpid (pid, status, WNOHANG);
      if (r == pid)
        return 1;
      if (r < 0 && errno != EINTR)
        return -1;
      if (timeout_ms == 0)
        return 0;
      int64_t now = kiln_monotonic_ms ();
      if (timeout_ms > 0 && now >= deadline)
        return 0;
      /* Without a pidfd, look again every few milliseconds. */
      int wait = pidfd >= 0 ? -1 : EXIT_POLL_MS;
      if (timeout_ms > 0)
        wait = min_timeout (wait, deadline, now);
      if (pidfd >= 0)
        {
          struct pollfd pfd = {.fd = pidfd, .events = POLLIN};
          if (poll (&pfd, 1, wait) < 0 && errno != EINTR)
            return -1;
        }
      else
        {
          struct timespec ts = {wait / 1000, (long) (wait % 1000) * 1000000};
          nanosleep (&ts, NULL);
        }
    }
}


char **
kiln_strv_new (const char *first, ...)
{
  size_t n = 0;
  va_list ap;
  va_start (ap, first);
  for (const char *s = first; s; s = va_arg (ap, const char *))
    n++;
  va_end (ap);

  char **v = calloc (n + 1, sizeof *v);
  if (v == NULL)
    abort ();
  size_t i = 0;
  va_start (ap, first);
  for (const char *s = first; s; s = va_arg (ap, const char *))
    v[i++] = kiln_xstrdup (s);
  va_end (ap);
  return v;
}

size_t
kiln_strv_length (char *const *v)
{
  size_t n = 0;
  if (v)
    while (v[n])
      n++;
  return n;
}

void
kiln_strv_push (char ***v, const char *s)
{
  size_t n = kiln_strv_length (*v);
  char **grown = realloc (*v, (n + 2) * sizeof *grown);
  if (grown == NULL)
    abort ();
  grown[n] = kiln_xstrdup (s);
  grown[n + 1] = NULL;
  *v = grown;
}

char *
kiln_find_program (const char *name)
{
  if (name == NULL || *name == '\0')
    return NULL;
  if (strchr (name, '/'))
    return access (name, X_OK) == 0 ? kiln_xstrdup (name) : NULL;
  const char *path = getenv ("PATH");
  _cleanup_free_ char *copy = kiln_xstrdup (path ? path : "/usr/bin:/bin");
  char *save = NULL;
  for (char *dir = strtok_r (copy, ":", &save); dir; dir = strtok_r (NULL, ":", &save))
    {
      char *full = kiln_xasprintf ("%s/%s", dir, name);
      if (access (full, X_OK) == 0)
        return full;
      free (full);
    }
  return NULL;
}
