/* ec2_tags.c - EC2 tags: CreateTags, DeleteTags, DescribeTags, and the tag
 * helpers every other EC2 handler uses (ec2.h): reading a resource's tags,
 * validating and applying TagSpecification.N on create calls.
 *
 * Tags live in the `tags` table, one row per (resource, key), scoped by the
 * account and region of the caller that set them.  A resource id's prefix
 * names its kind ("i-" instance, "ami-" image, ...); CreateTags checks that
 * the resource exists among the caller's own resources of that kind, because
 * the table's key is (resource_id, key): two accounts tagging one shared
 * image would overwrite each other's tags, so tagging resources one does not
 * own is refused as EC2 refuses ids it cannot see (NotFound).
 *
 * Limits are EC2's: at most 50 tags per resource, keys up to 128 characters,
 * values up to 256 (characters, not bytes), and keys beginning with "aws:"
 * are reserved for AWS. */
#include "ec2.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cleanup.h"
#include "store.h"
#include "xalloc.h"

#define TAG_MAX_PER_RESOURCE 50
#define TAG_KEY_MAX_CHARS 128
#define TAG_VALUE_MAX_CHARS 256

/* What an id's prefix says about the resource, and how CreateTags proves it
 * exists.  exists_sql takes (id, account, region); NULL means kiln-emulator
 * keeps no table for the kind, so no such resource can exist. */
struct resource_kind {
  const char *prefix;          /* without the '-' */
  const char *type;            /* EC2's ResourceType */
  bool taggable;
  const char *exists_sql;
  const char *malformed_code;
  const char *not_found_code;
  const char *not_found_before; /* the NotFound message: before the id, */
  const char *not_found_after;  /* and after it */
};

static const struct resource_kind kinds[] = {
  {"i", "instance", true, "SELECT 1 AS x FROM instances WHERE id = ? AND account = ? AND region = ?",
   "InvalidInstanceID.Malformed", "InvalidInstanceID.NotFound", "The instance ID '", "' does not exist"},
  {"ami", "image", true,
   "SELECT 1 AS x FROM images WHERE id = ? AND account = ? AND region = ? AND state <> 'deregistered'",
   "InvalidAMIID.Malformed", "InvalidAMIID.NotFound", "The image id '[", "]' does not exist"},
  {"snap", "snapshot", true, "SELECT 1 AS x FROM snapshots WHERE id = ? AND account = ? AND region = ?",
   "InvalidSnapshotID.Malformed", "InvalidSnapshot.NotFound", "The snapshot '", "' does not exist."},
  {"key", "key-pair", true, "SELECT 1 AS x FROM key_pairs WHERE id = ? AND account = ? AND region = ?",
   "InvalidID", "InvalidKeyPair.NotFound", "The key pair ID '", "' does not exist"},
  {"vol", "volume", true, NULL, "InvalidVolumeID.Malformed", "InvalidVolume.NotFound",
   "The volume '", "' does not exist."},
  /* Reservations have ids but EC2 does not let them be tagged. */
  {"r", "reservation", false, NULL, "InvalidID", "InvalidID", "The ID '", "' is not valid"},
};

static const struct resource_kind *
kind_of (const char *id)
{
  for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++)
    {
      size_t n = strlen (kinds[i].prefix);
      if (strncmp (id, kinds[i].prefix, n) == 0 && id[n] == '-')
        return &kinds[i];
    }
  return NULL;
}

const char *
emu_resource_type_of (const char *id)
{
  const struct resource_kind *k = id ? kind_of (id) : NULL;
  return k ? k->type : NULL;
}

/* EC2 ids are the prefix, '-', and 8 (older resources) or 17 lowercase hex
 * digits. */
static bool
id_well_formed (const struct resource_kind *k, const char *id)
{
  const char *hex = id + strlen (k->prefix) + 1;
  size_t n = strspn (hex, "0123456789abcdef");
  return hex[n] == '\0' && (n == 8 || n == 17);
}

/* Length in characters of UTF-8 text (continuation bytes do not count). */
static size_t
utf8_chars (const char *s)
{
  size_t n = 0;
  for (; *s; s++)
    if (((unsigned char) *s & 0xC0) != 0x80)
      n++;
  return n;
}

