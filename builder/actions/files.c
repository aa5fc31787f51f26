/* files.c - the file action modules: CreateFile, AppendFile, CopyFile,
 * MoveFile, DeleteFile, ReadFile, ListFiles and SetFileEncoding.
 *
 * Every module takes a list of entries and handles them in order; the first
 * entry that fails ends the step, with "inputs[N]: " naming it.  The machine
 * is reached only through the target (drivers/target.h): content moves with
 * get/put, everything else is a portable command run on the target (cp, mv,
 * rm, mkdir -p, chown, chmod, readlink -f, find with -mindepth/-maxdepth/
 * -type/-name/-print0), which coreutils+findutils and busybox both provide.
 * User values are always separate argv entries, never shell text, and every
 * utility that takes options gets "--" before them.
 *
 * Encodings (AppendFile, CreateFile, ReadFile, SetFileEncoding) go through
 * the one table and iconv(3) conversion below, on the machine running kiln,
 * so the target needs no iconv.
 *
 * Choices where the AWSTOE documentation is silent:
 *   - Written content is the YAML string as is: "\n" written in a plain YAML
 *     scalar stays a backslash and an n.  No BOM is ever written; bare utf16
 *     and utf32 mean little-endian.
 *   - ReadFile drops one leading byte-order mark from what it returns.
 *   - A new file's mode, without `permissions`, is 0644: 0666 under the usual
 *     root umask 022 (the target's umask cannot apply, since kiln sets the
 *     mode when it puts the file).  Rewriting an existing file keeps its mode
 *     and, when kiln's put replaced the inode, its owner and group.
 *   - Rewriting a symbolic link (CreateFile on an existing link, AppendFile,
 *     SetFileEncoding) writes the file the link resolves to; the link stays.
 *   - Wildcards: `*` in the last component only, matched like Go's
 *     filepath.Match (a leading dot is not special).  CopyFile and MoveFile
 *     fail when nothing matches; DeleteFile then has nothing to do and
 *     succeeds.  Matches never include folders.
 *   - CopyFile copies like cp: a new file takes the source's mode under the
 *     umask, an existing destination keeps its mode.  A destination that names
 *     an existing folder without a trailing '/' is an error.
 *   - DeleteFile on a path that does not exist is an error ("no such file");
 *     on a symbolic link it removes the link.
 *   - ListFiles lists everything that is not a folder (regular files,
 *     symbolic links, ...), as absolute paths in byte order. */
#include <errno.h>
#include <iconv.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "actions.h"
#include "cleanup.h"
#include "xalloc.h"

#define DEFAULT_FILE_MODE 0644 /* 0666 & ~022 */
/* How many paths one rm command gets when deleting wildcard matches. */
#define RM_BATCH 64

/* ---- encodings ---------------------------------------------------------- */

static const struct encoding {
  const char *name;       /* as documents spell it, matched without regard to case */
  const char *iconv_name; /* byte order explicit, so iconv adds no BOM */
} encodings[] = {
  {"utf8", "UTF-8"},         {"utf-8", "UTF-8"},
  {"utf16", "UTF-16LE"},     {"utf-16", "UTF-16LE"},
  {"utf16-LE", "UTF-16LE"},  {"utf-16-LE", "UTF-16LE"},
  {"utf16-BE", "UTF-16BE"},  {"utf-16-BE", "UTF-16BE"},
  {"utf32", "UTF-32LE"},     {"utf-32", "UTF-32LE"},
  {"utf32-LE", "UTF-32LE"},  {"utf-32-LE", "UTF-32LE"},
  {"utf32-BE", "UTF-32BE"},  {"utf-32-BE", "UTF-32BE"},
};

#define ENCODING_NAMES                                                                                                 \
  "utf8, utf-8, utf16, utf-16, utf16-LE, utf-16-LE, utf16-BE, utf-16-BE, utf32, utf-32, utf32-LE, utf-32-LE, "      \
  "utf32-BE, utf-32-BE"

static const struct encoding *
find_encoding (const char *name)
{
  for (size_t i = 0; i < sizeof encodings / sizeof encodings[0]; i++)
    if (strcasecmp (encodings[i].name, name) == 0)
      return &encodings[i];
  return NULL;
}

/* Reads the optional `encoding` input of an entry (default utf8). */
static int
input_encoding (json_t *entry, const struct encoding **out, kiln_error **err)
{
  const char *name = "utf8";
  if (kiln_input_string (entry, "encoding", NULL, &name, err) < 0)
    return -1;
  *out = find_encoding (name);
  if (*out == NULL)
    return kiln_fail_invalid (err, "unknown encoding '%s' (expected one of " ENCODING_NAMES ")", name);
  return 0;
}

