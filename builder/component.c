/* component.c - loading and validating AWSTOE component documents (see
 * component.h).
 *
 * Validation is complete before anything runs: document structure, every key
 * and type, action inputs against the module's declared fields, loops,
 * conditions, and every `{{ }}` expression (a variable that exists, a loop the
 * step has, a chained step that runs earlier and has the named input or
 * output).  ExecuteDocument targets given as literal paths are loaded and
 * validated too, with nesting depth and cycles checked.  The first error ends
 * validation and names FILE:LINE:COL. */
#include "component.h"

#include <ctype.h>
#include <errno.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "action.h"
#include "buf.h"
#include "cleanup.h"
#include "condition.h"
#include "digest.h"
#include "fsutil.h"
#include "template.h"
#include "xalloc.h"

const char *const kiln_phase_names[] = {"build", "validate", "test", "container-host-test", NULL};

struct parser {
  struct kiln_component *c;
  const struct kiln_yaml_doc *doc;
  const struct kiln_component_load_opts *opts;
  kiln_error **err;
};

#define FAIL(ps, node, ...) kiln_yaml_error ((ps)->err, (ps)->doc, (node), __VA_ARGS__)

const char *
kiln_on_failure_name (enum kiln_on_failure f)
{
  switch (f)
    {
    case KILN_ON_FAILURE_ABORT:
      return "Abort";
    case KILN_ON_FAILURE_CONTINUE:
      return "Continue";
    case KILN_ON_FAILURE_IGNORE:
      return "Ignore";
    }
  return "Abort";
}


/* Rejects keys of `map` not in `allowed` (NULL-terminated), listing them. */
static int
check_keys (struct parser *ps, const struct kiln_yaml_node *map, const char *const *allowed, const char *what)
{
  for (size_t i = 0; i < map->n_pairs; i++)
    {
      const struct kiln_yaml_node *k = map->pairs[i].key;
      bool ok = false;
      for (const char *const *a = allowed; *a; a++)
        if (strcmp (k->value, *a) == 0)
          ok = true;
      if (ok)
        continue;
      struct kiln_buf list = KILN_BUF_INIT;
      for (const char *const *a = allowed; *a; a++)
        kiln_buf_printf (&list, "%s%s", a == allowed ? "" : ", ", *a);
      FAIL (ps, k, "unknown key '%s' in %s (expected %s)", k->value, what, kiln_buf_str (&list));
      kiln_buf_release (&list);
      return -1;
    }
  return 0;
}

static int
expect_kind (struct parser *ps, const struct kiln_yaml_node *n, enum kiln_yaml_kind kind, const char *what)
{
  if (n->kind == kind)
    return 0;
  const char *article = kind == KILN_YAML_SCALAR ? "a string" : kind == KILN_YAML_SEQUENCE ? "a list" : "a mapping";
  return FAIL (ps, n, "%s must be %s, not a %s", what, article, kiln_yaml_kind_name (n->kind));
}

static int
expect_string (struct parser *ps, const struct kiln_yaml_node *n, const char *what, char **out)
{
  if (expect_kind (ps, n, KILN_YAML_SCALAR, what) < 0)
    return -1;
  *out = kiln_xstrdup (n->value);
  return 0;
}

static bool
is_identifier (const char *s, size_t min, size_t max)
{
  size_t n = strlen (s);
  if (n < min || n > max)
    return false;
  for (const char *p = s; *p; p++)
    if (!isalnum ((unsigned char) *p) && *p != '_' && *p != '-')
      return false;
  return true;
}

static int
parse_int (struct parser *ps, const struct kiln_yaml_node *n, const char *what, long *out)
{
  if (n->kind != KILN_YAML_SCALAR || kiln_yaml_as_long (n, out) < 0)
    return FAIL (ps, n, "%s must be an integer%s%s%s", what, n->kind == KILN_YAML_SCALAR ? ", not '" : "",
                 n->kind == KILN_YAML_SCALAR ? n->value : "", n->kind == KILN_YAML_SCALAR ? "'" : "");
  return 0;
}

/* ---- parameters and constants ---------------------------------------- */

