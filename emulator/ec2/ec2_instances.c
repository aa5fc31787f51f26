/* ec2_instances.c - EC2 instances: RunInstances, DescribeInstances,
 * DescribeInstanceStatus, Start/Stop/Reboot/TerminateInstances and
 * GetConsoleOutput.
 *
 * Handlers decide and record state changes the way EC2 reports them at once
 * (pending, stopping, shutting-down) and leave the slow part to the VM host
 * (vmhost.c), which moves the instance on (running, stopped, terminated)
 * when the guest has done it.  So botocore's waiters see EC2's state machine:
 * pending → running, stopping → stopped, shutting-down → terminated.
 *
 * Networking is described, not provided: every account has one default VPC
 * per region with a subnet per availability zone and a default security
 * group, so the fields clients read are there; private addresses are unique
 * per region. */
#include "ec2.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cleanup.h"
#include "digest.h"
#include "store.h"
#include "vmhost.h"
#include "xalloc.h"

/* Instances an account may have that are not terminated, per region. */
#define MAX_LIVE_INSTANCES 100
/* Terminated instances stay visible this long, as on EC2. */
#define TERMINATED_VISIBLE_SECONDS 3600
/* Largest user data, decoded (EC2's limit). */
#define MAX_USER_DATA 16384
#define DEFAULT_INSTANCE_TYPE "t3.micro"
#define CONSOLE_MAX_BYTES 65536

#define DEFAULT_VPC "vpc-00000000000000001"
#define DEFAULT_SG "sg-00000000000000001"

static int
state_code (const char *state)
{
  static const struct
  {
    const char *name;
    int code;
  } codes[] = {{"pending", 0},   {"running", 16},  {"shutting-down", 32},
               {"terminated", 48}, {"stopping", 64}, {"stopped", 80}};
  for (size_t i = 0; i < sizeof codes / sizeof codes[0]; i++)
    if (strcmp (codes[i].name, state) == 0)
      return codes[i].code;
  return 0;
}

static void
xml_state (struct emu_call *c, const char *element, const char *state)
{
  emu_xml_start (c, element);
  emu_xml_textf (c, "code", "%d", state_code (state));
  emu_xml_text (c, "name", state);
  emu_xml_end (c);
}

/* The default subnet of an availability zone: one per zone letter. */
static void
subnet_of_zone (const char *az, char out[32])
{
  size_t n = strlen (az);
  int letter = n ? az[n - 1] - 'a' + 1 : 1;
  snprintf (out, 32, "subnet-%017d", letter > 0 && letter < 27 ? letter : 1);
}

/* ---- one instance in XML ---- */

