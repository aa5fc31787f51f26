/* target.c - the target operations as the executor calls them (see target.h).
 *
 * Each dispatcher checks that the target implements the operation and calls
 * it; a missing slot is a KILN_ERR_UNSUPPORTED error naming the target, which
 * lets a driver leave out what its guests cannot do.  Errors from the slots
 * pass through as they are: drivers already name the path or command, and
 * the executor adds the step it was running.
 *
 * The conveniences (put_data, get_data, run_checked) are built only from the
 * operations, so every driver gets them for free. */
#include "target.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cleanup.h"
#include "fsutil.h"

/* How much of a failed command's stderr goes into the error message. */
#define STDERR_MAX_LINES 3
#define STDERR_MAX_CHARS 400
#define COMMAND_LINE_MAX_CHARS 160

static int
unsupported (const struct kiln_target *t, const char *operation, kiln_error **err)
{
  return kiln_error_set (err, KILN_ERR_UNSUPPORTED, 0, "target '%s' does not support %s",
                         t->ops->name ? t->ops->name : "unnamed", operation);
}

int
kiln_target_run (struct kiln_target *t, const struct kiln_target_command *cmd, struct kiln_target_result *res,
                 kiln_error **err)
{
  if (t->ops->run == NULL)
    return unsupported (t, "run", err);
  if (t->ops->run (t, cmd, res, err) < 0)
    return -1;
  if (cmd->on_output && !t->ops->streams_output)
    {
      if (res->out.len)
        cmd->on_output (cmd->opaque, 1, res->out.data, res->out.len);
      if (res->err.len)
        cmd->on_output (cmd->opaque, 2, res->err.data, res->err.len);
    }
  return 0;
}

int
kiln_target_put_file (struct kiln_target *t, const char *local_path, const char *path, mode_t mode,
                      kiln_error **err)
{
  if (t->ops->put_file == NULL)
    return unsupported (t, "put_file", err);
  return t->ops->put_file (t, local_path, path, mode, err);
}

int
kiln_target_get_file (struct kiln_target *t, const char *path, const char *local_path, kiln_error **err)
{
  if (t->ops->get_file == NULL)
    return unsupported (t, "get_file", err);
  return t->ops->get_file (t, path, local_path, err);
}

int
kiln_target_stat (struct kiln_target *t, const char *path, struct kiln_target_stat *st, kiln_error **err)
{
  if (t->ops->stat == NULL)
    return unsupported (t, "stat", err);
  return t->ops->stat (t, path, st, err);
}

int
kiln_target_reboot (struct kiln_target *t, enum kiln_reboot_outcome *outcome, kiln_error **err)
{
  if (t->ops->reboot == NULL)
    return unsupported (t, "reboot", err);
  return t->ops->reboot (t, outcome, err);
}

void
kiln_target_close (struct kiln_target *t)
{
  if (t == NULL)
    return;
  if (t->ops && t->ops->close)
    t->ops->close (t);
  free (t->scratch_dir);
  free (t);
}

int
kiln_target_put_data (struct kiln_target *t, const void *data, size_t len, const char *path, mode_t mode,
                      kiln_error **err)
{
  _cleanup_unlink_ char *local = NULL;
  _cleanup_close_ int fd = kiln_make_temp_file ("kiln-put", &local, err);
  if (fd < 0)
    return -1;
  if (kiln_write_all (fd, data, len) < 0)
    return kiln_fail_errno (err, errno, "write '%s'", local);
  if (close (kiln_steal_fd (&fd)) < 0)
    return kiln_fail_errno (err, errno, "write '%s'", local);
  return kiln_target_put_file (t, local, path, mode, err);
}

/* out is replaced by the file's contents. */
int
kiln_target_get_data (struct kiln_target *t, const char *path, struct kiln_buf *out, kiln_error **err)
{
  _cleanup_unlink_ char *local = NULL;
  _cleanup_close_ int fd = kiln_make_temp_file ("kiln-get", &local, err);
  if (fd < 0)
    return -1;
  close (kiln_steal_fd (&fd));
  if (kiln_target_get_file (t, path, local, err) < 0)
    return -1;
  kiln_buf_reset (out);
  return kiln_read_file (local, out, err);
}