static int
parse_variables (struct parser *ps, const struct kiln_yaml_node *list, bool constant)
{
  const char *what = constant ? "constants" : "parameters";
  if (expect_kind (ps, list, KILN_YAML_SEQUENCE, what) < 0)
    return -1;
  struct kiln_component *c = ps->c;
  for (size_t i = 0; i < list->n_items; i++)
    {
      const struct kiln_yaml_node *item = list->items[i];
      if (item->kind != KILN_YAML_MAPPING || item->n_pairs != 1)
        return FAIL (ps, item, "each entry of %s must be a mapping with one key, the %s's name (- Name: {type: string, ...})",
                     what, constant ? "constant" : "parameter");
      const struct kiln_yaml_node *name = item->pairs[0].key, *spec = item->pairs[0].value;
      if (!is_identifier (name->value, 3, 128))
        return FAIL (ps, name, "%s name '%s' must be 3 to 128 letters, digits, '_' or '-'",
                     constant ? "constant" : "parameter", name->value);
      if (kiln_component_variable (c, name->value))
        return FAIL (ps, name, "'%s' is already defined (names are unique across parameters and constants)",
                     name->value);
      if (expect_kind (ps, spec, KILN_YAML_MAPPING, name->value) < 0)
        return -1;
      static const char *const param_keys[] = {"type", "default", "description", NULL};
      static const char *const const_keys[] = {"type", "value", "description", NULL};
      if (check_keys (ps, spec, constant ? const_keys : param_keys, constant ? "a constant" : "a parameter") < 0)
        return -1;
      const struct kiln_yaml_node *type = kiln_yaml_map_get (spec, "type");
      if (type == NULL)
        return FAIL (ps, spec, "'%s' needs 'type: string'", name->value);
      if (type->kind != KILN_YAML_SCALAR || strcasecmp (type->value, "string") != 0)
        return FAIL (ps, type, "type of '%s' must be 'string'%s%s%s", name->value,
                     type->kind == KILN_YAML_SCALAR ? ", not '" : "", type->kind == KILN_YAML_SCALAR ? type->value : "",
                     type->kind == KILN_YAML_SCALAR ? "'" : "");

      c->variables = realloc (c->variables, (c->n_variables + 1) * sizeof *c->variables);
      if (c->variables == NULL)
        abort ();
      struct kiln_variable *v = &c->variables[c->n_variables];
      memset (v, 0, sizeof *v);
      v->name = kiln_xstrdup (name->value);
      v->constant = constant;
      v->node = name;
      c->n_variables++;

      const struct kiln_yaml_node *value = kiln_yaml_map_get (spec, constant ? "value" : "default");
      if (constant && value == NULL)
        return FAIL (ps, spec, "constant '%s' needs a 'value'", name->value);
      if (value && expect_string (ps, value, constant ? "value" : "default", &v->value) < 0)
        return -1;
      if (value && kiln_template_has_expression (v->value))
        return FAIL (ps, value, "'%s' of '%s' cannot use expressions", constant ? "value" : "default", name->value);
      const struct kiln_yaml_node *desc = kiln_yaml_map_get (spec, "description");
      if (desc && expect_string (ps, desc, "description", &v->description) < 0)
        return -1;
    }
  return 0;
}

/* ---- action inputs ------------------------------------------------------ */

static const struct kiln_input_field *
find_field (const struct kiln_action *a, const char *name)
{
  for (const struct kiln_input_field *f = a->fields; f && f->name; f++)
    if (strcmp (f->name, name) == 0)
      return f;
  return NULL;
}

static bool
literal (const struct kiln_yaml_node *n)
{
  return n->kind == KILN_YAML_SCALAR && !kiln_template_has_expression (n->value);
}

static int
check_field_type (struct parser *ps, const struct kiln_action *a, const struct kiln_input_field *f,
                  const struct kiln_yaml_node *v)
{
  if (kiln_yaml_is_null (v))
    {
      if (f->required)
        return FAIL (ps, v, "%s input '%s' needs a value", a->name, f->name);
      return 0;
    }
  switch (f->type)
    {
    case KILN_IN_STRING:
      if (v->kind != KILN_YAML_SCALAR)
        return FAIL (ps, v, "%s input '%s' must be a string, not a %s", a->name, f->name, kiln_yaml_kind_name (v->kind));
      return 0;
    case KILN_IN_BOOL:
      {
        if (v->kind != KILN_YAML_SCALAR)
          return FAIL (ps, v, "%s input '%s' must be true or false", a->name, f->name);
        if (!literal (v))
          return 0;
        if (strcasecmp (v->value, "true") != 0 && strcasecmp (v->value, "false") != 0)
          return FAIL (ps, v, "%s input '%s' must be true or false, not '%s'", a->name, f->name, v->value);
        return 0;
      }
    case KILN_IN_INT:
      {
        long l;
        if (v->kind != KILN_YAML_SCALAR || (literal (v) && kiln_yaml_as_long (v, &l) < 0))
          return FAIL (ps, v, "%s input '%s' must be an integer", a->name, f->name);
        return 0;
      }
    case KILN_IN_STRING_LIST:
      if (v->kind != KILN_YAML_SEQUENCE)
        return FAIL (ps, v, "%s input '%s' must be a list of strings, not a %s", a->name, f->name,
                     kiln_yaml_kind_name (v->kind));
      for (size_t i = 0; i < v->n_items; i++)
        if (v->items[i]->kind != KILN_YAML_SCALAR)
          return FAIL (ps, v->items[i], "%s input '%s' must be a list of strings, not hold a %s", a->name, f->name,
                       kiln_yaml_kind_name (v->items[i]->kind));
      return 0;
    case KILN_IN_NAME_VALUES:
      if (v->kind != KILN_YAML_SEQUENCE)
        return FAIL (ps, v, "%s input '%s' must be a list of {name, value}", a->name, f->name);
      for (size_t i = 0; i < v->n_items; i++)
        {
          const struct kiln_yaml_node *it = v->items[i];
          static const char *const nv_keys[] = {"name", "value", NULL};
          if (it->kind != KILN_YAML_MAPPING)
            return FAIL (ps, it, "%s input '%s' entries must be {name, value} mappings", a->name, f->name);
          if (check_keys (ps, it, nv_keys, f->name) < 0)
            return -1;
          const struct kiln_yaml_node *n = kiln_yaml_map_get (it, "name"), *val = kiln_yaml_map_get (it, "value");
          if (n == NULL || val == NULL)
            return FAIL (ps, it, "%s input '%s' entries need both 'name' and 'value'", a->name, f->name);
          if (n->kind != KILN_YAML_SCALAR || val->kind != KILN_YAML_SCALAR)
            return FAIL (ps, n->kind != KILN_YAML_SCALAR ? n : val, "'name' and 'value' must be strings");
        }
      return 0;
    case KILN_IN_ANY:
      return 0;
    }
  return 0;
}

