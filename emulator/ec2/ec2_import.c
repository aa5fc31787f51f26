/* ec2_import.c - VM Import/Export's import half: ImportSnapshot,
 * ImportImage, DescribeImportSnapshotTasks, DescribeImportImageTasks and
 * CancelImportTask, plus what every VM import/export task shares (ec2.h):
 * the conversion_tasks rows, their Describe filters and id check (the
 * listing is emu_describe's), and the task table that runs them, in order,
 * on one job queue (jobs.h).
 *
 * A task is a row of conversion_tasks.  The call that makes it answers at
 * once with the task "active" (statusMessage "pending"); the worker then
 * reads the disk the task names from the emulator's own S3 (the caller's
 * bucket in the caller's region: the object is linked to a private name
 * first, so replacing or deleting it meanwhile cannot change what is
 * read), checks it with qemu-img (the declared format opens it, probing
 * finds the same format, no backing file, no external data file or extent,
 * `qemu-img check` finds no corruption), converts it with the declared
 * format given explicitly into a sparse raw file of whole GiB (the format
 * EBS direct writes: GetSnapshotBlock reads it directly, RegisterImage and
 * RunInstances boot it), and in one transaction names the file, inserts
 * the snapshot (and for ImportImage the available AMI, named after the
 * task, as AWS names imported AMIs) and marks the task completed.  Any
 * failure ends the task "deleted" with a statusMessage "ClientError: ..."
 * (the caller's disk or bucket) or "ServerError: ..." (this emulator), and
 * nothing half-made is left.  CancelImportTask marks an active task
 * deleting and interrupts qemu-img; the worker ends it deleted.
 *
 * Restarts: a task that was active when the emulator stopped runs again
 * from the start (the worker is idempotent up to its final transaction);
 * one that was deleting becomes deleted. */
#include "ec2.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cleanup.h"
#include "fsutil.h"
#include "log.h"
#include "process.h"
#include "s3.h"
#include "store.h"
#include "jobs.h"
#include "vmhost.h"
#include "xalloc.h"

#define GIB (1024ULL * 1024 * 1024)
#define TASK_HEX_DIGITS 17
#define DESCRIPTION_MAX 255
#define IMPORT_ROOT_DEVICE "/dev/sda1"
/* qemu-img runs this long at most on one disk. */
#define QEMU_IMG_TIMEOUT_MS (6 * 3600 * 1000)

/* ---- disk formats ---- */

/* The formats ImportSnapshot and ImportImage take: the API's name (what
 * Describe shows) and qemu-img's. */
struct import_format {
  const char *api;
  const char *qemu;
};

static const struct import_format import_formats[] = {
  {"RAW", "raw"}, {"VMDK", "vmdk"}, {"VHD", "vpc"}, {"VHDX", "vhdx"}, {"QCOW2", "qcow2"}, {NULL, NULL},
};

static const struct import_format *
import_format_find (const char *api)
{
  for (const struct import_format *f = import_formats; f->api; f++)
    if (strcasecmp (f->api, api) == 0)
      return f;
  return NULL;
}

/* ---- the worker ---- */

/* Tasks run one at a time, in the order they were made, on one job queue
 * (jobs.h); instance ids never take this name. */
#define TASK_QUEUE "vm-tasks"

static void
task_warn (const char *what, kiln_error *err)
{
  kiln_log_warn ("emulator: tasks: %s: %s", what, kiln_error_message (err));
}

bool
emu_task_id_well_formed (const char *id, const char *prefix)
{
  return emu_id_digits (id, prefix) == TASK_HEX_DIGITS;
}

void
emu_task_progress (struct kiln_emu *emu, const char *task_id, const char *message, int progress)
{
  char pct[16];
  snprintf (pct, sizeof pct, "%d", progress);
  _cleanup_error_ kiln_error *err = NULL;
  if (emu_db_exec (emu, &err, "UPDATE conversion_tasks SET status_message = ?, progress = ? WHERE id = ? AND "
                   "state = 'active'", message, progress >= 0 ? pct : NULL, task_id) < 0)
    task_warn ("progress", err);
}

/* qemu-img -p writes "    (12.34/100%)\r" as it goes. */
struct progress_watch {
  struct kiln_emu *emu;
  const char *task;
  int lo, hi, last;
};

static void
on_qemu_output (void *opaque, enum kiln_stream stream, const char *data, size_t len)
{
  struct progress_watch *w = opaque;
  if (stream != KILN_STREAM_STDOUT || w->task == NULL)
    return;
  /* The last complete "(N/100%)" of the chunk. */
  double pct = -1;
  for (size_t i = 0; i < len; i++)
    if (data[i] == '(')
      {
        char tmp[32];
        size_t n = len - i - 1 < sizeof tmp - 1 ? len - i - 1 : sizeof tmp - 1;
        memcpy (tmp, data + i + 1, n);
        tmp[n] = '\0';
        double v;
        if (sscanf (tmp, "%lf/100%%)", &v) == 1 && strstr (tmp, "/100%)"))
          pct = v;
      }
  if (pct < 0)
    return;
  int now = w->lo + (int) floor ((w->hi - w->lo) * pct / 100.0);
  if (now >= w->last + 5)
    {
      w->last = now;
      _cleanup_error_ kiln_error *err = NULL;
      char text[16];
      snprintf (text, sizeof text, "%d", now);
      if (emu_db_exec (w->emu, &err, "UPDATE conversion_tasks SET progress = ? WHERE id = ? AND state = 'active'",
                       text, w->task) < 0)
        task_warn ("progress", err);
    }
}