/* The checks EC2 makes on one tag it is asked to set.  value may be NULL
 * (absent: an empty value). */
static int
check_tag (struct emu_call *c, const char *key, const char *value)
{
  if (key == NULL || *key == '\0')
    return emu_fail_param (c, "Tag keys must not be empty");
  if (utf8_chars (key) > TAG_KEY_MAX_CHARS)
    return emu_fail_param (c, "Value (%s) for parameter key is invalid. Length exceeds maximum of %d characters",
                           key, TAG_KEY_MAX_CHARS);
  if (strncasecmp (key, "aws:", 4) == 0)
    return emu_fail_param (c, "Value (%s) for parameter key is invalid. Tag keys starting with 'aws:' are "
                           "reserved for internal use", key);
  if (value && utf8_chars (value) > TAG_VALUE_MAX_CHARS)
    return emu_fail_param (c, "Value (%s) for parameter value is invalid. Length exceeds maximum of %d "
                           "characters", value, TAG_VALUE_MAX_CHARS);
  return 0;
}

static int
fail_tag_limit (struct emu_call *c, const char *resource_id)
{
  return emu_fail (c, 400, "TagLimitExceeded", "The maximum number of tags (%d) for resource '%s' has been "
                   "exceeded", TAG_MAX_PER_RESOURCE, resource_id);
}

/* ---- helpers for other handlers (ec2.h) ---- */

json_t *
emu_tags_of (struct emu_call *c, const char *resource_id)
{
  _cleanup_error_ kiln_error *err = NULL;
  _cleanup_json_ json_t *rows
      = emu_db_query (c->emu, &err, "SELECT key, value FROM tags WHERE resource_id = ? AND account = ? AND "
                      "region = ? ORDER BY key", resource_id, c->account, c->region);
  if (rows == NULL)
    {
      emu_fail_internal (c, err);
      return NULL;
    }
  json_t *tags = json_object ();
  size_t i;
  json_t *row;
  json_array_foreach (rows, i, row)
    json_object_set_new (tags, emu_row_str (row, "key"), json_string (emu_row_str (row, "value")));
  return tags;
}

json_t *
emu_tags_all (struct emu_call *c)
{
  _cleanup_error_ kiln_error *err = NULL;
  _cleanup_json_ json_t *rows
      = emu_db_query (c->emu, &err, "SELECT resource_id, key, value FROM tags WHERE account = ? AND region = ? "
                      "ORDER BY resource_id, key", c->account, c->region);
  if (rows == NULL)
    {
      emu_fail_internal (c, err);
      return NULL;
    }
  json_t *all = json_object ();
  size_t i;
  json_t *row;
  json_array_foreach (rows, i, row)
    {
      const char *id = emu_row_str (row, "resource_id");
      json_t *tags = json_object_get (all, id);
      if (tags == NULL)
        {
          tags = json_object ();
          json_object_set_new (all, id, tags);
        }
      json_object_set_new (tags, emu_row_str (row, "key"), json_string (emu_row_str (row, "value")));
    }
  return all;
}

int
emu_tag_set (struct emu_call *c, const char *resource_id, const char *resource_type, const char *key,
             const char *value)
{
  _cleanup_error_ kiln_error *err = NULL;
  /* The WHERE keeps a (theoretical) id collision from rewriting a row that
   * belongs to another account or region. */
  if (emu_db_exec (c->emu, &err,
                   "INSERT INTO tags (resource_id, account, region, resource_type, key, value) "
                   "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (resource_id, key) DO UPDATE SET "
                   "value = excluded.value, resource_type = excluded.resource_type "
                   "WHERE tags.account = excluded.account AND tags.region = excluded.region",
                   resource_id, c->account, c->region, resource_type, key, value ? value : "")
      < 0)
    return emu_fail_internal (c, err);
  return 0;
}

/* The tag indices M of TagSpecification.N.Tag.M. */
static int *
spec_tag_indices (struct emu_call *c, int spec, size_t *n)
{
  _cleanup_free_ char *prefix = NULL;
  prefix = kiln_xasprintf ("TagSpecification.%d.Tag", spec);
  return emu_param_indices (c, prefix, n);
}

