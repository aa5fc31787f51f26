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
#include "template.h"

#define DEFAULT_FOLDER_MODE 0755 /* 0777 & ~022 */

/* ---- small helpers (files.c has twins of some: each family stays one file) -- */

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

/* path without trailing slashes ("/" stays "/"), malloc'd. */
static char *
trim_slashes (const char *path)
{
  size_t n = strlen (path);
  while (n > 1 && path[n - 1] == '/')
    n--;
  return strndup (path, n);
}

/* The directory part of path ("" when it has none, "/" for "/x"), malloc'd. */
static char *
dir_part (const char *path)
{
  const char *slash = strrchr (path, '/');
  if (slash == NULL)
    return strdup ("");
  if (slash == path)
    return strdup ("/");
  return strndup (path, (size_t) (slash - path));
}

static const char *
base_part (const char *path)
{
  const char *slash = strrchr (path, '/');
  return slash ? slash + 1 : path;
}

static bool
ends_with_slash (const char *s)
{
  size_t n = strlen (s);
  return n > 0 && s[n - 1] == '/';
}

static char *
join_path (const char *dir, const char *name)
{
  char *r = NULL;
  if (asprintf (&r, "%s%s%s", dir, *dir == '\0' || ends_with_slash (dir) ? "" : "/", name) < 0)
    abort ();
  return r;
}

static int
run (struct kiln_action_ctx *ctx, char *const *argv, kiln_error **err)
{
  return kiln_action_run_checked (ctx, argv, err);
}

/* lstat path, and also whether it is a folder once symbolic links are
 * followed (stat of "path/." resolves them). */
static int
stat_folder (struct kiln_action_ctx *ctx, const char *path, struct kiln_target_stat *st, bool *is_folder,
             kiln_error **err)
{
  if (kiln_target_stat (ctx->target, path, st, err) < 0)
    return -1;
  *is_folder = st->is_dir;
  if (st->exists && st->is_symlink)
    {
      _cleanup_free_ char *dot = join_path (path, ".");
      struct kiln_target_stat through;
      if (kiln_target_stat (ctx->target, dot, &through, err) < 0)
        return -1;
      *is_folder = through.exists && through.is_dir;
    }
  return 0;
}

static int
make_folder (struct kiln_action_ctx *ctx, const char *dir, kiln_error **err)
{
  if (*dir == '\0' || strcmp (dir, "/") == 0)
    return 0;
  char *argv[] = {(char *) "mkdir", (char *) "-p", (char *) "--", (char *) dir, NULL};
  if (run (ctx, argv, err) < 0)
    return kiln_error_prefix (err, "create folder '%s'", dir);
  return 0;
}

static int
make_parent (struct kiln_action_ctx *ctx, const char *path, kiln_error **err)
{
  _cleanup_free_ char *dir = dir_part (path);
  return make_folder (ctx, dir, err);
}

static int
for_each_entry (struct kiln_action_ctx *ctx, int (*fn) (struct kiln_action_ctx *ctx, json_t *entry, kiln_error **err),
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
      if (fn (ctx, entry, err) < 0)
        return kiln_error_prefix (err, "inputs[%zu]", i);
    }
  return 0;
}

static int
qsort_strcmp (const void *a, const void *b)
{
  return strcmp (*(char *const *) a, *(char *const *) b);
}

/* The folders in the folder of pattern_path whose names match its last
 * component, `*` being the only wildcard, sorted; from
 *   find DIR/. -mindepth 1 -maxdepth 1 -type d -name PATTERN -print0 */