static int
check_input_entry (struct parser *ps, const struct kiln_action *a, const struct kiln_yaml_node *entry)
{
  if (entry->kind != KILN_YAML_MAPPING)
    return FAIL (ps, entry, "%s inputs must be a mapping of input names, not a %s", a->name,
                 kiln_yaml_kind_name (entry->kind));
  for (size_t i = 0; i < entry->n_pairs; i++)
    {
      const struct kiln_yaml_node *k = entry->pairs[i].key;
      const struct kiln_input_field *f = find_field (a, k->value);
      if (f == NULL)
        {
          struct kiln_buf list = KILN_BUF_INIT;
          for (const struct kiln_input_field *g = a->fields; g && g->name; g++)
            kiln_buf_printf (&list, "%s%s", g == a->fields ? "" : ", ", g->name);
          FAIL (ps, k, "unknown input '%s' for %s (expected %s)", k->value, a->name,
                list.len ? kiln_buf_str (&list) : "no inputs");
          kiln_buf_release (&list);
          return -1;
        }
      if (check_field_type (ps, a, f, entry->pairs[i].value) < 0)
        return -1;
    }
  for (const struct kiln_input_field *f = a->fields; f && f->name; f++)
    if (f->required && kiln_yaml_map_get (entry, f->name) == NULL)
      return FAIL (ps, entry, "%s input '%s' is required", a->name, f->name);
  return 0;
}

static bool
action_needs_inputs (const struct kiln_action *a)
{
  if (a->shape != KILN_INPUTS_MAP)
    return true;
  for (const struct kiln_input_field *f = a->fields; f && f->name; f++)
    if (f->required)
      return true;
  return false;
}

static int
check_inputs (struct parser *ps, struct kiln_step *s)
{
  const struct kiln_action *a = s->action;
  const struct kiln_yaml_node *in = s->inputs;
  if (in == NULL)
    {
      if (action_needs_inputs (a))
        return FAIL (ps, s->node, "step '%s': %s needs 'inputs'", s->name, a->name);
      return 0;
    }
  switch (a->shape)
    {
    case KILN_INPUTS_MAP:
      if (check_input_entry (ps, a, in) < 0)
        return -1;
      break;
    case KILN_INPUTS_LIST:
      if (in->kind != KILN_YAML_SEQUENCE)
        return FAIL (ps, in, "%s inputs must be a list of entries (- path: ...), not a %s", a->name,
                     kiln_yaml_kind_name (in->kind));
      if (in->n_items == 0)
        return FAIL (ps, in, "%s inputs must hold at least one entry", a->name);
      for (size_t i = 0; i < in->n_items; i++)
        if (check_input_entry (ps, a, in->items[i]) < 0)
          return -1;
      break;
    case KILN_INPUTS_CONDITION:
      {
        struct kiln_condition *cond = NULL;
        if (kiln_condition_parse (ps->doc, in, false, &cond, NULL, NULL, ps->err) < 0)
          return -1;
        kiln_condition_free (cond);
      }
      break;
    }
  if (a->check)
    {
      struct kiln_action_check_ctx cc = {.doc = ps->doc, .inputs = in};
      if (a->check (&cc, ps->err) < 0)
        return -1;
    }
  return 0;
}

/* ---- loops ---------------------------------------------------------------- */

static int
parse_loop (struct parser *ps, const struct kiln_yaml_node *n, struct kiln_step *s)
{
  if (expect_kind (ps, n, KILN_YAML_MAPPING, "loop") < 0)
    return -1;
  static const char *const keys[] = {"name", "for", "forEach", NULL};
  if (check_keys (ps, n, keys, "a loop") < 0)
    return -1;
  struct kiln_loop *l = calloc (1, sizeof *l);
  if (l == NULL)
    abort ();
  s->loop = l;
  l->node = n;
  const struct kiln_yaml_node *name = kiln_yaml_map_get (n, "name");
  if (name)
    {
      if (expect_string (ps, name, "loop name", &l->name) < 0)
        return -1;
      if (!is_identifier (l->name, 1, 128))
        return FAIL (ps, name, "loop name '%s' must be letters, digits, '_' or '-'", l->name);
      if (strcmp (l->name, "loop") == 0)
        return FAIL (ps, name, "'loop' is reserved: {{ loop.index }} always means the step's own loop");
    }
  const struct kiln_yaml_node *f = kiln_yaml_map_get (n, "for"), *fe = kiln_yaml_map_get (n, "forEach");
  if ((f == NULL) == (fe == NULL))
    return FAIL (ps, n, "a loop needs exactly one of 'for' or 'forEach'");
  if (f)
    {
      l->kind = KILN_LOOP_FOR;
      if (expect_kind (ps, f, KILN_YAML_MAPPING, "for") < 0)
        return -1;
      static const char *const for_keys[] = {"start", "end", "updateBy", NULL};
      if (check_keys (ps, f, for_keys, "a for loop") < 0)
        return -1;
      long v[3];
      const struct kiln_yaml_node **slots[3] = {&l->start, &l->end, &l->update_by};
      for (int i = 0; i < 3; i++)
        {
          const struct kiln_yaml_node *x = kiln_yaml_map_get (f, for_keys[i]);
          if (x == NULL)
            return FAIL (ps, f, "a for loop needs '%s'", for_keys[i]);
          if (x->kind == KILN_YAML_SCALAR && kiln_template_has_expression (x->value))
            return FAIL (ps, x, "for loop '%s' must be an integer: expressions are not allowed here", for_keys[i]);
          if (parse_int (ps, x, for_keys[i], &v[i]) < 0)
            return -1;
          *slots[i] = x;
        }
      if (v[2] == 0)
        return FAIL (ps, l->update_by, "updateBy must not be 0");
      if ((v[0] < v[1] && v[2] < 0) || (v[0] > v[1] && v[2] > 0))
        return FAIL (ps, l->update_by, "updateBy %ld never takes start %ld to end %ld", v[2], v[0], v[1]);
      return 0;
    }
  l->kind = KILN_LOOP_FOREACH;
  if (fe->kind == KILN_YAML_SEQUENCE)
    {
      for (size_t i = 0; i < fe->n_items; i++)
        if (fe->items[i]->kind != KILN_YAML_SCALAR)
          return FAIL (ps, fe->items[i], "forEach values must be strings, not a %s",
                       kiln_yaml_kind_name (fe->items[i]->kind));
      l->values = fe;
      return 0;
    }
  if (fe->kind != KILN_YAML_MAPPING)
    return FAIL (ps, fe, "forEach must be a list of values or {list, delimiter}");
  static const char *const fe_keys[] = {"list", "delimiter", NULL};
  if (check_keys (ps, fe, fe_keys, "forEach") < 0)
    return -1;
  l->list = kiln_yaml_map_get (fe, "list");
  if (l->list == NULL)
    return FAIL (ps, fe, "forEach needs 'list'");
  if (expect_kind (ps, l->list, KILN_YAML_SCALAR, "forEach list") < 0)
    return -1;
  l->delimiter = kiln_yaml_map_get (fe, "delimiter");
  if (l->delimiter)
    {
      if (expect_kind (ps, l->delimiter, KILN_YAML_SCALAR, "delimiter") < 0)
        return -1;
      if (l->delimiter->len != 1 || strchr (".,;:\n\t -_", l->delimiter->value[0]) == NULL)
        return FAIL (ps, l->delimiter, "delimiter must be one of . , ; : - _ space, tab or newline");
    }
  return 0;
}

