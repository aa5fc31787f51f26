/* qga.h - a client of the QEMU guest agent (qemu-ga), over the host end of
 * its virtio-serial port (a unix socket QEMU listens on).
 *
 * The channel to the agent outlives the agent: bytes written while no agent
 * runs (the guest is booting or rebooting) wait, and replies to requests the
 * previous agent read may still be on their way.  So the client synchronises
 * before trusting the stream: it sends 0xFF (which makes the agent drop any
 * half-read request), then guest-sync-delimited with a fresh random id; the
 * agent answers 0xFF followed by the id.  Everything before that 0xFF, and
 * every reply that does not carry our id, is discarded.  A client is synced
 * after connecting and re-syncs by itself after any call that timed out or
 * was garbled, since a late reply could otherwise be taken for the answer to
 * the next request.
 *
 * Every call has a deadline: a guest that never answers gives
 * KILN_ERR_TIMEOUT "guest agent did not answer 'X' within N s".  Error
 * replies become KILN_ERR_REMOTE naming the command and the agent's
 * class and description. */
#ifndef KILN_DRIVERS_QEMU_QGA_H
#define KILN_DRIVERS_QEMU_QGA_H

#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "buf.h"
#include "error.h"

struct kiln_qga;

/* Connects to the socket (retrying while it is missing, up to timeout_ms).
 * Does not sync: the agent may not be running yet. */
int kiln_qga_connect (const char *socket_path, int timeout_ms, struct kiln_qga **out, kiln_error **err);
/* Over an already connected socket (tests); takes fd. */
struct kiln_qga *kiln_qga_open_fd (int fd);
void kiln_qga_close (struct kiln_qga *g);

/* One guest-sync-delimited exchange with a fresh id, waiting up to
 * timeout_ms for its answer.  Callers waiting for an agent to come up call
 * it repeatedly: each attempt's request waits in the channel until an agent
 * reads it, and answers to earlier attempts are skipped by id. */
int kiln_qga_sync (struct kiln_qga *g, int timeout_ms, kiln_error **err);
/* Whether the next call will sync first. */
bool kiln_qga_synced (const struct kiln_qga *g);
/* Makes the next call sync first (e.g. after the guest rebooted). */
void kiln_qga_invalidate (struct kiln_qga *g);

/* Runs an agent command; arguments are borrowed (NULL for none) and *ret
 * (when non-NULL) gets a new reference to the "return" value. */
int kiln_qga_call (struct kiln_qga *g, const char *command, json_t *arguments, json_t **ret, int timeout_ms,
                   kiln_error **err);
int kiln_qga_ping (struct kiln_qga *g, int timeout_ms, kiln_error **err);
/* guest-info: the agent's version and commands (*info: new reference). */
int kiln_qga_info (struct kiln_qga *g, json_t **info, int timeout_ms, kiln_error **err);
/* guest-shutdown with mode "powerdown", "reboot" or "halt".  The agent sends
 * no reply when it succeeds: an error reply within timeout_ms is reported,
 * silence until then (or the channel closing as QEMU exits) is success, so
 * this always takes timeout_ms unless QEMU goes away or an error comes.  The
 * client re-syncs before its next call. */
int kiln_qga_shutdown (struct kiln_qga *g, const char *mode, int timeout_ms, kiln_error **err);

/* --- processes ---------------------------------------------------------- */

struct kiln_qga_exec_spec {
  const char *path;          /* program on the guest (guest-exec searches PATH) */
  char *const *args;         /* its arguments after argv[0], or NULL */
  char *const *env;          /* the program's whole environment ("N=V"), or NULL to inherit the agent's */
  const void *input;         /* stdin, or NULL */
  size_t input_len;
  bool capture;              /* collect stdout and stderr */
  int timeout_ms;            /* the process's deadline; <= 0: none */
  int call_timeout_ms;       /* each agent call's deadline */
  /* On the deadline: true to kill the process group whose leader is the
   * process (it must have made itself one, see kiln_qga_run), false to kill
   * the process alone. */
  bool kill_group;
  /* Raised by a signal handler: the process is killed as on its deadline
   * and the call fails with KILN_ERR_CANCELLED.  NULL: never. */
  volatile sig_atomic_t *cancel;
};

struct kiln_qga_exec_result {
  int exit_code;             /* -1 when ended by a signal */
  int term_signal;           /* the signal, 0 if it exited */
  bool timed_out;            /* killed at the deadline */
  struct kiln_buf out;
  struct kiln_buf err;
  bool out_truncated;        /* the agent kept only the first 16 MiB */
  bool err_truncated;
  int64_t pid;               /* the guest's pid of the process */
};

/* guest-exec, then guest-exec-status polled (10 ms, doubling to 200 ms) until
 * the process has exited; on the deadline the process (group) is killed with
 * SIGKILL and waited for.  Returns 0 when it ran (see res), -1 when it could
 * not be started or followed. */
int kiln_qga_exec (struct kiln_qga *g, const struct kiln_qga_exec_spec *spec, struct kiln_qga_exec_result *res,
                   kiln_error **err);

struct kiln_qga_run_spec {
  char *const *argv;         /* argv[0] found through the guest's PATH */
  char *const *env;          /* extra "NAME=VALUE" entries over the agent's environment, or NULL */
  const char *cwd;           /* NULL: the agent's (usually /) */
  const void *input;         /* stdin, or NULL */
  size_t input_len;
  int timeout_ms;            /* <= 0: none */
  int call_timeout_ms;
  volatile sig_atomic_t *cancel; /* as in kiln_qga_exec_spec */
};

/* Runs argv through a /bin/sh wrapper that changes to cwd, exports env, and
 * execs the program as the leader of a new session (setsid), so a timeout
 * kills everything it started.  A cwd that does not exist or a program that
 * is not found is an error (KILN_ERR_NOT_FOUND), not an exit status. */
int kiln_qga_run (struct kiln_qga *g, const struct kiln_qga_run_spec *spec, struct kiln_qga_exec_result *res,
                  kiln_error **err);
/* The wrapper's argument vector after "/bin/sh" (for tests and logs). */
char **kiln_qga_run_args (const struct kiln_qga_run_spec *spec);
/* The arguments after "/bin/sh" of what kills pid (and its process group)
 * at a deadline. */
char **kiln_qga_kill_args (int64_t pid, bool group);

void kiln_qga_exec_result_release (struct kiln_qga_exec_result *res);

/* --- files -------------------------------------------------------------- */

/* Bytes per guest-file-read / guest-file-write call. */
#define KILN_QGA_FILE_CHUNK (1024 * 1024)

/* Writes local_path's contents to path on the guest (guest-file-open "w",
 * chunked writes, close).  The parent directory must exist. */
int kiln_qga_file_put (struct kiln_qga *g, const char *local_path, const char *path, int call_timeout_ms,
                       kiln_error **err);
/* Copies path on the guest to local_path (written through a temporary file
 * and renamed, so local_path is whole or untouched). */
int kiln_qga_file_get (struct kiln_qga *g, const char *path, const char *local_path, int call_timeout_ms,
                       kiln_error **err);

#endif
