/* system.c - the whole-system action modules: UpdateOS (install package
 * updates) and Reboot (ask the executor for a reboot).
 *
 * UpdateOS finds the package manager on the target with `command -v`
 * (apt-get, then dnf, then yum: dnf before yum because on current Fedora and
 * RHEL yum is an alias of dnf) and runs it there with the step's timeout,
 * streaming its output.  include lists the packages to update (default: all
 * with an update); exclude removes packages from that set.  Entries are names
 * or shell-style patterns ("kernel*"), matched with fnmatch(3) on the kiln
 * side for apt-get, handed to --exclude for dnf/yum.
 *
 *   apt-get (DEBIAN_FRONTEND=noninteractive; dpkg keeps existing config
 *   files, --force-confdef --force-confold, so no prompt can stall a build):
 *     apt-get -y update, then
 *       include given:  apt-get install -y --only-upgrade INCLUDED...
 *       no include, no exclude:  apt-get -y upgrade
 *       exclude only:  the upgradable set is read from a simulated upgrade
 *         (apt-get -s upgrade, "Inst NAME ..." lines; `apt list --upgradable`
 *         warns that its output is not stable), minus the excluded, then
 *         apt-get install -y --only-upgrade THOSE
 *   dnf / yum:  PM -y upgrade [--exclude=X]... [INCLUDED...]
 *
 * When include minus exclude is empty, nothing runs but the detection: that
 * is a success with a note.
 *
 * Reboot never reboots by itself: it sets ctx->reboot_requested and
 * ctx->reboot_delay_seconds, and the executor (which owns the target and the
 * run's saved state) performs the reboot after the step, then continues with
 * the next step. */
#include <fnmatch.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "actions.h"
#include "cleanup.h"
#include "template.h"
#include "xalloc.h"

static const char detect_script[] =
  "for pm in apt-get dnf yum; do if command -v \"$pm\" >/dev/null 2>&1; then echo \"$pm\"; exit 0; fi; done; exit 1";

static char *const apt_env[] = {(char *) "DEBIAN_FRONTEND=noninteractive", NULL};
static char *const apt_sim_env[] = {(char *) "DEBIAN_FRONTEND=noninteractive", (char *) "LC_ALL=C", NULL};

struct update {
  struct kiln_action_ctx *ctx;
  double deadline; /* kiln_action_deadline: 0 for none */
};

/* The last non-blank line of text into out. */
static void
last_line (const struct kiln_buf *text, struct kiln_buf *out)
{
  const char *s = kiln_buf_str (text);
  size_t end = text->len;
  while (end > 0 && (s[end - 1] == '\n' || s[end - 1] == '\r' || s[end - 1] == ' '))
    end--;
  size_t begin = end;
  while (begin > 0 && s[begin - 1] != '\n')
    begin--;
  kiln_buf_append (out, s + begin, end - begin);
}

/* The command for messages: the program and its words up to the first
 * package name or option value, e.g. "apt-get -y update". */
static void
describe (char *const *argv, struct kiln_buf *out)
{
  for (size_t i = 0; argv[i] && i < 4; i++)
    {
      if (i > 0 && strcmp (argv[i], "-o") == 0)
        break;
      kiln_buf_printf (out, "%s%s", i ? " " : "", argv[i]);
    }
}

/* Runs argv on the target within what is left of the step's time; output
 * streams to the step unless captured is given (then it is kept there).
 * A non-zero exit fails with the status and the last stderr line. */
