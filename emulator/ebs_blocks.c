/* ebs_blocks.c - the bytes of EBS snapshots: disk files read and written
 * block by block (ebs.h).
 *
 * A snapshot written through the EBS direct APIs owns a sparse raw file as
 * large as its volume; a block written is 512 KiB at index * 512 KiB, so the
 * file is at every moment the volume as written so far and, once the
 * snapshot is completed, a raw disk QEMU boots as it is.  Snapshots made
 * otherwise (CreateImage captures, `import-image`, copies) keep the file
 * they were made with, usually qcow2: reading those goes through qemu-img,
 * never through a second qcow2 reader here.
 *
 * Nothing in this file touches the database; callers hold whatever lock
 * makes a write consistent with the rows that describe it. */
#include "ebs.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cleanup.h"
#include "disk_image.h"
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

/* A path as qemu's option syntax reads it: ',' doubled. */
static char *
qemu_opt_escape (const char *s)
{
  struct kiln_buf b = KILN_BUF_INIT;
  for (const char *p = s; *p; p++)
    {
      if (*p == ',')
        kiln_buf_append (&b, ",", 1);
      kiln_buf_append (&b, p, 1);
    }
  return kiln_buf_steal (&b);
}

/* Converts the block of a non-raw disk into a raw temporary file: a raw
 * driver with offset and size over the image's own driver. */
static int
read_block_through_qemu (const char *path, const char *format, long long index, const char *tmp_dir,
                         unsigned char *buf, kiln_error **err)
{
  _cleanup_free_ char *tmp = NULL;
  if (asprintf (&tmp, "%s/.ebs-read-XXXXXX", tmp_dir) < 0)
    abort ();
  {
    _cleanup_close_ int fd = mkostemp (tmp, O_CLOEXEC);
    if (fd < 0)
      return kiln_fail_errno (err, errno, "create a temporary file under '%s'", tmp_dir);
  }
  _cleanup_free_ char *escaped = qemu_opt_escape (path);
  _cleanup_free_ char *opts = NULL;
  if (asprintf (&opts, "driver=raw,offset=%lld,size=%d,file.driver=%s,file.file.driver=file,file.file.filename=%s",
                index * EBS_BLOCK_SIZE, EBS_BLOCK_SIZE, format, escaped) < 0)
    abort ();
  char *argv[] = {(char *) "qemu-img", (char *) "convert", (char *) "--image-opts", opts, (char *) "-O",
                  (char *) "raw", tmp, NULL};
  int r = run_qemu_img (argv, path, NULL, err);
  if (r == 0)
    {
      _cleanup_close_ int fd = open (tmp, O_RDONLY | O_CLOEXEC);
      size_t got = 0;
      if (fd < 0 || pread_full (fd, buf, EBS_BLOCK_SIZE, 0, &got) < 0)
        r = kiln_fail_errno (err, errno, "read '%s'", tmp);
      else
        memset (buf + got, 0, EBS_BLOCK_SIZE - got);
    }
  unlink (tmp);
  return r;
}

int
ebs_disk_read_block (const char *path, const char *format, long long index, const char *tmp_dir,
                     unsigned char *buf, kiln_error **err)
{
  if (format && strcmp (format, "raw") != 0)
    {
      /* Past the image's virtual size qemu would refuse the offset. */
      struct kiln_disk_info info;
      if (kiln_disk_info (path, &info, err) < 0)
        return -1;
      uint64_t virtual_size = info.virtual_size;
      kiln_disk_info_release (&info);
      if ((uint64_t) index * EBS_BLOCK_SIZE >= virtual_size)
        {
          memset (buf, 0, EBS_BLOCK_SIZE);
          return 0;
        }
      return read_block_through_qemu (path, format, index, tmp_dir, buf, err);
    }
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
  return 0;
}
