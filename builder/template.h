/* template.h - `{{ ... }}` expressions inside component strings.
 *
 * A template is literal text with expressions between "{{" and "}}"
 * (whitespace inside the braces ignored).  An expression names one of:
 *   Name                          a parameter or constant
 *   loop.index, loop.value        the current step's loop (also <loopname>.index/.value)
 *   phase.Step.inputs.x           chaining: an earlier step's expanded input,
 *   phase.Step.inputs[i].x        (in a list of inputs, 0-based)
 *   phase.Step.outputs.x          or its output
 * Parsing is pure; resolving is the caller's (validation checks that a name
 * exists, execution looks the value up). */
#ifndef KILN_BUILDER_TEMPLATE_H
#define KILN_BUILDER_TEMPLATE_H

#include <stdbool.h>

#include "buf.h"
#include "error.h"

enum kiln_ref_kind {
  KILN_REF_VARIABLE,
  KILN_REF_LOOP,
  KILN_REF_CHAIN,
};

struct kiln_ref {
  enum kiln_ref_kind kind;
  char name[256];   /* VARIABLE: the name; LOOP: "loop" or the loop's name; CHAIN: the phase */
  char step[256];   /* CHAIN */
  bool outputs;     /* CHAIN: outputs (true) or inputs (false) */
  long index;       /* CHAIN: [i] after inputs/outputs, -1 when absent */
  char field[256];  /* LOOP: "index" or "value"; CHAIN: the input or output name */
};

/* Parses the text between the braces (already trimmed).  On failure returns -1
 * with a message saying what is wrong with the expression. */
int kiln_ref_parse (const char *expr, struct kiln_ref *out, kiln_error **err);

/* Called for each expression; appends its value to out, or fails. */
typedef int (*kiln_ref_resolver) (void *opaque, const struct kiln_ref *ref, struct kiln_buf *out, kiln_error **err);

/* Expands text into out.  Errors name the expression ("unknown variable
 * 'X'", "unterminated '{{'"); callers add the position. */
int kiln_template_expand (const char *text, kiln_ref_resolver resolve, void *opaque, struct kiln_buf *out,
                          kiln_error **err);

bool kiln_template_has_expression (const char *text);

#endif
