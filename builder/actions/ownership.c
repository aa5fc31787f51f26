/* ownership.c - the owner and permission action modules: SetFileOwner,
 * SetFolderOwner, SetFilePermissions, and SetFolderPermissions.
 *
 * Every module takes a list of entries and handles them in order; the first
 * entry that fails ends the step, with "inputs[N]: " naming it.  The work is
 * chown and chmod run on the target (drivers/target.h), after a stat that
 * turns a missing path into a clear error.  Both utilities follow a symbolic
 * link given on the command line (chown without -h, chmod always), so on a
 * link the file it points to changes, as AWSTOE documents.  With -R, links met
 * inside the tree are not followed (the coreutils and busybox default).
 *
 * Choices where the AWSTOE documentation is silent:
 *   - Without `group`, the owner's login group is used (AWSTOE: "default: the
 *     user's group"), found with `id -g OWNER` on the target; an owner that id
 *     does not know (a bare numeric uid) keeps the current group.
 *   - SetFile* accept any existing path and change it alone; SetFolder* need
 *     a folder (a link to one counts), and recurse unless recursive is false.
 *   - permissions are 1 to 4 octal digits ("644", "0755", "2775"). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "actions.h"
#include "cleanup.h"
#include "template.h"

static bool
parse_mode (const char *s, mode_t *out)
{
  size_t n = strlen (s);
  if (n == 0 || n > 4)
    return false;
  mode_t m = 0;
  for (const char *p = s; *p; p++)
    {
      if (*p < '0' || *p > '7')
        return false;
      m = (m << 3) | (mode_t) (*p - '0');
    }
  *out = m;
  return true;
}

static int
for_each_entry (struct kiln_action_ctx *ctx, bool folder,
                int (*fn) (struct kiln_action_ctx *ctx, json_t *entry, bool folder, kiln_error **err),
                kiln_error **err)
{
  if (!json_is_array (ctx->inputs))
    return kiln_fail_invalid (err, "inputs must be a list of entries");
  size_t i;
  json_t *entry;
  json_array_foreach (ctx->inputs, i, entry)
    {
      if (!json_is_object (entry))
        return kiln_fail_invalid (err, "inputs[%zu]: expected a mapping of inputs", i);
      if (fn (ctx, entry, folder, err) < 0)
        return kiln_error_prefix (err, "inputs[%zu]", i);
    }
  return 0;
}

/* Fails unless path exists (as a folder when folder is true; links are
 * followed for that test, as chown and chmod will follow them). */
static int
require_path (struct kiln_action_ctx *ctx, const char *path, bool folder, bool *is_symlink, kiln_error **err)
{
  *is_symlink = false;
  if (*path == '\0')
    return kiln_fail_invalid (err, "the path is empty");
  struct kiln_target_stat st;
  if (kiln_target_stat (ctx->target, path, &st, err) < 0)
    return -1;
  if (!st.exists)
    return kiln_error_set (err, KILN_ERR_NOT_FOUND, 0, "no such %s", folder ? "folder" : "file");
  *is_symlink = st.is_symlink;
  if (!folder)
    return 0;
  bool is_dir = st.is_dir;
  if (st.is_symlink)
    {
      _cleanup_free_ char *dot = NULL;
      if (asprintf (&dot, "%s/.", path) < 0)
        abort ();
      struct kiln_target_stat through;
      if (kiln_target_stat (ctx->target, dot, &through, err) < 0)
        return -1;
      is_dir = through.exists && through.is_dir;
    }
  if (!is_dir)
    return kiln_fail (err, "not a folder");
  return 0;
}

/* What chown/chmod get: with -R, "LINK/." so that a folder given through a
 * symbolic link is entered (-R alone would stop at the link itself). */
static char *
operand (const char *path, bool recursive, bool is_symlink)
{
  char *r = NULL;
  if (asprintf (&r, "%s%s", path, recursive && is_symlink ? "/." : "") < 0)
    abort ();
  return r;
}

