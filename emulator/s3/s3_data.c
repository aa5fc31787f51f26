/* s3_data.c - where S3 object data lives on disk (s3.h).
 *
 *   DATA_DIR/s3/data/<id>   an object's or a part's bytes; <id> is 32 hex
 *                           digits generated here, never derived from a key
 *   DATA_DIR/s3/tmp/...     bodies being received (s3_upload.c) and objects
 *                           being assembled or copied
 *
 * A data file is written whole under tmp and renamed into data before the
 * database names it, so a row never points at a partial file; a file that
 * replaced another is removed only after the row moved on.  With a state
 * directory the file is synced before the rename (the database is
 * synchronous=FULL; an acknowledged object survives a crash too).  A crash
 * can leave files in tmp, and (between rename and commit, or between a row
 * moving on and its old file's removal) data files no row names: the first
 * S3 use in a process removes both, before any request can publish. */
#include "s3.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cleanup.h"
#include "fsutil.h"
#include "log.h"
#include "store.h"
#include "xalloc.h"

#define COPY_BUFFER (1024 * 1024)

static pthread_mutex_t ready_lock = PTHREAD_MUTEX_INITIALIZER;

static char *
data_path (struct kiln_emu *emu, const char *sub, const char *name)
{
  char *p;
  p = kiln_xasprintf ("%s/s3/%s%s%s", emu->data_dir, sub, name ? "/" : "", name ? name : "");
  return p;
}

/* Removes every file directly under dir (the tmp directory has no
 * subdirectories). */
static void
sweep (const char *dir)
{
  DIR *d = opendir (dir);
  if (d == NULL)
    return;
  int n = 0;
  struct dirent *e;
  while ((e = readdir (d)) != NULL)
    if (e->d_name[0] != '.' && unlinkat (dirfd (d), e->d_name, 0) == 0)
      n++;
  closedir (d);
  if (n)
    kiln_log_info ("emulator: s3: removed %d unfinished upload file%s under %s", n, n == 1 ? "" : "s", dir);
}

static int
compare_strings (const void *a, const void *b)
{
  return strcmp (*(const char *const *) a, *(const char *const *) b);
}

/* Removes the data files no object or part names.  Runs before any request
 * of this process could have published one (s3_data_ready's lock). */
static int
sweep_unnamed (struct kiln_emu *emu, const char *dir, kiln_error **err)
{
  _cleanup_json_ json_t *rows = emu_db_query0 (emu, err, "SELECT data FROM s3_objects UNION SELECT data FROM s3_parts");
  if (rows == NULL)
    return kiln_error_prefix (err, "list the S3 data files in use");
  size_t n = json_array_size (rows);
  _cleanup_free_ const char **named = kiln_xcalloc (n + 1, sizeof *named);
  for (size_t i = 0; i < n; i++)
    named[i] = emu_row_str (json_array_get (rows, i), "data");
  qsort (named, n, sizeof *named, compare_strings);
  DIR *d = opendir (dir);
  if (d == NULL)
    return kiln_fail_errno (err, errno, "open '%s'", dir);
  int removed = 0;
  struct dirent *e;
  while ((e = readdir (d)) != NULL)
    {
      const char *name = e->d_name;
      if (name[0] == '.' || bsearch (&name, named, n, sizeof *named, compare_strings))
        continue;
      if (unlinkat (dirfd (d), name, 0) == 0)
        removed++;
    }
  closedir (d);
  if (removed)
    kiln_log_info ("emulator: s3: removed %d data file%s no object names under %s", removed, removed == 1 ? "" : "s",
                   dir);
  return 0;
}

int
s3_data_ready (struct kiln_emu *emu, kiln_error **err)
{
  if (emu->data_dir == NULL)
    return kiln_fail (err, "S3 needs a data directory and this emulator has none");
  pthread_mutex_lock (&ready_lock);
  int r = 0;
  if (!emu->s3_ready)
    {
      _cleanup_free_ char *data = data_path (emu, "data", NULL);
      _cleanup_free_ char *tmp = data_path (emu, "tmp", NULL);
      r = kiln_mkdir_p (data, 0755, err);
      if (r == 0)
        r = kiln_mkdir_p (tmp, 0700, err);
      if (r == 0)
        {
          sweep (tmp);
          r = sweep_unnamed (emu, data, err);
        }
      if (r == 0)
        emu->s3_ready = true;
    }
  pthread_mutex_unlock (&ready_lock);
  return r;
}

