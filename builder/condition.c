/* condition.c - parsing and evaluating AWSTOE comparison and logical
 * expressions (see condition.h).
 *
 * Semantics follow AWS's documented examples rather than its prose where the
 * two disagree: a two-value operator tests `value OP baseline` (numberLessThan:
 * 2 with value: 1 is true); string comparisons ignore case and never trim;
 * a numeric operand that is not a number (^[-+]?([0-9]+[.])?[0-9]+$) makes the
 * comparison false rather than an error; patternMatches is an extended regular
 * expression matched anywhere in the value, ignoring case. */
#include "condition.h"

#include <ctype.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "cleanup.h"
#include "digest.h"
#include "fsutil.h"
#include "template.h"
#include "xalloc.h"

enum operand_kind {
  OPERAND_LOGICAL,  /* and / or / not */
  OPERAND_ONE,      /* the operator's value only */
  OPERAND_TWO,      /* operator's value + `value` */
  OPERAND_HASH,     /* operator's value (a digest) + `path` */
};

struct op_info {
  const char *name;
  enum kiln_condition_op op;
  enum operand_kind kind;
  const char *digest; /* OPERAND_HASH */
};

static const struct op_info op_table[] = {
  {"and", KILN_COND_AND, OPERAND_LOGICAL, NULL},
  {"or", KILN_COND_OR, OPERAND_LOGICAL, NULL},
  {"not", KILN_COND_NOT, OPERAND_LOGICAL, NULL},
  {"stringEquals", KILN_COND_STRING_EQUALS, OPERAND_TWO, NULL},
  {"stringLessThan", KILN_COND_STRING_LESS_THAN, OPERAND_TWO, NULL},
  {"stringLessThanEquals", KILN_COND_STRING_LESS_THAN_EQUALS, OPERAND_TWO, NULL},
  {"stringGreaterThan", KILN_COND_STRING_GREATER_THAN, OPERAND_TWO, NULL},
  {"stringGreaterThanEquals", KILN_COND_STRING_GREATER_THAN_EQUALS, OPERAND_TWO, NULL},
  {"stringIsEmpty", KILN_COND_STRING_IS_EMPTY, OPERAND_ONE, NULL},
  {"stringIsWhitespace", KILN_COND_STRING_IS_WHITESPACE, OPERAND_ONE, NULL},
  {"patternMatches", KILN_COND_PATTERN_MATCHES, OPERAND_TWO, NULL},
  {"numberEquals", KILN_COND_NUMBER_EQUALS, OPERAND_TWO, NULL},
  {"numberLessThan", KILN_COND_NUMBER_LESS_THAN, OPERAND_TWO, NULL},
  {"numberLessThanEquals", KILN_COND_NUMBER_LESS_THAN_EQUALS, OPERAND_TWO, NULL},
  {"numberGreaterThan", KILN_COND_NUMBER_GREATER_THAN, OPERAND_TWO, NULL},
  {"numberGreaterThanEquals", KILN_COND_NUMBER_GREATER_THAN_EQUALS, OPERAND_TWO, NULL},
  {"fileExists", KILN_COND_FILE_EXISTS, OPERAND_ONE, NULL},
  {"folderExists", KILN_COND_FOLDER_EXISTS, OPERAND_ONE, NULL},
  {"binaryExists", KILN_COND_BINARY_EXISTS, OPERAND_ONE, NULL},
  {"fileMD5Equals", KILN_COND_FILE_MD5_EQUALS, OPERAND_HASH, "MD5"},
  {"fileSHA1Equals", KILN_COND_FILE_SHA1_EQUALS, OPERAND_HASH, "SHA1"},
  {"fileSHA256Equals", KILN_COND_FILE_SHA256_EQUALS, OPERAND_HASH, "SHA256"},
  {"fileSHA512Equals", KILN_COND_FILE_SHA512_EQUALS, OPERAND_HASH, "SHA512"},
};

#define N_OPS (sizeof op_table / sizeof op_table[0])

/* AWS's own pages spell one operator "stringlessThan"; operator names are
 * therefore matched without regard to case. */
static const struct op_info *
find_op (const char *name)
{
  for (size_t i = 0; i < N_OPS; i++)
    if (strcasecmp (op_table[i].name, name) == 0)
      return &op_table[i];
  return NULL;
}

