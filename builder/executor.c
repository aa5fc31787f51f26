/* executor.c - running component documents (see executor.h).
 *
 * A run walks documents → phases (document order, filtered by --phases) →
 * steps.  For each step: the `if` decides Execute/Skip/Abort (once, even
 * across a reboot); each attempt runs every loop iteration under one deadline
 * (timeoutSeconds covers the whole step); inputs are expanded per iteration
 * with parameters, constants, the loop's index/value and chained values of
 * earlier steps.  onFailure decides what a failed step does to the run.
 *
 * Everything the run learns is written as it goes to the TOE_ folder, and
 * detailedoutput.json is rewritten atomically after every step, so a killed
 * run still leaves a truthful record.
 *
 * Reboots: a module that asks for one (ExecuteBash exit 194, Reboot) makes the
 * executor call the target's reboot.  A guest reboots and the run goes on
 * (an exit-194 step runs again; a Reboot step is done).  This host cannot
 * reboot under us, so the local target defers: the run's state is saved under
 * --state-directory and the run stops; the same command with the same
 * --execution-id resumes at the step that asked. */
#include "executor.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "action.h"
#include "buf.h"
#include "cleanup.h"
#include "condition.h"
#include "fsutil.h"
#include "log.h"
#include "template.h"
#include "xalloc.h"
#include "clock.h"

#define MAX_REBOOTS_PER_STEP 16
#define MAX_LOOP_ITERATIONS 100000

struct kiln_executor {
  const struct kiln_executor_opts *opts;
  char *execution_id;
  char *run_dir;
  FILE *console;
  FILE *app;
  json_t *top;          /* detailedoutput.json */
  json_t *chaining;     /* chaining.json: document path -> records */
  char *state_path;     /* state file for deferred reboots, or NULL */
  json_t *resume;       /* position to resume at, consumed as the run reaches it */
  bool stop;            /* a deferred reboot or a cancel stops everything */
  enum kiln_run_status stop_status;
  struct kiln_component *const *docs;
  size_t n_docs;
  /* Components loaded at run time by ExecuteDocument (templated paths). */
  struct kiln_component **loaded;
  size_t n_loaded;
};

struct doc_run {
  struct kiln_executor *ex;
  const struct kiln_component *c;
  json_t *values;   /* parameters and constants: name -> string */
  json_t *records;  /* phase -> step -> {inputs, outputs, skipped} */
  json_t *detail;   /* this document's detailedoutput object */
  int depth;
  size_t doc_index; /* index among the top-level documents; nested: parent's */
  bool nested;
  int executed, failed, ignored;
};

struct step_env {
  struct doc_run *dr;
  const struct kiln_step *step;
  size_t phase_index;
  bool in_loop;
  long loop_index;
  const char *loop_value;
};

enum step_status { STEP_SUCCESS, STEP_FAILED, STEP_SKIPPED, STEP_IGNORED, STEP_CANCELLED, STEP_SUSPENDED };

static const char *
step_status_name (enum step_status s)
{
  switch (s)
    {
    case STEP_SUCCESS:
      return "success";
    case STEP_FAILED:
      return "failed";
    case STEP_SKIPPED:
      return "skipped";
    case STEP_IGNORED:
      return "ignoredFailure";
    case STEP_CANCELLED:
      return "cancelled";
    case STEP_SUSPENDED:
      return "rebootPending";
    }
  return "failed";
}

const char *
kiln_run_status_name (enum kiln_run_status s)
{
  switch (s)
    {
    case KILN_RUN_SUCCESS:
      return "success";
    case KILN_RUN_FAILED:
      return "failed";
    case KILN_RUN_REBOOT_PENDING:
      return "rebootPending";
    case KILN_RUN_CANCELLED:
      return "cancelled";
    }
  return "failed";
}

/* ---- time and logs -------------------------------------------------------- */

