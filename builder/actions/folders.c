/* folders.c - the folder action modules: CreateFolder, CopyFolder,
 * MoveFolder, DeleteFolder, and CreateSymlink.
 *
 * Every module takes a list of entries and handles them in order; the first
 * entry that fails ends the step, with "inputs[N]: " naming it.  The machine
 * is reached only through the target (drivers/target.h): stat, and portable
 * commands that coreutils+findutils and busybox both provide (mkdir -p,
 * cp -R, cp -Rp, mv, rm -rf, rmdir, ln -s/-sfn, chown, chgrp, chmod, and
 * find with -mindepth/-maxdepth/-type/-name/-print0).  User values are
 * separate argv entries, never shell text, with "--" before them.
 *
 * Choices where the AWSTOE documentation is silent:
 *   - CreateFolder without `permissions` gives a new folder 0755 (0777 under
 *     the usual root umask 022), set explicitly so the result does not depend
 *     on the target's umask; an existing folder keeps its mode.  With
 *     overwrite true (the default) an existing folder is kept as it is, with
 *     its contents: "overwrite" only allows it to exist.  owner, group and
 *     permissions apply to the folder itself, not to parents mkdir -p makes.
 *   - CopyFolder onto an existing folder merges: the source's contents are
 *     copied over it and files only the destination has stay.  MoveFolder
 *     onto an existing folder merges the same way (cp -Rp keeps modes, owners
 *     and times, then the source is removed); onto a new name it is a plain
 *     mv.  Replacing the whole destination was rejected: a destination such as
 *     /usr/local/bin would lose everything else in it.
 *   - Wildcards: `*` in the last component only, matching folders (a leading
 *     dot is not special, as in Go's filepath.Match); no match is an error.
 *   - DeleteFolder refuses a symbolic link (DeleteFile removes links).
 *   - CreateSymlink: a relative `target` is checked relative to the link's
 *     folder, where the system will resolve it. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "actions.h"
#include "cleanup.h"
#include "xalloc.h"

#define DEFAULT_FOLDER_MODE 0755 /* 0777 & ~022 */

/* ---- CreateFolder ------------------------------------------------------------ */

static int
create_folder_one (struct kiln_action_ctx *ctx, json_t *entry, void *opaque _unused_, kiln_error **err)
{
  const char *path = NULL, *owner = NULL, *group = NULL, *perms = NULL;
  bool overwrite = true;
  if (kiln_input_required_string (entry, "path", NULL, &path, err) < 0
      || kiln_input_string (entry, "owner", NULL, &owner, err) < 0
      || kiln_input_string (entry, "group", NULL, &group, err) < 0
      || kiln_input_string (entry, "permissions", NULL, &perms, err) < 0
      || kiln_input_bool (entry, "overwrite", NULL, &overwrite, err) < 0)
    return -1;
  mode_t mode = DEFAULT_FOLDER_MODE;
  if (perms && !kiln_parse_mode (perms, &mode))
    return kiln_fail_invalid (err, "create folder '%s': permissions '%s' must be octal digits such as 0755", path,
                              perms);
  if (*path == '\0')
    return kiln_fail_invalid (err, "create folder: the path is empty");
  if (owner && *owner == '\0')
    owner = NULL;
  if (group && *group == '\0')
    group = NULL;

  struct kiln_target_stat st;
  bool is_folder;
  if (kiln_action_stat_folder (ctx, path, &st, &is_folder, err) < 0)
    return kiln_error_prefix (err, "create folder '%s'", path);
  if (st.exists && !is_folder)
    return kiln_fail (err, "create folder '%s': it exists and is not a folder", path);
  if (st.exists && !overwrite)
    return kiln_fail (err, "create folder '%s': it exists and overwrite is false", path);
  if (!st.exists && kiln_action_make_folder (ctx, path, err) < 0)
    return -1;
  if ((owner || group) && kiln_action_set_owner (ctx, path, owner, group, err) < 0)
    return kiln_error_prefix (err, "create folder '%s'", path);
  /* After chown, which may clear set-id bits. */
  if (!st.exists || perms)
    {
      char octal[8];
      snprintf (octal, sizeof octal, "%04o", (unsigned) mode);
      char *argv[] = {(char *) "chmod", (char *) "--", octal, (char *) path, NULL};
      if (kiln_action_run_checked (ctx, argv, err) < 0)
        return kiln_error_prefix (err, "create folder '%s': set its permissions to %s", path, octal);
    }
  return 0;
}