static const struct op_info *
info_of (enum kiln_condition_op op)
{
  for (size_t i = 0; i < N_OPS; i++)
    if (op_table[i].op == op)
      return &op_table[i];
  abort ();
}

const char *
kiln_condition_op_name (enum kiln_condition_op op)
{
  return info_of (op)->name;
}

void
kiln_condition_free (struct kiln_condition *c)
{
  if (c == NULL)
    return;
  for (size_t i = 0; i < c->n_children; i++)
    kiln_condition_free (c->children[i]);
  free (c->children);
  free (c);
}

static int
parse_choice (const struct kiln_yaml_doc *doc, const struct kiln_yaml_node *n, enum kiln_step_choice *out,
              kiln_error **err)
{
  if (n->kind == KILN_YAML_SCALAR)
    {
      if (strcmp (n->value, "Execute") == 0)
        *out = KILN_CHOICE_EXECUTE;
      else if (strcmp (n->value, "Skip") == 0)
        *out = KILN_CHOICE_SKIP;
      else if (strcmp (n->value, "Abort") == 0)
        *out = KILN_CHOICE_ABORT;
      else
        return kiln_yaml_error (err, doc, n, "'%s' is not a step action: expected Execute, Skip or Abort", n->value);
      return 0;
    }
  return kiln_yaml_error (err, doc, n, "expected Execute, Skip or Abort, not a %s", kiln_yaml_kind_name (n->kind));
}

static int parse_expression (const struct kiln_yaml_doc *doc, const struct kiln_yaml_node *map, int depth,
                             bool allow_choices, struct kiln_condition **out, enum kiln_step_choice *then_choice,
                             enum kiln_step_choice *else_choice, kiln_error **err);

static int
parse_logical (const struct kiln_yaml_doc *doc, const struct op_info *info, const struct kiln_yaml_node *key,
               const struct kiln_yaml_node *operand, int depth, struct kiln_condition *c, kiln_error **err)
{
  if (depth > KILN_CONDITION_MAX_DEPTH)
    return kiln_yaml_error (err, doc, key, "'%s' nests logical operators deeper than %d levels", info->name,
                            KILN_CONDITION_MAX_DEPTH);
  /* `not` takes one expression, written as a mapping or a one-item list;
   * `and`/`or` take a list of one or more. */
  const struct kiln_yaml_node *const *items;
  size_t n_items;
  const struct kiln_yaml_node *single = operand;
  if (operand->kind == KILN_YAML_SEQUENCE)
    {
      items = (const struct kiln_yaml_node *const *) operand->items;
      n_items = operand->n_items;
    }
  else if (operand->kind == KILN_YAML_MAPPING && info->op == KILN_COND_NOT)
    {
      items = &single;
      n_items = 1;
    }
  else
    return kiln_yaml_error (err, doc, operand, "'%s' takes a list of expressions, not a %s", info->name,
                            kiln_yaml_kind_name (operand->kind));
  if (n_items == 0)
    return kiln_yaml_error (err, doc, operand, "'%s' needs at least one expression", info->name);
  if (info->op == KILN_COND_NOT && n_items != 1)
    return kiln_yaml_error (err, doc, operand, "'not' takes exactly one expression, got %zu", n_items);
  c->children = calloc (n_items, sizeof *c->children);
  if (c->children == NULL)
    abort ();
  for (size_t i = 0; i < n_items; i++)
    {
      if (items[i]->kind != KILN_YAML_MAPPING)
        return kiln_yaml_error (err, doc, items[i], "expected a comparison or logical expression, not a %s",
                                kiln_yaml_kind_name (items[i]->kind));
      if (parse_expression (doc, items[i], depth + 1, false, &c->children[i], NULL, NULL, err) < 0)
        return -1;
      c->n_children++;
    }
  return 0;
}

