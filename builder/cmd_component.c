/* cmd_component.c - `kiln component run`: runs component documents on this
 * host with the same flags and results as `awstoe run`.  Progress goes to
 * stderr, the run's summary (JSON) to stdout.  Exit status: 0 when every
 * phase succeeded, 1 on failure, 194 when a step asked for a reboot (state
 * saved for resuming), 128+signal when interrupted. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cleanup.h"
#include "cli.h"
#include "component.h"
#include "executor.h"
#include "target.h"
#include "xalloc.h"

static void
run_usage (FILE *out)
{
  fputs ("usage: kiln component run --documents F[,F...] [--parameters k=v[,k=v...]] [--phases p[,p...]]\n"
         "                          [--log-directory DIR] [--state-directory DIR] [--execution-id ID]\n",
         out);
}

/* "k=v,k2=v2" -> {k: v, k2: v2}.  As with awstoe, a pair needs both a name
 * and a value, and values cannot hold commas. */
static int
parse_parameters (const char *spec, json_t *into)
{
  _cleanup_free_ char *copy = kiln_xstrdup (spec);
  char *save = NULL;
  for (char *tok = strtok_r (copy, ",", &save); tok; tok = strtok_r (NULL, ",", &save))
    {
      char *eq = strchr (tok, '=');
      if (eq == NULL || eq == tok || eq[1] == '\0')
        {
          fprintf (stderr, "kiln: --parameters: '%s' is not name=value\n", tok);
          return -1;
        }
      *eq = '\0';
      if (json_object_get (into, tok))
        {
          fprintf (stderr, "kiln: --parameters: '%s' is given twice\n", tok);
          return -1;
        }
      json_object_set_new (into, tok, json_string (eq + 1));
    }
  return 0;
}

static int
component_run (int argc, char **argv)
{
  static const struct option options[] = {
    {"documents", required_argument, NULL, 'd'},
    {"parameters", required_argument, NULL, 'P'},
    {"phases", required_argument, NULL, 'p'},
    {"log-directory", required_argument, NULL, 'l'},
    {"state-directory", required_argument, NULL, 's'},
    {"execution-id", required_argument, NULL, 'i'},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
  };
  const char *documents = NULL, *phases = NULL, *log_dir = ".", *state_dir = NULL, *exec_id = NULL;
  _cleanup_json_ json_t *params = json_object ();
  int opt;
  optind = 1;
  while ((opt = getopt_long (argc, argv, "d:p:l:s:i:h", options, NULL)) != -1)
    switch (opt)
      {
      case 'd':
        documents = optarg;
        break;
      case 'P':
        if (parse_parameters (optarg, params) < 0)
          return KILN_EXIT_USAGE;
        break;
      case 'p':
        phases = optarg;
        break;
      case 'l':
        log_dir = optarg;
        break;
      case 's':
        state_dir = optarg;
        break;
      case 'i':
        exec_id = optarg;
        break;
      case 'h':
        run_usage (stdout);
        return KILN_EXIT_OK;
      default:
        run_usage (stderr);
        return KILN_EXIT_USAGE;
      }
  if (documents == NULL || optind != argc)
    {
      run_usage (stderr);
      return KILN_EXIT_USAGE;
    }

  /* Load and validate every document before anything runs. */
  _cleanup_error_ kiln_error *e = NULL;
  _cleanup_free_ char *summary = NULL;
  struct kiln_component **docs = NULL;
  size_t n_docs = 0;
  int status = KILN_EXIT_FAILED;
  _cleanup_free_ char *list = kiln_xstrdup (documents);
  char *save = NULL;
  for (char *tok = strtok_r (list, ",", &save); tok; tok = strtok_r (NULL, ",", &save))
    {
      struct kiln_component *c = NULL;
      if (kiln_component_load (tok, NULL, &c, &e) < 0)
        {
          fprintf (stderr, "%s\n", kiln_error_message (e));
          goto out;
        }
      docs = realloc (docs, (n_docs + 1) * sizeof *docs);
      docs[n_docs++] = c;
    }

  struct kiln_target *target = NULL;
  if (kiln_target_local_open (&target, &e) < 0)
    {
      fprintf (stderr, "kiln: %s\n", kiln_error_message (e));
      goto out;
    }
  struct kiln_executor_opts eo = {
    .target = target,
    .phases = phases,
    .parameters = params,
    .log_directory = log_dir,
    .state_directory = state_dir,
    .execution_id = exec_id,
    .progress = stderr,
    .cancel = &kiln_cli_cancel,
  };
  struct kiln_run_result res;
  int r = kiln_executor_run (docs, n_docs, &eo, &res, &e);
  kiln_target_close (target);
  if (r < 0)
    {
      fprintf (stderr, "%s\n", kiln_error_message (e));
      goto out;
    }
  summary = json_dumps (res.summary, JSON_INDENT (2) | JSON_PRESERVE_ORDER);
  printf ("%s\n", summary ? summary : "{}");
  if (res.failure_message)
    fprintf (stderr, "kiln: %s\n", res.failure_message);
  switch (res.status)
    {
    case KILN_RUN_SUCCESS:
      status = KILN_EXIT_OK;
      break;
    case KILN_RUN_FAILED:
      status = KILN_EXIT_FAILED;
      break;
    case KILN_RUN_REBOOT_PENDING:
      status = KILN_EXIT_REBOOT;
      break;
    case KILN_RUN_CANCELLED:
      status = 128 + (kiln_cli_signal ? kiln_cli_signal : 2);
      break;
    }
  kiln_run_result_release (&res);
out:
  for (size_t i = 0; i < n_docs; i++)
    kiln_component_free (docs[i]);
  free (docs);
  return status;
}

int
kiln_cmd_component (int argc, char **argv)
{
  if (argc < 2)
    {
      run_usage (stderr);
      return KILN_EXIT_USAGE;
    }
  if (strcmp (argv[1], "run") == 0)
    return component_run (argc - 1, argv + 1);
  if (strcmp (argv[1], "validate") == 0)
    return kiln_cmd_validate (argc - 1, argv + 1);
  fprintf (stderr, "kiln: unknown component command '%s' (expected run or validate)\n", argv[1]);
  return KILN_EXIT_USAGE;
}
