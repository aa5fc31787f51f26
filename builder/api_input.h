/* api_input.h - reading a file written as an AWS API input (the YAML or JSON
 * given to `aws ... --cli-input-yaml`), for the configuration readers
 * (infrastructure.c, distribution.c).
 *
 * Every reader here checks one field and, when it is wrong, fills the
 * reader's error with "FILE:LINE:COLUMN: FIELD ..." for the node at fault
 * and returns -1; `what` is the field's name as the user would look for it
 * ("distributions[1].region").  Strings must be non-empty scalars without
 * NUL characters: a YAML null where a value belongs is an error, never an
 * absent field.  Outputs are malloc'd and the caller's, also when a later
 * field fails. */
#ifndef KILN_BUILDER_API_INPUT_H
#define KILN_BUILDER_API_INPUT_H

#include <stdbool.h>
#include <stddef.h>

#include "error.h"
#include "yaml_tree.h"

struct kiln_api_input {
  struct kiln_yaml_doc *doc;
  char *text; /* the file as read: positions inside strings are found in it */
  size_t len;
  kiln_error **err;
};

/* A field the API has and kiln refuses, with why (or NULL). */
struct kiln_api_refusal {
  const char *key;
  const char *reason;
};

/* Reads and parses path (YAML or JSON).  On success in->doc's root may be
 * NULL (an empty file).  in->err is set to err. */
int kiln_api_load (const char *path, struct kiln_api_input *in, kiln_error **err);
void kiln_api_release (struct kiln_api_input *in);

/* Fills the error for node n (its position) and returns -1. */
int kiln_api_fail (struct kiln_api_input *in, const struct kiln_yaml_node *n, const char *fmt, ...)
    __attribute__ ((format (printf, 3, 4)));
/* The same for byte offset `at` of scalar n's value: its exact line and
 * column when the value is written on one line without escapes (plain or
 * quoted), else n's own position. */
int kiln_api_fail_at (struct kiln_api_input *in, const struct kiln_yaml_node *n, size_t at, const char *fmt, ...)
    __attribute__ ((format (printf, 4, 5)));

/* The root of a file that must be a mapping; `what` names the file's kind
 * ("an infrastructure configuration"). */
int kiln_api_root (struct kiln_api_input *in, const char *what, const struct kiln_yaml_node **out);
/* n must be a mapping. */
int kiln_api_mapping (struct kiln_api_input *in, const struct kiln_yaml_node *n, const char *what);
/* Every key of map must be in allowed (NULL-terminated).  A key in not_yet
 * (ended by {NULL}) is "KEY is not supported by kiln yet (REASON)"; any
 * other is "unknown key 'KEY' in WHAT (expected ALLOWED...)".  Keys are
 * checked in file order: the first at fault is reported. */
int kiln_api_check_keys (struct kiln_api_input *in, const struct kiln_yaml_node *map, const char *const *allowed,
                         const struct kiln_api_refusal *not_yet, const char *what);
/* The first key of map (in file order) that refusals names, or NULL;
 * *refusal is set to its entry. */
const struct kiln_yaml_node *kiln_api_refused_key (const struct kiln_yaml_node *map,
                                                   const struct kiln_api_refusal *refusals,
                                                   const struct kiln_api_refusal **refusal);

int kiln_api_string (struct kiln_api_input *in, const struct kiln_yaml_node *n, const char *what, char **out);
/* An Image Builder resource name (the configuration's own `name`): 3 to 128
 * letters, digits, '-', '_' and spaces, not starting or ending with a
 * space. */
int kiln_api_resource_name (struct kiln_api_input *in, const struct kiln_yaml_node *n, const char *what, char **out);
/* The fields every Image Builder configuration has: name (a resource
 * name) and description into *name and *description when present, and
 * tags and clientToken checked, then dropped (they describe the
 * configuration resource, which kiln does not create). */
int kiln_api_config_common (struct kiln_api_input *in, const struct kiln_yaml_node *root, char **name,
                            char **description);
/* true/false (YAML's other spellings of them too) in plain style: *out 0 or 1. */
int kiln_api_bool (struct kiln_api_input *in, const struct kiln_yaml_node *n, const char *what, int *out);
/* A list of strings, NULL-terminated (an empty list gives { NULL });
 * non_empty refuses an empty list. */
int kiln_api_strings (struct kiln_api_input *in, const struct kiln_yaml_node *n, const char *what, bool non_empty,
                      char ***out);
/* A tag map (string -> string, as AWS's TagMap: keys of 1 to 128 characters
 * not starting with "aws:", values of up to 256), as key, value, ..., NULL
 * in file order. */
int kiln_api_tags (struct kiln_api_input *in, const struct kiln_yaml_node *n, const char *what, char ***out);

#endif