static int
set_owner_one (struct kiln_action_ctx *ctx, json_t *entry, bool folder, kiln_error **err)
{
  const char *path = NULL, *owner = NULL, *group = NULL;
  bool recursive = true;
  if (kiln_input_required_string (entry, "path", NULL, &path, err) < 0
      || kiln_input_required_string (entry, "owner", NULL, &owner, err) < 0
      || kiln_input_string (entry, "group", NULL, &group, err) < 0
      || (folder && kiln_input_bool (entry, "recursive", NULL, &recursive, err) < 0))
    return -1;
  if (*owner == '\0')
    return kiln_fail_invalid (err, "set the owner of '%s': owner is empty", path);
  bool is_symlink;
  if (require_path (ctx, path, folder, &is_symlink, err) < 0)
    return kiln_error_prefix (err, "set the owner of '%s'", path);

  /* `id -g OWNER` both checks that the user exists (a clearer message than
   * chown's, in any locale) and gives its login group, the default group.
   * A numeric owner id unknown to id is left for chown to take as is. */
  bool numeric = strspn (owner, "0123456789") == strlen (owner);
  char *id[] = {(char *) "id", (char *) "-g", (char *) "--", (char *) owner, NULL};
  struct kiln_buf gid = KILN_BUF_INIT;
  _cleanup_error_ kiln_error *id_failed = NULL;
  bool known = kiln_target_run_checked (ctx->target, id, ctx->timeout_seconds, &gid, &id_failed) == 0;
  while (gid.len > 0 && gid.data[gid.len - 1] == '\n')
    gid.data[--gid.len] = '\0';
  if (!known && !numeric)
    {
      kiln_buf_release (&gid);
      return kiln_error_set (err, KILN_ERR_NOT_FOUND, 0, "set the owner of '%s': unknown user '%s'", path, owner);
    }

  struct kiln_buf spec = KILN_BUF_INIT;
  kiln_buf_puts (&spec, owner);
  if (group && *group)
    kiln_buf_printf (&spec, ":%s", group);
  else if (known && gid.len > 0 && strspn (kiln_buf_str (&gid), "0123456789") == gid.len)
    kiln_buf_printf (&spec, ":%s", kiln_buf_str (&gid));
  kiln_buf_release (&gid);

  char *argv[6];
  size_t k = 0;
  argv[k++] = (char *) "chown";
  if (folder && recursive)
    argv[k++] = (char *) "-R";
  argv[k++] = (char *) "--";
  argv[k++] = (char *) kiln_buf_str (&spec);
  _cleanup_free_ char *target = operand (path, folder && recursive, is_symlink);
  argv[k++] = target;
  argv[k] = NULL;
  int r = kiln_action_run_checked (ctx, argv, err);
  if (r < 0)
    kiln_error_prefix (err, "set the owner of '%s' to '%s'", path, kiln_buf_str (&spec));
  kiln_buf_release (&spec);
  return r;
}

static int
set_permissions_one (struct kiln_action_ctx *ctx, json_t *entry, bool folder, kiln_error **err)
{
  const char *path = NULL, *perms = NULL;
  bool recursive = true;
  if (kiln_input_required_string (entry, "path", NULL, &path, err) < 0
      || kiln_input_required_string (entry, "permissions", NULL, &perms, err) < 0
      || (folder && kiln_input_bool (entry, "recursive", NULL, &recursive, err) < 0))
    return -1;
  mode_t mode;
  if (!parse_mode (perms, &mode))
    return kiln_fail_invalid (err, "set the permissions of '%s': '%s' is not 1 to 4 octal digits such as 0644",
                              path, perms);
  bool is_symlink;
  if (require_path (ctx, path, folder, &is_symlink, err) < 0)
    return kiln_error_prefix (err, "set the permissions of '%s'", path);

  char octal[8];
  snprintf (octal, sizeof octal, "%04o", (unsigned) mode);
  char *argv[6];
  size_t k = 0;
  argv[k++] = (char *) "chmod";
  if (folder && recursive)
    argv[k++] = (char *) "-R";
  argv[k++] = (char *) "--";
  argv[k++] = octal;
  _cleanup_free_ char *target = operand (path, folder && recursive, is_symlink);
  argv[k++] = target;
  argv[k] = NULL;
  if (kiln_action_run_checked (ctx, argv, err) < 0)
    return kiln_error_prefix (err, "set the permissions of '%s' to %s", path, octal);
  return 0;
}

