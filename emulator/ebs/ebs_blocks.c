/* ebs_blocks.c - the bytes of EBS snapshots: disk files read and written
 * block by block (ebs.h).
 *
 * A snapshot written through the EBS direct APIs owns a sparse raw file as
 * large as its volume; a block written is 512 KiB at index * 512 KiB, so the
 * file is at every moment the volume as written so far and, once the
 * snapshot is completed, a raw disk QEMU boots as it is.  Snapshots made
 * otherwise (CreateImage captures, `import-image`, copies) keep the file
 * they were made with, usually qcow2: reading those goes through qemu-img
 * (a raw conversion kept per snapshot, below), never through a second
 * qcow2 reader here.
 *
 * Nothing in this file touches the database; callers hold whatever lock
 * makes a write consistent with the rows that describe it. */
#include "ebs.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cleanup.h"
#include "disk_image.h"
#include "fsutil.h"
#include "process.h"
#include "xalloc.h"

/* `qemu-img map` of a large, fragmented disk is long; past this the
 * listing fails rather than being cut short. */
#define MAP_OUTPUT_LIMIT (64u * 1024 * 1024)
#define QEMU_IMG_TIMEOUT_MS (10 * 60 * 1000)

bool
ebs_all_zero (const unsigned char *p, size_t n)
{
  return n == 0 || (p[0] == 0 && memcmp (p, p + 1, n - 1) == 0);
}

static int
pread_full (int fd, unsigned char *buf, size_t len, off_t off, size_t *got)
{
  size_t done = 0;
  while (done < len)
    {
      ssize_t r = pread (fd, buf + done, len - done, off + (off_t) done);
      if (r < 0 && errno == EINTR)
        continue;
      if (r < 0)
        return -1;
      if (r == 0)
        break;
      done += (size_t) r;
    }
  *got = done;
  return 0;
}

static int
pwrite_full (int fd, const unsigned char *buf, size_t len, off_t off)
{
  size_t done = 0;
  while (done < len)
    {
      ssize_t r = pwrite (fd, buf + done, len - done, off + (off_t) done);
      if (r < 0 && errno == EINTR)
        continue;
      if (r < 0)
        return -1;
      done += (size_t) r;
    }
  return 0;
}

/* Runs qemu-img with argv; its stdout in *out when out is non-NULL. */
static int
run_qemu_img (char *const *argv, const char *subject, struct kiln_buf *out, kiln_error **err)
{
  struct kiln_process_spec spec = {.argv = argv, .timeout_ms = QEMU_IMG_TIMEOUT_MS,
                                   .capture_limit = MAP_OUTPUT_LIMIT};
  struct kiln_process_result res = {0};
  int r = 0;
  if (kiln_process_run (&spec, &res, err) < 0)
    r = kiln_error_prefix (err, "qemu-img %s '%s'", argv[1], subject);
  else if (res.exit_code != 0)
    {
      size_t n = res.err.len;
      while (n > 0 && res.err.data[n - 1] == '\n')
        n--;
      r = kiln_fail (err, "qemu-img %s '%s' failed%s: %.*s", argv[1], subject, res.timed_out ? " (timed out)" : "",
                     (int) n, n ? res.err.data : "no message");
    }
  else if (out && res.out_total > res.out.len)
    r = kiln_fail (err, "qemu-img %s '%s': more than %u bytes of output", argv[1], subject, MAP_OUTPUT_LIMIT);
  else if (out)
    {
      *out = res.out;
      memset (&res.out, 0, sizeof res.out);
    }
  kiln_process_result_release (&res);
  return r;
}

/* ---- creating a snapshot's disk ---- */

