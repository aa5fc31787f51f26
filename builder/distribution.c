/* distribution.c - reading Image Builder's distribution configuration for a
 * driver, and AMI name templates (see distribution.h).
 *
 * Every field of CreateDistributionConfiguration is either read, refused as
 * not supported by kiln yet, or (on a local driver) refused as having no
 * meaning there; anything else is an unknown key.  `tags` (the
 * configuration's own tags in Image Builder) and `clientToken` are checked
 * and then dropped: kiln keeps no configuration resource for them to belong
 * to.
 *
 * An AMI name template is checked when the file is read, by expanding it with
 * a sample build date and version: an unknown {{ }} variable, an unclosed
 * {{ or a character AMI names do not take is reported at its own column
 * (when the name is written on one line without escapes), so a bad name
 * fails before anything is built rather than after the image exists. */
#include "distribution.h"

#include <regex.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api_input.h"
#include "buf.h"
#include "cleanup.h"
#include "xalloc.h"

/* ---- AMI name templates ---- */

#define AMI_NAME_MIN 3
#define AMI_NAME_MAX 128
#define AMI_NAME_CHARACTERS "letters, digits, spaces and ( ) [ ] . / - ' @ _"
#define AMI_NAME_VARIABLES "{{ imagebuilder:buildDate }} and {{ imagebuilder:buildVersion }}"

/* What kiln_distribution_load() expands a template with to check it: a build
 * date as Image Builder writes one, and a one-digit version. */
#define SAMPLE_BUILD_DATE "2026-01-01T00-00-00.000Z"
#define SAMPLE_BUILD_VERSION "1"

enum name_problem_kind {
  NAME_OK,
  NAME_UNCLOSED, /* "{{" without "}}" after it */
  NAME_UNKNOWN_VARIABLE,
  NAME_BAD_CHARACTER, /* a character AMI names do not take */
  NAME_LENGTH,        /* the expansion is not 3 to 128 characters */
};

/* The first problem of a template.  at/len: the bytes of the template at
 * fault (the "{{", the whole {{ }}, the character, or for a bad character
 * that came from a variable's value, that variable); out_at/out_len: the bad
 * character in the expansion. */
struct name_problem {
  enum name_problem_kind kind;
  size_t at, len;
  size_t out_at, out_len;
};

static bool
ami_name_char (unsigned char c)
{
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')
         || (c != '\0' && strchr ("()[] ./-'@_", c));
}

/* UTF-8 characters in s[0, len). */
static size_t
utf8_chars (const char *s, size_t len)
{
  size_t n = 0;
  for (size_t i = 0; i < len; i++)
    n += ((unsigned char) s[i] & 0xC0) != 0x80;
  return n;
}

/* Bytes in the UTF-8 sequence that starts with c (1 for stray bytes). */
static size_t
utf8_length (unsigned char c)
{
  return c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 1;
}

/* The character at s (len bytes) as a message shows it: itself, or an
 * escape for a control character.  Returns buf. */
static const char *
shown_char (const char *s, size_t len, char buf[8])
{
  unsigned char c = (unsigned char) s[0];
  if (len == 1 && c == '\n')
    snprintf (buf, 8, "\\n");
  else if (len == 1 && c == '\t')
    snprintf (buf, 8, "\\t");
  else if (len == 1 && (c < 0x20 || c == 0x7F))
    snprintf (buf, 8, "\\x%02X", c);
  else
    snprintf (buf, 8, "%.*s", (int) len, s);
  return buf;
}

/* Appends value for the template bytes [at, at + len), noting its first
 * character AMI names do not take. */
static void
append_checked (struct kiln_buf *out, const char *value, size_t value_len, size_t at, size_t len, bool from_variable,
                struct name_problem *p)
{
  for (size_t i = 0; i < value_len && p->kind == NAME_OK; i++)
    if (!ami_name_char ((unsigned char) value[i]))
      {
        size_t n = utf8_length ((unsigned char) value[i]);
        if (n > value_len - i)
          n = value_len - i;
        *p = (struct name_problem){.kind = NAME_BAD_CHARACTER,
                                   .at = from_variable ? at : at + i,
                                   .len = from_variable ? len : n,
                                   .out_at = out->len + i,
                                   .out_len = n};
      }
  kiln_buf_append (out, value, value_len);
}