int
emu_tag_specs_check (struct emu_call *c, const char *const *allowed_types)
{
  size_t n_specs = 0;
  _cleanup_free_ int *specs = emu_param_indices (c, "TagSpecification", &n_specs);
  _cleanup_json_ json_t *seen_types = json_object ();
  for (size_t i = 0; i < n_specs; i++)
    {
      const char *type = emu_paramf (c, "TagSpecification.%d.ResourceType", specs[i]);
      if (type == NULL || *type == '\0')
        return emu_fail_param (c, "Tag specification resource type must have a value");
      bool allowed = false;
      for (const char *const *t = allowed_types; t && *t && !allowed; t++)
        allowed = strcmp (*t, type) == 0;
      if (!allowed)
        return emu_fail_param (c, "'%s' is not a valid taggable resource type for this operation.", type);
      if (json_object_get (seen_types, type))
        return emu_fail_param (c, "The same resource type may not be specified more than once in tag "
                               "specifications");
      json_object_set_new (seen_types, type, json_true ());

      size_t n_tags = 0;
      _cleanup_free_ int *tags = spec_tag_indices (c, specs[i], &n_tags);
      if (n_tags > TAG_MAX_PER_RESOURCE)
        return emu_fail (c, 400, "TagLimitExceeded", "The maximum number of tags (%d) for a resource has been "
                         "exceeded", TAG_MAX_PER_RESOURCE);
      _cleanup_json_ json_t *seen_keys = json_object ();
      for (size_t j = 0; j < n_tags; j++)
        {
          const char *key = emu_paramf (c, "TagSpecification.%d.Tag.%d.Key", specs[i], tags[j]);
          const char *value = emu_paramf (c, "TagSpecification.%d.Tag.%d.Value", specs[i], tags[j]);
          if (check_tag (c, key, value) < 0)
            return -1;
          if (json_object_get (seen_keys, key))
            return emu_fail_param (c, "Duplicate tag key '%s' specified", key);
          json_object_set_new (seen_keys, key, json_true ());
        }
    }
  return 0;
}

int
emu_tag_specs_apply (struct emu_call *c, const char *resource_type, const char *resource_id)
{
  size_t n_specs = 0;
  _cleanup_free_ int *specs = emu_param_indices (c, "TagSpecification", &n_specs);
  for (size_t i = 0; i < n_specs; i++)
    {
      const char *type = emu_paramf (c, "TagSpecification.%d.ResourceType", specs[i]);
      if (type == NULL || strcmp (type, resource_type) != 0)
        continue;
      size_t n_tags = 0;
      _cleanup_free_ int *tags = spec_tag_indices (c, specs[i], &n_tags);
      for (size_t j = 0; j < n_tags; j++)
        {
          const char *key = emu_paramf (c, "TagSpecification.%d.Tag.%d.Key", specs[i], tags[j]);
          const char *value = emu_paramf (c, "TagSpecification.%d.Tag.%d.Value", specs[i], tags[j]);
          if (key == NULL)
            continue;   /* emu_tag_specs_check refused it already */
          if (emu_tag_set (c, resource_id, resource_type, key, value) < 0)
            return -1;
        }
    }
  return 0;
}

/* ---- operations ---- */

/* The ResourceId.N of CreateTags / DeleteTags, each checked for form and
 * for existence among the caller's resources.  *kinds_out gets each id's
 * kind. */
static int
read_resource_ids (struct emu_call *c, const char ***ids_out, size_t *n_out,
                   const struct resource_kind ***kinds_out)
{
  size_t n = 0;
  _cleanup_free_ const char **ids = emu_param_list (c, "ResourceId", &n);
  if (n == 0)
    return emu_fail (c, 400, "MissingParameter", "The request must contain the parameter resourceIdSet");
  _cleanup_free_ const struct resource_kind **ks = kiln_xcalloc (n, sizeof *ks);
  for (size_t i = 0; i < n; i++)
    {
      const struct resource_kind *k = kind_of (ids[i]);
      if (k == NULL || !k->taggable)
        return emu_fail (c, 400, "InvalidID", "The ID '%s' is not valid", ids[i]);
      if (!id_well_formed (k, ids[i]))
        return emu_fail (c, 400, k->malformed_code, "Invalid id: \"%s\" (expecting \"%s-...\")", ids[i],
                         k->prefix);
      ks[i] = k;
      if (k->exists_sql == NULL)
        return emu_fail (c, 400, k->not_found_code, "%s%s%s", k->not_found_before, ids[i], k->not_found_after);
      _cleanup_error_ kiln_error *err = NULL;
      _cleanup_json_ json_t *row = emu_db_query_one (c->emu, &err, k->exists_sql, ids[i], c->account, c->region);
      if (row == NULL && err)
        return emu_fail_internal (c, err);
      if (row == NULL)
        return emu_fail (c, 400, k->not_found_code, "%s%s%s", k->not_found_before, ids[i], k->not_found_after);
    }
  *ids_out = kiln_steal_pointer (&ids);
  *kinds_out = kiln_steal_pointer (&ks);
  *n_out = n;
  return 0;
}