int
emu_qemu_img (struct kiln_emu *emu, char *const *argv, volatile sig_atomic_t *cancel, char **stderr_text,
              const char *progress_task, int lo, int hi, kiln_error **err)
{
  struct progress_watch watch = {.emu = emu, .task = progress_task, .lo = lo, .hi = hi, .last = lo};
  struct kiln_process_spec spec = {
    .argv = argv, .cancel = cancel, .timeout_ms = QEMU_IMG_TIMEOUT_MS, .capture_limit = 1024 * 1024,
    .on_output = progress_task ? on_qemu_output : NULL, .opaque = &watch,
  };
  struct kiln_process_result res = {0};
  if (stderr_text)
    *stderr_text = NULL;
  if (kiln_process_run (&spec, &res, err) < 0)
    {
      kiln_process_result_release (&res);
      return kiln_error_prefix (err, "qemu-img %s", argv[1]);
    }
  if (res.timed_out)
    {
      kiln_process_result_release (&res);
      return kiln_error_set (err, KILN_ERR_TIMEOUT, 0, "qemu-img %s took longer than %d s", argv[1],
                             QEMU_IMG_TIMEOUT_MS / 1000);
    }
  if (stderr_text)
    {
      size_t n = res.err.len;
      while (n > 0 && (res.err.data[n - 1] == '\n' || res.err.data[n - 1] == '\r'))
        n--;
      *stderr_text = kiln_xstrndup (n ? res.err.data : "", n);
    }
  int code = res.exit_code;
  kiln_process_result_release (&res);
  return code < 0 ? kiln_fail (err, "qemu-img %s was killed", argv[1]) : code;
}

/* The JSON qemu-img info prints for path, read as format (NULL: probe);
 * NULL with *err when it cannot open it (*err KILN_ERR_INVALID). */
static json_t *
disk_info (const char *path, const char *format, volatile sig_atomic_t *cancel, kiln_error **err)
{
  char *argv[8];
  int n = 0;
  argv[n++] = (char *) "qemu-img";
  argv[n++] = (char *) "info";
  argv[n++] = (char *) "--output=json";
  if (format)
    {
      argv[n++] = (char *) "-f";
      argv[n++] = (char *) format;
    }
  argv[n++] = (char *) path;
  argv[n] = NULL;
  struct kiln_process_spec spec = {.argv = argv, .cancel = cancel, .timeout_ms = 120000,
                                   .capture_limit = 4 * 1024 * 1024};
  struct kiln_process_result res = {0};
  if (kiln_process_run (&spec, &res, err) < 0)
    {
      kiln_process_result_release (&res);
      return NULL;
    }
  if (res.exit_code != 0)
    {
      size_t len = res.err.len;
      while (len > 0 && res.err.data[len - 1] == '\n')
        len--;
      kiln_fail_invalid (err, "%.*s", (int) len, len ? res.err.data : "qemu-img info failed");
      kiln_process_result_release (&res);
      return NULL;
    }
  json_error_t je;
  json_t *j = json_loads (kiln_buf_str (&res.out), 0, &je);
  kiln_process_result_release (&res);
  if (j == NULL)
    kiln_fail (err, "qemu-img info '%s': unreadable output: %s", path, je.text);
  return j;
}

/* Whether the image refers to any file but itself: a backing file, a
 * qcow2 external data file, VMDK extents elsewhere.  *what names it. */
static bool
refers_elsewhere (json_t *info, const char *path, const char **kind, const char **what)
{
  const char *backing = json_string_value (json_object_get (info, "backing-filename"));
  if (backing)
    {
      *kind = "a backing file";
      *what = backing;
      return true;
    }
  json_t *data = json_object_get (json_object_get (info, "format-specific"), "data");
  const char *data_file = json_string_value (json_object_get (data, "data-file"));
  if (data_file)
    {
      *kind = "an external data file";
      *what = data_file;
      return true;
    }
  size_t i;
  json_t *extent;
  json_array_foreach (json_object_get (data, "extents"), i, extent)
    {
      const char *file = json_string_value (json_object_get (extent, "filename"));
      if (file && strcmp (file, path) != 0)
        {
          *kind = "an extent in another file";
          *what = file;
          return true;
        }
    }
  return false;
}

/* Checks that path holds a whole, self-contained disk image in format f
 * (errors KILN_ERR_INVALID are the caller's disk's fault); *virtual_size
 * its size in bytes. */
static int
disk_validate (struct kiln_emu *emu, const char *path, const struct import_format *f, volatile sig_atomic_t *cancel,
               uint64_t *virtual_size, kiln_error **err)
{
  _cleanup_error_ kiln_error *open_err = NULL;
  _cleanup_json_ json_t *info = disk_info (path, f->qemu, cancel, &open_err);
  if (info == NULL)
    {
      if (open_err->code != KILN_ERR_INVALID)
        {
          kiln_error_move (err, &open_err);
          return -1;
        }
    {
      /* qemu-img names the private file it read: say "the disk image". */
      _cleanup_free_ char *why = kiln_xstrdup (kiln_error_message (open_err));
      for (char *at; (at = strstr (why, path)) != NULL;)
        {
          _cleanup_free_ char *old = why;
          why = kiln_xasprintf ("%.*sthe disk image%s", (int) (at - old), old, at + strlen (path));
        }
      return kiln_fail_invalid (err, "Disk validation failed [the object is not a valid %s disk image: %s]",
                                f->api, why);
    }
    }
  const char *kind, *what;
  if (refers_elsewhere (info, path, &kind, &what))
    return kiln_fail_invalid (err, "Disk validation failed [the %s image refers to %s (%s); kiln-emulator imports "
                              "only self-contained disk images]", f->api, kind, what);
  json_int_t size = json_integer_value (json_object_get (info, "virtual-size"));
  if (size <= 0)
    return kiln_fail_invalid (err, "Disk validation failed [the %s image has no size]", f->api);
  *virtual_size = (uint64_t) size;

  /* What the file really is: a declared RAW that is a qcow2 container
   * would otherwise import the container's bytes as the disk.  A fixed
   * VHD has its footer at the end only, so probing calls it raw: the
   * declared open above already found the footer. */
  _cleanup_error_ kiln_error *probe_err = NULL;
  _cleanup_json_ json_t *probe = disk_info (path, NULL, cancel, &probe_err);
  if (probe == NULL && probe_err->code != KILN_ERR_INVALID)
    {
      kiln_error_move (err, &probe_err);
      return -1;
    }
  const char *detected = probe ? json_string_value (json_object_get (probe, "format")) : NULL;
  if (detected && strcmp (detected, f->qemu) != 0 && !(strcmp (f->qemu, "vpc") == 0 && strcmp (detected, "raw") == 0))
    {
      const char *name = strcmp (detected, "vpc") == 0 ? "VHD" : detected;
      return kiln_fail_invalid (err, "Disk validation failed [the disk image is in %s format, not %s as "
                                "DiskContainer.Format says]", name, f->api);
    }

  /* A truncated qcow2 or VMDK opens and converts with zeros where its data
   * was: only `check` sees the clusters past the end.  Exit 0 is clean, 3
   * only leaked clusters, 63 a format without checks. */
  if (strcmp (f->qemu, "qcow2") == 0 || strcmp (f->qemu, "vmdk") == 0 || strcmp (f->qemu, "vhdx") == 0)
    {
      char *argv[] = {(char *) "qemu-img", (char *) "check", (char *) "-q", (char *) "-f", (char *) f->qemu,
                      (char *) path, NULL};
      _cleanup_free_ char *msg = NULL;
      int code = emu_qemu_img (emu, argv, cancel, &msg, NULL, 0, 0, err);
      if (code < 0)
        return -1;
      if (code != 0 && code != 3 && code != 63)
        {
          /* The first line says enough; a truncated qcow2 lists every cluster. */
          size_t first = strcspn (msg, "\n");
          return kiln_fail_invalid (err, "Disk validation failed [the %s image is corrupt or truncated: %.*s]",
                                    f->api, (int) (first > 200 ? 200 : first),
                                    first ? msg : "qemu-img check failed");
        }
    }
  return 0;
}

