/* ec2_images.c - AMIs: CreateImage, RegisterImage, DescribeImages,
 * DeregisterImage, CopyImage, the image attribute calls, and the two image
 * helpers the rest of the emulator uses (ec2.h): emu_image_lookup for
 * RunInstances and emu_image_import for `kiln-emulator import-image`.
 *
 * An image is one row of `images` whose root volume is a snapshot
 * (`root_snapshot`); every image has exactly one volume.  Images belong to a
 * region: an id exists only in the region it was made or copied to.  Who may
 * see and launch an image: its owner, an account listed for it in
 * `launch_permissions`, or everybody when that table holds 'all' for it.
 * Deregistered images are invisible (their rows stay as a record, and their
 * snapshots stay, as AWS leaves them).
 *
 * Snapshot disk files: `snapshots.disk` holds the absolute path
 * emu_disk_path gives, DATA_DIR/disks/<snapshot-id>.<format>, as the VM host
 * writes it and emu_disks_collect compares it.  NULL means the snapshot has
 * no disk: a CreateImage snapshot until the VM host has captured it (it sets
 * the path then; a mock-mode capture leaves it NULL), and copies of those.
 * A file under disks/ gets its final name only inside the write transaction
 * that inserts the row naming it, so a collector that reads the rows and
 * scans the directory inside a write transaction never removes a file whose
 * row is about to appear; temporary names start with '.', which collectors
 * skip. */
#include "ec2.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cleanup.h"
#include "disk_image.h"
#include "fsutil.h"
#include "store.h"
#include "vmhost.h"
#include "xalloc.h"

#define GIB (1024ULL * 1024 * 1024)
#define IMAGE_NAME_MIN 3
#define IMAGE_NAME_MAX 128
#define IMAGE_DESCRIPTION_MAX 255
#define VOLUME_SIZE_MAX 16384    /* GiB, EBS's largest volume */
#define DEFAULT_ROOT_DEVICE "/dev/xvda"
#define DEFAULT_VOLUME_SIZE 8    /* GiB, for an image whose size is unknown */

/* Every image row is read with its grantees: the launch_permissions entries,
 * space-separated (account ids and 'all' hold no spaces). */
#define IMAGE_SELECT                                                                                    \
  "SELECT i.*, (SELECT group_concat (p.grantee, ' ') FROM launch_permissions p WHERE p.image_id = i.id) " \
  "AS grantees FROM images i "

/* ---- small checks ---- */

static bool
account_id_valid (const char *s)
{
  return strlen (s) == 12 && strspn (s, "0123456789") == 12;
}

/* AMI names: 3 to 128 characters, letters, digits and ( ) [ ] space . / - '
 * @ _ as AWS allows. */
static bool
image_name_valid (const char *name)
{
  size_t len = strlen (name);
  if (len < IMAGE_NAME_MIN || len > IMAGE_NAME_MAX)
    return false;
  for (const char *p = name; *p; p++)
    if (!isalnum ((unsigned char) *p) && strchr ("()[] ./-'@_", *p) == NULL)
      return false;
  return true;
}

static int
check_name (struct emu_call *c, const char *name)
{
  if (!image_name_valid (name))
    return emu_fail (c, 400, "InvalidAMIName.Malformed",
                     "AMI names must be between %d and %d characters long, and may contain letters, numbers, "
                     "spaces, '(', ')', '[', ']', '.', '/', '-', ''', '@' and '_' (got '%s')",
                     IMAGE_NAME_MIN, IMAGE_NAME_MAX, name);
  return 0;
}

static int
check_description (struct emu_call *c, const char *description)
{
  if (description && strlen (description) > IMAGE_DESCRIPTION_MAX)
    return emu_fail_param (c, "Value for parameter description is invalid. Length exceeds maximum of %d "
                           "characters", IMAGE_DESCRIPTION_MAX);
  return 0;
}

static int
fail_malformed_image (struct emu_call *c, const char *image_id)
{
  return emu_fail (c, 400, "InvalidAMIID.Malformed", "Invalid id: \"%s\" (expecting \"ami-...\")", image_id);
}

/* Whether grantee is among the row's launch permissions. */
static bool
image_granted_to (json_t *row, const char *grantee)
{
  const char *g = emu_row_str (row, "grantees");
  size_t n = strlen (grantee);
  while (*g)
    {
      size_t len = strcspn (g, " ");
      if (len == n && strncmp (g, grantee, n) == 0)
        return true;
      g += len;
      if (*g)
        g++;
    }
  return false;
}

static bool
image_public (json_t *row)
{
  return image_granted_to (row, "all");
}

/* Whether account may see and launch the image. */
static bool
image_usable_by (json_t *row, const char *account)
{
  return strcmp (emu_row_str (row, "account"), account) == 0 || image_granted_to (row, account)
         || image_public (row);
}

/* The file a snapshot's disk column names (relative paths, which this
 * emulator does not write, would be relative to the data directory). */
static char *
disk_abs_path (struct kiln_emu *emu, const char *disk)
{
  char *path;
  if (disk[0] == '/')
    return kiln_xstrdup (disk);
  path = kiln_xasprintf ("%s/%s", emu->data_dir, disk);
  return path;
}

/* ---- lookups ---- */

/* The live (not deregistered) image id in region, whoever owns it, with its
 * grantees; NULL when there is none (*err untouched) or on error. */
static json_t *
image_row (struct kiln_emu *emu, const char *image_id, const char *region, kiln_error **err)
{
  return emu_db_query_one (emu, err, IMAGE_SELECT "WHERE i.id = ? AND i.region = ? AND i.state <> 'deregistered'",
                           image_id, region);
}

/* The image in region if the caller may use it; else fails the call (the id
 * is malformed, unknown or not shared with the caller: EC2 does not tell the
 * last two apart) and returns NULL. */
static json_t *
image_lookup_in (struct emu_call *c, const char *image_id, const char *region)
{
  if (!emu_id_well_formed (image_id, "ami"))
    {
      fail_malformed_image (c, image_id);
      return NULL;
    }
  _cleanup_error_ kiln_error *err = NULL;
  _cleanup_json_ json_t *row = image_row (c->emu, image_id, region, &err);
  if (row == NULL && err)
    {
      emu_fail_internal (c, err);
      return NULL;
    }
  if (row == NULL || !image_usable_by (row, c->account))
    {
      emu_fail (c, 400, "InvalidAMIID.NotFound", "The image id '[%s]' does not exist", image_id);
      return NULL;
    }
  return kiln_steal_pointer (&row);
}

json_t *
emu_image_lookup (struct emu_call *c, const char *image_id)
{
  return image_lookup_in (c, image_id, c->region);
}

/* The image in the caller's region for a call only its owner may make: an
 * image the caller cannot see is NotFound, one shared with the caller but
 * owned by another account is AuthFailure, as EC2 answers. */
static json_t *
image_lookup_owned (struct emu_call *c, const char *image_id)
{
  _cleanup_json_ json_t *row = image_lookup_in (c, image_id, c->region);
  if (row == NULL)
    return NULL;
  if (strcmp (emu_row_str (row, "account"), c->account) != 0)
    {
      emu_fail (c, 403, "AuthFailure", "Not authorized for image:%s", image_id);
      return NULL;
    }
  return kiln_steal_pointer (&row);
}

/* The id of the account's live image named name in region (a row), NULL
 * when there is none (*err untouched) or on error.  Names are unique per
 * account and region among images that are not deregistered. */
static json_t *
image_named (struct kiln_emu *emu, const char *account, const char *region, const char *name, kiln_error **err)
{
  return emu_db_query_one (emu, err, "SELECT id FROM images WHERE account = ? AND region = ? AND name = ? AND "
                           "state <> 'deregistered'", account, region, name);
}

/* Fails with InvalidAMIName.Duplicate when the account already has a live
 * image named name in region.  Call inside the transaction that inserts. */
static int
check_name_free (struct emu_call *c, const char *account, const char *region, const char *name)
{
  _cleanup_error_ kiln_error *err = NULL;
  _cleanup_json_ json_t *dup = image_named (c->emu, account, region, name, &err);
  if (dup == NULL && err)
    return emu_fail_internal (c, err);
  if (dup)
    return emu_fail (c, 400, "InvalidAMIName.Duplicate", "AMI name %s is already in use by AMI %s", name,
                     emu_row_str (dup, "id"));
  return 0;
}

/* ---- inserting rows ---- */