static int
parse_expression (const struct kiln_yaml_doc *doc, const struct kiln_yaml_node *map, int depth, bool allow_choices,
                  struct kiln_condition **out, enum kiln_step_choice *then_choice, enum kiln_step_choice *else_choice,
                  kiln_error **err)
{
  const struct kiln_yaml_node *op_key = NULL, *op_value = NULL, *value = NULL, *path = NULL;
  const struct kiln_yaml_node *value_key = NULL, *path_key = NULL;
  const struct op_info *info = NULL;

  for (size_t i = 0; i < map->n_pairs; i++)
    {
      const struct kiln_yaml_node *k = map->pairs[i].key, *v = map->pairs[i].value;
      if (strcmp (k->value, "value") == 0)
        {
          value = v;
          value_key = k;
        }
      else if (strcmp (k->value, "path") == 0)
        {
          path = v;
          path_key = k;
        }
      else if (allow_choices && strcmp (k->value, "then") == 0)
        {
          if (parse_choice (doc, v, then_choice, err) < 0)
            return -1;
        }
      else if (allow_choices && strcmp (k->value, "else") == 0)
        {
          if (parse_choice (doc, v, else_choice, err) < 0)
            return -1;
        }
      else
        {
          const struct op_info *found = find_op (k->value);
          if (found == NULL)
            return kiln_yaml_error (err, doc, k, "unknown operator '%s'", k->value);
          if (info != NULL)
            return kiln_yaml_error (err, doc, k,
                                    "only one operator per expression ('%s' and '%s'): combine them with and/or",
                                    op_key->value, k->value);
          info = found;
          op_key = k;
          op_value = v;
        }
    }
  if (info == NULL)
    return kiln_yaml_error (err, doc, map, "expected a comparison or logical operator");

  struct kiln_condition *c = calloc (1, sizeof *c);
  if (c == NULL)
    abort ();
  c->op = info->op;
  c->node = op_key;

  int r = 0;
  switch (info->kind)
    {
    case OPERAND_LOGICAL:
      if (value_key || path_key)
        r = kiln_yaml_error (err, doc, value_key ? value_key : path_key, "'%s' does not take '%s'", info->name,
                             value_key ? "value" : "path");
      else
        r = parse_logical (doc, info, op_key, op_value, depth, c, err);
      break;
    case OPERAND_ONE:
    case OPERAND_TWO:
    case OPERAND_HASH:
      if (op_value->kind != KILN_YAML_SCALAR)
        {
          r = kiln_yaml_error (err, doc, op_value, "'%s' takes a string or number, not a %s", info->name,
                               kiln_yaml_kind_name (op_value->kind));
          break;
        }
      c->operand = op_value;
      if (info->kind == OPERAND_ONE && (value_key || path_key))
        r = kiln_yaml_error (err, doc, value_key ? value_key : path_key, "'%s' does not take '%s'", info->name,
                             value_key ? "value" : "path");
      else if (info->kind == OPERAND_TWO && path_key)
        r = kiln_yaml_error (err, doc, path_key, "'%s' does not take 'path'", info->name);
      else if (info->kind == OPERAND_TWO && value == NULL)
        r = kiln_yaml_error (err, doc, op_key, "'%s' needs a 'value' to compare", info->name);
      else if (info->kind == OPERAND_HASH && value_key)
        r = kiln_yaml_error (err, doc, value_key, "'%s' takes 'path', not 'value'", info->name);
      else if (info->kind == OPERAND_HASH && path == NULL)
        r = kiln_yaml_error (err, doc, op_key, "'%s' needs the 'path' of the file", info->name);
      else
        {
          const struct kiln_yaml_node *second = info->kind == OPERAND_HASH ? path : value;
          if (second && second->kind != KILN_YAML_SCALAR)
            r = kiln_yaml_error (err, doc, second, "'%s' must be a string or number, not a %s",
                                 info->kind == OPERAND_HASH ? "path" : "value", kiln_yaml_kind_name (second->kind));
          c->value = second;
        }
      if (r == 0 && info->op == KILN_COND_PATTERN_MATCHES && !kiln_template_has_expression (c->operand->value))
        {
          regex_t re;
          int rc = regcomp (&re, c->operand->value, REG_EXTENDED | REG_ICASE | REG_NOSUB);
          if (rc != 0)
            {
              char msg[256];
              regerror (rc, &re, msg, sizeof msg);
              r = kiln_yaml_error (err, doc, c->operand, "bad pattern '%s': %s", c->operand->value, msg);
            }
          else
            regfree (&re);
        }
      break;
    }
  if (r < 0)
    {
      kiln_condition_free (c);
      return -1;
    }
  *out = c;
  return 0;
}

