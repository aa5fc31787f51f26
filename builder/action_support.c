/* action_support.c - what the action modules share: typed reads of expanded
 * inputs with errors that name the field, literal values for static checks,
 * the walk over list-shaped inputs, path strings, the file-system steps that
 * several modules take on the target (mkdir -p, chown, wildcard listing), the
 * step's clock, notes into the step's output, and running a command on the
 * target with the step's deadline (see action.h for each contract). */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "action.h"
#include "cleanup.h"
#include "template.h"
#include "xalloc.h"
#include "clock.h"

static int
wrong_type (kiln_error **err, const char *where, const char *key, const char *expected, json_t *v)
{
  _cleanup_free_ char *shown = json_is_string (v) ? kiln_xstrdup (json_string_value (v)) : json_dumps (v, JSON_ENCODE_ANY);
  return kiln_fail_invalid (err, "%s%sinput '%s' must be %s, not '%s'", where ? where : "", where ? ": " : "", key,
                            expected, shown ? shown : "?");
}

int
kiln_input_string (json_t *obj, const char *key, const char *where, const char **out, kiln_error **err)
{
  json_t *v = json_object_get (obj, key);
  if (v == NULL || json_is_null (v))
    return 0;
  if (!json_is_string (v))
    return wrong_type (err, where, key, "a string", v);
  *out = json_string_value (v);
  return 0;
}

int
kiln_input_required_string (json_t *obj, const char *key, const char *where, const char **out, kiln_error **err)
{
  const char *s = NULL;
  if (kiln_input_string (obj, key, where, &s, err) < 0)
    return -1;
  if (s == NULL)
    return kiln_fail_invalid (err, "%s%sinput '%s' is required", where ? where : "", where ? ": " : "", key);
  *out = s;
  return 0;
}

int
kiln_input_bool (json_t *obj, const char *key, const char *where, bool *out, kiln_error **err)
{
  json_t *v = json_object_get (obj, key);
  if (v == NULL || json_is_null (v))
    return 0;
  if (json_is_boolean (v))
    {
      *out = json_is_true (v);
      return 0;
    }
  if (json_is_string (v) && strcasecmp (json_string_value (v), "true") == 0)
    *out = true;
  else if (json_is_string (v) && strcasecmp (json_string_value (v), "false") == 0)
    *out = false;
  else
    return wrong_type (err, where, key, "true or false", v);
  return 0;
}

int
kiln_input_int (json_t *obj, const char *key, const char *where, long *out, kiln_error **err)
{
  json_t *v = json_object_get (obj, key);
  if (v == NULL || json_is_null (v))
    return 0;
  if (json_is_integer (v))
    {
      *out = (long) json_integer_value (v);
      return 0;
    }
  if (json_is_string (v))
    {
      const char *s = json_string_value (v);
      char *end = NULL;
      long l = strtol (s, &end, 10);
      if (*s != '\0' && end && *end == '\0')
        {
          *out = l;
          return 0;
        }
    }
  return wrong_type (err, where, key, "an integer", v);
}

int
kiln_input_string_list (json_t *obj, const char *key, const char *where, json_t **out, kiln_error **err)
{
  json_t *v = json_object_get (obj, key);
  if (v == NULL || json_is_null (v))
    {
      *out = json_array ();
      return 0;
    }
  if (json_is_string (v))
    {
      *out = json_pack ("[O]", v);
      return 0;
    }
  if (!json_is_array (v))
    return wrong_type (err, where, key, "a list of strings", v);
  size_t i;
  json_t *item;
  json_array_foreach (v, i, item)
    if (!json_is_string (item))
      return wrong_type (err, where, key, "a list of strings", v);
  *out = json_incref (v);
  return 0;
}

const struct kiln_yaml_node *
kiln_input_literal (const struct kiln_yaml_node *entry, const char *key)
{
  const struct kiln_yaml_node *v = kiln_yaml_map_get (entry, key);
  if (v == NULL || v->kind != KILN_YAML_SCALAR || kiln_yaml_is_null (v) || kiln_template_has_expression (v->value))
    return NULL;
  return v;
}

bool
kiln_parse_mode (const char *s, mode_t *out)
{
  size_t n = strlen (s);
  if (n == 0 || n > 4)
    return false;
  mode_t m = 0;
  for (const char *p = s; *p; p++)
    {
      if (*p < '0' || *p > '7')
        return false;
      m = (m << 3) | (mode_t) (*p - '0');
    }
  *out = m;
  return true;
}