/* ---- running an import ---- */

static char *
disks_dir (struct kiln_emu *emu)
{
  char *p;
  p = kiln_xasprintf ("%s/disks", emu->data_dir);
  return p;
}

/* The final transaction: the task must still be active.  Inserts the
 * snapshot (and image), puts the disk under the name its row gives and
 * marks the task completed. */
static int
import_commit_rows (struct kiln_emu *emu, json_t *task, const struct emu_snapshot_spec *snap,
                    const struct emu_image_spec *img, const char *tmp, uint64_t object_size, bool *renamed,
                    kiln_error **err)
{
  const char *id = emu_row_str (task, "id");
  _cleanup_json_ json_t *now = emu_db_query_one (emu, err, "SELECT state FROM conversion_tasks WHERE id = ?", id);
  if (now == NULL)
    return *err ? -1 : kiln_error_set (err, KILN_ERR_CANCELLED, 0, "task %s is gone", id);
  if (strcmp (emu_row_str (now, "state"), "active") != 0)
    return kiln_error_set (err, KILN_ERR_CANCELLED, 0, "task %s was cancelled", id);
  if (emu_snapshot_insert (emu, snap, err) < 0 || (img && emu_image_insert (emu, img, err) < 0))
    return -1;
  char size[24];
  snprintf (size, sizeof size, "%llu", (unsigned long long) object_size);
  if (emu_db_exec (emu, err, "UPDATE conversion_tasks SET state = 'completed', status_message = NULL, progress = "
                   "NULL, snapshot_id = ?, image_id = ?, disk_size = ? WHERE id = ?", snap->id,
                   img ? img->id : NULL, size, id) < 0)
    return -1;
  if (rename (tmp, snap->disk) < 0)
    return kiln_fail_errno (err, errno, "rename '%s' to '%s'", tmp, snap->disk);
  *renamed = true;
  return 0;
}