int
kiln_condition_parse (const struct kiln_yaml_doc *doc, const struct kiln_yaml_node *node, bool allow_choices,
                      struct kiln_condition **out, enum kiln_step_choice *then_choice,
                      enum kiln_step_choice *else_choice, kiln_error **err)
{
  enum kiln_step_choice t = KILN_CHOICE_DEFAULT, e = KILN_CHOICE_DEFAULT;
  /* AWS's syntax block shows `if:` holding a one-item list; its examples a
   * mapping.  Both are accepted. */
  if (node->kind == KILN_YAML_SEQUENCE && node->n_items == 1)
    node = node->items[0];
  if (node->kind != KILN_YAML_MAPPING)
    return kiln_yaml_error (err, doc, node, "expected a comparison or logical expression, not a %s",
                            kiln_yaml_kind_name (node->kind));
  if (parse_expression (doc, node, 1, allow_choices, out, &t, &e, err) < 0)
    return -1;
  if (then_choice)
    *then_choice = t;
  if (else_choice)
    *else_choice = e;
  return 0;
}

int
kiln_condition_visit (const struct kiln_condition *c, kiln_condition_visitor visit, void *opaque, kiln_error **err)
{
  if (c->operand && visit (opaque, c->operand, err) < 0)
    return -1;
  if (c->value && visit (opaque, c->value, err) < 0)
    return -1;
  for (size_t i = 0; i < c->n_children; i++)
    if (kiln_condition_visit (c->children[i], visit, opaque, err) < 0)
      return -1;
  return 0;
}

/* ^[-+]?([0-9]+[.])?[0-9]+$, as AWS documents numeric strings. */
static bool
parse_number (const char *s, long double *out)
{
  const char *p = s;
  if (*p == '+' || *p == '-')
    p++;
  const char *digits = p;
  while (isdigit ((unsigned char) *p))
    p++;
  if (p == digits)
    return false;
  if (*p == '.')
    {
      p++;
      const char *frac = p;
      while (isdigit ((unsigned char) *p))
        p++;
      if (p == frac)
        return false;
    }
  if (*p != '\0')
    return false;
  *out = strtold (s, NULL);
  return true;
}

static int
run_test (const struct kiln_condition_env *env, const char *flag, const char *path, bool *result, kiln_error **err)
{
  char *argv[] = {(char *) "test", (char *) flag, (char *) path, NULL};
  struct kiln_target_command cmd = {.argv = argv, .timeout_seconds = 60};
  struct kiln_target_result res = {0};
  if (kiln_target_run (env->target, &cmd, &res, err) < 0)
    return -1;
  *result = res.exit_code == 0;
  kiln_target_result_release (&res);
  return 0;
}

static int
binary_exists (const struct kiln_condition_env *env, const char *name, bool *result, kiln_error **err)
{
  /* `type` finds what a bash script could run: programs on PATH and builtins. */
  char *argv[] = {(char *) "bash", (char *) "-c", (char *) "type -- \"$1\" >/dev/null 2>&1", (char *) "bash",
                  (char *) name, NULL};
  struct kiln_target_command cmd = {.argv = argv, .timeout_seconds = 60};
  struct kiln_target_result res = {0};
  if (kiln_target_run (env->target, &cmd, &res, err) < 0)
    return -1;
  *result = res.exit_code == 0;
  kiln_target_result_release (&res);
  return 0;
}

static int
file_hash_equals (const struct kiln_condition_env *env, const char *algorithm, const char *expected,
                  const char *path, bool *result, kiln_error **err)
{
  struct kiln_target_stat st;
  if (kiln_target_stat (env->target, path, &st, err) < 0)
    return -1;
  if (!st.exists)
    {
      *result = false;
      return 0;
    }
  _cleanup_free_ char *tmpdir = NULL;
  if (kiln_make_temp_dir ("kiln-hash", &tmpdir, err) < 0)
    return -1;
  _cleanup_free_ char *local = NULL;
  local = kiln_xasprintf ("%s/file", tmpdir);
  int r = kiln_target_get_file (env->target, path, local, err);
  char hex[KILN_DIGEST_HEX_MAX];
  if (r == 0)
    r = kiln_digest_file_hex (algorithm, local, hex, err);
  unlink (local);
  rmdir (tmpdir);
  if (r < 0)
    return -1;
  *result = strcasecmp (hex, expected) == 0;
  return 0;
}

