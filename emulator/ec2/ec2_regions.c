/* ec2_regions.c - the static geography of kiln-emulator's EC2: which
 * regions it serves, the availability zones of each, and the instance types
 * it knows (DescribeRegions, DescribeAvailabilityZones,
 * DescribeInstanceTypes).
 *
 * Nothing here is stored: the answers are tables.  Every region has three
 * zones, "<region>a" to "<region>c", with zone ids in EC2's scheme
 * ("use1-az1": the region's short name, then the zone's number); EC2 maps
 * letters to ids differently per account, this emulator keeps them equal
 * everywhere, which is stable and enough for callers that only need a valid
 * pair.  The instance types are common/aws_instance_types.c's table, the
 * one kiln's local builds size guests by; qemu mode sizes guests from it
 * too (kiln_aws_instance_type_find). */
#include "ec2.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "cleanup.h"
#include "xalloc.h"

const char *const emu_regions[] = {
  "us-east-1",      "us-east-2",      "us-west-1",      "us-west-2",      "ca-central-1",   "eu-west-1",
  "eu-west-2",      "eu-west-3",      "eu-central-1",   "eu-north-1",     "ap-south-1",     "ap-southeast-1",
  "ap-southeast-2", "ap-northeast-1", "ap-northeast-2", "ap-northeast-3", "sa-east-1",      NULL,
};

bool
emu_region_known (const char *name)
{
  for (const char *const *r = emu_regions; name && *r; r++)
    if (strcmp (*r, name) == 0)
      return true;
  return false;
}

static void
filters_releasep (struct emu_filters *f)
{
  emu_filters_release (f);
}

#define _cleanup_filters_ __attribute__ ((cleanup (filters_releasep)))

static bool
str_in (const char *s, const char **list)
{
  for (; list && *list; list++)
    if (strcmp (s, *list) == 0)
      return true;
  return false;
}

/* ---- DescribeRegions ---- */

static const char *const describe_regions_filters[] = {"region-name", "endpoint", "opt-in-status", NULL};

/* Every region served needs no opt-in, so AllRegions changes nothing. */
static int
op_describe_regions (struct emu_call *c)
{
  size_t n_names = 0;
  _cleanup_free_ const char **names = emu_param_list (c, "RegionName", &n_names);
  for (size_t i = 0; i < n_names; i++)
    if (!emu_region_known (names[i]))
      return emu_fail_param (c, "Invalid region name");
  bool all = false;
  if (emu_param_bool (c, "AllRegions", false, &all) < 0)
    return -1;
  _cleanup_filters_ struct emu_filters filters = {0};
  if (emu_filters_parse (c, describe_regions_filters, &filters) < 0)
    return -1;
  _cleanup_json_ json_t *no_tags = json_object ();

  emu_xml_start (c, "regionInfo");
  for (const char *const *r = emu_regions; *r; r++)
    {
      if (n_names && !str_in (*r, names))
        continue;
      _cleanup_free_ char *endpoint = NULL;
      endpoint = kiln_xasprintf ("ec2.%s.amazonaws.com", *r);
      _cleanup_json_ json_t *fields = json_pack ("{s:s, s:s, s:s}", "region-name", *r, "endpoint", endpoint,
                                                 "opt-in-status", "opt-in-not-required");
      if (!emu_filters_match (&filters, fields, no_tags))
        continue;
      emu_xml_start (c, "item");
      emu_xml_text (c, "regionName", *r);
      emu_xml_text (c, "regionEndpoint", endpoint);
      emu_xml_text (c, "optInStatus", "opt-in-not-required");
      emu_xml_end (c);
    }
  emu_xml_end (c);
  return 0;
}

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

