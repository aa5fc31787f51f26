/* condition.h - comparison and logical expressions of AWSTOE documents, used
 * by a step's `if` and by the Assert module.
 *
 *   stringEquals: 'abc'          the operator's own value is the baseline,
 *   value: '{{ build.S.outputs.stdout }}'   `value` the value compared to it
 *   and: [..]  or: [..]  not: {..}          nested at most 4 deep
 *
 * Parsing checks operator names, operand shapes and nesting; evaluation
 * expands operands through the caller and asks the target about files and
 * binaries. */
#ifndef KILN_BUILDER_CONDITION_H
#define KILN_BUILDER_CONDITION_H

#include <stdbool.h>

#include "component.h"
#include "error.h"
#include "target.h"
#include "yaml_tree.h"

#define KILN_CONDITION_MAX_DEPTH 4

enum kiln_condition_op {
  KILN_COND_AND,
  KILN_COND_OR,
  KILN_COND_NOT,
  KILN_COND_STRING_EQUALS,
  KILN_COND_STRING_LESS_THAN,
  KILN_COND_STRING_LESS_THAN_EQUALS,
  KILN_COND_STRING_GREATER_THAN,
  KILN_COND_STRING_GREATER_THAN_EQUALS,
  KILN_COND_STRING_IS_EMPTY,
  KILN_COND_STRING_IS_WHITESPACE,
  KILN_COND_PATTERN_MATCHES,
  KILN_COND_NUMBER_EQUALS,
  KILN_COND_NUMBER_LESS_THAN,
  KILN_COND_NUMBER_LESS_THAN_EQUALS,
  KILN_COND_NUMBER_GREATER_THAN,
  KILN_COND_NUMBER_GREATER_THAN_EQUALS,
  KILN_COND_FILE_EXISTS,
  KILN_COND_FOLDER_EXISTS,
  KILN_COND_BINARY_EXISTS,
  KILN_COND_FILE_MD5_EQUALS,
  KILN_COND_FILE_SHA1_EQUALS,
  KILN_COND_FILE_SHA256_EQUALS,
  KILN_COND_FILE_SHA512_EQUALS,
};

struct kiln_condition {
  enum kiln_condition_op op;
  const struct kiln_yaml_node *node;     /* the operator's key, for messages */
  const struct kiln_yaml_node *operand;  /* the operator's own value (scalar) */
  const struct kiln_yaml_node *value;    /* `value` (two-value operators) or `path` (file hashes) */
  struct kiln_condition **children;      /* and/or/not */
  size_t n_children;
};

/* Parses the mapping `map`.  With allow_choices (a step's `if`), `then` and
 * `else` may sit beside the expression and are returned through the choice
 * pointers (KILN_CHOICE_DEFAULT when absent). */
int kiln_condition_parse (const struct kiln_yaml_doc *doc, const struct kiln_yaml_node *map, bool allow_choices,
                          struct kiln_condition **out, enum kiln_step_choice *then_choice,
                          enum kiln_step_choice *else_choice, kiln_error **err);
void kiln_condition_free (struct kiln_condition *c);

/* Calls visit for every scalar operand (for validating their expressions). */
typedef int (*kiln_condition_visitor) (void *opaque, const struct kiln_yaml_node *scalar, kiln_error **err);
int kiln_condition_visit (const struct kiln_condition *c, kiln_condition_visitor visit, void *opaque,
                          kiln_error **err);

struct kiln_condition_env {
  struct kiln_target *target;
  /* Expands a scalar operand's expressions into a malloc'd string. */
  int (*expand) (void *opaque, const struct kiln_yaml_node *scalar, char **out, kiln_error **err);
  void *opaque;
};

int kiln_condition_eval (const struct kiln_condition *c, const struct kiln_condition_env *env, bool *result,
                         kiln_error **err);

/* "stringEquals" for KILN_COND_STRING_EQUALS, ... */
const char *kiln_condition_op_name (enum kiln_condition_op op);

#endif