/* RFC 3339 in UTC, as the logs of every run on every machine compare. */
static void
timestamp (char out[32])
{
  struct timespec ts;
  clock_gettime (CLOCK_REALTIME, &ts);
  struct tm tm;
  gmtime_r (&ts.tv_sec, &tm);
  strftime (out, 32, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static void app_log (struct kiln_executor *ex, const char *fmt, ...) __attribute__ ((format (printf, 2, 3)));

static void
app_log (struct kiln_executor *ex, const char *fmt, ...)
{
  if (ex->app == NULL)
    return;
  char ts[32];
  timestamp (ts);
  va_list ap;
  va_start (ap, fmt);
  fprintf (ex->app, "%s ", ts);
  vfprintf (ex->app, fmt, ap);
  fputc ('\n', ex->app);
  va_end (ap);
  fflush (ex->app);
}

static void
console_output (void *opaque, int stream, const char *data, size_t len)
{
  struct kiln_executor *ex = opaque;
  (void) stream;
  if (ex->console)
    {
      fwrite (data, 1, len, ex->console);
      fflush (ex->console);
    }
}

static void console_note (struct kiln_executor *ex, const char *fmt, ...) __attribute__ ((format (printf, 2, 3)));

static void
console_note (struct kiln_executor *ex, const char *fmt, ...)
{
  if (ex->console == NULL)
    return;
  va_list ap;
  va_start (ap, fmt);
  vfprintf (ex->console, fmt, ap);
  va_end (ap);
  fputc ('\n', ex->console);
  fflush (ex->console);
}

static void progress (struct kiln_executor *ex, const char *fmt, ...) __attribute__ ((format (printf, 2, 3)));

static void
progress (struct kiln_executor *ex, const char *fmt, ...)
{
  if (ex->opts->progress == NULL)
    return;
  va_list ap;
  va_start (ap, fmt);
  vfprintf (ex->opts->progress, fmt, ap);
  va_end (ap);
  fputc ('\n', ex->opts->progress);
  fflush (ex->opts->progress);
}

static void
write_json_file (struct kiln_executor *ex, const char *name, json_t *j)
{
  _cleanup_free_ char *path = NULL;
  path = kiln_xasprintf ("%s/%s", ex->run_dir, name);
  _cleanup_free_ char *text = json_dumps (j, JSON_INDENT (2) | JSON_PRESERVE_ORDER);
  _cleanup_error_ kiln_error *e = NULL;
  if (text == NULL || kiln_write_file_atomic (path, text, strlen (text), 0644, &e) < 0)
    kiln_log_warn ("write '%s': %s", path, kiln_error_message (e));
}

static void
save_logs (struct kiln_executor *ex)
{
  write_json_file (ex, "detailedoutput.json", ex->top);
  write_json_file (ex, "chaining.json", ex->chaining);
}

static bool
cancelled (struct kiln_executor *ex)
{
  return ex->opts->cancel && *ex->opts->cancel;
}

/* ---- expansion ------------------------------------------------------------ */

static int
append_json_value (struct kiln_buf *out, json_t *v)
{
  if (json_is_string (v))
    kiln_buf_puts (out, json_string_value (v));
  else if (!json_is_null (v))
    {
      _cleanup_free_ char *s = json_dumps (v, JSON_ENCODE_ANY | JSON_COMPACT);
      kiln_buf_puts (out, s ? s : "");
    }
  return 0;
}

static int
resolve_ref (void *opaque, const struct kiln_ref *ref, struct kiln_buf *out, kiln_error **err)
{
  struct step_env *env = opaque;
  switch (ref->kind)
    {
    case KILN_REF_VARIABLE:
      {
        json_t *v = json_object_get (env->dr->values, ref->name);
        if (v == NULL)
          return kiln_fail_invalid (err, "unknown variable '%s'", ref->name);
        return append_json_value (out, v);
      }
    case KILN_REF_LOOP:
      if (!env->in_loop)
        return kiln_fail_invalid (err, "'%s.%s' has no value outside the loop's iterations", ref->name, ref->field);
      if (strcmp (ref->field, "index") == 0)
        kiln_buf_printf (out, "%ld", env->loop_index);
      else
        kiln_buf_puts (out, env->loop_value);
      return 0;
    case KILN_REF_CHAIN:
      {
        json_t *rec = json_object_get (json_object_get (env->dr->records, ref->name), ref->step);
        if (rec == NULL)
          return kiln_fail_invalid (err, "step '%s.%s' has not run, so it has no %s", ref->name, ref->step,
                                    ref->outputs ? "outputs" : "inputs");
        if (json_is_true (json_object_get (rec, "skipped")))
          return 0; /* a skipped step counts as successful, with nothing to chain */
        json_t *src = json_object_get (rec, ref->outputs ? "outputs" : "inputs");
        if (json_is_array (src))
          src = json_array_get (src, ref->index < 0 ? 0 : (size_t) ref->index);
        json_t *v = json_object_get (src, ref->field);
        if (v == NULL)
          return kiln_fail_invalid (err, "step '%s.%s' has no %s '%s'", ref->name, ref->step,
                                    ref->outputs ? "output" : "input", ref->field);
        return append_json_value (out, v);
      }
    }
  return 0;
}

static int
expand_scalar (struct step_env *env, const struct kiln_yaml_node *n, char **out, kiln_error **err)
{
  struct kiln_buf b = KILN_BUF_INIT;
  _cleanup_error_ kiln_error *e = NULL;
  if (kiln_template_expand (n->value, resolve_ref, env, &b, &e) < 0)
    {
      kiln_buf_release (&b);
      return kiln_yaml_error (err, env->dr->c->doc, n, "%s", kiln_error_message (e));
    }
  *out = kiln_buf_steal (&b);
  return 0;
}

static int
expand_scalar_cb (void *opaque, const struct kiln_yaml_node *n, char **out, kiln_error **err)
{
  return expand_scalar (opaque, n, out, err);
}

static int
expand_node (struct step_env *env, const struct kiln_yaml_node *n, json_t **out, kiln_error **err)
{
  switch (n->kind)
    {
    case KILN_YAML_SCALAR:
      {
        if (kiln_yaml_is_null (n))
          {
            *out = json_null ();
            return 0;
          }
        _cleanup_free_ char *s = NULL;
        if (expand_scalar (env, n, &s, err) < 0)
          return -1;
        *out = json_string (s);
        if (*out == NULL) /* not UTF-8: keep the bytes visible rather than fail */
          *out = json_stringn_nocheck (s, strlen (s));
        return 0;
      }
    case KILN_YAML_SEQUENCE:
      {
        json_t *a = json_array ();
        for (size_t i = 0; i < n->n_items; i++)
          {
            json_t *item = NULL;
            if (expand_node (env, n->items[i], &item, err) < 0)
              {
                json_decref (a);
                return -1;
              }
            json_array_append_new (a, item);
          }
        *out = a;
        return 0;
      }
    case KILN_YAML_MAPPING:
      {
        json_t *o = json_object ();
        for (size_t i = 0; i < n->n_pairs; i++)
          {
            json_t *v = NULL;
            if (expand_node (env, n->pairs[i].value, &v, err) < 0)
              {
                json_decref (o);
                return -1;
              }
            json_object_set_new (o, n->pairs[i].key->value, v);
          }
        *out = o;
        return 0;
      }
    }
  return 0;
}

/* ---- loops ---------------------------------------------------------------- */

static int
loop_values (struct step_env *env, json_t **out, kiln_error **err)
{
  const struct kiln_loop *l = env->step->loop;
  _cleanup_json_ json_t *values = json_array ();
  if (l->kind == KILN_LOOP_FOR)
    {
      long start, end, by;
      kiln_yaml_as_long (l->start, &start);
      kiln_yaml_as_long (l->end, &end);
      kiln_yaml_as_long (l->update_by, &by);
      for (long v = start; by > 0 ? v <= end : v >= end; v += by)
        {
          if (json_array_size (values) >= MAX_LOOP_ITERATIONS)
            return kiln_yaml_error (err, env->dr->c->doc, l->node, "loop has more than %d iterations",
                                    MAX_LOOP_ITERATIONS);
          char num[32];
          snprintf (num, sizeof num, "%ld", v);
          json_array_append_new (values, json_string (num));
        }
    }
  else if (l->values)
    {
      for (size_t i = 0; i < l->values->n_items; i++)
        {
          _cleanup_free_ char *s = NULL;
          if (expand_scalar (env, l->values->items[i], &s, err) < 0)
            return -1;
          json_array_append_new (values, json_string (s));
        }
    }
  else
    {
      _cleanup_free_ char *list = NULL;
      if (expand_scalar (env, l->list, &list, err) < 0)
        return -1;
      char delim = l->delimiter ? l->delimiter->value[0] : ',';
      /* Empty tokens are kept ("a,,b" is three values), as a plain split does. */
      const char *p = list;
      for (;;)
        {
          const char *q = strchr (p, delim);
          size_t n = q ? (size_t) (q - p) : strlen (p);
          json_array_append_new (values, json_stringn (p, n));
          if (q == NULL)
            break;
          p = q + 1;
        }
      if (list[0] == '\0')
        json_array_clear (values);
    }
  *out = kiln_steal_pointer (&values);
  return 0;
}

/* ---- state for deferred reboots -------------------------------------------- */

static int
save_state (struct kiln_executor *ex, json_t *position, kiln_error **err)
{
  if (ex->state_path == NULL)
    return kiln_error_set (err, KILN_ERR_UNSUPPORTED, 0,
                           "a reboot was requested but this host cannot reboot under kiln and no --state-directory "
                           "was given to save the run's state");
  _cleanup_json_ json_t *docs = json_array ();
  for (size_t i = 0; i < ex->n_docs; i++)
    json_array_append_new (docs, json_pack ("{s:s, s:s}", "path", ex->docs[i]->path, "sha256", ex->docs[i]->sha256));
  _cleanup_json_ json_t *state = json_pack ("{s:s, s:s, s:O, s:s?, s:O, s:O, s:O, s:O}", "executionId",
                                            ex->execution_id, "runDirectory", ex->run_dir, "documents", docs, "phases",
                                            ex->opts->phases, "parameters",
                                            ex->opts->parameters ? ex->opts->parameters : json_object (), "position",
                                            position, "detail", ex->top, "chaining", ex->chaining);
  _cleanup_free_ char *text = json_dumps (state, JSON_INDENT (2) | JSON_PRESERVE_ORDER);
  if (kiln_write_file_atomic (ex->state_path, text, strlen (text), 0600, err) < 0)
    return kiln_error_prefix (err, "save the run's state");
  return 0;
}

/* ---- actions -------------------------------------------------------------- */

struct attempt_outcome {
  bool ok;
  bool reboot;
  int reboot_delay;
  int exit_code;
  json_t *outputs;
  json_t *detail;
  char *failure;
};

static void
run_action (struct step_env *env, json_t *inputs, int timeout_seconds, struct attempt_outcome *o)
{
  struct kiln_executor *ex = env->dr->ex;
  struct kiln_action_ctx ctx = {
    .target = ex->opts->target,
    .executor = ex,
    .component = env->dr->c,
    .step = env->step,
    .inputs = inputs,
    .outputs = json_object (),
    .timeout_seconds = timeout_seconds,
    .exit_code = -1,
    .output = console_output,
    .output_opaque = ex,
    .cancel = ex->opts->cancel,
    .expand = expand_scalar_cb,
    .expand_opaque = env,
    .depth = env->dr->depth,
  };
  _cleanup_error_ kiln_error *e = NULL;
  int r = env->step->action->run (&ctx, &e);
  o->ok = r == 0;
  o->reboot = ctx.reboot_requested;
  o->reboot_delay = ctx.reboot_delay_seconds;
  o->exit_code = ctx.exit_code;
  o->outputs = ctx.outputs;
  o->detail = ctx.detail;
  if (r < 0)
    o->failure = kiln_xstrdup (kiln_error_message (e));
}

/* Merges an iteration's outputs: values of successful iterations are joined
 * with "\n", as AWSTOE reports a looped step's outputs. */
static void
merge_outputs (json_t *merged, json_t *iteration)
{
  const char *key;
  json_t *v;
  json_object_foreach (iteration, key, v)
  {
    json_t *prev = json_object_get (merged, key);
    if (prev && json_is_string (prev) && json_is_string (v))
      {
        struct kiln_buf b = KILN_BUF_INIT;
        kiln_buf_printf (&b, "%s\n%s", json_string_value (prev), json_string_value (v));
        json_object_set_new (merged, key, json_string (kiln_buf_str (&b)));
        kiln_buf_release (&b);
      }
    else
      json_object_set (merged, key, v);
  }
}

/* Reboots the target for a step; returns 0 when the run may go on here, 1
 * when the reboot was deferred (state saved, run stops), -1 on failure. */
static int
reboot_target (struct step_env *env, int delay, json_t *position, kiln_error **err)
{
  struct kiln_executor *ex = env->dr->ex;
  if (delay > 0)
    {
      console_note (ex, "Reboot: waiting %d s before rebooting", delay);
      for (int i = 0; i < delay * 10 && !cancelled (ex); i++)
        usleep (100000);
    }
  enum kiln_reboot_outcome outcome;
  if (kiln_target_reboot (ex->opts->target, &outcome, err) < 0)
    return -1;
  if (outcome == KILN_REBOOT_DONE)
    {
      app_log (ex, "target rebooted for step '%s'", env->step->name);
      console_note (ex, "Reboot: the target rebooted");
      return 0;
    }
  if (env->dr->nested)
    return kiln_error_set (err, KILN_ERR_UNSUPPORTED, 0,
                           "step '%s' asked for a reboot inside ExecuteDocument, which cannot be resumed on a target "
                           "that reboots outside kiln (this host)",
                           env->step->name);
  if (save_state (ex, position, err) < 0)
    return -1;
  app_log (ex, "reboot deferred for step '%s': state saved in %s", env->step->name, ex->state_path);
  return 1;
}

/* ---- steps ---------------------------------------------------------------- */

struct step_report {
  enum step_status status;
  char *failure;
  int attempts;
  int exit_code;
  json_t *inputs;   /* array: expanded inputs per iteration (or the one entry list) */
  json_t *outputs;  /* object */
  json_t *detail;   /* ExecuteDocument's nested tree, or NULL */
};

static void
set_failure (struct step_report *rep, const char *fmt, ...) __attribute__ ((format (printf, 2, 3)));

static void
set_failure (struct step_report *rep, const char *fmt, ...)
{
  free (rep->failure);
  va_list ap;
  va_start (ap, fmt);
  rep->failure = kiln_xvasprintf (fmt, ap);
  va_end (ap);
}

/* One attempt of a step: every iteration, under one deadline.  `first` is the
 * iteration to start at (non-zero after a resumed reboot). */
static void
run_attempt (struct step_env *env, json_t *values, size_t first, int attempt, struct step_report *rep,
             json_t *merged, json_t **last_inputs)
{
  struct kiln_executor *ex = env->dr->ex;
  const struct kiln_step *s = env->step;
  double deadline = s->timeout_seconds > 0 ? kiln_monotonic_seconds () + s->timeout_seconds : 0;
  size_t n_iter = values ? json_array_size (values) : 1;
  _cleanup_json_ json_t *failed_iterations = json_array ();
  int reboots = 0;

  for (size_t i = first; i < n_iter; i++)
    {
      if (values)
        {
          env->in_loop = true;
          env->loop_index = (long) i;
          env->loop_value = json_string_value (json_array_get (values, i));
        }
      _cleanup_error_ kiln_error *e = NULL;
      json_t *inputs = NULL;
      if (s->inputs && expand_node (env, s->inputs, &inputs, &e) < 0)
        {
          set_failure (rep, "%s", kiln_error_message (e));
          rep->status = STEP_FAILED;
          return;
        }
      if (inputs == NULL)
        inputs = json_object ();
      json_array_append (rep->inputs, inputs);
      json_decref (*last_inputs);
      *last_inputs = inputs;

      int timeout = -1;
      if (deadline > 0)
        {
          double left = deadline - kiln_monotonic_seconds ();
          if (left <= 0)
            {
              set_failure (rep, "step timed out after %d s%s", s->timeout_seconds, values ? " (loop run)" : "");
              rep->status = STEP_FAILED;
              return;
            }
          timeout = (int) (left + 0.999);
        }
      {
        _cleanup_free_ char *shown = json_dumps (inputs, JSON_COMPACT | JSON_PRESERVE_ORDER);
        app_log (ex, "step '%s' attempt %d%s%s: inputs %s", s->name, attempt, values ? " iteration " : "",
                 values ? env->loop_value : "", shown ? shown : "");
      }
      struct attempt_outcome o = {0};
      run_action (env, inputs, timeout, &o);
      rep->exit_code = o.exit_code;
      if (o.detail)
        {
          if (rep->detail == NULL)
            rep->detail = json_array ();
          json_array_append_new (rep->detail, o.detail);
        }
      if (cancelled (ex))
        {
          json_decref (o.outputs);
          free (o.failure);
          rep->status = STEP_CANCELLED;
          set_failure (rep, "cancelled");
          return;
        }
      if (!o.ok)
        {
          json_decref (o.outputs);
          if (values)
            {
              json_array_append_new (failed_iterations, json_integer ((json_int_t) i));
              set_failure (rep, "loop iteration %zu failed: %s", i, o.failure ? o.failure : "failed");
            }
          else
            set_failure (rep, "%s", o.failure ? o.failure : "failed");
          free (o.failure);
          if (deadline > 0 && kiln_monotonic_seconds () >= deadline && values)
            set_failure (rep, "step timed out after %d s (loop run)", s->timeout_seconds);
          rep->status = STEP_FAILED;
          return;
        }
      if (o.reboot)
        {
          bool rerun = strcmp (s->action->name, "Reboot") != 0;
          json_t *partial = json_deep_copy (merged);
          merge_outputs (partial, o.outputs);
          json_t *position = json_pack ("{s:I, s:s, s:s, s:I, s:b, s:O, s:o, s:[i,i,i]}", "document",
                                        (json_int_t) env->dr->doc_index, "phase",
                                        env->dr->c->phases[env->phase_index].name, "step", s->name, "iteration",
                                        (json_int_t) i, "rerun", rerun, "records", env->dr->records, "outputs",
                                        rerun ? json_deep_copy (merged) : partial, "counts", env->dr->executed,
                                        env->dr->failed, env->dr->ignored);
          if (rerun)
            json_decref (partial);
          if (++reboots > MAX_REBOOTS_PER_STEP)
            {
              json_decref (position);
              json_decref (o.outputs);
              set_failure (rep, "step asked for a reboot more than %d times", MAX_REBOOTS_PER_STEP);
              rep->status = STEP_FAILED;
              return;
            }
          progress (ex, "  %s: reboot requested%s", s->name, rerun ? " (exit code 194): the step runs again after it" : "");
          int r = reboot_target (env, o.reboot_delay, position, &e);
          json_decref (position);
          if (r < 0)
            {
              json_decref (o.outputs);
              set_failure (rep, "reboot: %s", kiln_error_message (e));
              rep->status = STEP_FAILED;
              return;
            }
          if (r == 1)
            {
              json_decref (o.outputs);
              rep->status = STEP_SUSPENDED;
              ex->stop = true;
              ex->stop_status = KILN_RUN_REBOOT_PENDING;
              return;
            }
          if (rerun)
            {
              json_decref (o.outputs);
              i--; /* the same iteration runs again after the reboot */
              continue;
            }
        }
      merge_outputs (merged, o.outputs);
      json_decref (o.outputs);
    }
  rep->status = STEP_SUCCESS;
}

static enum kiln_step_choice
decide (const struct kiln_step *s, bool value)
{
  enum kiln_step_choice c = value ? s->then_choice : s->else_choice;
  if (c == KILN_CHOICE_DEFAULT)
    c = value ? KILN_CHOICE_EXECUTE : KILN_CHOICE_SKIP;
  return c;
}

static const char *
choice_name (enum kiln_step_choice c)
{
  return c == KILN_CHOICE_SKIP ? "Skip" : c == KILN_CHOICE_ABORT ? "Abort" : "Execute";
}

static void
run_step (struct step_env *env, json_t *resume_pos, struct step_report *rep)
{
  struct kiln_executor *ex = env->dr->ex;
  const struct kiln_step *s = env->step;
  _cleanup_json_ json_t *values = NULL;
  _cleanup_json_ json_t *last_inputs = NULL;
  rep->inputs = json_array ();
  rep->outputs = json_object ();
  rep->exit_code = -1;

  /* A step resumed after a deferred reboot already passed its `if`. */
  if (s->condition && resume_pos == NULL)
    {
      struct kiln_condition_env cenv = {.target = ex->opts->target, .expand = expand_scalar_cb, .opaque = env};
      bool value;
      _cleanup_error_ kiln_error *e = NULL;
      if (kiln_condition_eval (s->condition, &cenv, &value, &e) < 0)
        {
          set_failure (rep, "if: %s", kiln_error_message (e));
          rep->status = STEP_FAILED;
          goto failed;
        }
      enum kiln_step_choice choice = decide (s, value);
      app_log (ex, "step '%s': if is %s: %s", s->name, value ? "true" : "false", choice_name (choice));
      if (choice == KILN_CHOICE_SKIP)
        {
          rep->status = STEP_SKIPPED;
          return;
        }
      if (choice == KILN_CHOICE_ABORT)
        {
          set_failure (rep, "the step's if condition is %s and chose Abort", value ? "true" : "false");
          rep->status = STEP_FAILED;
          goto failed;
        }
    }

  if (s->loop)
    {
      _cleanup_error_ kiln_error *e = NULL;
      if (loop_values (env, &values, &e) < 0)
        {
          set_failure (rep, "loop: %s", kiln_error_message (e));
          rep->status = STEP_FAILED;
          goto failed;
        }
    }

  size_t first = 0;
  for (int attempt = 1; attempt <= s->max_attempts; attempt++)
    {
      json_t *merged = json_object ();
      if (resume_pos)
        {
          first = (size_t) json_integer_value (json_object_get (resume_pos, "iteration"));
          json_t *prev = json_object_get (resume_pos, "outputs");
          if (prev)
            json_object_update (merged, prev);
          if (!json_is_true (json_object_get (resume_pos, "rerun")))
            first++; /* the Reboot step that asked is done */
          resume_pos = NULL;
        }
      json_array_clear (rep->inputs);
      rep->attempts = attempt;
      double t0 = kiln_monotonic_seconds ();
      run_attempt (env, values, first, attempt, rep, merged, &last_inputs);
      first = 0;
      progress (ex, "  %s/%s (%s) attempt %d/%d: %s (%.2f s)%s%s", env->dr->c->phases[env->phase_index].name,
                s->name, s->action->name, attempt, s->max_attempts, step_status_name (rep->status),
                kiln_monotonic_seconds () - t0, rep->status == STEP_FAILED ? ": " : "",
                rep->status == STEP_FAILED && rep->failure ? rep->failure : "");
      if (rep->status == STEP_SUCCESS)
        {
          /* Earlier attempts' failures are history, not the step's outcome. */
          free (rep->failure);
          rep->failure = NULL;
          json_decref (rep->outputs);
          rep->outputs = merged;
          break;
        }
      json_decref (merged);
      if (rep->status != STEP_FAILED || ex->stop)
        break;
    }

  if (rep->status == STEP_SUSPENDED || rep->status == STEP_CANCELLED)
    return;
  if (rep->status == STEP_SUCCESS)
    {
      /* Chaining sees the last iteration's inputs and the merged outputs. */
      json_t *rec = json_object_get (env->dr->records, env->dr->c->phases[env->phase_index].name);
      json_object_set_new (rec, s->name,
                           json_pack ("{s:O, s:O, s:b}", "inputs", last_inputs ? last_inputs : json_null (), "outputs",
                                      rep->outputs, "skipped", 0));
      return;
    }
failed:
  if (s->on_failure == KILN_ON_FAILURE_IGNORE)
    rep->status = STEP_IGNORED;
}

static json_t *
step_detail (const struct kiln_step *s, const struct step_report *rep, const char *start, const char *end)
{
  _cleanup_free_ char *inputs = json_dumps (rep->inputs, JSON_COMPACT | JSON_PRESERVE_ORDER);
  json_t *outs = json_array ();
  if (json_object_size (rep->outputs))
    json_array_append (outs, rep->outputs);
  _cleanup_free_ char *outputs = json_dumps (outs, JSON_COMPACT | JSON_PRESERVE_ORDER);
  json_decref (outs);
  json_t *loop = json_null ();
  if (s->loop)
    loop = json_pack ("{s:s?, s:s}", "name", s->loop->name,
                      "kind", s->loop->kind == KILN_LOOP_FOR ? "for" : "forEach");
  return json_pack ("{s:s, s:s, s:s, s:s, s:i, s:s, s:i, s:i, s:i, s:s, s:s, s:s, s:s, s:o, s:O?}", "name", s->name,
                    "action", s->action->name, "status", step_status_name (rep->status), "failureMessage",
                    rep->failure ? rep->failure : "", "timeoutSeconds", s->timeout_seconds, "onFailure",
                    kiln_on_failure_name (s->on_failure), "maxAttempts", s->max_attempts, "attempts", rep->attempts,
                    "exitCode", rep->exit_code, "startTime", start, "endTime", end, "inputs", inputs ? inputs : "[]",
                    "outputs", outputs ? outputs : "[]", "loop", loop, "detailedOutput", rep->detail);
}

/* ---- phases and documents ------------------------------------------------ */

static bool
phase_selected (const char *filter, const char *name)
{
  if (filter == NULL || *filter == '\0')
    return true;
  size_t n = strlen (name);
  for (const char *p = filter; *p;)
    {
      while (*p == ' ' || *p == ',')
        p++;
      const char *q = p;
      while (*q && *q != ',')
        q++;
      const char *e = q;
      while (e > p && e[-1] == ' ')
        e--;
      if ((size_t) (e - p) == n && strncmp (p, name, n) == 0)
        return true;
      p = q;
    }
  return false;
}

/* Runs the selected phases of one document.  Returns false when the run must
 * stop (Abort, cancel, suspended reboot). */
static bool
run_document (struct doc_run *dr, const char *phases, json_t *resume_pos)
{
  struct kiln_executor *ex = dr->ex;
  const struct kiln_component *c = dr->c;
  bool failed = false, ignored = false, go_on = true;
  json_t *phases_json = json_object_get (dr->detail, "phases");
  char ts[32];

  for (size_t pi = 0; pi < c->n_phases && go_on; pi++)
    {
      const struct kiln_phase *ph = &c->phases[pi];
      if (!phase_selected (phases, ph->name))
        continue;
      if (json_object_get (dr->records, ph->name) == NULL)
        json_object_set_new (dr->records, ph->name, json_object ());
      const char *resume_phase = resume_pos ? json_string_value (json_object_get (resume_pos, "phase")) : NULL;
      if (resume_phase && strcmp (resume_phase, ph->name) != 0)
        continue; /* done before the reboot */

      json_t *phase_json;
      if (resume_phase)
        phase_json = json_array_get (phases_json, json_array_size (phases_json) - 1);
      else
        {
          timestamp (ts);
          phase_json = json_pack ("{s:s, s:s, s:s, s:s, s:s, s:[]}", "name", ph->name, "status", "running",
                                  "startTime", ts, "endTime", "", "failureMessage", "", "steps");
          json_array_append_new (phases_json, phase_json);
        }
      json_t *steps_json = json_object_get (phase_json, "steps");
      bool phase_failed = json_is_string (json_object_get (phase_json, "status"))
                          && strcmp (json_string_value (json_object_get (phase_json, "status")), "failed") == 0;
      bool phase_ignored = false;
      const char *phase_failure = NULL;
      progress (ex, "%s: phase %s", c->path, ph->name);
      console_note (ex, "Phase: %s (document %s)", ph->name, c->path);

      for (size_t si = 0; si < ph->n_steps; si++)
        {
          const struct kiln_step *s = &ph->steps[si];
          json_t *step_resume = NULL;
          if (resume_pos)
            {
              if (strcmp (json_string_value (json_object_get (resume_pos, "step")), s->name) != 0)
                continue;
              step_resume = resume_pos;
              resume_pos = NULL;
              resume_phase = NULL;
            }
          if (cancelled (ex))
            {
              ex->stop = true;
              ex->stop_status = KILN_RUN_CANCELLED;
              go_on = false;
              break;
            }
          char start[32], end[32];
          timestamp (start);
          console_note (ex, "Step: %s (%s)", s->name, s->action->name);
          struct step_env env = {.dr = dr, .step = s, .phase_index = pi};
          struct step_report rep = {0};
          run_step (&env, step_resume, &rep);
          timestamp (end);
          if (rep.status == STEP_SUSPENDED)
            {
              json_decref (rep.inputs);
              json_decref (rep.outputs);
              free (rep.failure);
              go_on = false;
              break;
            }
          json_array_append_new (steps_json, step_detail (s, &rep, start, end));
          if (rep.status == STEP_SKIPPED)
            json_object_set_new (json_object_get (dr->records, ph->name), s->name,
                                 json_pack ("{s:{}, s:{}, s:b}", "inputs", "outputs", "skipped", 1));
          if (rep.status != STEP_SKIPPED)
            dr->executed++;
          console_note (ex, "Step: %s finished: %s%s%s", s->name, step_status_name (rep.status),
                        rep.failure ? ": " : "", rep.failure ? rep.failure : "");
          if (rep.status == STEP_FAILED || rep.status == STEP_CANCELLED)
            {
              dr->failed++;
              phase_failed = true;
              phase_failure = json_string_value (json_object_get (json_array_get (steps_json,
                                                                                  json_array_size (steps_json) - 1),
                                                                  "failureMessage"));
              json_object_set_new (phase_json, "failureMessage",
                                   json_sprintf ("step '%s' failed: %s", s->name, phase_failure));
              if (rep.status == STEP_CANCELLED)
                {
                  ex->stop = true;
                  ex->stop_status = KILN_RUN_CANCELLED;
                }
              if (s->on_failure == KILN_ON_FAILURE_ABORT || rep.status == STEP_CANCELLED)
                go_on = false;
            }
          else if (rep.status == STEP_IGNORED)
            {
              dr->ignored++;
              phase_ignored = true;
            }
          json_decref (rep.inputs);
          json_decref (rep.outputs);
          json_decref (rep.detail);
          free (rep.failure);
          write_json_file (ex, "detailedoutput.json", ex->top);
          write_json_file (ex, "chaining.json", ex->chaining);
          if (!go_on)
            break;
        }
      if (ex->stop && ex->stop_status == KILN_RUN_REBOOT_PENDING)
        break;
      timestamp (ts);
      json_object_set_new (phase_json, "endTime", json_string (ts));
      json_object_set_new (phase_json, "status",
                           json_string (phase_failed    ? (ex->stop_status == KILN_RUN_CANCELLED && ex->stop ? "cancelled" : "failed")
                                        : phase_ignored ? "successWithIgnoredFailure"
                                                        : "success"));
      failed |= phase_failed;
      ignored |= phase_ignored;
    }

  if (!(ex->stop && ex->stop_status == KILN_RUN_REBOOT_PENDING))
    {
      timestamp (ts);
      json_object_set_new (dr->detail, "endTime", json_string (ts));
      json_object_set_new (dr->detail, "status",
                           json_string (failed ? (ex->stop && ex->stop_status == KILN_RUN_CANCELLED ? "cancelled" : "failed")
                                        : ignored ? "successWithIgnoredFailure"
                                                  : "success"));
      if (failed)
        {
          /* The document's failure is its first failed phase's. */
          size_t i;
          json_t *p;
          json_array_foreach (phases_json, i, p)
            {
              const char *m = json_string_value (json_object_get (p, "failureMessage"));
              if (m && *m)
                {
                  json_object_set_new (dr->detail, "failureMessage",
                                       json_sprintf ("phase '%s': %s",
                                                     json_string_value (json_object_get (p, "name")), m));
                  break;
                }
            }
        }
    }
  json_object_set_new (dr->detail, "executedStepCount", json_integer (dr->executed));
  json_object_set_new (dr->detail, "failedStepCount", json_integer (dr->failed));
  json_object_set_new (dr->detail, "ignoredFailedStepCount", json_integer (dr->ignored));
  return go_on && !ex->stop;
}

/* Parameter values for a document: user values over defaults, constants
 * last (they cannot be overridden).  A required parameter without a value is
 * an error. */
static int
document_values (const struct kiln_component *c, json_t *given, json_t **out, kiln_error **err)
{
  _cleanup_json_ json_t *values = json_object ();
  for (size_t i = 0; i < c->n_variables; i++)
    {
      const struct kiln_variable *v = &c->variables[i];
      json_t *g = v->constant ? NULL : json_object_get (given, v->name);
      if (g)
        json_object_set (values, v->name, g);
      else if (v->value)
        json_object_set_new (values, v->name, json_string (v->value));
      else
        return kiln_yaml_error (err, c->doc, v->node,
                                "parameter '%s' has no default and no value was given (--parameters %s=...)", v->name,
                                v->name);
    }
  *out = kiln_steal_pointer (&values);
  return 0;
}

static json_t *
new_document_detail (const struct kiln_component *c)
{
  char ts[32];
  timestamp (ts);
  return json_pack ("{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:[]}", "name", c->name ? c->name : "", "filePath",
                    c->path, "description", c->description ? c->description : "", "sha256", c->sha256, "status",
                    "running", "startTime", ts, "endTime", "", "failureMessage", "", "phases");
}

int
kiln_executor_run_nested (struct kiln_executor *ex, const struct kiln_component *parent, int parent_depth,
                          const char *document, const char *phases, json_t *parameters, json_t **summary,
                          json_t **detail, kiln_error **err)
{
  /* Resolve the reference the way validation did: relative to the parent. */
  _cleanup_free_ char *joined = NULL;
  if (document[0] == '/')
    joined = kiln_xstrdup (document);
  else
    {
      const char *slash = strrchr (parent->path, '/');
      if (slash)
        {
          joined = kiln_xasprintf ("%.*s/%s", (int) (slash - parent->path), parent->path, document);
        }
      else
        joined = kiln_xstrdup (document);
    }
  if (strstr (document, "://") || strncmp (document, "arn:", 4) == 0)
    return kiln_fail_invalid (err, "document '%s': only local document paths are supported by ExecuteDocument",
                              document);
  _cleanup_free_ char *real = realpath (joined, NULL);
  if (real == NULL)
    return kiln_fail_errno (err, errno, "document '%s'", joined);
  if (parent_depth >= KILN_DOCUMENT_MAX_DEPTH)
    return kiln_fail_invalid (err, "ExecuteDocument nests documents deeper than %d levels",
                              KILN_DOCUMENT_MAX_DEPTH - 1);
  _cleanup_free_ char *parent_real = realpath (parent->path, NULL);
  if (parent_real && strcmp (parent_real, real) == 0)
    return kiln_fail_invalid (err, "ExecuteDocument cycle: '%s' executes itself", document);

  const struct kiln_component *child = kiln_component_child_for (parent, real);
  if (child == NULL)
    {
      /* A path known only at run time: load and validate it now. */
      struct kiln_component_load_opts lo = {.depth = parent_depth + 1};
      struct kiln_component *loaded = NULL;
      if (kiln_component_load (real, &lo, &loaded, err) < 0)
        return kiln_error_prefix (err, "document '%s'", document);
      ex->loaded = realloc (ex->loaded, (ex->n_loaded + 1) * sizeof *ex->loaded);
      if (ex->loaded == NULL)
        abort ();
      ex->loaded[ex->n_loaded++] = loaded;
      child = loaded;
    }

  _cleanup_json_ json_t *given = json_object ();
  size_t i;
  json_t *p;
  json_array_foreach (parameters, i, p)
    {
      const char *name = json_string_value (json_object_get (p, "name"));
      json_t *value = json_object_get (p, "value");
      if (name && value)
        json_object_set (given, name, value);
    }
  struct doc_run dr = {.ex = ex, .c = child, .depth = parent_depth + 1, .nested = true};
  if (document_values (child, given, &dr.values, err) < 0)
    return -1;
  dr.records = json_object ();
  dr.detail = new_document_detail (child);
  console_note (ex, "ExecuteDocument: running %s", child->path);
  run_document (&dr, phases, NULL);
  json_t *status = json_object_get (dr.detail, "status");
  const char *st = json_string_value (status);
  *summary = json_pack ("{s:i, s:s, s:i, s:s, s:i, s:s, s:s}", "executedStepCount", dr.executed, "executionId",
                        ex->execution_id, "failedStepCount", dr.failed, "failureMessage",
                        json_string_value (json_object_get (dr.detail, "failureMessage")) ?: "",
                        "ignoredFailedStepCount", dr.ignored, "logUrl", "", "status", st ? st : "failed");
  *detail = json_pack ("{s:s, s:s, s:[O]}", "executionId", ex->execution_id, "status", st ? st : "failed",
                       "documents", dr.detail);
  bool ok = st && (strcmp (st, "success") == 0 || strcmp (st, "successWithIgnoredFailure") == 0);
  _cleanup_free_ char *why = ok ? NULL : kiln_xstrdup (json_string_value (json_object_get (dr.detail, "failureMessage")) ?: "failed");
  json_decref (dr.values);
  json_decref (dr.records);
  json_decref (dr.detail);
  if (!ok)
    return kiln_fail (err, "document '%s' failed: %s", document, why);
  return 0;
}

/* ---- the run --------------------------------------------------------------- */

static char *
new_execution_id (void)
{
  unsigned char b[16];
  int fd = open ("/dev/urandom", O_RDONLY | O_CLOEXEC);
  if (fd < 0 || read (fd, b, sizeof b) != (ssize_t) sizeof b)
    {
      for (size_t i = 0; i < sizeof b; i++)
        b[i] = (unsigned char) (rand () ^ getpid () ^ time (NULL));
    }
  if (fd >= 0)
    close (fd);
  b[6] = (unsigned char) ((b[6] & 0x0f) | 0x40);
  b[8] = (unsigned char) ((b[8] & 0x3f) | 0x80);
  char *id = NULL;
  id = kiln_xasprintf ("%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0], b[1], b[2], b[3],
                       b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]);
  return id;
}

static bool
valid_execution_id (const char *id)
{
  if (*id == '\0' || strlen (id) > 128)
    return false;
  for (const char *p = id; *p; p++)
    if (!(isalnum ((unsigned char) *p) || *p == '-' || *p == '_' || *p == '.') || (p == id && *p == '.'))
      return false;
  return true;
}

static int
open_logs (struct kiln_executor *ex, const char *existing_dir, kiln_error **err)
{
  if (existing_dir)
    ex->run_dir = kiln_xstrdup (existing_dir);
  else
    {
      const char *base = ex->opts->log_directory ? ex->opts->log_directory : ".";
      if (kiln_mkdir_p (base, 0755, err) < 0)
        return kiln_error_prefix (err, "log directory");
      char stamp[32];
      time_t t = time (NULL);
      struct tm tm;
      gmtime_r (&t, &tm);
      strftime (stamp, sizeof stamp, "%Y-%m-%d_%H-%M-%S", &tm);
      ex->run_dir = kiln_xasprintf ("%s/TOE_%s_UTC-0_%s", base, stamp, ex->execution_id);
      if (mkdir (ex->run_dir, 0755) < 0)
        return kiln_fail_errno (err, errno, "create log folder '%s'", ex->run_dir);
    }
  _cleanup_free_ char *console = NULL, *app = NULL;
  console = kiln_xasprintf ("%s/console.log", ex->run_dir);
  app = kiln_xasprintf ("%s/application.log", ex->run_dir);
  ex->console = fopen (console, "ae");
  if (ex->console == NULL)
    return kiln_fail_errno (err, errno, "open '%s'", console);
  ex->app = fopen (app, "ae");
  if (ex->app == NULL)
    return kiln_fail_errno (err, errno, "open '%s'", app);
  return 0;
}

static int
write_documents (struct kiln_executor *ex, kiln_error **err)
{
  struct kiln_buf b = KILN_BUF_INIT;
  for (size_t i = 0; i < ex->n_docs; i++)
    {
      if (i > 0)
        kiln_buf_puts (&b, "\n---\n");
      kiln_buf_append (&b, ex->docs[i]->text, ex->docs[i]->text_len);
    }
  _cleanup_free_ char *path = NULL;
  path = kiln_xasprintf ("%s/document.yaml", ex->run_dir);
  int r = kiln_write_file_atomic (path, kiln_buf_str (&b), b.len, 0644, err);
  kiln_buf_release (&b);
  return r;
}

/* Loads the saved state of a run suspended for a reboot, checking that it is
 * the same run: same documents (by content), same phases. */
static int
load_resume (struct kiln_executor *ex, json_t **out, kiln_error **err)
{
  *out = NULL;
  if (ex->state_path == NULL || access (ex->state_path, F_OK) < 0)
    return 0;
  json_error_t je;
  json_t *state = json_load_file (ex->state_path, 0, &je);
  if (state == NULL)
    return kiln_fail_invalid (err, "state file '%s' is unreadable: %s (line %d)", ex->state_path, je.text, je.line);
  json_t *docs = json_object_get (state, "documents");
  bool same = json_array_size (docs) == ex->n_docs;
  for (size_t i = 0; same && i < ex->n_docs; i++)
    {
      const char *sha = json_string_value (json_object_get (json_array_get (docs, i), "sha256"));
      same = sha && strcmp (sha, ex->docs[i]->sha256) == 0;
    }
  if (!same)
    {
      json_decref (state);
      return kiln_fail_invalid (err,
                                "execution '%s' was suspended for a reboot with other documents (state in '%s'): "
                                "run it with the same documents, or use another --execution-id",
                                ex->execution_id, ex->state_path);
    }
  *out = state;
  return 0;
}

int
kiln_executor_run (struct kiln_component *const *docs, size_t n_docs, const struct kiln_executor_opts *opts,
                   struct kiln_run_result *result, kiln_error **err)
{
  memset (result, 0, sizeof *result);
  struct kiln_executor ex = {.opts = opts, .docs = docs, .n_docs = n_docs};
  int rc = -1;
  _cleanup_json_ json_t *state = NULL;
  json_t **values = calloc (n_docs + 1, sizeof *values);
  if (values == NULL)
    abort ();

  if (opts->execution_id && !valid_execution_id (opts->execution_id))
    {
      kiln_fail_invalid (err, "execution id '%s' must be letters, digits, '-', '_' or '.'", opts->execution_id);
      goto out;
    }
  ex.execution_id = opts->execution_id ? kiln_xstrdup (opts->execution_id) : new_execution_id ();

  /* Every given parameter must belong to some document. */
  const char *pname;
  json_t *pval;
  json_object_foreach (opts->parameters, pname, pval)
  {
    bool known = false;
    for (size_t i = 0; i < n_docs; i++)
      {
        const struct kiln_variable *v = kiln_component_variable (docs[i], pname);
        if (v && !v->constant)
          known = true;
      }
    if (!known)
      {
        kiln_fail_invalid (err, "--parameters: no document has a parameter named '%s'", pname);
        goto out;
      }
  }
  for (size_t i = 0; i < n_docs; i++)
    {
      json_t *given = opts->document_parameters ? opts->document_parameters[i] : opts->parameters;
      if (document_values (docs[i], given, &values[i], err) < 0)
        goto out;
    }

  if (opts->state_directory)
    {
      if (kiln_mkdir_p (opts->state_directory, 0700, err) < 0)
        {
          kiln_error_prefix (err, "state directory");
          goto out;
        }
      ex.state_path = kiln_xasprintf ("%s/%s.state.json", opts->state_directory, ex.execution_id);
    }
  if (load_resume (&ex, &state, err) < 0)
    goto out;

  const char *resume_dir = state ? json_string_value (json_object_get (state, "runDirectory")) : NULL;
  if (resume_dir && access (resume_dir, F_OK) < 0)
    resume_dir = NULL;
  if (open_logs (&ex, resume_dir, err) < 0)
    goto out;

  char ts[32];
  timestamp (ts);
  json_t *position = state ? json_object_get (state, "position") : NULL;
  if (state && resume_dir)
    {
      ex.top = json_deep_copy (json_object_get (state, "detail"));
      ex.chaining = json_deep_copy (json_object_get (state, "chaining"));
      app_log (&ex, "resuming execution %s after a reboot", ex.execution_id);
      console_note (&ex, "Resuming execution %s after a reboot", ex.execution_id);
      progress (&ex, "resuming execution %s at step '%s'", ex.execution_id,
                json_string_value (json_object_get (position, "step")));
    }
  else
    {
      if (state)
        position = NULL; /* the old log folder is gone: start over */
      ex.top = json_pack ("{s:s, s:s, s:s, s:s, s:s, s:[]}", "executionId", ex.execution_id, "status", "running",
                          "startTime", ts, "endTime", "", "failureMessage", "", "documents");
      ex.chaining = json_object ();
      if (write_documents (&ex, err) < 0)
        goto out;
      app_log (&ex, "execution %s: %zu document(s), phases %s", ex.execution_id, n_docs,
               opts->phases ? opts->phases : "all");
    }
  result->run_directory = kiln_xstrdup (ex.run_dir);
  progress (&ex, "execution %s, logs in %s", ex.execution_id, ex.run_dir);

  json_t *docs_json = json_object_get (ex.top, "documents");
  size_t first_doc = position ? (size_t) json_integer_value (json_object_get (position, "document")) : 0;
  int executed = 0, failed = 0, ignored = 0;
  bool any_failed = false;
  for (size_t i = 0; i < n_docs; i++)
    {
      struct doc_run dr = {.ex = &ex, .c = docs[i], .values = values[i], .depth = 1, .doc_index = i};
      json_t *doc_json = json_array_get (docs_json, i);
      if (i < first_doc && doc_json)
        {
          /* Finished before the reboot: count it as it ended. */
          executed += (int) json_integer_value (json_object_get (doc_json, "executedStepCount"));
          failed += (int) json_integer_value (json_object_get (doc_json, "failedStepCount"));
          ignored += (int) json_integer_value (json_object_get (doc_json, "ignoredFailedStepCount"));
          const char *st = json_string_value (json_object_get (doc_json, "status"));
          any_failed |= st && strcmp (st, "failed") == 0;
          continue;
        }
      json_t *pos = (position && i == first_doc) ? position : NULL;
      if (pos && doc_json)
        {
          dr.detail = doc_json;
          dr.records = json_deep_copy (json_object_get (pos, "records"));
          /* Counts as they stood when the step asked for the reboot. */
          json_t *counts = json_object_get (pos, "counts");
          dr.executed = (int) json_integer_value (json_array_get (counts, 0));
          dr.failed = (int) json_integer_value (json_array_get (counts, 1));
          dr.ignored = (int) json_integer_value (json_array_get (counts, 2));
        }
      else
        {
          dr.detail = new_document_detail (docs[i]);
          json_array_append_new (docs_json, dr.detail);
          dr.records = json_object ();
          pos = NULL;
        }
      json_object_set (ex.chaining, docs[i]->path, dr.records);
      bool go_on = run_document (&dr, opts->phases, pos);
      executed += dr.executed;
      failed += dr.failed;
      ignored += dr.ignored;
      const char *st = json_string_value (json_object_get (dr.detail, "status"));
      any_failed |= st && (strcmp (st, "failed") == 0 || strcmp (st, "cancelled") == 0);
      json_object_set (ex.chaining, docs[i]->path, dr.records);
      json_decref (dr.records);
      if (!go_on)
        break;
    }

  if (ex.stop && ex.stop_status == KILN_RUN_REBOOT_PENDING)
    result->status = KILN_RUN_REBOOT_PENDING;
  else if (ex.stop && ex.stop_status == KILN_RUN_CANCELLED)
    result->status = KILN_RUN_CANCELLED;
  else
    result->status = any_failed ? KILN_RUN_FAILED : KILN_RUN_SUCCESS;

  const char *overall = kiln_run_status_name (result->status);
  if (result->status == KILN_RUN_SUCCESS && ignored > 0)
    overall = "successWithIgnoredFailure";
  timestamp (ts);
  json_object_set_new (ex.top, "status", json_string (overall));
  json_object_set_new (ex.top, "endTime", json_string (result->status == KILN_RUN_REBOOT_PENDING ? "" : ts));
  json_object_set_new (ex.top, "executedStepCount", json_integer (executed));
  json_object_set_new (ex.top, "failedStepCount", json_integer (failed));
  json_object_set_new (ex.top, "ignoredFailedStepCount", json_integer (ignored));
  if (result->status == KILN_RUN_FAILED || result->status == KILN_RUN_CANCELLED)
    {
      size_t i;
      json_t *d;
      json_array_foreach (docs_json, i, d)
        {
          const char *m = json_string_value (json_object_get (d, "failureMessage"));
          if (m && *m)
            {
              json_object_set_new (ex.top, "failureMessage",
                                   json_sprintf ("document '%s': %s",
                                                 json_string_value (json_object_get (d, "filePath")), m));
              break;
            }
        }
      if (result->status == KILN_RUN_CANCELLED && !*json_string_value (json_object_get (ex.top, "failureMessage")))
        json_object_set_new (ex.top, "failureMessage", json_string ("cancelled"));
      result->failure_message = kiln_xstrdup (json_string_value (json_object_get (ex.top, "failureMessage")));
    }
  else if (result->status == KILN_RUN_REBOOT_PENDING)
    {
      result->failure_message = kiln_xasprintf (
                                                "a step asked for a reboot: the run's state is saved in '%s'; after rebooting, run the same "
                                                "command with --state-directory %s --execution-id %s to resume",
                                                ex.state_path, opts->state_directory, ex.execution_id);
    }
  save_logs (&ex);
  if (result->status != KILN_RUN_REBOOT_PENDING && ex.state_path)
    unlink (ex.state_path);
  app_log (&ex, "execution %s finished: %s", ex.execution_id, overall);
  result->summary = json_pack ("{s:i, s:s, s:i, s:s, s:i, s:s, s:s}", "executedStepCount", executed, "executionId",
                               ex.execution_id, "failedStepCount", failed, "failureMessage",
                               result->failure_message ? result->failure_message : "", "ignoredFailedStepCount",
                               ignored, "logUrl", ex.run_dir, "status", overall);
  rc = 0;

out:
  for (size_t i = 0; i < n_docs; i++)
    json_decref (values[i]);
  free (values);
  for (size_t i = 0; i < ex.n_loaded; i++)
    kiln_component_free (ex.loaded[i]);
  free (ex.loaded);
  if (ex.console)
    fclose (ex.console);
  if (ex.app)
    fclose (ex.app);
  json_decref (ex.top);
  json_decref (ex.chaining);
  free (ex.state_path);
  free (ex.run_dir);
  free (ex.execution_id);
  return rc;
}

void
kiln_run_result_release (struct kiln_run_result *result)
{
  free (result->run_directory);
  free (result->failure_message);
  json_decref (result->summary);
  memset (result, 0, sizeof *result);
}