static int
create_folder_run (struct kiln_action_ctx *ctx, kiln_error **err)
{
  return kiln_action_for_each_entry (ctx, create_folder_one, NULL, err);
}

/* ---- CopyFolder and MoveFolder ------------------------------------------------ */

/* Copies or moves the folder from to the folder path to (trailing '/'
 * already resolved). */
static int
transfer_folder (struct kiln_action_ctx *ctx, bool move, const char *from, const char *to, bool overwrite,
                 kiln_error **err)
{
  struct kiln_target_stat st;
  bool is_folder;
  if (kiln_action_stat_folder (ctx, to, &st, &is_folder, err) < 0)
    return -1;
  if (st.exists && !is_folder)
    return kiln_fail (err, "the destination exists and is not a folder");
  if (st.exists && !overwrite)
    return kiln_fail (err, "the destination folder exists and overwrite is false");

  /* "FROM/." names the folder's contents: cp -R copies them into an existing
   * TO (a merge) or makes TO as a copy of FROM. */
  _cleanup_free_ char *contents = kiln_path_join (from, ".");
  if (!st.exists)
    {
      if (kiln_action_make_parent (ctx, to, err) < 0)
        return -1;
      char *mv[] = {(char *) "mv", (char *) "--", (char *) from, (char *) to, NULL};
      char *cp[] = {(char *) "cp", (char *) "-R", (char *) "--", contents, (char *) to, NULL};
      return kiln_action_run_checked (ctx, move ? mv : cp, err);
    }
  char *cp[] = {(char *) "cp", (char *) (move ? "-Rp" : "-R"), (char *) "--", contents, (char *) to, NULL};
  if (kiln_action_run_checked (ctx, cp, err) < 0)
    return -1;
  if (!move)
    return 0;
  char *rm[] = {(char *) "rm", (char *) "-rf", (char *) "--", (char *) from, NULL};
  if (kiln_action_run_checked (ctx, rm, err) < 0)
    return kiln_error_prefix (err, "remove '%s' after copying it", from);
  return 0;
}

/* One entry of CopyFolder or MoveFolder; opaque points to true for
 * MoveFolder. */
static int
transfer_entry (struct kiln_action_ctx *ctx, json_t *entry, void *opaque, kiln_error **err)
{
  bool move = *(const bool *) opaque;
  const char *source_in = NULL, *destination = NULL;
  bool overwrite = true;
  if (kiln_input_required_string (entry, "source", NULL, &source_in, err) < 0
      || kiln_input_required_string (entry, "destination", NULL, &destination, err) < 0
      || kiln_input_bool (entry, "overwrite", NULL, &overwrite, err) < 0)
    return -1;
  const char *verb = move ? "move" : "copy";
  if (*source_in == '\0' || *destination == '\0')
    return kiln_fail_invalid (err, "%s folder: source and destination must not be empty", verb);
  _cleanup_free_ char *source = kiln_path_trim_slashes (source_in);
  _cleanup_free_ char *source_dir = kiln_path_dir (source);
  if (strchr (source_dir, '*'))
    return kiln_fail_invalid (err, "%s folder '%s': '*' is allowed only in the folder name", verb, source);
  bool into = kiln_path_ends_with_slash (destination);

  if (kiln_path_has_wildcard (source))
    {
      if (!into)
        return kiln_fail_invalid (err, "%s folder '%s' to '%s': with a wildcard the destination must end in '/'",
                                  verb, source, destination);
      _cleanup_strv_ char **matches = NULL;
      size_t n = 0;
      if (kiln_action_expand_wildcard (ctx, source, true, &matches, &n, err) < 0)
        return kiln_error_prefix (err, "%s folder '%s'", verb, source);
      if (n == 0)
        return kiln_error_set (err, KILN_ERR_NOT_FOUND, 0, "%s folder '%s': no folder matches", verb, source);
      for (size_t i = 0; i < n; i++)
        {
          _cleanup_free_ char *to = kiln_path_join (destination, kiln_path_base (matches[i]));
          if (transfer_folder (ctx, move, matches[i], to, overwrite, err) < 0)
            return kiln_error_prefix (err, "%s folder '%s' to '%s'", verb, matches[i], to);
        }
      return 0;
    }

  struct kiln_target_stat st;
  bool is_folder;
  if (kiln_action_stat_folder (ctx, source, &st, &is_folder, err) < 0)
    return -1;
  if (!st.exists)
    return kiln_error_set (err, KILN_ERR_NOT_FOUND, 0, "%s folder '%s': no such folder", verb, source);
  if (!is_folder)
    return kiln_fail (err, "%s folder '%s': not a folder (use %s)", verb, source, move ? "MoveFile" : "CopyFile");
  _cleanup_free_ char *to
    = into ? kiln_path_join (destination, kiln_path_base (source)) : kiln_path_trim_slashes (destination);
  if (transfer_folder (ctx, move, source, to, overwrite, err) < 0)
    return kiln_error_prefix (err, "%s folder '%s' to '%s'", verb, source, to);
  return 0;
}