/* ---- steps and phases -------------------------------------------------- */

static int
parse_step (struct parser *ps, const struct kiln_yaml_node *n, struct kiln_phase *ph, struct kiln_step *s)
{
  s->node = n;
  s->max_attempts = 1;
  s->timeout_seconds = 7200;
  s->on_failure = KILN_ON_FAILURE_ABORT;
  if (expect_kind (ps, n, KILN_YAML_MAPPING, "a step") < 0)
    return -1;
  static const char *const keys[] = {"name", "action", "inputs", "onFailure", "maxAttempts", "timeoutSeconds", "loop",
                                     "if", NULL};
  if (check_keys (ps, n, keys, "a step") < 0)
    return -1;
  const struct kiln_yaml_node *name = kiln_yaml_map_get (n, "name");
  if (name == NULL)
    return FAIL (ps, n, "step needs a 'name'");
  if (expect_string (ps, name, "step name", &s->name) < 0)
    return -1;
  if (s->name[0] == '\0' || strpbrk (s->name, ".{}[]") != NULL)
    return FAIL (ps, name, "step name '%s' must be non-empty and hold no '.', '{', '}', '[' or ']'", s->name);
  for (size_t i = 0; ph->steps + i < s; i++)
    if (strcmp (ph->steps[i].name, s->name) == 0)
      return FAIL (ps, name, "duplicate step name '%s' in phase '%s' (first at line %d)", s->name, ph->name,
                   ph->steps[i].node->line);

  const struct kiln_yaml_node *action = kiln_yaml_map_get (n, "action");
  if (action == NULL)
    return FAIL (ps, n, "step '%s' needs an 'action'", s->name);
  if (expect_kind (ps, action, KILN_YAML_SCALAR, "action") < 0)
    return -1;
  s->action = kiln_action_find (action->value);
  if (s->action == NULL)
    return FAIL (ps, action, "unknown action '%s' (known: %s)", action->value, kiln_action_names ());
  if (s->action->windows_only)
    return FAIL (ps, action, "action '%s' is Windows-only and not supported on Linux", action->value);

  const struct kiln_yaml_node *v;
  if ((v = kiln_yaml_map_get (n, "onFailure")))
    {
      if (expect_kind (ps, v, KILN_YAML_SCALAR, "onFailure") < 0)
        return -1;
      if (strcmp (v->value, "Abort") == 0)
        s->on_failure = KILN_ON_FAILURE_ABORT;
      else if (strcmp (v->value, "Continue") == 0)
        s->on_failure = KILN_ON_FAILURE_CONTINUE;
      else if (strcmp (v->value, "Ignore") == 0)
        s->on_failure = KILN_ON_FAILURE_IGNORE;
      else
        return FAIL (ps, v, "onFailure must be Abort, Continue or Ignore, not '%s'", v->value);
    }
  bool is_document = strcmp (s->action->name, "ExecuteDocument") == 0;
  if ((v = kiln_yaml_map_get (n, "maxAttempts")))
    {
      long l;
      if (parse_int (ps, v, "maxAttempts", &l) < 0)
        return -1;
      if (l < 1 || l > 1000)
        return FAIL (ps, v, "maxAttempts must be between 1 and 1000, not %ld", l);
      if (is_document && l != 1)
        return FAIL (ps, v, "ExecuteDocument runs once: maxAttempts must be 1");
      s->max_attempts = (int) l;
    }
  if ((v = kiln_yaml_map_get (n, "timeoutSeconds")))
    {
      long l;
      if (parse_int (ps, v, "timeoutSeconds", &l) < 0)
        return -1;
      if (l == 0 || l < -1 || l > INT_MAX)
        return FAIL (ps, v, "timeoutSeconds must be a positive number of seconds or -1 for none, not %ld", l);
      if (is_document && l != -1)
        return FAIL (ps, v, "ExecuteDocument has no timeout: timeoutSeconds must be -1");
      s->timeout_seconds = (int) l;
    }
  if (is_document)
    s->timeout_seconds = -1;

  if ((v = kiln_yaml_map_get (n, "loop")) && parse_loop (ps, v, s) < 0)
    return -1;
  if (s->loop && s->loop->name)
    for (size_t i = 0; ph->steps + i < s; i++)
      if (ph->steps[i].loop && ph->steps[i].loop->name && strcmp (ph->steps[i].loop->name, s->loop->name) == 0)
        return FAIL (ps, kiln_yaml_map_get (s->loop->node, "name"), "duplicate loop name '%s' in phase '%s'",
                     s->loop->name, ph->name);
  if ((v = kiln_yaml_map_get (n, "if"))
      && kiln_condition_parse (ps->doc, v, true, &s->condition, &s->then_choice, &s->else_choice, ps->err) < 0)
    return -1;

  s->inputs = kiln_yaml_map_get (n, "inputs");
  if (s->inputs && kiln_yaml_is_null (s->inputs))
    s->inputs = NULL;
  return check_inputs (ps, s);
}

