/* process.h - running child processes with captured output and a deadline.
 *
 * kiln_process_run() starts argv, feeds it optional stdin, and collects its
 * stdout and stderr through one poll() loop, so a child that writes megabytes
 * to both streams never blocks on a full pipe.  The child leads its own process
 * group; on timeout (or when the caller's cancel flag is raised) the whole group
 * is sent SIGTERM, then SIGKILL after a grace period, and reaped.  Nothing the
 * child started is left running when this returns.
 *
 * kiln_process_spawn() starts a long-running child (a VM, a server) that
 * dies with kiln, and kiln_process_wait_exit() waits for it with a deadline. */
#ifndef KILN_COMMON_PROCESS_H
#define KILN_COMMON_PROCESS_H

#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "buf.h"
#include "error.h"

enum kiln_stream { KILN_STREAM_STDOUT = 1, KILN_STREAM_STDERR = 2 };

struct kiln_process_spec {
  char *const *argv;        /* argv[0] is looked up in PATH */
  char *const *env;         /* extra "NAME=VALUE" entries over the current environment, or NULL */
  const char *cwd;          /* NULL: inherit */
  const void *stdin_data;   /* NULL: stdin is /dev/null */
  size_t stdin_len;
  int timeout_ms;           /* <= 0: no deadline */
  size_t capture_limit;     /* per stream; 0: unlimited.  Bytes past it are counted, not kept. */
  /* Called with each chunk as it arrives (e.g. to stream a console log). */
  void (*on_output) (void *opaque, enum kiln_stream stream, const char *data, size_t len);
  void *opaque;
  /* When non-NULL and it becomes non-zero (e.g. set by a signal handler), the
   * child is stopped as on timeout and the call fails with KILN_ERR_CANCELLED. */
  volatile sig_atomic_t *cancel;
};

struct kiln_process_result {
  int exit_code;         /* exit status, or -1 when killed by a signal */
  int term_signal;       /* signal that ended it, 0 if it exited */
  bool timed_out;        /* the deadline passed and the child was killed */
  struct kiln_buf out;   /* captured stdout */
  struct kiln_buf err;   /* captured stderr */
  size_t out_total;      /* bytes written to stdout, including those past capture_limit */
  size_t err_total;
};

/* Runs the child to completion.  Returns 0 when the child was started and
 * ended (whatever its exit status, including a timeout: see result), -1 when
 * it could not be started or waited for (err says why, e.g. "execute 'foo':
 * No such file or directory") or was cancelled. */
int kiln_process_run (const struct kiln_process_spec *spec, struct kiln_process_result *result,
                      kiln_error **err);

void kiln_process_result_release (struct kiln_process_result *result);

/* A long-running child: QEMU, a server under test.  It is not waited for
 * here; the caller watches it with kiln_process_wait_exit() and stops it. */
struct kiln_process_spawn_spec {
  char *const *argv;        /* argv[0] is looked up in PATH */
  char *const *env;         /* extra "NAME=VALUE" entries over the current environment, or NULL */
  const char *cwd;          /* NULL: inherit */
  const char *stdin_path;   /* NULL: /dev/null */
  const char *stdout_path;  /* NULL: /dev/null; else created (0644) and appended to */
  const char *stderr_path;  /* likewise; may name the same file as stdout_path */
  /* The child may outlive kiln (a VM kept for inspection): no parent-death
   * signal.  Whoever keeps it must record its pid for a later cleanup. */
  bool outlive_parent;
};

/* Starts the child in its own process group and returns its pid once it is
 * running the program; a chdir or exec that fails is an error here, not an
 * exit status later.  The child gets PR_SET_PDEATHSIG = SIGKILL, so it dies
 * when kiln dies, however kiln dies.  Linux ties that signal to the *thread*
 * that forked: spawn from a thread that lives as long as the child should.
 * The caller owns the child: it must reap it (kiln_process_wait_exit). */
int kiln_process_spawn (const struct kiln_process_spawn_spec *spec, pid_t *pid, kiln_error **err);

/* Waits up to timeout_ms (0: only look; < 0: without limit) for the child
 * pid to exit, and reaps it.  Returns 1 when it has exited (*status, when
 * non-NULL, holds its wait status), 0 when it is still running at the
 * deadline, -1 with errno set when pid is not a child of ours (ECHILD). */
int kiln_process_wait_exit (pid_t pid, int timeout_ms, int *status);

/* Where execvp would find name: name itself when it holds a '/' and is
 * executable, else the first executable DIR/name on $PATH (/usr/bin:/bin
 * when unset); malloc'd, or NULL when there is none. */
char *kiln_find_program (const char *name);

/* Builds a NULL-terminated argv/env vector from strings (copies). */
char **kiln_strv_new (const char *first, ...) __attribute__ ((sentinel));
size_t kiln_strv_length (char *const *v);
/* Appends a copy of s, reallocating *v. */
void kiln_strv_push (char ***v, const char *s);

#endif