static int
import_run (struct kiln_emu *emu, json_t *task, volatile sig_atomic_t *cancel, kiln_error **err)
{
  const char *id = emu_row_str (task, "id");
  bool image = strcmp (emu_row_str (task, "kind"), "import-image") == 0;
  const struct import_format *f = import_format_find (emu_row_str (task, "format"));
  if (f == NULL)
    return kiln_fail (err, "task %s: unknown format '%s'", id, emu_row_str (task, "format"));
  const char *bucket = emu_row_str (task, "bucket"), *key = emu_row_str (task, "object_key");

  emu_task_progress (emu, id, "validating", 2);
  _cleanup_unlink_ char *source = NULL;
  uint64_t object_size = 0;
  const char *why = NULL;
  int r = s3_object_link (emu, emu_row_str (task, "account"), emu_row_str (task, "region"), bucket, key, &source,
                          &object_size, &why, err);
  if (r < 0)
    return -1;
  if (r > 0)
    return kiln_fail_invalid (err, "Unable to read the disk image s3://%s/%s: the bucket %s %s", bucket, key,
                              bucket, why);
  {
    char size[24];
    snprintf (size, sizeof size, "%llu", (unsigned long long) object_size);
    _cleanup_error_ kiln_error *db_err = NULL;
    if (emu_db_exec (emu, &db_err, "UPDATE conversion_tasks SET disk_size = ? WHERE id = ?", size, id) < 0)
      task_warn ("disk size", db_err);
  }

  uint64_t virtual_size = 0;
  if (disk_validate (emu, source, f, cancel, &virtual_size, err) < 0)
    return -1;
  emu_task_progress (emu, id, "validated", 10);

  _cleanup_free_ char *dir = disks_dir (emu);
  if (kiln_mkdir_p (dir, 0755, err) < 0)
    return -1;
  /* Hidden while written: disk collectors skip dot files. */
  _cleanup_unlink_ char *tmp = NULL;
  tmp = kiln_xasprintf ("%s/.%s.raw.part", dir, id);
  unlink (tmp);
  emu_task_progress (emu, id, "converting", 15);
  char *argv[] = {(char *) "qemu-img", (char *) "convert", (char *) "-p", (char *) "-f", (char *) f->qemu,
                  (char *) "-O", (char *) "raw", source, tmp, NULL};
  _cleanup_free_ char *msg = NULL;
  int code = emu_qemu_img (emu, argv, cancel, &msg, id, 15, 90, err);
  if (code < 0)
    return -1;
  if (code != 0)
    return kiln_fail_invalid (err, "Disk conversion failed [%s]", msg);

  long long gib = (long long) ((virtual_size + GIB - 1) / GIB);
  if (gib < 1)
    gib = 1;
  {
    _cleanup_close_ int fd = open (tmp, O_RDWR | O_CLOEXEC);
    if (fd < 0)
      return kiln_fail_errno (err, errno, "open '%s'", tmp);
    if (ftruncate (fd, (off_t) ((uint64_t) gib * GIB)) < 0)
      return kiln_fail_errno (err, errno, "grow '%s' to %lld GiB", tmp, gib);
    if (emu->state_dir && fsync (fd) < 0)
      return kiln_fail_errno (err, errno, "sync '%s'", tmp);
  }
  emu_task_progress (emu, id, image ? "preparing ami" : "completing", 95);

  time_t now = emu_now (emu);
  _cleanup_free_ char *snap_id = emu_new_id (emu, "snap");
  _cleanup_free_ char *ami = image ? emu_new_id (emu, "ami") : NULL;
  _cleanup_free_ char *final = emu_disk_path (emu, snap_id, "raw");
  _cleanup_free_ char *snap_description = NULL;
  snap_description = kiln_xasprintf ("Created by AWS-VMImport service for %s", id);
  struct emu_snapshot_spec snap = {
    .id = snap_id, .account = emu_row_str (task, "account"), .region = emu_row_str (task, "region"),
    .state = "completed", .progress = "100%", .description = snap_description, .disk = final, .disk_format = "raw",
    .volume_size = gib, .start_time = now,
  };
  struct emu_image_spec img = {
    .id = ami, .account = snap.account, .region = snap.region, .name = id,
    .description = emu_row_str_or_null (task, "description"), .state = "available",
    .architecture = emu_row_str_or_null (task, "architecture") ? emu_row_str (task, "architecture") : "x86_64",
    .root_device_name = IMPORT_ROOT_DEVICE, .root_snapshot = snap_id, .volume_size = gib, .creation_date = now,
    .virtualization_type = "hvm", .boot_mode = emu_row_str_or_null (task, "boot_mode"), .ena_support = true,
    .delete_on_termination = true,
  };
  if (emu_db_begin (emu, err) < 0)
    return -1;
  bool renamed = false;
  r = import_commit_rows (emu, task, &snap, image ? &img : NULL, tmp, object_size, &renamed, err);
  if (emu_db_end (emu, r == 0, r == 0 ? err : NULL) < 0 || r < 0)
    {
      if (renamed)
        unlink (final);   /* the rows naming it were rolled back */
      return -1;
    }
  free (kiln_steal_pointer (&tmp));   /* renamed */
  kiln_log_info ("emulator: %s completed: %s%s%s (%lld GiB) from s3://%s/%s", id, image ? ami : "",
                 image ? " on " : "", snap_id, gib, bucket, key);
  return 0;
}

/* Ends a task that did not complete: deleted, with why (a cancelled one
 * keeps the message CancelImportTask gave it). */
static void
task_end_deleted (struct kiln_emu *emu, const char *id, const char *message)
{
  _cleanup_error_ kiln_error *err = NULL;
  if (emu_db_exec (emu, &err, "UPDATE conversion_tasks SET status_message = CASE WHEN state = 'deleting' THEN "
                   "status_message ELSE ? END, state = 'deleted', progress = NULL WHERE id = ? AND state IN "
                   "('active', 'deleting')", message, id) < 0)
    task_warn ("end task", err);
}

/* The task table: what runs a task of each kind.  A runner returns 0 when
 * the task completed, else -1 with *err (KILN_ERR_INVALID: the caller's
 * problem, a ClientError; KILN_ERR_CANCELLED: cancelled). */
static const struct task_kind {
  const char *kind;
  int (*run) (struct kiln_emu *emu, json_t *task, volatile sig_atomic_t *cancel, kiln_error **err);
} task_kinds[] = {
  {"import-snapshot", import_run},
  {"import-image", import_run},
  {"export-image", emu_export_run},
};

static void
run_task (struct emu_worker *w, const struct emu_job *job)
{
  struct kiln_emu *emu = w->emu;
  const char *id = job->arg[0];
  _cleanup_error_ kiln_error *err = NULL;
  _cleanup_json_ json_t *task = emu_db_query_one (emu, &err, "SELECT * FROM conversion_tasks WHERE id = ?", id);
  if (task == NULL)
    {
      if (err)
        task_warn (id, err);
      return;
    }
  const char *state = emu_row_str (task, "state");
  if (strcmp (state, "deleting") == 0)
    {
      task_end_deleted (emu, id, NULL);
      return;
    }
  if (strcmp (state, "active") != 0)
    return;
  const char *kind = emu_row_str (task, "kind");
  const struct task_kind *k = NULL;
  for (size_t i = 0; i < sizeof task_kinds / sizeof task_kinds[0] && k == NULL; i++)
    if (strcmp (task_kinds[i].kind, kind) == 0)
      k = &task_kinds[i];
  int r = k ? k->run (emu, task, &w->cancel, &err) : kiln_fail (&err, "task %s has an unknown kind '%s'", id, kind);
  if (r == 0)
    return;
  if (emu_worker_quitting (w) && err && err->code == KILN_ERR_CANCELLED)
    {
      /* Shutdown: the task stays active and runs again at the next start. */
      kiln_log_info ("emulator: %s interrupted by shutdown; it runs again at the next start", id);
      return;
    }
  _cleanup_free_ char *message = NULL;
  message = kiln_xasprintf ("%s: %s", err && err->code == KILN_ERR_INVALID ? "ClientError" : "ServerError",
                            kiln_error_message (err));
  if (err == NULL || err->code != KILN_ERR_CANCELLED)
    kiln_log_warn ("emulator: %s failed: %s", id, message);
  task_end_deleted (emu, id, message);
}

static const struct emu_job_kind task_job = {.name = "vm-task", .run = run_task};

void
emu_task_queue (struct kiln_emu *emu, const char *task_id)
{
  emu_jobs_queue (emu, TASK_QUEUE, &task_job, task_id, NULL, false);
}

