/* ec2_regions.c - the static geography of kiln-emulator's EC2: the regions
 * it serves (the core's emu_regions, emulator.c), the availability zones of
 * each, and the instance types it knows (DescribeRegions,
 * DescribeAvailabilityZones, DescribeInstanceTypes).
 *
 * Nothing here is stored: the answers are tables.  Every region has three
 * zones, "<region>a" to "<region>c", with zone ids in EC2's scheme
 * ("use1-az1": the region's short name, then the zone's number); EC2 maps
 * letters to ids differently per account, this emulator keeps them equal
 * everywhere, which is stable and enough for callers that only need a valid
 * pair.  The instance types are common/aws/aws_instance_types.c's table, the
 * one kiln's local builds size guests by; qemu mode sizes guests from it
 * too (kiln_aws_instance_type_find). */
#include "ec2.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "cleanup.h"
#include "store.h"
#include "xalloc.h"

/* ---- DescribeRegions ---- */

static const char *const describe_regions_filters[] = {"region-name", "endpoint", "opt-in-status", NULL};

static bool
region_valid (struct emu_call *c, const struct emu_describe_ids *ids, const char *name)
{
  return emu_region_known (name);
}

/* Every region served, as a row: id, its name. */
static json_t *
region_rows (struct emu_call *c, struct emu_describe_call *d, kiln_error **err)
{
  json_t *rows = json_array ();
  for (const char *const *r = emu_regions; *r; r++)
    json_array_append_new (rows, json_pack ("{s:s}", "id", *r));
  return rows;
}

static char *
region_endpoint (json_t *row)
{
  return kiln_xasprintf ("ec2.%s.amazonaws.com", emu_row_str (row, "id"));
}

static json_t *
region_fields (struct emu_call *c, json_t *row)
{
  _cleanup_free_ char *endpoint = region_endpoint (row);
  return json_pack ("{s:s, s:s, s:s}", "region-name", emu_row_str (row, "id"), "endpoint", endpoint,
                    "opt-in-status", "opt-in-not-required");
}

/* Every region served needs no opt-in, so AllRegions changes nothing. */
static int
check_all_regions (struct emu_call *c, struct emu_describe_call *d)
{
  bool all = false;
  return emu_param_bool (c, "AllRegions", false, &all);
}

static void
write_region (struct emu_call *c, json_t *row, json_t *tags)
{
  _cleanup_free_ char *endpoint = region_endpoint (row);
  emu_xml_text (c, "regionName", emu_row_str (row, "id"));
  emu_xml_text (c, "regionEndpoint", endpoint);
  emu_xml_text (c, "optInStatus", "opt-in-not-required");
}

static const struct emu_describe_kind regions_kind = {
  .ids = {{
    .param = "RegionName", .column = "id", .valid = region_valid,
    .malformed = {"InvalidParameterValue", "Invalid region name", NULL, EMU_REPORT_FIRST},
  }},
  .filter_names = describe_regions_filters, .fields = region_fields,
  .rows = region_rows, .untagged = true,
  .check = check_all_regions,
  .set = "regionInfo", .write = write_region,
};

EMU_DESCRIBE_HANDLER (op_describe_regions, regions_kind)

/* ---- DescribeAvailabilityZones ---- */

#define ZONES_PER_REGION 3

/* EC2's short form of a region for zone ids: "us-east-1" -> "use1",
 * "ap-northeast-2" -> "apne2", "eu-central-1" -> "euc1".  The middle word
 * shrinks to its first letter, or to two for the compound directions
 * (northeast, southwest, ...).  malloc'd. */
static char *
region_short_name (const char *region)
{
  const char *d1 = strchr (region, '-');
  const char *d2 = d1 ? strchr (d1 + 1, '-') : NULL;
  if (d1 == NULL || d2 == NULL || d2 == d1 + 1)
    {
      struct kiln_buf b = KILN_BUF_INIT;
      for (const char *p = region; *p; p++)
        if (*p != '-')
          kiln_buf_append (&b, p, 1);
      return kiln_buf_steal (&b);
    }
  const char *word = d1 + 1;
  size_t word_len = (size_t) (d2 - word);
  char dir[3] = {word[0], 0, 0};
  if (word_len > 5 && (strncmp (word, "north", 5) == 0 || strncmp (word, "south", 5) == 0))
    dir[1] = word[5];
  char *out = NULL;
  out = kiln_xasprintf ("%.*s%s%s", (int) (d1 - region), region, dir, d2 + 1);
  return out;
}

static const char *const describe_azs_filters[] = {"zone-name", "zone-id", "state", "region-name", "zone-type",
                                                   "group-name", "opt-in-status", "network-border-group", NULL};

/* The zones of the caller's region as rows: name ("us-east-1a") and id
 * ("use1-az1"). */
static json_t *
zone_rows (struct emu_call *c, struct emu_describe_call *d, kiln_error **err)
{
  _cleanup_free_ char *short_name = region_short_name (c->region);
  json_t *rows = json_array ();
  for (int z = 0; z < ZONES_PER_REGION; z++)
    {
      char name[64], id[64];
      snprintf (name, sizeof name, "%s%c", c->region, 'a' + z);
      snprintf (id, sizeof id, "%s-az%d", short_name, z + 1);
      json_array_append_new (rows, json_pack ("{s:s, s:s}", "name", name, "id", id));
    }
  return rows;
}