int
emu_image_insert (struct kiln_emu *emu, const struct emu_image_spec *s, kiln_error **err)
{
  char seq[24], size[24], date[24];
  if (emu_db_next_seq (emu, seq, err) < 0)
    return -1;
  snprintf (size, sizeof size, "%lld", s->volume_size);
  snprintf (date, sizeof date, "%lld", (long long) s->creation_date);
  if (emu_db_exec (emu, err,
                   "INSERT INTO images (id, account, region, name, description, state, architecture, "
                   "root_device_name, root_snapshot, volume_size, creation_date, source_instance, source_image, "
                   "source_region, virtualization_type, ena_support, boot_mode, delete_on_termination, seq) "
                   "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                   s->id, s->account, s->region, s->name, s->description, s->state, s->architecture,
                   s->root_device_name, s->root_snapshot, s->volume_size > 0 ? size : NULL, date,
                   s->source_instance, s->source_image, s->source_region, s->virtualization_type,
                   s->ena_support ? "1" : "0", s->boot_mode, s->delete_on_termination ? "1" : "0", seq)
      < 0)
    return -1;
  return 0;
}

int
emu_snapshot_insert (struct kiln_emu *emu, const struct emu_snapshot_spec *s, kiln_error **err)
{
  char seq[24], size[24], start[24];
  if (emu_db_next_seq (emu, seq, err) < 0)
    return -1;
  snprintf (size, sizeof size, "%lld", s->volume_size);
  snprintf (start, sizeof start, "%lld", (long long) s->start_time);
  if (emu_db_exec (emu, err,
                   "INSERT INTO snapshots (id, account, region, volume_id, volume_size, state, progress, start_time, "
                   "description, disk, disk_format, seq) VALUES (?, ?, ?, NULL, ?, ?, ?, ?, ?, ?, ?, ?)",
                   s->id, s->account, s->region, size, s->state, s->progress, start, s->description, s->disk,
                   s->disk_format, seq)
      < 0)
    return -1;
  return 0;
}

/* Commits when r is 0, else rolls back; returns r, or -1 after failing the
 * call when the commit itself failed. */
static int
finish_transaction (struct emu_call *c, int r)
{
  _cleanup_error_ kiln_error *err = NULL;
  if (emu_db_end (c->emu, r == 0, &err) < 0)
    return emu_fail_internal (c, err);
  return r;
}

/* ---- block device mappings ---- */

/* What BlockDeviceMapping.N says about the root device.  Mappings of other
 * devices are checked and dropped: NoDevice and instance-store (VirtualName)
 * entries change nothing kiln-emulator models; an extra EBS volume cannot be
 * honoured (images have one volume) and fails the call. */
struct root_mapping {
  bool present;
  const char *snapshot_id;
  long long volume_size;            /* 0: absent */
  int delete_on_termination;        /* -1: absent */
};

static int
parse_mappings (struct emu_call *c, const char *root_device, struct root_mapping *root)
{
  memset (root, 0, sizeof *root);
  root->delete_on_termination = -1;
  size_t n = 0;
  _cleanup_free_ int *idx = emu_param_indices (c, "BlockDeviceMapping", &n);
  for (size_t i = 0; i < n; i++)
    {
      int k = idx[i];
      const char *device = emu_paramf (c, "BlockDeviceMapping.%d.DeviceName", k);
      if (device == NULL || *device == '\0')
        return emu_fail (c, 400, "MissingParameter", "The request must contain the parameter "
                         "BlockDeviceMapping.%d.DeviceName", k);
      const char *no_device = emu_paramf (c, "BlockDeviceMapping.%d.NoDevice", k);
      const char *virtual_name = emu_paramf (c, "BlockDeviceMapping.%d.VirtualName", k);
      const char *snapshot = emu_paramf (c, "BlockDeviceMapping.%d.Ebs.SnapshotId", k);
      const char *encrypted = emu_paramf (c, "BlockDeviceMapping.%d.Ebs.Encrypted", k);
      const char *kms = emu_paramf (c, "BlockDeviceMapping.%d.Ebs.KmsKeyId", k);
      bool has_ebs = false;
      char prefix[64];
      snprintf (prefix, sizeof prefix, "BlockDeviceMapping.%d.Ebs.", k);
      for (size_t j = 0; j < c->n_params && !has_ebs; j++)
        has_ebs = strncmp (c->params[j].name, prefix, strlen (prefix)) == 0;

      if ((encrypted && strcasecmp (encrypted, "true") == 0) || kms)
        return emu_fail_param (c, "kiln-emulator does not support encrypted volumes (BlockDeviceMapping.%d)", k);

      if (strcmp (device, root_device) != 0)
        {
          if (no_device || (virtual_name && !has_ebs))
            continue;
          return emu_fail_param (c, "kiln-emulator images have a single volume, on the root device (RootDeviceName "
                                 "%s); the mapping of %s (BlockDeviceMapping.%d) cannot be honoured", root_device,
                                 device, k);
        }
      if (root->present)
        return emu_fail (c, 400, "InvalidBlockDeviceMapping", "The device %s is mapped more than once", device);
      if (no_device || virtual_name)
        return emu_fail (c, 400, "InvalidBlockDeviceMapping", "The root device %s must be an EBS volume",
                         root_device);
      root->present = true;
      root->snapshot_id = snapshot;
      char name[96];
      snprintf (name, sizeof name, "BlockDeviceMapping.%d.Ebs.VolumeSize", k);
      if (emu_param_int (c, name, 0, 1, VOLUME_SIZE_MAX, &root->volume_size) < 0)
        return -1;
      snprintf (name, sizeof name, "BlockDeviceMapping.%d.Ebs.DeleteOnTermination", k);
      if (emu_param (c, name))
        {
          bool dot;
          if (emu_param_bool (c, name, true, &dot) < 0)
            return -1;
          root->delete_on_termination = dot;
        }
    }
  return 0;
}

/* ---- XML ---- */

static void
write_block_device_mapping (struct emu_call *c, json_t *img)
{
  emu_xml_start (c, "blockDeviceMapping");
  emu_xml_start (c, "item");
  emu_xml_text (c, "deviceName", emu_row_str (img, "root_device_name"));
  emu_xml_start (c, "ebs");
  emu_xml_bool (c, "deleteOnTermination", emu_row_int (img, "delete_on_termination") != 0);
  emu_xml_text (c, "snapshotId", emu_row_str_or_null (img, "root_snapshot"));
  if (emu_row_str_or_null (img, "volume_size"))
    emu_xml_textf (c, "volumeSize", "%lld", emu_row_int (img, "volume_size"));
  emu_xml_text (c, "volumeType", "gp2");
  emu_xml_bool (c, "encrypted", false);
  emu_xml_end (c);
  emu_xml_end (c);
  emu_xml_end (c);
}

/* imageLocation: what AWS shows for EBS-backed images, "<owner>/<name>",
 * unless the row records another. */
static char *
image_location (json_t *img)
{
  const char *stored = emu_row_str_or_null (img, "image_location");
  char *s;
  if (stored)
    return kiln_xstrdup (stored);
  s = kiln_xasprintf ("%s/%s", emu_row_str (img, "account"), emu_row_str (img, "name"));
  return s;
}

/* The fields of one <item>. */
static void
write_image (struct emu_call *c, json_t *img, json_t *tags)
{
  _cleanup_free_ char *location = image_location (img);
  emu_xml_text (c, "imageId", emu_row_str (img, "id"));
  emu_xml_text (c, "imageLocation", location);
  emu_xml_text (c, "imageState", emu_row_str (img, "state"));
  emu_xml_text (c, "imageOwnerId", emu_row_str (img, "account"));
  emu_xml_time (c, "creationDate", (time_t) emu_row_int (img, "creation_date"));
  emu_xml_bool (c, "isPublic", image_public (img));
  emu_xml_text (c, "architecture", emu_row_str (img, "architecture"));
  emu_xml_text (c, "imageType", "machine");
  emu_xml_text (c, "platformDetails", "Linux/UNIX");
  emu_xml_text (c, "usageOperation", "RunInstances");
  emu_xml_text (c, "name", emu_row_str (img, "name"));
  emu_xml_text (c, "description", emu_row_str_or_null (img, "description"));
  emu_xml_text (c, "rootDeviceType", "ebs");
  emu_xml_text (c, "rootDeviceName", emu_row_str (img, "root_device_name"));
  write_block_device_mapping (c, img);
  emu_xml_text (c, "virtualizationType", emu_row_str (img, "virtualization_type"));
  emu_xml_text (c, "hypervisor", "xen");
  emu_xml_bool (c, "enaSupport", emu_row_int (img, "ena_support") != 0);
  emu_xml_text (c, "bootMode", emu_row_str_or_null (img, "boot_mode"));
  emu_xml_text (c, "sourceInstanceId", emu_row_str_or_null (img, "source_instance"));
  emu_xml_text (c, "sourceImageId", emu_row_str_or_null (img, "source_image"));
  emu_xml_text (c, "sourceImageRegion", emu_row_str_or_null (img, "source_region"));
  if (emu_row_str_or_null (img, "state_reason_code"))
    {
      emu_xml_start (c, "stateReason");
      emu_xml_text (c, "code", emu_row_str (img, "state_reason_code"));
      emu_xml_text (c, "message", emu_row_str (img, "state_reason_message"));
      emu_xml_end (c);
    }
  emu_xml_tag_set (c, "tagSet", tags);
}

