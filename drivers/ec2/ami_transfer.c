/* ami_transfer.c - raw disks into AMIs and back (see ami_transfer.h). */
#include "ami_transfer.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cancel.h"
#include "cleanup.h"
#include "disk_image.h"
#include "ebs_direct.h"
#include "ec2_images.h"
#include "log.h"
#include "s3_client.h"
#include "xalloc.h"

#define SNAPSHOT_TIMEOUT_SECONDS 3600
#define IMAGE_TIMEOUT_SECONDS 3600
#define IMPORT_TIMEOUT_SECONDS (3 * 3600)

struct progress_relay {
  struct kiln_image_transfer *t;
  struct timespec t0;
};

static void
relay_progress (const struct kiln_ebs_stats *st, void *opaque)
{
  struct progress_relay *pr = opaque;
  struct timespec now;
  clock_gettime (CLOCK_MONOTONIC, &now);
  double seconds = (double) (now.tv_sec - pr->t0.tv_sec) + (double) (now.tv_nsec - pr->t0.tv_nsec) / 1e9;
  if (pr->t->progress)
    pr->t->progress (st->bytes_read, st->volume_bytes, seconds, pr->t->progress_opaque);
}

static bool
cancelled (const struct kiln_image_transfer *t)
{
  return kiln_cancelled (t->cancel);
}

static int
register_image (struct kiln_aws_client *ec2, const char *snapshot_id, struct kiln_image_transfer *t,
                kiln_error **err)
{
  struct kiln_aws_params p = KILN_AWS_PARAMS_INIT;
  kiln_aws_params_add (&p, "Name", t->name);
  if (t->description)
    kiln_aws_params_add (&p, "Description", t->description);
  kiln_aws_params_add (&p, "Architecture", t->architecture ? t->architecture : "x86_64");
  kiln_aws_params_add (&p, "RootDeviceName", "/dev/xvda");
  kiln_aws_params_add (&p, "BlockDeviceMapping.1.DeviceName", "/dev/xvda");
  kiln_aws_params_add (&p, "BlockDeviceMapping.1.Ebs.SnapshotId", snapshot_id);
  kiln_aws_params_add (&p, "BlockDeviceMapping.1.Ebs.DeleteOnTermination", "true");
  kiln_aws_params_add (&p, "BlockDeviceMapping.1.Ebs.VolumeType", "gp3");
  kiln_aws_params_add (&p, "VirtualizationType", "hvm");
  kiln_aws_params_add (&p, "EnaSupport", "true");
  if (t->boot_mode)
    kiln_aws_params_add (&p, "BootMode", t->boot_mode);
  xmlDoc *doc = NULL;
  int r = kiln_aws_ec2_call (ec2, "RegisterImage", &p, &doc, NULL, err);
  kiln_aws_params_release (&p);
  if (r < 0)
    return kiln_error_prefix (err, "register %s as an image", snapshot_id);
  t->image_id = kiln_aws_xml_text (kiln_aws_xml_root (doc), "imageId");
  xmlFreeDoc (doc);
  if (t->image_id == NULL)
    return kiln_fail (err, "RegisterImage answered without an image id");
  return 0;
}

/* The image's tags and launch permissions, through the distribution code:
 * one target, in the image's own region. */
static int
finish_image (const struct kiln_aws_config *cfg, const struct kiln_aws_client_options *copts,
              struct kiln_aws_client *ec2, struct kiln_image_transfer *t, kiln_error **err)
{
  struct kiln_image_distribution d = {.launch_user_ids = t->share_user_ids, .tags = t->tags};
  const char *const kiln_tags[] = {"kiln:created-by", "kiln", NULL};
  int r = kiln_ec2_image_distribute (cfg, copts ? copts->endpoint_url : NULL, ec2, t->image_id, kiln_tags, &d, 1,
                                     t->cancel, err);
  kiln_image_distribution_release (&d);
  return r;
}

static void
delete_snapshot (struct kiln_aws_client *ec2, const char *snapshot_id)
{
  struct kiln_aws_params p = KILN_AWS_PARAMS_INIT;
  kiln_aws_params_add (&p, "SnapshotId", snapshot_id);
  xmlDoc *doc = NULL;
  _cleanup_error_ kiln_error *e = NULL;
  if (kiln_aws_ec2_call (ec2, "DeleteSnapshot", &p, &doc, NULL, &e) < 0)
    kiln_log_error ("ec2: could not delete the snapshot %s of the failed import: %s", snapshot_id,
                    kiln_error_message (e));
  else
    kiln_log_info ("ec2: deleted the snapshot %s of the failed import", snapshot_id);
  kiln_aws_params_release (&p);
  xmlFreeDoc (doc);
}