/* Expands template into out and reports its problem in *p (kind NAME_OK
 * when there is none).  A syntax problem (unclosed, unknown variable) stops
 * the expansion and is the one reported; otherwise the first bad character
 * is, and the expansion goes on so messages can quote the whole name; the
 * length is judged last. */
static void
ami_name_expand_checked (const char *template, const char *build_date, const char *build_version, struct kiln_buf *out,
                         struct name_problem *p)
{
  static const char open[] = "{{", close[] = "}}";
  *p = (struct name_problem){.kind = NAME_OK};
  kiln_buf_reset (out);
  size_t i = 0, n = strlen (template);
  while (i < n)
    {
      const char *brace = strstr (template + i, open);
      size_t literal_end = brace ? (size_t) (brace - template) : n;
      append_checked (out, template + i, literal_end - i, i, literal_end - i, false, p);
      if (brace == NULL)
        break;
      size_t at = literal_end;
      const char *end = strstr (brace + 2, close);
      if (end == NULL)
        {
          *p = (struct name_problem){.kind = NAME_UNCLOSED, .at = at, .len = 2};
          return;
        }
      const char *name = brace + 2, *name_end = end;
      while (name < name_end && *name == ' ')
        name++;
      while (name_end > name && name_end[-1] == ' ')
        name_end--;
      size_t name_len = (size_t) (name_end - name), whole = (size_t) (end + 2 - brace);
      const char *value = NULL;
      if (name_len == strlen ("imagebuilder:buildDate") && memcmp (name, "imagebuilder:buildDate", name_len) == 0)
        value = build_date;
      else if (name_len == strlen ("imagebuilder:buildVersion")
               && memcmp (name, "imagebuilder:buildVersion", name_len) == 0)
        value = build_version;
      if (value == NULL)
        {
          *p = (struct name_problem){.kind = NAME_UNKNOWN_VARIABLE, .at = at, .len = whole};
          return;
        }
      append_checked (out, value, strlen (value), at, whole, true, p);
      i = at + whole;
    }
  if (p->kind == NAME_OK && (out->len < AMI_NAME_MIN || out->len > AMI_NAME_MAX))
    *p = (struct name_problem){.kind = NAME_LENGTH, .at = 0, .len = n};
}

int
kiln_ami_name_expand (const char *template, const char *build_date, const char *build_version, char **out,
                      kiln_error **err)
{
  struct kiln_buf b = KILN_BUF_INIT;
  struct name_problem p;
  char shown[8];
  ami_name_expand_checked (template, build_date, build_version, &b, &p);
  int r = 0;
  switch (p.kind)
    {
    case NAME_OK:
      *out = kiln_buf_steal (&b);
      break;
    case NAME_UNCLOSED:
      r = kiln_fail_invalid (err, "AMI name template '%s': the '{{' at character %zu is not closed", template,
                             utf8_chars (template, p.at) + 1);
      break;
    case NAME_UNKNOWN_VARIABLE:
      r = kiln_fail_invalid (err, "AMI name template '%s': unknown variable '%.*s' (kiln knows %s)", template,
                             (int) p.len, template + p.at, AMI_NAME_VARIABLES);
      break;
    case NAME_BAD_CHARACTER:
      r = kiln_fail_invalid (err, "AMI name '%s' may not hold '%s' (AMI names take %s)", kiln_buf_str (&b),
                             shown_char (kiln_buf_str (&b) + p.out_at, p.out_len, shown), AMI_NAME_CHARACTERS);
      break;
    case NAME_LENGTH:
      r = kiln_fail_invalid (err, "AMI name '%s' is %zu characters long; AMI names take %d to %d", kiln_buf_str (&b),
                             b.len, AMI_NAME_MIN, AMI_NAME_MAX);
      break;
    }
  kiln_buf_release (&b);
  return r;
}

