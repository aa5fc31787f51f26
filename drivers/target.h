/* target.h - the place a component runs: this host, or a driver's instance.
 *
 * The component executor needs only these operations from wherever it runs:
 * run a command, move a file in or out, look at a path, reboot.  The local
 * target (drivers/local) implements them on this host; each driver's instances
 * implement them in a guest (QEMU guest agent, SSM, ...).  The executor never
 * knows which one it has.
 *
 * Paths passed to the target are paths on the target.  Paths named "local"
 * are paths on the machine running kiln. */
#ifndef KILN_DRIVERS_TARGET_H
#define KILN_DRIVERS_TARGET_H

#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "buf.h"
#include "error.h"

struct kiln_target;

struct kiln_target_command {
  char *const *argv;       /* program and arguments; argv[0] found through the target's PATH */
  char *const *env;        /* extra "NAME=VALUE" entries, or NULL */
  const char *cwd;         /* working directory on the target, or NULL */
  int timeout_seconds;     /* <= 0: none */
  /* Called with output as it arrives, when the target can stream, else once
   * per stream at the end (kiln_target_run does that for such targets). */
  void (*on_output) (void *opaque, int stream, const char *data, size_t len);
  void *opaque;
};

struct kiln_target_result {
  int exit_code;        /* -1 when killed by a signal */
  bool timed_out;
  struct kiln_buf out;
  struct kiln_buf err;
};

struct kiln_target_stat {
  bool exists;
  bool is_dir;
  bool is_file;
  bool is_symlink; /* the path itself is a symbolic link (lstat) */
  mode_t mode;     /* permission bits */
  uid_t uid;
  gid_t gid;
  uint64_t size;
};

enum kiln_reboot_outcome {
  KILN_REBOOT_DONE,     /* the target rebooted and is answering again */
  KILN_REBOOT_DEFERRED, /* the target cannot reboot under the executor (this host):
                           the executor saves its state and stops; a later run resumes */
};

struct kiln_target_ops {
  const char *name;
  /* run calls cmd->on_output as output arrives (this host).  Otherwise the
   * dispatcher hands on_output the whole stdout, then stderr, once run
   * returns (a guest agent or SSM gives output only at the end). */
  bool streams_output;
  /* Runs a command to completion.  Returns 0 when it ran (see result for its
   * status), -1 when it could not be run at all. */
  int (*run) (struct kiln_target *t, const struct kiln_target_command *cmd, struct kiln_target_result *res,
              kiln_error **err);
  /* Copies local_path to path on the target, replacing it, with the given
   * permission bits.  The parent directory must exist. */
  int (*put_file) (struct kiln_target *t, const char *local_path, const char *path, mode_t mode,
                   kiln_error **err);
  /* Copies path on the target to local_path. */
  int (*get_file) (struct kiln_target *t, const char *path, const char *local_path, kiln_error **err);
  /* lstat(2) on the target.  A missing path is not an error: exists = false. */
  int (*stat) (struct kiln_target *t, const char *path, struct kiln_target_stat *st, kiln_error **err);
  int (*reboot) (struct kiln_target *t, enum kiln_reboot_outcome *outcome, kiln_error **err);
  void (*close) (struct kiln_target *t);
};

struct kiln_target {
  const struct kiln_target_ops *ops;
  void *priv;
  /* Directory on the target for the executor's scratch files (scripts, uploads). */
  char *scratch_dir;
  /* When non-NULL and raised (by a signal handler), operations that wait
   * stop and fail with KILN_ERR_CANCELLED. */
  volatile sig_atomic_t *cancel;
};

/* Dispatchers: check the slot, call it, add the target's name to errors. */
int kiln_target_run (struct kiln_target *t, const struct kiln_target_command *cmd, struct kiln_target_result *res,
                     kiln_error **err);
int kiln_target_put_file (struct kiln_target *t, const char *local_path, const char *path, mode_t mode,
                          kiln_error **err);
int kiln_target_get_file (struct kiln_target *t, const char *path, const char *local_path, kiln_error **err);
int kiln_target_stat (struct kiln_target *t, const char *path, struct kiln_target_stat *st, kiln_error **err);
int kiln_target_reboot (struct kiln_target *t, enum kiln_reboot_outcome *outcome, kiln_error **err);
void kiln_target_close (struct kiln_target *t);

/* Conveniences over the operations. */
/* Writes bytes to path on the target (through a local temporary file). */
int kiln_target_put_data (struct kiln_target *t, const void *data, size_t len, const char *path, mode_t mode,
                          kiln_error **err);
/* Reads a file on the target into out. */
int kiln_target_get_data (struct kiln_target *t, const char *path, struct kiln_buf *out, kiln_error **err);
/* Runs argv with a timeout; fails unless it exits 0, with its stderr in the message. */
int kiln_target_run_checked (struct kiln_target *t, char *const *argv, int timeout_seconds, struct kiln_buf *out,
                             kiln_error **err);

void kiln_target_result_release (struct kiln_target_result *res);

/* The local target: this host.  Reboot is deferred (see above). */
int kiln_target_local_open (struct kiln_target **out, kiln_error **err);

/* ---- for the drivers that reach a guest through a shell ---- */

/* Whether entry is "NAME=VALUE" with NAME a shell variable name (letters,
 * digits, '_', not starting with a digit): what a driver may export to a
 * command without quoting the name. */
bool kiln_target_env_entry_valid (const char *entry);
/* Reads stat(1)'s "%f %u %g %s" (raw mode in hex, uid, gid, size) into
 * *st (exists set); false when text is not that. */
bool kiln_target_stat_from_text (const char *text, struct kiln_target_stat *st);

#endif