/* The fields of an instance's <item>. */
static void
write_instance (struct emu_call *c, json_t *row, json_t *tags)
{
  const char *state = emu_row_str (row, "state");
  emu_xml_text (c, "instanceId", emu_row_str (row, "id"));
  emu_xml_text (c, "imageId", emu_row_str (row, "image_id"));
  xml_state (c, "instanceState", state);
  const char *ip = emu_row_str (row, "private_ip");
  /* ip-10-0-0-5.us-east-1.compute.internal, as EC2 names private hosts. */
  char dns[128] = "";
  if (*ip && strcmp (state, "terminated") != 0)
    {
      char dashed[32];
      snprintf (dashed, sizeof dashed, "%s", ip);
      for (char *p = dashed; *p; p++)
        if (*p == '.')
          *p = '-';
      snprintf (dns, sizeof dns, "ip-%s.%s.compute.internal", dashed, c->region);
    }
  emu_xml_text (c, "privateDnsName", dns);
  emu_xml_text (c, "dnsName", "");
  emu_xml_text (c, "reason", emu_row_str (row, "state_transition_reason"));
  emu_xml_text (c, "keyName", emu_row_str_or_null (row, "key_name"));
  emu_xml_text (c, "amiLaunchIndex", emu_row_str (row, "ami_launch_index"));
  emu_xml_text (c, "instanceType", emu_row_str (row, "instance_type"));
  emu_xml_time (c, "launchTime", (time_t) emu_row_int (row, "launch_time"));
  emu_xml_start (c, "placement");
  emu_xml_text (c, "availabilityZone", emu_row_str (row, "az"));
  emu_xml_text (c, "groupName", "");
  emu_xml_text (c, "tenancy", "default");
  emu_xml_end (c);
  emu_xml_start (c, "monitoring");
  emu_xml_text (c, "state", "disabled");
  emu_xml_end (c);
  if (strcmp (state, "terminated") != 0)
    {
      emu_xml_text (c, "subnetId", emu_row_str (row, "subnet_id"));
      emu_xml_text (c, "vpcId", emu_row_str (row, "vpc_id"));
      emu_xml_text (c, "privateIpAddress", ip);
    }
  emu_xml_bool (c, "sourceDestCheck", true);
  emu_xml_start (c, "groupSet");
  json_error_t jerr;
  _cleanup_json_ json_t *groups = json_loads (emu_row_str (row, "security_groups"), 0, &jerr);
  size_t i;
  json_t *g;
  json_array_foreach (groups, i, g)
    {
      emu_xml_start (c, "item");
      emu_xml_text (c, "groupId", json_string_value (g));
      emu_xml_text (c, "groupName", strcmp (json_string_value (g), DEFAULT_SG) == 0 ? "default" : json_string_value (g));
      emu_xml_end (c);
    }
  emu_xml_end (c);
  if (emu_row_str_or_null (row, "state_reason_code"))
    {
      emu_xml_start (c, "stateReason");
      emu_xml_text (c, "code", emu_row_str (row, "state_reason_code"));
      emu_xml_text (c, "message", emu_row_str (row, "state_reason_message"));
      emu_xml_end (c);
    }
  emu_xml_text (c, "architecture", "x86_64");
  emu_xml_text (c, "rootDeviceType", "ebs");
  emu_xml_text (c, "rootDeviceName", "/dev/xvda");
  if (strcmp (state, "terminated") != 0)
    {
      emu_xml_start (c, "blockDeviceMapping");
      emu_xml_start (c, "item");
      emu_xml_text (c, "deviceName", "/dev/xvda");
      emu_xml_start (c, "ebs");
      char vol[32];
      snprintf (vol, sizeof vol, "vol-%s", emu_row_str (row, "id") + 2);
      emu_xml_text (c, "volumeId", vol);
      emu_xml_text (c, "status", "attached");
      emu_xml_time (c, "attachTime", (time_t) emu_row_int (row, "launch_time"));
      emu_xml_bool (c, "deleteOnTermination", true);
      emu_xml_end (c);
      emu_xml_end (c);
      emu_xml_end (c);
    }
  emu_xml_text (c, "virtualizationType", "hvm");
  emu_xml_text (c, "clientToken", emu_row_str (row, "client_token"));
  emu_xml_tag_set (c, "tagSet", tags);
  emu_xml_text (c, "hypervisor", "xen");
  const char *profile = emu_row_str_or_null (row, "iam_profile");
  if (profile)
    {
      emu_xml_start (c, "iamInstanceProfile");
      emu_xml_text (c, "arn", profile);
      emu_xml_text (c, "id", "AIPAKILNEMULATOR00001");
      emu_xml_end (c);
    }
  emu_xml_bool (c, "ebsOptimized", false);
  emu_xml_bool (c, "enaSupport", true);
  emu_xml_text (c, "platformDetails", "Linux/UNIX");
  emu_xml_text (c, "usageOperation", "RunInstances");
  emu_xml_text (c, "bootMode", "legacy-bios");
}

/* ---- lookups ---- */

/* A macro as well as a constant: a static initializer may not copy a
 * const object in ISO C (clang refuses it; gcc allows it). */
#define INSTANCE_NOT_FOUND                                                                                  \
  {                                                                                                          \
    "InvalidInstanceID.NotFound", "The instance ID '%s' does not exist", "The instance IDs '%s' do not exist", \
    EMU_REPORT_EVERY,                                                                                        \
  }
static const struct emu_describe_error instance_not_found = INSTANCE_NOT_FOUND;

/* The rows of the instance ids (of n) in the caller's account and region
 * that exist, in the order given (an id given twice, twice). */
static json_t *
instances_found (struct emu_call *c, const char *const *ids, size_t n, kiln_error **err)
{
  _cleanup_json_ json_t *rows = json_array ();
  for (size_t i = 0; i < n; i++)
    {
      json_t *row = emu_db_query_one (c->emu, err, "SELECT * FROM instances WHERE id = ? AND account = ? AND "
                                      "region = ?", ids[i], c->account, c->region);
      if (row == NULL && *err)
        return NULL;
      if (row)
        json_array_append_new (rows, row);
    }
  return json_incref (rows);
}