/* ---- CreateImage ---- */

/* The CreateImage rows, inside its transaction. */
static int
create_image_rows (struct emu_call *c, const struct emu_image_spec *img, const struct emu_snapshot_spec *snap)
{
  _cleanup_error_ kiln_error *err = NULL;
  if (check_name_free (c, c->account, c->region, img->name) < 0)
    return -1;
  if (emu_snapshot_insert (c->emu, snap, &err) < 0 || emu_image_insert (c->emu, img, &err) < 0)
    return emu_fail_internal (c, err);
  if (emu_tag_specs_apply (c, "image", img->id) < 0 || emu_tag_specs_apply (c, "snapshot", snap->id) < 0)
    return -1;
  return 0;
}

/* The image is pending until the VM host has copied the instance's disk into
 * the new snapshot's file; it then marks both available/completed (or
 * failed/error with a reason). */
static int
op_create_image (struct emu_call *c)
{
  const char *instance_id, *name;
  if (emu_param_required (c, "InstanceId", &instance_id) < 0 || emu_param_required (c, "Name", &name) < 0)
    return -1;
  const char *description = emu_param (c, "Description");
  bool no_reboot;
  static const char *const tag_types[] = {"image", "snapshot", NULL};
  if (check_name (c, name) < 0 || check_description (c, description) < 0
      || emu_param_bool (c, "NoReboot", false, &no_reboot) < 0 || emu_tag_specs_check (c, tag_types) < 0)
    return -1;
  const char *location = emu_param (c, "SnapshotLocation");
  if (location && strcmp (location, "regional") != 0)
    return emu_fail_param (c, "kiln-emulator keeps snapshots in the region (SnapshotLocation '%s')", location);
  if (!emu_id_well_formed (instance_id, "i"))
    return emu_fail (c, 400, "InvalidInstanceID.Malformed", "Invalid id: \"%s\" (expecting \"i-...\")",
                     instance_id);

  _cleanup_error_ kiln_error *err = NULL;
  _cleanup_json_ json_t *inst = emu_db_query_one (c->emu, &err, "SELECT * FROM instances WHERE id = ? AND "
                                                  "account = ? AND region = ?", instance_id, c->account, c->region);
  if (inst == NULL && err)
    return emu_fail_internal (c, err);
  if (inst == NULL)
    return emu_fail (c, 400, "InvalidInstanceID.NotFound", "The instance ID '%s' does not exist", instance_id);
  const char *state = emu_row_str (inst, "state");
  if (strcmp (state, "running") != 0 && strcmp (state, "stopped") != 0)
    return emu_fail (c, 400, "IncorrectInstanceState", "The instance '%s' is not in a state from which it can be "
                     "imaged (it is %s; it must be running or stopped).", instance_id, state);

  /* What the new image inherits from the one the instance was launched
   * from (which may be deregistered by now: it still describes the disk).
   * Its size is the source image's, else the booted snapshot's. */
  _cleanup_json_ json_t *source = emu_db_query_one (c->emu, &err, "SELECT * FROM images WHERE id = ?",
                                                    emu_row_str (inst, "image_id"));
  if (source == NULL && err)
    return emu_fail_internal (c, err);
  _cleanup_json_ json_t *booted = NULL;
  if (emu_row_str_or_null (inst, "disk_snapshot"))
    {
      booted = emu_db_query_one (c->emu, &err, "SELECT volume_size FROM snapshots WHERE id = ?",
                                 emu_row_str (inst, "disk_snapshot"));
      if (booted == NULL && err)
        return emu_fail_internal (c, err);
    }
  long long size = source ? emu_row_int (source, "volume_size") : 0;
  if (size <= 0 && booted)
    size = emu_row_int (booted, "volume_size");
  if (size <= 0)
    size = DEFAULT_VOLUME_SIZE;
  const char *root_device = source ? emu_row_str (source, "root_device_name") : DEFAULT_ROOT_DEVICE;

  struct root_mapping root;
  if (parse_mappings (c, root_device, &root) < 0)
    return -1;
  if (root.snapshot_id)
    return emu_fail_param (c, "CreateImage takes the root volume from the instance; BlockDeviceMapping may not "
                           "name a snapshot for %s", root_device);
  if (root.volume_size && root.volume_size < size)
    return emu_fail (c, 400, "InvalidBlockDeviceMapping", "Volume of size %lld is smaller than snapshot, expect "
                     "size >= %lld", root.volume_size, size);
  if (root.volume_size > size)
    return emu_fail_param (c, "kiln-emulator cannot grow the root volume while imaging (%lld GiB requested, the "
                           "volume has %lld GiB)", root.volume_size, size);

  _cleanup_free_ char *image_id = emu_new_id (c->emu, "ami");
  _cleanup_free_ char *snapshot_id = emu_new_id (c->emu, "snap");
  _cleanup_free_ char *snap_description = NULL;
  snap_description = kiln_xasprintf ("Created by CreateImage(%s) for %s", instance_id, image_id);
  /* No disk yet: the VM host names the file when the capture completes. */
  struct emu_snapshot_spec snap = {
    .id = snapshot_id, .account = c->account, .region = c->region, .state = "pending", .progress = "0%",
    .description = snap_description, .volume_size = size, .start_time = c->now,
  };
  struct emu_image_spec img = {
    .id = image_id, .account = c->account, .region = c->region, .name = name, .description = description,
    .state = "pending", .architecture = source ? emu_row_str (source, "architecture") : "x86_64",
    .root_device_name = root_device, .root_snapshot = snapshot_id, .volume_size = size, .creation_date = c->now,
    .source_instance = instance_id, .virtualization_type = "hvm",
    .boot_mode = source ? emu_row_str_or_null (source, "boot_mode") : NULL,
    .ena_support = source ? emu_row_int (source, "ena_support") != 0 : true,
    .delete_on_termination = root.delete_on_termination >= 0 ? root.delete_on_termination != 0
                             : source ? emu_row_int (source, "delete_on_termination") != 0 : true,
  };

  if (emu_db_begin (c->emu, &err) < 0)
    return emu_fail_internal (c, err);
  /* The instance may have changed state since it was read. */
  _cleanup_json_ json_t *again = emu_db_query_one (c->emu, &err, "SELECT state FROM instances WHERE id = ?",
                                                   instance_id);
  int r;
  if (again == NULL)
    r = err ? emu_fail_internal (c, err)
            : emu_fail (c, 400, "InvalidInstanceID.NotFound", "The instance ID '%s' does not exist", instance_id);
  else if (strcmp (emu_row_str (again, "state"), "running") != 0
           && strcmp (emu_row_str (again, "state"), "stopped") != 0)
    r = emu_fail (c, 400, "IncorrectInstanceState", "The instance '%s' is not in a state from which it can be "
                  "imaged (it is %s).", instance_id, emu_row_str (again, "state"));
  else
    r = create_image_rows (c, &img, &snap);
  if (finish_transaction (c, r) < 0)
    return -1;

  ec2_capture_queue (c->emu, instance_id, image_id, snapshot_id, no_reboot);
  emu_xml_text (c, "imageId", image_id);
  return 0;
}

/* ---- RegisterImage ---- */

static int
register_image_rows (struct emu_call *c, const struct emu_image_spec *img)
{
  _cleanup_error_ kiln_error *err = NULL;
  if (check_name_free (c, c->account, c->region, img->name) < 0)
    return -1;
  if (emu_image_insert (c->emu, img, &err) < 0)
    return emu_fail_internal (c, err);
  return emu_tag_specs_apply (c, "image", img->id);
}

/* Only EBS-backed registration from one of the caller's completed snapshots:
 * there are no S3 bundles to register from. */