static int
expand_wildcard (struct kiln_action_ctx *ctx, const char *pattern_path, char ***matches, size_t *count,
                 kiln_error **err)
{
  _cleanup_free_ char *dir = dir_part (pattern_path);
  struct kiln_buf pat = KILN_BUF_INIT;
  for (const char *p = base_part (pattern_path); *p; p++)
    {
      if (*p == '?' || *p == '[' || *p == ']' || *p == '\\')
        kiln_buf_puts (&pat, "\\");
      kiln_buf_append (&pat, p, 1);
    }
  _cleanup_free_ char *name_pattern = kiln_buf_steal (&pat);
  _cleanup_free_ char *start = NULL;
  if (asprintf (&start, "%s%s/.", dir[0] == '-' ? "./" : "", *dir ? dir : ".") < 0)
    abort ();

  struct kiln_target_stat st;
  if (kiln_target_stat (ctx->target, start, &st, err) < 0)
    return -1;
  if (!st.exists || !st.is_dir)
    return kiln_error_set (err, KILN_ERR_NOT_FOUND, 0, "no such folder '%s'", *dir ? dir : ".");

  char *argv[] = {(char *) "find", start, (char *) "-mindepth", (char *) "1", (char *) "-maxdepth", (char *) "1",
                  (char *) "-type", (char *) "d", (char *) "-name", name_pattern, (char *) "-print0", NULL};
  struct kiln_buf out = KILN_BUF_INIT;
  if (kiln_target_run_checked (ctx->target, argv, ctx->timeout_seconds, &out, err) < 0)
    {
      kiln_buf_release (&out);
      return kiln_error_prefix (err, "list '%s'", pattern_path);
    }
  size_t n = 0;
  for (size_t i = 0; i < out.len; i++)
    n += out.data[i] == '\0';
  char **v = calloc (n + 1, sizeof *v);
  if (v == NULL)
    abort ();
  size_t k = 0;
  for (size_t i = 0; i < out.len && k < n;)
    {
      const char *item = out.data + i;
      size_t len = strlen (item);
      if (len > 0)
        v[k++] = join_path (dir, base_part (item));
      i += len + 1;
    }
  kiln_buf_release (&out);
  qsort (v, k, sizeof *v, qsort_strcmp);
  *matches = v;
  *count = k;
  return 0;
}

/* chown owner[:group] (or chgrp group) on path alone. */
static int
set_owner (struct kiln_action_ctx *ctx, const char *path, const char *owner, const char *group, kiln_error **err)
{
  _cleanup_free_ char *spec = NULL;
  char *argv[] = {(char *) "chown", (char *) "--", NULL, (char *) path, NULL};
  if (owner && group)
    {
      if (asprintf (&spec, "%s:%s", owner, group) < 0)
        abort ();
    }
  else if (owner)
    spec = strdup (owner);
  else
    {
      argv[0] = (char *) "chgrp";
      spec = strdup (group);
    }
  argv[2] = spec;
  if (run (ctx, argv, err) < 0)
    return kiln_error_prefix (err, "set the owner of '%s' to '%s'", path, spec);
  return 0;
}

/* ---- CreateFolder ------------------------------------------------------------ */

static int
create_folder_one (struct kiln_action_ctx *ctx, json_t *entry, kiln_error **err)
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
  if (perms && !parse_mode (perms, &mode))
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
  if (stat_folder (ctx, path, &st, &is_folder, err) < 0)
    return kiln_error_prefix (err, "create folder '%s'", path);
  if (st.exists && !is_folder)
    return kiln_fail (err, "create folder '%s': it exists and is not a folder", path);
  if (st.exists && !overwrite)
    return kiln_fail (err, "create folder '%s': it exists and overwrite is false", path);
  if (!st.exists && make_folder (ctx, path, err) < 0)
    return -1;
  if ((owner || group) && set_owner (ctx, path, owner, group, err) < 0)
    return kiln_error_prefix (err, "create folder '%s'", path);
  /* After chown, which may clear set-id bits. */
  if (!st.exists || perms)
    {
      char octal[8];
      snprintf (octal, sizeof octal, "%04o", (unsigned) mode);
      char *argv[] = {(char *) "chmod", (char *) "--", octal, (char *) path, NULL};
      if (run (ctx, argv, err) < 0)
        return kiln_error_prefix (err, "create folder '%s': set its permissions to %s", path, octal);
    }
  return 0;
}