static int
copy_folder_run (struct kiln_action_ctx *ctx, kiln_error **err)
{
  return kiln_action_for_each_entry (ctx, transfer_entry, &(bool){false}, err);
}

static int
move_folder_run (struct kiln_action_ctx *ctx, kiln_error **err)
{
  return kiln_action_for_each_entry (ctx, transfer_entry, &(bool){true}, err);
}

/* ---- DeleteFolder ---------------------------------------------------------------- */

/* Without force, rmdir does the work and refuses a non-empty folder; its
 * failure is then explained by looking for an entry in the folder. */
static int
delete_folder_one (struct kiln_action_ctx *ctx, json_t *entry, void *opaque _unused_, kiln_error **err)
{
  const char *path = NULL;
  bool force = false;
  if (kiln_input_required_string (entry, "path", NULL, &path, err) < 0
      || kiln_input_bool (entry, "force", NULL, &force, err) < 0)
    return -1;
  if (*path == '\0')
    return kiln_fail_invalid (err, "delete folder: the path is empty");

  struct kiln_target_stat st;
  if (kiln_target_stat (ctx->target, path, &st, err) < 0)
    return kiln_error_prefix (err, "delete folder '%s'", path);
  if (!st.exists)
    return kiln_error_set (err, KILN_ERR_NOT_FOUND, 0, "delete folder '%s': no such folder", path);
  if (st.is_symlink)
    return kiln_fail (err, "delete folder '%s': it is a symbolic link (use DeleteFile)", path);
  if (!st.is_dir)
    return kiln_fail (err, "delete folder '%s': not a folder (use DeleteFile)", path);

  if (force)
    {
      char *rm[] = {(char *) "rm", (char *) "-rf", (char *) "--", (char *) path, NULL};
      if (kiln_action_run_checked (ctx, rm, err) < 0)
        return kiln_error_prefix (err, "delete folder '%s'", path);
      return 0;
    }
  char *rmdir[] = {(char *) "rmdir", (char *) "--", (char *) path, NULL};
  _cleanup_error_ kiln_error *why = NULL;
  if (kiln_action_run_checked (ctx, rmdir, &why) == 0)
    return 0;

  _cleanup_free_ char *start = NULL;
  start = kiln_xasprintf ("%s%s", path[0] == '-' ? "./" : "", path);
  char *find[] = {(char *) "find", start, (char *) "-mindepth", (char *) "1", (char *) "-maxdepth", (char *) "1",
                  (char *) "-print", NULL};
  struct kiln_buf out = KILN_BUF_INIT;
  _cleanup_error_ kiln_error *ignored = NULL;
  bool not_empty = kiln_target_run_checked (ctx->target, find, ctx->timeout_seconds, &out, &ignored) == 0
                   && out.len > 0;
  kiln_buf_release (&out);
  if (not_empty)
    return kiln_fail (err, "delete folder '%s': the folder is not empty (set force: true to delete its contents)",
                      path);
  kiln_error_move (err, &why);
  return kiln_error_prefix (err, "delete folder '%s'", path);
}

static int
delete_folder_run (struct kiln_action_ctx *ctx, kiln_error **err)
{
  return kiln_action_for_each_entry (ctx, delete_folder_one, NULL, err);
}

/* ---- CreateSymlink ------------------------------------------------------------------ */