static int
op_register_image (struct emu_call *c)
{
  const char *name;
  if (emu_param_required (c, "Name", &name) < 0)
    return -1;
  if (emu_param (c, "ImageLocation"))
    return emu_fail (c, 400, "UnsupportedOperation", "kiln-emulator cannot register instance-store images from an "
                     "S3 manifest (ImageLocation); register an EBS snapshot through BlockDeviceMapping instead");
  static const char *const unsupported[] = {"KernelId", "RamdiskId", "UefiData", "BillingProduct.1", NULL};
  for (size_t i = 0; unsupported[i]; i++)
    if (emu_param (c, unsupported[i]))
      return emu_fail (c, 400, "UnsupportedOperation", "kiln-emulator does not support %s in RegisterImage",
                       unsupported[i]);
  const char *description = emu_param (c, "Description");
  const char *arch = emu_param (c, "Architecture");
  const char *root_device = emu_param (c, "RootDeviceName");
  const char *virt = emu_param (c, "VirtualizationType");
  const char *boot_mode = emu_param (c, "BootMode");
  bool ena;
  static const char *const tag_types[] = {"image", NULL};
  if (check_name (c, name) < 0 || check_description (c, description) < 0
      || emu_param_bool (c, "EnaSupport", true, &ena) < 0 || emu_tag_specs_check (c, tag_types) < 0)
    return -1;
  if (arch == NULL)
    arch = "x86_64";
  /* arm64 images are recorded; qemu mode boots only x86_64 guests and says
   * so when one is launched. */
  if (strcmp (arch, "x86_64") != 0 && strcmp (arch, "arm64") != 0)
    return emu_fail_param (c, "Value (%s) for parameter architecture is invalid. kiln-emulator supports x86_64 "
                           "and arm64.", arch);
  if (root_device == NULL)
    root_device = DEFAULT_ROOT_DEVICE;
  if (strncmp (root_device, "/dev/", 5) != 0 || root_device[5] == '\0')
    return emu_fail_param (c, "Value (%s) for parameter rootDeviceName is invalid.", root_device);
  if (virt && strcmp (virt, "hvm") != 0)
    return emu_fail_param (c, "Value (%s) for parameter virtualizationType is invalid. kiln-emulator supports "
                           "hvm only.", virt);
  if (boot_mode && strcmp (boot_mode, "legacy-bios") != 0 && strcmp (boot_mode, "uefi") != 0
      && strcmp (boot_mode, "uefi-preferred") != 0)
    return emu_fail_param (c, "Value (%s) for parameter bootMode is invalid. Expected: 'legacy-bios', 'uefi' or "
                           "'uefi-preferred'.", boot_mode);

  struct root_mapping root;
  if (parse_mappings (c, root_device, &root) < 0)
    return -1;
  if (!root.present || root.snapshot_id == NULL)
    return emu_fail (c, 400, "InvalidBlockDeviceMapping", "The root device %s must be mapped to a snapshot "
                     "(BlockDeviceMapping.N.DeviceName %s with Ebs.SnapshotId)", root_device, root_device);
  if (!emu_id_well_formed (root.snapshot_id, "snap"))
    return emu_fail (c, 400, "InvalidSnapshotID.Malformed", "Invalid id: \"%s\" (expecting \"snap-...\")",
                     root.snapshot_id);
  _cleanup_error_ kiln_error *err = NULL;
  _cleanup_json_ json_t *snap = emu_db_query_one (c->emu, &err, "SELECT * FROM snapshots WHERE id = ? AND "
                                                  "account = ? AND region = ?", root.snapshot_id, c->account,
                                                  c->region);
  if (snap == NULL && err)
    return emu_fail_internal (c, err);
  if (snap == NULL)
    return emu_fail (c, 400, "InvalidSnapshot.NotFound", "The snapshot '%s' does not exist.", root.snapshot_id);
  if (strcmp (emu_row_str (snap, "state"), "completed") != 0)
    return emu_fail (c, 400, "IncorrectState", "Snapshot '%s' is in invalid state - %s", root.snapshot_id,
                     emu_row_str (snap, "state"));
  long long snap_size = emu_row_int (snap, "volume_size");
  if (root.volume_size && root.volume_size < snap_size)
    return emu_fail (c, 400, "InvalidBlockDeviceMapping", "Volume of size %lld is smaller than snapshot '%s', "
                     "expect size >= %lld", root.volume_size, root.snapshot_id, snap_size);

  _cleanup_free_ char *image_id = emu_new_id (c->emu, "ami");
  struct emu_image_spec img = {
    .id = image_id, .account = c->account, .region = c->region, .name = name, .description = description,
    .state = "available", .architecture = arch, .root_device_name = root_device,
    .root_snapshot = root.snapshot_id, .volume_size = root.volume_size > snap_size ? root.volume_size : snap_size,
    .creation_date = c->now, .virtualization_type = "hvm", .boot_mode = boot_mode, .ena_support = ena,
    .delete_on_termination = root.delete_on_termination != 0,
  };
  if (emu_db_begin (c->emu, &err) < 0)
    return emu_fail_internal (c, err);
  if (finish_transaction (c, register_image_rows (c, &img)) < 0)
    return -1;
  emu_xml_text (c, "imageId", image_id);
  return 0;
}

/* ---- DescribeImages ---- */

static const char *const image_filters[] = {
  "architecture", "block-device-mapping.delete-on-termination", "block-device-mapping.device-name",
  "block-device-mapping.encrypted", "block-device-mapping.snapshot-id", "block-device-mapping.volume-size",
  "block-device-mapping.volume-type", "boot-mode", "creation-date", "description", "ena-support", "hypervisor",
  "image-id", "image-type", "is-public", "kernel-id", "manifest-location", "name", "owner-alias", "owner-id",
  "platform", "platform-details", "product-code", "product-code.type", "ramdisk-id", "root-device-name",
  "root-device-type", "source-image-id", "source-image-region", "source-instance-id", "sriov-net-support",
  "state", "state-reason-code", "state-reason-message", "usage-operation", "virtualization-type", "tag:*",
  "tag-key", "tag-value", NULL,
};

/* The values the filters compare, by filter name.  Filters about things
 * these images never have (kernel-id, platform, product-code ...) find no
 * field and so match nothing, as on AWS for such images. */
static json_t *
image_filter_fields (struct emu_call *c, json_t *img)
{
  char date[32];
  emu_format_time ((time_t) emu_row_int (img, "creation_date"), date);
  _cleanup_free_ char *location = image_location (img);
  json_t *f = json_object ();
  json_object_set_new (f, "architecture", json_string (emu_row_str (img, "architecture")));
  json_object_set_new (f, "block-device-mapping.delete-on-termination",
                       json_string (emu_row_int (img, "delete_on_termination") ? "true" : "false"));
  json_object_set_new (f, "block-device-mapping.device-name", json_string (emu_row_str (img, "root_device_name")));
  json_object_set_new (f, "block-device-mapping.encrypted", json_string ("false"));
  if (emu_row_str_or_null (img, "root_snapshot"))
    json_object_set_new (f, "block-device-mapping.snapshot-id", json_string (emu_row_str (img, "root_snapshot")));
  if (emu_row_str_or_null (img, "volume_size"))
    json_object_set_new (f, "block-device-mapping.volume-size", json_string (emu_row_str (img, "volume_size")));
  json_object_set_new (f, "block-device-mapping.volume-type", json_string ("gp2"));
  if (emu_row_str_or_null (img, "boot_mode"))
    json_object_set_new (f, "boot-mode", json_string (emu_row_str (img, "boot_mode")));
  json_object_set_new (f, "creation-date", json_string (date));
  if (emu_row_str_or_null (img, "description"))
    json_object_set_new (f, "description", json_string (emu_row_str (img, "description")));
  json_object_set_new (f, "ena-support", json_string (emu_row_int (img, "ena_support") ? "true" : "false"));
  json_object_set_new (f, "hypervisor", json_string ("xen"));
  json_object_set_new (f, "image-id", json_string (emu_row_str (img, "id")));
  json_object_set_new (f, "image-type", json_string ("machine"));
  json_object_set_new (f, "is-public", json_string (image_public (img) ? "true" : "false"));
  json_object_set_new (f, "manifest-location", json_string (location));
  json_object_set_new (f, "name", json_string (emu_row_str (img, "name")));
  json_object_set_new (f, "owner-id", json_string (emu_row_str (img, "account")));
  json_object_set_new (f, "platform-details", json_string ("Linux/UNIX"));
  json_object_set_new (f, "root-device-name", json_string (emu_row_str (img, "root_device_name")));
  json_object_set_new (f, "root-device-type", json_string ("ebs"));
  static const char *const optional[][2] = {
    {"source-image-id", "source_image"},       {"source-image-region", "source_region"},
    {"source-instance-id", "source_instance"}, {"state-reason-code", "state_reason_code"},
    {"state-reason-message", "state_reason_message"},
  };
  for (size_t i = 0; i < sizeof optional / sizeof optional[0]; i++)
    if (emu_row_str_or_null (img, optional[i][1]))
      json_object_set_new (f, optional[i][0], json_string (emu_row_str (img, optional[i][1])));
  json_object_set_new (f, "state", json_string (emu_row_str (img, "state")));
  json_object_set_new (f, "usage-operation", json_string ("RunInstances"));
  json_object_set_new (f, "virtualization-type", json_string (emu_row_str (img, "virtualization_type")));
  return f;
}