/* Checks the template in scalar n (field `what`) at load time. */
static int
check_ami_name (struct kiln_api_input *in, const struct kiln_yaml_node *n, const char *what)
{
  struct kiln_buf b = KILN_BUF_INIT;
  struct name_problem p;
  char shown[8];
  ami_name_expand_checked (n->value, SAMPLE_BUILD_DATE, SAMPLE_BUILD_VERSION, &b, &p);
  int r = 0;
  switch (p.kind)
    {
    case NAME_OK:
      break;
    case NAME_UNCLOSED:
      r = kiln_api_fail_at (in, n, p.at, "%s: this '{{' is not closed", what);
      break;
    case NAME_UNKNOWN_VARIABLE:
      r = kiln_api_fail_at (in, n, p.at, "%s: unknown variable '%.*s' (kiln knows %s)", what, (int) p.len,
                            n->value + p.at, AMI_NAME_VARIABLES);
      break;
    case NAME_BAD_CHARACTER:
      r = kiln_api_fail_at (in, n, p.at, "%s may not hold '%s' (AMI names take %s)", what,
                            shown_char (kiln_buf_str (&b) + p.out_at, p.out_len, shown), AMI_NAME_CHARACTERS);
      break;
    case NAME_LENGTH:
      if (strcmp (kiln_buf_str (&b), n->value) == 0)
        r = kiln_api_fail (in, n, "%s '%s' is %zu characters long; AMI names take %d to %d", what, n->value, b.len,
                           AMI_NAME_MIN, AMI_NAME_MAX);
      else
        r = kiln_api_fail (in, n, "%s '%s' makes AMI names %s than %d characters (such as '%s')", what, n->value,
                           b.len > AMI_NAME_MAX ? "longer" : "shorter",
                           b.len > AMI_NAME_MAX ? AMI_NAME_MAX : AMI_NAME_MIN, kiln_buf_str (&b));
      break;
    }
  kiln_buf_release (&b);
  return r;
}

/* ---- the configuration file ---- */

static const char *const config_keys[] = {"name", "description", "distributions", "tags", "clientToken", NULL};

static const char *const distribution_keys[] = {"region", "amiDistributionConfiguration", NULL};
static const struct kiln_api_refusal distribution_not_yet[] = {
  {"containerDistributionConfiguration", "kiln builds machine images, not containers"},
  {"licenseConfigurationArns", NULL},
  {"launchTemplateConfigurations", NULL},
  {"s3ExportConfiguration", NULL},
  {"fastLaunchConfigurations", NULL},
  {"ssmParameterConfigurations", NULL},
  {NULL, NULL},
};

static const char *const ami_keys[] = {"name", "description", "amiTags", "launchPermission", NULL};
static const struct kiln_api_refusal ami_not_yet[] = {
  {"targetAccountIds", "copying an image to other accounts needs cross-account roles"},
  {"kmsKeyId", NULL},
  {NULL, NULL},
};

/* Fields that only concern an image in a cloud, and why a local image file
 * has no use for them. */
static const struct kiln_api_refusal ami_cloud_only[] = {
  {"amiTags", "a local image file has no tags"},
  {"launchPermission", "a local image file has no launch permissions"},
  {NULL, NULL},
};

static const char *const launch_keys[] = {"userIds", "userGroups", "organizationArns", "organizationalUnitArns", NULL};

/* Image Builder's patterns (AccountId, OrganizationArn,
 * OrganizationalUnitArn), and a region's shape ("us-east-1",
 * "us-gov-west-1"). */
#define ACCOUNT_ID_PATTERN "^[0-9]{12}$"
#define ORGANIZATION_ARN_PATTERN "^arn:aws[^:]*:organizations::[0-9]{12}:organization/o-[a-z0-9]{10,32}$"
#define ORGANIZATIONAL_UNIT_ARN_PATTERN \
  "^arn:aws[^:]*:organizations::[0-9]{12}:ou/o-[a-z0-9]{10,32}/ou-[0-9a-z]{4,32}-[0-9a-z]{8,32}$"