static bool
is_utf8 (const struct encoding *e)
{
  return strcmp (e->iconv_name, "UTF-8") == 0;
}

/* Converts len bytes of in from one iconv encoding to another, appending to
 * out.  `shown` names the source encoding as the user wrote it; callers say
 * which file or text was converted.  Also used from UTF-8 to UTF-8, which
 * validates. */
static int
convert (const char *from, const char *to, const char *in, size_t len, struct kiln_buf *out, const char *shown,
         kiln_error **err)
{
  iconv_t cd = iconv_open (to, from);
  if (cd == (iconv_t) -1)
    return kiln_error_set (err, KILN_ERR_UNSUPPORTED, errno, "convert from %s to %s", from, to);
  char *inp = (char *) in;
  size_t inleft = len;
  char chunk[4096];
  int r = 0;
  for (;;)
    {
      char *outp = chunk;
      size_t outleft = sizeof chunk;
      size_t n = inleft > 0 ? iconv (cd, &inp, &inleft, &outp, &outleft) : iconv (cd, NULL, NULL, &outp, &outleft);
      int saved = errno;
      kiln_buf_append (out, chunk, sizeof chunk - outleft);
      if (n != (size_t) -1)
        {
          if (inleft == 0 && outp == chunk)
            break;
          continue;
        }
      if (saved == E2BIG)
        continue;
      size_t at = (size_t) (inp - in);
      if (saved == EILSEQ)
        r = kiln_fail_invalid (err, "not valid %s: bad sequence at byte %zu", shown, at);
      else if (saved == EINVAL)
        r = kiln_fail_invalid (err, "not valid %s: it ends inside a character (byte %zu)", shown, at);
      else
        r = kiln_fail_errno (err, saved, "convert from %s", shown);
      break;
    }
  iconv_close (cd);
  return r;
}

/* UTF-8 text (a document's content) into the entry's encoding. */
static int
encode_content (const char *text, size_t len, const struct encoding *enc, struct kiln_buf *out, kiln_error **err)
{
  if (convert ("UTF-8", enc->iconv_name, text, len, out, "utf8", err) < 0)
    return kiln_error_prefix (err, "content");
  return 0;
}

/* ---- small helpers ------------------------------------------------------- */

static int
stat_path (struct kiln_action_ctx *ctx, const char *path, struct kiln_target_stat *st, kiln_error **err)
{
  return kiln_target_stat (ctx->target, path, st, err);
}

/* Where writing to path really lands: path itself, or for a symbolic link the
 * file it resolves to (readlink -f on the target).  *st describes that file. */
static int
resolve_file (struct kiln_action_ctx *ctx, const char *path, char **real, struct kiln_target_stat *st,
              kiln_error **err)
{
  if (stat_path (ctx, path, st, err) < 0)
    return -1;
  if (!st->is_symlink)
    {
      *real = kiln_xstrdup (path);
      return 0;
    }
  char *argv[] = {(char *) "readlink", (char *) "-f", (char *) "--", (char *) path, NULL};
  struct kiln_buf out = KILN_BUF_INIT;
  if (kiln_target_run_checked (ctx->target, argv, ctx->timeout_seconds, &out, err) < 0)
    {
      kiln_buf_release (&out);
      return kiln_error_prefix (err, "resolve the symbolic link '%s'", path);
    }
  while (out.len > 0 && out.data[out.len - 1] == '\n')
    out.data[--out.len] = '\0';
  *real = kiln_buf_steal (&out);
  if (**real == '\0')
    {
      free (*real);
      *real = NULL;
      return kiln_fail (err, "resolve the symbolic link '%s': readlink printed nothing", path);
    }
  return stat_path (ctx, *real, st, err);
}

/* resolve_file for a module that rewrites an existing regular file; errors
 * begin "VERB 'PATH'" ("append to '/x': no such file"). */
static int
resolve_existing_file (struct kiln_action_ctx *ctx, const char *path, const char *verb, char **real,
                       struct kiln_target_stat *st, kiln_error **err)
{
  if (resolve_file (ctx, path, real, st, err) < 0)
    return kiln_error_prefix (err, "%s '%s'", verb, path);
  if (!st->exists)
    return kiln_error_set (err, KILN_ERR_NOT_FOUND, 0, "%s '%s': no such file", verb, path);
  if (!st->is_file)
    return kiln_fail (err, "%s '%s': not a regular file", verb, path);
  return 0;
}

