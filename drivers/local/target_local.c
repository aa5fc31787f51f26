/* target_local.c - the local target: components run on the machine running
 * kiln (see target.h).
 *
 * Commands go through kiln_process_run, so they get its deadline, process
 * group handling and output capture.  Target paths are host paths, so putting
 * and getting a file are both a copy; the copy lands atomically (temporary file
 * in the destination directory, then rename) so a reader never sees half a
 * file.  This host cannot reboot under the executor, so reboot answers
 * KILN_REBOOT_DEFERRED and leaves the decision to the executor.  The scratch
 * directory is a fresh temporary directory, removed with everything in it on
 * close. */
#include "target.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cleanup.h"
#include "fsutil.h"
#include "log.h"
#include "process.h"

#define COPY_CHUNK (64 * 1024)
/* copy_file: keep the source's permission bits. */
#define MODE_OF_SOURCE ((mode_t) -1)
/* The operations take the target whether or not this host needs it. */
#define _unused_ __attribute__ ((unused))

/* Adapts the process layer's output callback to the target's. */
struct output_forward {
  void (*on_output) (void *opaque, int stream, const char *data, size_t len);
  void *opaque;
};

static void
forward_output (void *opaque, enum kiln_stream stream, const char *data, size_t len)
{
  struct output_forward *fwd = opaque;
  fwd->on_output (fwd->opaque, (int) stream, data, len);
}

static int
local_run (struct kiln_target *t _unused_, const struct kiln_target_command *cmd, struct kiln_target_result *res,
           kiln_error **err)
{
  *res = (struct kiln_target_result){.exit_code = -1, .out = KILN_BUF_INIT, .err = KILN_BUF_INIT};
  struct output_forward fwd = {cmd->on_output, cmd->opaque};
  struct kiln_process_spec spec = {
    .argv = cmd->argv,
    .env = cmd->env,
    .cwd = cmd->cwd,
    .on_output = cmd->on_output ? forward_output : NULL,
    .opaque = &fwd,
  };
  if (cmd->timeout_seconds > 0)
    spec.timeout_ms = cmd->timeout_seconds > INT_MAX / 1000 ? INT_MAX : cmd->timeout_seconds * 1000;

  struct kiln_process_result pr;
  if (kiln_process_run (&spec, &pr, err) < 0)
    {
      kiln_process_result_release (&pr);
      return -1;
    }
  res->exit_code = pr.exit_code;
  res->timed_out = pr.timed_out;
  res->out = pr.out;
  res->err = pr.err;
  return 0;
}

/* Copies from to to, replacing to atomically, with permission bits mode (or
 * the source's with MODE_OF_SOURCE).  to's directory must exist. */
static int
copy_file (const char *from, const char *to, mode_t mode, kiln_error **err)
{
  _cleanup_close_ int in = -1;
  _cleanup_close_ int out = -1;
  _cleanup_unlink_ char *tmp = NULL;
  _cleanup_free_ char *chunk = NULL;

  in = open (from, O_RDONLY | O_CLOEXEC);
  if (in < 0)
    return kiln_error_set (err, errno == ENOENT ? KILN_ERR_NOT_FOUND : KILN_ERR_IO, errno, "open '%s'", from);
  struct stat st;
  if (fstat (in, &st) < 0)
    return kiln_fail_errno (err, errno, "stat '%s'", from);
  if (!S_ISREG (st.st_mode))
    return kiln_fail_invalid (err, "copy '%s': not a regular file", from);
  if (mode == MODE_OF_SOURCE)
    mode = st.st_mode;

  out = kiln_make_temp_beside (to, &tmp, err);
  if (out < 0)
    return -1;

  chunk = malloc (COPY_CHUNK);
  if (chunk == NULL)
    abort ();
  for (;;)
    {
      ssize_t n = read (in, chunk, COPY_CHUNK);
      if (n < 0 && errno == EINTR)
        continue;
      if (n < 0)
        return kiln_fail_errno (err, errno, "read '%s'", from);
      if (n == 0)
        break;
      if (kiln_write_all (out, chunk, (size_t) n) < 0)
        return kiln_fail_errno (err, errno, "write '%s'", to);
    }
  /* fchmod, unlike the mode given to open, is not narrowed by the umask. */
  if (fchmod (out, mode & 07777) < 0)
    return kiln_fail_errno (err, errno, "set the mode of '%s'", to);
  if (close (kiln_steal_fd (&out)) < 0)
    return kiln_fail_errno (err, errno, "write '%s'", to);
  if (rename (tmp, to) < 0)
    return kiln_fail_errno (err, errno, "replace '%s'", to);
  free (kiln_steal_pointer (&tmp));
  return 0;
}

static int
local_put_file (struct kiln_target *t _unused_, const char *local_path, const char *path, mode_t mode,
                kiln_error **err)
{
  return copy_file (local_path, path, mode, err);
}

static int
local_get_file (struct kiln_target *t _unused_, const char *path, const char *local_path, kiln_error **err)
{
  return copy_file (path, local_path, MODE_OF_SOURCE, err);
}

static int
local_stat (struct kiln_target *t _unused_, const char *path, struct kiln_target_stat *out, kiln_error **err)
{
  memset (out, 0, sizeof *out);
  struct stat st;
  if (lstat (path, &st) < 0)
    {
      if (errno == ENOENT || errno == ENOTDIR)
        return 0;
      return kiln_fail_errno (err, errno, "stat '%s'", path);
    }
  out->exists = true;
  out->is_dir = S_ISDIR (st.st_mode);
  out->is_file = S_ISREG (st.st_mode);
  out->is_symlink = S_ISLNK (st.st_mode);
  out->mode = st.st_mode & 07777;
  out->uid = st.st_uid;
  out->gid = st.st_gid;
  out->size = (uint64_t) st.st_size;
  return 0;
}

static int
local_reboot (struct kiln_target *t _unused_, enum kiln_reboot_outcome *outcome, kiln_error **err _unused_)
{
  *outcome = KILN_REBOOT_DEFERRED;
  return 0;
}

static void
local_close (struct kiln_target *t)
{
  _cleanup_error_ kiln_error *e = NULL;
  if (t->scratch_dir && kiln_remove_tree (t->scratch_dir, &e) < 0)
    kiln_log_warn ("remove scratch directory: %s", kiln_error_message (e));
}

static const struct kiln_target_ops local_ops = {
  .name = "local",
  .streams_output = true,
  .run = local_run,
  .put_file = local_put_file,
  .get_file = local_get_file,
  .stat = local_stat,
  .reboot = local_reboot,
  .close = local_close,
};

int
kiln_target_local_open (struct kiln_target **out, kiln_error **err)
{
  _cleanup_free_ struct kiln_target *t = calloc (1, sizeof *t);
  if (t == NULL)
    abort ();
  t->ops = &local_ops;
  if (kiln_make_temp_dir ("kiln-target", &t->scratch_dir, err) < 0)
    return -1;
  *out = kiln_steal_pointer (&t);
  return 0;
}
