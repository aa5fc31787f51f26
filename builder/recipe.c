/* recipe.c - reading an image recipe and planning its build (see recipe.h). */
#include "recipe.h"

#include <ctype.h>
#include <errno.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "buf.h"
#include "cleanup.h"
#include "digest.h"
#include "fsutil.h"
#include "xalloc.h"

#define GIB (1024ULL * 1024 * 1024)

struct reader {
  const struct kiln_yaml_doc *doc;
  kiln_error **err;
  char *dir; /* the recipe's folder, for relative paths */
};

#define FAIL(rd, node, ...) kiln_yaml_error ((rd)->err, (rd)->doc, (node), __VA_ARGS__)

json_t *
kiln_yaml_to_json (const struct kiln_yaml_node *n)
{
  switch (n->kind)
    {
    case KILN_YAML_SCALAR:
      {
        bool b;
        long l;
        if (kiln_yaml_is_null (n))
          return json_null ();
        if (kiln_yaml_as_bool (n, &b) == 0)
          return json_boolean (b);
        if (n->plain && kiln_yaml_as_long (n, &l) == 0)
          return json_integer (l);
        json_t *s = json_string (n->value);
        return s ? s : json_stringn_nocheck (n->value, n->len);
      }
    case KILN_YAML_SEQUENCE:
      {
        json_t *a = json_array ();
        for (size_t i = 0; i < n->n_items; i++)
          json_array_append_new (a, kiln_yaml_to_json (n->items[i]));
        return a;
      }
    case KILN_YAML_MAPPING:
      {
        json_t *o = json_object ();
        for (size_t i = 0; i < n->n_pairs; i++)
          json_object_set_new (o, n->pairs[i].key->value, kiln_yaml_to_json (n->pairs[i].value));
        return o;
      }
    }
  return json_null ();
}

static int
check_keys (struct reader *rd, const struct kiln_yaml_node *map, const char *const *allowed, const char *what)
{
  for (size_t i = 0; i < map->n_pairs; i++)
    {
      const struct kiln_yaml_node *k = map->pairs[i].key;
      bool ok = false;
      for (const char *const *a = allowed; *a; a++)
        ok |= strcmp (*a, k->value) == 0;
      if (!ok)
        {
          struct kiln_buf b = KILN_BUF_INIT;
          for (const char *const *a = allowed; *a; a++)
            kiln_buf_printf (&b, "%s%s", a == allowed ? "" : ", ", *a);
          FAIL (rd, k, "unknown key '%s' in %s (expected %s)", k->value, what, kiln_buf_str (&b));
          kiln_buf_release (&b);
          return -1;
        }
    }
  return 0;
}

static int
scalar (struct reader *rd, const struct kiln_yaml_node *n, const char *what, char **out)
{
  if (n->kind != KILN_YAML_SCALAR || kiln_yaml_is_null (n))
    return FAIL (rd, n, "%s must be a string", what);
  *out = kiln_xstrdup (n->value);
  return 0;
}

static int
required (struct reader *rd, const struct kiln_yaml_node *map, const char *key, const struct kiln_yaml_node **out)
{
  *out = kiln_yaml_map_get (map, key);
  if (*out == NULL)
    return FAIL (rd, map, "the recipe needs '%s'", key);
  return 0;
}

/* Image Builder's recipe versions are major.minor.patch, numbers only. */
static bool
semantic_version (const char *v)
{
  int parts = 0;
  const char *p = v;
  while (*p)
    {
      if (!isdigit ((unsigned char) *p))
        return false;
      while (isdigit ((unsigned char) *p))
        p++;
      parts++;
      if (*p == '.')
        {
          p++;
          if (*p == '\0')
            return false;
        }
      else if (*p)
        return false;
    }
  return parts == 3;
}

static char *
resolve_path (struct reader *rd, const char *p)
{
  char *out = NULL;
  if (p[0] == '/' || strcmp (rd->dir, ".") == 0)
    out = kiln_xstrdup (p);
  else
    out = kiln_xasprintf ("%s/%s", rd->dir, p);
  return out;
}

