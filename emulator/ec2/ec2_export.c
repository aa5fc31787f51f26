/* ec2_export.c - VM Import/Export's export half: ExportImage,
 * DescribeExportImageTasks and CancelExportTask.
 *
 * ExportImage makes an export-image task (a conversion_tasks row, see
 * ec2_import.c, whose worker runs it): the AMI's root snapshot disk is
 * converted by qemu-img, reading it in its own format (raw for EBS direct
 * and imported snapshots, qcow2 for captures and import-image), into the
 * DiskImageFormat asked for (VMDK stream-optimized, as AWS exports it; RAW;
 * VHD dynamic) and stored in the emulator's S3 as the object
 * <S3Prefix><export-ami-id>.<vmdk|raw|vhd> of the bucket's owner.  The
 * caller must own the AMI and the bucket, which must be in the call's
 * region (checked when the call is made and again when the object is
 * stored).  AMIs whose snapshot has no data (CreateImage in mock mode)
 * cannot be exported. */
#include "ec2.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "cleanup.h"
#include "fsutil.h"
#include "log.h"
#include "s3.h"
#include "store.h"
#include "xalloc.h"

#define DESCRIPTION_MAX 255
#define PREFIX_MAX 512

struct export_format {
  const char *api;        /* DiskImageFormat */
  const char *qemu;       /* qemu-img's -O */
  const char *options;    /* qemu-img's -o, or NULL */
  const char *ext;        /* the object's extension */
};

static const struct export_format export_formats[] = {
  {"VMDK", "vmdk", "subformat=streamOptimized", "vmdk"},
  {"RAW", "raw", NULL, "raw"},
  {"VHD", "vpc", "subformat=dynamic,force_size=on", "vhd"},
  {NULL, NULL, NULL, NULL},
};

static const struct export_format *
export_format_find (const char *api)
{
  for (const struct export_format *f = export_formats; f->api; f++)
    if (strcasecmp (f->api, api) == 0)
      return f;
  return NULL;
}

/* The disk file of the image's root snapshot, and its format, from the
 * database (malloc'd); 1 with a message in *err (KILN_ERR_INVALID) when
 * the image or its data is gone. */
static int
image_disk (struct kiln_emu *emu, const char *account, const char *region, const char *image_id, char **disk,
            char **format, kiln_error **err)
{
  _cleanup_json_ json_t *row = emu_db_query_one (emu, err, "SELECT i.state AS image_state, s.id AS snapshot_id, "
                                                 "s.state, s.disk, s.disk_format FROM images i LEFT JOIN snapshots "
                                                 "s ON s.id = i.root_snapshot WHERE i.id = ? AND i.account = ? AND "
                                                 "i.region = ?", image_id, account, region);
  if (row == NULL)
    return *err ? -1 : kiln_fail_invalid (err, "The image %s does not exist", image_id);
  if (strcmp (emu_row_str (row, "image_state"), "available") != 0)
    return kiln_fail_invalid (err, "The image %s is %s, not available", image_id, emu_row_str (row, "image_state"));
  if (emu_row_str_or_null (row, "snapshot_id") == NULL)
    return kiln_fail_invalid (err, "The root snapshot of image %s has been deleted", image_id);
  if (strcmp (emu_row_str (row, "state"), "completed") != 0)
    return kiln_fail_invalid (err, "The root snapshot %s of image %s is %s", emu_row_str (row, "snapshot_id"),
                              image_id, emu_row_str (row, "state"));
  const char *path = emu_row_str_or_null (row, "disk");
  if (path == NULL)
    return kiln_fail_invalid (err, "The root snapshot %s of image %s holds no data (it was captured in mock mode)",
                              emu_row_str (row, "snapshot_id"), image_id);
  if (path[0] == '/')
    *disk = kiln_xstrdup (path);
  else
    *disk = kiln_xasprintf ("%s/%s", emu->data_dir, path);
  *format = kiln_xstrdup (emu_row_str_or_null (row, "disk_format") ? emu_row_str (row, "disk_format") : "raw");
  return 0;
}