/* Whether a zone of the caller's region has this name (ids->column
 * "name") or zone id ("id"). */
static bool
zone_valid (struct emu_call *c, const struct emu_describe_ids *ids, const char *want)
{
  _cleanup_json_ json_t *rows = zone_rows (c, NULL, NULL);
  size_t i;
  json_t *row;
  json_array_foreach (rows, i, row)
    if (strcmp (emu_row_str (row, ids->column), want) == 0)
      return true;
  return false;
}

static json_t *
zone_fields (struct emu_call *c, json_t *row)
{
  return json_pack ("{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s}", "zone-name", emu_row_str (row, "name"), "zone-id",
                    emu_row_str (row, "id"), "state", "available", "region-name", c->region, "zone-type",
                    "availability-zone", "group-name", c->region, "opt-in-status", "opt-in-not-required",
                    "network-border-group", c->region);
}

static int
check_all_zones (struct emu_call *c, struct emu_describe_call *d)
{
  bool all = false;
  return emu_param_bool (c, "AllAvailabilityZones", false, &all);
}

static void
write_zone (struct emu_call *c, json_t *row, json_t *tags)
{
  emu_xml_text (c, "zoneState", "available");
  emu_xml_text (c, "optInStatus", "opt-in-not-required");
  emu_xml_start (c, "messageSet");
  emu_xml_end (c);
  emu_xml_text (c, "regionName", c->region);
  emu_xml_text (c, "zoneName", emu_row_str (row, "name"));
  emu_xml_text (c, "zoneId", emu_row_str (row, "id"));
  emu_xml_text (c, "groupName", c->region);
  emu_xml_text (c, "networkBorderGroup", c->region);
  emu_xml_text (c, "zoneType", "availability-zone");
}

/* Zones by name and by zone id (together: their union); an unknown one is
 * an invalid parameter, as EC2 answers. */
static const struct emu_describe_kind zones_kind = {
  .ids = {
    {.param = "ZoneName", .column = "name", .valid = zone_valid,
     .malformed = {"InvalidParameterValue", "Invalid availability zone: [%s]", NULL, EMU_REPORT_FIRST}},
    {.param = "ZoneId", .column = "id", .valid = zone_valid,
     .malformed = {"InvalidParameterValue", "Invalid availability zone ID: [%s]", NULL, EMU_REPORT_FIRST}},
  },
  .filter_names = describe_azs_filters, .fields = zone_fields,
  .rows = zone_rows, .untagged = true,
  .check = check_all_zones,
  .set = "availabilityZoneInfo", .write = write_zone,
};

EMU_DESCRIBE_HANDLER (op_describe_availability_zones, zones_kind)

/* ---- DescribeInstanceTypes ---- */

/* What the table does not say, derived from the family: t2 has one thread
 * per core and boots BIOS only; the later families run two threads per core
 * and boot BIOS or UEFI; t2 and t3 are burstable. */
struct type_traits {
  int cores;
  int threads_per_core;
  bool burstable;
  bool free_tier;
  bool uefi;
};

static struct type_traits
traits_of (const struct kiln_aws_instance_type *t)
{
  bool t2 = strncmp (t->name, "t2.", 3) == 0;
  struct type_traits tr = {
    .threads_per_core = t2 || t->vcpus < 2 ? 1 : 2,
    .burstable = t2 || strncmp (t->name, "t3.", 3) == 0,
    .free_tier = strcmp (t->name, "t2.micro") == 0 || strcmp (t->name, "t3.micro") == 0,
    .uefi = !t2,
  };
  tr.cores = t->vcpus / tr.threads_per_core;
  return tr;
}

static void
xml_item_list (struct emu_call *c, const char *name, const char *const *items)
{
  emu_xml_start (c, name);
  for (; *items; items++)
    emu_xml_text (c, "item", *items);
  emu_xml_end (c);
}

static const char *const describe_types_filters[] = {
  "instance-type", "vcpu-info.default-vcpus", "vcpu-info.default-cores", "vcpu-info.default-threads-per-core",
  "memory-info.size-in-mib", "current-generation", "processor-info.supported-architecture", "hypervisor",
  "free-tier-eligible", "burstable-performance-supported", "bare-metal", "supported-usage-class",
  "supported-root-device-type", "supported-virtualization-type", "supported-boot-mode", NULL};

static bool
type_valid (struct emu_call *c, const struct emu_describe_ids *ids, const char *name)
{
  return kiln_aws_instance_type_find (name) != NULL;
}

/* The table's types as rows: id, the type's name. */
static json_t *
type_rows (struct emu_call *c, struct emu_describe_call *d, kiln_error **err)
{
  json_t *rows = json_array ();
  for (const struct kiln_aws_instance_type *t = kiln_aws_instance_types; t->name; t++)
    json_array_append_new (rows, json_pack ("{s:s}", "id", t->name));
  return rows;
}

