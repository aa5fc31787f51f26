/* ec2_images.c - waiting for, deleting and distributing AMIs (see
 * ec2_images.h).
 *
 * Distribution follows Image Builder: the image made in the build region is
 * the build region's target; every other region gets a CopyImage of it.  All
 * copies are requested before any is waited for, so EC2 makes them in
 * parallel.  Then each region's image (and its snapshots) gets kiln's tags
 * and the target's, and the target's launch permissions.  A failure anywhere
 * deletes the copies already made: a failed distribution leaves only the
 * source image, which the caller deletes with the failed build. */
#include "ec2_images.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cancel.h"
#include "cleanup.h"
#include "digest.h"
#include "log.h"
#include "process.h"
#include "xalloc.h"
#include "clock.h"

#define COPY_TIMEOUT_SECONDS 3600

/* One DescribeImages of image_id: its state, reason and name (each may be
 * NULL).  An id EC2 does not know yet is state NULL, not an error. */
static int
describe_image (struct kiln_aws_client *ec2, const char *image_id, char **state, char **reason, char **name,
                kiln_error **err)
{
  struct kiln_aws_params p = KILN_AWS_PARAMS_INIT;
  kiln_aws_params_add (&p, "ImageId.1", image_id);
  xmlDoc *doc = NULL;
  struct kiln_aws_error aws = {0};
  int r = kiln_aws_ec2_call (ec2, "DescribeImages", &p, &doc, &aws, err);
  kiln_aws_params_release (&p);
  bool not_yet = r < 0 && kiln_aws_error_is (&aws, "InvalidAMIID.NotFound");
  kiln_aws_error_release (&aws);
  *state = *reason = NULL;
  if (name)
    *name = NULL;
  if (r < 0 && !not_yet)
    return -1;
  if (not_yet)
    {
      kiln_error_freep (err);
      return 0;
    }
  xmlNode *item = kiln_aws_xml_find (kiln_aws_xml_root (doc), "imagesSet/item");
  if (item)
    {
      *state = kiln_aws_xml_text (item, "imageState");
      *reason = kiln_aws_xml_text (item, "stateReason/message");
      if (name)
        *name = kiln_aws_xml_text (item, "name");
    }
  xmlFreeDoc (doc);
  return 0;
}

/* What a poll of one resource asks about. */
struct id_poll {
  struct kiln_aws_client *ec2;
  const char *id;
};

static enum kiln_poll_answer
image_available (void *opaque, char **state, kiln_error **err)
{
  struct id_poll *ip = opaque;
  _cleanup_free_ char *reason = NULL;
  if (describe_image (ip->ec2, ip->id, state, &reason, NULL, err) < 0)
    return KILN_POLL_FAILED;
  const char *s = *state;
  if (s && strcmp (s, "available") == 0)
    return KILN_POLL_DONE;
  if (s && (strcmp (s, "failed") == 0 || strcmp (s, "invalid") == 0 || strcmp (s, "error") == 0
            || strcmp (s, "deregistered") == 0))
    {
      kiln_fail (err, "image %s is %s%s%s", ip->id, s, reason ? ": " : "", reason ? reason : "");
      return KILN_POLL_FAILED;
    }
  return KILN_POLL_WAIT;
}

int
kiln_ec2_image_wait (struct kiln_aws_client *ec2, const char *image_id, int timeout_seconds,
                     volatile sig_atomic_t *cancel, kiln_error **err)
{
  const struct kiln_poll poll = {.what = "image", .id = image_id, .timeout_seconds = timeout_seconds, .first_ms = 250,
                                 .max_ms = 10000, .cancel = cancel};
  struct id_poll ip = {ec2, image_id};
  return kiln_poll_until (&poll, image_available, &ip, err);
}