/* The snapshot of the image's root device. */
static int
root_snapshot (struct kiln_aws_client *ec2, const char *image_id, char **out, kiln_error **err)
{
  struct kiln_aws_params p = KILN_AWS_PARAMS_INIT;
  kiln_aws_params_add (&p, "ImageId.1", image_id);
  xmlDoc *doc = NULL;
  int r = kiln_aws_ec2_call (ec2, "DescribeImages", &p, &doc, NULL, err);
  kiln_aws_params_release (&p);
  if (r < 0)
    return -1;
  xmlNode *item = kiln_aws_xml_find (kiln_aws_xml_root (doc), "imagesSet/item");
  _cleanup_free_ char *root = item ? kiln_aws_xml_text (item, "rootDeviceName") : NULL;
  char *snapshot = NULL;
  for (xmlNode *m = item ? kiln_aws_xml_find (item, "blockDeviceMapping/item") : NULL; m && snapshot == NULL;
       m = kiln_aws_xml_next (m))
    {
      _cleanup_free_ char *device = kiln_aws_xml_text (m, "deviceName");
      _cleanup_free_ char *snap = kiln_aws_xml_text (m, "ebs/snapshotId");
      if (snap && (root == NULL || (device && strcmp (device, root) == 0)))
        snapshot = kiln_steal_pointer (&snap);
    }
  xmlFreeDoc (doc);
  if (item == NULL)
    return kiln_error_set (err, KILN_ERR_NOT_FOUND, 0, "image %s does not exist", image_id);
  if (snapshot == NULL)
    return kiln_fail (err, "image %s has no EBS snapshot for its root device %s", image_id, root ? root : "");
  *out = snapshot;
  return 0;
}

/* The snapshot a --parent names: a snapshot id, or an image's root
 * snapshot. */
static int
resolve_parent (struct kiln_aws_client *ec2, const char *parent, char **out, kiln_error **err)
{
  if (strncmp (parent, "snap-", 5) == 0)
    {
      *out = kiln_xstrdup (parent);
      return 0;
    }
  if (strncmp (parent, "ami-", 4) == 0)
    return root_snapshot (ec2, parent, out, err) < 0 ? kiln_error_prefix (err, "parent %s", parent) : 0;
  return kiln_fail_invalid (err, "the parent '%s' is neither a snapshot (snap-...) nor an image (ami-...)", parent);
}

/* The disk into a new snapshot over the EBS direct APIs.  Raw and qcow2
 * are read in place; other formats, and a qcow2 whose clusters are
 * compressed, become a sparse raw file in the scratch directory first. */
static int
snapshot_by_ebs (const struct kiln_aws_config *cfg, const struct kiln_aws_client_options *copts,
                 struct kiln_aws_client *ec2, const char *path, struct kiln_image_transfer *t, char **snapshot_id,
                 kiln_error **err)
{
  _cleanup_free_ char *parent = NULL;
  if (t->parent && resolve_parent (ec2, t->parent, &parent, err) < 0)
    return -1;
  struct progress_relay pr = {.t = t};
  clock_gettime (CLOCK_MONOTONIC, &pr.t0);
  struct kiln_ebs_options o = {.config = cfg, .client = copts, .workers = t->workers, .cancel = t->cancel,
                               .parent_snapshot_id = parent, .progress = relay_progress, .progress_opaque = &pr};
  const char *const tags[] = {"kiln:created-by", "kiln", NULL};
  const char *description = t->description ? t->description : t->name;
  const char *format = t->format ? t->format : "raw";
  bool in_place = strcmp (format, "raw") == 0 || strcmp (format, "qcow2") == 0;
  struct kiln_ebs_stats st = {0};
  int r = -1;
  if (in_place)
    {
      r = kiln_ebs_upload (&o, path, format, description, tags, snapshot_id, &st, err);
      if (r < 0 && *snapshot_id == NULL && (*err)->code == KILN_ERR_UNSUPPORTED)
        {
          kiln_log_info ("ec2: %s; converting it to raw first", kiln_error_message (*err));
          kiln_error_freep (err);
          in_place = false;
        }
    }
  if (!in_place)
    {
      _cleanup_free_ char *raw = NULL;
      raw = kiln_xasprintf ("%s/import.raw", t->scratch_dir ? t->scratch_dir : ".");
      r = kiln_disk_convert (path, raw, "raw", false, t->cancel, err);
      if (r == 0)
        r = kiln_ebs_upload (&o, raw, "raw", description, tags, snapshot_id, &st, err);
      unlink (raw);
    }
  t->bytes_read = st.bytes_read;
  t->bytes_sent = st.bytes_sent;
  t->blocks_skipped = st.zero_blocks;
  t->blocks_unchanged = st.unchanged_blocks;
  if (r == 0)
    r = kiln_ec2_snapshot_wait (ec2, *snapshot_id, SNAPSHOT_TIMEOUT_SECONDS, t->cancel, err);
  return r;
}