static int
set_mode (struct kiln_action_ctx *ctx, const char *path, mode_t mode, kiln_error **err)
{
  char octal[8];
  snprintf (octal, sizeof octal, "%04o", (unsigned) (mode & 07777));
  char *argv[] = {(char *) "chmod", (char *) "--", octal, (char *) path, NULL};
  if (kiln_action_run_checked (ctx, argv, err) < 0)
    return kiln_error_prefix (err, "set the permissions of '%s' to %s", path, octal);
  return 0;
}

/* Writes data to path with mode.  When old describes a file that was there
 * before and the put gave the path another owner (a put may replace the
 * inode), the old owner and group come back, then the mode again since chown
 * clears set-id bits. */
static int
replace_file (struct kiln_action_ctx *ctx, const char *path, const void *data, size_t len, mode_t mode,
              const struct kiln_target_stat *old, kiln_error **err)
{
  if (kiln_target_put_data (ctx->target, data, len, path, mode, err) < 0)
    return kiln_error_prefix (err, "write '%s'", path);
  if (old == NULL || !old->exists)
    return 0;
  struct kiln_target_stat now;
  if (stat_path (ctx, path, &now, err) < 0)
    return -1;
  if (now.uid == old->uid && now.gid == old->gid)
    return 0;
  char ids[64];
  snprintf (ids, sizeof ids, "%lu:%lu", (unsigned long) old->uid, (unsigned long) old->gid);
  char *argv[] = {(char *) "chown", (char *) "--", ids, (char *) path, NULL};
  if (kiln_action_run_checked (ctx, argv, err) < 0)
    return kiln_error_prefix (err, "restore the owner of '%s'", path);
  if (mode & 06000)
    return set_mode (ctx, path, mode, err);
  return 0;
}

/* ---- CreateFile ------------------------------------------------------------ */

static int
create_file_one (struct kiln_action_ctx *ctx, json_t *entry, void *opaque _unused_, kiln_error **err)
{
  const char *path = NULL, *content = "", *owner = NULL, *group = NULL, *perms = NULL;
  const struct encoding *enc;
  bool overwrite = true;
  if (kiln_input_required_string (entry, "path", NULL, &path, err) < 0
      || kiln_input_string (entry, "content", NULL, &content, err) < 0
      || input_encoding (entry, &enc, err) < 0 || kiln_input_string (entry, "owner", NULL, &owner, err) < 0
      || kiln_input_string (entry, "group", NULL, &group, err) < 0
      || kiln_input_string (entry, "permissions", NULL, &perms, err) < 0
      || kiln_input_bool (entry, "overwrite", NULL, &overwrite, err) < 0)
    return -1;
  mode_t mode = DEFAULT_FILE_MODE;
  if (perms && !kiln_parse_mode (perms, &mode))
    return kiln_fail_invalid (err, "permissions '%s' must be octal digits such as 0644", perms);
  if (owner && *owner == '\0')
    owner = NULL;
  if (group && *group == '\0')
    group = NULL;

  struct kiln_buf data = KILN_BUF_INIT;
  if (encode_content (content, strlen (content), enc, &data, err) < 0)
    {
      kiln_buf_release (&data);
      return kiln_error_prefix (err, "create '%s'", path);
    }

  _cleanup_free_ char *real = NULL;
  struct kiln_target_stat st;
  int r = resolve_file (ctx, path, &real, &st, err);
  if (r == 0 && st.exists && st.is_dir)
    r = kiln_fail (err, "it is a folder");
  else if (r == 0 && st.exists && !overwrite)
    r = kiln_fail (err, "the file exists and overwrite is false");
  else if (r == 0)
    {
      /* An existing file keeps its mode unless permissions are given, as
       * when a program truncates and rewrites it. */
      if (st.exists && perms == NULL)
        mode = st.mode;
      if (!st.exists)
        r = kiln_action_make_parent (ctx, real, err);
      if (r == 0)
        r = replace_file (ctx, real, kiln_buf_str (&data), data.len, mode, owner || group ? NULL : &st, err);
      if (r == 0 && (owner || group))
        {
          r = kiln_action_set_owner (ctx, real, owner, group, err);
          if (r == 0 && (mode & 06000))
            r = set_mode (ctx, real, mode, err);
        }
    }
  kiln_buf_release (&data);
  if (r < 0)
    return kiln_error_prefix (err, "create '%s'", path);
  return 0;
}

static int
create_file_run (struct kiln_action_ctx *ctx, kiln_error **err)
{
  return kiln_action_for_each_entry (ctx, create_file_one, NULL, err);
}

/* ---- AppendFile ------------------------------------------------------------ */