/* ---- list-shaped inputs ---------------------------------------------------- */

int
kiln_action_for_each_entry (struct kiln_action_ctx *ctx, kiln_action_entry_fn fn, void *opaque, kiln_error **err)
{
  if (!json_is_array (ctx->inputs))
    return kiln_fail_invalid (err, "inputs must be a list of entries");
  size_t i;
  json_t *entry;
  json_array_foreach (ctx->inputs, i, entry)
    {
      if (!json_is_object (entry))
        return kiln_fail_invalid (err, "inputs[%zu]: expected a mapping of inputs", i);
      if (fn (ctx, entry, opaque, err) < 0)
        return kiln_error_prefix (err, "inputs[%zu]", i);
    }
  return 0;
}

int
kiln_action_check_each_entry (const struct kiln_action_check_ctx *ctx, kiln_action_check_entry_fn fn, void *opaque,
                              kiln_error **err)
{
  const struct kiln_yaml_node *in = ctx->inputs;
  if (in == NULL || in->kind != KILN_YAML_SEQUENCE)
    return 0;
  for (size_t i = 0; i < in->n_items; i++)
    if (in->items[i]->kind == KILN_YAML_MAPPING && fn (ctx, in->items[i], opaque, err) < 0)
      return -1;
  return 0;
}

int
kiln_action_check_permissions (const struct kiln_action_check_ctx *ctx, const struct kiln_yaml_node *entry,
                               const char *example, kiln_error **err)
{
  const struct kiln_yaml_node *v = kiln_input_literal (entry, "permissions");
  mode_t mode;
  if (v && !kiln_parse_mode (v->value, &mode))
    return kiln_yaml_error (err, ctx->doc, v, "permissions '%s' must be 1 to 4 octal digits, such as %s", v->value,
                            example);
  return 0;
}

int
kiln_action_check_wildcard_source (const struct kiln_action_check_ctx *ctx, const struct kiln_yaml_node *entry,
                                   bool trim_slashes, kiln_error **err)
{
  const struct kiln_yaml_node *v = kiln_input_literal (entry, "source");
  if (v == NULL)
    return 0;
  _cleanup_free_ char *source = trim_slashes ? kiln_path_trim_slashes (v->value) : kiln_xstrdup (v->value);
  _cleanup_free_ char *dir = kiln_path_dir (source);
  if (strchr (dir, '*'))
    return kiln_yaml_error (err, ctx->doc, v, "'%s': '*' is allowed only in the last path component", v->value);
  const struct kiln_yaml_node *d = kiln_input_literal (entry, "destination");
  if (kiln_path_has_wildcard (source) && d && !kiln_path_ends_with_slash (d->value))
    return kiln_yaml_error (err, ctx->doc, d,
                            "the source '%s' has a wildcard, so the destination must be a folder ending in '/'",
                            v->value);
  return 0;
}

/* ---- paths ------------------------------------------------------------------- */

char *
kiln_path_dir (const char *path)
{
  const char *slash = strrchr (path, '/');
  if (slash == NULL)
    return kiln_xstrdup ("");
  if (slash == path)
    return kiln_xstrdup ("/");
  return kiln_xstrndup (path, (size_t) (slash - path));
}

const char *
kiln_path_base (const char *path)
{
  const char *slash = strrchr (path, '/');
  return slash ? slash + 1 : path;
}

bool
kiln_path_ends_with_slash (const char *path)
{
  size_t n = strlen (path);
  return n > 0 && path[n - 1] == '/';
}

char *
kiln_path_join (const char *dir, const char *name)
{
  char *r = NULL;
  r = kiln_xasprintf ("%s%s%s", dir, *dir == '\0' || kiln_path_ends_with_slash (dir) ? "" : "/", name);
  return r;
}

char *
kiln_path_trim_slashes (const char *path)
{
  size_t n = strlen (path);
  while (n > 1 && path[n - 1] == '/')
    n--;
  return kiln_xstrndup (path, n);
}

bool
kiln_path_has_wildcard (const char *path)
{
  return strchr (kiln_path_base (path), '*') != NULL;
}

static int
compare_strings (const void *a, const void *b)
{
  return strcmp (*(char *const *) a, *(char *const *) b);
}

