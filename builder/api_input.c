/* api_input.c - field readers for files written as AWS API inputs (see
 * api_input.h). */
#include "api_input.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "cleanup.h"
#include "fsutil.h"
#include "xalloc.h"

int
kiln_api_load (const char *path, struct kiln_api_input *in, kiln_error **err)
{
  memset (in, 0, sizeof *in);
  in->err = err;
  struct kiln_buf text = KILN_BUF_INIT;
  if (kiln_read_file (path, &text, err) < 0)
    {
      kiln_buf_release (&text);
      return -1;
    }
  in->len = text.len;
  in->text = text.len ? kiln_buf_steal (&text) : kiln_xstrdup ("");
  kiln_buf_release (&text);
  return kiln_yaml_load_string (path, in->text, in->len, &in->doc, err);
}

void
kiln_api_release (struct kiln_api_input *in)
{
  kiln_yaml_doc_free (in->doc);
  free (in->text);
  in->doc = NULL;
  in->text = NULL;
}

static int
fail_at_position (struct kiln_api_input *in, int line, int column, const char *fmt, va_list ap)
{
  _cleanup_free_ char *msg = NULL;
  msg = kiln_xvasprintf (fmt, ap);
  return kiln_error_set (in->err, KILN_ERR_INVALID, 0, "%s:%d:%d: %s", in->doc->name, line, column, msg);
}

int
kiln_api_fail (struct kiln_api_input *in, const struct kiln_yaml_node *n, const char *fmt, ...)
{
  va_list ap;
  va_start (ap, fmt);
  int r = fail_at_position (in, n ? n->line : 1, n ? n->column : 1, fmt, ap);
  va_end (ap);
  return r;
}

/* UTF-8 characters in s[0, len): libyaml counts columns in characters. */
static size_t
utf8_chars (const char *s, size_t len)
{
  size_t n = 0;
  for (size_t i = 0; i < len; i++)
    n += ((unsigned char) s[i] & 0xC0) != 0x80;
  return n;
}

/* Where the value of scalar n starts in the source and whether offsets in
 * the value are offsets in the source from there: the source must hold the
 * value verbatim on n's line (plain, or just inside its quote). */
static const char *
verbatim_start (const struct kiln_api_input *in, const struct kiln_yaml_node *n, bool *quoted)
{
  if (in->text == NULL || n->kind != KILN_YAML_SCALAR || n->line < 1 || n->column < 1)
    return NULL;
  const char *p = in->text, *end = in->text + in->len;
  for (int line = 1; line < n->line; line++)
    {
      p = memchr (p, '\n', (size_t) (end - p));
      if (p == NULL)
        return NULL;
      p++;
    }
  for (int col = 1; col < n->column && p < end && *p != '\n'; col++)
    do
      p++;
    while (p < end && ((unsigned char) *p & 0xC0) == 0x80);
  *quoted = false;
  if (!n->plain)
    {
      if (p >= end || (*p != '"' && *p != '\''))
        return NULL; /* a block scalar: its text starts on a later line */
      *quoted = true;
      p++;
    }
  if ((size_t) (end - p) < n->len || memcmp (p, n->value, n->len) != 0 || memchr (p, '\n', n->len))
    return NULL;
  return p;
}

int
kiln_api_fail_at (struct kiln_api_input *in, const struct kiln_yaml_node *n, size_t at, const char *fmt, ...)
{
  bool quoted = false;
  int line = n->line, column = n->column;
  if (at <= n->len && verbatim_start (in, n, &quoted))
    column += (quoted ? 1 : 0) + (int) utf8_chars (n->value, at);
  va_list ap;
  va_start (ap, fmt);
  int r = fail_at_position (in, line, column, fmt, ap);
  va_end (ap);
  return r;
}

/* What n is, for "X must be ..., not WHAT". */
static const char *
what_it_is (const struct kiln_yaml_node *n)
{
  if (kiln_yaml_is_null (n))
    return "null";
  switch (n->kind)
    {
    case KILN_YAML_SCALAR:
      return "a single value";
    case KILN_YAML_SEQUENCE:
      return "a list";
    case KILN_YAML_MAPPING:
      return "a mapping";
    }
  return "something else";
}