static enum kiln_poll_answer
snapshot_completed (void *opaque, char **state, kiln_error **err)
{
  struct id_poll *sp = opaque;
  struct kiln_aws_params p = KILN_AWS_PARAMS_INIT;
  kiln_aws_params_add (&p, "SnapshotId.1", sp->id);
  xmlDoc *doc = NULL;
  int r = kiln_aws_ec2_call (sp->ec2, "DescribeSnapshots", &p, &doc, NULL, err);
  kiln_aws_params_release (&p);
  if (r < 0)
    return KILN_POLL_FAILED;
  *state = kiln_aws_xml_text (kiln_aws_xml_root (doc), "snapshotSet/item/status");
  _cleanup_free_ char *message = kiln_aws_xml_text (kiln_aws_xml_root (doc), "snapshotSet/item/statusMessage");
  xmlFreeDoc (doc);
  if (*state && strcmp (*state, "completed") == 0)
    return KILN_POLL_DONE;
  if (*state && strcmp (*state, "error") == 0)
    {
      kiln_fail (err, "snapshot %s failed%s%s", sp->id, message ? ": " : "", message ? message : "");
      return KILN_POLL_FAILED;
    }
  return KILN_POLL_WAIT;
}

int
kiln_ec2_snapshot_wait (struct kiln_aws_client *ec2, const char *snapshot_id, int timeout_seconds,
                        volatile sig_atomic_t *cancel, kiln_error **err)
{
  const struct kiln_poll poll = {.what = "snapshot", .id = snapshot_id, .timeout_seconds = timeout_seconds,
                                 .first_ms = 100, .max_ms = 5000, .cancel = cancel};
  struct id_poll sp = {ec2, snapshot_id};
  return kiln_poll_until (&poll, snapshot_completed, &sp, err);
}

int
kiln_ec2_image_snapshots (struct kiln_aws_client *ec2, const char *image_id, char ***out, kiln_error **err)
{
  struct kiln_aws_params p = KILN_AWS_PARAMS_INIT;
  kiln_aws_params_add (&p, "ImageId.1", image_id);
  xmlDoc *doc = NULL;
  int r = kiln_aws_ec2_call (ec2, "DescribeImages", &p, &doc, NULL, err);
  kiln_aws_params_release (&p);
  if (r < 0)
    return -1;
  char **snapshots = kiln_xcalloc (1, sizeof *snapshots);
  xmlNode *mapping = kiln_aws_xml_find (kiln_aws_xml_root (doc), "imagesSet/item/blockDeviceMapping/item");
  for (; mapping; mapping = kiln_aws_xml_next (mapping))
    {
      _cleanup_free_ char *snap = kiln_aws_xml_text (mapping, "ebs/snapshotId");
      if (snap)
        kiln_strv_push (&snapshots, snap);
    }
  xmlFreeDoc (doc);
  *out = snapshots;
  return 0;
}

int
kiln_ec2_image_delete (struct kiln_aws_client *ec2, const char *image_id, kiln_error **err)
{
  _cleanup_strv_ char **snapshots = NULL;
  if (kiln_ec2_image_snapshots (ec2, image_id, &snapshots, err) < 0)
    return -1;
  struct kiln_aws_params p = KILN_AWS_PARAMS_INIT;
  kiln_aws_params_add (&p, "ImageId", image_id);
  xmlDoc *doc = NULL;
  int r = kiln_aws_ec2_call (ec2, "DeregisterImage", &p, &doc, NULL, err);
  kiln_aws_params_release (&p);
  xmlFreeDoc (doc);
  if (r < 0)
    return -1;
  for (size_t i = 0; snapshots[i]; i++)
    {
      p = (struct kiln_aws_params) KILN_AWS_PARAMS_INIT;
      kiln_aws_params_add (&p, "SnapshotId", snapshots[i]);
      doc = NULL;
      r = kiln_aws_ec2_call (ec2, "DeleteSnapshot", &p, &doc, NULL, err);
      kiln_aws_params_release (&p);
      xmlFreeDoc (doc);
      if (r < 0)
        return kiln_error_prefix (err, "image %s is deregistered but its snapshot %s", image_id, snapshots[i]);
    }
  kiln_log_info ("ec2: deregistered %s in %s and deleted its %zu snapshot(s)", image_id,
                 kiln_aws_client_region (ec2), kiln_strv_length (snapshots));
  return 0;
}

static size_t
strv_count (const char *const *v)
{
  size_t n = 0;
  while (v && v[n])
    n++;
  return n;
}