/* The file is read, extended and written back (a target has no "append"),
 * keeping its mode and owner.  It must exist: AppendFile never creates. */
static int
append_file_one (struct kiln_action_ctx *ctx, json_t *entry, void *opaque _unused_, kiln_error **err)
{
  const char *path = NULL, *content = "";
  const struct encoding *enc;
  if (kiln_input_required_string (entry, "path", NULL, &path, err) < 0
      || kiln_input_string (entry, "content", NULL, &content, err) < 0
      || input_encoding (entry, &enc, err) < 0)
    return -1;

  _cleanup_free_ char *real = NULL;
  struct kiln_target_stat st;
  if (resolve_existing_file (ctx, path, "append to", &real, &st, err) < 0)
    return -1;

  struct kiln_buf data = KILN_BUF_INIT;
  int r = kiln_target_get_data (ctx->target, real, &data, err);
  if (r == 0)
    r = encode_content (content, strlen (content), enc, &data, err);
  if (r == 0)
    r = replace_file (ctx, real, kiln_buf_str (&data), data.len, st.mode, &st, err);
  kiln_buf_release (&data);
  if (r < 0)
    return kiln_error_prefix (err, "append to '%s'", path);
  return 0;
}

static int
append_file_run (struct kiln_action_ctx *ctx, kiln_error **err)
{
  return kiln_action_for_each_entry (ctx, append_file_one, NULL, err);
}

/* ---- CopyFile and MoveFile ------------------------------------------------- */

/* Copies or moves one file to `to`, a file path (the trailing '/' already
 * resolved).  The destination's folder exists. */
static int
transfer_one (struct kiln_action_ctx *ctx, bool move, const char *from, const char *to, bool overwrite,
              kiln_error **err)
{
  struct kiln_target_stat st;
  if (stat_path (ctx, to, &st, err) < 0)
    return -1;
  if (st.exists && st.is_dir)
    return kiln_fail (err, "the destination is a folder (end it with '/' to %s into it)", move ? "move" : "copy");
  if (st.exists && !overwrite)
    return kiln_fail (err, "the destination exists and overwrite is false");
  char *cp[] = {(char *) "cp", (char *) "--", (char *) from, (char *) to, NULL};
  char *mv[] = {(char *) "mv", (char *) "-f", (char *) "--", (char *) from, (char *) to, NULL};
  return kiln_action_run_checked (ctx, move ? mv : cp, err);
}

/* One entry of CopyFile or MoveFile; opaque points to true for MoveFile. */
static int
transfer_entry (struct kiln_action_ctx *ctx, json_t *entry, void *opaque, kiln_error **err)
{
  bool move = *(const bool *) opaque;
  const char *source = NULL, *destination = NULL;
  bool overwrite = true;
  if (kiln_input_required_string (entry, "source", NULL, &source, err) < 0
      || kiln_input_required_string (entry, "destination", NULL, &destination, err) < 0
      || kiln_input_bool (entry, "overwrite", NULL, &overwrite, err) < 0)
    return -1;
  const char *verb = move ? "move" : "copy";
  _cleanup_free_ char *source_dir = kiln_path_dir (source);
  if (strchr (source_dir, '*'))
    return kiln_fail_invalid (err, "%s '%s': '*' is allowed only in the file name", verb, source);
  bool into_folder = kiln_path_ends_with_slash (destination);

  if (kiln_path_has_wildcard (source))
    {
      if (!into_folder)
        return kiln_fail_invalid (err, "%s '%s' to '%s': with a wildcard the destination must end in '/'", verb,
                                  source, destination);
      _cleanup_strv_ char **matches = NULL;
      size_t n = 0;
      if (kiln_action_expand_wildcard (ctx, source, false, &matches, &n, err) < 0)
        return kiln_error_prefix (err, "%s '%s'", verb, source);
      if (n == 0)
        return kiln_error_set (err, KILN_ERR_NOT_FOUND, 0, "%s '%s': no file matches", verb, source);
      if (kiln_action_make_parent (ctx, destination, err) < 0)
        return kiln_error_prefix (err, "%s '%s'", verb, source);
      for (size_t i = 0; i < n; i++)
        {
          _cleanup_free_ char *to = kiln_path_join (destination, kiln_path_base (matches[i]));
          if (transfer_one (ctx, move, matches[i], to, overwrite, err) < 0)
            return kiln_error_prefix (err, "%s '%s' to '%s'", verb, matches[i], to);
        }
      return 0;
    }

  struct kiln_target_stat st;
  if (stat_path (ctx, source, &st, err) < 0)
    return -1;
  if (!st.exists)
    return kiln_error_set (err, KILN_ERR_NOT_FOUND, 0, "%s '%s': no such file", verb, source);
  if (st.is_dir)
    return kiln_fail (err, "%s '%s': it is a folder (use %s)", verb, source, move ? "MoveFolder" : "CopyFolder");
  _cleanup_free_ char *to = into_folder ? kiln_path_join (destination, kiln_path_base (source)) : kiln_xstrdup (destination);
  if (kiln_action_make_parent (ctx, to, err) < 0 || transfer_one (ctx, move, source, to, overwrite, err) < 0)
    return kiln_error_prefix (err, "%s '%s' to '%s'", verb, source, to);
  return 0;
}