static int
read_component (struct reader *rd, const struct kiln_yaml_node *n, struct kiln_recipe_component *rc)
{
  if (n->kind != KILN_YAML_MAPPING)
    return FAIL (rd, n, "each component must be a mapping with componentArn");
  static const char *const keys[] = {"componentArn", "parameters", NULL};
  if (check_keys (rd, n, keys, "a component") < 0)
    return -1;
  const struct kiln_yaml_node *arn;
  if (required (rd, n, "componentArn", &arn) < 0 || scalar (rd, arn, "componentArn", &rc->arn) < 0)
    return -1;
  if (strncmp (rc->arn, "arn:", 4) == 0)
    return FAIL (rd, arn,
                 "componentArn '%s' names a component in AWS: kiln builds locally from component documents; give "
                 "the document's path",
                 rc->arn);
  rc->path = resolve_path (rd, rc->arn);
  rc->parameters = json_object ();
  const struct kiln_yaml_node *params = kiln_yaml_map_get (n, "parameters");
  if (params && !kiln_yaml_is_null (params))
    {
      if (params->kind != KILN_YAML_SEQUENCE)
        return FAIL (rd, params, "parameters must be a list of {name, value}");
      for (size_t i = 0; i < params->n_items; i++)
        {
          const struct kiln_yaml_node *p = params->items[i];
          static const char *const pkeys[] = {"name", "value", NULL};
          if (p->kind != KILN_YAML_MAPPING)
            return FAIL (rd, p, "each parameter must be {name, value: [...]}");
          if (check_keys (rd, p, pkeys, "a component parameter") < 0)
            return -1;
          const struct kiln_yaml_node *name, *value;
          if (required (rd, p, "name", &name) < 0 || required (rd, p, "value", &value) < 0)
            return -1;
          if (name->kind != KILN_YAML_SCALAR)
            return FAIL (rd, name, "parameter name must be a string");
          /* The API takes a list of strings; AWSTOE parameters are strings, so
           * the list holds one value. */
          const struct kiln_yaml_node *v = value;
          if (value->kind == KILN_YAML_SEQUENCE)
            {
              if (value->n_items != 1)
                return FAIL (rd, value, "parameter '%s' must have exactly one value, not %zu", name->value,
                             value->n_items);
              v = value->items[0];
            }
          if (v->kind != KILN_YAML_SCALAR)
            return FAIL (rd, v, "parameter '%s' value must be a string", name->value);
          if (json_object_get (rc->parameters, name->value))
            return FAIL (rd, name, "parameter '%s' is given twice", name->value);
          json_object_set_new (rc->parameters, name->value, json_string (v->value));
        }
    }

  /* Load and validate the document now: a bad component fails the plan. */
  struct kiln_component_load_opts lo = {.depth = 1};
  _cleanup_error_ kiln_error *e = NULL;
  if (kiln_component_load (rc->path, &lo, &rc->doc, &e) < 0)
    {
      if (e && e->code == KILN_ERR_INVALID)
        return FAIL (rd, arn, "component '%s' is invalid: %s", rc->arn, kiln_error_message (e));
      return FAIL (rd, arn, "component '%s': %s", rc->arn, kiln_error_message (e));
    }
  const char *pname;
  json_t *pval;
  json_object_foreach (rc->parameters, pname, pval)
  {
    const struct kiln_variable *var = kiln_component_variable (rc->doc, pname);
    if (var == NULL || var->constant)
      return FAIL (rd, params, "component '%s' has no parameter '%s'", rc->arn, pname);
  }
  for (size_t i = 0; i < rc->doc->n_variables; i++)
    {
      const struct kiln_variable *var = &rc->doc->variables[i];
      if (!var->constant && var->value == NULL && json_object_get (rc->parameters, var->name) == NULL)
        return FAIL (rd, arn, "component '%s' needs parameter '%s', which has no default", rc->arn, var->name);
    }
  return 0;
}