/* Tags (kiln's, then the target's) on the image and its snapshots. */
static int
tag_image (struct kiln_aws_client *ec2, struct kiln_image_distribution *t, const char *const *tags, kiln_error **err)
{
  size_t n_tags = strv_count (tags) / 2 + strv_count (t->tags) / 2;
  if (n_tags == 0)
    return 0;
  struct kiln_aws_tag *list = kiln_xcalloc (n_tags, sizeof *list);
  size_t k = 0;
  for (size_t i = 0; tags && tags[i] && tags[i + 1]; i += 2)
    list[k++] = (struct kiln_aws_tag){tags[i], tags[i + 1]};
  for (size_t i = 0; t->tags && t->tags[i] && t->tags[i + 1]; i += 2)
    list[k++] = (struct kiln_aws_tag){t->tags[i], t->tags[i + 1]};
  struct kiln_aws_params p = KILN_AWS_PARAMS_INIT;
  kiln_aws_params_add (&p, "ResourceId.1", t->image_id);
  for (size_t i = 0; t->snapshot_ids && t->snapshot_ids[i]; i++)
    {
      _cleanup_free_ char *name = NULL;
      name = kiln_xasprintf ("ResourceId.%zu", i + 2);
      kiln_aws_params_add (&p, name, t->snapshot_ids[i]);
    }
  kiln_aws_params_add_tags (&p, "Tag", list, k);
  xmlDoc *doc = NULL;
  int r = kiln_aws_ec2_call (ec2, "CreateTags", &p, &doc, NULL, err);
  kiln_aws_params_release (&p);
  xmlFreeDoc (doc);
  free (list);
  return r < 0 ? kiln_error_prefix (err, "tag %s", t->image_id) : 0;
}

static void
add_permissions (struct kiln_aws_params *p, int *n, const char *field, const char *const *values)
{
  for (size_t i = 0; values && values[i]; i++)
    {
      ++*n;
      _cleanup_free_ char *name = NULL;
      name = kiln_xasprintf ("LaunchPermission.Add.%d.%s", *n, field);
      kiln_aws_params_add (p, name, values[i]);
    }
}

static int
share_image (struct kiln_aws_client *ec2, const struct kiln_image_distribution *t, kiln_error **err)
{
  struct kiln_aws_params p = KILN_AWS_PARAMS_INIT;
  int n = 0;
  add_permissions (&p, &n, "UserId", t->launch_user_ids);
  add_permissions (&p, &n, "Group", t->launch_groups);
  add_permissions (&p, &n, "OrganizationArn", t->launch_organization_arns);
  add_permissions (&p, &n, "OrganizationalUnitArn", t->launch_organizational_unit_arns);
  if (n == 0)
    {
      kiln_aws_params_release (&p);
      return 0;
    }
  kiln_aws_params_add (&p, "ImageId", t->image_id);
  kiln_aws_params_add (&p, "Attribute", "launchPermission");
  xmlDoc *doc = NULL;
  int r = kiln_aws_ec2_call (ec2, "ModifyImageAttribute", &p, &doc, NULL, err);
  kiln_aws_params_release (&p);
  xmlFreeDoc (doc);
  return r < 0 ? kiln_error_prefix (err, "set the launch permissions of %s", t->image_id) : 0;
}

/* CopyImage with a client token derived from the source and the target
 * region, so a retried request never makes a second copy. */
static int
start_copy (struct kiln_aws_client *dst, const char *image_id, const char *src_region, const char *name,
            const char *description, char **out, kiln_error **err)
{
  _cleanup_free_ char *seed = NULL;
  seed = kiln_xasprintf ("%s/%s/%s", src_region, image_id, kiln_aws_client_region (dst));
  char token[KILN_SHA256_LEN * 2 + 1];
  kiln_sha256_hex (seed, strlen (seed), token);
  token[32] = '\0';
  struct kiln_aws_params p = KILN_AWS_PARAMS_INIT;
  kiln_aws_params_add (&p, "SourceImageId", image_id);
  kiln_aws_params_add (&p, "SourceRegion", src_region);
  kiln_aws_params_add (&p, "Name", name);
  if (description)
    kiln_aws_params_add (&p, "Description", description);
  kiln_aws_params_add (&p, "ClientToken", token);
  xmlDoc *doc = NULL;
  int r = kiln_aws_ec2_call (dst, "CopyImage", &p, &doc, NULL, err);
  kiln_aws_params_release (&p);
  if (r < 0)
    return -1;
  *out = kiln_aws_xml_text (kiln_aws_xml_root (doc), "imageId");
  xmlFreeDoc (doc);
  if (*out == NULL)
    return kiln_fail (err, "CopyImage answered without an image id");
  return 0;
}