#define REGION_PATTERN "^[a-z]+(-[a-z]+)+-[0-9]+$"

static bool
matches (const char *pattern, const char *s)
{
  regex_t re;
  if (regcomp (&re, pattern, REG_EXTENDED | REG_NOSUB) != 0)
    abort (); /* the patterns are constants */
  bool ok = regexec (&re, s, 0, NULL, 0) == 0;
  regfree (&re);
  return ok;
}

/* "WHAT.KEY", malloc'd. */
static char *
join (const char *what, const char *key)
{
  char *s = NULL;
  s = kiln_xasprintf ("%s.%s", what, key);
  return s;
}

/* kiln_api_string() into one of the driver table's const fields. */
static int
string_field (struct kiln_api_input *in, const struct kiln_yaml_node *n, const char *what, const char **out)
{
  char *s = NULL;
  int r = kiln_api_string (in, n, what, &s);
  *out = s;
  return r;
}

/* Reads launch-permission list `key` of lp into *out; every item must match
 * pattern (NULL: any), else "WHAT[i] 'X' is not DESCRIPTION". */
static int
read_launch_list (struct kiln_api_input *in, const struct kiln_yaml_node *lp, const char *key, const char *what,
                  bool non_empty, const char *pattern, const char *description, const char *const **out)
{
  const struct kiln_yaml_node *n = kiln_yaml_map_get (lp, key);
  if (n == NULL)
    return 0;
  _cleanup_free_ char *field = join (what, key);
  char **v = NULL;
  int r = kiln_api_strings (in, n, field, non_empty, &v);
  *out = (const char *const *) v;
  for (size_t i = 0; r == 0 && v[i]; i++)
    if (pattern && !matches (pattern, v[i]))
      r = kiln_api_fail (in, n->items[i], "%s[%zu] '%s' is not %s", field, i, v[i], description);
  return r;
}

static int
read_launch_permission (struct kiln_api_input *in, const struct kiln_yaml_node *lp, const char *what,
                        struct kiln_image_distribution *t)
{
  if (kiln_api_mapping (in, lp, what) < 0 || kiln_api_check_keys (in, lp, launch_keys, NULL, what) < 0)
    return -1;
  /* As the API: the lists of ids and ARNs take at least one item;
   * userGroups may be empty. */
  if (read_launch_list (in, lp, "userIds", what, true, ACCOUNT_ID_PATTERN, "an AWS account id (12 digits)",
                        &t->launch_user_ids)
          < 0
      || read_launch_list (in, lp, "userGroups", what, false, "^all$",
                           "a group EC2 knows (only 'all', which makes the image public)", &t->launch_groups)
             < 0
      || read_launch_list (in, lp, "organizationArns", what, true, ORGANIZATION_ARN_PATTERN,
                           "an organization ARN (arn:aws:organizations::ACCOUNT:organization/o-ID)",
                           &t->launch_organization_arns)
             < 0
      || read_launch_list (in, lp, "organizationalUnitArns", what, true, ORGANIZATIONAL_UNIT_ARN_PATTERN,
                           "an organizational unit ARN (arn:aws:organizations::ACCOUNT:ou/o-ID/ou-ID)",
                           &t->launch_organizational_unit_arns)
             < 0)
    return -1;
  return 0;
}