/* Copies [from, to) of src to the same offsets of dst with read and write. */
static int
copy_range_by_hand (int src, int dst, off_t from, off_t to, const char *src_path, kiln_error **err)
{
  _cleanup_free_ unsigned char *buf = kiln_xcalloc (1, EBS_BLOCK_SIZE);
  while (from < to)
    {
      size_t want = (size_t) (to - from) < EBS_BLOCK_SIZE ? (size_t) (to - from) : EBS_BLOCK_SIZE, got;
      if (pread_full (src, buf, want, from, &got) < 0)
        return kiln_fail_errno (err, errno, "read '%s'", src_path);
      if (got == 0)
        break;
      if (pwrite_full (dst, buf, got, from) < 0)
        return kiln_fail_errno (err, errno, "copy '%s'", src_path);
      from += (off_t) got;
    }
  return 0;
}

/* Copies the data extents of src into dst (both open, dst empty): holes stay
 * holes. */
static int
copy_sparse (int src, int dst, const char *src_path, kiln_error **err)
{
  struct stat st;
  if (fstat (src, &st) < 0)
    return kiln_fail_errno (err, errno, "stat '%s'", src_path);
  if (ftruncate (dst, st.st_size) < 0)
    return kiln_fail_errno (err, errno, "size the copy of '%s'", src_path);
  off_t pos = 0;
  while (pos < st.st_size)
    {
      off_t data = lseek (src, pos, SEEK_DATA);
      if (data < 0 && errno == ENXIO)
        break;
      if (data < 0)
        return kiln_fail_errno (err, errno, "seek data in '%s'", src_path);
      off_t hole = lseek (src, data, SEEK_HOLE);
      if (hole < 0)
        return kiln_fail_errno (err, errno, "seek hole in '%s'", src_path);
      off_t in = data, out = data;
      while (in < hole)
        {
          ssize_t n = copy_file_range (src, &in, dst, &out, (size_t) (hole - in), 0);
          if (n < 0 && errno == EINTR)
            continue;
          if (n < 0 && (errno == EXDEV || errno == EINVAL || errno == EOPNOTSUPP || errno == ENOSYS))
            break;   /* not between these files: read and write below */
          if (n < 0)
            return kiln_fail_errno (err, errno, "copy '%s'", src_path);
          if (n == 0)
            break;
        }
      if (in < hole && copy_range_by_hand (src, dst, in, hole, src_path, err) < 0)
        return -1;
      pos = hole;
    }
  return 0;
}

int
ebs_disk_create (const char *path, const char *parent, const char *parent_format, uint64_t size, kiln_error **err)
{
  if (parent && parent_format && strcmp (parent_format, "raw") != 0)
    {
      /* qemu-img writes the raw file sparsely (zero runs become holes). */
      if (kiln_disk_convert (parent, path, "raw", false, NULL, err) < 0)
        return kiln_error_prefix (err, "copy parent disk '%s'", parent);
      struct stat st;
      if (stat (path, &st) < 0)
        return kiln_fail_errno (err, errno, "stat '%s'", path);
      if ((uint64_t) st.st_size > size)
        return kiln_fail_invalid (err, "parent disk '%s' holds %lld bytes, more than the volume's %llu",
                                  parent, (long long) st.st_size, (unsigned long long) size);
      if (truncate (path, (off_t) size) < 0)
        return kiln_fail_errno (err, errno, "size '%s'", path);
      return 0;
    }
  _cleanup_close_ int fd = open (path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0)
    return kiln_fail_errno (err, errno, "create '%s'", path);
  if (parent)
    {
      _cleanup_close_ int src = open (parent, O_RDONLY | O_CLOEXEC);
      if (src < 0)
        return kiln_fail_errno (err, errno, "open parent disk '%s'", parent);
      struct stat st;
      if (fstat (src, &st) < 0)
        return kiln_fail_errno (err, errno, "stat '%s'", parent);
      if ((uint64_t) st.st_size > size)
        return kiln_fail_invalid (err, "parent disk '%s' holds %lld bytes, more than the volume's %llu",
                                  parent, (long long) st.st_size, (unsigned long long) size);
      /* A reflink when the file system has them, else a sparse copy. */
      if (ioctl (fd, FICLONE, src) < 0 && copy_sparse (src, fd, parent, err) < 0)
        return -1;
    }
  if (ftruncate (fd, (off_t) size) < 0)
    return kiln_fail_errno (err, errno, "size '%s' to %llu bytes", path, (unsigned long long) size);
  return 0;
}