/* Owner.N: "self", an account id, or one of AWS's aliases (amazon,
 * aws-marketplace, aws-backup-vault), which own nothing here.  Resolves
 * "self" to the caller's account in place (aliases become NULL). */
static int
resolve_owners (struct emu_call *c, const char **owners, size_t n)
{
  for (size_t i = 0; i < n; i++)
    {
      if (strcmp (owners[i], "self") == 0)
        owners[i] = c->account;
      else if (strcmp (owners[i], "amazon") == 0 || strcmp (owners[i], "aws-marketplace") == 0
               || strcmp (owners[i], "aws-backup-vault") == 0)
        owners[i] = NULL;
      else if (!account_id_valid (owners[i]))
        return emu_fail (c, 400, "InvalidUserID.Malformed", "Invalid user id: \"%s\"", owners[i]);
    }
  return 0;
}

/* ExecutableBy.N: whether the named account may launch the image ("self":
 * the caller; an account id: that account, by ownership, a grant or being
 * public; "all": public images only). */
static bool
executable_by (json_t *img, const char *user, const char *caller)
{
  const char *who = strcmp (user, "self") == 0 ? caller : user;
  return strcmp (who, "all") == 0 ? image_public (img) : image_usable_by (img, who);
}

/* IncludeDeprecated and IncludeDisabled are read (a bad value fails) and
 * change nothing: no image here is deprecated or disabled. */
static int
read_image_options (struct emu_call *c, struct emu_describe_call *d)
{
  bool ignored;
  if (emu_param_bool (c, "IncludeDeprecated", false, &ignored) < 0
      || emu_param_bool (c, "IncludeDisabled", false, &ignored) < 0)
    return -1;
  return 0;
}

/* Owner.N (resolved: "self" as the caller, aliases as null) and
 * ExecutableBy.N, into d->options "owners" and "users" when given. */
static int
check_image_owners (struct emu_call *c, struct emu_describe_call *d)
{
  size_t n_owners = 0, n_users = 0;
  _cleanup_free_ const char **owners = emu_param_list (c, "Owner", &n_owners);
  _cleanup_free_ const char **users = emu_param_list (c, "ExecutableBy", &n_users);
  if (resolve_owners (c, owners, n_owners) < 0)
    return -1;
  for (size_t i = 0; i < n_users; i++)
    if (strcmp (users[i], "self") != 0 && strcmp (users[i], "all") != 0 && !account_id_valid (users[i]))
      return emu_fail (c, 400, "InvalidUserID.Malformed", "Invalid user id: \"%s\"", users[i]);
  if (n_owners > 0)
    {
      json_t *list = json_array ();
      for (size_t i = 0; i < n_owners; i++)
        json_array_append_new (list, owners[i] ? json_string (owners[i]) : json_null ());
      json_object_set_new (d->options, "owners", list);
    }
  if (n_users > 0)
    {
      json_t *list = json_array ();
      for (size_t i = 0; i < n_users; i++)
        json_array_append_new (list, json_string (users[i]));
      json_object_set_new (d->options, "users", list);
    }
  return 0;
}

static bool
keep_image (struct emu_call *c, struct emu_describe_call *d, json_t *img)
{
  json_t *owners = json_object_get (d->options, "owners");
  json_t *users = json_object_get (d->options, "users");
  size_t i;
  json_t *v;
  bool owner_ok = owners == NULL;
  json_array_foreach (owners, i, v)
    owner_ok = owner_ok || (json_is_string (v) && strcmp (json_string_value (v), emu_row_str (img, "account")) == 0);
  if (!owner_ok)
    return false;
  if (users == NULL)
    return true;
  json_array_foreach (users, i, v)
    if (executable_by (img, json_string_value (v), c->account))
      return true;
  return false;
}

/* Images the caller can see (its own, shared with it, public); ids and
 * MaxResults do not go together.  Tags are the caller's own: an account
 * does not see the tags the owner of a shared image set, as on AWS. */
static const struct emu_describe_kind images_kind = {
  .ids = {{
    .param = "ImageId", .column = "id", .prefix = "ami",
    .malformed = {"InvalidAMIID.Malformed", "Invalid id: \"%s\" (expecting \"ami-...\")", NULL, EMU_REPORT_FIRST},
    .not_found = {"InvalidAMIID.NotFound", "The image id '[%s]' does not exist", NULL, EMU_REPORT_EACH_ONCE},
  }},
  .ids_exclude_paging = "imageIdsSet",
  .filter_names = image_filters, .fields = image_filter_fields,
  .query = IMAGE_SELECT "WHERE i.region = ?2 AND i.state <> 'deregistered' AND (i.account = ?1 OR EXISTS "
           "(SELECT 1 FROM launch_permissions p WHERE p.image_id = i.id AND p.grantee IN (?1, 'all'))) "
           "ORDER BY i.seq",
  .read = read_image_options, .check = check_image_owners, .keep = keep_image,
  .page_min = 6, .set = "imagesSet", .write = write_image,
};

EMU_DESCRIBE_HANDLER (op_describe_images, images_kind)

/* ---- DeregisterImage ---- */

struct deregister_result {
  const char *snapshot_id;       /* NULL: no snapshot deletion asked for */
  const char *code;              /* success | skipped */
};

/* Inside the transaction: the image becomes deregistered, its grants and
 * tags go; with DeleteAssociatedSnapshots its snapshot goes too unless
 * another live image uses it (then "skipped", as AWS reports). */
static int
deregister_rows (struct emu_call *c, json_t *img, bool delete_snapshots, struct deregister_result *res)
{
  _cleanup_error_ kiln_error *err = NULL;
  const char *id = emu_row_str (img, "id");
  if (emu_db_exec (c->emu, &err, "UPDATE images SET state = 'deregistered' WHERE id = ?", id) < 0
      || emu_db_exec (c->emu, &err, "DELETE FROM launch_permissions WHERE image_id = ?", id) < 0
      || emu_db_exec (c->emu, &err, "DELETE FROM tags WHERE resource_id = ?", id) < 0)
    return emu_fail_internal (c, err);
  const char *snap = emu_row_str_or_null (img, "root_snapshot");
  if (!delete_snapshots || snap == NULL)
    return 0;
  res->snapshot_id = snap;
  _cleanup_json_ json_t *users
      = emu_db_query_one (c->emu, &err, "SELECT id FROM images WHERE root_snapshot = ? AND region = ? AND "
                          "state <> 'deregistered'", snap, c->region);
  if (users == NULL && err)
    return emu_fail_internal (c, err);
  int n = users ? 0 : emu_db_exec (c->emu, &err, "DELETE FROM snapshots WHERE id = ? AND account = ? AND "
                                   "region = ?", snap, c->account, c->region);
  if (n < 0)
    return emu_fail_internal (c, err);
  if (n > 0 && emu_db_exec (c->emu, &err, "DELETE FROM tags WHERE resource_id = ?", snap) < 0)
    return emu_fail_internal (c, err);
  res->code = n > 0 ? "success" : "skipped";
  return 0;
}

static int
op_deregister_image (struct emu_call *c)
{
  const char *image_id;
  bool delete_snapshots;
  if (emu_param_required (c, "ImageId", &image_id) < 0
      || emu_param_bool (c, "DeleteAssociatedSnapshots", false, &delete_snapshots) < 0)
    return -1;
  _cleanup_json_ json_t *img = image_lookup_owned (c, image_id);
  if (img == NULL)
    return -1;
  _cleanup_error_ kiln_error *err = NULL;
  struct deregister_result res = {0};
  if (emu_db_begin (c->emu, &err) < 0)
    return emu_fail_internal (c, err);
  if (finish_transaction (c, deregister_rows (c, img, delete_snapshots, &res)) < 0)
    return -1;
  if (res.code && strcmp (res.code, "success") == 0)
    emu_disks_collect (c->emu);

  emu_xml_bool (c, "return", true);
  if (res.snapshot_id)
    {
      emu_xml_start (c, "deleteSnapshotResultSet");
      emu_xml_start (c, "item");
      emu_xml_text (c, "snapshotId", res.snapshot_id);
      emu_xml_text (c, "returnCode", res.code);
      emu_xml_end (c);
      emu_xml_end (c);
    }
  return 0;
}

/* ---- CopyImage ---- */

/* Makes dst, which must not exist, a file holding src's bytes: a hard link,
 * since completed snapshot disks are never written again, or a copy where the
 * file system refuses the link. */