/* The rows of the given instance ids, as instances_found; fails
 * (InvalidInstanceID.Malformed / .NotFound, naming every missing id as EC2
 * does) unless all exist. */
static json_t *
instances_by_id (struct emu_call *c, const char **ids, size_t n)
{
  for (size_t i = 0; i < n; i++)
    if (!emu_id_well_formed (ids[i], "i"))
      {
        emu_fail (c, 400, "InvalidInstanceID.Malformed", "Invalid id: \"%s\"", ids[i]);
        return NULL;
      }
  _cleanup_error_ kiln_error *err = NULL;
  _cleanup_json_ json_t *rows = instances_found (c, ids, n, &err);
  if (rows == NULL)
    {
      emu_fail_internal (c, err);
      return NULL;
    }
  if (emu_describe_ids_found (c, &instance_not_found, rows, "id", ids, n) < 0)
    return NULL;
  return json_incref (rows);
}

static const char **
required_ids (struct emu_call *c, size_t *n)
{
  const char **ids = emu_param_list (c, "InstanceId", n);
  if (*n == 0)
    {
      free (ids);
      emu_fail (c, 400, "MissingParameter", "The request must contain the parameter InstanceId");
      return NULL;
    }
  return ids;
}

/* ---- RunInstances ---- */

static int
check_user_data (struct emu_call *c, const char *user_data)
{
  if (user_data == NULL)
    return 0;
  _cleanup_free_ unsigned char *decoded = NULL;
  size_t len = 0;
  if (kiln_base64_decode (user_data, strlen (user_data), &decoded, &len) < 0)
    return emu_fail_param (c, "Invalid BASE64 encoding of user data.");
  if (len > MAX_USER_DATA)
    return emu_fail_param (c, "User data is limited to %d bytes (%zu given).", MAX_USER_DATA, len);
  return 0;
}

/* A reservation's own fields, before its instancesSet. */
static void
write_reservation_head (struct emu_call *c, json_t *row)
{
  emu_xml_text (c, "reservationId", emu_row_str (row, "reservation_id"));
  emu_xml_text (c, "ownerId", c->account);
  emu_xml_start (c, "groupSet");
  emu_xml_end (c);
}

/* RunInstances' reply: one reservation, its rows. */
static int
reply_reservation (struct emu_call *c, json_t *rows)
{
  _cleanup_json_ json_t *tags = emu_tags_all (c);
  if (tags == NULL)
    return -1;
  write_reservation_head (c, json_array_get (rows, 0));
  emu_xml_start (c, "instancesSet");
  size_t i;
  json_t *row;
  json_array_foreach (rows, i, row)
    {
      emu_xml_start (c, "item");
      write_instance (c, row, json_object_get (tags, emu_row_str (row, "id")));
      emu_xml_end (c);
    }
  emu_xml_end (c);
  return 0;
}