/* Interrupts the task if it is running. */
static void
task_interrupt (struct kiln_emu *emu, const char *task_id)
{
  emu_jobs_cancel_running (emu, TASK_QUEUE, &task_job, task_id);
}

int
emu_tasks_recover (struct kiln_emu *emu, kiln_error **err)
{
  if (emu_db_exec0 (emu, err, "UPDATE conversion_tasks SET state = 'deleted', progress = NULL WHERE state = "
                    "'deleting'") < 0)
    return -1;
  _cleanup_json_ json_t *active = emu_db_query0 (emu, err, "SELECT id FROM conversion_tasks WHERE state = 'active' "
                                                 "ORDER BY seq");
  if (active == NULL)
    return -1;
  size_t i;
  json_t *row;
  json_array_foreach (active, i, row)
    {
      const char *id = emu_row_str (row, "id");
      kiln_log_info ("emulator: %s was under way when the emulator stopped: running it again", id);
      emu_task_progress (emu, id, "pending", 0);
      emu_task_queue (emu, id);
    }
  return 0;
}

/* ---- making tasks (shared with ec2_export.c) ---- */

json_t *
emu_task_by_token (struct emu_call *c, const char *kind, const char *token, bool *failed)
{
  *failed = false;
  if (token == NULL)
    return NULL;
  _cleanup_error_ kiln_error *err = NULL;
  json_t *row = emu_db_query_one (c->emu, &err, "SELECT * FROM conversion_tasks WHERE account = ? AND region = ? "
                                  "AND kind = ? AND client_token = ?", c->account, c->region, kind, token);
  if (row == NULL && err)
    {
      *failed = true;
      emu_fail_internal (c, err);
    }
  return row;
}

static int
task_insert_rows (struct emu_call *c, const struct emu_task_spec *s, json_t **existing)
{
  _cleanup_error_ kiln_error *err = NULL;
  bool failed;
  /* Another call with the same token may have won the race. */
  *existing = emu_task_by_token (c, s->kind, s->client_token, &failed);
  if (failed)
    return -1;
  if (*existing)
    return 0;
  char seq[24], created[24];
  snprintf (created, sizeof created, "%lld", (long long) c->now);
  if (emu_db_next_seq (c->emu, seq, &err) < 0
      || emu_db_exec (c->emu, &err, "INSERT INTO conversion_tasks (id, kind, account, region, state, status_message, "
                      "progress, description, client_token, format, bucket, object_key, url, disk_description, "
                      "device_name, role_name, architecture, platform, boot_mode, license_type, image_id, created, "
                      "seq) VALUES (?, ?, ?, ?, 'active', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                      s->id, s->kind, c->account, c->region, s->status_message ? s->status_message : "pending",
                      s->progress, s->description, s->client_token, s->format, s->bucket, s->object_key, s->url,
                      s->disk_description, s->device_name, s->role_name, s->architecture, s->platform, s->boot_mode,
                      s->license_type, s->image_id, created, seq) < 0)
    return emu_fail_internal (c, err);
  return emu_tag_specs_apply (c, s->tag_type, s->id);
}

json_t *
emu_task_create (struct emu_call *c, const struct emu_task_spec *s)
{
  _cleanup_error_ kiln_error *err = NULL;
  if (emu_db_begin (c->emu, &err) < 0)
    {
      emu_fail_internal (c, err);
      return NULL;
    }
  _cleanup_json_ json_t *existing = NULL;
  int r = task_insert_rows (c, s, &existing);
  if (emu_db_end (c->emu, r == 0, &err) < 0)
    {
      emu_fail_internal (c, err);
      return NULL;
    }
  if (r < 0)
    return NULL;
  if (existing)
    return kiln_steal_pointer (&existing);
  json_t *row = emu_db_query_one (c->emu, &err, "SELECT * FROM conversion_tasks WHERE id = ?", s->id);
  if (row == NULL)
    {
      if (err)
        emu_fail_internal (c, err);
      else
        emu_fail (c, 500, "InternalError", "kiln-emulator: task %s vanished", s->id);
      return NULL;
    }
  emu_task_queue (c->emu, s->id);
  return row;
}

/* ---- describing tasks (with ec2_export.c) ---- */

const char *const emu_task_filter_names[] = {"task-state", "tag:*", "tag-key", "tag-value", NULL};

json_t *
emu_task_filter_fields (struct emu_call *c, json_t *task)
{
  return json_pack ("{s:s}", "task-state", emu_row_str (task, "state"));
}

bool
emu_task_id_valid (struct emu_call *c, const struct emu_describe_ids *ids, const char *id)
{
  return emu_task_id_well_formed (id, ids->prefix);
}

/* The progress column, when there is one (none once a task has ended). */
void
emu_task_xml_progress (struct emu_call *c, json_t *task)
{
  emu_xml_text (c, "progress", emu_row_str_or_null (task, "progress"));
}

/* ---- import parameters ---- */

static int
check_description (struct emu_call *c, const char *name, const char *value)
{
  if (value && strlen (value) > DESCRIPTION_MAX)
    return emu_fail_param (c, "Value for parameter %s is invalid. Length exceeds maximum of %d characters", name,
                           DESCRIPTION_MAX);
  return 0;
}

/* Encrypted snapshots, KMS keys and license configurations have no meaning
 * here. */
static int
refuse_unsupported (struct emu_call *c)
{
  bool encrypted;
  if (emu_param_bool (c, "Encrypted", false, &encrypted) < 0)
    return -1;
  if (encrypted || emu_param (c, "KmsKeyId"))
    return emu_fail (c, 400, "UnsupportedOperation", "kiln-emulator does not import into encrypted snapshots "
                     "(Encrypted, KmsKeyId)");
  return 0;
}

/* Where one disk comes from: DiskContainer[.N].UserBucket.S3Bucket/S3Key,
 * or Url as s3://bucket/key (the emulator has no other source to read). */
struct disk_source {
  const struct import_format *format;
  const char *bucket, *key, *url, *description, *device_name;
  char *url_bucket, *url_key;     /* owned: the Url split */
};

static void
disk_source_release (struct disk_source *d)
{
  free (d->url_bucket);
  free (d->url_key);
}
#define _cleanup_disk_source_ __attribute__ ((cleanup (disk_source_release)))