int
kiln_api_root (struct kiln_api_input *in, const char *what, const struct kiln_yaml_node **out)
{
  const struct kiln_yaml_node *root = in->doc->root;
  if (root == NULL)
    return kiln_api_fail (in, NULL, "%s must be a mapping; the file is empty", what);
  if (root->kind != KILN_YAML_MAPPING)
    return kiln_api_fail (in, root, "%s must be a mapping, not %s", what, what_it_is (root));
  *out = root;
  return 0;
}

int
kiln_api_mapping (struct kiln_api_input *in, const struct kiln_yaml_node *n, const char *what)
{
  if (n->kind != KILN_YAML_MAPPING)
    return kiln_api_fail (in, n, "%s must be a mapping, not %s", what, what_it_is (n));
  return 0;
}

int
kiln_api_check_keys (struct kiln_api_input *in, const struct kiln_yaml_node *map, const char *const *allowed,
                     const struct kiln_api_refusal *not_yet, const char *what)
{
  for (size_t i = 0; i < map->n_pairs; i++)
    {
      const struct kiln_yaml_node *k = map->pairs[i].key;
      bool ok = false;
      for (const char *const *a = allowed; *a && !ok; a++)
        ok = strcmp (*a, k->value) == 0;
      if (ok)
        continue;
      for (const struct kiln_api_refusal *ny = not_yet; ny && ny->key; ny++)
        if (strcmp (ny->key, k->value) == 0)
          return kiln_api_fail (in, k, "%s is not supported by kiln yet%s%s%s", k->value, ny->reason ? " (" : "",
                                ny->reason ? ny->reason : "", ny->reason ? ")" : "");
      struct kiln_buf b = KILN_BUF_INIT;
      for (const char *const *a = allowed; *a; a++)
        kiln_buf_printf (&b, "%s%s", a == allowed ? "" : ", ", *a);
      kiln_api_fail (in, k, "unknown key '%s' in %s (expected %s)", k->value, what, kiln_buf_str (&b));
      kiln_buf_release (&b);
      return -1;
    }
  return 0;
}

const struct kiln_yaml_node *
kiln_api_refused_key (const struct kiln_yaml_node *map, const struct kiln_api_refusal *refusals,
                      const struct kiln_api_refusal **refusal)
{
  for (size_t i = 0; i < map->n_pairs; i++)
    for (const struct kiln_api_refusal *r = refusals; r->key; r++)
      if (strcmp (r->key, map->pairs[i].key->value) == 0)
        {
          *refusal = r;
          return map->pairs[i].key;
        }
  return NULL;
}

int
kiln_api_string (struct kiln_api_input *in, const struct kiln_yaml_node *n, const char *what, char **out)
{
  if (n->kind != KILN_YAML_SCALAR || kiln_yaml_is_null (n))
    return kiln_api_fail (in, n, "%s must be a string, not %s", what, what_it_is (n));
  if (n->len == 0)
    return kiln_api_fail (in, n, "%s must not be empty", what);
  if (strlen (n->value) != n->len)
    return kiln_api_fail (in, n, "%s must not hold NUL characters", what);
  *out = kiln_xstrdup (n->value);
  return 0;
}

int
kiln_api_resource_name (struct kiln_api_input *in, const struct kiln_yaml_node *n, const char *what, char **out)
{
  if (kiln_api_string (in, n, what, out) < 0)
    return -1;
  const char *s = *out;
  size_t len = strlen (s);
  bool ok = len >= 3 && len <= 128 && s[0] != ' ' && s[len - 1] != ' ';
  for (const char *c = s; ok && *c; c++)
    ok = isalnum ((unsigned char) *c) || *c == '-' || *c == '_' || *c == ' ';
  if (!ok)
    return kiln_api_fail (in, n,
                          "%s '%s' must be 3 to 128 letters, digits, '-', '_' and spaces, not starting or ending "
                          "with a space",
                          what, s);
  return 0;
}