static int
run_instances (struct emu_call *c)
{
  const char *image_id;
  long long min_count, max_count;
  if (emu_param_required (c, "ImageId", &image_id) < 0 || emu_param_required (c, "MinCount", &(const char *){0}) < 0
      || emu_param_required (c, "MaxCount", &(const char *){0}) < 0
      || emu_param_int (c, "MinCount", 1, 1, MAX_LIVE_INSTANCES, &min_count) < 0
      || emu_param_int (c, "MaxCount", 1, 1, MAX_LIVE_INSTANCES, &max_count) < 0)
    return -1;
  if (min_count > max_count)
    return emu_fail_param (c, "MinCount (%lld) is greater than MaxCount (%lld).", min_count, max_count);
  const char *type = emu_param (c, "InstanceType");
  if (type == NULL)
    type = DEFAULT_INSTANCE_TYPE;
  if (kiln_aws_instance_type_find (type) == NULL)
    return emu_fail_param (c, "Invalid value '%s' for InstanceType.", type);
  const char *user_data = emu_param (c, "UserData");
  if (check_user_data (c, user_data) < 0)
    return -1;
  static const char *const tag_types[] = {"instance", "volume", "network-interface", NULL};
  if (emu_tag_specs_check (c, tag_types) < 0)
    return -1;

  _cleanup_json_ json_t *image = emu_image_lookup (c, image_id);
  if (image == NULL)
    return -1;
  if (strcmp (emu_row_str (image, "state"), "available") != 0)
    return emu_fail (c, 400, "InvalidAMIID.Unavailable", "The image id '[%s]' is no longer available", image_id);

  _cleanup_error_ kiln_error *err = NULL;
  const char *key_name = emu_param (c, "KeyName");
  if (key_name)
    {
      _cleanup_json_ json_t *key = emu_db_query_one (c->emu, &err, "SELECT name FROM key_pairs WHERE account = ? "
                                                     "AND region = ? AND name = ?", c->account, c->region, key_name);
      if (key == NULL)
        return err ? emu_fail_internal (c, err)
                   : emu_fail (c, 400, "InvalidKeyPair.NotFound", "The key pair '%s' does not exist", key_name);
    }

  /* Placement: a zone of this region, or the one the subnet is in. */
  char az[64];
  const char *want_az = emu_param (c, "Placement.AvailabilityZone");
  const char *subnet = emu_param (c, "SubnetId");
  char subnet_buf[32];
  if (want_az)
    {
      size_t rl = strlen (c->region);
      if (strncmp (want_az, c->region, rl) != 0 || strlen (want_az) != rl + 1 || want_az[rl] < 'a'
          || want_az[rl] > 'c')
        return emu_fail_param (c, "Invalid availability zone: [%s]", want_az);
      snprintf (az, sizeof az, "%s", want_az);
    }
  else if (subnet && strncmp (subnet, "subnet-", 7) == 0 && strlen (subnet) == 24 && subnet[23] >= '1'
           && subnet[23] <= '3' && strncmp (subnet + 7, "0000000000000000", 16) == 0)
    snprintf (az, sizeof az, "%s%c", c->region, 'a' + (subnet[23] - '1'));
  else if (subnet)
    return emu_fail (c, 400, "InvalidSubnetID.NotFound", "The subnet ID '%s' does not exist (kiln-emulator has the "
                     "default subnets subnet-00000000000000001 .. 3)", subnet);
  else
    snprintf (az, sizeof az, "%sa", c->region);
  subnet_of_zone (az, subnet_buf);

  _cleanup_json_ json_t *groups = json_array ();
  size_t n_groups = 0;
  _cleanup_free_ const char **group_ids = emu_param_list (c, "SecurityGroupId", &n_groups);
  for (size_t i = 0; i < n_groups; i++)
    json_array_append_new (groups, json_string (group_ids[i]));
  if (n_groups == 0)
    json_array_append_new (groups, json_string (DEFAULT_SG));
  _cleanup_free_ char *groups_text = json_dumps (groups, JSON_COMPACT);

  const char *profile = emu_param (c, "IamInstanceProfile.Arn");
  _cleanup_free_ char *profile_arn = NULL;
  if (profile == NULL && emu_param (c, "IamInstanceProfile.Name"))
    {
      profile_arn = kiln_xasprintf ("arn:aws:iam::%s:instance-profile/%s", c->account,
                                    emu_param (c, "IamInstanceProfile.Name"));
      profile = profile_arn;
    }
  const char *client_token = emu_param (c, "ClientToken");

  /* One transaction: the idempotency check, the quota and the rows. */
  if (emu_db_begin (c->emu, &err) < 0)
    return emu_fail_internal (c, err);
  if (client_token)
    {
      _cleanup_json_ json_t *same = emu_db_query (c->emu, &err, "SELECT * FROM instances WHERE account = ? AND "
                                                  "region = ? AND client_token = ? ORDER BY ami_launch_index",
                                                  c->account, c->region, client_token);
      if (same == NULL || json_array_size (same) > 0)
        {
          emu_db_end (c->emu, false, NULL);
          if (same == NULL)
            return emu_fail_internal (c, err);
          return reply_reservation (c, same);
        }
    }
  _cleanup_json_ json_t *live = emu_db_query_one (c->emu, &err, "SELECT COUNT(*) AS n FROM instances WHERE "
                                                  "account = ? AND region = ? AND state <> 'terminated'",
                                                  c->account, c->region);
  if (live == NULL)
    {
      emu_db_end (c->emu, false, NULL);
      return emu_fail_internal (c, err);
    }
  long long room = MAX_LIVE_INSTANCES - emu_row_int (live, "n");
  if (room < min_count)
    {
      emu_db_end (c->emu, false, NULL);
      return emu_fail (c, 400, "InstanceLimitExceeded", "You have requested more instances (%lld) than your current "
                       "instance limit of %d allows for the specified instance type in %s.", min_count,
                       MAX_LIVE_INSTANCES, c->region);
    }
  long long count = max_count < room ? max_count : room;

  _cleanup_free_ char *reservation = emu_new_id (c->emu, "r");
  char now[24];
  snprintf (now, sizeof now, "%lld", (long long) c->now);
  _cleanup_json_ json_t *ids = json_array ();
  int r = 0;
  for (long long k = 0; k < count && r == 0; k++)
    {
      _cleanup_free_ char *id = emu_new_id (c->emu, "i");
      char seq[24], index[24], ip[32];
      if (emu_db_next_seq (c->emu, seq, &err) < 0)
        {
          r = -1;
          break;
        }
      long long s = atoll (seq);
      snprintf (ip, sizeof ip, "10.0.%lld.%lld", (s / 250) % 250, s % 250 + 4);
      snprintf (index, sizeof index, "%lld", k);
      r = emu_db_exec (c->emu, &err,
                       "INSERT INTO instances (id, account, region, reservation_id, image_id, instance_type, state, "
                       "state_transition_reason, launch_time, state_changed, ami_launch_index, az, subnet_id, vpc_id, "
                       "private_ip, key_name, user_data, iam_profile, security_groups, client_token, disk_snapshot, "
                       "seq) VALUES (?, ?, ?, ?, ?, ?, 'pending', '', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                       id, c->account, c->region, reservation, image_id, type, now, now, index, az, subnet_buf,
                       DEFAULT_VPC, ip, key_name, user_data, profile, groups_text, client_token,
                       emu_row_str_or_null (image, "root_snapshot"), seq) < 0 ? -1 : 0;
      if (r == 0)
        r = emu_tag_specs_apply (c, "instance", id);
      json_array_append_new (ids, json_string (id));
    }
  if (r < 0 || c->error_code)
    {
      emu_db_end (c->emu, false, NULL);
      return c->error_code ? -1 : emu_fail_internal (c, err);
    }
  if (emu_db_end (c->emu, true, &err) < 0)
    return emu_fail_internal (c, err);

  size_t i;
  json_t *id;
  json_array_foreach (ids, i, id)
    emu_vmhost_launch (c->emu, json_string_value (id));
  _cleanup_json_ json_t *rows = emu_db_query (c->emu, &err, "SELECT * FROM instances WHERE reservation_id = ? "
                                              "ORDER BY ami_launch_index", reservation);
  if (rows == NULL)
    return emu_fail_internal (c, err);
  /* RunInstances reports every instance as pending, whatever the worker has
   * done since. */
  json_array_foreach (rows, i, id)
    json_object_set_new (id, "state", json_string ("pending"));
  return reply_reservation (c, rows);
}