static int
parse_phases (struct parser *ps, const struct kiln_yaml_node *list)
{
  if (expect_kind (ps, list, KILN_YAML_SEQUENCE, "phases") < 0)
    return -1;
  if (list->n_items == 0)
    return FAIL (ps, list, "phases must hold at least one phase");
  struct kiln_component *c = ps->c;
  c->phases = calloc (list->n_items, sizeof *c->phases);
  if (c->phases == NULL)
    abort ();
  bool main_phase = false;
  for (size_t i = 0; i < list->n_items; i++)
    {
      const struct kiln_yaml_node *pn = list->items[i];
      struct kiln_phase *ph = &c->phases[i];
      ph->node = pn;
      if (expect_kind (ps, pn, KILN_YAML_MAPPING, "a phase") < 0)
        return -1;
      static const char *const keys[] = {"name", "steps", NULL};
      if (check_keys (ps, pn, keys, "a phase") < 0)
        return -1;
      const struct kiln_yaml_node *name = kiln_yaml_map_get (pn, "name");
      if (name == NULL)
        return FAIL (ps, pn, "phase needs a 'name'");
      if (expect_kind (ps, name, KILN_YAML_SCALAR, "phase name") < 0)
        return -1;
      bool known = false;
      for (const char *const *p = kiln_phase_names; *p; p++)
        if (strcmp (*p, name->value) == 0)
          known = true;
      if (!known)
        return FAIL (ps, name, "unknown phase '%s' (expected build, validate, test or container-host-test)",
                     name->value);
      if (kiln_component_phase (c, name->value))
        return FAIL (ps, name, "duplicate phase '%s'", name->value);
      ph->name = kiln_xstrdup (name->value);
      c->n_phases++;
      if (strcmp (ph->name, "container-host-test") != 0)
        main_phase = true;
      const struct kiln_yaml_node *steps = kiln_yaml_map_get (pn, "steps");
      if (steps == NULL)
        return FAIL (ps, pn, "phase '%s' needs 'steps'", ph->name);
      if (expect_kind (ps, steps, KILN_YAML_SEQUENCE, "steps") < 0)
        return -1;
      if (steps->n_items == 0)
        return FAIL (ps, steps, "phase '%s' has no steps", ph->name);
      ph->steps = calloc (steps->n_items, sizeof *ph->steps);
      if (ph->steps == NULL)
        abort ();
      for (size_t j = 0; j < steps->n_items; j++)
        {
          ph->n_steps++;
          if (parse_step (ps, steps->items[j], ph, &ph->steps[j]) < 0)
            return -1;
        }
    }
  if (!main_phase)
    return FAIL (ps, list, "a document needs a build, validate or test phase");
  return 0;
}

/* ---- expressions --------------------------------------------------------- */

struct scope {
  struct parser *ps;
  size_t phase;          /* index of the current phase */
  size_t step;           /* index of the current step in it */
  bool allow_chain;
  bool allow_loop;
};

static int
check_chain (const struct scope *sc, const struct kiln_ref *ref, kiln_error **err)
{
  const struct kiln_component *c = sc->ps->c;
  size_t pi;
  for (pi = 0; pi < c->n_phases; pi++)
    if (strcmp (c->phases[pi].name, ref->name) == 0)
      break;
  if (pi == c->n_phases)
    return kiln_fail_invalid (err, "'%s.%s...' refers to phase '%s', which this document does not have", ref->name,
                              ref->step, ref->name);
  if (pi > sc->phase)
    return kiln_fail_invalid (err, "'%s.%s' refers to a later phase: chaining reads steps that ran before", ref->name,
                              ref->step);
  const struct kiln_phase *ph = &c->phases[pi];
  size_t si;
  for (si = 0; si < ph->n_steps; si++)
    if (strcmp (ph->steps[si].name, ref->step) == 0)
      break;
  if (si == ph->n_steps)
    return kiln_fail_invalid (err, "phase '%s' has no step '%s'", ref->name, ref->step);
  if (pi == sc->phase && si >= sc->step)
    return kiln_fail_invalid (err, "'%s.%s' is not an earlier step: chaining reads steps that ran before", ref->name,
                              ref->step);
  const struct kiln_step *target = &ph->steps[si];
  if (ref->outputs)
    {
      if (!kiln_action_has_output (target->action, ref->field))
        return kiln_fail_invalid (err, "step '%s' (%s) has no output '%s'", ref->step, target->action->name,
                                  ref->field);
      if (ref->index > 0)
        return kiln_fail_invalid (err, "step '%s' has a single set of outputs: use outputs.%s or outputs[0].%s",
                                  ref->step, ref->field, ref->field);
      return 0;
    }
  const struct kiln_yaml_node *in = target->inputs;
  if (in && in->kind == KILN_YAML_SEQUENCE)
    {
      long idx = ref->index < 0 ? 0 : ref->index;
      if ((size_t) idx >= in->n_items)
        return kiln_fail_invalid (err, "step '%s' has %zu input entries: inputs[%ld] does not exist", ref->step,
                                  in->n_items, idx);
      in = in->items[idx];
    }
  else if (ref->index > 0)
    return kiln_fail_invalid (err, "step '%s' has a single set of inputs: inputs[%ld] does not exist", ref->step,
                              ref->index);
  if (in == NULL || in->kind != KILN_YAML_MAPPING || kiln_yaml_map_get (in, ref->field) == NULL)
    return kiln_fail_invalid (err, "step '%s' has no input '%s'", ref->step, ref->field);
  return 0;
}

