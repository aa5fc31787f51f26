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
 * and removes the directory.  What lives outside this machine (a cloud
 * instance) cannot be found from a pid: a hook given by the caller is offered
 * each instance work directory inside a dead run directory, and a run
 * directory whose hook fails is kept for a later try.
 *
 * Files a command writes outside its run directory (a partial output under
 * a temporary name beside where it will be published) are recorded in the
 * run directory before they are made, so release and the reaper remove
 * them too.  Publishing several files (an image and its manifest) goes
 * through a journal of renames in the run directory: a command that dies
 * part way has its renames finished by the reaper, so the files appear
 * together, never one without the other. */
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
/* Ends what a dead command left in the work directory of one of its
 * instances: 0 when nothing is left running, -1 with err otherwise. */
typedef int (*kiln_rundir_reap_hook) (const char *work_dir, kiln_error **err);

/* Records path (outside the run directory) as this command's temporary
 * file: removed, if still there, when the run directory is released or
 * reaped.  Call it before creating the file. */
int kiln_rundir_track (struct kiln_rundir *rd, const char *path, kiln_error **err);

/* Renames pairs[0] to pairs[1], pairs[2] to pairs[3], ... (NULL-ended) as
 * one step: the journal is made durable first, so if this command dies part
 * way the next kiln command's reaper finishes the renames.  When a rename
 * fails here, the ones already done are undone by removing their
 * destinations (and every source is removed), so nothing is published. */
int kiln_rundir_publish (struct kiln_rundir *rd, const char *const *pairs, kiln_error **err);

/* Cleans up after kiln commands that died without doing so (hook may be
 * NULL): their processes killed, their journal of renames finished, their
 * temporary files outside removed, the directory removed.  Returns the
 * number of directories reaped. */
int kiln_rundir_reap_stale (kiln_rundir_reap_hook hook, kiln_error **err);

#endif
