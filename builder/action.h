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
 * reads go through the kiln_input_* helpers, which name the field in errors.
 * What several modules share is here too (action_support.c): walking the
 * entries of list-shaped inputs, at run time and in static checks, path
 * strings, common file-system steps on the target, and the step's clock. */
#ifndef KILN_BUILDER_ACTION_H
#define KILN_BUILDER_ACTION_H

#include <signal.h>
#include <stdbool.h>
#include <sys/types.h>

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

/* The literal scalar value of key in a YAML mapping entry, for static checks:
 * NULL when the key is absent, null, not a scalar, or holds {{ }}
 * expressions (those are checked at run time, once expanded). */
const struct kiln_yaml_node *kiln_input_literal (const struct kiln_yaml_node *entry, const char *key);

/* Parses permissions written as 1 to 4 octal digits ("644", "0755", "4755")
 * into *out; false for anything else.  YAML's reading of 0777 as a number
 * never applies since inputs arrive as their source text. */
bool kiln_parse_mode (const char *s, mode_t *out);

/* Marks a parameter that a callback's signature imposes but that the callback
 * does not use. */
#define _unused_ __attribute__ ((unused))

/* ---- list-shaped inputs (KILN_INPUTS_LIST) --------------------------------- */

/* Handles one entry: entry is its expanded inputs (an object); opaque is what
 * the caller gave kiln_action_for_each_entry.  Errors need not name the
 * entry. */
typedef int (*kiln_action_entry_fn) (struct kiln_action_ctx *ctx, json_t *entry, void *opaque, kiln_error **err);

/* Calls fn for each entry of ctx->inputs in order; the first that fails ends
 * the loop, its error prefixed "inputs[N]".  Fails (KILN_ERR_INVALID) when the
 * inputs are not a list ("inputs must be a list of entries") or an entry is
 * not an object ("inputs[N]: expected a mapping of inputs"). */
int kiln_action_for_each_entry (struct kiln_action_ctx *ctx, kiln_action_entry_fn fn, void *opaque, kiln_error **err);

/* Checks one entry's literal values when the document is validated; errors
 * point at the offending node (kiln_yaml_error). */
typedef int (*kiln_action_check_entry_fn) (const struct kiln_action_check_ctx *ctx, const struct kiln_yaml_node *entry,
                                           void *opaque, kiln_error **err);

/* Calls fn for each mapping entry of ctx->inputs, stopping at the first
 * failure; other entries, and inputs that are not a list, are left to the
 * shape checks (nothing to do). */
int kiln_action_check_each_entry (const struct kiln_action_check_ctx *ctx, kiln_action_check_entry_fn fn, void *opaque,
                                  kiln_error **err);

/* Static check of an entry's literal `permissions`: 1 to 4 octal digits, else
 * "permissions 'X' must be 1 to 4 octal digits, such as EXAMPLE". */
int kiln_action_check_permissions (const struct kiln_action_check_ctx *ctx, const struct kiln_yaml_node *entry,
                                   const char *example, kiln_error **err);
/* Static check of an entry's literal `source` (trailing slashes dropped first
 * when trim_slashes): `*` only in its last component, and with a wildcard a
 * literal `destination` must end in '/'. */
int kiln_action_check_wildcard_source (const struct kiln_action_check_ctx *ctx, const struct kiln_yaml_node *entry,
                                       bool trim_slashes, kiln_error **err);

/* ---- paths on the target, as strings (nothing is looked up) ---------------- */

/* The folder part of path: "" when it has none, "/" for "/x"; malloc'd. */
char *kiln_path_dir (const char *path);
/* The part after the last '/' (path itself without one); points into path. */
const char *kiln_path_base (const char *path);
/* True when path ends in '/' (a destination naming a folder to go into). */
bool kiln_path_ends_with_slash (const char *path);
/* dir + "/" + name, without the '/' after "" or a dir ending in '/'; malloc'd. */
char *kiln_path_join (const char *dir, const char *name);
/* path without trailing slashes ("/" stays "/"); malloc'd. */
char *kiln_path_trim_slashes (const char *path);
/* True when the last component holds `*`, the only wildcard of the file and
 * folder modules. */