/* The command line as a user would type it, shortened for messages. */
static void
describe_command (char *const *argv, struct kiln_buf *out)
{
  for (size_t i = 0; argv[i]; i++)
    {
      if (i > 0)
        kiln_buf_puts (out, " ");
      kiln_buf_puts (out, argv[i]);
      if (out->len > COMMAND_LINE_MAX_CHARS)
        break;
    }
  if (out->len > COMMAND_LINE_MAX_CHARS)
    {
      out->len = COMMAND_LINE_MAX_CHARS;
      out->data[out->len] = '\0';
      kiln_buf_puts (out, "...");
    }
}

/* The first non-blank lines of a command's stderr, trimmed and joined with
 * "; " so the error stays a single line. */
static void
summarize_stderr (const char *text, struct kiln_buf *out)
{
  int lines = 0;
  const char *p = text;
  while (*p && lines < STDERR_MAX_LINES && out->len < STDERR_MAX_CHARS)
    {
      const char *end = strchr (p, '\n');
      if (end == NULL)
        end = p + strlen (p);
      const char *start = p;
      const char *stop = end;
      while (start < stop && (*start == ' ' || *start == '\t' || *start == '\r'))
        start++;
      while (stop > start && (stop[-1] == ' ' || stop[-1] == '\t' || stop[-1] == '\r'))
        stop--;
      if (stop > start)
        {
          if (lines++ > 0)
            kiln_buf_puts (out, "; ");
          kiln_buf_append (out, start, (size_t) (stop - start));
        }
      p = *end ? end + 1 : end;
    }
  if (out->len > STDERR_MAX_CHARS)
    {
      out->len = STDERR_MAX_CHARS;
      out->data[out->len] = '\0';
      kiln_buf_puts (out, "...");
    }
}

int
kiln_target_run_checked (struct kiln_target *t, char *const *argv, int timeout_seconds, struct kiln_buf *out,
                         kiln_error **err)
{
  struct kiln_target_command cmd = {.argv = argv, .timeout_seconds = timeout_seconds};
  struct kiln_target_result res = {.out = KILN_BUF_INIT, .err = KILN_BUF_INIT};
  struct kiln_buf command_line = KILN_BUF_INIT;
  struct kiln_buf summary = KILN_BUF_INIT;
  int r = 0;

  if (kiln_target_run (t, &cmd, &res, err) < 0)
    {
      r = -1;
      goto done;
    }
  if (res.timed_out || res.exit_code != 0)
    {
      describe_command (argv, &command_line);
      summarize_stderr (kiln_buf_str (&res.err), &summary);
      if (res.timed_out)
        r = kiln_error_set (err, KILN_ERR_TIMEOUT, 0, "'%s' timed out after %d s", kiln_buf_str (&command_line),
                            timeout_seconds);
      else if (res.exit_code < 0)
        r = kiln_fail (err, "'%s' was killed by a signal%s%s", kiln_buf_str (&command_line),
                       summary.len ? ": " : "", kiln_buf_str (&summary));
      else
        r = kiln_fail (err, "'%s' exited with status %d%s%s", kiln_buf_str (&command_line), res.exit_code,
                       summary.len ? ": " : "", kiln_buf_str (&summary));
      goto done;
    }
  if (out)
    {
      kiln_buf_release (out);
      *out = res.out;
      res.out = (struct kiln_buf) KILN_BUF_INIT;
    }

done:
  kiln_buf_release (&command_line);
  kiln_buf_release (&summary);
  kiln_target_result_release (&res);
  return r;
}

void
kiln_target_result_release (struct kiln_target_result *res)
{
  kiln_buf_release (&res->out);
  kiln_buf_release (&res->err);
}

bool
kiln_target_env_entry_valid (const char *entry)
{
  const char *eq = strchr (entry, '=');
  if (eq == NULL || eq == entry)
    return false;
  for (const char *p = entry; p < eq; p++)
    if (!(*p == '_' || (*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') || (p > entry && *p >= '0' && *p <= '9')))
      return false;
  return true;
}

bool
kiln_target_stat_from_text (const char *text, struct kiln_target_stat *st)
{
  unsigned int raw = 0;
  unsigned long uid = 0, gid = 0;
  unsigned long long size = 0;
  if (sscanf (text, "%x %lu %lu %llu", &raw, &uid, &gid, &size) != 4)
    return false;
  st->exists = true;
  st->is_dir = S_ISDIR (raw);
  st->is_file = S_ISREG (raw);
  st->is_symlink = S_ISLNK (raw);
  st->mode = raw & 07777;
  st->uid = (uid_t) uid;
  st->gid = (gid_t) gid;
  st->size = size;
  return true;
}