/* ---- DescribeInstances, DescribeInstanceStatus ---- */

static const char *const instance_filters[] = {
  "instance-id", "instance-state-name", "instance-state-code", "instance-type", "image-id", "reservation-id",
  "availability-zone", "key-name", "private-ip-address", "subnet-id", "vpc-id", "owner-id", "client-token",
  "iam-instance-profile.arn", "architecture", "root-device-type", "tag-key", "tag-value", "tag:*", NULL,
};

static json_t *
instance_fields (struct emu_call *c, json_t *row)
{
  char code[8];
  snprintf (code, sizeof code, "%d", state_code (emu_row_str (row, "state")));
  return json_pack ("{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s}",
                    "instance-id", emu_row_str (row, "id"), "instance-state-name", emu_row_str (row, "state"),
                    "instance-state-code", code, "instance-type", emu_row_str (row, "instance_type"), "image-id",
                    emu_row_str (row, "image_id"), "reservation-id", emu_row_str (row, "reservation_id"),
                    "availability-zone", emu_row_str (row, "az"), "key-name", emu_row_str (row, "key_name"),
                    "private-ip-address", emu_row_str (row, "private_ip"), "subnet-id", emu_row_str (row, "subnet_id"),
                    "vpc-id", emu_row_str (row, "vpc_id"), "owner-id", c->account, "client-token",
                    emu_row_str (row, "client_token"), "iam-instance-profile.arn", emu_row_str (row, "iam_profile"),
                    "architecture", "x86_64", "root-device-type", "ebs");
}

