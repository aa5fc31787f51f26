/* infrastructure.c - reading Image Builder's infrastructure configuration
 * for a driver (see infrastructure.h).
 *
 * Every field of CreateInfrastructureConfiguration is either read, refused
 * as not supported by kiln yet, or (on a local driver) refused as having no
 * meaning there; anything else is an unknown key.  `tags` (the
 * configuration's own tags in Image Builder) and `clientToken` (its
 * idempotency token) are checked and then dropped: kiln keeps no
 * configuration resource for them to belong to. */
#include "infrastructure.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api_input.h"
#include "aws_instance_types.h"
#include "buf.h"
#include "cleanup.h"
#include "xalloc.h"

static const char *const infrastructure_keys[] = {
  "name",    "description",                "instanceTypes", "instanceProfileName", "securityGroupIds", "subnetId",
  "keyPair", "terminateInstanceOnFailure", "resourceTags",  "tags",                "clientToken",      NULL,
};

static const struct kiln_api_refusal infrastructure_not_yet[] = {
  {"logging", "kiln does not upload build logs to S3"},
  {"snsTopicArn", NULL},
  {"instanceMetadataOptions", NULL},
  {"placement", NULL},
  {NULL, NULL},
};

/* Fields that only place or reach an EC2 instance, and why a local guest has
 * no use for them. */
static const struct kiln_api_refusal cloud_only[] = {
  {"subnetId", "a local guest is in no VPC subnet"},
  {"securityGroupIds", "a local guest has no security groups"},
  {"instanceProfileName", "a local guest has no IAM role"},
  {"keyPair", "kiln reaches a local guest without an EC2 key pair"},
  {"resourceTags", "a local build makes no AWS resources to tag"},
  {NULL, NULL},
};

static int
read_instance_types (struct kiln_api_input *in, const struct kiln_yaml_node *n, const struct kiln_driver *driver,
                     struct kiln_infrastructure *infra)
{
  if (kiln_api_strings (in, n, "instanceTypes", true, &infra->instance_types) < 0)
    return -1;
  if (driver->cloud_images)
    return 0; /* EC2 judges the names itself */
  /* A local guest gets the size of the first type; Image Builder falls back
   * to the later ones only when EC2 has no capacity, which a local machine
   * never lacks, so they are kept as written and have no effect here. */
  const struct kiln_aws_instance_type *t = kiln_aws_instance_type_find (infra->instance_types[0]);
  if (t == NULL)
    {
      struct kiln_buf known = KILN_BUF_INIT;
      for (const struct kiln_aws_instance_type *k = kiln_aws_instance_types; k->name; k++)
        kiln_buf_printf (&known, "%s%s", k == kiln_aws_instance_types ? "" : ", ", k->name);
      kiln_api_fail (in, n->items[0],
                     "instanceTypes[0] '%s' is not an instance type kiln knows: the %s driver gives its guest "
                     "the vCPUs and memory of instanceTypes[0] (known: %s)",
                     infra->instance_types[0], driver->name, kiln_buf_str (&known));
      kiln_buf_release (&known);
      return -1;
    }
  infra->vcpus = t->vcpus;
  infra->memory_mib = (uint64_t) t->memory_mib;
  return 0;
}