int
s3_start (struct kiln_emu *emu, kiln_error **err)
{
  return emu->state_dir ? s3_data_ready (emu, err) : 0;
}

int
s3_data_temp (struct kiln_emu *emu, char **path, kiln_error **err)
{
  if (s3_data_ready (emu, err) < 0)
    return -1;
  char *p = data_path (emu, "tmp", "body-XXXXXX");
  int fd = mkostemp (p, O_CLOEXEC);
  if (fd < 0)
    {
      int e = errno;
      free (p);
      return kiln_fail_errno (err, e, "create a temporary file under '%s/s3/tmp'", emu->data_dir);
    }
  *path = p;
  return fd;
}

int
s3_data_publish (struct kiln_emu *emu, const char *tmp_path, int fd, char id[33], kiln_error **err)
{
  char uuid[37];
  emu_new_uuid (emu, uuid);
  size_t j = 0;
  for (size_t i = 0; uuid[i] && j < 32; i++)
    if (uuid[i] != '-')
      id[j++] = uuid[i];
  id[j] = '\0';
  _cleanup_free_ char *dest = data_path (emu, "data", id);
  if (emu->state_dir && fsync (fd) < 0)
    {
      int e = errno;
      unlink (tmp_path);
      return kiln_fail_errno (err, e, "sync '%s'", tmp_path);
    }
  if (rename (tmp_path, dest) < 0)
    {
      int e = errno;
      unlink (tmp_path);
      return kiln_fail_errno (err, e, "rename '%s' to '%s'", tmp_path, dest);
    }
  return 0;
}

int
s3_data_open (struct kiln_emu *emu, const char *id, kiln_error **err)
{
  _cleanup_free_ char *p = data_path (emu, "data", id);
  int fd = open (p, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return kiln_fail_errno (err, errno, "open object data '%s'", p);
  return fd;
}

void
s3_data_remove (struct kiln_emu *emu, const char *id)
{
  if (id == NULL || *id == '\0' || emu->data_dir == NULL)
    return;
  _cleanup_free_ char *p = data_path (emu, "data", id);
  if (unlink (p) < 0 && errno != ENOENT)
    kiln_log_warn ("emulator: s3: remove '%s': %s", p, strerror (errno));
}

int
s3_data_copy (int in, uint64_t offset, uint64_t len, int out, struct s3_hash *a, struct s3_hash *b,
              kiln_error **err)
{
  /* Without digests to feed, the kernel copies (and may share extents). */
  if (a == NULL && b == NULL)
    {
      off_t off = (off_t) offset;
      while (len > 0)
        {
          ssize_t n = copy_file_range (in, &off, out, NULL, len > (1u << 30) ? (1u << 30) : (size_t) len, 0);
          if (n < 0 && errno == EINTR)
            continue;
          if (n < 0 && (errno == EXDEV || errno == ENOSYS || errno == EOPNOTSUPP || errno == EINVAL))
            break;
          if (n < 0)
            return kiln_fail_errno (err, errno, "copy object data");
          if (n == 0)
            return kiln_fail (err, "copy object data: the source ended %llu bytes early",
                              (unsigned long long) len);
          len -= (uint64_t) n;
        }
      offset = (uint64_t) off;
      if (len == 0)
        return 0;
    }
  _cleanup_free_ char *buf = malloc (COPY_BUFFER);
  if (buf == NULL)
    abort ();
  while (len > 0)
    {
      size_t want = len > COPY_BUFFER ? COPY_BUFFER : (size_t) len;
      ssize_t n = pread (in, buf, want, (off_t) offset);
      if (n < 0 && errno == EINTR)
        continue;
      if (n < 0)
        return kiln_fail_errno (err, errno, "read object data");
      if (n == 0)
        return kiln_fail (err, "copy object data: the source ended %llu bytes early", (unsigned long long) len);
      if (a)
        s3_hash_update (a, buf, (size_t) n);
      if (b)
        s3_hash_update (b, buf, (size_t) n);
      if (kiln_write_all (out, buf, (size_t) n) < 0)
        return kiln_fail_errno (err, errno, "write object data");
      offset += (uint64_t) n;
      len -= (uint64_t) n;
    }
  return 0;
}