/* Instances the describe calls consider: the ids asked for (in that
 * order, whatever their state), else every instance of the account and
 * region still visible. */
static json_t *
instance_rows (struct emu_call *c, struct emu_describe_call *d, kiln_error **err)
{
  if (d->n_ids[0])
    return instances_found (c, d->ids[0], d->n_ids[0], err);
  char cutoff[24];
  snprintf (cutoff, sizeof cutoff, "%lld", (long long) c->now - TERMINATED_VISIBLE_SECONDS);
  return emu_db_query (c->emu, err, "SELECT * FROM instances WHERE account = ? AND region = ? AND "
                       "(state <> 'terminated' OR state_changed >= ?) ORDER BY seq", c->account, c->region, cutoff);
}

#define INSTANCE_IDS                                                                                         \
  {                                                                                                          \
    .param = "InstanceId", .column = "id", .prefix = "i",                                                    \
    .malformed = {"InvalidInstanceID.Malformed", "Invalid id: \"%s\"", NULL, EMU_REPORT_FIRST},             \
    .not_found = INSTANCE_NOT_FOUND,                                                                         \
  }

/* Instances in reservations, in order of each reservation's first
 * instance; ids and MaxResults do not go together. */
static const struct emu_describe_kind instances_kind = {
  .ids = {INSTANCE_IDS}, .ids_exclude_paging = "instancesSet",
  .filter_names = instance_filters, .fields = instance_fields, .filters_first = true,
  .rows = instance_rows,
  .page_min = 5, .set = "reservationSet", .write = write_instance,
  .group_column = "reservation_id", .group_set = "instancesSet", .group_head = write_reservation_head,
};

EMU_DESCRIBE_HANDLER (describe_instances, instances_kind)

static const char *const status_filters[] = {
  "availability-zone", "instance-state-name", "instance-state-code", "instance-status.status",
  "system-status.status", "instance-status.reachability", "system-status.reachability", NULL,
};

static int
read_include_all (struct emu_call *c, struct emu_describe_call *d)
{
  bool include_all;
  if (emu_param_bool (c, "IncludeAllInstances", false, &include_all) < 0)
    return -1;
  json_object_set_new (d->options, "include_all", json_boolean (include_all));
  return 0;
}

/* Running instances (all with IncludeAllInstances), each with the outcome
 * of its checks as check_status.  In qemu mode the checks pass once the
 * guest agent answers; a mock instance has nothing to reach, so running is
 * all it can be. */
static bool
keep_status (struct emu_call *c, struct emu_describe_call *d, json_t *row)
{
  const char *state = emu_row_str (row, "state");
  if (!json_is_true (json_object_get (d->options, "include_all")) && strcmp (state, "running") != 0)
    return false;
  bool ok = strcmp (state, "running") == 0
            && (c->emu->instances == EMU_INSTANCES_MOCK || emu_row_int (row, "agent_online"));
  json_object_set_new (row, "check_status",
                       json_string (strcmp (state, "running") != 0 ? "not-applicable" : ok ? "ok" : "initializing"));
  return true;
}

static json_t *
status_fields (struct emu_call *c, json_t *row)
{
  const char *state = emu_row_str (row, "state");
  const char *status = emu_row_str (row, "check_status");
  const char *reachability = strcmp (status, "ok") == 0 ? "passed" : "initializing";
  char code[8];
  snprintf (code, sizeof code, "%d", state_code (state));
  return json_pack ("{s:s, s:s, s:s, s:s, s:s, s:s, s:s}", "availability-zone", emu_row_str (row, "az"),
                    "instance-state-name", state, "instance-state-code", code, "instance-status.status", status,
                    "system-status.status", status, "instance-status.reachability", reachability,
                    "system-status.reachability", reachability);
}