static int
create_folder_run (struct kiln_action_ctx *ctx, kiln_error **err)
{
  return for_each_entry (ctx, create_folder_one, err);
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
  if (stat_folder (ctx, to, &st, &is_folder, err) < 0)
    return -1;
  if (st.exists && !is_folder)
    return kiln_fail (err, "the destination exists and is not a folder");
  if (st.exists && !overwrite)
    return kiln_fail (err, "the destination folder exists and overwrite is false");

  /* "FROM/." names the folder's contents: cp -R copies them into an existing
   * TO (a merge) or makes TO as a copy of FROM. */
  _cleanup_free_ char *contents = join_path (from, ".");
  if (!st.exists)
    {
      if (make_parent (ctx, to, err) < 0)
        return -1;
      char *mv[] = {(char *) "mv", (char *) "--", (char *) from, (char *) to, NULL};
      char *cp[] = {(char *) "cp", (char *) "-R", (char *) "--", contents, (char *) to, NULL};
      return run (ctx, move ? mv : cp, err);
    }
  char *cp[] = {(char *) "cp", (char *) (move ? "-Rp" : "-R"), (char *) "--", contents, (char *) to, NULL};
  if (run (ctx, cp, err) < 0)
    return -1;
  if (!move)
    return 0;
  char *rm[] = {(char *) "rm", (char *) "-rf", (char *) "--", (char *) from, NULL};
  if (run (ctx, rm, err) < 0)
    return kiln_error_prefix (err, "remove '%s' after copying it", from);
  return 0;
}

static int
transfer_entry (struct kiln_action_ctx *ctx, json_t *entry, bool move, kiln_error **err)
{
  const char *source_in = NULL, *destination = NULL;
  bool overwrite = true;
  if (kiln_input_required_string (entry, "source", NULL, &source_in, err) < 0
      || kiln_input_required_string (entry, "destination", NULL, &destination, err) < 0
      || kiln_input_bool (entry, "overwrite", NULL, &overwrite, err) < 0)
    return -1;
  const char *verb = move ? "move" : "copy";
  if (*source_in == '\0' || *destination == '\0')
    return kiln_fail_invalid (err, "%s folder: source and destination must not be empty", verb);
  _cleanup_free_ char *source = trim_slashes (source_in);
  _cleanup_free_ char *source_dir = dir_part (source);
  if (strchr (source_dir, '*'))
    return kiln_fail_invalid (err, "%s folder '%s': '*' is allowed only in the folder name", verb, source);
  bool into = ends_with_slash (destination);

  if (strchr (base_part (source), '*'))
    {
      if (!into)
        return kiln_fail_invalid (err, "%s folder '%s' to '%s': with a wildcard the destination must end in '/'",
                                  verb, source, destination);
      _cleanup_strv_ char **matches = NULL;
      size_t n = 0;
      if (expand_wildcard (ctx, source, &matches, &n, err) < 0)
        return kiln_error_prefix (err, "%s folder '%s'", verb, source);
      if (n == 0)
        return kiln_error_set (err, KILN_ERR_NOT_FOUND, 0, "%s folder '%s': no folder matches", verb, source);
      for (size_t i = 0; i < n; i++)
        {
          _cleanup_free_ char *to = join_path (destination, base_part (matches[i]));
          if (transfer_folder (ctx, move, matches[i], to, overwrite, err) < 0)
            return kiln_error_prefix (err, "%s folder '%s' to '%s'", verb, matches[i], to);
        }
      return 0;
    }

  struct kiln_target_stat st;
  bool is_folder;
  if (stat_folder (ctx, source, &st, &is_folder, err) < 0)
    return -1;
  if (!st.exists)
    return kiln_error_set (err, KILN_ERR_NOT_FOUND, 0, "%s folder '%s': no such folder", verb, source);
  if (!is_folder)
    return kiln_fail (err, "%s folder '%s': not a folder (use %s)", verb, source, move ? "MoveFile" : "CopyFile");
  _cleanup_free_ char *to = into ? join_path (destination, base_part (source)) : trim_slashes (destination);
  if (transfer_folder (ctx, move, source, to, overwrite, err) < 0)
    return kiln_error_prefix (err, "%s folder '%s' to '%s'", verb, source, to);
  return 0;
}

static int
copy_folder_one (struct kiln_action_ctx *ctx, json_t *entry, kiln_error **err)
{
  return transfer_entry (ctx, entry, false, err);
}

static int
move_folder_one (struct kiln_action_ctx *ctx, json_t *entry, kiln_error **err)
{
  return transfer_entry (ctx, entry, true, err);
}

static int
copy_folder_run (struct kiln_action_ctx *ctx, kiln_error **err)
{
  return for_each_entry (ctx, copy_folder_one, err);
}

static int
move_folder_run (struct kiln_action_ctx *ctx, kiln_error **err)
{
  return for_each_entry (ctx, move_folder_one, err);
}

/* ---- DeleteFolder ---------------------------------------------------------------- */

/* Without force, rmdir does the work and refuses a non-empty folder; its
 * failure is then explained by looking for an entry in the folder. */