int
kiln_condition_eval (const struct kiln_condition *c, const struct kiln_condition_env *env, bool *result,
                     kiln_error **err)
{
  switch (c->op)
    {
    case KILN_COND_AND:
    case KILN_COND_OR:
      for (size_t i = 0; i < c->n_children; i++)
        {
          bool r;
          if (kiln_condition_eval (c->children[i], env, &r, err) < 0)
            return -1;
          if (c->op == KILN_COND_AND && !r)
            return *result = false, 0;
          if (c->op == KILN_COND_OR && r)
            return *result = true, 0;
        }
      *result = c->op == KILN_COND_AND;
      return 0;
    case KILN_COND_NOT:
      {
        bool r;
        if (kiln_condition_eval (c->children[0], env, &r, err) < 0)
          return -1;
        *result = !r;
        return 0;
      }
    default:
      break;
    }

  _cleanup_free_ char *baseline = NULL;
  _cleanup_free_ char *value = NULL;
  if (env->expand (env->opaque, c->operand, &baseline, err) < 0)
    return -1;
  if (c->value && env->expand (env->opaque, c->value, &value, err) < 0)
    return -1;

  long double a, b;
  switch (c->op)
    {
    case KILN_COND_STRING_EQUALS:
      *result = strcasecmp (value, baseline) == 0;
      return 0;
    case KILN_COND_STRING_LESS_THAN:
      *result = strcasecmp (value, baseline) < 0;
      return 0;
    case KILN_COND_STRING_LESS_THAN_EQUALS:
      *result = strcasecmp (value, baseline) <= 0;
      return 0;
    case KILN_COND_STRING_GREATER_THAN:
      *result = strcasecmp (value, baseline) > 0;
      return 0;
    case KILN_COND_STRING_GREATER_THAN_EQUALS:
      *result = strcasecmp (value, baseline) >= 0;
      return 0;
    case KILN_COND_STRING_IS_EMPTY:
      *result = baseline[0] == '\0';
      return 0;
    case KILN_COND_STRING_IS_WHITESPACE:
      {
        bool all = baseline[0] != '\0';
        for (const char *p = baseline; *p; p++)
          if (!isspace ((unsigned char) *p))
            all = false;
        *result = all;
        return 0;
      }
    case KILN_COND_PATTERN_MATCHES:
      {
        regex_t re;
        int rc = regcomp (&re, baseline, REG_EXTENDED | REG_ICASE | REG_NOSUB);
        if (rc != 0)
          {
            char msg[256];
            regerror (rc, &re, msg, sizeof msg);
            return kiln_fail_invalid (err, "bad pattern '%s': %s", baseline, msg);
          }
        *result = regexec (&re, value, 0, NULL, 0) == 0;
        regfree (&re);
        return 0;
      }
    case KILN_COND_NUMBER_EQUALS:
    case KILN_COND_NUMBER_LESS_THAN:
    case KILN_COND_NUMBER_LESS_THAN_EQUALS:
    case KILN_COND_NUMBER_GREATER_THAN:
    case KILN_COND_NUMBER_GREATER_THAN_EQUALS:
      if (!parse_number (baseline, &b) || !parse_number (value, &a))
        {
          *result = false;
          return 0;
        }
      if (c->op == KILN_COND_NUMBER_EQUALS)
        *result = a == b;
      else if (c->op == KILN_COND_NUMBER_LESS_THAN)
        *result = a < b;
      else if (c->op == KILN_COND_NUMBER_LESS_THAN_EQUALS)
        *result = a <= b;
      else if (c->op == KILN_COND_NUMBER_GREATER_THAN)
        *result = a > b;
      else
        *result = a >= b;
      return 0;
    case KILN_COND_FILE_EXISTS:
      return run_test (env, "-f", baseline, result, err);
    case KILN_COND_FOLDER_EXISTS:
      return run_test (env, "-d", baseline, result, err);
    case KILN_COND_BINARY_EXISTS:
      return binary_exists (env, baseline, result, err);
    case KILN_COND_FILE_MD5_EQUALS:
    case KILN_COND_FILE_SHA1_EQUALS:
    case KILN_COND_FILE_SHA256_EQUALS:
    case KILN_COND_FILE_SHA512_EQUALS:
      return file_hash_equals (env, info_of (c->op)->digest, baseline, value, result, err);
    default:
      abort ();
    }
}