static int
read_infrastructure (struct kiln_api_input *in, const struct kiln_driver *driver, struct kiln_infrastructure *infra)
{
  const struct kiln_yaml_node *root, *n;
  if (kiln_api_root (in, "an infrastructure configuration", &root) < 0
      || kiln_api_check_keys (in, root, infrastructure_keys, infrastructure_not_yet, "the infrastructure configuration")
             < 0)
    return -1;
  const struct kiln_api_refusal *c;
  if (!driver->cloud_images && (n = kiln_api_refused_key (root, cloud_only, &c)))
    return kiln_api_fail (in, n, "%s has no meaning for the %s driver (%s)", c->key, driver->name, c->reason);

  if (kiln_api_config_common (in, root, &infra->name, &infra->description) < 0)
    return -1;
  if ((n = kiln_yaml_map_get (root, "instanceTypes")) && read_instance_types (in, n, driver, infra) < 0)
    return -1;
  if ((n = kiln_yaml_map_get (root, "instanceProfileName"))
      && kiln_api_string (in, n, "instanceProfileName", &infra->instance_profile_name) < 0)
    return -1;
  if ((n = kiln_yaml_map_get (root, "securityGroupIds"))
      && kiln_api_strings (in, n, "securityGroupIds", false, &infra->security_group_ids) < 0)
    return -1;
  if ((n = kiln_yaml_map_get (root, "subnetId")) && kiln_api_string (in, n, "subnetId", &infra->subnet_id) < 0)
    return -1;
  if ((n = kiln_yaml_map_get (root, "keyPair")) && kiln_api_string (in, n, "keyPair", &infra->key_pair) < 0)
    return -1;
  if ((n = kiln_yaml_map_get (root, "terminateInstanceOnFailure"))
      && kiln_api_bool (in, n, "terminateInstanceOnFailure", &infra->terminate_instance_on_failure) < 0)
    return -1;
  if ((n = kiln_yaml_map_get (root, "resourceTags"))
      && kiln_api_tags (in, n, "resourceTags", &infra->resource_tags) < 0)
    return -1;

  return 0;
}

int
kiln_infrastructure_load (const char *path, const struct kiln_driver *driver, struct kiln_infrastructure **out,
                          kiln_error **err)
{
  struct kiln_api_input in;
  if (kiln_api_load (path, &in, err) < 0)
    {
      kiln_api_release (&in);
      return -1;
    }
  struct kiln_infrastructure *infra = kiln_xcalloc (1, sizeof *infra);
  infra->path = kiln_xstrdup (path);
  infra->terminate_instance_on_failure = -1;
  int r = read_infrastructure (&in, driver, infra);
  kiln_api_release (&in);
  if (r < 0)
    {
      kiln_infrastructure_free (infra);
      return -1;
    }
  *out = infra;
  return 0;
}

void
kiln_infrastructure_free (struct kiln_infrastructure *infra)
{
  if (infra == NULL)
    return;
  free (infra->path);
  free (infra->name);
  free (infra->description);
  kiln_strv_free (infra->instance_types);
  free (infra->subnet_id);
  kiln_strv_free (infra->security_group_ids);
  free (infra->instance_profile_name);
  free (infra->key_pair);
  kiln_strv_free (infra->resource_tags);
  free (infra);
}

static json_t *
strings_json (char *const *v)
{
  json_t *a = json_array ();
  for (; *v; v++)
    json_array_append_new (a, json_string (*v));
  return a;
}

static json_t *
tags_json (char *const *v)
{
  json_t *o = json_object ();
  for (; v[0] && v[1]; v += 2)
    json_object_set_new (o, v[0], json_string (v[1]));
  return o;
}

/* Fields in the API's order, each only when the file gave it; the local
 * machine size last, only when a local driver set it. */
json_t *
kiln_infrastructure_to_json (const struct kiln_infrastructure *infra)
{
  json_t *o = json_object ();
  json_object_set_new (o, "path", json_string (infra->path));
  if (infra->name)
    json_object_set_new (o, "name", json_string (infra->name));
  if (infra->description)
    json_object_set_new (o, "description", json_string (infra->description));
  if (infra->instance_types)
    json_object_set_new (o, "instanceTypes", strings_json (infra->instance_types));
  if (infra->instance_profile_name)
    json_object_set_new (o, "instanceProfileName", json_string (infra->instance_profile_name));
  if (infra->security_group_ids)
    json_object_set_new (o, "securityGroupIds", strings_json (infra->security_group_ids));
  if (infra->subnet_id)
    json_object_set_new (o, "subnetId", json_string (infra->subnet_id));
  if (infra->key_pair)
    json_object_set_new (o, "keyPair", json_string (infra->key_pair));
  if (infra->terminate_instance_on_failure >= 0)
    json_object_set_new (o, "terminateInstanceOnFailure", json_boolean (infra->terminate_instance_on_failure));
  if (infra->resource_tags)
    json_object_set_new (o, "resourceTags", tags_json (infra->resource_tags));
  if (infra->vcpus)
    json_object_set_new (o, "vcpus", json_integer (infra->vcpus));
  if (infra->memory_mib)
    json_object_set_new (o, "memoryMib", json_integer ((json_int_t) infra->memory_mib));
  return o;
}