static void
relay_upload_progress (uint64_t done, uint64_t total, void *opaque)
{
  struct progress_relay *pr = opaque;
  struct kiln_ebs_stats st = {.bytes_read = done, .volume_bytes = total};
  relay_progress (&st, pr);
}

static void
cancel_import_task (struct kiln_aws_client *ec2, const char *task_id)
{
  struct kiln_aws_params p = KILN_AWS_PARAMS_INIT;
  kiln_aws_params_add (&p, "ImportTaskId", task_id);
  xmlDoc *doc = NULL;
  _cleanup_error_ kiln_error *e = NULL;
  if (kiln_aws_ec2_call (ec2, "CancelImportTask", &p, &doc, NULL, &e) < 0)
    kiln_log_error ("ec2: could not cancel the import task %s: %s", task_id, kiln_error_message (e));
  kiln_aws_params_release (&p);
  xmlFreeDoc (doc);
}

struct import_poll {
  struct kiln_aws_client *ec2;
  const char *task_id;
  char *snapshot_id;
};

static enum kiln_poll_answer
import_task_done (void *opaque, char **state, kiln_error **err)
{
  struct import_poll *ip = opaque;
  struct kiln_aws_params p = KILN_AWS_PARAMS_INIT;
  kiln_aws_params_add (&p, "ImportTaskId.1", ip->task_id);
  xmlDoc *doc = NULL;
  int r = kiln_aws_ec2_call (ip->ec2, "DescribeImportSnapshotTasks", &p, &doc, NULL, err);
  kiln_aws_params_release (&p);
  if (r < 0)
    return KILN_POLL_FAILED;
  xmlNode *d = kiln_aws_xml_find (kiln_aws_xml_root (doc), "importSnapshotTaskSet/item/snapshotTaskDetail");
  _cleanup_free_ char *status = d ? kiln_aws_xml_text (d, "status") : NULL;
  _cleanup_free_ char *message = d ? kiln_aws_xml_text (d, "statusMessage") : NULL;
  _cleanup_free_ char *snapshot = d ? kiln_aws_xml_text (d, "snapshotId") : NULL;
  xmlFreeDoc (doc);
  if (status == NULL)
    {
      kiln_error_set (err, KILN_ERR_NOT_FOUND, 0, "import task %s is not known to EC2", ip->task_id);
      return KILN_POLL_FAILED;
    }
  if (strcmp (status, "completed") == 0)
    {
      if (snapshot == NULL || *snapshot == '\0')
        {
          kiln_fail (err, "import task %s completed without a snapshot", ip->task_id);
          return KILN_POLL_FAILED;
        }
      ip->snapshot_id = kiln_steal_pointer (&snapshot);
      return KILN_POLL_DONE;
    }
  if (strcmp (status, "active") != 0)
    {
      kiln_fail (err, "import task %s ended %s%s%s", ip->task_id, status, message ? ": " : "", message ? message : "");
      return KILN_POLL_FAILED;
    }
  *state = kiln_xstrdup (message && *message ? message : status);
  return KILN_POLL_WAIT;
}