static int
run_pm (struct update *u, char *const *argv, char *const *env, struct kiln_buf *captured, kiln_error **err)
{
  struct kiln_action_ctx *ctx = u->ctx;
  long left = 0;
  if (kiln_action_time_left (ctx, u->deadline, &left, err) < 0)
    return -1;
  struct kiln_target_command cmd = {.argv = argv, .env = env, .timeout_seconds = (int) left};
  if (captured == NULL)
    {
      cmd.on_output = ctx->output;
      cmd.opaque = ctx->output_opaque;
    }
  struct kiln_target_result res = {.exit_code = -1, .out = KILN_BUF_INIT, .err = KILN_BUF_INIT};
  if (kiln_target_run (ctx->target, &cmd, &res, err) < 0)
    {
      kiln_target_result_release (&res);
      return kiln_error_prefix (err, "run %s", argv[0]);
    }
  ctx->exit_code = res.exit_code;
  int r = 0;
  struct kiln_buf what = KILN_BUF_INIT;
  describe (argv, &what);
  if (res.timed_out)
    r = kiln_error_set (err, KILN_ERR_TIMEOUT, 0, "'%s' timed out after %d seconds", kiln_buf_str (&what),
                        ctx->timeout_seconds);
  else if (res.exit_code != 0)
    {
      struct kiln_buf why = KILN_BUF_INIT;
      last_line (&res.err, &why);
      r = kiln_fail (err, "'%s' exited with status %d%s%s", kiln_buf_str (&what), res.exit_code, why.len ? ": " : "",
                     kiln_buf_str (&why));
      kiln_buf_release (&why);
    }
  else if (captured)
    {
      kiln_buf_release (captured);
      *captured = res.out;
      res.out = (struct kiln_buf) KILN_BUF_INIT;
    }
  kiln_buf_release (&what);
  kiln_target_result_release (&res);
  return r;
}

static bool
excluded (json_t *exclude, const char *name)
{
  /* apt names may carry ":arch"; match the bare name too. */
  size_t bare_len = strcspn (name, ":");
  _cleanup_free_ char *bare = kiln_xstrndup (name, bare_len);
  size_t i;
  json_t *x;
  json_array_foreach (exclude, i, x)
    {
      const char *pat = json_string_value (x);
      if (fnmatch (pat, name, 0) == 0 || fnmatch (pat, bare, 0) == 0)
        return true;
    }
  return false;
}

/* Runs "apt-get install -y --only-upgrade <dpkg options> NAMES". */
static int
apt_install_upgrades (struct update *u, char *const *names, size_t n, kiln_error **err)
{
  _cleanup_free_ char **argv = calloc (n + 9, sizeof *argv);
  if (argv == NULL)
    abort ();
  size_t k = 0;
  argv[k++] = (char *) "apt-get";
  argv[k++] = (char *) "install";
  argv[k++] = (char *) "-y";
  argv[k++] = (char *) "--only-upgrade";
  argv[k++] = (char *) "-o";
  argv[k++] = (char *) "Dpkg::Options::=--force-confdef";
  argv[k++] = (char *) "-o";
  argv[k++] = (char *) "Dpkg::Options::=--force-confold";
  for (size_t i = 0; i < n; i++)
    argv[k++] = names[i];
  argv[k] = NULL;
  return run_pm (u, argv, apt_env, NULL, err);
}

static int
update_apt (struct update *u, json_t *include, json_t *wanted, json_t *exclude, kiln_error **err)
{
  char *update[] = {(char *) "apt-get", (char *) "-y", (char *) "update", NULL};
  if (run_pm (u, update, apt_env, NULL, err) < 0)
    return -1;

  if (json_array_size (include) > 0)
    {
      size_t n = json_array_size (wanted);
      _cleanup_free_ char **names = calloc (n + 1, sizeof *names);
      if (names == NULL)
        abort ();
      for (size_t i = 0; i < n; i++)
        names[i] = (char *) json_string_value (json_array_get (wanted, i));
      return apt_install_upgrades (u, names, n, err);
    }
  if (json_array_size (exclude) == 0)
    {
      char *upgrade[] = {(char *) "apt-get",
                         (char *) "-y",
                         (char *) "-o",
                         (char *) "Dpkg::Options::=--force-confdef",
                         (char *) "-o",
                         (char *) "Dpkg::Options::=--force-confold",
                         (char *) "upgrade",
                         NULL};
      return run_pm (u, upgrade, apt_env, NULL, err);
    }

  /* Everything upgradable, minus the excluded. */
  char *simulate[] = {(char *) "apt-get", (char *) "-s", (char *) "upgrade", NULL};
  struct kiln_buf out = KILN_BUF_INIT;
  if (run_pm (u, simulate, apt_sim_env, &out, err) < 0)
    {
      kiln_buf_release (&out);
      return -1;
    }
  _cleanup_strv_ char **names = calloc (1, sizeof *names);
  size_t n = 0;
  if (names == NULL)
    abort ();
  char *save = NULL;
  for (char *line = strtok_r (out.data ? out.data : (char *) "", "\n", &save); line;
       line = strtok_r (NULL, "\n", &save))
    {
      if (strncmp (line, "Inst ", 5) != 0)
        continue;
      char *name = kiln_xstrndup (line + 5, strcspn (line + 5, " "));
      if (*name == '\0' || excluded (exclude, name))
        {
          kiln_action_note (u->ctx, "UpdateOS: %s excluded", name);
          free (name);
          continue;
        }
      char **grown = realloc (names, (n + 2) * sizeof *names);
      if (grown == NULL)
        abort ();
      names = grown;
      names[n++] = name;
      names[n] = NULL;
    }
  kiln_buf_release (&out);
  if (n == 0)
    {
      kiln_action_note (u->ctx, "UpdateOS: no package to update");
      return 0;
    }
  return apt_install_upgrades (u, names, n, err);
}