static int
copy_file_run (struct kiln_action_ctx *ctx, kiln_error **err)
{
  return kiln_action_for_each_entry (ctx, transfer_entry, &(bool){false}, err);
}

static int
move_file_run (struct kiln_action_ctx *ctx, kiln_error **err)
{
  return kiln_action_for_each_entry (ctx, transfer_entry, &(bool){true}, err);
}

/* ---- DeleteFile ------------------------------------------------------------ */

static int
delete_file_one (struct kiln_action_ctx *ctx, json_t *entry, void *opaque _unused_, kiln_error **err)
{
  const char *path = NULL;
  if (kiln_input_required_string (entry, "path", NULL, &path, err) < 0)
    return -1;
  _cleanup_free_ char *dir = kiln_path_dir (path);
  if (strchr (dir, '*'))
    return kiln_fail_invalid (err, "delete '%s': '*' is allowed only in the file name", path);

  if (kiln_path_has_wildcard (path))
    {
      _cleanup_strv_ char **matches = NULL;
      size_t n = 0;
      if (kiln_action_expand_wildcard (ctx, path, false, &matches, &n, err) < 0)
        return kiln_error_prefix (err, "delete '%s'", path);
      if (n == 0)
        kiln_action_note (ctx, "DeleteFile: no file matches '%s'", path);
      for (size_t i = 0; i < n; i += RM_BATCH)
        {
          size_t k = n - i < RM_BATCH ? n - i : RM_BATCH;
          char *argv[RM_BATCH + 4] = {(char *) "rm", (char *) "-f", (char *) "--"};
          memcpy (argv + 3, matches + i, k * sizeof *argv);
          argv[3 + k] = NULL;
          if (kiln_action_run_checked (ctx, argv, err) < 0)
            return kiln_error_prefix (err, "delete '%s'", path);
        }
      return 0;
    }

  struct kiln_target_stat st;
  if (stat_path (ctx, path, &st, err) < 0)
    return -1;
  if (!st.exists)
    return kiln_error_set (err, KILN_ERR_NOT_FOUND, 0, "delete '%s': no such file", path);
  if (st.is_dir)
    return kiln_fail (err, "delete '%s': it is a folder (use DeleteFolder)", path);
  char *argv[] = {(char *) "rm", (char *) "-f", (char *) "--", (char *) path, NULL};
  if (kiln_action_run_checked (ctx, argv, err) < 0)
    return kiln_error_prefix (err, "delete '%s'", path);
  return 0;
}

static int
delete_file_run (struct kiln_action_ctx *ctx, kiln_error **err)
{
  return kiln_action_for_each_entry (ctx, delete_file_one, NULL, err);
}

/* ---- ReadFile -------------------------------------------------------------- */

/* Fills the `content` output; with several entries the last one read wins,
 * as chaining `outputs.content` can name only one value. */
static int
read_file_one (struct kiln_action_ctx *ctx, json_t *entry, void *opaque _unused_, kiln_error **err)
{
  const char *path = NULL;
  const struct encoding *enc;
  bool print = false;
  if (kiln_input_required_string (entry, "path", NULL, &path, err) < 0
      || input_encoding (entry, &enc, err) < 0
      || kiln_input_bool (entry, "printFileContent", NULL, &print, err) < 0)
    return -1;

  struct kiln_target_stat st;
  if (stat_path (ctx, path, &st, err) < 0)
    return -1;
  if (!st.exists)
    return kiln_error_set (err, KILN_ERR_NOT_FOUND, 0, "read '%s': no such file", path);
  if (st.is_dir)
    return kiln_fail (err, "read '%s': it is a folder", path);

  struct kiln_buf raw = KILN_BUF_INIT, text = KILN_BUF_INIT;
  int r = kiln_target_get_data (ctx->target, path, &raw, err);
  if (r == 0)
    r = convert (enc->iconv_name, "UTF-8", kiln_buf_str (&raw), raw.len, &text, enc->name, err);
  if (r == 0)
    {
      const char *s = kiln_buf_str (&text);
      size_t len = text.len;
      if (len >= 3 && memcmp (s, "\xEF\xBB\xBF", 3) == 0)
        s += 3, len -= 3;
      json_object_set_new (ctx->outputs, "content", json_stringn (s, len));
      if (print)
        kiln_action_note (ctx, "%.*s", (int) (len > 0 && s[len - 1] == '\n' ? len - 1 : len), s);
    }
  kiln_buf_release (&raw);
  kiln_buf_release (&text);
  if (r < 0)
    return kiln_error_prefix (err, "read '%s'", path);
  return 0;
}