bool kiln_path_has_wildcard (const char *path);
/* Sorts the n strings of v in byte order (strcmp). */
void kiln_sort_strings (char **v, size_t n);

/* ---- the file system of the target ----------------------------------------- */

/* mkdir -p dir on the target ("--" before it); nothing to do for "" or "/".
 * Errors: "create folder 'DIR': ...". */
int kiln_action_make_folder (struct kiln_action_ctx *ctx, const char *dir, kiln_error **err);
/* kiln_action_make_folder on the folder that will hold path. */
int kiln_action_make_parent (struct kiln_action_ctx *ctx, const char *path, kiln_error **err);
/* chown OWNER[:GROUP] path, or chgrp GROUP path when owner is NULL (at least
 * one of them is given).  Errors: "set the owner of 'PATH' to 'SPEC': ...". */
int kiln_action_set_owner (struct kiln_action_ctx *ctx, const char *path, const char *owner, const char *group,
                           kiln_error **err);
/* lstat path on the target into *st, and whether it is a folder once symbolic
 * links are followed (stat of "path/." resolves them) into *is_folder. */
int kiln_action_stat_folder (struct kiln_action_ctx *ctx, const char *path, struct kiln_target_stat *st,
                             bool *is_folder, kiln_error **err);
/* Runs on the target
 *   find START -mindepth 1 [-maxdepth 1] [!] -type d [-name NAME] -print0
 * listing below start the folders (folders true) or everything else, only
 * start's own entries unless recursive, and only those whose names match name
 * (find's -name) unless it is NULL or empty.  On success out is replaced by
 * find's NUL-separated output; on failure it is untouched and err says why, as
 * from kiln_target_run_checked. */
int kiln_action_run_find (struct kiln_action_ctx *ctx, const char *start, bool recursive, bool folders,
                          const char *name, struct kiln_buf *out, kiln_error **err);
/* Splits the NUL-separated output of find -print0 into a sorted,
 * NULL-terminated vector of malloc'd strings (free with kiln_strv_free):
 * prefix joined with the last component of each when basename_only, else each
 * as printed.  *count gets the number of strings. */
char **kiln_action_split_print0 (const struct kiln_buf *out, const char *prefix, bool basename_only, size_t *count);
/* The entries in the folder of pattern_path whose names match its last
 * component, `*` being the only wildcard (a leading dot is not special, as in
 * Go's filepath.Match): folders when folders is true, else everything but
 * folders.  Sorted paths, the folder part of pattern_path joined with each
 * name.  Runs
 *   find DIR/. -mindepth 1 -maxdepth 1 [!] -type d -name PATTERN -print0
 * ("DIR/." so that a folder reached through a symbolic link is searched too).
 * Fails (KILN_ERR_NOT_FOUND) when the folder does not exist. */
int kiln_action_expand_wildcard (struct kiln_action_ctx *ctx, const char *pattern_path, bool folders, char ***matches,
                                 size_t *count, kiln_error **err);

/* ---- time ------------------------------------------------------------------ */

/* The monotonic clock, in seconds. */
double kiln_action_now (void);
/* When the step's time runs out on kiln_action_now's clock; 0 when the step
 * has no timeout. */
double kiln_action_deadline (const struct kiln_action_ctx *ctx);
/* The whole seconds left before deadline into *left (untouched when deadline
 * is 0).  Fails with KILN_ERR_TIMEOUT ("timed out after N seconds", N the
 * step's timeout) when less than one second is left. */
int kiln_action_time_left (const struct kiln_action_ctx *ctx, double deadline, long *left, kiln_error **err);

/* Writes a line to the step's output stream (console.log). */
void kiln_action_note (struct kiln_action_ctx *ctx, const char *fmt, ...) __attribute__ ((format (printf, 2, 3)));

/* Runs a command on the target with the step's timeout, streaming its output
 * to the step; fills exit_code.  Returns -1 only when it could not run. */
int kiln_action_run_command (struct kiln_action_ctx *ctx, char *const *argv, const char *cwd,
                             struct kiln_target_result *res, kiln_error **err);
/* Runs a command that must succeed: a non-zero exit fails with its stderr. */
int kiln_action_run_checked (struct kiln_action_ctx *ctx, char *const *argv, kiln_error **err);

#endif