/* Waits for an ImportSnapshot task to end; its snapshot id on success. */
static int
wait_import_task (struct kiln_aws_client *ec2, const char *task_id, struct kiln_image_transfer *t,
                  char **snapshot_id, kiln_error **err)
{
  const struct kiln_poll poll = {.what = "import task", .id = task_id, .timeout_seconds = IMPORT_TIMEOUT_SECONDS,
                                 .first_ms = 250, .max_ms = 5000, .cancel = t->cancel};
  struct import_poll ip = {.ec2 = ec2, .task_id = task_id};
  if (kiln_poll_until (&poll, import_task_done, &ip, err) < 0)
    return -1;
  *snapshot_id = ip.snapshot_id;
  return 0;
}

/* EC2's name for a format VM import reads, or NULL. */
static const char *
import_format (const char *qemu_format)
{
  if (strcmp (qemu_format, "vmdk") == 0)
    return "VMDK";
  if (strcmp (qemu_format, "vpc") == 0)
    return "VHD";
  if (strcmp (qemu_format, "vhdx") == 0)
    return "VHDX";
  return NULL;
}

/* The disk into a new snapshot through S3: staged as an object (a
 * streamOptimized VMDK unless it already is a VMDK, VHD or VHDX: compact,
 * holes never sent), imported with ImportSnapshot, the task waited for, the
 * object removed whatever happened. */
static int
snapshot_by_s3 (const struct kiln_aws_config *cfg, const struct kiln_aws_client_options *copts,
                struct kiln_aws_client *ec2, const char *path, struct kiln_image_transfer *t, char **snapshot_id,
                kiln_error **err)
{
  if (t->bucket == NULL || *t->bucket == '\0')
    return kiln_fail_invalid (err, "importing through S3 needs a bucket to stage the disk in");
  if (t->parent)
    return kiln_fail_invalid (err, "an incremental import (a parent) works over the EBS direct APIs only");
  const char *format = import_format (t->format ? t->format : "raw");
  _cleanup_free_ char *converted = NULL;
  if (format == NULL)
    {
      converted = kiln_xasprintf ("%s/import.vmdk", t->scratch_dir ? t->scratch_dir : ".");
      kiln_log_info ("ec2: converting %s (%s) to a streamOptimized VMDK", path, t->format ? t->format : "raw");
      if (kiln_disk_convert (path, converted, "vmdk", true, t->cancel, err) < 0)
        {
          unlink (converted);
          return -1;
        }
      format = "VMDK";
    }
  const char *upload = converted ? converted : path;
  struct kiln_s3_options so = {.config = cfg, .region = kiln_aws_client_region (ec2),
                               .endpoint_url = copts ? copts->endpoint_url : NULL};
  struct kiln_s3_client *s3 = NULL;
  _cleanup_free_ char *key = NULL;
  char token[33];
  kiln_random_hex (token, 16);
  const char *base = strrchr (path, '/') ? strrchr (path, '/') + 1 : path;
  key = kiln_xasprintf ("kiln-import/%s/%s.%s", token, base, format);
  struct progress_relay pr = {.t = t};
  clock_gettime (CLOCK_MONOTONIC, &pr.t0);
  struct kiln_s3_upload_options uo = {.cancel = t->cancel, .progress = relay_upload_progress, .progress_opaque = &pr};
  struct stat st;
  int r = stat (upload, &st) == 0 ? 0 : kiln_fail_errno (err, errno, "stat '%s'", upload);
  if (r == 0)
    r = kiln_s3_client_new (&so, &s3, err);
  bool staged = false;
  if (r == 0)
    {
      r = kiln_s3_upload_file (s3, t->bucket, key, upload, &uo, err);
      staged = r == 0;
      t->bytes_read = t->bytes_sent = r == 0 ? (uint64_t) st.st_size : 0;
    }
  if (converted)
    unlink (converted);
  _cleanup_free_ char *task_id = NULL;
  if (r == 0 && cancelled (t))
    r = kiln_error_set (err, KILN_ERR_CANCELLED, 0, "interrupted");
  if (r == 0)
    {
      struct kiln_aws_params p = KILN_AWS_PARAMS_INIT;
      kiln_aws_params_add (&p, "Description", t->description ? t->description : t->name);
      kiln_aws_params_add (&p, "DiskContainer.Format", format);
      kiln_aws_params_add (&p, "DiskContainer.UserBucket.S3Bucket", t->bucket);
      kiln_aws_params_add (&p, "DiskContainer.UserBucket.S3Key", key);
      kiln_aws_params_add (&p, "ClientToken", token);
      xmlDoc *doc = NULL;
      r = kiln_aws_ec2_call (ec2, "ImportSnapshot", &p, &doc, NULL, err);
      kiln_aws_params_release (&p);
      task_id = r == 0 ? kiln_aws_xml_text (kiln_aws_xml_root (doc), "importTaskId") : NULL;
      xmlFreeDoc (doc);
      if (r == 0 && task_id == NULL)
        r = kiln_fail (err, "ImportSnapshot answered without a task id");
      if (r == 0)
        kiln_log_info ("ec2: importing s3://%s/%s as import task %s", t->bucket, key, task_id);
    }
  if (r == 0 && wait_import_task (ec2, task_id, t, snapshot_id, err) < 0)
    {
      r = -1;
      if ((*err)->code == KILN_ERR_CANCELLED || (*err)->code == KILN_ERR_TIMEOUT)
        cancel_import_task (ec2, task_id);
    }
  if (staged)
    {
      _cleanup_error_ kiln_error *e = NULL;
      if (kiln_s3_delete_object (s3, t->bucket, key, &e) < 0)
        kiln_log_error ("ec2: could not remove the staged disk: %s", kiln_error_message (e));
    }
  kiln_s3_client_free (s3);
  return r;
}