static int
read_disk_container (struct emu_call *c, const char *prefix, struct disk_source *d)
{
  const char *format = emu_paramf (c, "%s.Format", prefix);
  d->bucket = emu_paramf (c, "%s.UserBucket.S3Bucket", prefix);
  d->key = emu_paramf (c, "%s.UserBucket.S3Key", prefix);
  d->url = emu_paramf (c, "%s.Url", prefix);
  d->description = emu_paramf (c, "%s.Description", prefix);
  d->device_name = emu_paramf (c, "%s.DeviceName", prefix);
  if (emu_paramf (c, "%s.SnapshotId", prefix))
    return emu_fail (c, 400, "UnsupportedOperation", "kiln-emulator imports disks from S3 only (%s.SnapshotId)",
                     prefix);
  if (check_description (c, "DiskContainer.Description", d->description) < 0)
    return -1;
  if (d->url && (d->bucket || d->key))
    return emu_fail (c, 400, "InvalidParameterCombination", "%s.Url and %s.UserBucket cannot both be given",
                     prefix, prefix);
  if (d->url)
    {
      if (strncmp (d->url, "s3://", 5) != 0)
        return emu_fail (c, 400, "UnsupportedOperation", "kiln-emulator reads disk images from its own S3 only: "
                         "%s.Url must be s3://BUCKET/KEY (got '%s'); or give %s.UserBucket", prefix, d->url, prefix);
      const char *b = d->url + 5, *slash = strchr (b, '/');
      if (slash == NULL || slash == b || slash[1] == '\0')
        return emu_fail_param (c, "Value (%s) for parameter %s.Url is invalid: expected s3://BUCKET/KEY", d->url,
                               prefix);
      d->url_bucket = kiln_xstrndup (b, (size_t) (slash - b));
      d->url_key = kiln_xstrdup (slash + 1);
      d->bucket = d->url_bucket;
      d->key = d->url_key;
    }
  else if (d->bucket == NULL || *d->bucket == '\0')
    return emu_fail (c, 400, "MissingParameter", "The request must contain the parameter %s.UserBucket.S3Bucket "
                     "(or %s.Url)", prefix, prefix);
  else if (d->key == NULL || *d->key == '\0')
    return emu_fail (c, 400, "MissingParameter", "The request must contain the parameter %s.UserBucket.S3Key",
                     prefix);
  if (format == NULL || *format == '\0')
    return emu_fail (c, 400, "MissingParameter", "The request must contain the parameter %s.Format", prefix);
  if (strcasecmp (format, "OVA") == 0)
    return emu_fail (c, 400, "UnsupportedOperation", "kiln-emulator does not import OVA archives; import the VMDK "
                     "disk inside");
  d->format = import_format_find (format);
  if (d->format == NULL)
    return emu_fail_param (c, "Value (%s) for parameter %s.Format is invalid. Expected: VMDK, RAW, VHD, VHDX or "
                           "QCOW2.", format, prefix);
  /* The bucket must be in the region of the call, as on AWS; whether the
   * caller may read it is the task's to find out. */
  _cleanup_error_ kiln_error *err = NULL;
  _cleanup_json_ json_t *b = emu_db_query_one (c->emu, &err, "SELECT region FROM s3_buckets WHERE name = ?",
                                               d->bucket);
  if (b == NULL && err)
    return emu_fail_internal (c, err);
  if (b && strcmp (emu_row_str (b, "region"), c->region) != 0)
    return emu_fail (c, 400, "InvalidParameter", "The given S3 bucket %s is not local to the region %s (it is in "
                     "%s)", d->bucket, c->region, emu_row_str (b, "region"));
  return 0;
}

/* ---- XML of import tasks ---- */

static void
write_user_bucket (struct emu_call *c, json_t *task)
{
  emu_xml_start (c, "userBucket");
  emu_xml_text (c, "s3Bucket", emu_row_str (task, "bucket"));
  emu_xml_text (c, "s3Key", emu_row_str (task, "object_key"));
  emu_xml_end (c);
}

static void
write_disk_size (struct emu_call *c, json_t *task)
{
  if (emu_row_str_or_null (task, "disk_size"))
    emu_xml_textf (c, "diskImageSize", "%lld.0", emu_row_int (task, "disk_size"));
}

static void
write_snapshot_task_detail (struct emu_call *c, json_t *task)
{
  emu_xml_start (c, "snapshotTaskDetail");
  emu_xml_text (c, "description", emu_row_str_or_null (task, "disk_description")
                                      ? emu_row_str (task, "disk_description")
                                      : emu_row_str_or_null (task, "description"));
  write_disk_size (c, task);
  emu_xml_bool (c, "encrypted", false);
  emu_xml_text (c, "format", emu_row_str (task, "format"));
  emu_task_xml_progress (c, task);
  emu_xml_text (c, "snapshotId", emu_row_str_or_null (task, "snapshot_id"));
  emu_xml_text (c, "status", emu_row_str (task, "state"));
  emu_xml_text (c, "statusMessage", emu_row_str_or_null (task, "status_message"));
  emu_xml_text (c, "url", emu_row_str_or_null (task, "url"));
  write_user_bucket (c, task);
  emu_xml_end (c);
}

static void
write_snapshot_task (struct emu_call *c, json_t *task, json_t *tags)
{
  emu_xml_text (c, "description", emu_row_str_or_null (task, "description"));
  emu_xml_text (c, "importTaskId", emu_row_str (task, "id"));
  write_snapshot_task_detail (c, task);
  emu_xml_tag_set (c, "tagSet", tags);
}