static int
update_rpm (struct update *u, const char *pm, json_t *wanted, json_t *exclude, kiln_error **err)
{
  size_t n_ex = json_array_size (exclude), n_in = json_array_size (wanted);
  _cleanup_strv_ char **argv = calloc (n_ex + n_in + 4, sizeof *argv);
  if (argv == NULL)
    abort ();
  size_t k = 0;
  argv[k++] = kiln_xstrdup (pm);
  argv[k++] = kiln_xstrdup ("-y");
  argv[k++] = kiln_xstrdup ("upgrade");
  for (size_t i = 0; i < n_ex; i++)
    argv[k++] = kiln_xasprintf ("--exclude=%s", json_string_value (json_array_get (exclude, i)));
  for (size_t i = 0; i < n_in; i++)
    argv[k++] = kiln_xstrdup (json_string_value (json_array_get (wanted, i)));
  argv[k] = NULL;
  return run_pm (u, argv, NULL, NULL, err);
}

static int
check_names (json_t *list, const char *key, kiln_error **err)
{
  size_t i;
  json_t *v;
  json_array_foreach (list, i, v)
    {
      const char *s = json_string_value (v);
      if (*s == '\0' || *s == '-')
        return kiln_fail_invalid (err, "UpdateOS: %s[%zu] '%s' is not a package name", key, i, s);
    }
  return 0;
}

static int
update_os_run (struct kiln_action_ctx *ctx, kiln_error **err)
{
  _cleanup_json_ json_t *include = NULL, *exclude = NULL;
  json_t *inputs = json_is_object (ctx->inputs) ? ctx->inputs : NULL;
  if (kiln_input_string_list (inputs, "include", NULL, &include, err) < 0
      || kiln_input_string_list (inputs, "exclude", NULL, &exclude, err) < 0 || check_names (include, "include", err) < 0
      || check_names (exclude, "exclude", err) < 0)
    return -1;
  struct update u = {.ctx = ctx, .deadline = kiln_action_deadline (ctx)};

  char *detect[] = {(char *) "sh", (char *) "-c", (char *) detect_script, NULL};
  struct kiln_target_command cmd = {.argv = detect, .timeout_seconds = 60};
  struct kiln_target_result res = {.exit_code = -1, .out = KILN_BUF_INIT, .err = KILN_BUF_INIT};
  if (kiln_target_run (ctx->target, &cmd, &res, err) < 0)
    {
      kiln_target_result_release (&res);
      return kiln_error_prefix (err, "UpdateOS: look for a package manager");
    }
  char pm[16] = "";
  if (res.exit_code == 0)
    snprintf (pm, sizeof pm, "%.*s", (int) strcspn (kiln_buf_str (&res.out), "\n"), kiln_buf_str (&res.out));
  kiln_target_result_release (&res);
  if (strcmp (pm, "apt-get") != 0 && strcmp (pm, "dnf") != 0 && strcmp (pm, "yum") != 0)
    return kiln_error_set (err, KILN_ERR_UNSUPPORTED, 0,
                           "UpdateOS: no supported package manager (apt-get, dnf, yum) on the target");

  /* include minus exclude */
  _cleanup_json_ json_t *wanted = json_array ();
  size_t i;
  json_t *v;
  json_array_foreach (include, i, v)
    if (!excluded (exclude, json_string_value (v)))
      json_array_append (wanted, v);
  if (json_array_size (include) > 0 && json_array_size (wanted) == 0)
    {
      kiln_action_note (ctx, "UpdateOS: every included package is excluded; nothing to update");
      return 0;
    }
  kiln_action_note (ctx, "UpdateOS: using %s", pm);

  int r = strcmp (pm, "apt-get") == 0 ? update_apt (&u, include, wanted, exclude, err)
                                      : update_rpm (&u, pm, wanted, exclude, err);
  if (r < 0)
    return kiln_error_prefix (err, "UpdateOS");
  return 0;
}