int
kiln_ec2_image_distribute (const struct kiln_aws_config *cfg, const char *endpoint_url, struct kiln_aws_client *ec2,
                           const char *image_id, const char *const *tags, struct kiln_image_distribution *d, size_t n,
                           volatile sig_atomic_t *cancel, kiln_error **err)
{
  const char *src_region = kiln_aws_client_region (ec2);
  struct kiln_aws_client **clients = kiln_xcalloc (n ? n : 1, sizeof *clients);
  double *started = kiln_xcalloc (n ? n : 1, sizeof *started);
  _cleanup_free_ char *src_name = NULL;
  int r = 0;

  /* Every copy is asked for before any is waited for. */
  for (size_t i = 0; i < n && r == 0; i++)
    {
      struct kiln_image_distribution *t = &d[i];
      started[i] = kiln_monotonic_seconds ();
      if (t->region == NULL || strcmp (t->region, src_region) == 0)
        {
          t->image_id = kiln_xstrdup (image_id);
          continue;
        }
      struct kiln_aws_client_options opts = {.endpoint_url = endpoint_url, .region = t->region};
      if (kiln_aws_client_new (cfg, "ec2", &opts, &clients[i], err) < 0)
        {
          r = kiln_error_prefix (err, "region %s", t->region);
          break;
        }
      if (t->name == NULL && src_name == NULL)
        {
          _cleanup_free_ char *state = NULL, *reason = NULL;
          if (describe_image (ec2, image_id, &state, &reason, &src_name, err) < 0 || src_name == NULL)
            {
              r = src_name ? -1 : kiln_fail (err, "image %s has no name to give its copies", image_id);
              break;
            }
        }
      if (start_copy (clients[i], image_id, src_region, t->name ? t->name : src_name, t->description, &t->image_id,
                      err)
          < 0)
        {
          r = kiln_error_prefix (err, "copy %s to %s", image_id, t->region);
          break;
        }
      kiln_log_info ("ec2: copying %s (%s) to %s as %s", image_id, src_region, t->region, t->image_id);
    }

  for (size_t i = 0; i < n && r == 0; i++)
    {
      struct kiln_image_distribution *t = &d[i];
      struct kiln_aws_client *c = clients[i] ? clients[i] : ec2;
      if (clients[i] && kiln_ec2_image_wait (c, t->image_id, COPY_TIMEOUT_SECONDS, cancel, err) < 0)
        r = -1;
      else if (kiln_ec2_image_snapshots (c, t->image_id, &t->snapshot_ids, err) < 0 || tag_image (c, t, tags, err) < 0
               || share_image (c, t, err) < 0)
        r = -1;
      if (r < 0)
        kiln_error_prefix (err, "region %s", kiln_aws_client_region (c));
      t->seconds = kiln_monotonic_seconds () - started[i];
    }

  if (r < 0)
    {
      /* Leave only the source image, which the failed build deletes. */
      for (size_t i = 0; i < n; i++)
        {
          struct kiln_image_distribution *t = &d[i];
          if (clients[i] && t->image_id)
            {
              _cleanup_error_ kiln_error *e = NULL;
              if (kiln_ec2_image_delete (clients[i], t->image_id, &e) < 0)
                kiln_log_error ("ec2: could not delete the copy %s in %s: %s", t->image_id, t->region,
                                kiln_error_message (e));
            }
          kiln_image_distribution_release (t);
        }
    }
  for (size_t i = 0; i < n; i++)
    kiln_aws_client_free (clients[i]);
  free (clients);
  free (started);
  return r;
}