/* Sets every tag on every resource; runs inside a transaction, so a failure
 * (the 50-tag limit found after the writes) leaves nothing behind. */
static int
create_tags_in_transaction (struct emu_call *c, const char **ids, const struct resource_kind **ks, size_t n_ids,
                            const int *tags, size_t n_tags)
{
  for (size_t i = 0; i < n_ids; i++)
    {
      for (size_t j = 0; j < n_tags; j++)
        if (emu_tag_set (c, ids[i], ks[i]->type, emu_paramf (c, "Tag.%d.Key", tags[j]),
                         emu_paramf (c, "Tag.%d.Value", tags[j]))
            < 0)
          return -1;
      _cleanup_error_ kiln_error *err = NULL;
      _cleanup_json_ json_t *row
          = emu_db_query_one (c->emu, &err, "SELECT count(*) AS n FROM tags WHERE resource_id = ? AND "
                              "account = ? AND region = ?", ids[i], c->account, c->region);
      if (row == NULL)
        return emu_fail_internal (c, err);
      if (emu_row_int (row, "n") > TAG_MAX_PER_RESOURCE)
        return fail_tag_limit (c, ids[i]);
    }
  return 0;
}

static int
op_create_tags (struct emu_call *c)
{
  _cleanup_free_ const char **ids = NULL;
  _cleanup_free_ const struct resource_kind **ks = NULL;
  size_t n_ids = 0;
  if (read_resource_ids (c, &ids, &n_ids, &ks) < 0)
    return -1;

  size_t n_tags = 0;
  _cleanup_free_ int *tags = emu_param_indices (c, "Tag", &n_tags);
  if (n_tags == 0)
    return emu_fail (c, 400, "MissingParameter", "The request must contain the parameter tagSet");
  if (n_tags > TAG_MAX_PER_RESOURCE)
    return fail_tag_limit (c, ids[0]);
  for (size_t j = 0; j < n_tags; j++)
    if (check_tag (c, emu_paramf (c, "Tag.%d.Key", tags[j]), emu_paramf (c, "Tag.%d.Value", tags[j])) < 0)
      return -1;

  _cleanup_error_ kiln_error *err = NULL;
  if (emu_db_begin (c->emu, &err) < 0)
    return emu_fail_internal (c, err);
  int r = create_tags_in_transaction (c, ids, ks, n_ids, tags, n_tags);
  if (emu_db_end (c->emu, r == 0, &err) < 0)
    return emu_fail_internal (c, err);
  if (r < 0)
    return -1;
  emu_xml_bool (c, "return", true);
  return 0;
}

/* DeleteTags checks the ids as CreateTags does, as EC2 does: a resource
 * that does not exist, or is another account's, is not found (it used to
 * answer true, which told a caller nothing was wrong). */