static int
read_block_devices (struct reader *rd, const struct kiln_yaml_node *n, struct kiln_plan *p)
{
  if (n->kind != KILN_YAML_SEQUENCE)
    return FAIL (rd, n, "blockDeviceMappings must be a list");
  for (size_t i = 0; i < n->n_items; i++)
    {
      const struct kiln_yaml_node *m = n->items[i];
      static const char *const keys[] = {"deviceName", "ebs", "virtualName", "noDevice", NULL};
      if (m->kind != KILN_YAML_MAPPING)
        return FAIL (rd, m, "each block device mapping must be a mapping");
      if (check_keys (rd, m, keys, "a block device mapping") < 0)
        return -1;
      const struct kiln_yaml_node *ebs = kiln_yaml_map_get (m, "ebs");
      if (ebs == NULL)
        continue;
      static const char *const ebs_keys[] = {"encrypted",  "deleteOnTermination", "iops",     "kmsKeyId",
                                             "snapshotId", "volumeSize",          "volumeType", "throughput", NULL};
      if (ebs->kind != KILN_YAML_MAPPING)
        return FAIL (rd, ebs, "ebs must be a mapping");
      if (check_keys (rd, ebs, ebs_keys, "ebs") < 0)
        return -1;
      const struct kiln_yaml_node *size = kiln_yaml_map_get (ebs, "volumeSize");
      if (size == NULL)
        continue;
      long gib;
      if (kiln_yaml_as_long (size, &gib) < 0 || gib < 1 || gib > 16384)
        return FAIL (rd, size, "volumeSize must be a number of GiB between 1 and 16384");
      if (p->disk_size_bytes)
        return FAIL (rd, m, "only the root volume's size is supported: one mapping with ebs.volumeSize");
      p->disk_size_bytes = (uint64_t) gib * GIB;
    }
  return 0;
}

/* A string, or a list of strings, as a JSON array. */
static int
string_list (struct reader *rd, const struct kiln_yaml_node *n, const char *what, json_t **out)
{
  json_t *a = json_array ();
  if (n->kind == KILN_YAML_SCALAR && !kiln_yaml_is_null (n))
    json_array_append_new (a, json_string (n->value));
  else if (n->kind == KILN_YAML_SEQUENCE && n->n_items > 0)
    for (size_t i = 0; i < n->n_items; i++)
      {
        const struct kiln_yaml_node *v = n->items[i];
        if (v->kind != KILN_YAML_SCALAR || kiln_yaml_is_null (v))
          {
            json_decref (a);
            return FAIL (rd, v, "%s must be strings", what);
          }
        json_array_append_new (a, json_string (v->value));
      }
  else
    {
      json_decref (a);
      return FAIL (rd, n, "%s must be a string or a non-empty list of strings", what);
    }
  *out = a;
  return 0;
}

/* parentImage as a DescribeImages query (Packer's source_ami_filter):
 *   filters: {name: value or [values]}, owners: [...], mostRecent: bool
 * becomes "filter:" and the query as compact JSON, which cloud drivers
 * resolve to the one matching image (the newest with mostRecent). */
static int
read_parent_filter (struct reader *rd, const struct kiln_yaml_node *n, struct kiln_plan *p)
{
  static const char *const keys[] = {"filters", "owners", "mostRecent", NULL};
  if (check_keys (rd, n, keys, "parentImage") < 0)
    return -1;
  const struct kiln_yaml_node *filters = kiln_yaml_map_get (n, "filters");
  if (filters == NULL || filters->kind != KILN_YAML_MAPPING || filters->n_pairs == 0)
    return FAIL (rd, filters ? filters : n, "parentImage.filters must map DescribeImages filter names to values");
  _cleanup_json_ json_t *q = json_object ();
  json_t *f = json_object ();
  json_object_set_new (q, "filters", f);
  for (size_t i = 0; i < filters->n_pairs; i++)
    {
      json_t *values = NULL;
      if (string_list (rd, filters->pairs[i].value, "parentImage.filters values", &values) < 0)
        return -1;
      json_object_set_new (f, filters->pairs[i].key->value, values);
    }
  const struct kiln_yaml_node *owners = kiln_yaml_map_get (n, "owners");
  if (owners)
    {
      json_t *o = NULL;
      if (string_list (rd, owners, "parentImage.owners", &o) < 0)
        return -1;
      json_object_set_new (q, "owners", o);
    }
  const struct kiln_yaml_node *most_recent = kiln_yaml_map_get (n, "mostRecent");
  bool mr = false;
  if (most_recent && kiln_yaml_as_bool (most_recent, &mr) < 0)
    return FAIL (rd, most_recent, "parentImage.mostRecent must be true or false");
  json_object_set_new (q, "mostRecent", json_boolean (mr));
  _cleanup_free_ char *text = json_dumps (q, JSON_COMPACT | JSON_PRESERVE_ORDER);
  p->parent_image = kiln_xasprintf ("filter:%s", text);
  p->parent_is_file = false;
  return 0;
}