void
kiln_sort_strings (char **v, size_t n)
{
  qsort (v, n, sizeof *v, compare_strings);
}

/* ---- the file system of the target ------------------------------------------- */

int
kiln_action_make_folder (struct kiln_action_ctx *ctx, const char *dir, kiln_error **err)
{
  if (*dir == '\0' || strcmp (dir, "/") == 0)
    return 0;
  char *argv[] = {(char *) "mkdir", (char *) "-p", (char *) "--", (char *) dir, NULL};
  if (kiln_action_run_checked (ctx, argv, err) < 0)
    return kiln_error_prefix (err, "create folder '%s'", dir);
  return 0;
}

int
kiln_action_make_parent (struct kiln_action_ctx *ctx, const char *path, kiln_error **err)
{
  _cleanup_free_ char *dir = kiln_path_dir (path);
  return kiln_action_make_folder (ctx, dir, err);
}

int
kiln_action_set_owner (struct kiln_action_ctx *ctx, const char *path, const char *owner, const char *group,
                       kiln_error **err)
{
  _cleanup_free_ char *spec = NULL;
  char *argv[] = {(char *) "chown", (char *) "--", NULL, (char *) path, NULL};
  if (owner && group)
    {
      spec = kiln_xasprintf ("%s:%s", owner, group);
    }
  else if (owner)
    spec = kiln_xstrdup (owner);
  else
    {
      argv[0] = (char *) "chgrp";
      spec = kiln_xstrdup (group);
    }
  argv[2] = spec;
  if (kiln_action_run_checked (ctx, argv, err) < 0)
    return kiln_error_prefix (err, "set the owner of '%s' to '%s'", path, spec);
  return 0;
}

int
kiln_action_stat_folder (struct kiln_action_ctx *ctx, const char *path, struct kiln_target_stat *st, bool *is_folder,
                         kiln_error **err)
{
  if (kiln_target_stat (ctx->target, path, st, err) < 0)
    return -1;
  *is_folder = st->is_dir;
  if (st->exists && st->is_symlink)
    {
      _cleanup_free_ char *dot = kiln_path_join (path, ".");
      struct kiln_target_stat through;
      if (kiln_target_stat (ctx->target, dot, &through, err) < 0)
        return -1;
      *is_folder = through.exists && through.is_dir;
    }
  return 0;
}

int
kiln_action_run_find (struct kiln_action_ctx *ctx, const char *start, bool recursive, bool folders,
                      const char *name, struct kiln_buf *out, kiln_error **err)
{
  char *argv[16];
  size_t k = 0;
  argv[k++] = (char *) "find";
  argv[k++] = (char *) start;
  argv[k++] = (char *) "-mindepth";
  argv[k++] = (char *) "1";
  if (!recursive)
    {
      argv[k++] = (char *) "-maxdepth";
      argv[k++] = (char *) "1";
    }
  if (!folders)
    argv[k++] = (char *) "!";
  argv[k++] = (char *) "-type";
  argv[k++] = (char *) "d";
  if (name && *name)
    {
      argv[k++] = (char *) "-name";
      argv[k++] = (char *) name;
    }
  argv[k++] = (char *) "-print0";
  argv[k] = NULL;
  return kiln_target_run_checked (ctx->target, argv, ctx->timeout_seconds, out, err);
}

char **
kiln_action_split_print0 (const struct kiln_buf *out, const char *prefix, bool basename_only, size_t *count)
{
  size_t n = 0;
  for (size_t i = 0; i < out->len; i++)
    if (out->data[i] == '\0')
      n++;
  char **v = calloc (n + 1, sizeof *v);
  if (v == NULL)
    abort ();
  size_t k = 0;
  for (size_t i = 0; i < out->len && k < n;)
    {
      const char *item = out->data + i;
      size_t len = strlen (item);
      if (len > 0)
        v[k++] = basename_only ? kiln_path_join (prefix, kiln_path_base (item)) : kiln_xstrdup (item);
      i += len + 1;
    }
  kiln_sort_strings (v, k);
  *count = k;
  return v;
}

