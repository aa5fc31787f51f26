/* yaml_tree.c - load YAML/JSON with libyaml's event parser into a positioned
 * tree (see yaml_tree.h).
 *
 * libyaml's own document loader drops per-node marks for aliases and does not
 * check duplicate keys, so kiln builds its tree from parser events.  Every node
 * lives in doc->all; aliases point at their anchor's node, which is why
 * freeing walks that list rather than the tree. */
#include "yaml_tree.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <yaml.h>

#include "buf.h"
#include "cleanup.h"
#include "xalloc.h"

/* Upper bound on nodes visited when aliases are expanded.  Real component
 * documents are a few thousand nodes; this leaves ample room. */
#define EXPANDED_NODE_LIMIT 1000000
#define DEPTH_LIMIT 200

struct anchor {
  char *name;
  struct kiln_yaml_node *node;
};

struct loader {
  yaml_parser_t parser;
  struct kiln_yaml_doc *doc;
  struct anchor *anchors;
  size_t n_anchors;
  int depth;
  kiln_error **err;
};

/* Expanded size of a node, counting alias targets each time they are used.
 * Each level stops adding once past the limit, so the walk itself is bounded
 * by about EXPANDED_NODE_LIMIT visits however the aliases nest. */
static size_t
expanded_size (const struct kiln_yaml_node *n, int depth)
{
  if (depth > DEPTH_LIMIT)
    return EXPANDED_NODE_LIMIT + 1;
  size_t total = 1;
  if (n->kind == KILN_YAML_SEQUENCE)
    for (size_t i = 0; i < n->n_items && total <= EXPANDED_NODE_LIMIT; i++)
      total += expanded_size (n->items[i], depth + 1);
  else if (n->kind == KILN_YAML_MAPPING)
    for (size_t i = 0; i < n->n_pairs && total <= EXPANDED_NODE_LIMIT; i++)
      total += 1 + expanded_size (n->pairs[i].value, depth + 1);
  return total;
}

static struct kiln_yaml_node *
new_node (struct loader *l, enum kiln_yaml_kind kind, const yaml_mark_t *mark)
{
  struct kiln_yaml_doc *doc = l->doc;
  struct kiln_yaml_node *n = calloc (1, sizeof *n);
  if (n == NULL)
    abort ();
  n->kind = kind;
  n->line = (int) mark->line + 1;
  n->column = (int) mark->column + 1;
  if (doc->n_all == doc->cap_all)
    {
      doc->cap_all = doc->cap_all ? doc->cap_all * 2 : 64;
      doc->all = realloc (doc->all, doc->cap_all * sizeof *doc->all);
      if (doc->all == NULL)
        abort ();
    }
  doc->all[doc->n_all++] = n;
  return n;
}

static int
error_at (struct loader *l, const yaml_mark_t *mark, const char *fmt, ...) __attribute__ ((format (printf, 3, 4)));

static int
error_at (struct loader *l, const yaml_mark_t *mark, const char *fmt, ...)
{
  _cleanup_free_ char *msg = NULL;
  va_list ap;
  va_start (ap, fmt);
  msg = kiln_xvasprintf (fmt, ap);
  va_end (ap);
  return kiln_error_set (l->err, KILN_ERR_INVALID, 0, "%s:%d:%d: %s", l->doc->name, (int) mark->line + 1,
                         (int) mark->column + 1, msg);
}

static int
parser_error (struct loader *l)
{
  const yaml_parser_t *p = &l->parser;
  const yaml_mark_t *mark = p->problem_mark.line || p->problem_mark.column ? &p->problem_mark : &p->context_mark;
  const char *problem = p->problem ? p->problem : "malformed YAML";
  if (p->context)
    return error_at (l, mark, "%s %s", p->context, problem);
  return error_at (l, mark, "%s", problem);
}

static int
next_event (struct loader *l, yaml_event_t *ev)
{
  if (!yaml_parser_parse (&l->parser, ev))
    return parser_error (l);
  return 0;
}