/* The disk of an image task, as snapshotDetailSet shows it. */
static void
write_snapshot_details (struct emu_call *c, json_t *task)
{
  const char *state = emu_row_str (task, "state");
  emu_xml_start (c, "snapshotDetailSet");
  emu_xml_start (c, "item");
  emu_xml_text (c, "description", emu_row_str_or_null (task, "disk_description"));
  emu_xml_text (c, "deviceName", emu_row_str_or_null (task, "device_name") ? emu_row_str (task, "device_name")
                                                                          : IMPORT_ROOT_DEVICE);
  write_disk_size (c, task);
  emu_xml_text (c, "format", emu_row_str (task, "format"));
  emu_xml_text (c, "snapshotId", emu_row_str_or_null (task, "snapshot_id"));
  emu_xml_text (c, "status", strcmp (state, "deleting") == 0 ? "deleted" : state);
  emu_xml_text (c, "url", emu_row_str_or_null (task, "url"));
  write_user_bucket (c, task);
  emu_xml_end (c);
  emu_xml_end (c);
}

/* ImportImage's reply and DescribeImportImageTasks' items share these;
 * bootMode is only in the latter's model. */
static void
write_image_task_fields (struct emu_call *c, json_t *task, json_t *tags, bool describe)
{
  emu_xml_text (c, "architecture", emu_row_str_or_null (task, "architecture"));
  emu_xml_text (c, "description", emu_row_str_or_null (task, "description"));
  emu_xml_bool (c, "encrypted", false);
  emu_xml_text (c, "imageId", emu_row_str_or_null (task, "image_id"));
  emu_xml_text (c, "importTaskId", emu_row_str (task, "id"));
  emu_xml_text (c, "licenseType", emu_row_str_or_null (task, "license_type"));
  emu_xml_text (c, "platform", emu_row_str_or_null (task, "platform"));
  emu_task_xml_progress (c, task);
  write_snapshot_details (c, task);
  emu_xml_text (c, "status", emu_row_str (task, "state"));
  emu_xml_text (c, "statusMessage", emu_row_str_or_null (task, "status_message"));
  emu_xml_tag_set (c, "tagSet", tags);
  if (describe)
    emu_xml_text (c, "bootMode", emu_row_str_or_null (task, "boot_mode"));
}

static void
write_image_task (struct emu_call *c, json_t *task, json_t *tags)
{
  write_image_task_fields (c, task, tags, true);
}

/* Tags of a task for a reply (a new reference; NULL after failing). */
static json_t *
task_tags (struct emu_call *c, json_t *task)
{
  return emu_tags_of (c, emu_row_str (task, "id"));
}

/* ---- ImportSnapshot ---- */

static int
op_import_snapshot (struct emu_call *c)
{
  const char *description = emu_param (c, "Description");
  const char *token = emu_param (c, "ClientToken");
  static const char *const tag_types[] = {"import-snapshot-task", NULL};
  if (refuse_unsupported (c) < 0 || check_description (c, "Description", description) < 0
      || emu_tag_specs_check (c, tag_types) < 0)
    return -1;
  bool failed;
  _cleanup_json_ json_t *task = emu_task_by_token (c, "import-snapshot", token, &failed);
  if (failed)
    return -1;
  if (task == NULL)
    {
      _cleanup_disk_source_ struct disk_source d = {0};
      if (read_disk_container (c, "DiskContainer", &d) < 0)
        return -1;
      _cleanup_free_ char *id = emu_new_id (c->emu, "import-snap");
      struct emu_task_spec s = {
        .id = id, .kind = "import-snapshot", .tag_type = "import-snapshot-task", .progress = "0", .description = description,
        .client_token = token, .format = d.format->api, .bucket = d.bucket, .object_key = d.key, .url = d.url,
        .disk_description = d.description, .role_name = emu_param (c, "RoleName"),
      };
      task = emu_task_create (c, &s);
      if (task == NULL)
        return -1;
    }
  _cleanup_json_ json_t *tags = task_tags (c, task);
  if (tags == NULL)
    return -1;
  write_snapshot_task (c, task, tags);
  return 0;
}

/* Both import task kinds: ImportTaskId.N, Filters.N, paged from 1. */
#define IMPORT_TASKS(task_kind, id_prefix)                                                                   \
  .ids = {{                                                                                                  \
    .param = "ImportTaskId", .column = "id", .prefix = id_prefix, .valid = emu_task_id_valid,                \
    .malformed = {"InvalidConversionTaskId.Malformed", "The ID '%s' is malformed (expecting \"" id_prefix     \
                  "-...\")", NULL, EMU_REPORT_FIRST},                                                        \
    .not_found = {"InvalidConversionTaskId", "The task ID '%s' does not exist", NULL, EMU_REPORT_EACH_ONCE}, \
  }},                                                                                                        \
  .filter_param = "Filters", .filter_names = emu_task_filter_names, .fields = emu_task_filter_fields,        \
  .query = "SELECT * FROM conversion_tasks WHERE account = ?1 AND region = ?2 AND kind = '" task_kind        \
           "' ORDER BY seq",                                                                                 \
  .page_min = 1

static const struct emu_describe_kind snapshot_tasks_kind = {
  IMPORT_TASKS ("import-snapshot", "import-snap"),
  .set = "importSnapshotTaskSet", .write = write_snapshot_task,
};

EMU_DESCRIBE_HANDLER (op_describe_import_snapshot_tasks, snapshot_tasks_kind)

/* ---- ImportImage ---- */

