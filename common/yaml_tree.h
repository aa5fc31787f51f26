/* yaml_tree.h - YAML (and JSON) loaded into a tree that remembers where every
 * node came from.
 *
 * kiln's user-facing errors name FILE:LINE:COLUMN, so the loader keeps the
 * start position (1-based) of each node.  The tree is read-only after loading.
 * Rules enforced while loading, each reported with its position:
 *   - exactly one document per stream;
 *   - mapping keys are scalars and unique within their mapping;
 *   - aliases are resolved to the anchored node (shared, not copied) and the
 *     expanded size of the tree is bounded, so "billion laughs" input fails
 *     fast instead of exhausting memory. */
#ifndef KILN_COMMON_YAML_TREE_H
#define KILN_COMMON_YAML_TREE_H

#include <stdbool.h>
#include <stddef.h>

#include "error.h"

enum kiln_yaml_kind {
  KILN_YAML_SCALAR,
  KILN_YAML_SEQUENCE,
  KILN_YAML_MAPPING,
};

struct kiln_yaml_node;

struct kiln_yaml_pair {
  struct kiln_yaml_node *key; /* always a scalar */
  struct kiln_yaml_node *value;
};

struct kiln_yaml_node {
  enum kiln_yaml_kind kind;
  int line;   /* 1-based */
  int column; /* 1-based */
  /* KILN_YAML_SCALAR */
  char *value;   /* NUL-terminated (may also contain NULs: see len) */
  size_t len;
  bool plain;    /* written without quotes or block style: may be null/bool/number */
  /* KILN_YAML_SEQUENCE */
  struct kiln_yaml_node **items;
  size_t n_items;
  /* KILN_YAML_MAPPING */
  struct kiln_yaml_pair *pairs;
  size_t n_pairs;
};

struct kiln_yaml_doc {
  char *name;                  /* file name used in messages */
  struct kiln_yaml_node *root; /* NULL for an empty stream */
  /* private: every node, for freeing */
  struct kiln_yaml_node **all;
  size_t n_all, cap_all;
};

/* Loads a file.  Errors read "NAME:LINE:COL: message" (syntax errors carry
 * libyaml's problem and position). */
int kiln_yaml_load_file (const char *path, struct kiln_yaml_doc **out, kiln_error **err);
int kiln_yaml_load_string (const char *name, const char *data, size_t len, struct kiln_yaml_doc **out,
                           kiln_error **err);
void kiln_yaml_doc_free (struct kiln_yaml_doc *doc);
void kiln_yaml_doc_freep (struct kiln_yaml_doc **doc);
#define _cleanup_yaml_doc_ __attribute__ ((cleanup (kiln_yaml_doc_freep)))

/* The value for key in a mapping, or NULL. */
struct kiln_yaml_node *kiln_yaml_map_get (const struct kiln_yaml_node *map, const char *key);
/* The key node under which value sits in map (for positions), or NULL. */
struct kiln_yaml_node *kiln_yaml_map_key_of (const struct kiln_yaml_node *map, const struct kiln_yaml_node *value);

/* YAML 1.1/1.2 core-schema readings of plain scalars. */
bool kiln_yaml_is_null (const struct kiln_yaml_node *n);
/* Returns 0 and sets *out for true/false (and YAML 1.1 yes/no/on/off) in plain style. */
int kiln_yaml_as_bool (const struct kiln_yaml_node *n, bool *out);
/* Returns 0 and sets *out for a plain or quoted decimal integer. */
int kiln_yaml_as_long (const struct kiln_yaml_node *n, long *out);

/* "scalar", "sequence", "mapping" (for messages). */
const char *kiln_yaml_kind_name (enum kiln_yaml_kind kind);

/* Fills *err with "NAME:LINE:COL: <message>" for node n and returns -1. */
int kiln_yaml_error (kiln_error **err, const struct kiln_yaml_doc *doc, const struct kiln_yaml_node *n,
                     const char *fmt, ...) __attribute__ ((format (printf, 4, 5)));

#endif