static int
set_file_owner_run (struct kiln_action_ctx *ctx, kiln_error **err)
{
  return for_each_entry (ctx, false, set_owner_one, err);
}

static int
set_folder_owner_run (struct kiln_action_ctx *ctx, kiln_error **err)
{
  return for_each_entry (ctx, true, set_owner_one, err);
}

static int
set_file_permissions_run (struct kiln_action_ctx *ctx, kiln_error **err)
{
  return for_each_entry (ctx, false, set_permissions_one, err);
}

static int
set_folder_permissions_run (struct kiln_action_ctx *ctx, kiln_error **err)
{
  return for_each_entry (ctx, true, set_permissions_one, err);
}

/* ---- static checks ---------------------------------------------------------- */

/* permissions are octal digits; owner is not empty. */
static int
check_entries (const struct kiln_action_check_ctx *ctx, kiln_error **err)
{
  const struct kiln_yaml_node *in = ctx->inputs;
  if (in == NULL || in->kind != KILN_YAML_SEQUENCE)
    return 0;
  for (size_t i = 0; i < in->n_items; i++)
    {
      const struct kiln_yaml_node *e = in->items[i];
      if (e->kind != KILN_YAML_MAPPING)
        continue;
      const struct kiln_yaml_node *v = kiln_yaml_map_get (e, "permissions");
      mode_t mode;
      if (v && v->kind == KILN_YAML_SCALAR && !kiln_template_has_expression (v->value) && !parse_mode (v->value, &mode))
        return kiln_yaml_error (err, ctx->doc, v, "permissions '%s' must be 1 to 4 octal digits, such as 0644",
                                v->value);
      v = kiln_yaml_map_get (e, "owner");
      if (v && v->kind == KILN_YAML_SCALAR && v->value[0] == '\0')
        return kiln_yaml_error (err, ctx->doc, v, "owner must not be empty");
    }
  return 0;
}

/* ---- definitions ---------------------------------------------------------------- */

static const struct kiln_input_field set_file_owner_fields[] = {
  {"path", KILN_IN_STRING, true},
  {"owner", KILN_IN_STRING, true},
  {"group", KILN_IN_STRING, false},
  {NULL, 0, false},
};

static const struct kiln_input_field set_folder_owner_fields[] = {
  {"path", KILN_IN_STRING, true},
  {"owner", KILN_IN_STRING, true},
  {"group", KILN_IN_STRING, false},
  {"recursive", KILN_IN_BOOL, false},
  {NULL, 0, false},
};

static const struct kiln_input_field set_file_permissions_fields[] = {
  {"path", KILN_IN_STRING, true},
  {"permissions", KILN_IN_STRING, true},
  {NULL, 0, false},
};

static const struct kiln_input_field set_folder_permissions_fields[] = {
  {"path", KILN_IN_STRING, true},
  {"permissions", KILN_IN_STRING, true},
  {"recursive", KILN_IN_BOOL, false},
  {NULL, 0, false},
};

const struct kiln_action kiln_action_set_file_owner = {
  .name = "SetFileOwner",
  .shape = KILN_INPUTS_LIST,
  .fields = set_file_owner_fields,
  .check = check_entries,
  .run = set_file_owner_run,
};

const struct kiln_action kiln_action_set_folder_owner = {
  .name = "SetFolderOwner",
  .shape = KILN_INPUTS_LIST,
  .fields = set_folder_owner_fields,
  .check = check_entries,
  .run = set_folder_owner_run,
};

const struct kiln_action kiln_action_set_file_permissions = {
  .name = "SetFilePermissions",
  .shape = KILN_INPUTS_LIST,
  .fields = set_file_permissions_fields,
  .check = check_entries,
  .run = set_file_permissions_run,
};

const struct kiln_action kiln_action_set_folder_permissions = {
  .name = "SetFolderPermissions",
  .shape = KILN_INPUTS_LIST,
  .fields = set_folder_permissions_fields,
  .check = check_entries,
  .run = set_folder_permissions_run,
};