static int
create_symlink_one (struct kiln_action_ctx *ctx, json_t *entry, void *opaque _unused_, kiln_error **err)
{
  const char *path = NULL, *target = NULL;
  bool force = false;
  if (kiln_input_required_string (entry, "path", NULL, &path, err) < 0
      || kiln_input_required_string (entry, "target", NULL, &target, err) < 0
      || kiln_input_bool (entry, "force", NULL, &force, err) < 0)
    return -1;
  if (*path == '\0' || *target == '\0')
    return kiln_fail_invalid (err, "create symbolic link: path and target must not be empty");
  _cleanup_free_ char *link = kiln_path_trim_slashes (path);

  /* A relative target is resolved from the link's folder. */
  _cleanup_free_ char *link_dir = kiln_path_dir (link);
  _cleanup_free_ char *target_path = target[0] == '/' ? kiln_xstrdup (target) : kiln_path_join (link_dir, target);
  struct kiln_target_stat st;
  if (kiln_target_stat (ctx->target, target_path, &st, err) < 0)
    return kiln_error_prefix (err, "create symbolic link '%s'", path);
  if (!st.exists)
    return kiln_error_set (err, KILN_ERR_NOT_FOUND, 0, "create symbolic link '%s': the target '%s' does not exist",
                           path, target_path);

  if (kiln_target_stat (ctx->target, link, &st, err) < 0)
    return kiln_error_prefix (err, "create symbolic link '%s'", path);
  if (st.exists && !st.is_symlink)
    return kiln_fail (err, "create symbolic link '%s': the path exists and is not a symbolic link", path);
  if (st.exists && !force)
    return kiln_fail (err, "create symbolic link '%s': a symbolic link exists there (set force: true to replace it)",
                      path);
  if (!st.exists && kiln_action_make_folder (ctx, link_dir, err) < 0)
    return kiln_error_prefix (err, "create symbolic link '%s'", path);
  /* -n: replace a link to a folder instead of creating inside the folder. */
  char *argv[] = {(char *) "ln", (char *) (st.exists ? "-sfn" : "-s"), (char *) "--", (char *) target, link, NULL};
  if (kiln_action_run_checked (ctx, argv, err) < 0)
    return kiln_error_prefix (err, "create symbolic link '%s' to '%s'", path, target);
  return 0;
}

static int
create_symlink_run (struct kiln_action_ctx *ctx, kiln_error **err)
{
  return kiln_action_for_each_entry (ctx, create_symlink_one, NULL, err);
}

/* ---- static checks -------------------------------------------------------------------- */

/* permissions are octal; a wildcard source sits in the last component and
 * wants a destination ending in '/'. */
static int
check_entry (const struct kiln_action_check_ctx *ctx, const struct kiln_yaml_node *e, void *opaque _unused_,
             kiln_error **err)
{
  if (kiln_action_check_permissions (ctx, e, "0755", err) < 0)
    return -1;
  return kiln_action_check_wildcard_source (ctx, e, true, err);
}

static int
check_entries (const struct kiln_action_check_ctx *ctx, kiln_error **err)
{
  return kiln_action_check_each_entry (ctx, check_entry, NULL, err);
}

/* ---- definitions ------------------------------------------------------------------------ */

static const struct kiln_input_field create_folder_fields[] = {
  {"path", KILN_IN_STRING, true},        {"owner", KILN_IN_STRING, false},
  {"group", KILN_IN_STRING, false},      {"permissions", KILN_IN_STRING, false},
  {"overwrite", KILN_IN_BOOL, false},    {NULL, 0, false},
};

static const struct kiln_input_field transfer_fields[] = {
  {"source", KILN_IN_STRING, true},
  {"destination", KILN_IN_STRING, true},
  {"overwrite", KILN_IN_BOOL, false},
  {NULL, 0, false},
};

static const struct kiln_input_field delete_folder_fields[] = {
  {"path", KILN_IN_STRING, true},
  {"force", KILN_IN_BOOL, false},
  {NULL, 0, false},
};

static const struct kiln_input_field create_symlink_fields[] = {
  {"path", KILN_IN_STRING, true},
  {"target", KILN_IN_STRING, true},
  {"force", KILN_IN_BOOL, false},
  {NULL, 0, false},
};

const struct kiln_action kiln_action_create_folder = {
  .name = "CreateFolder",
  .shape = KILN_INPUTS_LIST,
  .fields = create_folder_fields,
  .check = check_entries,
  .run = create_folder_run,
};

const struct kiln_action kiln_action_copy_folder = {
  .name = "CopyFolder",
  .shape = KILN_INPUTS_LIST,
  .fields = transfer_fields,
  .check = check_entries,
  .run = copy_folder_run,
};

const struct kiln_action kiln_action_move_folder = {
  .name = "MoveFolder",
  .shape = KILN_INPUTS_LIST,
  .fields = transfer_fields,
  .check = check_entries,
  .run = move_folder_run,
};

const struct kiln_action kiln_action_delete_folder = {
  .name = "DeleteFolder",
  .shape = KILN_INPUTS_LIST,
  .fields = delete_folder_fields,
  .run = delete_folder_run,
};

const struct kiln_action kiln_action_create_symlink = {
  .name = "CreateSymlink",
  .shape = KILN_INPUTS_LIST,
  .fields = create_symlink_fields,
  .run = create_symlink_run,
};