int
kiln_api_bool (struct kiln_api_input *in, const struct kiln_yaml_node *n, const char *what, int *out)
{
  bool b;
  if (n->kind != KILN_YAML_SCALAR || kiln_yaml_as_bool (n, &b) < 0)
    return kiln_api_fail (in, n, "%s must be true or false (unquoted)", what);
  *out = b;
  return 0;
}

int
kiln_api_strings (struct kiln_api_input *in, const struct kiln_yaml_node *n, const char *what, bool non_empty,
                  char ***out)
{
  if (n->kind != KILN_YAML_SEQUENCE)
    return kiln_api_fail (in, n, "%s must be a list of strings, not %s", what, what_it_is (n));
  if (non_empty && n->n_items == 0)
    return kiln_api_fail (in, n, "%s must hold at least one string", what);
  char **v = kiln_xcalloc (n->n_items + 1, sizeof *v);
  *out = v;
  for (size_t i = 0; i < n->n_items; i++)
    {
      _cleanup_free_ char *item = NULL;
      item = kiln_xasprintf ("%s[%zu]", what, i);
      if (kiln_api_string (in, n->items[i], item, &v[i]) < 0)
        return -1;
    }
  return 0;
}

int
kiln_api_tags (struct kiln_api_input *in, const struct kiln_yaml_node *n, const char *what, char ***out)
{
  if (n->kind != KILN_YAML_MAPPING)
    return kiln_api_fail (in, n, "%s must be a mapping of tag keys to values, not %s", what, what_it_is (n));
  char **v = kiln_xcalloc (2 * n->n_pairs + 1, sizeof *v);
  *out = v;
  for (size_t i = 0; i < n->n_pairs; i++)
    {
      const struct kiln_yaml_node *k = n->pairs[i].key, *val = n->pairs[i].value;
      if (kiln_yaml_is_null (k) || k->len == 0 || strlen (k->value) != k->len)
        return kiln_api_fail (in, k, "%s: tag keys must be non-empty strings", what);
      if (strncmp (k->value, "aws:", 4) == 0)
        return kiln_api_fail (in, k, "%s: tag key '%s' starts with 'aws:', which AWS keeps for itself", what, k->value);
      if (utf8_chars (k->value, k->len) > 128)
        return kiln_api_fail (in, k, "%s: tag key '%s' is longer than 128 characters", what, k->value);
      if (val->kind != KILN_YAML_SCALAR || kiln_yaml_is_null (val))
        return kiln_api_fail (in, val, "%s: the value of tag '%s' must be a string, not %s", what, k->value,
                              what_it_is (val));
      if (strlen (val->value) != val->len)
        return kiln_api_fail (in, val, "%s: the value of tag '%s' must not hold NUL characters", what, k->value);
      if (utf8_chars (val->value, val->len) > 256)
        return kiln_api_fail (in, val, "%s: the value of tag '%s' is longer than 256 characters", what, k->value);
      v[2 * i] = kiln_xstrdup (k->value);
      v[2 * i + 1] = kiln_xstrdup (val->value);
    }
  return 0;
}

int
kiln_api_config_common (struct kiln_api_input *in, const struct kiln_yaml_node *root, char **name, char **description)
{
  const struct kiln_yaml_node *n;
  if ((n = kiln_yaml_map_get (root, "name")) && kiln_api_resource_name (in, n, "name", name) < 0)
    return -1;
  if ((n = kiln_yaml_map_get (root, "description")) && kiln_api_string (in, n, "description", description) < 0)
    return -1;
  _cleanup_strv_ char **tags = NULL;
  _cleanup_free_ char *client_token = NULL;
  if ((n = kiln_yaml_map_get (root, "tags")) && kiln_api_tags (in, n, "tags", &tags) < 0)
    return -1;
  if ((n = kiln_yaml_map_get (root, "clientToken")))
    {
      if (kiln_api_string (in, n, "clientToken", &client_token) < 0)
        return -1;
      if (strlen (client_token) > 36)
        return kiln_api_fail (in, n, "clientToken must be at most 36 characters");
    }
  return 0;
}
