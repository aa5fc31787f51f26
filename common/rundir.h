/* rundir.h - run directories: where a kiln command keeps what it starts.
 *
 * Every command that starts machines or makes temporary files gets a fresh
 * directory under the runtime base ($KILN_RUNTIME_DIR, else /var/tmp/kiln/run
 * for root and /var/tmp/kiln-UID/run for others: on disk, because instance
 * disks live there), holds an exclusive lock on its `lock` file for
 * its whole life, and records the pid of every long-running child in a
 * `*.pid` file inside it.  The directory is removed when the command ends,
 * whatever the ending.  A command killed outright (SIGKILL) cannot do that,
 * so every kiln command first reaps the run directories whose lock nobody
 * holds: it kills the processes their pid files name (only if that process's
 * command line still mentions the directory, so a recycled pid is never hit)
 * and removes the directory. */
#ifndef KILN_COMMON_RUNDIR_H
#define KILN_COMMON_RUNDIR_H

#include <stdbool.h>

#include "error.h"

struct kiln_rundir {
  char *path;
  int lock_fd;
};

/* The base directory (created if needed); malloc'd. */
int kiln_rundir_base (char **out, kiln_error **err);
int kiln_rundir_create (const char *label, struct kiln_rundir **out, kiln_error **err);
/* Removes the directory (unless keep) and releases the lock. */
void kiln_rundir_release (struct kiln_rundir *rd, bool keep);
/* Cleans up after kiln commands that died without doing so.  Returns the
 * number of directories reaped. */
int kiln_rundir_reap_stale (kiln_error **err);

#endif
