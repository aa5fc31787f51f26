/* component.h - an AWSTOE component document (schemaVersion 1.0), parsed and
 * fully validated before anything runs.
 *
 * The parsed component keeps its YAML tree: step inputs stay as positioned
 * nodes so that run-time expansion errors can still name FILE:LINE:COL, and
 * so that detailedoutput.json can show inputs exactly as written, expanded. */
#ifndef KILN_BUILDER_COMPONENT_H
#define KILN_BUILDER_COMPONENT_H

#include <stdbool.h>
#include <stddef.h>

#include "cleanup.h"
#include "error.h"
#include "yaml_tree.h"

struct kiln_action;
struct kiln_condition;

enum kiln_on_failure {
  KILN_ON_FAILURE_ABORT,    /* fail the step and the document; stop */
  KILN_ON_FAILURE_CONTINUE, /* fail the step and the document; run on */
  KILN_ON_FAILURE_IGNORE,   /* count the step as successful; run on */
};

enum kiln_step_choice {
  KILN_CHOICE_DEFAULT, /* not written: then = Execute, else = Skip */
  KILN_CHOICE_EXECUTE,
  KILN_CHOICE_SKIP,
  KILN_CHOICE_ABORT,
};

enum kiln_loop_kind {
  KILN_LOOP_FOR,      /* for: {start, end, updateBy}, end inclusive */
  KILN_LOOP_FOREACH,  /* forEach: [values] or {list, delimiter} */
};

struct kiln_loop {
  char *name;                               /* optional: `{{ name.index }}` */
  enum kiln_loop_kind kind;
  const struct kiln_yaml_node *start, *end, *update_by; /* FOR: scalars, may hold {{ Param }} */
  const struct kiln_yaml_node *values;      /* FOREACH: a sequence of scalars */
  const struct kiln_yaml_node *list;        /* FOREACH: a delimited string */
  const struct kiln_yaml_node *delimiter;   /* FOREACH with list: default "," */
  const struct kiln_yaml_node *node;
};

struct kiln_step {
  char *name;
  const struct kiln_action *action;
  const struct kiln_yaml_node *inputs;      /* NULL when absent */
  enum kiln_on_failure on_failure;
  int max_attempts;                         /* >= 1 */
  int timeout_seconds;                      /* -1: none */
  struct kiln_loop *loop;                   /* NULL when absent */
  struct kiln_condition *condition;         /* `if`, NULL when absent */
  enum kiln_step_choice then_choice, else_choice;
  const struct kiln_yaml_node *node;
};

struct kiln_phase {
  char *name;
  struct kiln_step *steps;
  size_t n_steps;
  const struct kiln_yaml_node *node;
};

struct kiln_variable {
  char *name;
  bool constant;
  char *value;        /* constant value or parameter default; NULL: required parameter */
  char *description;
  const struct kiln_yaml_node *node;
};

struct kiln_component {
  char *path;               /* as given */
  char *name;               /* `name`, or NULL */
  char *description;
  struct kiln_variable *variables; /* parameters and constants, in document order */
  size_t n_variables;
  struct kiln_phase *phases;
  size_t n_phases;
  struct kiln_yaml_doc *doc;
  char *text;               /* the document's bytes, for document.yaml and its hash */
  size_t text_len;
  char sha256[65];
  /* ExecuteDocument children, loaded and validated with this document. */
  struct kiln_component **children;
  size_t n_children;
};

/* Where a chained reference may look, used while validating a step. */
struct kiln_component_load_opts {
  /* Nesting level of this document: 1 for a document given by the user. */
  int depth;
  /* Paths of the documents that (transitively) execute this one, for cycle
   * detection; NULL-terminated, or NULL. */
  const char *const *ancestors;
};

/* Loads and validates a document; every error reads "FILE:LINE:COL: ...". */
int kiln_component_load (const char *path, const struct kiln_component_load_opts *opts,
                         struct kiln_component **out, kiln_error **err);
/* The same for a document already in memory; `path` names it in messages and
 * anchors relative ExecuteDocument references. */
int kiln_component_load_text (const char *path, const char *text, size_t len,
                              const struct kiln_component_load_opts *opts, struct kiln_component **out,
                              kiln_error **err);
void kiln_component_free (struct kiln_component *c);
KILN_DEFINE_CLEANUP (struct kiln_component, kiln_component_free)

const struct kiln_phase *kiln_component_phase (const struct kiln_component *c, const char *name);
const struct kiln_step *kiln_phase_step (const struct kiln_phase *p, const char *name);
const struct kiln_variable *kiln_component_variable (const struct kiln_component *c, const char *name);

/* The ExecuteDocument child loaded for a step's `document` input, or NULL
 * when it is only known at run time. */
struct kiln_component *kiln_component_child_for (const struct kiln_component *c, const char *resolved_path);

/* Maximum ExecuteDocument nesting: a user's document and up to 3 levels below. */
#define KILN_DOCUMENT_MAX_DEPTH 4

extern const char *const kiln_phase_names[];

const char *kiln_on_failure_name (enum kiln_on_failure f);

#endif