int
emu_export_run (struct kiln_emu *emu, json_t *task, volatile sig_atomic_t *cancel, kiln_error **err)
{
  const char *id = emu_row_str (task, "id");
  const char *account = emu_row_str (task, "account"), *region = emu_row_str (task, "region");
  const struct export_format *f = export_format_find (emu_row_str (task, "format"));
  if (f == NULL)
    return kiln_fail (err, "task %s: unknown format '%s'", id, emu_row_str (task, "format"));
  emu_task_progress (emu, id, "validating", 5);
  _cleanup_free_ char *disk = NULL, *disk_format = NULL;
  if (image_disk (emu, account, region, emu_row_str (task, "image_id"), &disk, &disk_format, err) < 0)
    return -1;

  /* A second name for the disk while it is read: deleting the snapshot
   * meanwhile cannot take the file away. */
  _cleanup_unlink_ char *source = NULL;
  source = kiln_xasprintf ("%s/disks/.%s.source", emu->data_dir, id);
  unlink (source);
  if (link (disk, source) < 0)
    return kiln_fail_errno (err, errno, "link '%s' to '%s'", disk, source);

  _cleanup_unlink_ char *tmp = NULL;
  {
    _cleanup_close_ int fd = s3_data_temp (emu, &tmp, err);
    if (fd < 0)
      return -1;
  }
  emu_task_progress (emu, id, "converting", 10);
  char *argv[16];
  int n = 0;
  argv[n++] = (char *) "qemu-img";
  argv[n++] = (char *) "convert";
  argv[n++] = (char *) "-p";
  argv[n++] = (char *) "-f";
  argv[n++] = disk_format;
  argv[n++] = (char *) "-O";
  argv[n++] = (char *) f->qemu;
  if (f->options)
    {
      argv[n++] = (char *) "-o";
      argv[n++] = (char *) f->options;
    }
  argv[n++] = source;
  argv[n++] = tmp;
  argv[n] = NULL;
  _cleanup_free_ char *msg = NULL;
  int code = emu_qemu_img (emu, argv, cancel, &msg, id, 10, 85, err);
  if (code < 0)
    return -1;
  if (code != 0)
    return kiln_fail (err, "qemu-img convert failed: %s", msg);

  emu_task_progress (emu, id, "uploading", 90);
  _cleanup_json_ json_t *now = emu_db_query_one (emu, err, "SELECT state FROM conversion_tasks WHERE id = ?", id);
  if (now == NULL && *err)
    return -1;
  if (now == NULL || strcmp (emu_row_str (now, "state"), "active") != 0)
    return kiln_error_set (err, KILN_ERR_CANCELLED, 0, "task %s was cancelled", id);
  _cleanup_free_ char *key = NULL;
  key = kiln_xasprintf ("%s%s.%s", emu_row_str (task, "object_key"), id, f->ext);
  const char *bucket = emu_row_str (task, "bucket");
  const char *why = NULL;
  int r = s3_object_store_file (emu, account, region, bucket, key, tmp, "application/octet-stream", emu_now (emu),
                                &why, err);
  free (kiln_steal_pointer (&tmp));   /* consumed either way */
  if (r < 0)
    return -1;
  if (r > 0)
    return kiln_fail_invalid (err, "Unable to write s3://%s/%s: the bucket %s %s", bucket, key, bucket, why);
  int changed = emu_db_exec (emu, err, "UPDATE conversion_tasks SET state = 'completed', status_message = NULL, "
                             "progress = NULL WHERE id = ? AND state = 'active'", id);
  if (changed < 0)
    return -1;
  if (changed == 0)
    kiln_log_warn ("emulator: %s was cancelled while s3://%s/%s was stored; the object stays", id, bucket, key);
  else
    kiln_log_info ("emulator: %s completed: s3://%s/%s", id, bucket, key);
  return 0;
}