static int
remember_anchor (struct loader *l, const yaml_char_t *anchor, struct kiln_yaml_node *n)
{
  if (anchor == NULL)
    return 0;
  l->anchors = realloc (l->anchors, (l->n_anchors + 1) * sizeof *l->anchors);
  if (l->anchors == NULL)
    abort ();
  l->anchors[l->n_anchors].name = kiln_xstrdup ((const char *) anchor);
  l->anchors[l->n_anchors].node = n;
  l->n_anchors++;
  return 0;
}

static int load_node (struct loader *l, yaml_event_t *ev, struct kiln_yaml_node **out);

static int
load_sequence (struct loader *l, struct kiln_yaml_node *seq)
{
  size_t cap = 0;
  for (;;)
    {
      yaml_event_t ev;
      if (next_event (l, &ev) < 0)
        return -1;
      if (ev.type == YAML_SEQUENCE_END_EVENT)
        {
          yaml_event_delete (&ev);
          return 0;
        }
      struct kiln_yaml_node *item = NULL;
      int r = load_node (l, &ev, &item);
      yaml_event_delete (&ev);
      if (r < 0)
        return -1;
      if (seq->n_items == cap)
        {
          cap = cap ? cap * 2 : 8;
          seq->items = realloc (seq->items, cap * sizeof *seq->items);
          if (seq->items == NULL)
            abort ();
        }
      seq->items[seq->n_items++] = item;
    }
}

static int
load_mapping (struct loader *l, struct kiln_yaml_node *map)
{
  size_t cap = 0;
  for (;;)
    {
      yaml_event_t ev;
      if (next_event (l, &ev) < 0)
        return -1;
      if (ev.type == YAML_MAPPING_END_EVENT)
        {
          yaml_event_delete (&ev);
          return 0;
        }
      yaml_mark_t key_mark = ev.start_mark;
      struct kiln_yaml_node *key = NULL;
      int r = load_node (l, &ev, &key);
      yaml_event_delete (&ev);
      if (r < 0)
        return -1;
      if (key->kind != KILN_YAML_SCALAR)
        return error_at (l, &key_mark, "mapping keys must be scalars, not a %s%s", kiln_yaml_kind_name (key->kind),
                         key->kind == KILN_YAML_MAPPING ? " (a value starting with '{' must be quoted)" : "");
      for (size_t i = 0; i < map->n_pairs; i++)
        if (map->pairs[i].key->len == key->len && memcmp (map->pairs[i].key->value, key->value, key->len) == 0)
          return error_at (l, &key_mark, "duplicate key '%s' (first at line %d)", key->value,
                           map->pairs[i].key->line);
      if (next_event (l, &ev) < 0)
        return -1;
      struct kiln_yaml_node *value = NULL;
      r = load_node (l, &ev, &value);
      yaml_event_delete (&ev);
      if (r < 0)
        return -1;
      if (map->n_pairs == cap)
        {
          cap = cap ? cap * 2 : 8;
          map->pairs = realloc (map->pairs, cap * sizeof *map->pairs);
          if (map->pairs == NULL)
            abort ();
        }
      map->pairs[map->n_pairs].key = key;
      map->pairs[map->n_pairs].value = value;
      map->n_pairs++;
    }
}