static int
op_delete_tags (struct emu_call *c)
{
  _cleanup_free_ const char **ids = NULL;
  _cleanup_free_ const struct resource_kind **ks = NULL;
  size_t n_ids = 0;
  if (read_resource_ids (c, &ids, &n_ids, &ks) < 0)
    return -1;

  size_t n_tags = 0;
  _cleanup_free_ int *tags = emu_param_indices (c, "Tag", &n_tags);
  for (size_t j = 0; j < n_tags; j++)
    {
      const char *key = emu_paramf (c, "Tag.%d.Key", tags[j]);
      if (key == NULL || *key == '\0')
        return emu_fail_param (c, "Tag keys must not be empty");
      if (strncasecmp (key, "aws:", 4) == 0)
        return emu_fail_param (c, "Value (%s) for parameter key is invalid. Tag keys starting with 'aws:' are "
                               "reserved for internal use", key);
    }

  _cleanup_error_ kiln_error *err = NULL;
  if (emu_db_begin (c->emu, &err) < 0)
    return emu_fail_internal (c, err);
  int r = 0;
  for (size_t i = 0; i < n_ids && r == 0; i++)
    {
      if (n_tags == 0)
        r = emu_db_exec (c->emu, &err, "DELETE FROM tags WHERE resource_id = ? AND account = ? AND region = ?",
                         ids[i], c->account, c->region);
      /* A Tag.N.Value that is present (even empty) limits the deletion to a
       * tag holding exactly that value; without one any value goes. */
      for (size_t j = 0; j < n_tags && r >= 0; j++)
        {
          const char *key = emu_paramf (c, "Tag.%d.Key", tags[j]);
          const char *value = emu_paramf (c, "Tag.%d.Value", tags[j]);
          if (value)
            r = emu_db_exec (c->emu, &err, "DELETE FROM tags WHERE resource_id = ? AND account = ? AND "
                             "region = ? AND key = ? AND value = ?", ids[i], c->account, c->region, key, value);
          else
            r = emu_db_exec (c->emu, &err, "DELETE FROM tags WHERE resource_id = ? AND account = ? AND "
                             "region = ? AND key = ?", ids[i], c->account, c->region, key);
        }
      if (r > 0)
        r = 0;
    }
  if (r < 0)
    {
      emu_db_end (c->emu, false, NULL);
      return emu_fail_internal (c, err);
    }
  if (emu_db_end (c->emu, true, &err) < 0)
    return emu_fail_internal (c, err);
  emu_xml_bool (c, "return", true);
  return 0;
}

static const char *const describe_tags_filters[] = {"key", "value", "resource-id", "resource-type", "tag:*", NULL};

/* One row per tag of the account and region (SSM's parameter tags are
 * SSM's); the tags "tag:K" filters ask about are the whole tag set of a
 * tag's resource, made from the same rows. */
static json_t *
tag_rows (struct emu_call *c, struct emu_describe_call *d, kiln_error **err)
{
  json_t *rows = emu_db_query (c->emu, err, "SELECT resource_id, resource_type, key, value FROM tags WHERE "
                               "account = ? AND region = ? AND resource_type <> 'Parameter' ORDER BY resource_id, "
                               "key", c->account, c->region);
  if (rows == NULL)
    return NULL;
  d->tags = json_object ();
  size_t i;
  json_t *row;
  json_array_foreach (rows, i, row)
    {
      const char *id = emu_row_str (row, "resource_id");
      json_t *set = json_object_get (d->tags, id);
      if (set == NULL)
        json_object_set_new (d->tags, id, set = json_object ());
      json_object_set_new (set, emu_row_str (row, "key"), json_string (emu_row_str (row, "value")));
    }
  return rows;
}

static json_t *
tag_fields (struct emu_call *c, json_t *row)
{
  return json_pack ("{s:s, s:s, s:s, s:s}", "key", emu_row_str (row, "key"), "value", emu_row_str (row, "value"),
                    "resource-id", emu_row_str (row, "resource_id"), "resource-type",
                    emu_row_str (row, "resource_type"));
}

static const struct emu_describe_text tag_texts[] = {
  {"resourceId", "resource_id"}, {"resourceType", "resource_type"}, {"key", "key"}, {"value", "value"}, {NULL, NULL},
};

static const struct emu_describe_kind tags_kind = {
  .filter_names = describe_tags_filters, .fields = tag_fields,
  .rows = tag_rows, .tags_column = "resource_id",
  .page_min = 5, .set = "tagSet", .texts = tag_texts,
};

EMU_DESCRIBE_HANDLER (op_describe_tags, tags_kind)

const struct emu_operation emu_ec2_tag_ops[] = {
  {"CreateTags", op_create_tags},
  {"DeleteTags", op_delete_tags},
  {"DescribeTags", op_describe_tags},
  {NULL, NULL},
};