static void
xml_status_block (struct emu_call *c, const char *element, const char *status)
{
  emu_xml_start (c, element);
  emu_xml_text (c, "status", status);
  emu_xml_start (c, "details");
  emu_xml_start (c, "item");
  emu_xml_text (c, "name", "reachability");
  emu_xml_text (c, "status", strcmp (status, "ok") == 0 ? "passed" : "initializing");
  emu_xml_end (c);
  emu_xml_end (c);
  emu_xml_end (c);
}

static const struct emu_describe_text status_texts[] = {
  {"instanceId", "id"}, {"availabilityZone", "az"}, {NULL, NULL},
};

/* After status_texts. */
static void
write_status (struct emu_call *c, json_t *row, json_t *tags)
{
  xml_state (c, "instanceState", emu_row_str (row, "state"));
  xml_status_block (c, "systemStatus", emu_row_str (row, "check_status"));
  xml_status_block (c, "instanceStatus", emu_row_str (row, "check_status"));
}

/* The same instances as DescribeInstances, one item each; ids may be
 * paged here. */
static const struct emu_describe_kind instance_status_kind = {
  .ids = {INSTANCE_IDS},
  .filter_names = status_filters, .fields = status_fields, .filters_first = true,
  .rows = instance_rows, .untagged = true,
  .read = read_include_all, .keep = keep_status,
  .page_min = 5, .set = "instanceStatusSet", .texts = status_texts, .write = write_status,
};

EMU_DESCRIBE_HANDLER (describe_instance_status, instance_status_kind)

/* ---- state changes ---- */

enum change { CHANGE_START, CHANGE_STOP, CHANGE_TERMINATE };

/* The state an instance moves to, or NULL when it stays; *refuse when the
 * change is not possible from its state (IncorrectInstanceState). */
static const char *
next_state (enum change what, const char *state, bool *refuse)
{
  *refuse = false;
  switch (what)
    {
    case CHANGE_START:
      if (strcmp (state, "stopped") == 0)
        return "pending";
      if (strcmp (state, "pending") == 0 || strcmp (state, "running") == 0)
        return NULL;
      break;
    case CHANGE_STOP:
      if (strcmp (state, "running") == 0)
        return "stopping";
      if (strcmp (state, "stopping") == 0 || strcmp (state, "stopped") == 0)
        return NULL;
      break;
    case CHANGE_TERMINATE:
      if (strcmp (state, "terminated") == 0 || strcmp (state, "shutting-down") == 0)
        return NULL;
      return "shutting-down";
    }
  *refuse = true;
  return NULL;
}

static int
change_instances (struct emu_call *c, enum change what, const char *set_name)
{
  size_t n = 0;
  _cleanup_free_ const char **ids = required_ids (c, &n);
  if (ids == NULL)
    return -1;
  bool force = false;
  if (what == CHANGE_STOP && emu_param_bool (c, "Force", false, &force) < 0)
    return -1;
  _cleanup_error_ kiln_error *err = NULL;
  if (emu_db_begin (c->emu, &err) < 0)
    return emu_fail_internal (c, err);
  _cleanup_json_ json_t *rows = instances_by_id (c, ids, n);
  if (rows == NULL)
    {
      emu_db_end (c->emu, false, NULL);
      return -1;
    }
  size_t i;
  json_t *row;
  json_array_foreach (rows, i, row)
    {
      bool refuse;
      next_state (what, emu_row_str (row, "state"), &refuse);
      if (refuse)
        {
          emu_db_end (c->emu, false, NULL);
          return emu_fail (c, 400, "IncorrectInstanceState", "The instance '%s' is not in a state from which it can "
                           "be %s.", emu_row_str (row, "id"), what == CHANGE_START ? "started" : "stopped");
        }
    }
  char now[24];
  snprintf (now, sizeof now, "%lld", (long long) c->now);
  char stamp[32];
  emu_format_time (c->now, stamp);
  _cleanup_free_ char *reason = NULL;
  reason = kiln_xasprintf ("User initiated (%.19s GMT)", stamp);
  /* "2026-11-24T10:00:00" → "2026-11-24 10:00:00", EC2's wording. */
  reason[strlen ("User initiated (") + 10] = ' ';
  _cleanup_json_ json_t *moved = json_array ();
  json_array_foreach (rows, i, row)
    {
      bool refuse;
      const char *to = next_state (what, emu_row_str (row, "state"), &refuse);
      json_object_set_new (row, "previous", json_string (emu_row_str (row, "state")));
      if (to == NULL)
        continue;
      if (emu_db_exec (c->emu, &err, "UPDATE instances SET state = ?, state_changed = ?, state_transition_reason = ?, "
                       "state_reason_code = NULL, state_reason_message = NULL, agent_online = CASE WHEN ? = 'pending' "
                       "THEN 0 ELSE agent_online END WHERE id = ?", to,
                       now, what == CHANGE_START ? "" : reason, to, emu_row_str (row, "id")) < 0)
        {
          emu_db_end (c->emu, false, NULL);
          return emu_fail_internal (c, err);
        }
      json_object_set_new (row, "state", json_string (to));
      json_array_append_new (moved, json_string (emu_row_str (row, "id")));
    }
  if (emu_db_end (c->emu, true, &err) < 0)
    return emu_fail_internal (c, err);
  json_array_foreach (moved, i, row)
    {
      const char *id = json_string_value (row);
      if (what == CHANGE_START)
        emu_vmhost_start (c->emu, id);
      else if (what == CHANGE_STOP)
        emu_vmhost_stop (c->emu, id, force);
      else
        emu_vmhost_terminate (c->emu, id);
    }
  emu_xml_start (c, set_name);
  json_array_foreach (rows, i, row)
    {
      emu_xml_start (c, "item");
      emu_xml_text (c, "instanceId", emu_row_str (row, "id"));
      xml_state (c, "currentState", emu_row_str (row, "state"));
      xml_state (c, "previousState", emu_row_str (row, "previous"));
      emu_xml_end (c);
    }
  emu_xml_end (c);
  return 0;
}