static int
link_or_copy (const char *src, const char *dst, kiln_error **err)
{
  if (link (src, dst) == 0)
    return 0;
  if (errno != EXDEV && errno != EPERM && errno != EMLINK && errno != EOPNOTSUPP)
    return kiln_fail_errno (err, errno, "link '%s' to '%s'", src, dst);

  _cleanup_close_ int in = open (src, O_RDONLY | O_CLOEXEC);
  if (in < 0)
    return kiln_fail_errno (err, errno, "open '%s'", src);
  /* A hidden name next to dst while the bytes arrive: collectors skip it. */
  const char *slash = strrchr (dst, '/');
  _cleanup_unlink_ char *tmp = NULL;
  tmp = kiln_xasprintf ("%.*s.%s.tmp-XXXXXX", slash ? (int) (slash - dst + 1) : 0, dst, slash ? slash + 1 : dst);
  _cleanup_close_ int out = mkostemp (tmp, O_CLOEXEC);
  if (out < 0)
    {
      int e = errno;
      free (kiln_steal_pointer (&tmp));
      return kiln_fail_errno (err, e, "create a file next to '%s'", dst);
    }
  fchmod (out, 0644);
  size_t cap = 1 << 20;
  _cleanup_free_ char *buf = kiln_xcalloc (1, cap);
  for (;;)
    {
      ssize_t n = read (in, buf, cap);
      if (n < 0 && errno == EINTR)
        continue;
      if (n < 0)
        return kiln_fail_errno (err, errno, "read '%s'", src);
      if (n == 0)
        break;
      if (kiln_write_all (out, buf, (size_t) n) < 0)
        return kiln_fail_errno (err, errno, "write '%s'", tmp);
    }
  if (fsync (out) < 0)
    return kiln_fail_errno (err, errno, "fsync '%s'", tmp);
  if (rename (tmp, dst) < 0)
    return kiln_fail_errno (err, errno, "rename '%s' to '%s'", tmp, dst);
  free (kiln_steal_pointer (&tmp));
  return 0;
}

/* Inside the transaction: the rows, the tags, then the disk file under its
 * final name (removed again by the caller when the commit fails). */
static int
copy_image_rows (struct emu_call *c, const struct emu_image_spec *img, const struct emu_snapshot_spec *snap,
                 json_t *source_tags, const char *src_disk, const char *dst_disk)
{
  _cleanup_error_ kiln_error *err = NULL;
  if (check_name_free (c, c->account, c->region, img->name) < 0)
    return -1;
  if ((snap && emu_snapshot_insert (c->emu, snap, &err) < 0) || emu_image_insert (c->emu, img, &err) < 0)
    return emu_fail_internal (c, err);
  const char *key;
  json_t *value;
  json_object_foreach (source_tags, key, value)
    if (emu_tag_set (c, img->id, "image", key, json_string_value (value)) < 0)
      return -1;
  if (emu_tag_specs_apply (c, "image", img->id) < 0 || (snap && emu_tag_specs_apply (c, "snapshot", snap->id) < 0))
    return -1;
  if (src_disk)
    {
      _cleanup_free_ char *dir = NULL;
      dir = kiln_xasprintf ("%s/disks", c->emu->data_dir);
      if (kiln_mkdir_p (dir, 0755, &err) < 0 || link_or_copy (src_disk, dst_disk, &err) < 0)
        return emu_fail_internal (c, err);
    }
  return 0;
}

/* The copy is made at once: its snapshot's disk is a hard link to the
 * source's completed file, so the new image is available when the call
 * returns (the ImageAvailable waiter accepts that on its first poll).
 * ClientToken is accepted but not remembered: a retried CopyImage makes a
 * second copy (or fails on the duplicate name). */
static int
op_copy_image (struct emu_call *c)
{
  const char *source_id, *source_region, *name;
  if (emu_param_required (c, "SourceImageId", &source_id) < 0
      || emu_param_required (c, "SourceRegion", &source_region) < 0 || emu_param_required (c, "Name", &name) < 0)
    return -1;
  const char *description = emu_param (c, "Description");
  bool encrypted, copy_tags;
  static const char *const tag_types[] = {"image", "snapshot", NULL};
  if (check_name (c, name) < 0 || check_description (c, description) < 0
      || emu_param_bool (c, "Encrypted", false, &encrypted) < 0
      || emu_param_bool (c, "CopyImageTags", false, &copy_tags) < 0 || emu_tag_specs_check (c, tag_types) < 0)
    return -1;
  if (encrypted || emu_param (c, "KmsKeyId"))
    return emu_fail (c, 400, "UnsupportedOperation", "kiln-emulator does not support encrypted image copies "
                     "(Encrypted, KmsKeyId)");
  if (emu_param (c, "DestinationOutpostArn"))
    return emu_fail (c, 400, "UnsupportedOperation", "kiln-emulator has no Outposts (DestinationOutpostArn)");
  const char *token = emu_param (c, "ClientToken");
  if (token && strlen (token) > 128)
    return emu_fail_param (c, "Value for parameter clientToken is invalid. Length exceeds maximum of 128 "
                           "characters");
  if (!emu_region_known (source_region))
    return emu_fail_param (c, "Invalid value '%s' for SourceRegion: not a region kiln-emulator serves",
                           source_region);

  _cleanup_json_ json_t *src = image_lookup_in (c, source_id, source_region);
  if (src == NULL)
    return -1;
  if (strcmp (emu_row_str (src, "state"), "available") != 0)
    return emu_fail (c, 400, "InvalidAMIID.Unavailable", "Image %s is not available (it is %s)", source_id,
                     emu_row_str (src, "state"));

  _cleanup_error_ kiln_error *err = NULL;
  _cleanup_json_ json_t *src_snap = NULL;
  if (emu_row_str_or_null (src, "root_snapshot"))
    {
      src_snap = emu_db_query_one (c->emu, &err, "SELECT * FROM snapshots WHERE id = ?",
                                   emu_row_str (src, "root_snapshot"));
      if (src_snap == NULL && err)
        return emu_fail_internal (c, err);
    }
  /* Tags are copied only from an image of the caller's own: the tags on a
   * shared image are its owner's. */
  _cleanup_json_ json_t *source_tags = json_object ();
  if (copy_tags && strcmp (emu_row_str (src, "account"), c->account) == 0)
    {
      _cleanup_json_ json_t *rows = emu_db_query (c->emu, &err, "SELECT key, value FROM tags WHERE resource_id = ? "
                                                  "AND account = ? AND region = ?", source_id, c->account,
                                                  source_region);
      if (rows == NULL)
        return emu_fail_internal (c, err);
      size_t i;
      json_t *row;
      json_array_foreach (rows, i, row)
        json_object_set_new (source_tags, emu_row_str (row, "key"), json_string (emu_row_str (row, "value")));
    }

  _cleanup_free_ char *image_id = emu_new_id (c->emu, "ami");
  _cleanup_free_ char *snapshot_id = src_snap ? emu_new_id (c->emu, "snap") : NULL;
  const char *format = src_snap && emu_row_str_or_null (src_snap, "disk_format") ? emu_row_str (src_snap, "disk_format")
                                                                                 : "qcow2";
  bool has_disk = src_snap && emu_row_str_or_null (src_snap, "disk")
                  && strcmp (emu_row_str (src_snap, "state"), "completed") == 0;
  _cleanup_free_ char *src_disk = has_disk ? disk_abs_path (c->emu, emu_row_str (src_snap, "disk")) : NULL;
  _cleanup_free_ char *dst_disk = has_disk ? emu_disk_path (c->emu, snapshot_id, format) : NULL;
  char created[32];
  emu_format_time (c->now, created);
  _cleanup_free_ char *snap_description
      = src_snap ? kiln_xasprintf ("Copied for DestinationAmi %s from SourceAmi %s for SourceSnapshot %s. Task "
                                   "created on %s.", image_id, source_id, emu_row_str (src_snap, "id"), created)
                 : NULL;
  struct emu_snapshot_spec snap = {
    .id = snapshot_id, .account = c->account, .region = c->region, .state = "completed", .progress = "100%",
    .description = snap_description, .disk = dst_disk, .disk_format = has_disk ? format : NULL,
    .volume_size = src_snap ? emu_row_int (src_snap, "volume_size") : 0, .start_time = c->now,
  };
  struct emu_image_spec img = {
    .id = image_id, .account = c->account, .region = c->region, .name = name,
    .description = description ? description : emu_row_str_or_null (src, "description"), .state = "available",
    .architecture = emu_row_str (src, "architecture"), .root_device_name = emu_row_str (src, "root_device_name"),
    .root_snapshot = snapshot_id, .volume_size = emu_row_int (src, "volume_size"), .creation_date = c->now,
    .source_image = source_id, .source_region = source_region,
    .virtualization_type = emu_row_str (src, "virtualization_type"),
    .boot_mode = emu_row_str_or_null (src, "boot_mode"), .ena_support = emu_row_int (src, "ena_support") != 0,
    .delete_on_termination = emu_row_int (src, "delete_on_termination") != 0,
  };

  if (emu_db_begin (c->emu, &err) < 0)
    return emu_fail_internal (c, err);
  int r = copy_image_rows (c, &img, src_snap ? &snap : NULL, source_tags, src_disk, dst_disk);
  if (finish_transaction (c, r) < 0)
    {
      /* Rolled back: the file (if made) has no row. */
      if (r == 0 && dst_disk)
        unlink (dst_disk);
      return -1;
    }
  emu_xml_text (c, "imageId", image_id);
  return 0;
}