static int
check_ref (void *opaque, const struct kiln_ref *ref, struct kiln_buf *out, kiln_error **err)
{
  const struct scope *sc = opaque;
  const struct kiln_component *c = sc->ps->c;
  (void) out;
  switch (ref->kind)
    {
    case KILN_REF_VARIABLE:
      if (kiln_component_variable (c, ref->name) == NULL)
        return kiln_fail_invalid (err, "unknown variable '%s' (not a parameter or constant of this document)",
                                  ref->name);
      return 0;
    case KILN_REF_LOOP:
      {
        const struct kiln_step *s = &c->phases[sc->phase].steps[sc->step];
        if (!sc->allow_loop)
          return kiln_fail_invalid (err, "'%s.%s' cannot be used here", ref->name, ref->field);
        if (s->loop == NULL)
          return kiln_fail_invalid (err, "'%s.%s' used in step '%s', which has no loop", ref->name, ref->field,
                                    s->name);
        if (strcmp (ref->name, "loop") != 0 && (s->loop->name == NULL || strcmp (s->loop->name, ref->name) != 0))
          return kiln_fail_invalid (err, "unknown loop '%s' (this step's loop is %s%s%s)", ref->name,
                                    s->loop->name ? "'" : "unnamed", s->loop->name ? s->loop->name : "",
                                    s->loop->name ? "'" : "");
        return 0;
      }
    case KILN_REF_CHAIN:
      if (!sc->allow_chain)
        return kiln_fail_invalid (err, "chaining ('%s.%s.%s.%s') is only allowed in inputs", ref->name, ref->step,
                                  ref->outputs ? "outputs" : "inputs", ref->field);
      return check_chain (sc, ref, err);
    }
  return 0;
}

static int
check_scalar (const struct scope *sc, const struct kiln_yaml_node *n)
{
  if (n->kind != KILN_YAML_SCALAR || !kiln_template_has_expression (n->value))
    return 0;
  struct kiln_buf sink = KILN_BUF_INIT;
  _cleanup_error_ kiln_error *e = NULL;
  int r = kiln_template_expand (n->value, check_ref, (void *) sc, &sink, &e);
  kiln_buf_release (&sink);
  if (r < 0)
    return FAIL (sc->ps, n, "%s", kiln_error_message (e));
  return 0;
}

static int
check_tree (const struct scope *sc, const struct kiln_yaml_node *n)
{
  switch (n->kind)
    {
    case KILN_YAML_SCALAR:
      return check_scalar (sc, n);
    case KILN_YAML_SEQUENCE:
      for (size_t i = 0; i < n->n_items; i++)
        if (check_tree (sc, n->items[i]) < 0)
          return -1;
      return 0;
    case KILN_YAML_MAPPING:
      for (size_t i = 0; i < n->n_pairs; i++)
        {
          if (check_scalar (sc, n->pairs[i].key) < 0 || check_tree (sc, n->pairs[i].value) < 0)
            return -1;
        }
      return 0;
    }
  return 0;
}

static int
visit_condition_operand (void *opaque, const struct kiln_yaml_node *scalar, kiln_error **err)
{
  (void) err;
  return check_scalar (opaque, scalar);
}

static int
check_expressions (struct parser *ps)
{
  struct kiln_component *c = ps->c;
  for (size_t pi = 0; pi < c->n_phases; pi++)
    for (size_t si = 0; si < c->phases[pi].n_steps; si++)
      {
        const struct kiln_step *s = &c->phases[pi].steps[si];
        struct scope sc = {.ps = ps, .phase = pi, .step = si, .allow_chain = true, .allow_loop = true};
        if (s->inputs && check_tree (&sc, s->inputs) < 0)
          return -1;
        if (s->condition && kiln_condition_visit (s->condition, visit_condition_operand, &sc, ps->err) < 0)
          return -1;
        if (s->loop)
          {
            /* forEach values may chain to earlier steps but not name their own loop. */
            struct scope lsc = {.ps = ps, .phase = pi, .step = si, .allow_chain = true, .allow_loop = false};
            if (s->loop->values && check_tree (&lsc, s->loop->values) < 0)
              return -1;
            if (s->loop->list && check_tree (&lsc, s->loop->list) < 0)
              return -1;
          }
      }
  return 0;
}

/* ---- ExecuteDocument children ------------------------------------------ */

/* Resolves a document reference relative to the directory of the document
 * that names it.  Only local files are supported.  *shown is the path as
 * built (for messages, stable across machines), *real its canonical form
 * (for cycle detection). */
