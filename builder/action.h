/* action.h - the contract between the executor and the action modules
 * (ExecuteBash, CreateFile, S3Download, ...).
 *
 * Each module is one `struct kiln_action` in a table (actions/registry.c):
 * its name, the shape and fields of its inputs (checked when the document is
 * validated, before anything runs), the outputs it produces (so chaining to an
 * output that cannot exist is a validation error), and its run function.
 * A module reaches the machine it acts on only through the target
 * (drivers/target.h), so the same module works on this host and in a guest.
 *
 * At run time inputs arrive expanded as JSON: a mapping becomes an object, a
 * list an array, every scalar a string (YAML null becomes JSON null).  Typed
 * reads go through the kiln_input_* helpers, which name the field in errors. */
#ifndef KILN_BUILDER_ACTION_H
#define KILN_BUILDER_ACTION_H

#include <signal.h>
#include <stdbool.h>

#include <jansson.h>

#include "buf.h"
#include "error.h"
#include "target.h"
#include "yaml_tree.h"

struct kiln_executor;
struct kiln_component;
struct kiln_step;

enum kiln_input_type {
  KILN_IN_STRING,
  KILN_IN_BOOL,        /* true/false */
  KILN_IN_INT,
  KILN_IN_STRING_LIST, /* a list of scalars */
  KILN_IN_NAME_VALUES, /* a list of {name, value} mappings */
  KILN_IN_ANY,
};

struct kiln_input_field {
  const char *name;
  enum kiln_input_type type;
  bool required;
};

enum kiln_input_shape {
  KILN_INPUTS_MAP,       /* inputs: {field: ...} */
  KILN_INPUTS_LIST,      /* inputs: [{field: ...}, ...], at least one entry */
  KILN_INPUTS_CONDITION, /* inputs: a comparison or logical expression (Assert) */
};

struct kiln_action_ctx {
  struct kiln_target *target;
  struct kiln_executor *executor;
  const struct kiln_component *component;
  const struct kiln_step *step;
  json_t *inputs;          /* expanded inputs (borrowed) */
  json_t *outputs;         /* object the module fills (borrowed) */
  int timeout_seconds;     /* for this attempt; -1: none */
  int exit_code;           /* a command's exit status when the module ran one, else -1 */
  bool reboot_requested;   /* the module asks for a reboot after it (exit 194, Reboot) */
  int reboot_delay_seconds;
  /* Where a module's own messages and its commands' output go (console.log
   * and the progress view). */
  void (*output) (void *opaque, int stream, const char *data, size_t len);
  void *output_opaque;
  volatile sig_atomic_t *cancel;
  /* Expands one scalar of the step's document with the step's variables,
   * loop and chaining (for modules that read the YAML themselves: Assert). */
  int (*expand) (void *opaque, const struct kiln_yaml_node *scalar, char **out, kiln_error **err);
  void *expand_opaque;
  /* Nesting level of the document being run (1 for the user's). */
  int depth;
  /* A nested run's detailedoutput tree (ExecuteDocument), owned by the ctx. */
  json_t *detail;
};

struct kiln_action_check_ctx {
  const struct kiln_yaml_doc *doc;
  const struct kiln_yaml_node *inputs; /* validated for shape and fields already */
};

struct kiln_action {
  const char *name;
  bool windows_only;                       /* recognised, refused on Linux */
  enum kiln_input_shape shape;
  const struct kiln_input_field *fields;   /* terminated by {NULL} */
  const char *const *outputs;              /* terminated by NULL; NULL: none */
  /* Extra static checks on literal inputs (values, not shapes), or NULL. */
  int (*check) (const struct kiln_action_check_ctx *ctx, kiln_error **err);
  /* Runs the module once.  Returns 0 on success; -1 with err saying why the
   * step failed ("copy '/a' to '/b': ..."). */
  int (*run) (struct kiln_action_ctx *ctx, kiln_error **err);
};

const struct kiln_action *kiln_action_find (const char *name);
/* True when the action declares the output. */
bool kiln_action_has_output (const struct kiln_action *a, const char *name);
/* For messages: "ExecuteBash, ExecuteBinary, ..." */
const char *kiln_action_names (void);

/* Typed input access.  `key` is looked up in obj; `where` names the entry in
 * errors (e.g. "inputs[1]").  Getters return 0 and leave the default when the
 * key is absent or null. */
int kiln_input_string (json_t *obj, const char *key, const char *where, const char **out, kiln_error **err);
int kiln_input_required_string (json_t *obj, const char *key, const char *where, const char **out,
                                kiln_error **err);
int kiln_input_bool (json_t *obj, const char *key, const char *where, bool *out, kiln_error **err);
int kiln_input_int (json_t *obj, const char *key, const char *where, long *out, kiln_error **err);
/* A list of strings (a lone string counts as a list of one). */
int kiln_input_string_list (json_t *obj, const char *key, const char *where, json_t **out, kiln_error **err);

/* Writes a line to the step's output stream (console.log). */
void kiln_action_note (struct kiln_action_ctx *ctx, const char *fmt, ...) __attribute__ ((format (printf, 2, 3)));

/* Runs a command on the target with the step's timeout, streaming its output
 * to the step; fills exit_code.  Returns -1 only when it could not run. */
int kiln_action_run_command (struct kiln_action_ctx *ctx, char *const *argv, const char *cwd,
                             struct kiln_target_result *res, kiln_error **err);
/* Runs a command that must succeed: a non-zero exit fails with its stderr. */
int kiln_action_run_checked (struct kiln_action_ctx *ctx, char *const *argv, kiln_error **err);

#endif
