/* fsutil.c - whole-file reads, complete and atomic writes, mkdir -p, rm -rf,
 * temporary directories and scope-bound temporary files (see fsutil.h). */
#include "fsutil.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cleanup.h"
#include "xalloc.h"

int
kiln_read_file (const char *path, struct kiln_buf *out, kiln_error **err)
{
  _cleanup_close_ int fd = open (path, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return kiln_fail_errno (err, errno, "open '%s'", path);
  char chunk[65536];
  for (;;)
    {
      ssize_t n = read (fd, chunk, sizeof chunk);
      if (n < 0 && errno == EINTR)
        continue;
      if (n < 0)
        return kiln_fail_errno (err, errno, "read '%s'", path);
      if (n == 0)
        break;
      kiln_buf_append (out, chunk, (size_t) n);
    }
  if (out->data == NULL)
    kiln_buf_append (out, "", 0);
  return 0;
}

int
kiln_write_all (int fd, const void *data, size_t len)
{
  const char *p = data;
  while (len > 0)
    {
      ssize_t n = write (fd, p, len);
      if (n < 0 && errno == EINTR)
        continue;
      if (n < 0)
        return -1;
      p += n;
      len -= (size_t) n;
    }
  return 0;
}

int
kiln_write_file_atomic (const char *path, const void *data, size_t len, mode_t mode, kiln_error **err)
{
  _cleanup_free_ char *tmp = NULL;
  _cleanup_close_ int fd = kiln_make_temp_beside (path, &tmp, err);
  if (fd < 0)
    return -1;
  if (fchmod (fd, mode) < 0 || kiln_write_all (fd, data, len) < 0 || fsync (fd) < 0)
    {
      int saved = errno;
      unlink (tmp);
      return kiln_fail_errno (err, saved, "write '%s'", tmp);
    }
  if (rename (tmp, path) < 0)
    {
      int saved = errno;
      unlink (tmp);
      return kiln_fail_errno (err, saved, "rename '%s' to '%s'", tmp, path);
    }
  return 0;
}

int
kiln_mkdir_p (const char *path, mode_t mode, kiln_error **err)
{
  _cleanup_free_ char *copy = kiln_xstrdup (path);
  for (char *p = copy + 1; *p; p++)
    {
      if (*p != '/')
        continue;
      *p = '\0';
      if (mkdir (copy, mode) < 0 && errno != EEXIST)
        return kiln_fail_errno (err, errno, "create directory '%s'", copy);
      *p = '/';
    }
  if (mkdir (copy, mode) < 0 && errno != EEXIST)
    return kiln_fail_errno (err, errno, "create directory '%s'", copy);
  struct stat st;
  if (stat (copy, &st) < 0)
    return kiln_fail_errno (err, errno, "stat '%s'", copy);
  if (!S_ISDIR (st.st_mode))
    return kiln_error_set (err, KILN_ERR_IO, ENOTDIR, "create directory '%s'", copy);
  return 0;
}

static int
remove_at (int parent_fd, const char *name, const char *shown, kiln_error **err)
{
  struct stat st;
  if (fstatat (parent_fd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
    {
      if (errno == ENOENT)
        return 0;
      return kiln_fail_errno (err, errno, "stat '%s'", shown);
    }
  if (!S_ISDIR (st.st_mode))
    {
      if (unlinkat (parent_fd, name, 0) < 0 && errno != ENOENT)
        return kiln_fail_errno (err, errno, "remove '%s'", shown);
      return 0;
    }
  int fd = openat (parent_fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0)
    return kiln_fail_errno (err, errno, "open directory '%s'", shown);
  DIR *d = fdopendir (fd);
  if (d == NULL)
    {
      close (fd);
      return kiln_fail_errno (err, errno, "open directory '%s'", shown);
    }
  struct dirent *de;
  int r = 0;
  while (r == 0 && (de = readdir (d)) != NULL)
    {
      if (strcmp (de->d_name, ".") == 0 || strcmp (de->d_name, "..") == 0)
        continue;
      _cleanup_free_ char *child = NULL;
      child = kiln_xasprintf ("%s/%s", shown, de->d_name);
      r = remove_at (dirfd (d), de->d_name, child, err);
    }
  closedir (d);
  if (r < 0)
    return r;
  if (unlinkat (parent_fd, name, AT_REMOVEDIR) < 0 && errno != ENOENT)
    return kiln_fail_errno (err, errno, "remove directory '%s'", shown);
  return 0;
}

int
kiln_remove_tree (const char *path, kiln_error **err)
{
  return remove_at (AT_FDCWD, path, path, err);
}

/* Where temporary files and directories go: $TMPDIR, else /tmp. */
static const char *
temp_base (void)
{
  const char *base = getenv ("TMPDIR");
  return base == NULL || *base == '\0' ? "/tmp" : base;
}

int
kiln_make_temp_dir (const char *prefix, char **out, kiln_error **err)
{
  const char *base = temp_base ();
  char *path = NULL;
  path = kiln_xasprintf ("%s/%s-XXXXXX", base, prefix);
  if (mkdtemp (path) == NULL)
    {
      int saved = errno;
      kiln_error_set (err, KILN_ERR_IO, saved, "create temporary directory under '%s'", base);
      free (path);
      return -1;
    }
  *out = path;
  return 0;
}

int
kiln_make_temp_file (const char *prefix, char **out, kiln_error **err)
{
  const char *base = temp_base ();
  char *path = NULL;
  path = kiln_xasprintf ("%s/%s-XXXXXX", base, prefix);
  int fd = mkostemp (path, O_CLOEXEC);
  if (fd < 0)
    {
      int saved = errno;
      free (path);
      return kiln_fail_errno (err, saved, "create a temporary file under '%s'", base);
    }
  *out = path;
  return fd;
}

int
kiln_make_temp_beside (const char *path, char **out, kiln_error **err)
{
  char *tmp = NULL;
  tmp = kiln_xasprintf ("%s.kiln-XXXXXX", path);
  int fd = mkostemp (tmp, O_CLOEXEC);
  if (fd < 0)
    {
      int saved = errno;
      free (tmp);
      return kiln_fail_errno (err, saved, "create a temporary file next to '%s'", path);
    }
  *out = tmp;
  return fd;
}

void
kiln_unlink_freep (char **path)
{
  if (*path)
    {
      int saved = errno;
      unlink (*path);
      errno = saved;
      free (*path);
    }
}

int
kiln_cache_dir (char **out, kiln_error **err)
{
  const char *xdg = getenv ("XDG_CACHE_HOME");
  const char *home = getenv ("HOME");
  _cleanup_free_ char *dir = xdg && *xdg ? kiln_xasprintf ("%s/kiln", xdg)
                                         : kiln_xasprintf ("%s/.cache/kiln", home && *home ? home : "/var/cache");
  if (kiln_mkdir_p (dir, 0755, err) < 0)
    return -1;
  *out = kiln_steal_pointer (&dir);
  return 0;
}