static int
resolve_document_path (struct parser *ps, const struct kiln_yaml_node *ref, char **shown, char **real)
{
  const char *p = ref->value;
  if (strncmp (p, "s3://", 5) == 0 || strncmp (p, "arn:", 4) == 0 || strstr (p, "://"))
    return FAIL (ps, ref, "document '%s': only local document paths are supported by ExecuteDocument", p);
  _cleanup_free_ char *joined = NULL;
  if (p[0] == '/')
    joined = kiln_xstrdup (p);
  else
    {
      _cleanup_free_ char *copy = kiln_xstrdup (ps->c->path);
      const char *dir = dirname (copy);
      if (strcmp (dir, ".") == 0)
        joined = kiln_xstrdup (p);
      else
        joined = kiln_xasprintf ("%s/%s", dir, p);
    }
  char *r = realpath (joined, NULL);
  if (r == NULL)
    return FAIL (ps, ref, "document '%s' (%s): %s", p, joined, strerror (errno));
  *real = r;
  *shown = kiln_steal_pointer (&joined);
  return 0;
}

static int
load_child (struct parser *ps, const struct kiln_step *s)
{
  const struct kiln_yaml_node *doc_ref = kiln_yaml_map_get (s->inputs, "document");
  if (doc_ref == NULL || !literal (doc_ref))
    return 0; /* known only at run time: validated then */
  const struct kiln_component_load_opts *opts = ps->opts;
  int depth = opts ? opts->depth : 1;
  if (depth >= KILN_DOCUMENT_MAX_DEPTH)
    return FAIL (ps, doc_ref, "ExecuteDocument nests documents deeper than %d levels", KILN_DOCUMENT_MAX_DEPTH - 1);
  _cleanup_free_ char *path = NULL;
  _cleanup_free_ char *shown = NULL;
  if (resolve_document_path (ps, doc_ref, &shown, &path) < 0)
    return -1;

  /* The chain of documents above the child: ours and our ancestors. */
  _cleanup_free_ char *self = realpath (ps->c->path, NULL);
  size_t n_anc = 0;
  if (opts && opts->ancestors)
    while (opts->ancestors[n_anc])
      n_anc++;
  _cleanup_free_ const char **chain = calloc (n_anc + 2, sizeof *chain);
  if (chain == NULL)
    abort ();
  for (size_t i = 0; i < n_anc; i++)
    chain[i] = opts->ancestors[i];
  chain[n_anc] = self ? self : ps->c->path;
  for (size_t i = 0; i <= n_anc; i++)
    if (strcmp (chain[i], path) == 0)
      return FAIL (ps, doc_ref, "ExecuteDocument cycle: '%s' is already being executed by this chain of documents",
                   doc_ref->value);

  if (kiln_component_child_for (ps->c, path) == NULL)
    {
      struct kiln_component_load_opts child_opts = {.depth = depth + 1, .ancestors = chain};
      struct kiln_component *child = NULL;
      _cleanup_error_ kiln_error *e = NULL;
      if (kiln_component_load (shown, &child_opts, &child, &e) < 0)
        return FAIL (ps, doc_ref, "in document '%s': %s", doc_ref->value, kiln_error_message (e));
      struct kiln_component *c = ps->c;
      c->children = realloc (c->children, (c->n_children + 1) * sizeof *c->children);
      if (c->children == NULL)
        abort ();
      c->children[c->n_children++] = child;
    }
  struct kiln_component *child = kiln_component_child_for (ps->c, path);

  /* Phases and parameters named by the step must exist in the child. */
  const struct kiln_yaml_node *phases = kiln_yaml_map_get (s->inputs, "phases");
  if (phases && literal (phases) && phases->len > 0)
    {
      _cleanup_free_ char *copy = kiln_xstrdup (phases->value);
      char *save = NULL;
      for (char *tok = strtok_r (copy, ",", &save); tok; tok = strtok_r (NULL, ",", &save))
        {
          while (isspace ((unsigned char) *tok))
            tok++;
          char *end = tok + strlen (tok);
          while (end > tok && isspace ((unsigned char) end[-1]))
            *--end = '\0';
          if (kiln_component_phase (child, tok) == NULL)
            return FAIL (ps, phases, "document '%s' has no phase '%s'", doc_ref->value, tok);
        }
    }
  const struct kiln_yaml_node *params = kiln_yaml_map_get (s->inputs, "parameters");
  for (size_t i = 0; params && i < params->n_items; i++)
    {
      const struct kiln_yaml_node *nm = kiln_yaml_map_get (params->items[i], "name");
      const struct kiln_variable *v = kiln_component_variable (child, nm->value);
      if (v == NULL || v->constant)
        return FAIL (ps, nm, "document '%s' has no parameter '%s'", doc_ref->value, nm->value);
    }
  for (size_t i = 0; i < child->n_variables; i++)
    {
      const struct kiln_variable *v = &child->variables[i];
      if (v->constant || v->value)
        continue;
      bool given = false;
      for (size_t j = 0; params && j < params->n_items; j++)
        if (strcmp (kiln_yaml_map_get (params->items[j], "name")->value, v->name) == 0)
          given = true;
      if (!given)
        return FAIL (ps, doc_ref, "document '%s' needs parameter '%s', which has no default", doc_ref->value, v->name);
    }
  return 0;
}

static int
load_children (struct parser *ps)
{
  struct kiln_component *c = ps->c;
  for (size_t pi = 0; pi < c->n_phases; pi++)
    for (size_t si = 0; si < c->phases[pi].n_steps; si++)
      {
        const struct kiln_step *s = &c->phases[pi].steps[si];
        if (strcmp (s->action->name, "ExecuteDocument") == 0 && load_child (ps, s) < 0)
          return -1;
      }
  return 0;
}

/* ---- the document --------------------------------------------------------- */