static int
read_ami_configuration (struct kiln_api_input *in, const struct kiln_yaml_node *ami, const char *what,
                        const struct kiln_driver *driver, struct kiln_image_distribution *t)
{
  if (kiln_api_mapping (in, ami, what) < 0 || kiln_api_check_keys (in, ami, ami_keys, ami_not_yet, what) < 0)
    return -1;
  const struct kiln_yaml_node *n;
  const struct kiln_api_refusal *c;
  if (!driver->cloud_images && (n = kiln_api_refused_key (ami, ami_cloud_only, &c)))
    return kiln_api_fail (in, n, "%s.%s has no meaning for the %s driver (%s)", what, c->key, driver->name, c->reason);
  if ((n = kiln_yaml_map_get (ami, "name")))
    {
      _cleanup_free_ char *field = join (what, "name");
      if (string_field (in, n, field, &t->name) < 0 || check_ami_name (in, n, field) < 0)
        return -1;
    }
  if ((n = kiln_yaml_map_get (ami, "description")))
    {
      _cleanup_free_ char *field = join (what, "description");
      if (string_field (in, n, field, &t->description) < 0)
        return -1;
    }
  if ((n = kiln_yaml_map_get (ami, "amiTags")))
    {
      _cleanup_free_ char *field = join (what, "amiTags");
      char **tags = NULL;
      int r = kiln_api_tags (in, n, field, &tags);
      t->tags = (const char *const *) tags;
      if (r < 0)
        return -1;
    }
  if ((n = kiln_yaml_map_get (ami, "launchPermission")))
    {
      _cleanup_free_ char *field = join (what, "launchPermission");
      if (read_launch_permission (in, n, field, t) < 0)
        return -1;
    }
  return 0;
}

/* Reads distributions[i] into t; regions of the earlier ones (their nodes
 * in list) must differ from its own. */
static int
read_distribution (struct kiln_api_input *in, const struct kiln_yaml_node *list, size_t i,
                   const struct kiln_driver *driver, struct kiln_image_distribution *t)
{
  const struct kiln_yaml_node *d = list->items[i], *n;
  _cleanup_free_ char *what = NULL;
  what = kiln_xasprintf ("distributions[%zu]", i);
  if (kiln_api_mapping (in, d, what) < 0
      || kiln_api_check_keys (in, d, distribution_keys, distribution_not_yet, what) < 0)
    return -1;
  if ((n = kiln_yaml_map_get (d, "region")) == NULL)
    return kiln_api_fail (in, d, "%s needs 'region'", what);
  _cleanup_free_ char *field = join (what, "region");
  if (string_field (in, n, field, &t->region) < 0)
    return -1;
  if (!matches (REGION_PATTERN, t->region))
    return kiln_api_fail (in, n, "%s '%s' is not an AWS region name (such as us-east-1)", field, t->region);
  for (size_t j = 0; j < i; j++)
    {
      const struct kiln_yaml_node *other = kiln_yaml_map_get (list->items[j], "region");
      if (strcmp (other->value, t->region) == 0)
        return kiln_api_fail (in, n,
                              "%s '%s' is given twice (distributions[%zu], line %d): one distribution "
                              "per region",
                              field, t->region, j, other->line);
    }
  if ((n = kiln_yaml_map_get (d, "amiDistributionConfiguration")))
    {
      _cleanup_free_ char *ami = join (what, "amiDistributionConfiguration");
      if (read_ami_configuration (in, n, ami, driver, t) < 0)
        return -1;
    }
  return 0;
}

static int
read_config (struct kiln_api_input *in, const struct kiln_driver *driver, struct kiln_distribution_config *dc)
{
  const struct kiln_yaml_node *root;
  if (kiln_api_root (in, "a distribution configuration", &root) < 0
      || kiln_api_check_keys (in, root, config_keys, NULL, "the distribution configuration") < 0)
    return -1;
  if (kiln_api_config_common (in, root, &dc->name, &dc->description) < 0)
    return -1;

  const struct kiln_yaml_node *list = kiln_yaml_map_get (root, "distributions");
  if (list == NULL)
    return kiln_api_fail (in, root, "the distribution configuration needs 'distributions'");
  if (list->kind != KILN_YAML_SEQUENCE || list->n_items == 0)
    return kiln_api_fail (in, list, "distributions must be a list of at least one distribution");
  if (!driver->cloud_images && list->n_items != 1)
    return kiln_api_fail (in, list,
                          "distributions holds %zu distributions; the %s driver makes one local image, so it "
                          "takes exactly one",
                          list->n_items, driver->name);
  dc->targets = kiln_xcalloc (list->n_items, sizeof *dc->targets);
  for (size_t i = 0; i < list->n_items; i++)
    {
      dc->n_targets++;
      if (read_distribution (in, list, i, driver, &dc->targets[i]) < 0)
        return -1;
    }
  return 0;
}