/* ---- image attributes ---- */

/* Adds the grantee to add (or remove) after checking it: a 12-digit account
 * id (any: AWS accepts accounts it cannot vouch for) or the group "all". */
static int
collect_grantee (struct emu_call *c, json_t *into, const char *user, const char *group)
{
  if (user)
    {
      if (!account_id_valid (user))
        return emu_fail_param (c, "Value (%s) for parameter userId is invalid. Expected a 12-digit account id.",
                               user);
      json_array_append_new (into, json_string (user));
    }
  if (group)
    {
      if (strcmp (group, "all") != 0)
        return emu_fail_param (c, "Value (%s) for parameter group is invalid. Expected: 'all'.", group);
      json_array_append_new (into, json_string ("all"));
    }
  return 0;
}

/* LaunchPermission.Add.N.UserId / .Group (or .Remove.N.*). */
static int
collect_launch_permission_list (struct emu_call *c, const char *which, json_t *into)
{
  char prefix[64];
  snprintf (prefix, sizeof prefix, "LaunchPermission.%s", which);
  size_t n = 0;
  _cleanup_free_ int *idx = emu_param_indices (c, prefix, &n);
  for (size_t i = 0; i < n; i++)
    {
      if (emu_paramf (c, "%s.%d.OrganizationArn", prefix, idx[i])
          || emu_paramf (c, "%s.%d.OrganizationalUnitArn", prefix, idx[i]))
        return emu_fail (c, 400, "UnsupportedOperation", "kiln-emulator has no organizations: share images with "
                         "account ids or 'all'");
      if (collect_grantee (c, into, emu_paramf (c, "%s.%d.UserId", prefix, idx[i]),
                           emu_paramf (c, "%s.%d.Group", prefix, idx[i])) < 0)
        return -1;
    }
  return 0;
}

static int
modify_permissions_rows (struct emu_call *c, const char *image_id, const char *owner, json_t *add, json_t *remove)
{
  _cleanup_error_ kiln_error *err = NULL;
  size_t i;
  json_t *g;
  json_array_foreach (add, i, g)
    if (strcmp (json_string_value (g), owner) != 0   /* the owner needs no grant */
        && emu_db_exec (c->emu, &err, "INSERT OR IGNORE INTO launch_permissions (image_id, grantee) VALUES (?, ?)",
                        image_id, json_string_value (g)) < 0)
      return emu_fail_internal (c, err);
  json_array_foreach (remove, i, g)
    if (emu_db_exec (c->emu, &err, "DELETE FROM launch_permissions WHERE image_id = ? AND grantee = ?", image_id,
                     json_string_value (g)) < 0)
      return emu_fail_internal (c, err);
  return 0;
}

static int
op_modify_image_attribute (struct emu_call *c)
{
  const char *image_id;
  if (emu_param_required (c, "ImageId", &image_id) < 0)
    return -1;
  _cleanup_json_ json_t *img = image_lookup_owned (c, image_id);
  if (img == NULL)
    return -1;
  if (emu_param (c, "OrganizationArn.1") || emu_param (c, "OrganizationalUnitArn.1"))
    return emu_fail (c, 400, "UnsupportedOperation", "kiln-emulator has no organizations: share images with "
                     "account ids or 'all'");
  if (emu_param (c, "ProductCode.1"))
    return emu_fail (c, 400, "UnsupportedOperation", "kiln-emulator images have no product codes");

  /* Launch permission changes in either spelling. */
  _cleanup_json_ json_t *add = json_array ();
  _cleanup_json_ json_t *remove = json_array ();
  if (collect_launch_permission_list (c, "Add", add) < 0 || collect_launch_permission_list (c, "Remove", remove) < 0)
    return -1;
  size_t n_users = 0, n_groups = 0;
  _cleanup_free_ const char **users = emu_param_list (c, "UserId", &n_users);
  _cleanup_free_ const char **groups = emu_param_list (c, "UserGroup", &n_groups);
  const char *op = emu_param (c, "OperationType");
  if (n_users + n_groups > 0)
    {
      if (op == NULL)
        return emu_fail (c, 400, "MissingParameter", "The request must contain the parameter operationType");
      if (strcmp (op, "add") != 0 && strcmp (op, "remove") != 0)
        return emu_fail_param (c, "Value (%s) for parameter operationType is invalid. Expected: 'add' or 'remove'.",
                               op);
      json_t *into = strcmp (op, "add") == 0 ? add : remove;
      for (size_t i = 0; i < n_users; i++)
        if (collect_grantee (c, into, users[i], NULL) < 0)
          return -1;
      for (size_t i = 0; i < n_groups; i++)
        if (collect_grantee (c, into, NULL, groups[i]) < 0)
          return -1;
    }
  bool permission_changes = json_array_size (add) + json_array_size (remove) > 0;
  const char *description = emu_param (c, "Description.Value");

  const char *attribute = emu_param (c, "Attribute");
  if (attribute == NULL)
    attribute = permission_changes ? "launchPermission" : description ? "description" : NULL;
  if (attribute == NULL)
    return emu_fail (c, 400, "MissingParameter", "The request must contain the parameter attribute");

  _cleanup_error_ kiln_error *err = NULL;
  if (strcmp (attribute, "launchPermission") == 0)
    {
      if (!permission_changes)
        return emu_fail (c, 400, "MissingParameter", "No launch permission changes given (LaunchPermission.Add.N, "
                         "LaunchPermission.Remove.N or OperationType with UserId.N / UserGroup.N)");
      if (emu_db_begin (c->emu, &err) < 0)
        return emu_fail_internal (c, err);
      if (finish_transaction (c, modify_permissions_rows (c, image_id, emu_row_str (img, "account"), add, remove))
          < 0)
        return -1;
    }
  else if (strcmp (attribute, "description") == 0)
    {
      if (description == NULL)
        description = emu_param (c, "Value");
      if (description == NULL)
        return emu_fail (c, 400, "MissingParameter", "The request must contain the parameter description");
      if (check_description (c, description) < 0)
        return -1;
      if (emu_db_exec (c->emu, &err, "UPDATE images SET description = ? WHERE id = ?", description, image_id) < 0)
        return emu_fail_internal (c, err);
    }
  else
    return emu_fail_param (c, "Value (%s) for parameter attribute is invalid. kiln-emulator can modify "
                           "launchPermission and description.", attribute);
  emu_xml_bool (c, "return", true);
  return 0;
}

static const char *const image_attributes[] = {
  "description", "kernel", "ramdisk", "launchPermission", "productCodes", "blockDeviceMapping", "sriovNetSupport",
  "bootMode", "tpmSupport", "uefiData", "lastLaunchedTime", "imdsSupport", "deregistrationProtection", NULL,
};

/* Writes <name><value>v</value></name>, or an empty <name/> when v is NULL,
 * as EC2 answers for attributes an image does not have. */
static void
write_attribute_value (struct emu_call *c, const char *name, const char *value)
{
  emu_xml_start (c, name);
  emu_xml_text (c, "value", value);
  emu_xml_end (c);
}

/* Anyone who may use an image may read its attributes, except its launch
 * permissions, which only the owner sees. */