static int
read_recipe (struct reader *rd, struct kiln_plan *p)
{
  const struct kiln_yaml_node *root = rd->doc->root;
  if (root == NULL || root->kind != KILN_YAML_MAPPING)
    return kiln_error_set (rd->err, KILN_ERR_INVALID, 0, "%s:1:1: a recipe must be a mapping", rd->doc->name);
  static const char *const keys[] = {"name",       "description",      "semanticVersion",
                                     "components", "parentImage",      "blockDeviceMappings",
                                     "tags",       "workingDirectory", "additionalInstanceConfiguration",
                                     "amiTags",    "clientToken",      NULL};
  if (check_keys (rd, root, keys, "the recipe") < 0)
    return -1;
  const struct kiln_yaml_node *n;
  if (required (rd, root, "name", &n) < 0 || scalar (rd, n, "name", &p->name) < 0)
    return -1;
  for (const char *c = p->name; *c; c++)
    if (!(isalnum ((unsigned char) *c) || *c == '-' || *c == '_' || *c == '.' || *c == ' '))
      return FAIL (rd, n, "name '%s' may hold letters, digits, spaces, '-', '_' and '.' only", p->name);
  if (required (rd, root, "semanticVersion", &n) < 0 || scalar (rd, n, "semanticVersion", &p->version) < 0)
    return -1;
  if (!semantic_version (p->version))
    return FAIL (rd, n, "semanticVersion '%s' must be major.minor.patch (numbers)", p->version);
  if ((n = kiln_yaml_map_get (root, "description")) && scalar (rd, n, "description", &p->description) < 0)
    return -1;
  if (required (rd, root, "parentImage", &n) < 0)
    return -1;
  if (n->kind == KILN_YAML_MAPPING)
    {
      if (read_parent_filter (rd, n, p) < 0)
        return -1;
    }
  else if (scalar (rd, n, "parentImage", &p->parent_image) < 0)
    return -1;
  else if (strncmp (p->parent_image, "ami-", 4) == 0 || strncmp (p->parent_image, "ssm:", 4) == 0
           || strncmp (p->parent_image, "arn:", 4) == 0)
    p->parent_is_file = false;
  else
    {
      char *resolved = resolve_path (rd, p->parent_image);
      free (p->parent_image);
      p->parent_image = resolved;
      p->parent_is_file = true;
    }
  if ((n = kiln_yaml_map_get (root, "workingDirectory"))
      && scalar (rd, n, "workingDirectory", &p->working_directory) < 0)
    return -1;
  if ((n = kiln_yaml_map_get (root, "blockDeviceMappings")) && read_block_devices (rd, n, p) < 0)
    return -1;
  if ((n = kiln_yaml_map_get (root, "additionalInstanceConfiguration")))
    {
      static const char *const aic_keys[] = {"systemsManagerAgent", "userDataOverride", NULL};
      if (n->kind != KILN_YAML_MAPPING)
        return FAIL (rd, n, "additionalInstanceConfiguration must be a mapping");
      if (check_keys (rd, n, aic_keys, "additionalInstanceConfiguration") < 0)
        return -1;
      const struct kiln_yaml_node *ud = kiln_yaml_map_get (n, "userDataOverride");
      if (ud && scalar (rd, ud, "userDataOverride", &p->user_data) < 0)
        return -1;
      /* Image Builder takes user data base64-encoded; kiln runs it as a
       * script on the build instance, so it must decode. */
      unsigned char *decoded = NULL;
      size_t decoded_len = 0;
      if (p->user_data && kiln_base64_decode (p->user_data, strlen (p->user_data), &decoded, &decoded_len) < 0)
        return FAIL (rd, ud, "userDataOverride must be base64-encoded, as Image Builder takes it");
      free (decoded);
    }
  if (required (rd, root, "components", &n) < 0)
    return -1;
  if (n->kind != KILN_YAML_SEQUENCE || n->n_items == 0)
    return FAIL (rd, n, "components must be a list of at least one component");
  p->components = calloc (n->n_items, sizeof *p->components);
  for (size_t i = 0; i < n->n_items; i++)
    {
      p->n_components++;
      if (read_component (rd, n->items[i], &p->components[i]) < 0)
        return -1;
    }
  return 0;
}