/* ---- which blocks hold data ---- */

struct index_list {
  long long *items;
  size_t n, cap;
};

static void
index_add (struct index_list *l, long long index)
{
  if (l->n > 0 && l->items[l->n - 1] >= index)
    return;   /* extents arrive in order; a block spanning two is added once */
  if (l->n == l->cap)
    {
      l->cap = l->cap ? l->cap * 2 : 64;
      l->items = realloc (l->items, l->cap * sizeof *l->items);
      if (l->items == NULL)
        abort ();
    }
  l->items[l->n++] = index;
}

static int
raw_data_blocks (const char *path, struct index_list *out, kiln_error **err)
{
  _cleanup_close_ int fd = open (path, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return kiln_fail_errno (err, errno, "open '%s'", path);
  struct stat st;
  if (fstat (fd, &st) < 0)
    return kiln_fail_errno (err, errno, "stat '%s'", path);
  _cleanup_free_ unsigned char *buf = kiln_xcalloc (1, EBS_BLOCK_SIZE);
  off_t pos = 0;
  while (pos < st.st_size)
    {
      off_t data = lseek (fd, pos, SEEK_DATA);
      if (data < 0 && errno == ENXIO)
        break;
      if (data < 0)
        return kiln_fail_errno (err, errno, "seek data in '%s'", path);
      off_t hole = lseek (fd, data, SEEK_HOLE);
      if (hole < 0)
        return kiln_fail_errno (err, errno, "seek hole in '%s'", path);
      for (long long b = data / EBS_BLOCK_SIZE; (off_t) (b * EBS_BLOCK_SIZE) < hole; b++)
        {
          if (out->n > 0 && out->items[out->n - 1] >= b)
            continue;
          size_t got;
          if (pread_full (fd, buf, EBS_BLOCK_SIZE, (off_t) (b * EBS_BLOCK_SIZE), &got) < 0)
            return kiln_fail_errno (err, errno, "read '%s' at block %lld", path, b);
          if (!ebs_all_zero (buf, got))
            index_add (out, b);
        }
      pos = hole;
    }
  return 0;
}

static int
mapped_data_blocks (const char *path, const char *format, struct index_list *out, kiln_error **err)
{
  char *argv[] = {(char *) "qemu-img", (char *) "map", (char *) "--output=json", (char *) "-f", (char *) format,
                  (char *) path, NULL};
  struct kiln_buf text = KILN_BUF_INIT;
  if (run_qemu_img (argv, path, &text, err) < 0)
    return -1;
  json_error_t jerr;
  _cleanup_json_ json_t *map = json_loadb (text.data ? text.data : "", text.len, 0, &jerr);
  kiln_buf_release (&text);
  if (!json_is_array (map))
    return kiln_fail (err, "qemu-img map '%s': unreadable output: %s", path, map ? "not a list" : jerr.text);
  size_t i;
  json_t *e;
  json_array_foreach (map, i, e)
    {
      json_t *start = json_object_get (e, "start"), *length = json_object_get (e, "length");
      if (!json_is_integer (start) || !json_is_integer (length))
        return kiln_fail (err, "qemu-img map '%s': entry %zu has no start or length", path, i);
      if (!json_is_true (json_object_get (e, "data")) || json_is_true (json_object_get (e, "zero")))
        continue;
      long long from = json_integer_value (start), len = json_integer_value (length);
      for (long long b = from / EBS_BLOCK_SIZE; len > 0 && b * EBS_BLOCK_SIZE < from + len; b++)
        index_add (out, b);
    }
  return 0;
}

int
ebs_disk_data_blocks (const char *path, const char *format, long long **out, size_t *n, kiln_error **err)
{
  struct index_list l = {0};
  int r = format == NULL || strcmp (format, "raw") == 0 ? raw_data_blocks (path, &l, err)
                                                        : mapped_data_blocks (path, format, &l, err);
  if (r < 0)
    {
      free (l.items);
      return -1;
    }
  *out = l.items;
  *n = l.n;
  return 0;
}

/* ---- one block ---- */

/* ---- the raw form of non-raw disks, for reading blocks ----
 *
 * A block of a qcow2 (or other non-raw) disk is read from a sparse raw
 * conversion of the whole disk, made by `qemu-img convert` on the first
 * read and kept as CACHE_DIR/<snapshot-id>.raw for the next ones (one
 * qemu-img per block took ~60 ms a block).  An entry per snapshot
 * remembers what its file was made from (device, inode, size, mtime and
 * ctime of the disk); a read whose disk no longer matches, or whose file
 * is gone, converts again, so a read never returns bytes of another disk
 * than the one named now.  Conversions of one snapshot are serialized
 * (concurrent first reads wait for the one conversion); reads of a made
 * file run in parallel.
 *
 * The files go: with their snapshot (ebs_cache_drop, which never waits for
 * a conversion: one finishing after the drop removes its own file), when
 * the process exits (atexit), and, for leftovers of a process killed
 * outright, when this process first uses the directory. */

struct cache_entry {
  struct cache_entry *next;
  char *dir, *id;
  pthread_mutex_t build;       /* held while checking and converting */
  /* Under cache_lock: */
  unsigned users;
  unsigned generation;         /* bumped by ebs_cache_drop */
  bool valid;                  /* the file is the conversion of source */
  struct stat source;          /* the disk as it was when converted */
  dev_t file_dev;              /* the file made */
  ino_t file_ino;
};

struct cache_dir {
  struct cache_dir *next;
  char *path;
};

static pthread_mutex_t cache_lock = PTHREAD_MUTEX_INITIALIZER;
static struct cache_entry *cache_entries;
static struct cache_dir *cache_dirs;
static unsigned long cache_counter;

static void
cache_remove_all (void)
{
  pthread_mutex_lock (&cache_lock);
  for (struct cache_dir *d = cache_dirs; d; d = d->next)
    {
      kiln_error *err = NULL;
      if (kiln_remove_tree (d->path, &err) < 0)
        kiln_error_free (err);
    }
  pthread_mutex_unlock (&cache_lock);
}

/* Under cache_lock: dir made and emptied the first time this process
 * uses it. */
static int
cache_dir_ready (const char *dir, kiln_error **err)
{
  for (struct cache_dir *d = cache_dirs; d; d = d->next)
    if (strcmp (d->path, dir) == 0)
      return 0;
  if (kiln_remove_tree (dir, err) < 0 || kiln_mkdir_p (dir, 0700, err) < 0)
    return kiln_error_prefix (err, "EBS block cache");
  if (cache_dirs == NULL)
    atexit (cache_remove_all);
  struct cache_dir *d = kiln_xcalloc (1, sizeof *d);
  d->path = kiln_xstrdup (dir);
  d->next = cache_dirs;
  cache_dirs = d;
  return 0;
}

static struct cache_entry *
cache_entry_get (const char *dir, const char *id, kiln_error **err)
{
  pthread_mutex_lock (&cache_lock);
  struct cache_entry *e = NULL;
  if (cache_dir_ready (dir, err) == 0)
    {
      e = cache_entries;
      while (e && (strcmp (e->id, id) != 0 || strcmp (e->dir, dir) != 0))
        e = e->next;
      if (e == NULL)
        {
          e = kiln_xcalloc (1, sizeof *e);
          e->dir = kiln_xstrdup (dir);
          e->id = kiln_xstrdup (id);
          pthread_mutex_init (&e->build, NULL);
          e->next = cache_entries;
          cache_entries = e;
        }
      e->users++;
    }
  pthread_mutex_unlock (&cache_lock);
  return e;
}

/* Under cache_lock: frees e when nobody uses it and it holds no file. */
static void
cache_entry_maybe_free (struct cache_entry *e)
{
  if (e->users > 0 || e->valid)
    return;
  struct cache_entry **p = &cache_entries;
  while (*p != e)
    p = &(*p)->next;
  *p = e->next;
  pthread_mutex_destroy (&e->build);
  free (e->dir);
  free (e->id);
  free (e);
}

static void
cache_entry_put (struct cache_entry *e)
{
  pthread_mutex_lock (&cache_lock);
  e->users--;
  cache_entry_maybe_free (e);
  pthread_mutex_unlock (&cache_lock);
}

static char *
cache_file (const struct cache_entry *e)
{
  char *p;
  p = kiln_xasprintf ("%s/%s.raw", e->dir, e->id);
  return p;
}

static bool
same_source (const struct stat *a, const struct stat *b)
{
  return a->st_dev == b->st_dev && a->st_ino == b->st_ino && a->st_size == b->st_size
         && a->st_mtim.tv_sec == b->st_mtim.tv_sec && a->st_mtim.tv_nsec == b->st_mtim.tv_nsec
         && a->st_ctim.tv_sec == b->st_ctim.tv_sec && a->st_ctim.tv_nsec == b->st_ctim.tv_nsec;
}

/* Under e->build: a descriptor on e's file, converting path into it first
 * when it is missing or was made from another disk. */
static int
cache_open (struct cache_entry *e, const char *path, const char *format, kiln_error **err)
{
  struct stat src;
  if (stat (path, &src) < 0)
    return kiln_fail_errno (err, errno, "stat '%s'", path);
  _cleanup_free_ char *file = cache_file (e);
  pthread_mutex_lock (&cache_lock);
  bool valid = e->valid && same_source (&e->source, &src);
  dev_t dev = e->file_dev;
  ino_t ino = e->file_ino;
  unsigned generation = e->generation;
  unsigned long n = ++cache_counter;
  pthread_mutex_unlock (&cache_lock);
  if (valid)
    {
      int fd = open (file, O_RDONLY | O_CLOEXEC);
      struct stat st;
      if (fd >= 0 && fstat (fd, &st) == 0 && st.st_dev == dev && st.st_ino == ino)
        return fd;
      if (fd >= 0)
        close (fd);
    }

  _cleanup_free_ char *tmp = NULL;
  tmp = kiln_xasprintf ("%s/.%s.%ld-%lu.part", e->dir, e->id, (long) getpid (), n);
  unlink (tmp);
  char *argv[] = {(char *) "qemu-img", (char *) "convert", (char *) "-f", (char *) format, (char *) "-O",
                  (char *) "raw", (char *) path, tmp, NULL};
  if (run_qemu_img (argv, path, NULL, err) < 0)
    {
      unlink (tmp);
      return -1;
    }
  int fd = open (tmp, O_RDONLY | O_CLOEXEC);
  struct stat st;
  if (fd < 0 || fstat (fd, &st) < 0 || rename (tmp, file) < 0)
    {
      int e_ = errno;
      if (fd >= 0)
        close (fd);
      unlink (tmp);
      return kiln_fail_errno (err, e_, "keep the raw form of '%s' as '%s'", path, file);
    }
  pthread_mutex_lock (&cache_lock);
  if (e->generation == generation)
    {
      e->valid = true;
      e->source = src;
      e->file_dev = st.st_dev;
      e->file_ino = st.st_ino;
    }
  else
    {
      /* Dropped while converting: this read still gets its bytes (it began
       * before the drop), the file goes now. */
      unlink (file);
      e->valid = false;
    }
  pthread_mutex_unlock (&cache_lock);
  return fd;
}

void
ebs_cache_drop (const char *cache_dir, const char *snapshot_id)
{
  pthread_mutex_lock (&cache_lock);
  struct cache_entry *e = cache_entries;
  while (e && (strcmp (e->id, snapshot_id) != 0 || strcmp (e->dir, cache_dir) != 0))
    e = e->next;
  if (e)
    {
      _cleanup_free_ char *file = cache_file (e);
      unlink (file);
      e->generation++;
      e->valid = false;
      cache_entry_maybe_free (e);
    }
  pthread_mutex_unlock (&cache_lock);
}

static int
read_block_cached (const char *path, const char *format, long long index, const char *cache_dir,
                   const char *snapshot_id, unsigned char *buf, kiln_error **err)
{
  struct cache_entry *e = cache_entry_get (cache_dir, snapshot_id, err);
  if (e == NULL)
    return -1;
  pthread_mutex_lock (&e->build);
  _cleanup_close_ int fd = cache_open (e, path, format, err);
  pthread_mutex_unlock (&e->build);
  cache_entry_put (e);
  if (fd < 0)
    return -1;
  size_t got;
  if (pread_full (fd, buf, EBS_BLOCK_SIZE, (off_t) (index * EBS_BLOCK_SIZE), &got) < 0)
    return kiln_fail_errno (err, errno, "read the raw form of '%s' at block %lld", path, index);
  memset (buf + got, 0, EBS_BLOCK_SIZE - got);   /* past the disk's virtual size: zeros */
  return 0;
}

int
ebs_disk_read_block (const char *path, const char *format, long long index, const char *cache_dir,
                     const char *snapshot_id, unsigned char *buf, kiln_error **err)
{
  if (format && strcmp (format, "raw") != 0)
    return read_block_cached (path, format, index, cache_dir, snapshot_id, buf, err);
  _cleanup_close_ int fd = open (path, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return kiln_fail_errno (err, errno, "open '%s'", path);
  size_t got;
  if (pread_full (fd, buf, EBS_BLOCK_SIZE, (off_t) (index * EBS_BLOCK_SIZE), &got) < 0)
    return kiln_fail_errno (err, errno, "read '%s' at block %lld", path, index);
  memset (buf + got, 0, EBS_BLOCK_SIZE - got);
  return 0;
}

int
ebs_disk_write_block (const char *path, long long index, const unsigned char *data, kiln_error **err)
{
  _cleanup_close_ int fd = open (path, O_WRONLY | O_CLOEXEC);
  if (fd < 0)
    return kiln_fail_errno (err, errno, "open '%s'", path);
  off_t off = (off_t) (index * EBS_BLOCK_SIZE);
  if (ebs_all_zero (data, EBS_BLOCK_SIZE)
      && fallocate (fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, off, EBS_BLOCK_SIZE) == 0)
    return 0;
  if (pwrite_full (fd, data, EBS_BLOCK_SIZE, off) < 0)
    return kiln_fail_errno (err, errno, "write '%s' at block %lld", path, index);
  return 0;
}

int
ebs_disk_sync (const char *path, kiln_error **err)
{
  _cleanup_close_ int fd = open (path, O_RDONLY | O_CLOEXEC);
  if (fd < 0 || fsync (fd) < 0)
    return kiln_fail_errno (err, errno, "sync '%s'", path);
  /* The file's name too: it was renamed into place when the snapshot
   * started. */
  _cleanup_free_ char *dir = kiln_xstrdup (path);
  char *slash = strrchr (dir, '/');
  if (slash == NULL)
    return 0;
  *slash = '\0';
  _cleanup_close_ int dfd = open (*dir ? dir : "/", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd < 0 || fsync (dfd) < 0)
    return kiln_fail_errno (err, errno, "sync directory '%s'", dir);
  return 0;
}
