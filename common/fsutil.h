/* fsutil.h - file-system operations kiln needs in several places: whole-file
 * reads, complete writes to a descriptor, atomic writes (a reader sees the old
 * file or the new one, never a torn one), recursive mkdir and removal, and
 * temporary files removed when their variable goes out of scope. */
#ifndef KILN_COMMON_FSUTIL_H
#define KILN_COMMON_FSUTIL_H

#include <stddef.h>
#include <sys/types.h>

#include "buf.h"
#include "error.h"

int kiln_read_file (const char *path, struct kiln_buf *out, kiln_error **err);
/* Writes all len bytes of data to fd, going on after short writes and EINTR.
 * Returns 0, or -1 with errno set by the write(2) that failed. */
int kiln_write_all (int fd, const void *data, size_t len);
/* Writes data to path through a temporary file in the same directory, fsync
 * and rename. */
int kiln_write_file_atomic (const char *path, const void *data, size_t len, mode_t mode, kiln_error **err);
/* kiln's cache directory, made if missing: $XDG_CACHE_HOME/kiln, else
 * $HOME/.cache/kiln, else /var/cache/.cache/kiln (malloc'd).  Base images,
 * downloaded packages and the accelerator probe's verdict live there. */
int kiln_cache_dir (char **out, kiln_error **err);
/* mkdir -p; existing directories are fine. */
int kiln_mkdir_p (const char *path, mode_t mode, kiln_error **err);
/* rm -rf without following symbolic links; a missing path is fine. */
int kiln_remove_tree (const char *path, kiln_error **err);
/* A new directory under $TMPDIR (or /tmp) named prefix-XXXXXX; malloc'd path. */
int kiln_make_temp_dir (const char *prefix, char **out, kiln_error **err);
/* A new empty file under $TMPDIR (or /tmp) named prefix-XXXXXX: returns its
 * descriptor (close-on-exec) and puts its malloc'd path in *out; -1 with err
 * ("create a temporary file under 'DIR'") when it cannot be made. */
int kiln_make_temp_file (const char *prefix, char **out, kiln_error **err);

/* A new empty file beside path (same directory, so a rename onto path is
 * atomic) named path.kiln-XXXXXX: returns its descriptor (close-on-exec) and
 * puts its malloc'd name in *out; -1 with err ("create a temporary file next
 * to 'PATH'") when it cannot be made, *out untouched (on failure the name may
 * be someone else's file: never unlink it). */
int kiln_make_temp_beside (const char *path, char **out, kiln_error **err);

/* For `_cleanup_unlink_ char *path = NULL;`: when the variable goes out of
 * scope holding a path, that file is unlinked (errors ignored, errno kept) and
 * the string freed.  To keep the file, take the path out with
 * kiln_steal_pointer() (cleanup.h). */
void kiln_unlink_freep (char **path);
#define _cleanup_unlink_ __attribute__ ((cleanup (kiln_unlink_freep)))

#endif