static int
load_node (struct loader *l, yaml_event_t *ev, struct kiln_yaml_node **out)
{
  struct kiln_yaml_node *n;
  switch (ev->type)
    {
    case YAML_ALIAS_EVENT:
      for (size_t i = l->n_anchors; i > 0; i--)
        if (strcmp (l->anchors[i - 1].name, (const char *) ev->data.alias.anchor) == 0)
          {
            *out = l->anchors[i - 1].node;
            return 0;
          }
      return error_at (l, &ev->start_mark, "unknown alias '*%s'", ev->data.alias.anchor);

    case YAML_SCALAR_EVENT:
      n = new_node (l, KILN_YAML_SCALAR, &ev->start_mark);
      n->len = ev->data.scalar.length;
      n->value = malloc (n->len + 1);
      if (n->value == NULL)
        abort ();
      memcpy (n->value, ev->data.scalar.value, n->len);
      n->value[n->len] = '\0';
      n->plain = ev->data.scalar.style == YAML_PLAIN_SCALAR_STYLE;
      /* An explicit !!str tag makes a plain scalar a string. */
      if (ev->data.scalar.tag && strcmp ((const char *) ev->data.scalar.tag, YAML_STR_TAG) == 0)
        n->plain = false;
      *out = n;
      return remember_anchor (l, ev->data.scalar.anchor, n);

    case YAML_SEQUENCE_START_EVENT:
      if (++l->depth > DEPTH_LIMIT)
        return error_at (l, &ev->start_mark, "nesting deeper than %d levels", DEPTH_LIMIT);
      n = new_node (l, KILN_YAML_SEQUENCE, &ev->start_mark);
      remember_anchor (l, ev->data.sequence_start.anchor, n);
      if (load_sequence (l, n) < 0)
        return -1;
      l->depth--;
      *out = n;
      return 0;

    case YAML_MAPPING_START_EVENT:
      if (++l->depth > DEPTH_LIMIT)
        return error_at (l, &ev->start_mark, "nesting deeper than %d levels", DEPTH_LIMIT);
      n = new_node (l, KILN_YAML_MAPPING, &ev->start_mark);
      remember_anchor (l, ev->data.mapping_start.anchor, n);
      if (load_mapping (l, n) < 0)
        return -1;
      l->depth--;
      *out = n;
      return 0;

    default:
      return error_at (l, &ev->start_mark, "unexpected YAML event");
    }
}

static int
load_stream (struct loader *l)
{
  yaml_event_t ev;
  bool seen_document = false;
  for (;;)
    {
      if (next_event (l, &ev) < 0)
        return -1;
      yaml_event_type_t type = ev.type;
      if (type == YAML_STREAM_END_EVENT)
        {
          yaml_event_delete (&ev);
          return 0;
        }
      if (type == YAML_DOCUMENT_START_EVENT)
        {
          if (seen_document)
            {
              error_at (l, &ev.start_mark, "only one YAML document is allowed here");
              yaml_event_delete (&ev);
              return -1;
            }
          seen_document = true;
        }
      else if (type != YAML_STREAM_START_EVENT && type != YAML_DOCUMENT_END_EVENT)
        {
          int r = load_node (l, &ev, &l->doc->root);
          if (r == 0 && expanded_size (l->doc->root, 0) > EXPANDED_NODE_LIMIT)
            r = error_at (l, &ev.start_mark, "document expands to more than %d nodes through aliases",
                          EXPANDED_NODE_LIMIT);
          yaml_event_delete (&ev);
          if (r < 0)
            return -1;
          continue;
        }
      yaml_event_delete (&ev);
    }
}

int
kiln_yaml_load_string (const char *name, const char *data, size_t len, struct kiln_yaml_doc **out,
                       kiln_error **err)
{
  struct kiln_yaml_doc *doc = kiln_xcalloc (1, sizeof *doc);
  doc->name = kiln_xstrdup (name);
  struct loader l = {.doc = doc, .err = err};
  if (!yaml_parser_initialize (&l.parser))
    abort ();
  yaml_parser_set_input_string (&l.parser, (const unsigned char *) data, len);
  int r = load_stream (&l);
  yaml_parser_delete (&l.parser);
  for (size_t i = 0; i < l.n_anchors; i++)
    free (l.anchors[i].name);
  free (l.anchors);
  if (r < 0)
    {
      kiln_yaml_doc_free (doc);
      return -1;
    }
  *out = doc;
  return 0;
}

int
kiln_yaml_load_file (const char *path, struct kiln_yaml_doc **out, kiln_error **err)
{
  _cleanup_fclose_ FILE *f = fopen (path, "re");
  if (f == NULL)
    return kiln_fail_errno (err, errno, "open '%s'", path);
  struct kiln_buf b = KILN_BUF_INIT;
  char chunk[65536];
  size_t n;
  while ((n = fread (chunk, 1, sizeof chunk, f)) > 0)
    kiln_buf_append (&b, chunk, n);
  if (ferror (f))
    {
      kiln_buf_release (&b);
      return kiln_fail_errno (err, errno, "read '%s'", path);
    }
  int r = kiln_yaml_load_string (path, kiln_buf_str (&b), b.len, out, err);
  kiln_buf_release (&b);
  return r;
}

