/* rundir.c - run directories with a lock, and reaping those of dead kiln
 * commands (see rundir.h). */
#include "rundir.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "buf.h"
#include "cleanup.h"
#include "fsutil.h"
#include "log.h"
#include "process.h"
#include "xalloc.h"

int
kiln_rundir_base (char **out, kiln_error **err)
{
  /* Run directories hold instance disks (overlays grow with what a build
   * installs), so they live on disk, not on a tmpfs like /run. */
  const char *env = getenv ("KILN_RUNTIME_DIR");
  char *base = NULL;
  if (env && *env)
    base = kiln_xstrdup (env);
  else if (geteuid () == 0)
    base = kiln_xstrdup ("/var/tmp/kiln/run");
  else
    base = kiln_xasprintf ("/var/tmp/kiln-%u/run", (unsigned) geteuid ());
  if (kiln_mkdir_p (base, 0700, err) < 0)
    {
      free (base);
      return kiln_error_prefix (err, "runtime directory");
    }
  *out = base;
  return 0;
}

int
kiln_rundir_create (const char *label, struct kiln_rundir **out, kiln_error **err)
{
  _cleanup_free_ char *base = NULL;
  if (kiln_rundir_base (&base, err) < 0)
    return -1;
  struct kiln_rundir *rd = calloc (1, sizeof *rd);
  if (rd == NULL)
    abort ();
  rd->lock_fd = -1;
  rd->path = kiln_xasprintf ("%s/%s-%d-XXXXXX", base, label, (int) getpid ());
  if (mkdtemp (rd->path) == NULL)
    {
      kiln_fail_errno (err, errno, "create run directory under '%s'", base);
      free (rd->path);
      free (rd);
      return -1;
    }
  _cleanup_free_ char *lock = NULL;
  lock = kiln_xasprintf ("%s/lock", rd->path);
  rd->lock_fd = open (lock, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (rd->lock_fd < 0 || flock (rd->lock_fd, LOCK_EX | LOCK_NB) < 0)
    {
      kiln_fail_errno (err, errno, "lock '%s'", lock);
      kiln_rundir_release (rd, false);
      return -1;
    }
  dprintf (rd->lock_fd, "%d\n", (int) getpid ());
  *out = rd;
  return 0;
}

/* <dir>/<name>: the files of tracked paths and of the publish journal. */
static char *
record_path (const char *dir, const char *name)
{
  char *p = NULL;
  p = kiln_xasprintf ("%s/%s", dir, name);
  return p;
}

/* The lines of a record file (empty when there is none). */
static char **
read_lines (const char *path)
{
  char **v = calloc (1, sizeof *v);
  if (v == NULL)
    abort ();
  struct kiln_buf b = KILN_BUF_INIT;
  if (kiln_read_file (path, &b, NULL) < 0)
    return v;
  char *text = (char *) kiln_buf_str (&b);
  for (char *line = text, *nl; *line; line = nl + 1)
    {
      nl = strchr (line, '\n');
      if (nl == NULL)
        break;          /* a line cut short by a crash was never acted on */
      *nl = '\0';
      if (*line)
        kiln_strv_push (&v, line);
    }
  kiln_buf_release (&b);
  return v;
}

int
kiln_rundir_track (struct kiln_rundir *rd, const char *path, kiln_error **err)
{
  if (strchr (path, '\n'))
    return kiln_fail_invalid (err, "cannot track '%s': a newline in the name", path);
  _cleanup_free_ char *record = record_path (rd->path, "outside");
  _cleanup_close_ int fd = open (record, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
  if (fd < 0)
    return kiln_fail_errno (err, errno, "open '%s'", record);
  _cleanup_free_ char *line = NULL;
  line = kiln_xasprintf ("%s\n", path);
  if (kiln_write_all (fd, line, strlen (line)) < 0 || fsync (fd) < 0)
    return kiln_fail_errno (err, errno, "write '%s'", record);
  return 0;
}

/* Removes the tracked files that are still there. */
static void
remove_tracked (const char *dir)
{
  _cleanup_free_ char *record = record_path (dir, "outside");
  _cleanup_strv_ char **paths = read_lines (record);
  for (char **p = paths; *p; p++)
    if (unlink (*p) < 0 && errno != ENOENT)
      kiln_log_warn ("remove '%s': %s", *p, strerror (errno));
}

/* Finishes the renames a journal records: each source still there is
 * renamed (the journal is written only once every source is complete). */
static void
finish_journal (const char *dir)
{
  _cleanup_free_ char *journal = record_path (dir, "publish");
  _cleanup_strv_ char **v = read_lines (journal);
  for (size_t i = 0; v[i] && v[i + 1]; i += 2)
    if (access (v[i], F_OK) == 0)
      {
        if (rename (v[i], v[i + 1]) < 0)
          kiln_log_warn ("finish publishing '%s': %s", v[i + 1], strerror (errno));
        else
          kiln_log_info ("published '%s', left half done by a kiln that was killed", v[i + 1]);
      }
  unlink (journal);
}

int
kiln_rundir_publish (struct kiln_rundir *rd, const char *const *pairs, kiln_error **err)
{
  struct kiln_buf text = KILN_BUF_INIT;
  size_t n = 0;
  for (; pairs[n] && pairs[n + 1]; n += 2)
    {
      if (strchr (pairs[n], '\n') || strchr (pairs[n + 1], '\n'))
        {
          kiln_buf_release (&text);
          return kiln_fail_invalid (err, "cannot publish '%s': a newline in the name", pairs[n + 1]);
        }
      kiln_buf_printf (&text, "%s\n%s\n", pairs[n], pairs[n + 1]);
    }
  _cleanup_free_ char *journal = record_path (rd->path, "publish");
  int r = kiln_write_file_atomic (journal, text.data ? text.data : "", text.len, 0600, err);
  kiln_buf_release (&text);
  if (r < 0)
    return kiln_error_prefix (err, "publish");
  size_t done = 0;
  for (; done < n; done += 2)
    if (rename (pairs[done], pairs[done + 1]) < 0)
      {
        r = kiln_fail_errno (err, errno, "publish '%s'", pairs[done + 1]);
        break;
      }
  if (r < 0)
    {
      for (size_t i = 0; i < done; i += 2)
        unlink (pairs[i + 1]);
      for (size_t i = done; i < n; i += 2)
        unlink (pairs[i]);
    }
  unlink (journal);
  return r;
}

void
kiln_rundir_release (struct kiln_rundir *rd, bool keep)
{
  if (rd == NULL)
    return;
  /* Partial files outside go whatever the ending: keep is for the run
   * directory's contents (disks, logs), which a user may want to look at. */
  if (rd->path)
    remove_tracked (rd->path);
  if (!keep && rd->path)
    {
      _cleanup_error_ kiln_error *e = NULL;
      if (kiln_remove_tree (rd->path, &e) < 0)
        kiln_log_warn ("remove run directory: %s", kiln_error_message (e));
    }
  if (rd->lock_fd >= 0)
    close (rd->lock_fd);
  free (rd->path);
  free (rd);
}

/* True when /proc/PID/cmdline mentions dir: the process is still the one
 * this run directory started. */
static bool
process_mentions (pid_t pid, const char *dir)
{
  _cleanup_free_ char *path = NULL;
  path = kiln_xasprintf ("/proc/%d/cmdline", (int) pid);
  struct kiln_buf b = KILN_BUF_INIT;
  if (kiln_read_file (path, &b, NULL) < 0)
    return false;
  for (size_t i = 0; i < b.len; i++)
    if (b.data[i] == '\0')
      b.data[i] = ' ';
  bool found = memmem (b.data, b.len, dir, strlen (dir)) != NULL;
  kiln_buf_release (&b);
  return found;
}

/* Kills what the pid files below dir name. */
static void
kill_recorded (const char *dir)
{
  DIR *d = opendir (dir);
  if (d == NULL)
    return;
  struct dirent *de;
  while ((de = readdir (d)) != NULL)
    {
      if (de->d_name[0] == '.')
        continue;
      _cleanup_free_ char *child = NULL;
      child = kiln_xasprintf ("%s/%s", dir, de->d_name);
      struct stat st;
      if (lstat (child, &st) < 0)
        continue;
      if (S_ISDIR (st.st_mode))
        {
          kill_recorded (child);
          continue;
        }
      size_t n = strlen (de->d_name);
      if (n < 4 || strcmp (de->d_name + n - 4, ".pid") != 0)
        continue;
      struct kiln_buf b = KILN_BUF_INIT;
      if (kiln_read_file (child, &b, NULL) == 0)
        {
          pid_t pid = (pid_t) atoi (kiln_buf_str (&b));
          if (pid > 1 && process_mentions (pid, dir))
            {
              kiln_log_info ("reaping process %d left by a dead kiln (%s)", (int) pid, child);
              kill (pid, SIGKILL);
              /* Not our child: wait for it to be gone from /proc. */
              for (int i = 0; i < 500 && process_mentions (pid, dir); i++)
                usleep (10000);
            }
        }
      kiln_buf_release (&b);
    }
  closedir (d);
}

/* Offers every subdirectory of dir (an instance's work directory) to hook. */
static int
reap_subdirs (const char *dir, kiln_rundir_reap_hook hook, kiln_error **err)
{
  DIR *d = opendir (dir);
  if (d == NULL)
    return kiln_fail_errno (err, errno, "open '%s'", dir);
  int r = 0;
  struct dirent *de;
  while ((de = readdir (d)) != NULL)
    {
      if (de->d_name[0] == '.')
        continue;
      _cleanup_free_ char *child = NULL;
      child = kiln_xasprintf ("%s/%s", dir, de->d_name);
      struct stat st;
      if (lstat (child, &st) < 0 || !S_ISDIR (st.st_mode))
        continue;
      kiln_error *e = NULL;
      if (hook (child, &e) < 0)
        {
          if (r == 0)
            kiln_error_move (err, &e);
          r = -1;
        }
      kiln_error_free (e);
    }
  closedir (d);
  return r;
}

int
kiln_rundir_reap_stale (kiln_rundir_reap_hook hook, kiln_error **err)
{
  _cleanup_free_ char *base = NULL;
  if (kiln_rundir_base (&base, err) < 0)
    return -1;
  DIR *d = opendir (base);
  if (d == NULL)
    return kiln_fail_errno (err, errno, "open '%s'", base);
  int reaped = 0;
  struct dirent *de;
  while ((de = readdir (d)) != NULL)
    {
      if (de->d_name[0] == '.')
        continue;
      _cleanup_free_ char *dir = NULL;
      _cleanup_free_ char *lock = NULL;
      dir = kiln_xasprintf ("%s/%s", base, de->d_name);
      lock = kiln_xasprintf ("%s/lock", dir);
      int fd = open (lock, O_RDWR | O_CLOEXEC);
      if (fd < 0)
        {
          /* A directory without a lock is one whose creation was cut short,
           * unless it is brand new (its creator may be between the two steps). */
          struct stat st;
          if (errno == ENOENT && stat (dir, &st) == 0 && S_ISDIR (st.st_mode) && time (NULL) - st.st_mtime > 60)
            {
              kiln_remove_tree (dir, NULL);
              reaped++;
            }
          continue;
        }
      _cleanup_free_ char *keep = NULL;
      keep = kiln_xasprintf ("%s/keep", dir);
      if (access (keep, F_OK) == 0)
        {
          /* Kept on purpose (--keep-on-failure): the user removes it. */
          close (fd);
          continue;
        }
      if (flock (fd, LOCK_EX | LOCK_NB) == 0)
        {
          kill_recorded (dir);
          finish_journal (dir);
          remove_tracked (dir);
          _cleanup_error_ kiln_error *e = NULL;
          if (hook && reap_subdirs (dir, hook, &e) < 0)
            {
              /* Something still runs somewhere (a cloud instance): keep the
               * record so a later command tries again. */
              kiln_log_warn ("could not end everything a dead kiln left (%s): %s; kiln tries again next time, "
                             "or remove the directory once it is dealt with",
                             dir, kiln_error_message (e));
            }
          else if (kiln_remove_tree (dir, &e) < 0)
            kiln_log_warn ("reap '%s': %s", dir, kiln_error_message (e));
          else
            reaped++;
        }
      close (fd);
    }
  closedir (d);
  return reaped;
}