static int
delete_folder_one (struct kiln_action_ctx *ctx, json_t *entry, kiln_error **err)
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
      if (run (ctx, rm, err) < 0)
        return kiln_error_prefix (err, "delete folder '%s'", path);
      return 0;
    }
  char *rmdir[] = {(char *) "rmdir", (char *) "--", (char *) path, NULL};
  _cleanup_error_ kiln_error *why = NULL;
  if (run (ctx, rmdir, &why) == 0)
    return 0;

  _cleanup_free_ char *start = NULL;
  if (asprintf (&start, "%s%s", path[0] == '-' ? "./" : "", path) < 0)
    abort ();
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
  return for_each_entry (ctx, delete_folder_one, err);
}

/* ---- CreateSymlink ------------------------------------------------------------------ */

static int
create_symlink_one (struct kiln_action_ctx *ctx, json_t *entry, kiln_error **err)
{
  const char *path = NULL, *target = NULL;
  bool force = false;
  if (kiln_input_required_string (entry, "path", NULL, &path, err) < 0
      || kiln_input_required_string (entry, "target", NULL, &target, err) < 0
      || kiln_input_bool (entry, "force", NULL, &force, err) < 0)
    return -1;
  if (*path == '\0' || *target == '\0')
    return kiln_fail_invalid (err, "create symbolic link: path and target must not be empty");
  _cleanup_free_ char *link = trim_slashes (path);

  /* A relative target is resolved from the link's folder. */
  _cleanup_free_ char *link_dir = dir_part (link);
  _cleanup_free_ char *target_path = target[0] == '/' ? strdup (target) : join_path (link_dir, target);
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
  if (!st.exists && make_folder (ctx, link_dir, err) < 0)
    return kiln_error_prefix (err, "create symbolic link '%s'", path);
  /* -n: replace a link to a folder instead of creating inside the folder. */
  char *argv[] = {(char *) "ln", (char *) (st.exists ? "-sfn" : "-s"), (char *) "--", (char *) target, link, NULL};
  if (run (ctx, argv, err) < 0)
    return kiln_error_prefix (err, "create symbolic link '%s' to '%s'", path, target);
  return 0;
}

static int
create_symlink_run (struct kiln_action_ctx *ctx, kiln_error **err)
{
  return for_each_entry (ctx, create_symlink_one, err);
}

/* ---- static checks -------------------------------------------------------------------- */

static const struct kiln_yaml_node *
literal_value (const struct kiln_yaml_node *entry, const char *key)
{
  const struct kiln_yaml_node *v = kiln_yaml_map_get (entry, key);
  if (v == NULL || v->kind != KILN_YAML_SCALAR || kiln_yaml_is_null (v) || kiln_template_has_expression (v->value))
    return NULL;
  return v;
}

/* permissions are octal; a wildcard source sits in the last component and
 * wants a destination ending in '/'. */
static int
check_entries (const struct kiln_action_check_ctx *ctx, kiln_error **err)
{
  const struct kiln_yaml_node *in = ctx->inputs;
  if (in == NULL || in->kind != KILN_YAML_SEQUENCE)
    return 0;
  for (size_t i = 0; i < in->n_items; i++)
    {
      const struct kiln_yaml_node *e = in->items[i], *v;
      if (e->kind != KILN_YAML_MAPPING)
        continue;
      mode_t mode;
      if ((v = literal_value (e, "permissions")) && !parse_mode (v->value, &mode))
        return kiln_yaml_error (err, ctx->doc, v, "permissions '%s' must be 1 to 4 octal digits, such as 0755",
                                v->value);
      if ((v = literal_value (e, "source")))
        {
          _cleanup_free_ char *source = trim_slashes (v->value);
          _cleanup_free_ char *dir = dir_part (source);
          if (strchr (dir, '*'))
            return kiln_yaml_error (err, ctx->doc, v, "'%s': '*' is allowed only in the last path component",
                                    v->value);
          const struct kiln_yaml_node *d = literal_value (e, "destination");
          if (strchr (base_part (source), '*') && d && !ends_with_slash (d->value))
            return kiln_yaml_error (err, ctx->doc, d,
                                    "the source '%s' has a wildcard, so the destination must be a folder ending "
                                    "in '/'",
                                    v->value);
        }
    }
  return 0;
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
