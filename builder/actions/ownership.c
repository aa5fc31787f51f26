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
#include "xalloc.h"

/* Fails unless path exists (as a folder when folder is true; links are
 * followed for that test, as chown and chmod will follow them). */
static int
require_path (struct kiln_action_ctx *ctx, const char *path, bool folder, bool *is_symlink, kiln_error **err)
{
  *is_symlink = false;
  if (*path == '\0')
    return kiln_fail_invalid (err, "the path is empty");
  struct kiln_target_stat st;
  bool is_folder = false;
  int r = folder ? kiln_action_stat_folder (ctx, path, &st, &is_folder, err)
                 : kiln_target_stat (ctx->target, path, &st, err);
  if (r < 0)
    return -1;
  if (!st.exists)
    return kiln_error_set (err, KILN_ERR_NOT_FOUND, 0, "no such %s", folder ? "folder" : "file");
  *is_symlink = st.is_symlink;
  if (folder && !is_folder)
    return kiln_fail (err, "not a folder");
  return 0;
}

/* What chown/chmod get: with -R, "LINK/." so that a folder given through a
 * symbolic link is entered (-R alone would stop at the link itself). */
static char *
operand (const char *path, bool recursive, bool is_symlink)
{
  char *r = NULL;
  r = kiln_xasprintf ("%s%s", path, recursive && is_symlink ? "/." : "");
  return r;
}

/* One entry of SetFileOwner or SetFolderOwner (opaque points to true for the
 * latter). */
static int
set_owner_one (struct kiln_action_ctx *ctx, json_t *entry, void *opaque, kiln_error **err)
{
  bool folder = *(const bool *) opaque;
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

/* One entry of SetFilePermissions or SetFolderPermissions (opaque points to
 * true for the latter). */
static int
set_permissions_one (struct kiln_action_ctx *ctx, json_t *entry, void *opaque, kiln_error **err)
{
  bool folder = *(const bool *) opaque;
  const char *path = NULL, *perms = NULL;
  bool recursive = true;
  if (kiln_input_required_string (entry, "path", NULL, &path, err) < 0
      || kiln_input_required_string (entry, "permissions", NULL, &perms, err) < 0
      || (folder && kiln_input_bool (entry, "recursive", NULL, &recursive, err) < 0))
    return -1;
  mode_t mode;
  if (!kiln_parse_mode (perms, &mode))
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
  return kiln_action_for_each_entry (ctx, set_owner_one, &(bool){false}, err);
}

static int
set_folder_owner_run (struct kiln_action_ctx *ctx, kiln_error **err)
{
  return kiln_action_for_each_entry (ctx, set_owner_one, &(bool){true}, err);
}

static int
set_file_permissions_run (struct kiln_action_ctx *ctx, kiln_error **err)
{
  return kiln_action_for_each_entry (ctx, set_permissions_one, &(bool){false}, err);
}

static int
set_folder_permissions_run (struct kiln_action_ctx *ctx, kiln_error **err)
{
  return kiln_action_for_each_entry (ctx, set_permissions_one, &(bool){true}, err);
}

/* ---- static checks ---------------------------------------------------------- */

/* permissions are octal digits; owner is not empty. */
static int
check_entry (const struct kiln_action_check_ctx *ctx, const struct kiln_yaml_node *e, void *opaque _unused_,
             kiln_error **err)
{
  if (kiln_action_check_permissions (ctx, e, "0644", err) < 0)
    return -1;
  const struct kiln_yaml_node *v = kiln_input_literal (e, "owner");
  if (v && v->value[0] == '\0')
    return kiln_yaml_error (err, ctx->doc, v, "owner must not be empty");
  return 0;
}

static int
check_entries (const struct kiln_action_check_ctx *ctx, kiln_error **err)
{
  return kiln_action_check_each_entry (ctx, check_entry, NULL, err);
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