int
kiln_action_expand_wildcard (struct kiln_action_ctx *ctx, const char *pattern_path, bool folders, char ***matches,
                             size_t *count, kiln_error **err)
{
  _cleanup_free_ char *dir = kiln_path_dir (pattern_path);

  /* Only `*` is a wildcard: the other fnmatch specials match themselves. */
  struct kiln_buf pat = KILN_BUF_INIT;
  for (const char *p = kiln_path_base (pattern_path); *p; p++)
    {
      if (*p == '?' || *p == '[' || *p == ']' || *p == '\\')
        kiln_buf_puts (&pat, "\\");
      kiln_buf_append (&pat, p, 1);
    }
  _cleanup_free_ char *name_pattern = kiln_buf_steal (&pat);

  _cleanup_free_ char *start = NULL;
  start = kiln_xasprintf ("%s%s/.", dir[0] == '-' ? "./" : "", *dir ? dir : ".");
  struct kiln_target_stat st;
  if (kiln_target_stat (ctx->target, start, &st, err) < 0)
    return -1;
  if (!st.exists || !st.is_dir)
    return kiln_error_set (err, KILN_ERR_NOT_FOUND, 0, "no such folder '%s'", *dir ? dir : ".");

  struct kiln_buf out = KILN_BUF_INIT;
  if (kiln_action_run_find (ctx, start, false, folders, name_pattern, &out, err) < 0)
    return kiln_error_prefix (err, "list '%s'", pattern_path);
  *matches = kiln_action_split_print0 (&out, dir, true, count);
  kiln_buf_release (&out);
  return 0;
}

/* ---- time -------------------------------------------------------------------- */

double
kiln_action_now (void)
{
  return kiln_monotonic_seconds ();
}

double
kiln_action_deadline (const struct kiln_action_ctx *ctx)
{
  return ctx->timeout_seconds > 0 ? kiln_action_now () + ctx->timeout_seconds : 0;
}

int
kiln_action_time_left (const struct kiln_action_ctx *ctx, double deadline, long *left, kiln_error **err)
{
  if (deadline <= 0)
    return 0;
  double seconds = deadline - kiln_action_now ();
  if (seconds < 1)
    return kiln_error_set (err, KILN_ERR_TIMEOUT, 0, "timed out after %d seconds", ctx->timeout_seconds);
  *left = (long) seconds;
  return 0;
}

/* ---- notes and commands ------------------------------------------------------- */

void
kiln_action_note (struct kiln_action_ctx *ctx, const char *fmt, ...)
{
  if (ctx->output == NULL)
    return;
  struct kiln_buf b = KILN_BUF_INIT;
  va_list ap;
  va_start (ap, fmt);
  kiln_buf_vprintf (&b, fmt, ap);
  va_end (ap);
  kiln_buf_puts (&b, "\n");
  ctx->output (ctx->output_opaque, 1, b.data, b.len);
  kiln_buf_release (&b);
}

int
kiln_action_run_command (struct kiln_action_ctx *ctx, char *const *argv, const char *cwd,
                         struct kiln_target_result *res, kiln_error **err)
{
  struct kiln_target_command cmd = {
    .argv = argv,
    .cwd = cwd,
    .timeout_seconds = ctx->timeout_seconds,
    .on_output = ctx->output,
    .opaque = ctx->output_opaque,
  };
  if (kiln_target_run (ctx->target, &cmd, res, err) < 0)
    return -1;
  ctx->exit_code = res->exit_code;
  return 0;
}

int
kiln_action_run_checked (struct kiln_action_ctx *ctx, char *const *argv, kiln_error **err)
{
  struct kiln_target_result res = {0};
  struct kiln_target_command cmd = {.argv = argv, .timeout_seconds = ctx->timeout_seconds};
  if (kiln_target_run (ctx->target, &cmd, &res, err) < 0)
    return -1;
  int r = 0;
  if (res.timed_out)
    r = kiln_error_set (err, KILN_ERR_TIMEOUT, 0, "'%s' timed out after %d s", argv[0], ctx->timeout_seconds);
  else if (res.exit_code != 0)
    {
      /* The command's own complaint is the most useful message. */
      struct kiln_buf *why = res.err.len ? &res.err : &res.out;
      size_t n = why->len;
      while (n > 0 && (why->data[n - 1] == '\n' || why->data[n - 1] == ' '))
        n--;
      r = kiln_fail (err, "%s exited with status %d%s%.*s", argv[0], res.exit_code, n ? ": " : "", (int) n,
                     n ? why->data : "");
    }
  kiln_target_result_release (&res);
  return r;
}