static int
read_file_run (struct kiln_action_ctx *ctx, kiln_error **err)
{
  return kiln_action_for_each_entry (ctx, read_file_one, NULL, err);
}

/* ---- ListFiles ------------------------------------------------------------- */

/* Runs find on "PATH/." (which also enters a folder reached through a symbolic
 * link) and rewrites each "PATH/./x" as ABS/x, ABS being PATH made absolute
 * with the target's working directory.  With several entries the last one
 * fills `files`. */
static int
list_files_one (struct kiln_action_ctx *ctx, json_t *entry, void *opaque _unused_, kiln_error **err)
{
  const char *path = NULL, *pattern = NULL;
  bool recursive = false;
  if (kiln_input_required_string (entry, "path", NULL, &path, err) < 0
      || kiln_input_string (entry, "fileNamePattern", NULL, &pattern, err) < 0
      || kiln_input_bool (entry, "recursive", NULL, &recursive, err) < 0)
    return -1;
  if (*path == '\0')
    return kiln_fail_invalid (err, "list '%s': the path is empty", path);
  if (pattern && strchr (pattern, '/'))
    return kiln_fail_invalid (err, "list '%s': fileNamePattern '%s' must be a file name, without '/'", path,
                              pattern);

  /* The folder without trailing slashes; "/" stays "/". */
  _cleanup_free_ char *folder = kiln_path_trim_slashes (path);
  _cleanup_free_ char *start = NULL;
  start = kiln_xasprintf ("%s%s/.", folder[0] == '-' ? "./" : "", strcmp (folder, "/") == 0 ? "" : folder);

  /* "PATH/." is a folder, or PATH is missing or something else. */
  struct kiln_target_stat st;
  if (stat_path (ctx, start, &st, err) < 0)
    return -1;
  if (!st.exists || !st.is_dir)
    {
      if (stat_path (ctx, folder, &st, err) < 0)
        return -1;
      if (!st.exists)
        return kiln_error_set (err, KILN_ERR_NOT_FOUND, 0, "list '%s': no such folder", path);
      return kiln_fail (err, "list '%s': not a folder", path);
    }

  _cleanup_free_ char *abs = NULL;
  if (folder[0] == '/')
    abs = kiln_xstrdup (strcmp (folder, "/") == 0 ? "" : folder);
  else
    {
      char *pwd[] = {(char *) "pwd", NULL};
      struct kiln_buf cwd = KILN_BUF_INIT;
      if (kiln_target_run_checked (ctx->target, pwd, ctx->timeout_seconds, &cwd, err) < 0)
        {
          kiln_buf_release (&cwd);
          return kiln_error_prefix (err, "list '%s'", path);
        }
      while (cwd.len > 0 && (cwd.data[cwd.len - 1] == '\n' || cwd.data[cwd.len - 1] == '/'))
        cwd.data[--cwd.len] = '\0';
      const char *rel = folder;
      while (rel[0] == '.' && rel[1] == '/')
        rel += 2;
      abs = kiln_xasprintf ("%s%s%s", kiln_buf_str (&cwd), strcmp (rel, ".") == 0 ? "" : "/",
                            strcmp (rel, ".") == 0 ? "" : rel);
      kiln_buf_release (&cwd);
    }

  struct kiln_buf out = KILN_BUF_INIT;
  if (kiln_action_run_find (ctx, start, recursive, false, pattern, &out, err) < 0)
    return kiln_error_prefix (err, "list '%s'", path);
  size_t count = 0;
  _cleanup_strv_ char **found = kiln_action_split_print0 (&out, NULL, false, &count);
  kiln_buf_release (&out);

  size_t skip = strlen (start);
  struct kiln_buf files = KILN_BUF_INIT;
  for (size_t i = 0; i < count; i++)
    {
      /* find printed START + "/rest". */
      const char *rest = strncmp (found[i], start, skip) == 0 ? found[i] + skip : found[i];
      char *full = NULL;
      full = kiln_xasprintf ("%s%s", abs, rest);
      free (found[i]);
      found[i] = full;
    }
  kiln_sort_strings (found, count);
  for (size_t i = 0; i < count; i++)
    kiln_buf_printf (&files, "%s%s", i ? "," : "", found[i]);
  json_object_set_new (ctx->outputs, "files", json_stringn (kiln_buf_str (&files), files.len));
  kiln_buf_release (&files);
  return 0;
}

