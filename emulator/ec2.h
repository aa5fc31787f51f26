/* ec2.h - what every EC2 handler shares: reading Query parameters, filters,
 * pagination, writing the XML reply (ec2_protocol.c), and tags
 * (ec2_tags.c).
 *
 * Parameters are EC2 Query's flattened names: "ImageId", lists "InstanceId.1",
 * "InstanceId.2", structures "TagSpecification.1.Tag.2.Key".  Readers that
 * validate fail the call with the error EC2 gives (MissingParameter,
 * InvalidParameterValue) and return -1. */
#ifndef KILN_EMULATOR_EC2_H
#define KILN_EMULATOR_EC2_H

#include "aws_instance_types.h"
#include "emulator.h"

/* The value of a parameter, or NULL. */
const char *emu_param (struct emu_call *c, const char *name);
const char *emu_paramf (struct emu_call *c, const char *fmt, ...) __attribute__ ((format (printf, 2, 3)));
/* The value, or fails with MissingParameter. */
int emu_param_required (struct emu_call *c, const char *name, const char **out);
/* Values of PREFIX.1, PREFIX.2, ... in index order (borrowed; the array is
 * malloc'd, NULL-terminated).  *n may be NULL. */
const char **emu_param_list (struct emu_call *c, const char *prefix, size_t *n);
/* The distinct N of parameters named PREFIX.N.<anything>, increasing;
 * malloc'd. */
int *emu_param_indices (struct emu_call *c, const char *prefix, size_t *n);
/* An integer in [min, max], def when absent. */
int emu_param_int (struct emu_call *c, const char *name, long long def, long long min, long long max,
                   long long *out);
/* "true" / "false" (any case), def when absent. */
int emu_param_bool (struct emu_call *c, const char *name, bool def, bool *out);

/* The ids (of n) no row's "id" column holds, each once, joined by ", " for
 * an EC2 NotFound message (malloc'd); NULL when every id is there. */
char *emu_missing_ids (json_t *rows, const char *const *ids, size_t n);

/* ---- filters: Filter.N.Name, Filter.N.Value.M ---- */

struct emu_filter {
  char *name;
  const char **values;    /* borrowed from the call's parameters, NULL-terminated */
  size_t n_values;
};

struct emu_filters {
  struct emu_filter *items;
  size_t n;
};

/* Parses the call's filters; a name not in known (NULL-terminated; "tag:*"
 * admits "tag:<key>") fails with InvalidParameterValue, as EC2 does. */
int emu_filters_parse (struct emu_call *c, const char *const *known, struct emu_filters *out);
void emu_filters_release (struct emu_filters *f);
/* Whether a resource passes every filter: fields maps a filter name to the
 * resource's value (a string) or values (an array of strings); "tag:K",
 * "tag-key" and "tag-value" are answered from tags (key -> value).  Values
 * match with EC2's wildcards, '*' and '?'. */
bool emu_filters_match (const struct emu_filters *f, json_t *fields, json_t *tags);

/* ---- pagination: MaxResults / NextToken ---- */

/* The slice [*start, *start + *count) of total items to return, from
 * NextToken (an offset this emulator handed out) and MaxResults
 * (min_results..1000; absent: everything).  *next_token is set to the token
 * for the following page (malloc'd) or NULL when this is the last. */
int emu_page (struct emu_call *c, size_t total, long long min_results, size_t *start, size_t *count,
              char **next_token);

/* ---- XML output ---- */

void emu_xml_start (struct emu_call *c, const char *name);
void emu_xml_end (struct emu_call *c);
/* <name>value</name>; nothing when value is NULL. */
void emu_xml_text (struct emu_call *c, const char *name, const char *value);
void emu_xml_textf (struct emu_call *c, const char *name, const char *fmt, ...) __attribute__ ((format (printf, 3, 4)));
void emu_xml_bool (struct emu_call *c, const char *name, bool value);
void emu_xml_time (struct emu_call *c, const char *name, time_t t);
/* <name><item><key>K</key><value>V</value></item>...</name>, for tags
 * (key -> value); an empty set writes nothing, as EC2 does. */
void emu_xml_tag_set (struct emu_call *c, const char *name, json_t *tags);

/* ---- tags (ec2_tags.c) ---- */

/* The tags of one resource as an object key -> value (new reference; empty
 * object when none, NULL on a database error after failing the call). */
json_t *emu_tags_of (struct emu_call *c, const char *resource_id);
/* Tags of every resource of the caller's account and region, resource id ->
 * {key -> value}; for describing many resources at once. */
json_t *emu_tags_all (struct emu_call *c);
/* Validates TagSpecification.N for the given resource types (the create
 * call's resources, e.g. {"instance", "volume", NULL}); unknown types fail
 * the call. */
int emu_tag_specs_check (struct emu_call *c, const char *const *allowed_types);
/* Stores the tags TagSpecification.N gives resource_type on resource_id. */
int emu_tag_specs_apply (struct emu_call *c, const char *resource_type, const char *resource_id);
/* Sets one tag (replacing its value). */
int emu_tag_set (struct emu_call *c, const char *resource_id, const char *resource_type, const char *key,
                 const char *value);
/* The resource type EC2 names an id's kind by ("instance", "image",
 * "snapshot", "key-pair", "reservation", "volume"), or NULL when the prefix is
 * unknown. */
const char *emu_resource_type_of (const char *id);

/* ---- images (ec2_images.c) ---- */

/* The image row (images table) for image_id if the caller may use it (owns
 * it, or it is shared with the caller's account or with all) and it is not
 * deregistered; otherwise fails the call with InvalidAMIID.Malformed or
 * InvalidAMIID.NotFound and returns NULL.  New reference. */
json_t *emu_image_lookup (struct emu_call *c, const char *image_id);

/* Registers a local disk image file as an available AMI (for
 * `kiln-emulator import-image`): converts it to qcow2 under the data
 * directory as a completed snapshot, owned by account in region, public when
 * asked.  Works while a server runs on the same state directory.  *image_id
 * is malloc'd. */
int emu_image_import (struct kiln_emu *emu, const char *file, const char *name, const char *region,
                      const char *account, bool is_public, char **image_id, kiln_error **err);

/* Instance types: common/aws_instance_types.h (kiln_aws_instance_type_find),
 * one table with kiln's local builds; DescribeInstanceTypes is in
 * ec2_regions.c. */

#endif
