/* infrastructure.h - Image Builder's infrastructure configuration, read from
 * the file `kiln build --infrastructure FILE` names.
 *
 * The file (YAML or JSON) takes the field names of Image Builder's
 * CreateInfrastructureConfiguration input, so the file given to
 * `aws imagebuilder create-infrastructure-configuration --cli-input-yaml`
 * works unchanged.  What a field means depends on the driver: on a cloud
 * driver (ec2) they are where and how instances launch; on a local driver
 * instanceTypes give the guest the vCPUs and memory of that EC2 type and
 * terminateInstanceOnFailure false keeps a failed build's instance, and every
 * field without a local meaning (subnetId, keyPair, ...) is refused with its
 * FILE:LINE:COLUMN.  Fields kiln does not support yet are refused the same way.
 *
 * kiln_infrastructure_load() is pure apart from reading the file. */
#ifndef KILN_BUILDER_INFRASTRUCTURE_H
#define KILN_BUILDER_INFRASTRUCTURE_H

#include <stdint.h>

#include <jansson.h>

#include "cleanup.h"
#include "driver.h"
#include "error.h"

struct kiln_infrastructure {
  char *path;
  char *name;                          /* optional here (Image Builder requires it) */
  char *description;
  char **instance_types;               /* NULL-terminated, or NULL: the driver's default */
  char *subnet_id;
  char **security_group_ids;           /* NULL-terminated, or NULL */
  char *instance_profile_name;
  char *key_pair;
  int terminate_instance_on_failure;   /* -1: not given; 0 or 1 */
  char **resource_tags;                /* key, value, ..., NULL, or NULL: tags on what a build launches */
  /* Local drivers: the machine size of instance_types[0] (0: not given). */
  int vcpus;
  uint64_t memory_mib;
};

/* Reads and checks path for driver.  Errors name FILE:LINE:COLUMN. */
int kiln_infrastructure_load (const char *path, const struct kiln_driver *driver, struct kiln_infrastructure **out,
                              kiln_error **err);
void kiln_infrastructure_free (struct kiln_infrastructure *infra);
KILN_DEFINE_CLEANUP (struct kiln_infrastructure, kiln_infrastructure_free)
/* The settings as JSON (the golden form, and the manifest's "infrastructure"). */
json_t *kiln_infrastructure_to_json (const struct kiln_infrastructure *infra);

#endif