void
kiln_yaml_doc_free (struct kiln_yaml_doc *doc)
{
  if (doc == NULL)
    return;
  for (size_t i = 0; i < doc->n_all; i++)
    {
      free (doc->all[i]->value);
      free (doc->all[i]->items);
      free (doc->all[i]->pairs);
      free (doc->all[i]);
    }
  free (doc->all);
  free (doc->name);
  free (doc);
}

void
kiln_yaml_doc_freep (struct kiln_yaml_doc **doc)
{
  kiln_yaml_doc_free (*doc);
  *doc = NULL;
}

struct kiln_yaml_node *
kiln_yaml_map_get (const struct kiln_yaml_node *map, const char *key)
{
  if (map == NULL || map->kind != KILN_YAML_MAPPING)
    return NULL;
  for (size_t i = 0; i < map->n_pairs; i++)
    if (strcmp (map->pairs[i].key->value, key) == 0)
      return map->pairs[i].value;
  return NULL;
}

struct kiln_yaml_node *
kiln_yaml_map_key_of (const struct kiln_yaml_node *map, const struct kiln_yaml_node *value)
{
  if (map == NULL || map->kind != KILN_YAML_MAPPING)
    return NULL;
  for (size_t i = 0; i < map->n_pairs; i++)
    if (map->pairs[i].value == value)
      return map->pairs[i].key;
  return NULL;
}

bool
kiln_yaml_is_null (const struct kiln_yaml_node *n)
{
  if (n == NULL)
    return true;
  if (n->kind != KILN_YAML_SCALAR || !n->plain)
    return false;
  return n->len == 0 || strcmp (n->value, "~") == 0 || strcmp (n->value, "null") == 0
         || strcmp (n->value, "Null") == 0 || strcmp (n->value, "NULL") == 0;
}

int
kiln_yaml_as_bool (const struct kiln_yaml_node *n, bool *out)
{
  static const char *const truthy[] = {"true", "True", "TRUE", "yes", "Yes", "YES", "on", "On", "ON"};
  static const char *const falsy[] = {"false", "False", "FALSE", "no", "No", "NO", "off", "Off", "OFF"};
  if (n == NULL || n->kind != KILN_YAML_SCALAR || !n->plain)
    return -1;
  for (size_t i = 0; i < sizeof truthy / sizeof truthy[0]; i++)
    {
      if (strcmp (n->value, truthy[i]) == 0)
        {
          *out = true;
          return 0;
        }
      if (strcmp (n->value, falsy[i]) == 0)
        {
          *out = false;
          return 0;
        }
    }
  return -1;
}

int
kiln_yaml_as_long (const struct kiln_yaml_node *n, long *out)
{
  if (n == NULL || n->kind != KILN_YAML_SCALAR || n->len == 0)
    return -1;
  const char *s = n->value;
  if (isspace ((unsigned char) s[0]))
    return -1;
  char *end = NULL;
  errno = 0;
  long v = strtol (s, &end, 10);
  if (errno != 0 || end == s || *end != '\0')
    return -1;
  *out = v;
  return 0;
}

const char *
kiln_yaml_kind_name (enum kiln_yaml_kind kind)
{
  switch (kind)
    {
    case KILN_YAML_SCALAR:
      return "scalar";
    case KILN_YAML_SEQUENCE:
      return "list";
    case KILN_YAML_MAPPING:
      return "mapping";
    }
  return "node";
}

int
kiln_yaml_error (kiln_error **err, const struct kiln_yaml_doc *doc, const struct kiln_yaml_node *n,
                 const char *fmt, ...)
{
  _cleanup_free_ char *msg = NULL;
  va_list ap;
  va_start (ap, fmt);
  msg = kiln_xvasprintf (fmt, ap);
  va_end (ap);
  if (n == NULL)
    return kiln_error_set (err, KILN_ERR_INVALID, 0, "%s: %s", doc->name, msg);
  return kiln_error_set (err, KILN_ERR_INVALID, 0, "%s:%d:%d: %s", doc->name, n->line, n->column, msg);
}