/* ---- XML ---- */

static void
write_export_location (struct emu_call *c, json_t *task)
{
  emu_xml_start (c, "s3ExportLocation");
  emu_xml_text (c, "s3Bucket", emu_row_str (task, "bucket"));
  emu_xml_text (c, "s3Prefix", emu_row_str_or_null (task, "object_key"));
  emu_xml_end (c);
}

static void
write_export_task (struct emu_call *c, json_t *task, json_t *tags)
{
  emu_xml_text (c, "description", emu_row_str_or_null (task, "description"));
  emu_xml_text (c, "exportImageTaskId", emu_row_str (task, "id"));
  emu_xml_text (c, "imageId", emu_row_str (task, "image_id"));
  emu_task_xml_progress (c, task);
  write_export_location (c, task);
  emu_xml_text (c, "status", emu_row_str (task, "state"));
  emu_xml_text (c, "statusMessage", emu_row_str_or_null (task, "status_message"));
  emu_xml_tag_set (c, "tagSet", tags);
}

/* ---- ExportImage ---- */

static int
op_export_image (struct emu_call *c)
{
  const char *image_id, *format_name, *bucket;
  if (emu_param_required (c, "ImageId", &image_id) < 0 || emu_param_required (c, "DiskImageFormat", &format_name) < 0
      || emu_param_required (c, "S3ExportLocation.S3Bucket", &bucket) < 0)
    return -1;
  const char *prefix = emu_param (c, "S3ExportLocation.S3Prefix");
  const char *description = emu_param (c, "Description");
  const char *token = emu_param (c, "ClientToken");
  static const char *const tag_types[] = {"export-image-task", NULL};
  if (emu_tag_specs_check (c, tag_types) < 0)
    return -1;
  if (description && strlen (description) > DESCRIPTION_MAX)
    return emu_fail_param (c, "Value for parameter Description is invalid. Length exceeds maximum of %d characters",
                           DESCRIPTION_MAX);
  if (prefix && strlen (prefix) > PREFIX_MAX)
    return emu_fail_param (c, "Value for parameter S3ExportLocation.S3Prefix is invalid. Length exceeds maximum of "
                           "%d characters", PREFIX_MAX);
  const struct export_format *f = export_format_find (format_name);
  if (f == NULL)
    return emu_fail_param (c, "Value (%s) for parameter DiskImageFormat is invalid. Expected: VMDK, RAW or VHD.",
                           format_name);

  bool failed;
  _cleanup_json_ json_t *task = emu_task_by_token (c, "export-image", token, &failed);
  if (failed)
    return -1;
  if (task == NULL)
    {
      _cleanup_json_ json_t *img = emu_image_lookup (c, image_id);
      if (img == NULL)
        return -1;
      if (strcmp (emu_row_str (img, "account"), c->account) != 0)
        return emu_fail (c, 400, "InvalidParameter", "Only the owner of %s may export it (its owner is %s)",
                         image_id, emu_row_str (img, "account"));
      _cleanup_error_ kiln_error *err = NULL;
      _cleanup_free_ char *disk = NULL, *disk_format = NULL;
      int r = image_disk (c->emu, c->account, c->region, image_id, &disk, &disk_format, &err);
      if (r < 0 && err->code != KILN_ERR_INVALID)
        return emu_fail_internal (c, err);
      if (r < 0)
        return emu_fail (c, 400, "InvalidParameter", "%s", kiln_error_message (err));
      const char *why = NULL;
      r = s3_bucket_usable (c->emu, c->account, c->region, bucket, &why, &err);
      if (r < 0)
        return emu_fail_internal (c, err);
      if (r > 0)
        return emu_fail (c, 400, "InvalidParameter", "Insufficient permissions to write to the S3 bucket %s: the "
                         "bucket %s", bucket, why);
      _cleanup_free_ char *id = emu_new_id (c->emu, "export-ami");
      struct emu_task_spec s = {
        .id = id, .kind = "export-image", .tag_type = "export-image-task", .status_message = "pending",
        .progress = "0", .description = description, .client_token = token, .format = f->api, .bucket = bucket,
        .object_key = prefix, .role_name = emu_param (c, "RoleName"), .image_id = image_id,
      };
      task = emu_task_create (c, &s);
      if (task == NULL)
        return -1;
    }
  _cleanup_json_ json_t *tags = emu_tags_of (c, emu_row_str (task, "id"));
  if (tags == NULL)
    return -1;
  emu_xml_text (c, "description", emu_row_str_or_null (task, "description"));
  emu_xml_text (c, "diskImageFormat", emu_row_str (task, "format"));
  emu_xml_text (c, "exportImageTaskId", emu_row_str (task, "id"));
  emu_xml_text (c, "imageId", emu_row_str (task, "image_id"));
  emu_xml_text (c, "roleName", emu_row_str_or_null (task, "role_name"));
  emu_task_xml_progress (c, task);
  write_export_location (c, task);
  emu_xml_text (c, "status", emu_row_str (task, "state"));
  emu_xml_text (c, "statusMessage", emu_row_str_or_null (task, "status_message"));
  emu_xml_tag_set (c, "tagSet", tags);
  return 0;
}

