/* ec2_snapshots.c - EBS snapshots as far as AMIs need them: DescribeSnapshots
 * and DeleteSnapshot.
 *
 * Snapshots are made by CreateImage (the VM host fills their disk),
 * CopyImage and `kiln-emulator import-image` (ec2_images.c); each holds the
 * root volume of an image.  They are private to their owner and region:
 * there is no snapshot sharing (CreateVolumePermission), so RestorableBy
 * names the caller's own snapshots or none, and sharing an AMI does not
 * share its snapshot, as on AWS.
 *
 * A snapshot's disk file (DATA_DIR/disks/<id>.<format>) is not removed with
 * its row: emu_disks_collect removes it once no snapshot row and no live
 * instance (whose overlay may be backed by it) refers to it. */
#include "ec2.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cleanup.h"
#include "store.h"
#include "vmhost.h"
#include "xalloc.h"

/* Snapshots made without a volume (copies, imports, captures of instances
 * whose volumes kiln-emulator does not model) name this one, as AWS does for
 * copied snapshots. */
#define NO_VOLUME_ID "vol-ffffffff"

static int
fail_malformed (struct emu_call *c, const char *id)
{
  return emu_fail (c, 400, "InvalidSnapshotID.Malformed", "Invalid id: \"%s\" (expecting \"snap-...\")", id);
}

static bool
account_id_valid (const char *s)
{
  return strlen (s) == 12 && strspn (s, "0123456789") == 12;
}

/* ---- DescribeSnapshots ---- */

static const char *const snapshot_filters[] = {
  "description", "encrypted", "kms-key-id", "owner-alias", "owner-id", "progress", "snapshot-id", "start-time",
  "status", "storage-tier", "volume-id", "volume-size", "tag:*", "tag-key", "tag-value", NULL,
};

static json_t *
snapshot_filter_fields (struct emu_call *c, json_t *snap)
{
  char start[32];
  emu_format_time ((time_t) emu_row_int (snap, "start_time"), start);
  const char *volume = emu_row_str_or_null (snap, "volume_id");
  json_t *f = json_object ();
  if (emu_row_str_or_null (snap, "description"))
    json_object_set_new (f, "description", json_string (emu_row_str (snap, "description")));
  json_object_set_new (f, "encrypted", json_string ("false"));
  json_object_set_new (f, "owner-id", json_string (emu_row_str (snap, "account")));
  json_object_set_new (f, "progress", json_string (emu_row_str (snap, "progress")));
  json_object_set_new (f, "snapshot-id", json_string (emu_row_str (snap, "id")));
  json_object_set_new (f, "start-time", json_string (start));
  json_object_set_new (f, "status", json_string (emu_row_str (snap, "state")));
  json_object_set_new (f, "storage-tier", json_string ("standard"));
  json_object_set_new (f, "volume-id", json_string (volume ? volume : NO_VOLUME_ID));
  json_object_set_new (f, "volume-size", json_string (emu_row_str (snap, "volume_size")));
  return f;
}

/* The fields of one <item>. */
static void
write_snapshot (struct emu_call *c, json_t *snap, json_t *tags)
{
  const char *volume = emu_row_str_or_null (snap, "volume_id");
  emu_xml_text (c, "snapshotId", emu_row_str (snap, "id"));
  emu_xml_text (c, "volumeId", volume ? volume : NO_VOLUME_ID);
  emu_xml_text (c, "status", emu_row_str (snap, "state"));
  if (strcmp (emu_row_str (snap, "state"), "error") == 0)
    emu_xml_text (c, "statusMessage", emu_row_str_or_null (snap, "state_message"));
  emu_xml_time (c, "startTime", (time_t) emu_row_int (snap, "start_time"));
  emu_xml_text (c, "progress", emu_row_str (snap, "progress"));
  emu_xml_text (c, "ownerId", emu_row_str (snap, "account"));
  emu_xml_textf (c, "volumeSize", "%lld", emu_row_int (snap, "volume_size"));
  emu_xml_text (c, "description", emu_row_str_or_null (snap, "description"));
  emu_xml_bool (c, "encrypted", false);
  emu_xml_text (c, "storageTier", "standard");
  emu_xml_tag_set (c, "tagSet", tags);
}

/* Owner.N and RestorableBy.N narrow the caller's own snapshots (the only
 * ones it can see): Owner "self" or the caller's id keeps them, any other
 * owner (an account id, "amazon") has none to show; RestorableBy "self" or
 * the caller's id keeps them, another account or "all" has none (nothing is
 * shared).  d->options "visible": whether the caller's snapshots are. */
