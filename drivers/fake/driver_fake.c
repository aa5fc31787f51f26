/* driver_fake.c - a driver that boots nothing and records every call.
 *
 * The build pipeline's unit tests run against it: each call the pipeline
 * makes (create, start, run, put, get, stat, reboot, shutdown, capture,
 * destroy) is appended as one line to the transcript file named by
 * $KILN_FAKE_TRANSCRIPT, and the transcript is the golden output.  Lines hold
 * no times, process ids or random names, so they are stable.
 *
 * Behaviour:
 *   - files put on an instance live in memory, so get and stat see them;
 *     a captured image carries them into instances created from it (the
 *     image file is a JSON map of path -> base64 content);
 *   - `run` answers exit 0 with empty output, except that a command whose
 *     arguments or script contain the text in $KILN_FAKE_FAIL exits 1 with
 *     "fake failure" on stderr, and a script containing "exit 194" asks for
 *     a reboot once;
 *   - reboot answers DONE. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "buf.h"
#include "cleanup.h"
#include "digest.h"
#include "driver.h"
#include "fsutil.h"
#include "xalloc.h"

struct fake_instance {
  json_t *files;       /* path -> {"data": base64, "mode": n} */
  char *work_dir;
  int reboots;
};

static struct fake_instance *
fake_of (struct kiln_target *t)
{
  struct kiln_instance *inst = t->priv;
  return inst->priv;
}

static void record (const char *fmt, ...) __attribute__ ((format (printf, 1, 2)));

static void
record (const char *fmt, ...)
{
  const char *path = getenv ("KILN_FAKE_TRANSCRIPT");
  if (path == NULL || *path == '\0')
    return;
  FILE *f = fopen (path, "ae");
  if (f == NULL)
    return;
  va_list ap;
  va_start (ap, fmt);
  vfprintf (f, fmt, ap);
  va_end (ap);
  fputc ('\n', f);
  fclose (f);
}

/* Scratch paths hold a random part: show them by role. */
static const char *
shown_path (struct kiln_target *t, const char *path, char *buf, size_t n)
{
  if (t->scratch_dir && strncmp (path, t->scratch_dir, strlen (t->scratch_dir)) == 0)
    {
      snprintf (buf, n, "<scratch>%s", path + strlen (t->scratch_dir));
      return buf;
    }
  return path;
}

static int
fake_create (struct kiln_instance *inst, const struct kiln_instance_spec *spec, kiln_error **err)
{
  struct fake_instance *f = inst->priv;
  f->files = json_object ();
  f->work_dir = kiln_xstrdup (spec->work_dir ? spec->work_dir : "/tmp");
  /* An image captured by this driver brings its files along. */
  json_error_t je;
  json_t *image = json_load_file (spec->image, 0, &je);
  if (image && json_is_object (json_object_get (image, "files")))
    json_object_update (f->files, json_object_get (image, "files"));
  else if (access (spec->image, R_OK) < 0)
    {
      json_decref (image);
      return kiln_fail_errno (err, errno, "parent image '%s'", spec->image);
    }
  json_decref (image);
  inst->target.scratch_dir = kiln_xasprintf ("/var/tmp/kiln-fake-%s", inst->name);
  inst->id = kiln_xstrdup (inst->name);
  record ("create %s image=%s vcpus=%d memory=%llu disk=%llu network=%s", inst->name,
          strrchr (spec->image, '/') ? strrchr (spec->image, '/') + 1 : spec->image, spec->vcpus,
          (unsigned long long) spec->memory_mib, (unsigned long long) spec->disk_size_bytes,
          spec->network ? "yes" : "no");
  return 0;
}

static int
fake_start (struct kiln_instance *inst, int timeout_seconds, kiln_error **err)
{
  (void) timeout_seconds;
  (void) err;
  record ("start %s", inst->name);
  return 0;
}

static int
fake_destroy (struct kiln_instance *inst)
{
  struct fake_instance *f = inst->priv;
  record ("destroy %s", inst->name);
  if (f)
    {
      json_decref (f->files);
      f->files = NULL;
      free (f->work_dir);
      f->work_dir = NULL;
    }
  return 0;
}

static int
fake_shutdown (struct kiln_instance *inst, int timeout_seconds, kiln_error **err)
{
  (void) timeout_seconds;
  (void) err;
  record ("shutdown %s", inst->name);
  return 0;
}

static int
fake_capture (struct kiln_instance *inst, const struct kiln_capture_spec *spec, kiln_error **err)
{
  struct fake_instance *f = inst->priv;
  record ("capture %s format=%s compress=%s", inst->name, kiln_image_format_name (spec->format),
          spec->compress ? "yes" : "no");
  _cleanup_json_ json_t *image = json_pack ("{s:s, s:O}", "fakeImage", kiln_image_format_name (spec->format),
                                            "files", f->files);
  _cleanup_free_ char *text = json_dumps (image, JSON_SORT_KEYS | JSON_INDENT (1));
  return kiln_write_file_atomic (spec->output, text, strlen (text), 0644, err);
}