static int
parse_document (struct parser *ps)
{
  const struct kiln_yaml_node *root = ps->doc->root;
  if (root == NULL || kiln_yaml_is_null (root))
    return kiln_error_set (ps->err, KILN_ERR_INVALID, 0, "%s:1:1: empty document", ps->doc->name);
  if (expect_kind (ps, root, KILN_YAML_MAPPING, "a component document") < 0)
    return -1;
  static const char *const keys[] = {"name", "description", "schemaVersion", "parameters", "constants", "phases",
                                     NULL};
  if (check_keys (ps, root, keys, "the document") < 0)
    return -1;
  const struct kiln_yaml_node *v;
  if ((v = kiln_yaml_map_get (root, "name")) && expect_string (ps, v, "name", &ps->c->name) < 0)
    return -1;
  if ((v = kiln_yaml_map_get (root, "description")) && expect_string (ps, v, "description", &ps->c->description) < 0)
    return -1;
  v = kiln_yaml_map_get (root, "schemaVersion");
  if (v == NULL)
    return FAIL (ps, root, "the document needs 'schemaVersion: 1.0'");
  if (v->kind != KILN_YAML_SCALAR || (strcmp (v->value, "1.0") != 0))
    return FAIL (ps, v, "unsupported schemaVersion%s%s%s: only 1.0 is supported", v->kind == KILN_YAML_SCALAR ? " '" : "",
                 v->kind == KILN_YAML_SCALAR ? v->value : "", v->kind == KILN_YAML_SCALAR ? "'" : "");
  if ((v = kiln_yaml_map_get (root, "parameters")) && !kiln_yaml_is_null (v) && parse_variables (ps, v, false) < 0)
    return -1;
  if ((v = kiln_yaml_map_get (root, "constants")) && !kiln_yaml_is_null (v) && parse_variables (ps, v, true) < 0)
    return -1;
  v = kiln_yaml_map_get (root, "phases");
  if (v == NULL)
    return FAIL (ps, root, "the document needs 'phases'");
  if (parse_phases (ps, v) < 0)
    return -1;
  if (check_expressions (ps) < 0)
    return -1;
  return load_children (ps);
}

int
kiln_component_load_text (const char *path, const char *text, size_t len, const struct kiln_component_load_opts *opts,
                          struct kiln_component **out, kiln_error **err)
{
  struct kiln_component *c = calloc (1, sizeof *c);
  if (c == NULL)
    abort ();
  c->path = kiln_xstrdup (path);
  c->text = malloc (len + 1);
  if (c->text == NULL)
    abort ();
  memcpy (c->text, text, len);
  c->text[len] = '\0';
  c->text_len = len;
  kiln_sha256_hex (c->text, c->text_len, c->sha256);
  if (memchr (c->text, '\0', c->text_len) != NULL)
    {
      kiln_error_set (err, KILN_ERR_INVALID, 0, "%s:1:1: the document holds a NUL byte: not a YAML text file", path);
      kiln_component_free (c);
      return -1;
    }
  if (kiln_yaml_load_string (path, c->text, c->text_len, &c->doc, err) < 0)
    {
      kiln_component_free (c);
      return -1;
    }
  struct parser ps = {.c = c, .doc = c->doc, .opts = opts, .err = err};
  if (parse_document (&ps) < 0)
    {
      kiln_component_free (c);
      return -1;
    }
  *out = c;
  return 0;
}

int
kiln_component_load (const char *path, const struct kiln_component_load_opts *opts, struct kiln_component **out,
                     kiln_error **err)
{
  struct kiln_buf text = KILN_BUF_INIT;
  if (kiln_read_file (path, &text, err) < 0)
    return -1;
  int r = kiln_component_load_text (path, kiln_buf_str (&text), text.len, opts, out, err);
  kiln_buf_release (&text);
  return r;
}

void
kiln_component_free (struct kiln_component *c)
{
  if (c == NULL)
    return;
  for (size_t i = 0; i < c->n_phases; i++)
    {
      struct kiln_phase *ph = &c->phases[i];
      for (size_t j = 0; j < ph->n_steps; j++)
        {
          struct kiln_step *s = &ph->steps[j];
          free (s->name);
          if (s->loop)
            free (s->loop->name);
          free (s->loop);
          kiln_condition_free (s->condition);
        }
      free (ph->steps);
      free (ph->name);
    }
  free (c->phases);
  for (size_t i = 0; i < c->n_variables; i++)
    {
      free (c->variables[i].name);
      free (c->variables[i].value);
      free (c->variables[i].description);
    }
  free (c->variables);
  for (size_t i = 0; i < c->n_children; i++)
    kiln_component_free (c->children[i]);
  free (c->children);
  kiln_yaml_doc_free (c->doc);
  free (c->text);
  free (c->name);
  free (c->description);
  free (c->path);
  free (c);
}

const struct kiln_phase *
kiln_component_phase (const struct kiln_component *c, const char *name)
{
  for (size_t i = 0; i < c->n_phases; i++)
    if (c->phases[i].name && strcmp (c->phases[i].name, name) == 0)
      return &c->phases[i];
  return NULL;
}

const struct kiln_step *
kiln_phase_step (const struct kiln_phase *p, const char *name)
{
  for (size_t i = 0; i < p->n_steps; i++)
    if (p->steps[i].name && strcmp (p->steps[i].name, name) == 0)
      return &p->steps[i];
  return NULL;
}

const struct kiln_variable *
kiln_component_variable (const struct kiln_component *c, const char *name)
{
  for (size_t i = 0; i < c->n_variables; i++)
    if (strcmp (c->variables[i].name, name) == 0)
      return &c->variables[i];
  return NULL;
}

struct kiln_component *
kiln_component_child_for (const struct kiln_component *c, const char *resolved_path)
{
  for (size_t i = 0; i < c->n_children; i++)
    {
      _cleanup_free_ char *real = realpath (c->children[i]->path, NULL);
      if (real && strcmp (real, resolved_path) == 0)
        return c->children[i];
    }
  return NULL;
}