static const struct emu_describe_kind export_tasks_kind = {
  .ids = {{
    .param = "ExportImageTaskId", .column = "id", .prefix = "export-ami", .valid = emu_task_id_valid,
    .malformed = {"InvalidExportImageTaskId.Malformed", "The ID '%s' is malformed (expecting \"export-ami-...\")",
                  NULL, EMU_REPORT_FIRST},
    .not_found = {"InvalidExportImageTaskId.NotFound", "The task ID '%s' does not exist", NULL,
                  EMU_REPORT_EACH_ONCE},
  }},
  .filter_names = emu_task_filter_names, .fields = emu_task_filter_fields,
  .query = "SELECT * FROM conversion_tasks WHERE account = ?1 AND region = ?2 AND kind = 'export-image' "
           "ORDER BY seq",
  .page_min = 1, .set = "exportImageTaskSet", .write = write_export_task,
};

EMU_DESCRIBE_HANDLER (op_describe_export_image_tasks, export_tasks_kind)

/* ---- CancelExportTask ---- */

static int
op_cancel_export_task (struct emu_call *c)
{
  const char *id;
  if (emu_param_required (c, "ExportTaskId", &id) < 0)
    return -1;
  if (!emu_task_id_well_formed (id, "export-ami"))
    return emu_fail (c, 400, "InvalidExportTaskID.Malformed", "The ID '%s' is malformed (kiln-emulator exports "
                     "images only: expecting \"export-ami-...\")", id);
  _cleanup_error_ kiln_error *err = NULL;
  _cleanup_json_ json_t *task = emu_db_query_one (c->emu, &err, "SELECT * FROM conversion_tasks WHERE id = ? AND "
                                                  "account = ? AND region = ?", id, c->account, c->region);
  if (task == NULL && err)
    return emu_fail_internal (c, err);
  if (task == NULL)
    return emu_fail (c, 400, "InvalidExportTaskID.NotFound", "The export task ID '%s' does not exist", id);
  _cleanup_free_ char *previous = NULL;
  if (emu_task_cancel (c, task, NULL, &previous) < 0)
    return -1;
  emu_xml_bool (c, "return", true);
  return 0;
}

const struct emu_operation emu_ec2_export_ops[] = {
  {"CancelExportTask", op_cancel_export_task},
  {"DescribeExportImageTasks", op_describe_export_image_tasks},
  {"ExportImage", op_export_image},
  {NULL, NULL},
};