static json_t *
type_fields (struct emu_call *c, json_t *row)
{
  const struct kiln_aws_instance_type *t = kiln_aws_instance_type_find (emu_row_str (row, "id"));
  struct type_traits tr = traits_of (t);
  json_t *fields = json_pack (
      "{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:[ss], s:s, s:s, s:o}", "instance-type", t->name,
      "current-generation", "true", "processor-info.supported-architecture", "x86_64", "hypervisor", "kvm",
      "free-tier-eligible", tr.free_tier ? "true" : "false", "burstable-performance-supported",
      tr.burstable ? "true" : "false", "bare-metal", "false", "supported-usage-class", "on-demand", "spot",
      "supported-root-device-type", "ebs", "supported-virtualization-type", "hvm", "supported-boot-mode",
      tr.uefi ? json_pack ("[ss]", "legacy-bios", "uefi") : json_pack ("[s]", "legacy-bios"));
  const struct {
    const char *filter;
    int value;
  } numbers[] = {
    {"vcpu-info.default-vcpus", t->vcpus},
    {"vcpu-info.default-cores", tr.cores},
    {"vcpu-info.default-threads-per-core", tr.threads_per_core},
    {"memory-info.size-in-mib", t->memory_mib},
  };
  for (size_t k = 0; k < sizeof numbers / sizeof numbers[0]; k++)
    {
      char num[24];
      snprintf (num, sizeof num, "%d", numbers[k].value);
      json_object_set_new (fields, numbers[k].filter, json_string (num));
    }
  return fields;
}

/* EC2 takes 5..100 here, less than the 1000 emu_page allows. */
static int
check_types_max_results (struct emu_call *c, struct emu_describe_call *d)
{
  long long max_results = 0;
  return emu_param_int (c, "MaxResults", 0, 5, 100, &max_results);
}

static void
write_type (struct emu_call *c, json_t *row, json_t *tags)
{
  static const char *const usage_classes[] = {"on-demand", "spot", NULL};
  static const char *const root_device_types[] = {"ebs", NULL};
  static const char *const virtualization_types[] = {"hvm", NULL};
  static const char *const architectures[] = {"x86_64", NULL};
  static const char *const boot_bios[] = {"legacy-bios", NULL};
  static const char *const boot_both[] = {"legacy-bios", "uefi", NULL};

  const struct kiln_aws_instance_type *t = kiln_aws_instance_type_find (emu_row_str (row, "id"));
  struct type_traits tr = traits_of (t);
  emu_xml_text (c, "instanceType", t->name);
  emu_xml_bool (c, "currentGeneration", true);
  emu_xml_bool (c, "freeTierEligible", tr.free_tier);
  xml_item_list (c, "supportedUsageClasses", usage_classes);
  xml_item_list (c, "supportedRootDeviceTypes", root_device_types);
  xml_item_list (c, "supportedVirtualizationTypes", virtualization_types);
  emu_xml_bool (c, "bareMetal", false);
  emu_xml_text (c, "hypervisor", "kvm");
  emu_xml_start (c, "processorInfo");
  xml_item_list (c, "supportedArchitectures", architectures);
  emu_xml_end (c);
  emu_xml_start (c, "vCpuInfo");
  emu_xml_textf (c, "defaultVCpus", "%d", t->vcpus);
  emu_xml_textf (c, "defaultCores", "%d", tr.cores);
  emu_xml_textf (c, "defaultThreadsPerCore", "%d", tr.threads_per_core);
  emu_xml_end (c);
  emu_xml_start (c, "memoryInfo");
  emu_xml_textf (c, "sizeInMiB", "%d", t->memory_mib);
  emu_xml_end (c);
  emu_xml_bool (c, "instanceStorageSupported", false);
  emu_xml_bool (c, "hibernationSupported", false);
  emu_xml_bool (c, "burstablePerformanceSupported", tr.burstable);
  emu_xml_bool (c, "dedicatedHostsSupported", false);
  emu_xml_bool (c, "autoRecoverySupported", true);
  xml_item_list (c, "supportedBootModes", tr.uefi ? boot_both : boot_bios);
}

/* Every unknown type asked for is named in one error. */
static const struct emu_describe_kind types_kind = {
  .ids = {{
    .param = "InstanceType", .column = "id", .valid = type_valid,
    .malformed = {"InvalidInstanceType", "The following supplied instance types do not exist: [%s]", NULL,
                  EMU_REPORT_EVERY},
  }},
  .filter_names = describe_types_filters, .fields = type_fields,
  .rows = type_rows, .untagged = true,
  .check = check_types_max_results,
  .page_min = 5, .set = "instanceTypeSet", .write = write_type,
};

EMU_DESCRIBE_HANDLER (op_describe_instance_types, types_kind)

const struct emu_operation emu_ec2_region_ops[] = {
  {"DescribeRegions", op_describe_regions},
  {"DescribeAvailabilityZones", op_describe_availability_zones},
  {"DescribeInstanceTypes", op_describe_instance_types},
  {NULL, NULL},
};