static int
op_import_image (struct emu_call *c)
{
  const char *description = emu_param (c, "Description");
  const char *token = emu_param (c, "ClientToken");
  const char *arch = emu_param (c, "Architecture");
  const char *platform = emu_param (c, "Platform");
  const char *boot_mode = emu_param (c, "BootMode");
  const char *license = emu_param (c, "LicenseType");
  const char *hypervisor = emu_param (c, "Hypervisor");
  static const char *const tag_types[] = {"import-image-task", NULL};
  if (refuse_unsupported (c) < 0 || check_description (c, "Description", description) < 0
      || emu_tag_specs_check (c, tag_types) < 0)
    return -1;
  if (emu_param (c, "LicenseSpecifications.1.LicenseConfigurationArn"))
    return emu_fail (c, 400, "UnsupportedOperation", "kiln-emulator has no License Manager "
                     "(LicenseSpecifications)");
  if (arch && strcmp (arch, "x86_64") != 0 && strcmp (arch, "arm64") != 0)
    return emu_fail_param (c, "Value (%s) for parameter Architecture is invalid. kiln-emulator imports x86_64 and "
                           "arm64 images.", arch);
  if (platform && strcmp (platform, "Linux") != 0)
    return emu_fail_param (c, "Value (%s) for parameter Platform is invalid. kiln-emulator imports Linux images "
                           "only.", platform);
  if (boot_mode && strcmp (boot_mode, "legacy-bios") != 0 && strcmp (boot_mode, "uefi") != 0
      && strcmp (boot_mode, "uefi-preferred") != 0)
    return emu_fail_param (c, "Value (%s) for parameter BootMode is invalid. Expected: 'legacy-bios', 'uefi' or "
                           "'uefi-preferred'.", boot_mode);
  if (license && strcmp (license, "AWS") != 0 && strcmp (license, "BYOL") != 0)
    return emu_fail_param (c, "Value (%s) for parameter LicenseType is invalid. Expected: AWS or BYOL.", license);
  if (hypervisor && strcmp (hypervisor, "xen") != 0)
    return emu_fail_param (c, "Value (%s) for parameter Hypervisor is invalid. Expected: xen.", hypervisor);

  bool failed;
  _cleanup_json_ json_t *task = emu_task_by_token (c, "import-image", token, &failed);
  if (failed)
    return -1;
  if (task == NULL)
    {
      size_t n = 0;
      _cleanup_free_ int *disks = emu_param_indices (c, "DiskContainer", &n);
      if (n == 0)
        return emu_fail (c, 400, "MissingParameter", "The request must contain the parameter DiskContainer.1");
      if (n > 1)
        return emu_fail (c, 400, "UnsupportedOperation", "kiln-emulator imports images of one disk: %zu "
                         "DiskContainer entries given", n);
      char prefix[48];
      snprintf (prefix, sizeof prefix, "DiskContainer.%d", disks[0]);
      _cleanup_disk_source_ struct disk_source d = {0};
      if (read_disk_container (c, prefix, &d) < 0)
        return -1;
      _cleanup_free_ char *id = emu_new_id (c->emu, "import-ami");
      struct emu_task_spec s = {
        .id = id, .kind = "import-image", .tag_type = "import-image-task", .progress = "0", .description = description,
        .client_token = token, .format = d.format->api, .bucket = d.bucket, .object_key = d.key, .url = d.url,
        .disk_description = d.description, .device_name = d.device_name, .role_name = emu_param (c, "RoleName"),
        .architecture = arch ? arch : "x86_64", .platform = platform ? platform : "Linux", .boot_mode = boot_mode,
        .license_type = license,
      };
      task = emu_task_create (c, &s);
      if (task == NULL)
        return -1;
    }
  _cleanup_json_ json_t *tags = task_tags (c, task);
  if (tags == NULL)
    return -1;
  write_image_task_fields (c, task, tags, false);
  return 0;
}

static const struct emu_describe_kind image_tasks_kind = {
  IMPORT_TASKS ("import-image", "import-ami"),
  .set = "importImageTaskSet", .write = write_image_task,
};

EMU_DESCRIBE_HANDLER (op_describe_import_image_tasks, image_tasks_kind)

/* ---- CancelImportTask ---- */

int
emu_task_cancel (struct emu_call *c, json_t *task, const char *reason, char **previous)
{
  const char *id = emu_row_str (task, "id");
  const char *state = emu_row_str (task, "state");
  *previous = kiln_xstrdup (state);
  if (strcmp (state, "active") != 0)
    return emu_fail (c, 400, "IncorrectState", "The task %s is %s and can no longer be cancelled", id, state);
  _cleanup_free_ char *message = NULL;
  message = kiln_xasprintf ("%s", reason && *reason ? reason : "User initiated task cancelation");
  _cleanup_error_ kiln_error *err = NULL;
  int changed = emu_db_exec (c->emu, &err, "UPDATE conversion_tasks SET state = 'deleting', status_message = ? "
                             "WHERE id = ? AND state = 'active'", message, id);
  if (changed < 0)
    return emu_fail_internal (c, err);
  if (changed == 0)
    return emu_fail (c, 400, "IncorrectState", "The task %s has just ended and can no longer be cancelled", id);
  /* The worker ends it deleted: at once when it runs it now, when its turn
   * comes otherwise. */
  task_interrupt (c->emu, id);
  emu_task_queue (c->emu, id);
  return 0;
}

static int
op_cancel_import_task (struct emu_call *c)
{
  const char *id;
  if (emu_param_required (c, "ImportTaskId", &id) < 0)
    return -1;
  bool snap = emu_task_id_well_formed (id, "import-snap"), ami = emu_task_id_well_formed (id, "import-ami");
  if (!snap && !ami)
    return emu_fail (c, 400, "InvalidConversionTaskId.Malformed", "The ID '%s' is malformed (expecting "
                     "\"import-ami-...\" or \"import-snap-...\")", id);
  _cleanup_error_ kiln_error *err = NULL;
  _cleanup_json_ json_t *task = emu_db_query_one (c->emu, &err, "SELECT * FROM conversion_tasks WHERE id = ? AND "
                                                  "account = ? AND region = ?", id, c->account, c->region);
  if (task == NULL && err)
    return emu_fail_internal (c, err);
  if (task == NULL)
    return emu_fail (c, 400, "InvalidConversionTaskId", "The task ID '%s' does not exist", id);
  _cleanup_free_ char *previous = NULL;
  if (emu_task_cancel (c, task, emu_param (c, "CancelReason"), &previous) < 0)
    return -1;
  emu_xml_text (c, "importTaskId", id);
  emu_xml_text (c, "previousState", previous);
  emu_xml_text (c, "state", "deleting");
  return 0;
}

const struct emu_operation emu_ec2_import_ops[] = {
  {"CancelImportTask", op_cancel_import_task},
  {"DescribeImportImageTasks", op_describe_import_image_tasks},
  {"DescribeImportSnapshotTasks", op_describe_import_snapshot_tasks},
  {"ImportImage", op_import_image},
  {"ImportSnapshot", op_import_snapshot},
  {NULL, NULL},
};
