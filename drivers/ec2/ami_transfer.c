/* ami_transfer.c - raw disks into AMIs and back (see ami_transfer.h). */
#include "ami_transfer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cleanup.h"
#include "ebs_direct.h"
#include "ec2_images.h"
#include "log.h"
#include "xalloc.h"

#define SNAPSHOT_TIMEOUT_SECONDS 3600
#define IMAGE_TIMEOUT_SECONDS 3600

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
  return t->cancel && *t->cancel;
}

static void
pause_ms (const struct kiln_image_transfer *t, int ms)
{
  while (ms > 0 && !cancelled (t))
    {
      int step = ms > 100 ? 100 : ms;
      struct timespec ts = {0, (long) step * 1000000L};
      nanosleep (&ts, NULL);
      ms -= step;
    }
}

/* Waits until EC2 calls the snapshot completed. */
static int
wait_snapshot (struct kiln_aws_client *ec2, const char *snapshot_id, const struct kiln_image_transfer *t,
               kiln_error **err)
{
  time_t deadline = time (NULL) + SNAPSHOT_TIMEOUT_SECONDS;
  int pause = 500;
  for (;;)
    {
      struct kiln_aws_params p = KILN_AWS_PARAMS_INIT;
      kiln_aws_params_add (&p, "SnapshotId.1", snapshot_id);
      xmlDoc *doc = NULL;
      int r = kiln_aws_ec2_call (ec2, "DescribeSnapshots", &p, &doc, NULL, err);
      kiln_aws_params_release (&p);
      if (r < 0)
        return kiln_error_prefix (err, "wait for snapshot %s", snapshot_id);
      _cleanup_free_ char *state = kiln_aws_xml_text (kiln_aws_xml_root (doc), "snapshotSet/item/status");
      _cleanup_free_ char *message = kiln_aws_xml_text (kiln_aws_xml_root (doc), "snapshotSet/item/statusMessage");
      xmlFreeDoc (doc);
      if (state && strcmp (state, "completed") == 0)
        return 0;
      if (state && strcmp (state, "error") == 0)
        return kiln_fail (err, "snapshot %s failed%s%s", snapshot_id, message ? ": " : "", message ? message : "");
      if (cancelled (t))
        return kiln_error_set (err, KILN_ERR_CANCELLED, 0, "waiting for snapshot %s: interrupted", snapshot_id);
      if (time (NULL) >= deadline)
        return kiln_error_set (err, KILN_ERR_TIMEOUT, 0, "snapshot %s is still %s after %d s", snapshot_id,
                               state ? state : "unknown", SNAPSHOT_TIMEOUT_SECONDS);
      pause_ms (t, pause);
      pause = pause < 5000 ? pause * 2 : 5000;
    }
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

int
kiln_ec2_ami_import (const struct kiln_aws_config *cfg, const struct kiln_aws_client_options *copts,
                     struct kiln_aws_client *ec2, const char *raw_path, struct kiln_image_transfer *t,
                     kiln_error **err)
{
  if (t->name == NULL || *t->name == '\0')
    return kiln_fail_invalid (err, "an imported image needs a name");
  struct progress_relay pr = {.t = t};
  clock_gettime (CLOCK_MONOTONIC, &pr.t0);
  struct kiln_ebs_options o = {.config = cfg, .client = copts, .workers = t->workers, .cancel = t->cancel,
                               .progress = relay_progress, .progress_opaque = &pr};
  struct kiln_ebs_stats st;
  char *snapshot_id = NULL;
  int r = kiln_ebs_upload (&o, raw_path, t->description ? t->description : t->name,
                           (const char *const[]){"kiln:created-by", "kiln", NULL}, &snapshot_id, &st, err);
  t->bytes_read = st.bytes_read;
  t->bytes_sent = st.bytes_sent;
  t->blocks_skipped = st.zero_blocks;
  if (r == 0)
    r = wait_snapshot (ec2, snapshot_id, t, err);
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