static int
check_snapshot_owners (struct emu_call *c, struct emu_describe_call *d)
{
  size_t n_owners = 0, n_restorable = 0;
  _cleanup_free_ const char **owners = emu_param_list (c, "Owner", &n_owners);
  _cleanup_free_ const char **restorable = emu_param_list (c, "RestorableBy", &n_restorable);
  bool caller_owner = n_owners == 0, caller_restorable = n_restorable == 0;
  for (size_t i = 0; i < n_owners; i++)
    {
      if (strcmp (owners[i], "self") == 0 || strcmp (owners[i], c->account) == 0)
        caller_owner = true;
      else if (strcmp (owners[i], "amazon") != 0 && strcmp (owners[i], "aws-marketplace") != 0
               && strcmp (owners[i], "aws-backup-vault") != 0 && !account_id_valid (owners[i]))
        return emu_fail (c, 400, "InvalidUserID.Malformed", "Invalid user id: \"%s\"", owners[i]);
    }
  for (size_t i = 0; i < n_restorable; i++)
    {
      if (strcmp (restorable[i], "self") == 0 || strcmp (restorable[i], c->account) == 0)
        caller_restorable = true;
      else if (strcmp (restorable[i], "all") != 0 && !account_id_valid (restorable[i]))
        return emu_fail (c, 400, "InvalidUserID.Malformed", "Invalid user id: \"%s\"", restorable[i]);
    }
  json_object_set_new (d->options, "visible", json_boolean (caller_owner && caller_restorable));
  return 0;
}

static bool
keep_snapshot (struct emu_call *c, struct emu_describe_call *d, json_t *snap)
{
  return json_is_true (json_object_get (d->options, "visible"));
}

/* The caller's snapshots; every id asked for must exist, whatever the
 * other parameters select; ids and MaxResults do not go together. */
static const struct emu_describe_kind snapshots_kind = {
  .ids = {{
    .param = "SnapshotId", .column = "id", .prefix = "snap",
    .malformed = {"InvalidSnapshotID.Malformed", "Invalid id: \"%s\" (expecting \"snap-...\")", NULL,
                  EMU_REPORT_FIRST},
    .not_found = {"InvalidSnapshot.NotFound", "The snapshot '%s' does not exist.", NULL, EMU_REPORT_EACH_ONCE},
  }},
  .ids_exclude_paging = "snapshotSet",
  .filter_names = snapshot_filters, .fields = snapshot_filter_fields,
  .query = "SELECT * FROM snapshots WHERE account = ?1 AND region = ?2 ORDER BY seq",
  .check = check_snapshot_owners, .keep = keep_snapshot,
  .page_min = 5, .set = "snapshotSet", .write = write_snapshot,
};

EMU_DESCRIBE_HANDLER (op_describe_snapshots, snapshots_kind)

/* ---- DeleteSnapshot ---- */

/* Inside the transaction: refuse while a registered image in the region
 * uses the snapshot, else drop its row and its tags. */
static int
delete_snapshot_rows (struct emu_call *c, const char *snapshot_id)
{
  _cleanup_error_ kiln_error *err = NULL;
  _cleanup_json_ json_t *snap = emu_db_query_one (c->emu, &err, "SELECT id FROM snapshots WHERE id = ? AND "
                                                  "account = ? AND region = ?", snapshot_id, c->account, c->region);
  if (snap == NULL && err)
    return emu_fail_internal (c, err);
  if (snap == NULL)
    return emu_fail (c, 400, "InvalidSnapshot.NotFound", "The snapshot '%s' does not exist.", snapshot_id);
  _cleanup_json_ json_t *user = emu_db_query_one (c->emu, &err, "SELECT id FROM images WHERE root_snapshot = ? AND "
                                                  "region = ? AND state <> 'deregistered' ORDER BY seq",
                                                  snapshot_id, c->region);
  if (user == NULL && err)
    return emu_fail_internal (c, err);
  if (user)
    return emu_fail (c, 400, "InvalidSnapshot.InUse", "The snapshot %s is currently in use by %s", snapshot_id,
                     emu_row_str (user, "id"));
  if (emu_db_exec (c->emu, &err, "DELETE FROM snapshots WHERE id = ?", snapshot_id) < 0
      || emu_db_exec (c->emu, &err, "DELETE FROM tags WHERE resource_id = ?", snapshot_id) < 0)
    return emu_fail_internal (c, err);
  return 0;
}

static int
op_delete_snapshot (struct emu_call *c)
{
  const char *snapshot_id;
  if (emu_param_required (c, "SnapshotId", &snapshot_id) < 0)
    return -1;
  if (!emu_id_well_formed (snapshot_id, "snap"))
    return fail_malformed (c, snapshot_id);
  _cleanup_error_ kiln_error *err = NULL;
  if (emu_db_begin (c->emu, &err) < 0)
    return emu_fail_internal (c, err);
  int r = delete_snapshot_rows (c, snapshot_id);
  if (emu_db_end (c->emu, r == 0, &err) < 0)
    return emu_fail_internal (c, err);
  if (r < 0)
    return -1;
  emu_disks_collect (c->emu);
  emu_xml_bool (c, "return", true);
  return 0;
}

const struct emu_operation emu_ec2_snapshot_ops[] = {
  {"DeleteSnapshot", op_delete_snapshot},
  {"DescribeSnapshots", op_describe_snapshots},
  {NULL, NULL},
};