int
kiln_distribution_load (const char *path, const struct kiln_driver *driver, struct kiln_distribution_config **out,
                        kiln_error **err)
{
  struct kiln_api_input in;
  if (kiln_api_load (path, &in, err) < 0)
    {
      kiln_api_release (&in);
      return -1;
    }
  struct kiln_distribution_config *dc = kiln_xcalloc (1, sizeof *dc);
  dc->path = kiln_xstrdup (path);
  int r = read_config (&in, driver, dc);
  kiln_api_release (&in);
  if (r < 0)
    {
      kiln_distribution_free (dc);
      return -1;
    }
  *out = dc;
  return 0;
}

/* The config's strings are malloc'd behind the driver table's const. */
static void
free_strv (const char *const *v)
{
  kiln_strv_free ((char **) v);
}

void
kiln_distribution_free (struct kiln_distribution_config *dc)
{
  if (dc == NULL)
    return;
  for (size_t i = 0; i < dc->n_targets; i++)
    {
      struct kiln_image_distribution *t = &dc->targets[i];
      free ((char *) t->region);
      free ((char *) t->name);
      free ((char *) t->description);
      free_strv (t->tags);
      free_strv (t->launch_user_ids);
      free_strv (t->launch_groups);
      free_strv (t->launch_organization_arns);
      free_strv (t->launch_organizational_unit_arns);
      /* Results a distribute call may have left in the targets. */
      kiln_image_distribution_release (t);
    }
  free (dc->targets);
  free (dc->path);
  free (dc->name);
  free (dc->description);
  free (dc);
}

static json_t *
strings_json (const char *const *v)
{
  json_t *a = json_array ();
  for (; *v; v++)
    json_array_append_new (a, json_string (*v));
  return a;
}

/* Adds key: the list v to o when v was given. */
static void
set_strings (json_t *o, const char *key, const char *const *v)
{
  if (v)
    json_object_set_new (o, key, strings_json (v));
}

static json_t *
target_json (const struct kiln_image_distribution *t)
{
  json_t *o = json_object ();
  json_object_set_new (o, "region", json_string (t->region));
  json_t *ami = json_object ();
  if (t->name)
    json_object_set_new (ami, "name", json_string (t->name));
  if (t->description)
    json_object_set_new (ami, "description", json_string (t->description));
  if (t->tags)
    {
      json_t *tags = json_object ();
      for (const char *const *v = t->tags; v[0] && v[1]; v += 2)
        json_object_set_new (tags, v[0], json_string (v[1]));
      json_object_set_new (ami, "amiTags", tags);
    }
  json_t *lp = json_object ();
  set_strings (lp, "userIds", t->launch_user_ids);
  set_strings (lp, "userGroups", t->launch_groups);
  set_strings (lp, "organizationArns", t->launch_organization_arns);
  set_strings (lp, "organizationalUnitArns", t->launch_organizational_unit_arns);
  if (json_object_size (lp))
    json_object_set_new (ami, "launchPermission", lp);
  else
    json_decref (lp);
  if (json_object_size (ami))
    json_object_set_new (o, "amiDistributionConfiguration", ami);
  else
    json_decref (ami);
  return o;
}

/* Fields in the API's order, each only when the file gave it (an
 * amiDistributionConfiguration or launchPermission with nothing in it is
 * left out). */
json_t *
kiln_distribution_to_json (const struct kiln_distribution_config *dc)
{
  json_t *o = json_object ();
  json_object_set_new (o, "path", json_string (dc->path));
  if (dc->name)
    json_object_set_new (o, "name", json_string (dc->name));
  if (dc->description)
    json_object_set_new (o, "description", json_string (dc->description));
  json_t *a = json_array ();
  for (size_t i = 0; i < dc->n_targets; i++)
    json_array_append_new (a, target_json (&dc->targets[i]));
  json_object_set_new (o, "distributions", a);
  return o;
}
