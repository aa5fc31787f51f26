/* disk_image.c - qemu-img info and convert (see disk_image.h). */
#include "disk_image.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "cleanup.h"
#include "process.h"
#include "xalloc.h"

static int
run_qemu_img (char *const *argv, const char *subject, volatile sig_atomic_t *cancel, struct kiln_process_result *res, kiln_error **err)
{
  struct kiln_process_spec spec = {.argv = argv, .cancel = cancel, .capture_limit = 16 * 1024 * 1024};
  if (kiln_process_run (&spec, res, err) < 0)
    return kiln_error_prefix (err, "qemu-img %s", argv[1]);
  if (res->exit_code != 0)
    {
      size_t n = res->err.len;
      while (n > 0 && res->err.data[n - 1] == '\n')
        n--;
      return kiln_fail (err, "qemu-img %s '%s' failed: %.*s", argv[1], subject, (int) n,
                        n ? res->err.data : "no message");
    }
  return 0;
}

/* Runs a qemu-img subcommand that prints JSON (--output=json) and parses
 * what it printed. */
static int
qemu_img_json (char *const *argv, const char *subject, json_t **out, kiln_error **err)
{
  struct kiln_process_result res = {0};
  if (run_qemu_img (argv, subject, NULL, &res, err) < 0)
    {
      kiln_process_result_release (&res);
      return -1;
    }
  json_error_t je;
  *out = json_loads (kiln_buf_str (&res.out), 0, &je);
  kiln_process_result_release (&res);
  if (*out == NULL)
    return kiln_fail (err, "qemu-img %s '%s': unreadable output: %s", argv[1], subject, je.text);
  return 0;
}

int
kiln_disk_info (const char *path, struct kiln_disk_info *out, kiln_error **err)
{
  memset (out, 0, sizeof *out);
  char *argv[] = {(char *) "qemu-img", (char *) "info", (char *) "--output=json", (char *) path, NULL};
  _cleanup_json_ json_t *j = NULL;
  if (qemu_img_json (argv, path, &j, err) < 0)
    return -1;
  const char *fmt = json_string_value (json_object_get (j, "format"));
  const char *backing = json_string_value (json_object_get (j, "backing-filename"));
  out->format = kiln_xstrdup (fmt ? fmt : "unknown");
  out->virtual_size = (uint64_t) json_integer_value (json_object_get (j, "virtual-size"));
  out->actual_size = (uint64_t) json_integer_value (json_object_get (j, "actual-size"));
  out->backing_file = backing ? kiln_xstrdup (backing) : NULL;
  return 0;
}

void
kiln_disk_info_release (struct kiln_disk_info *info)
{
  free (info->format);
  free (info->backing_file);
  memset (info, 0, sizeof *info);
}

const char *
kiln_disk_qemu_format (const char *kiln_format)
{
  return strcmp (kiln_format, "vhd") == 0 ? "vpc" : kiln_format;
}

int
kiln_disk_convert (const char *in, const char *out, const char *format, bool compress, volatile sig_atomic_t *cancel,
                   kiln_error **err)
{
  const char *qfmt = kiln_disk_qemu_format (format);
  char *argv[16];
  int n = 0;
  argv[n++] = (char *) "qemu-img";
  argv[n++] = (char *) "convert";
  argv[n++] = (char *) "-O";
  argv[n++] = (char *) qfmt;
  if (compress && strcmp (qfmt, "qcow2") == 0)
    argv[n++] = (char *) "-c";
  if (compress && strcmp (qfmt, "vmdk") == 0)
    {
      argv[n++] = (char *) "-o";
      argv[n++] = (char *) "subformat=streamOptimized";
    }
  if (strcmp (qfmt, "vpc") == 0 || strcmp (qfmt, "vhdx") == 0)
    {
      /* Dynamic (sparse) disks: what Hyper-V and Azure tools expect by default. */
      argv[n++] = (char *) "-o";
      argv[n++] = (char *) "subformat=dynamic";
    }
  argv[n++] = (char *) in;
  argv[n++] = (char *) out;
  argv[n] = NULL;
  struct kiln_process_result res = {0};
  int r = run_qemu_img (argv, in, cancel, &res, err);
  kiln_process_result_release (&res);
  return r;
}

int
kiln_disk_map (const char *path, const char *format, struct kiln_disk_extent **out, size_t *n, kiln_error **err)
{
  *out = NULL;
  *n = 0;
  char *argv[] = {(char *) "qemu-img", (char *) "map", (char *) "--output=json", (char *) "-f", (char *) format,
                  (char *) path, NULL};
  _cleanup_json_ json_t *j = NULL;
  if (qemu_img_json (argv, path, &j, err) < 0)
    return -1;
  if (!json_is_array (j))
    return kiln_fail (err, "qemu-img map '%s': unreadable output: not a list", path);
  size_t count = json_array_size (j);
  struct kiln_disk_extent *e = calloc (count ? count : 1, sizeof *e);
  if (e == NULL)
    abort ();
  uint64_t expect = 0;
  for (size_t i = 0; i < count; i++)
    {
      json_t *x = json_array_get (j, i);
      json_t *start = json_object_get (x, "start"), *length = json_object_get (x, "length");
      json_t *offset = json_object_get (x, "offset");
      if (!json_is_integer (start) || !json_is_integer (length) || json_integer_value (start) < 0
          || json_integer_value (length) <= 0 || (uint64_t) json_integer_value (start) != expect)
        {
          free (e);
          return kiln_fail (err, "qemu-img map '%s': extent %zu is not where the previous one ended", path, i);
        }
      if (json_integer_value (json_object_get (x, "depth")) > 0)
        {
          free (e);
          return kiln_fail_invalid (err, "'%s' takes data from a backing file", path);
        }
      e[i].start = (uint64_t) json_integer_value (start);
      e[i].length = (uint64_t) json_integer_value (length);
      e[i].data = json_is_true (json_object_get (x, "data")) && !json_is_true (json_object_get (x, "zero"));
      bool compressed = json_is_true (json_object_get (x, "compressed"));
      e[i].offset = json_is_integer (offset) && !compressed ? (int64_t) json_integer_value (offset) : -1;
      expect = e[i].start + e[i].length;
    }
  *out = e;
  *n = count;
  return 0;
}