/* ---- Reboot -------------------------------------------------------------------- */

static int
reboot_run (struct kiln_action_ctx *ctx, kiln_error **err)
{
  long delay = 0;
  json_t *inputs = json_is_object (ctx->inputs) ? ctx->inputs : NULL;
  if (kiln_input_int (inputs, "delaySeconds", NULL, &delay, err) < 0)
    return -1;
  if (delay < 0 || delay > 86400L * 365)
    return kiln_fail_invalid (err, "input 'delaySeconds' must be 0 or more seconds, not %ld", delay);
  ctx->reboot_requested = true;
  ctx->reboot_delay_seconds = (int) delay;
  return 0;
}

/* ---- static checks ------------------------------------------------------------------ */

static int
check_name_list (const struct kiln_action_check_ctx *ctx, const char *key, kiln_error **err)
{
  const struct kiln_yaml_node *list = kiln_yaml_map_get (ctx->inputs, key);
  if (list == NULL || list->kind != KILN_YAML_SEQUENCE)
    return 0;
  for (size_t i = 0; i < list->n_items; i++)
    {
      const struct kiln_yaml_node *v = list->items[i];
      if (v->kind != KILN_YAML_SCALAR || kiln_template_has_expression (v->value))
        continue;
      if (v->value[0] == '\0' || v->value[0] == '-')
        return kiln_yaml_error (err, ctx->doc, v, "'%s' is not a package name", v->value);
    }
  return 0;
}

static int
update_os_check (const struct kiln_action_check_ctx *ctx, kiln_error **err)
{
  if (ctx->inputs == NULL || ctx->inputs->kind != KILN_YAML_MAPPING)
    return 0;
  return check_name_list (ctx, "include", err) < 0 ? -1 : check_name_list (ctx, "exclude", err);
}

static int
reboot_check (const struct kiln_action_check_ctx *ctx, kiln_error **err)
{
  if (ctx->inputs == NULL || ctx->inputs->kind != KILN_YAML_MAPPING)
    return 0;
  const struct kiln_yaml_node *v = kiln_input_literal (ctx->inputs, "delaySeconds");
  long delay;
  if (v && kiln_yaml_as_long (v, &delay) == 0 && delay < 0)
    return kiln_yaml_error (err, ctx->doc, v, "delaySeconds must be 0 or more, not %ld", delay);
  return 0;
}

static const struct kiln_input_field update_os_fields[] = {
  {"include", KILN_IN_STRING_LIST, false},
  {"exclude", KILN_IN_STRING_LIST, false},
  {NULL, 0, false},
};

static const struct kiln_input_field reboot_fields[] = {
  {"delaySeconds", KILN_IN_INT, false},
  {NULL, 0, false},
};

const struct kiln_action kiln_action_update_os = {
  .name = "UpdateOS",
  .shape = KILN_INPUTS_MAP,
  .fields = update_os_fields,
  .check = update_os_check,
  .run = update_os_run,
};

const struct kiln_action kiln_action_reboot = {
  .name = "Reboot",
  .shape = KILN_INPUTS_MAP,
  .fields = reboot_fields,
  .check = reboot_check,
  .run = reboot_run,
};