static int
fake_run (struct kiln_target *t, const struct kiln_target_command *cmd, struct kiln_target_result *res,
          kiln_error **err)
{
  (void) err;
  struct fake_instance *f = fake_of (t);
  struct kiln_instance *inst = t->priv;
  struct kiln_buf line = KILN_BUF_INIT;
  const char *fail = getenv ("KILN_FAKE_FAIL");
  bool failing = false, reboot = false;
  char buf[4096];
  for (char *const *a = cmd->argv; *a; a++)
    {
      kiln_buf_printf (&line, " %s", shown_path (t, *a, buf, sizeof buf));
      if (fail && *fail && strstr (*a, fail))
        failing = true;
      /* A script put earlier: look inside it too. */
      json_t *file = json_object_get (f->files, *a);
      if (file)
        {
          unsigned char *data = NULL;
          size_t len = 0;
          const char *b64 = json_string_value (json_object_get (file, "data"));
          if (b64 && kiln_base64_decode (b64, strlen (b64), &data, &len) == 0)
            {
              _cleanup_free_ char *text = kiln_xstrndup ((const char *) data, len);
              if (fail && *fail && strstr (text, fail))
                failing = true;
              if (strstr (text, "exit 194") && f->reboots == 0)
                reboot = true;
            }
          free (data);
        }
    }
  record ("run %s:%s", inst->name, kiln_buf_str (&line));
  kiln_buf_release (&line);
  *res = (struct kiln_target_result){.exit_code = failing ? 1 : reboot ? 194 : 0};
  if (failing)
    kiln_buf_puts (&res->err, "fake failure\n");
  return 0;
}

static int
fake_put_file (struct kiln_target *t, const char *local_path, const char *path, mode_t mode, kiln_error **err)
{
  struct fake_instance *f = fake_of (t);
  struct kiln_instance *inst = t->priv;
  struct kiln_buf data = KILN_BUF_INIT;
  if (kiln_read_file (local_path, &data, err) < 0)
    return -1;
  char hex[65];
  kiln_sha256_hex (data.data, data.len, hex);
  _cleanup_free_ char *b64 = kiln_base64_encode ((const unsigned char *) data.data, data.len);
  char buf[4096];
  record ("put %s: %s mode=%04o size=%zu sha256=%.12s", inst->name, shown_path (t, path, buf, sizeof buf),
          (unsigned) mode, data.len, hex);
  json_object_set_new (f->files, path, json_pack ("{s:s, s:i}", "data", b64, "mode", (int) mode));
  kiln_buf_release (&data);
  return 0;
}

static int
fake_get_file (struct kiln_target *t, const char *path, const char *local_path, kiln_error **err)
{
  struct fake_instance *f = fake_of (t);
  struct kiln_instance *inst = t->priv;
  char buf[4096];
  record ("get %s: %s", inst->name, shown_path (t, path, buf, sizeof buf));
  json_t *file = json_object_get (f->files, path);
  if (file == NULL)
    return kiln_error_set (err, KILN_ERR_NOT_FOUND, ENOENT, "get '%s'", path);
  unsigned char *data = NULL;
  size_t len = 0;
  const char *b64 = json_string_value (json_object_get (file, "data"));
  if (kiln_base64_decode (b64, strlen (b64), &data, &len) < 0)
    return kiln_fail (err, "fake file '%s' is corrupt", path);
  int r = kiln_write_file_atomic (local_path, data, len, 0600, err);
  free (data);
  return r;
}

static int
fake_stat (struct kiln_target *t, const char *path, struct kiln_target_stat *st, kiln_error **err)
{
  (void) err;
  struct fake_instance *f = fake_of (t);
  memset (st, 0, sizeof *st);
  json_t *file = json_object_get (f->files, path);
  if (file)
    {
      st->exists = st->is_file = true;
      st->mode = (mode_t) json_integer_value (json_object_get (file, "mode"));
      return 0;
    }
  /* A directory exists when something was put below it. */
  size_t n = strlen (path);
  const char *key;
  json_t *v;
  json_object_foreach (f->files, key, v)
    if (strncmp (key, path, n) == 0 && (key[n] == '/' || (n > 0 && path[n - 1] == '/')))
      {
        st->exists = st->is_dir = true;
        st->mode = 0755;
        return 0;
      }
  return 0;
}

static int
fake_reboot (struct kiln_target *t, enum kiln_reboot_outcome *outcome, kiln_error **err)
{
  (void) err;
  struct fake_instance *f = fake_of (t);
  struct kiln_instance *inst = t->priv;
  f->reboots++;
  record ("reboot %s", inst->name);
  *outcome = KILN_REBOOT_DONE;
  return 0;
}

static const struct kiln_target_ops fake_target_ops = {
  .name = "fake",
  .run = fake_run,
  .put_file = fake_put_file,
  .get_file = fake_get_file,
  .stat = fake_stat,
  .reboot = fake_reboot,
};

const struct kiln_driver kiln_driver_fake = {
  .name = "fake",
  .priv_size = sizeof (struct fake_instance),
  .create = fake_create,
  .start = fake_start,
  .destroy = fake_destroy,
  .target_ops = &fake_target_ops,
  .shutdown = fake_shutdown,
  .capture = fake_capture,
};
