/* distribution.h - Image Builder's distribution configuration, read from the
 * file `kiln build --distribution FILE` names, and the AMI name template.
 *
 * The file (YAML or JSON) takes the field names of Image Builder's
 * CreateDistributionConfiguration input: distributions[] with region and
 * amiDistributionConfiguration (name, description, amiTags,
 * launchPermission {userIds, userGroups, organizationArns,
 * organizationalUnitArns}).  On a cloud driver every distribution is a
 * region the image ends up in.  On a local driver there is one image: exactly
 * one distribution is allowed, its amiDistributionConfiguration.name names
 * the published file and its description goes in the manifest; fields with
 * no local meaning (amiTags, launchPermission, ...) are refused with their
 * FILE:LINE:COLUMN, as are fields kiln does not support yet.
 *
 * The name may hold {{ imagebuilder:buildDate }} and
 * {{ imagebuilder:buildVersion }} (spaces inside the braces optional);
 * kiln_ami_name_expand() fills them in.  Both functions are pure apart from
 * reading the file. */
#ifndef KILN_BUILDER_DISTRIBUTION_H
#define KILN_BUILDER_DISTRIBUTION_H

#include <jansson.h>

#include "cleanup.h"
#include "driver.h"
#include "error.h"

struct kiln_distribution_config {
  char *path;
  char *name;                          /* optional here (Image Builder requires it) */
  char *description;
  /* The distributions in file order, regions unique.  Strings are owned by
   * the config; name is the template as written (NULL: none given). */
  struct kiln_image_distribution *targets;
  size_t n_targets;
};

/* Reads and checks path for driver.  Errors name FILE:LINE:COLUMN. */
int kiln_distribution_load (const char *path, const struct kiln_driver *driver, struct kiln_distribution_config **out,
                            kiln_error **err);
void kiln_distribution_free (struct kiln_distribution_config *d);
KILN_DEFINE_CLEANUP (struct kiln_distribution_config, kiln_distribution_free)
/* The configuration as JSON (the golden form, and the manifest's "distribution"). */
json_t *kiln_distribution_to_json (const struct kiln_distribution_config *d);

/* Expands an AMI name template: build_date as Image Builder writes it
 * ("2026-11-24T05-50-38.123Z"), build_version a decimal number.  The result
 * must be a valid AMI name (3 to 128 characters of letters, digits and
 * ( ) [ ] space . / - ' @ _): otherwise an error quoting it.  Unknown
 * {{ ... }} variables are errors naming them. */
int kiln_ami_name_expand (const char *template, const char *build_date, const char *build_version, char **out,
                          kiln_error **err);

#endif