static int
op_describe_availability_zones (struct emu_call *c)
{
  _cleanup_free_ char *short_name = region_short_name (c->region);
  char zone_names[ZONES_PER_REGION][64], zone_ids[ZONES_PER_REGION][64];
  for (int z = 0; z < ZONES_PER_REGION; z++)
    {
      snprintf (zone_names[z], sizeof zone_names[z], "%s%c", c->region, 'a' + z);
      snprintf (zone_ids[z], sizeof zone_ids[z], "%s-az%d", short_name, z + 1);
    }

  size_t n_names = 0, n_ids = 0;
  _cleanup_free_ const char **names = emu_param_list (c, "ZoneName", &n_names);
  _cleanup_free_ const char **ids = emu_param_list (c, "ZoneId", &n_ids);
  for (size_t i = 0; i < n_names + n_ids; i++)
    {
      bool by_name = i < n_names;
      const char *want = by_name ? names[i] : ids[i - n_names];
      bool found = false;
      for (int z = 0; z < ZONES_PER_REGION; z++)
        found = found || strcmp (want, by_name ? zone_names[z] : zone_ids[z]) == 0;
      if (!found)
        return emu_fail_param (c, by_name ? "Invalid availability zone: [%s]" : "Invalid availability zone ID: [%s]",
                               want);
    }
  bool all = false;
  if (emu_param_bool (c, "AllAvailabilityZones", false, &all) < 0)
    return -1;
  _cleanup_filters_ struct emu_filters filters = {0};
  if (emu_filters_parse (c, describe_azs_filters, &filters) < 0)
    return -1;
  _cleanup_json_ json_t *no_tags = json_object ();

  emu_xml_start (c, "availabilityZoneInfo");
  for (int z = 0; z < ZONES_PER_REGION; z++)
    {
      /* Names and ids together select their union. */
      if ((n_names || n_ids) && !str_in (zone_names[z], names) && !str_in (zone_ids[z], ids))
        continue;
      _cleanup_json_ json_t *fields
          = json_pack ("{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s}", "zone-name", zone_names[z], "zone-id",
                       zone_ids[z], "state", "available", "region-name", c->region, "zone-type", "availability-zone",
                       "group-name", c->region, "opt-in-status", "opt-in-not-required", "network-border-group",
                       c->region);
      if (!emu_filters_match (&filters, fields, no_tags))
        continue;
      emu_xml_start (c, "item");
      emu_xml_text (c, "zoneState", "available");
      emu_xml_text (c, "optInStatus", "opt-in-not-required");
      emu_xml_start (c, "messageSet");
      emu_xml_end (c);
      emu_xml_text (c, "regionName", c->region);
      emu_xml_text (c, "zoneName", zone_names[z]);
      emu_xml_text (c, "zoneId", zone_ids[z]);
      emu_xml_text (c, "groupName", c->region);
      emu_xml_text (c, "networkBorderGroup", c->region);
      emu_xml_text (c, "zoneType", "availability-zone");
      emu_xml_end (c);
    }
  emu_xml_end (c);
  return 0;
}

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

static int
op_describe_instance_types (struct emu_call *c)
{
  size_t n_wanted = 0;
  _cleanup_free_ const char **wanted = emu_param_list (c, "InstanceType", &n_wanted);
  struct kiln_buf unknown = KILN_BUF_INIT;
  for (size_t i = 0; i < n_wanted; i++)
    if (kiln_aws_instance_type_find (wanted[i]) == NULL)
      kiln_buf_printf (&unknown, "%s%s", unknown.len ? ", " : "", wanted[i]);
  if (unknown.len)
    {
      int r = emu_fail (c, 400, "InvalidInstanceType", "The following supplied instance types do not exist: [%s]",
                        kiln_buf_str (&unknown));
      kiln_buf_release (&unknown);
      return r;
    }
  /* EC2 takes 5..100 here, less than the 1000 emu_page allows. */
  long long max_results = 0;
  if (emu_param_int (c, "MaxResults", 0, 5, 100, &max_results) < 0)
    return -1;
  _cleanup_filters_ struct emu_filters filters = {0};
  if (emu_filters_parse (c, describe_types_filters, &filters) < 0)
    return -1;
  _cleanup_json_ json_t *no_tags = json_object ();

  size_t n_types = 0;
  while (kiln_aws_instance_types[n_types].name)
    n_types++;
  _cleanup_free_ const struct kiln_aws_instance_type **matched = kiln_xcalloc (n_types, sizeof *matched);
  size_t n_matched = 0;
  for (const struct kiln_aws_instance_type *t = kiln_aws_instance_types; t->name; t++)
    {
      if (n_wanted && !str_in (t->name, wanted))
        continue;
      struct type_traits tr = traits_of (t);
      _cleanup_json_ json_t *fields = json_pack (
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
      if (emu_filters_match (&filters, fields, no_tags))
        matched[n_matched++] = t;
    }

  size_t start = 0, count = 0;
  _cleanup_free_ char *next_token = NULL;
  if (emu_page (c, n_matched, 5, &start, &count, &next_token) < 0)
    return -1;

  static const char *const usage_classes[] = {"on-demand", "spot", NULL};
  static const char *const root_device_types[] = {"ebs", NULL};
  static const char *const virtualization_types[] = {"hvm", NULL};
  static const char *const architectures[] = {"x86_64", NULL};
  static const char *const boot_bios[] = {"legacy-bios", NULL};
  static const char *const boot_both[] = {"legacy-bios", "uefi", NULL};

  emu_xml_start (c, "instanceTypeSet");
  for (size_t i = start; i < start + count; i++)
    {
      const struct kiln_aws_instance_type *t = matched[i];
      struct type_traits tr = traits_of (t);
      emu_xml_start (c, "item");
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
      emu_xml_end (c);
    }
  emu_xml_end (c);
  emu_xml_text (c, "nextToken", next_token);
  return 0;
}

const struct emu_operation emu_ec2_region_ops[] = {
  {"DescribeRegions", op_describe_regions},
  {"DescribeAvailabilityZones", op_describe_availability_zones},
  {"DescribeInstanceTypes", op_describe_instance_types},
  {NULL, NULL},
};