static int
start_instances (struct emu_call *c)
{
  return change_instances (c, CHANGE_START, "instancesSet");
}

static int
stop_instances (struct emu_call *c)
{
  return change_instances (c, CHANGE_STOP, "instancesSet");
}

static int
terminate_instances (struct emu_call *c)
{
  return change_instances (c, CHANGE_TERMINATE, "instancesSet");
}

static int
reboot_instances (struct emu_call *c)
{
  size_t n = 0;
  _cleanup_free_ const char **ids = required_ids (c, &n);
  if (ids == NULL)
    return -1;
  _cleanup_json_ json_t *rows = instances_by_id (c, ids, n);
  if (rows == NULL)
    return -1;
  size_t i;
  json_t *row;
  json_array_foreach (rows, i, row)
    {
      const char *state = emu_row_str (row, "state");
      if (strcmp (state, "terminated") == 0 || strcmp (state, "shutting-down") == 0)
        return emu_fail (c, 400, "IncorrectInstanceState", "The instance '%s' is not in a state from which it can be "
                         "rebooted.", emu_row_str (row, "id"));
    }
  /* EC2 ignores reboots of instances that are not running. */
  json_array_foreach (rows, i, row)
    if (strcmp (emu_row_str (row, "state"), "running") == 0)
      emu_vmhost_reboot (c->emu, emu_row_str (row, "id"));
  emu_xml_bool (c, "return", true);
  return 0;
}

static int
get_console_output (struct emu_call *c)
{
  const char *id;
  if (emu_param_required (c, "InstanceId", &id) < 0)
    return -1;
  _cleanup_json_ json_t *rows = instances_by_id (c, &id, 1);
  if (rows == NULL)
    return -1;
  emu_xml_text (c, "instanceId", id);
  emu_xml_time (c, "timestamp", c->now);
  _cleanup_free_ char *text = emu_vmhost_console (c->emu, id, CONSOLE_MAX_BYTES);
  if (text && *text)
    {
      _cleanup_free_ char *b64 = kiln_base64_encode ((const unsigned char *) text, strlen (text));
      emu_xml_text (c, "output", b64);
    }
  return 0;
}

const struct emu_operation emu_ec2_instance_ops[] = {
  {"RunInstances", run_instances},
  {"DescribeInstances", describe_instances},
  {"DescribeInstanceStatus", describe_instance_status},
  {"StartInstances", start_instances},
  {"StopInstances", stop_instances},
  {"RebootInstances", reboot_instances},
  {"TerminateInstances", terminate_instances},
  {"GetConsoleOutput", get_console_output},
  {NULL, NULL},
};