static int
list_files_run (struct kiln_action_ctx *ctx, kiln_error **err)
{
  return kiln_action_for_each_entry (ctx, list_files_one, NULL, err);
}

/* ---- SetFileEncoding --------------------------------------------------------- */

/* The file's bytes are UTF-8 (validated) and are rewritten in the encoding,
 * keeping its mode and owner.  To utf8 it only validates. */
static int
set_file_encoding_one (struct kiln_action_ctx *ctx, json_t *entry, void *opaque _unused_, kiln_error **err)
{
  const char *path = NULL;
  const struct encoding *enc;
  if (kiln_input_required_string (entry, "path", NULL, &path, err) < 0
      || input_encoding (entry, &enc, err) < 0)
    return -1;

  _cleanup_free_ char *real = NULL;
  struct kiln_target_stat st;
  if (resolve_existing_file (ctx, path, "set the encoding of", &real, &st, err) < 0)
    return -1;

  struct kiln_buf raw = KILN_BUF_INIT, converted = KILN_BUF_INIT;
  int r = kiln_target_get_data (ctx->target, real, &raw, err);
  if (r == 0)
    r = convert ("UTF-8", enc->iconv_name, kiln_buf_str (&raw), raw.len, &converted, "utf8", err);
  if (r == 0 && !is_utf8 (enc))
    r = replace_file (ctx, real, kiln_buf_str (&converted), converted.len, st.mode, &st, err);
  kiln_buf_release (&raw);
  kiln_buf_release (&converted);
  if (r < 0)
    return kiln_error_prefix (err, "set the encoding of '%s' to %s", path, enc->name);
  return 0;
}

static int
set_file_encoding_run (struct kiln_action_ctx *ctx, kiln_error **err)
{
  return kiln_action_for_each_entry (ctx, set_file_encoding_one, NULL, err);
}

/* ---- static checks ----------------------------------------------------------- */

enum {
  CHECK_WILD_SOURCE = 1 << 0, /* `source` may hold `*` in its last component; destination then ends in '/' */
  CHECK_WILD_PATH = 1 << 1,   /* `path` may hold `*` in its last component */
  CHECK_PATTERN = 1 << 2,     /* `fileNamePattern` is a name, without '/' */
};

/* `*` only in the last component of the literal path v. */
static int
check_wildcard_position (const struct kiln_action_check_ctx *ctx, const struct kiln_yaml_node *v, kiln_error **err)
{
  _cleanup_free_ char *dir = kiln_path_dir (v->value);
  if (strchr (dir, '*'))
    return kiln_yaml_error (err, ctx->doc, v, "'%s': '*' is allowed only in the last path component", v->value);
  return 0;
}

/* Checks one entry; opaque points to the CHECK_* flags of the module. */
static int
check_entry (const struct kiln_action_check_ctx *ctx, const struct kiln_yaml_node *e, void *opaque, kiln_error **err)
{
  int flags = *(const int *) opaque;
  const struct kiln_yaml_node *v;
  if ((v = kiln_input_literal (e, "encoding")) && find_encoding (v->value) == NULL)
    return kiln_yaml_error (err, ctx->doc, v, "unknown encoding '%s' (expected one of " ENCODING_NAMES ")", v->value);
  if (kiln_action_check_permissions (ctx, e, "0644", err) < 0)
    return -1;
  if ((flags & CHECK_WILD_PATH) && (v = kiln_input_literal (e, "path")) && check_wildcard_position (ctx, v, err) < 0)
    return -1;
  if ((flags & CHECK_WILD_SOURCE) && kiln_action_check_wildcard_source (ctx, e, false, err) < 0)
    return -1;
  if ((flags & CHECK_PATTERN) && (v = kiln_input_literal (e, "fileNamePattern")) && strchr (v->value, '/'))
    return kiln_yaml_error (err, ctx->doc, v, "fileNamePattern '%s' must be a file name, without '/'", v->value);
  return 0;
}

static int
check_entries (const struct kiln_action_check_ctx *ctx, int flags, kiln_error **err)
{
  return kiln_action_check_each_entry (ctx, check_entry, &flags, err);
}