static int
op_describe_image_attribute (struct emu_call *c)
{
  const char *image_id, *attribute;
  if (emu_param_required (c, "ImageId", &image_id) < 0 || emu_param_required (c, "Attribute", &attribute) < 0)
    return -1;
  bool known = false;
  for (size_t i = 0; image_attributes[i] && !known; i++)
    known = strcmp (image_attributes[i], attribute) == 0;
  if (!known)
    return emu_fail_param (c, "Value (%s) for parameter attribute is invalid. Unknown attribute.", attribute);
  _cleanup_json_ json_t *img = strcmp (attribute, "launchPermission") == 0 ? image_lookup_owned (c, image_id)
                                                                           : emu_image_lookup (c, image_id);
  if (img == NULL)
    return -1;

  emu_xml_text (c, "imageId", image_id);
  if (strcmp (attribute, "launchPermission") == 0)
    {
      _cleanup_error_ kiln_error *err = NULL;
      _cleanup_json_ json_t *rows = emu_db_query (c->emu, &err, "SELECT grantee FROM launch_permissions WHERE "
                                                  "image_id = ? ORDER BY grantee <> 'all', grantee", image_id);
      if (rows == NULL)
        return emu_fail_internal (c, err);
      emu_xml_start (c, "launchPermission");
      size_t i;
      json_t *row;
      json_array_foreach (rows, i, row)
        {
          const char *g = emu_row_str (row, "grantee");
          emu_xml_start (c, "item");
          emu_xml_text (c, strcmp (g, "all") == 0 ? "group" : "userId", g);
          emu_xml_end (c);
        }
      emu_xml_end (c);
    }
  else if (strcmp (attribute, "description") == 0)
    write_attribute_value (c, "description", emu_row_str_or_null (img, "description"));
  else if (strcmp (attribute, "blockDeviceMapping") == 0)
    write_block_device_mapping (c, img);
  else if (strcmp (attribute, "bootMode") == 0)
    write_attribute_value (c, "bootMode", emu_row_str_or_null (img, "boot_mode"));
  else if (strcmp (attribute, "productCodes") == 0)
    {
      emu_xml_start (c, "productCodes");
      emu_xml_end (c);
    }
  else if (strcmp (attribute, "deregistrationProtection") == 0)
    write_attribute_value (c, "deregistrationProtection", "disabled");
  else
    {
      /* kernel -> kernel, ramdisk -> ramdisk, the rest by their own name:
       * nothing kiln-emulator images carry. */
      write_attribute_value (c, attribute, NULL);
    }
  return 0;
}

static int
op_reset_image_attribute (struct emu_call *c)
{
  const char *image_id, *attribute;
  if (emu_param_required (c, "ImageId", &image_id) < 0 || emu_param_required (c, "Attribute", &attribute) < 0)
    return -1;
  if (strcmp (attribute, "launchPermission") != 0)
    return emu_fail_param (c, "Value (%s) for parameter attribute is invalid. Only launchPermission can be reset.",
                           attribute);
  _cleanup_json_ json_t *img = image_lookup_owned (c, image_id);
  if (img == NULL)
    return -1;
  _cleanup_error_ kiln_error *err = NULL;
  if (emu_db_exec (c->emu, &err, "DELETE FROM launch_permissions WHERE image_id = ?", image_id) < 0)
    return emu_fail_internal (c, err);
  emu_xml_bool (c, "return", true);
  return 0;
}

/* ---- import-image ---- */

static int
check_import_name (struct kiln_emu *emu, const char *account, const char *region, const char *name,
                   kiln_error **err)
{
  _cleanup_json_ json_t *dup = image_named (emu, account, region, name, err);
  if (dup == NULL && *err)
    return -1;
  if (dup)
    return kiln_error_set (err, KILN_ERR_INVALID, 0, "account %s already has an image named '%s' in %s: %s",
                           account, name, region, emu_row_str (dup, "id"));
  return 0;
}

/* Inside the transaction: the rows, then the converted file under its final
 * name. */
static int
import_rows (struct kiln_emu *emu, const struct emu_image_spec *img, const struct emu_snapshot_spec *snap, bool is_public,
             const char *tmp, const char *final, kiln_error **err)
{
  if (check_import_name (emu, img->account, img->region, img->name, err) < 0)
    return -1;
  if (emu_snapshot_insert (emu, snap, err) < 0 || emu_image_insert (emu, img, err) < 0)
    return -1;
  if (is_public
      && emu_db_exec (emu, err, "INSERT INTO launch_permissions (image_id, grantee) VALUES (?, 'all')", img->id) < 0)
    return -1;
  if (rename (tmp, final) < 0)
    return kiln_fail_errno (err, errno, "rename '%s' to '%s'", tmp, final);
  return 0;
}

int
emu_image_import (struct kiln_emu *emu, const char *file, const char *name, const char *region,
                  const char *account, bool is_public, char **image_id, kiln_error **err)
{
  _cleanup_error_ kiln_error *unwanted = NULL;
  if (err == NULL)
    err = &unwanted;   /* the steps below read *err */
  *image_id = NULL;
  if (!emu_region_known (region))
    return kiln_fail_invalid (err, "'%s' is not a region kiln-emulator serves", region);
  if (!account_id_valid (account))
    return kiln_fail_invalid (err, "account '%s' is not a 12-digit account id", account);
  if (!image_name_valid (name))
    return kiln_fail_invalid (err, "image name '%s' is invalid: AMI names are %d to %d characters, letters, "
                              "digits, spaces and ( ) [ ] . / - ' @ _", name, IMAGE_NAME_MIN, IMAGE_NAME_MAX);
  if (access (file, R_OK) < 0)
    return kiln_fail_errno (err, errno, "import '%s'", file);
  /* Refuse a taken name before converting (the transaction checks again). */
  if (check_import_name (emu, account, region, name, err) < 0)
    return -1;

  _cleanup_free_ char *dir = NULL;
  dir = kiln_xasprintf ("%s/disks", emu->data_dir);
  if (kiln_mkdir_p (dir, 0755, err) < 0)
    return -1;

  /* A hidden temporary name: collectors look only at snapshot-named files. */
  _cleanup_unlink_ char *tmp = NULL;
  tmp = kiln_xasprintf ("%s/.import-XXXXXX.tmp", dir);
  {
    _cleanup_close_ int fd = mkostemps (tmp, 4, O_CLOEXEC);
    if (fd < 0)
      {
        int e = errno;
        free (kiln_steal_pointer (&tmp));
        return kiln_fail_errno (err, e, "create a temporary file under '%s'", dir);
      }
    fchmod (fd, 0644);
  }
  if (kiln_disk_convert (file, tmp, "qcow2", false, NULL, err) < 0)
    return kiln_error_prefix (err, "import '%s'", file);
  struct kiln_disk_info info;
  if (kiln_disk_info (tmp, &info, err) < 0)
    return kiln_error_prefix (err, "import '%s'", file);
  long long size = (long long) ((info.virtual_size + GIB - 1) / GIB);
  kiln_disk_info_release (&info);
  if (size < 1)
    size = 1;

  time_t now = emu_now (emu);
  _cleanup_free_ char *ami = emu_new_id (emu, "ami");
  _cleanup_free_ char *snap_id = emu_new_id (emu, "snap");
  _cleanup_free_ char *final = emu_disk_path (emu, snap_id, "qcow2");
  const char *base = strrchr (file, '/') ? strrchr (file, '/') + 1 : file;
  _cleanup_free_ char *snap_description = NULL;
  snap_description = kiln_xasprintf ("Imported by kiln-emulator from %s for %s", base, ami);
  struct emu_snapshot_spec snap = {
    .id = snap_id, .account = account, .region = region, .state = "completed", .progress = "100%",
    .description = snap_description, .disk = final, .disk_format = "qcow2", .volume_size = size, .start_time = now,
  };
  struct emu_image_spec img = {
    .id = ami, .account = account, .region = region, .name = name, .state = "available", .architecture = "x86_64",
    .root_device_name = DEFAULT_ROOT_DEVICE, .root_snapshot = snap_id, .volume_size = size, .creation_date = now,
    .virtualization_type = "hvm", .ena_support = true, .delete_on_termination = true,
  };

  if (emu_db_begin (emu, err) < 0)
    return -1;
  int r = import_rows (emu, &img, &snap, is_public, tmp, final, err);
  if (emu_db_end (emu, r == 0, r == 0 ? err : NULL) < 0 || r < 0)
    {
      if (r == 0)
        unlink (final);   /* renamed, but the rows naming it were rolled back */
      return kiln_error_prefix (err, "import '%s'", file);
    }
  free (kiln_steal_pointer (&tmp));   /* renamed: nothing to remove */
  *image_id = kiln_steal_pointer (&ami);
  return 0;
}

const struct emu_operation emu_ec2_image_ops[] = {
  {"CopyImage", op_copy_image},
  {"CreateImage", op_create_image},
  {"DeregisterImage", op_deregister_image},
  {"DescribeImageAttribute", op_describe_image_attribute},
  {"DescribeImages", op_describe_images},
  {"ModifyImageAttribute", op_modify_image_attribute},
  {"RegisterImage", op_register_image},
  {"ResetImageAttribute", op_reset_image_attribute},
  {NULL, NULL},
};
