/* recipe.h - image recipes and the build plan made from them.
 *
 * A recipe uses the field names of Image Builder's CreateImageRecipe input
 * (name, semanticVersion, parentImage, components[].componentArn and
 * parameters, blockDeviceMappings, workingDirectory,
 * additionalInstanceConfiguration.userDataOverride, ...), in YAML or JSON, so
 * the file given to `aws imagebuilder create-image-recipe --cli-input-yaml`
 * works unchanged.  Locally, componentArn may be a path to a component
 * document and parentImage a path to a disk image (both relative to the
 * recipe's folder).  For cloud drivers parentImage may also be a
 * DescribeImages query, as Packer's source_ami_filter:
 *   parentImage: {filters: {name: "debian-12-*"}, owners: [self], mostRecent: true}
 *
 * kiln_plan_make() is pure apart from reading the documents it names: recipe
 * in, plan out (components loaded and validated, parameters checked, stages
 * laid out), so it is golden-tested without machines. */
#ifndef KILN_BUILDER_RECIPE_H
#define KILN_BUILDER_RECIPE_H

#include <stdint.h>

#include <jansson.h>

#include "cleanup.h"
#include "component.h"
#include "error.h"
#include "yaml_tree.h"

struct kiln_recipe_component {
  char *arn;                 /* componentArn as written */
  char *path;                /* the document it resolves to */
  json_t *parameters;        /* name -> string */
  struct kiln_component *doc;
};

struct kiln_plan {
  char *recipe_path;
  char *name;
  char *version;
  char *description;
  char *parent_image;        /* resolved path, an id for cloud drivers, or
                                "filter:" + the query as JSON (see driver.h) */
  bool parent_is_file;
  uint64_t disk_size_bytes;  /* 0: the parent's size */
  char *working_directory;   /* NULL: default */
  char *user_data;           /* NULL: none */
  struct kiln_recipe_component *components;
  size_t n_components;
  json_t *recipe;            /* the recipe as read, for the manifest */
  char *recipe_sha256;
};

int kiln_plan_make (const char *recipe_path, struct kiln_plan **out, kiln_error **err);
void kiln_plan_free (struct kiln_plan *p);
KILN_DEFINE_CLEANUP (struct kiln_plan, kiln_plan_free)
/* The plan as JSON (the golden form, and the manifest's "plan"). */
json_t *kiln_plan_to_json (const struct kiln_plan *p);

/* Converts a YAML node to JSON (scalars: plain true/false/null/integers to
 * their JSON types, everything else strings). */
json_t *kiln_yaml_to_json (const struct kiln_yaml_node *n);

#endif