int
kiln_plan_make (const char *recipe_path, struct kiln_plan **out, kiln_error **err)
{
  struct kiln_buf text = KILN_BUF_INIT;
  if (kiln_read_file (recipe_path, &text, err) < 0)
    return -1;
  struct kiln_plan *p = calloc (1, sizeof *p);
  p->recipe_path = kiln_xstrdup (recipe_path);
  char hex[65];
  kiln_sha256_hex (text.data, text.len, hex);
  p->recipe_sha256 = kiln_xstrdup (hex);
  _cleanup_yaml_doc_ struct kiln_yaml_doc *doc = NULL;
  int r = kiln_yaml_load_string (recipe_path, kiln_buf_str (&text), text.len, &doc, err);
  kiln_buf_release (&text);
  if (r == 0)
    {
      _cleanup_free_ char *copy = kiln_xstrdup (recipe_path);
      struct reader rd = {.doc = doc, .err = err, .dir = kiln_xstrdup (dirname (copy))};
      r = read_recipe (&rd, p);
      free (rd.dir);
      if (r == 0)
        p->recipe = kiln_yaml_to_json (doc->root);
    }
  if (r < 0)
    {
      kiln_plan_free (p);
      return -1;
    }
  *out = p;
  return 0;
}

void
kiln_plan_free (struct kiln_plan *p)
{
  if (p == NULL)
    return;
  for (size_t i = 0; i < p->n_components; i++)
    {
      free (p->components[i].arn);
      free (p->components[i].path);
      json_decref (p->components[i].parameters);
      kiln_component_free (p->components[i].doc);
    }
  free (p->components);
  json_decref (p->recipe);
  free (p->recipe_path);
  free (p->recipe_sha256);
  free (p->name);
  free (p->version);
  free (p->description);
  free (p->parent_image);
  free (p->working_directory);
  free (p->user_data);
  free (p);
}

static json_t *
phases_of (const struct kiln_component *c, const char *const *wanted)
{
  json_t *a = json_array ();
  for (size_t i = 0; i < c->n_phases; i++)
    for (const char *const *w = wanted; *w; w++)
      if (strcmp (c->phases[i].name, *w) == 0)
        json_array_append_new (a, json_string (*w));
  return a;
}

json_t *
kiln_plan_to_json (const struct kiln_plan *p)
{
  static const char *const build_phases[] = {"build", "validate", NULL};
  static const char *const test_phases[] = {"test", NULL};
  json_t *components = json_array ();
  json_t *build_runs = json_array ();
  json_t *test_runs = json_array ();
  for (size_t i = 0; i < p->n_components; i++)
    {
      const struct kiln_recipe_component *rc = &p->components[i];
      json_array_append_new (components,
                             json_pack ("{s:s, s:s, s:s?, s:s, s:O}", "componentArn", rc->arn, "path", rc->path,
                                        "name", rc->doc->name, "sha256", rc->doc->sha256, "parameters",
                                        rc->parameters));
      json_t *bp = phases_of (rc->doc, build_phases);
      json_t *tp = phases_of (rc->doc, test_phases);
      if (json_array_size (bp))
        json_array_append_new (build_runs, json_pack ("{s:I, s:o}", "component", (json_int_t) i, "phases", bp));
      else
        json_decref (bp);
      if (json_array_size (tp))
        json_array_append_new (test_runs, json_pack ("{s:I, s:o}", "component", (json_int_t) i, "phases", tp));
      else
        json_decref (tp);
    }
  char basename[512];
  snprintf (basename, sizeof basename, "%s-%s", p->name, p->version);
  for (char *c = basename; *c; c++)
    if (*c == ' ')
      *c = '_';
  json_t *disk = p->disk_size_bytes ? json_pack ("{s:I}", "sizeGiB", (json_int_t) (p->disk_size_bytes / GIB))
                                    : json_null ();
  return json_pack ("{s:s, s:s, s:s?, s:{s:s, s:b}, s:o, s:s?, s:b, s:o, s:[{s:s, s:s, s:o}, {s:s}, {s:s, s:s, s:o}, "
                    "{s:s}], s:s}",
                    "name", p->name, "version", p->version, "description", p->description, "parentImage", "image",
                    p->parent_image, "isFile", p->parent_is_file, "disk", disk, "workingDirectory",
                    p->working_directory, "userData", p->user_data != NULL, "components", components, "stages",
                    "name", "build", "instance", "parent", "run", build_runs, "name", "capture", "name", "test",
                    "instance", "captured", "run", test_runs, "name", "publish", "output", basename);
}