int
kiln_ec2_ami_import (const struct kiln_aws_config *cfg, const struct kiln_aws_client_options *copts,
                     struct kiln_aws_client *ec2, const char *path, struct kiln_image_transfer *t,
                     kiln_error **err)
{
  if (t->name == NULL || *t->name == '\0')
    return kiln_fail_invalid (err, "an imported image needs a name");
  bool by_s3 = t->method && strcmp (t->method, "s3") == 0;
  if (t->method && !by_s3 && strcmp (t->method, "ebs") != 0)
    return kiln_fail_invalid (err, "unknown import method '%s' (ebs or s3)", t->method);
  char *snapshot_id = NULL;
  int r = by_s3 ? snapshot_by_s3 (cfg, copts, ec2, path, t, &snapshot_id, err)
                : snapshot_by_ebs (cfg, copts, ec2, path, t, &snapshot_id, err);
  if (r == 0)
    r = register_image (ec2, snapshot_id, t, err);
  if (r == 0)
    r = kiln_ec2_image_wait (ec2, t->image_id, IMAGE_TIMEOUT_SECONDS, t->cancel, err);
  if (r == 0)
    r = finish_image (cfg, copts, ec2, t, err);
  if (r == 0 && cancelled (t))
    r = kiln_error_set (err, KILN_ERR_CANCELLED, 0, "interrupted");
  if (r < 0)
    {
      /* Nothing half-made stays: the AMI with its snapshot, or the snapshot. */
      _cleanup_error_ kiln_error *e = NULL;
      if (t->image_id && kiln_ec2_image_delete (ec2, t->image_id, &e) < 0)
        kiln_log_error ("ec2: could not delete the image %s of the failed import: %s", t->image_id,
                        kiln_error_message (e));
      else if (t->image_id == NULL && snapshot_id)
        delete_snapshot (ec2, snapshot_id);
      free (t->image_id);
      t->image_id = NULL;
      free (snapshot_id);
      return -1;
    }
  t->snapshot_id = snapshot_id;
  return 0;
}

int
kiln_ec2_ami_export (const struct kiln_aws_config *cfg, const struct kiln_aws_client_options *copts,
                     struct kiln_aws_client *ec2, const char *image_id, const char *raw_path,
                     struct kiln_image_transfer *t, kiln_error **err)
{
  _cleanup_free_ char *snapshot = NULL;
  if (root_snapshot (ec2, image_id, &snapshot, err) < 0)
    return kiln_error_prefix (err, "export %s", image_id);
  struct progress_relay pr = {.t = t};
  clock_gettime (CLOCK_MONOTONIC, &pr.t0);
  struct kiln_ebs_options o = {.config = cfg, .client = copts, .workers = t->workers, .cancel = t->cancel,
                               .progress = relay_progress, .progress_opaque = &pr};
  struct kiln_ebs_stats st;
  int r = kiln_ebs_download (&o, snapshot, raw_path, &st, err);
  t->bytes_read = st.bytes_read;
  t->bytes_sent = st.bytes_sent;
  if (r < 0)
    return kiln_error_prefix (err, "export %s", image_id);
  t->snapshot_id = kiln_steal_pointer (&snapshot);
  return 0;
}
