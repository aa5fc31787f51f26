/* executor.h - runs validated component documents against a target, the way
 * `awstoe run` does: phases in document order, steps in order, with `if`,
 * loops, retries, timeouts, onFailure, chaining, reboots, and the TOE_ log
 * folder (console.log, application.log, detailedoutput.json, chaining.json,
 * document.yaml). */
#ifndef KILN_BUILDER_EXECUTOR_H
#define KILN_BUILDER_EXECUTOR_H

#include <signal.h>
#include <stdbool.h>
#include <stdio.h>

#include <jansson.h>

#include "component.h"
#include "error.h"
#include "target.h"

struct kiln_executor_opts {
  struct kiln_target *target;
  const char *phases;          /* comma-separated phase names; NULL: all */
  json_t *parameters;          /* object: name -> string, from the user, for every document */
  json_t *const *document_parameters; /* per document (n_docs entries), used instead of
                                         `parameters` when non-NULL (recipes give each
                                         component its own) */
  const char *log_directory;   /* parent of the TOE_ folder; NULL: "." */
  const char *state_directory; /* where a deferred reboot saves state; NULL: none */
  const char *execution_id;    /* NULL: a fresh random id */
  FILE *progress;              /* per-step progress lines; NULL: none */
  volatile sig_atomic_t *cancel;
};

enum kiln_run_status {
  KILN_RUN_SUCCESS,           /* every phase succeeded (ignored failures included) */
  KILN_RUN_FAILED,
  KILN_RUN_REBOOT_PENDING,    /* stopped for a reboot the target could not do; resumable */
  KILN_RUN_CANCELLED,
};

struct kiln_run_result {
  enum kiln_run_status status;
  char *run_directory;        /* the TOE_ folder */
  char *failure_message;      /* NULL on success */
  json_t *summary;            /* {executionId, status, executedStepCount, failedStepCount, ...} */
};

struct kiln_executor;

/* Runs the documents in order.  Returns 0 when the run happened (see
 * result->status), -1 when it could not start (bad parameters, unusable log
 * directory, state that does not match the documents). */
int kiln_executor_run (struct kiln_component *const *docs, size_t n_docs, const struct kiln_executor_opts *opts,
                       struct kiln_run_result *result, kiln_error **err);

void kiln_run_result_release (struct kiln_run_result *result);

/* For ExecuteDocument: runs a nested document within the current run.
 * `parameters` holds [{name, value}] (may be NULL); `phases` a comma list or
 * NULL.  Fills *summary (status and counts) and *detail (the nested
 * detailedoutput tree).  Returns 0 when the nested document succeeded, -1
 * with err describing its failure otherwise. */
int kiln_executor_run_nested (struct kiln_executor *ex, const struct kiln_component *parent, int parent_depth,
                              const char *document, const char *phases, json_t *parameters, json_t **summary,
                              json_t **detail, kiln_error **err);

const char *kiln_run_status_name (enum kiln_run_status s);

#endif