static int
check_plain (const struct kiln_action_check_ctx *ctx, kiln_error **err)
{
  return check_entries (ctx, 0, err);
}

static int
check_source_wildcard (const struct kiln_action_check_ctx *ctx, kiln_error **err)
{
  return check_entries (ctx, CHECK_WILD_SOURCE, err);
}

static int
check_path_wildcard (const struct kiln_action_check_ctx *ctx, kiln_error **err)
{
  return check_entries (ctx, CHECK_WILD_PATH, err);
}

static int
check_list_files (const struct kiln_action_check_ctx *ctx, kiln_error **err)
{
  return check_entries (ctx, CHECK_PATTERN, err);
}

/* ---- definitions ------------------------------------------------------------- */

static const struct kiln_input_field create_file_fields[] = {
  {"path", KILN_IN_STRING, true},         {"content", KILN_IN_STRING, false},
  {"encoding", KILN_IN_STRING, false},    {"owner", KILN_IN_STRING, false},
  {"group", KILN_IN_STRING, false},       {"permissions", KILN_IN_STRING, false},
  {"overwrite", KILN_IN_BOOL, false},     {NULL, 0, false},
};

static const struct kiln_input_field append_file_fields[] = {
  {"path", KILN_IN_STRING, true},
  {"content", KILN_IN_STRING, false},
  {"encoding", KILN_IN_STRING, false},
  {NULL, 0, false},
};

static const struct kiln_input_field transfer_fields[] = {
  {"source", KILN_IN_STRING, true},
  {"destination", KILN_IN_STRING, true},
  {"overwrite", KILN_IN_BOOL, false},
  {NULL, 0, false},
};

static const struct kiln_input_field path_fields[] = {
  {"path", KILN_IN_STRING, true},
  {NULL, 0, false},
};

static const struct kiln_input_field read_file_fields[] = {
  {"path", KILN_IN_STRING, true},
  {"encoding", KILN_IN_STRING, false},
  {"printFileContent", KILN_IN_BOOL, false},
  {NULL, 0, false},
};

static const struct kiln_input_field list_files_fields[] = {
  {"path", KILN_IN_STRING, true},
  {"fileNamePattern", KILN_IN_STRING, false},
  {"recursive", KILN_IN_BOOL, false},
  {NULL, 0, false},
};

static const struct kiln_input_field set_file_encoding_fields[] = {
  {"path", KILN_IN_STRING, true},
  {"encoding", KILN_IN_STRING, false},
  {NULL, 0, false},
};

static const char *const read_file_outputs[] = {"content", NULL};
static const char *const list_files_outputs[] = {"files", NULL};

const struct kiln_action kiln_action_create_file = {
  .name = "CreateFile",
  .shape = KILN_INPUTS_LIST,
  .fields = create_file_fields,
  .check = check_plain,
  .run = create_file_run,
};

const struct kiln_action kiln_action_append_file = {
  .name = "AppendFile",
  .shape = KILN_INPUTS_LIST,
  .fields = append_file_fields,
  .check = check_plain,
  .run = append_file_run,
};

const struct kiln_action kiln_action_copy_file = {
  .name = "CopyFile",
  .shape = KILN_INPUTS_LIST,
  .fields = transfer_fields,
  .check = check_source_wildcard,
  .run = copy_file_run,
};

const struct kiln_action kiln_action_move_file = {
  .name = "MoveFile",
  .shape = KILN_INPUTS_LIST,
  .fields = transfer_fields,
  .check = check_source_wildcard,
  .run = move_file_run,
};

const struct kiln_action kiln_action_delete_file = {
  .name = "DeleteFile",
  .shape = KILN_INPUTS_LIST,
  .fields = path_fields,
  .check = check_path_wildcard,
  .run = delete_file_run,
};

const struct kiln_action kiln_action_read_file = {
  .name = "ReadFile",
  .shape = KILN_INPUTS_LIST,
  .fields = read_file_fields,
  .outputs = read_file_outputs,
  .check = check_plain,
  .run = read_file_run,
};

const struct kiln_action kiln_action_list_files = {
  .name = "ListFiles",
  .shape = KILN_INPUTS_LIST,
  .fields = list_files_fields,
  .outputs = list_files_outputs,
  .check = check_list_files,
  .run = list_files_run,
};

const struct kiln_action kiln_action_set_file_encoding = {
  .name = "SetFileEncoding",
  .shape = KILN_INPUTS_LIST,
  .fields = set_file_encoding_fields,
  .check = check_plain,
  .run = set_file_encoding_run,
};
