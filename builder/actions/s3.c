/* s3.c - S3Download and S3Upload.
 *
 * Transfers run on the machine running kiln, with the credentials, region and
 * endpoint the AWS tools would use there (environment, ~/.aws files,
 * AWS_ENDPOINT_URL...; see common/aws/aws_config.h); files then move to and from
 * the target through its put/get operations.  A guest therefore needs neither
 * network access nor AWS credentials.
 *
 * S3Download: `source` is s3://bucket/key, or s3://bucket/prefix/ followed by '*' for every
 * object under the prefix (at most 1000, sub-folders recreated).  A single
 * object's destination is a file path whose folder must exist; a prefix's
 * destination is an existing folder.  overwrite (default true) false refuses
 * an existing file.  Keys that would land outside the destination ("..")
 * are refused.
 * S3Upload: `source` is a file, a folder (its files, with recurse: its whole
 * tree) or a folder/pattern with `*` in the last part; `destination` is
 * s3://bucket/key for one file or s3://bucket/prefix/ (trailing '/') for
 * several, keys being the paths relative to the source folder. */
#include <errno.h>
#include <fnmatch.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "actions.h"
#include "cleanup.h"
#include "fsutil.h"
#include "s3_client.h"
#include "xalloc.h"

#define MAX_PREFIX_OBJECTS 1000

static const struct kiln_input_field s3_download_fields[] = {
  {"source", KILN_IN_STRING, true},
  {"destination", KILN_IN_STRING, true},
  {"expectedBucketOwner", KILN_IN_STRING, false},
  {"overwrite", KILN_IN_BOOL, false},
  {NULL, 0, false},
};

static const struct kiln_input_field s3_upload_fields[] = {
  {"source", KILN_IN_STRING, true},
  {"destination", KILN_IN_STRING, true},
  {"recurse", KILN_IN_BOOL, false},
  {"expectedBucketOwner", KILN_IN_STRING, false},
  {NULL, 0, false},
};

/* The literal value of the field opaque names is an S3 URI. */
static int
check_s3_uri (const struct kiln_action_check_ctx *ctx, const struct kiln_yaml_node *entry, void *opaque,
              kiln_error **err)
{
  const char *field = opaque;
  const struct kiln_yaml_node *v = kiln_input_literal (entry, field);
  if (v && (strncmp (v->value, "s3://", 5) != 0 || v->value[5] == '\0' || v->value[5] == '/'))
    return kiln_yaml_error (err, ctx->doc, v, "%s must be an S3 URI (s3://bucket/key), not '%s'", field, v->value);
  return 0;
}

static int
s3_download_check (const struct kiln_action_check_ctx *ctx, kiln_error **err)
{
  return kiln_action_check_each_entry (ctx, check_s3_uri, (void *) "source", err);
}

static int
s3_upload_check (const struct kiln_action_check_ctx *ctx, kiln_error **err)
{
  return kiln_action_check_each_entry (ctx, check_s3_uri, (void *) "destination", err);
}

/* What the entries of one step share (kiln_action_for_each_entry's opaque). */
struct s3_step {
  const char *tmpdir; /* local folder where transfers wait */
  size_t index;       /* of the next entry */
  char where[32];     /* "inputs[N]" of the entry being handled */
};

/* Names the entry being handled, "inputs[N]", for kiln_input_* errors (which
 * kiln_action_for_each_entry prefixes with the same name again). */
static const char *
next_entry (struct s3_step *step)
{
  snprintf (step->where, sizeof step->where, "inputs[%zu]", step->index++);
  return step->where;
}

static int
open_client (const char *owner, struct kiln_s3_client **out, kiln_error **err)
{
  struct kiln_s3_options o = {.expected_bucket_owner = owner && *owner ? owner : NULL, .timeout_seconds = 0};
  return kiln_s3_client_new (&o, out, err);
}

/* Refuses keys that would leave the destination folder. */
static bool
safe_relative (const char *rel)
{
  if (rel[0] == '/' || rel[0] == '\0')
    return false;
  const char *p = rel;
  while (*p)
    {
      const char *q = strchrnul (p, '/');
      if ((q - p == 2 && strncmp (p, "..", 2) == 0) || (q - p == 1 && *p == '.'))
        return false;
      p = *q ? q + 1 : q;
    }
  return true;
}

static int
require_folder (struct kiln_target *t, const char *path, const char *what, kiln_error **err)
{
  struct kiln_target_stat st;
  if (kiln_target_stat (t, path, &st, err) < 0)
    return -1;
  if (!st.exists)
    return kiln_error_set (err, KILN_ERR_NOT_FOUND, 0, "%s folder '%s' does not exist", what, path);
  if (!st.is_dir)
    return kiln_fail_invalid (err, "%s '%s' is not a folder", what, path);
  return 0;
}

/* Downloads one object to a local temporary file, then places it on the target. */
static int
download_one (struct kiln_action_ctx *ctx, struct kiln_s3_client *client, const char *bucket, const char *key,
              const char *dest, bool overwrite, const char *tmpdir, kiln_error **err)
{
  struct kiln_target_stat st;
  if (kiln_target_stat (ctx->target, dest, &st, err) < 0)
    return -1;
  if (st.exists && st.is_dir)
    return kiln_fail_invalid (err, "destination '%s' is a folder: give the file's path", dest);
  if (st.exists && !overwrite)
    return kiln_fail_invalid (err, "file '%s' already exists and overwrite is false: not downloading s3://%s/%s", dest,
                              bucket, key);
  _cleanup_free_ char *local = NULL;
  local = kiln_xasprintf ("%s/object", tmpdir);
  int r = kiln_s3_get_object (client, bucket, key, local, err);
  if (r == 0)
    r = kiln_target_put_file (ctx->target, local, dest, 0644, err);
  unlink (local);
  if (r == 0)
    kiln_action_note (ctx, "S3Download: s3://%s/%s -> %s", bucket, key, dest);
  return r;
}

static int
s3_download_entry (struct kiln_action_ctx *ctx, json_t *entry, void *opaque, kiln_error **err)
{
  struct s3_step *step = opaque;
  const char *where = next_entry (step), *tmpdir = step->tmpdir;
  const char *source = NULL, *dest = NULL, *owner = NULL;
  bool overwrite = true;
  if (kiln_input_required_string (entry, "source", where, &source, err) < 0
      || kiln_input_required_string (entry, "destination", where, &dest, err) < 0
      || kiln_input_string (entry, "expectedBucketOwner", where, &owner, err) < 0
      || kiln_input_bool (entry, "overwrite", where, &overwrite, err) < 0)
    return -1;
  _cleanup_free_ char *bucket = NULL;
  _cleanup_free_ char *key = NULL;
  if (kiln_s3_parse_uri (source, &bucket, &key, err) < 0)
    return -1;
  struct kiln_s3_client *client = NULL;
  if (open_client (owner, &client, err) < 0)
    return -1;

  int r = 0;
  size_t klen = strlen (key);
  if (klen > 0 && key[klen - 1] == '*')
    {
      /* A prefix: everything below it, into an existing folder. */
      if (strchr (key, '*') != key + klen - 1 || (klen >= 2 && key[klen - 2] != '/'))
        {
          kiln_s3_client_free (client);
          return kiln_fail_invalid (err, "source '%s': a prefix download ends in '/*'", source);
        }
      key[klen - 1] = '\0';
      if (require_folder (ctx->target, dest, "destination", err) < 0)
        {
          kiln_s3_client_free (client);
          return -1;
        }
      struct kiln_s3_listing l = {0};
      r = kiln_s3_list_objects (client, bucket, key, &l, err);
      if (r == 0 && l.n > MAX_PREFIX_OBJECTS)
        r = kiln_fail_invalid (err, "s3://%s/%s* holds %zu objects: S3Download takes at most %d", bucket, key, l.n,
                               MAX_PREFIX_OBJECTS);
      if (r == 0 && l.n == 0)
        r = kiln_error_set (err, KILN_ERR_NOT_FOUND, 0, "no objects under s3://%s/%s", bucket, key);
      for (size_t i = 0; r == 0 && i < l.n; i++)
        {
          const char *rel = l.objects[i].key + strlen (key);
          if (*rel == '\0')
            continue;
          size_t rl = strlen (rel);
          bool folder_marker = rel[rl - 1] == '/';
          _cleanup_free_ char *trimmed = kiln_xstrndup (rel, folder_marker ? rl - 1 : rl);
          if (!safe_relative (trimmed))
            {
              r = kiln_fail_invalid (err, "object key '%s' would be written outside '%s'", l.objects[i].key, dest);
              break;
            }
          _cleanup_free_ char *target_path = NULL;
          target_path = kiln_xasprintf ("%s/%s", dest, trimmed);
          _cleanup_free_ char *parent = kiln_xstrdup (target_path);
          char *mk[] = {(char *) "mkdir", (char *) "-p", folder_marker ? target_path : dirname (parent), NULL};
          r = kiln_action_run_checked (ctx, mk, err);
          if (r == 0 && !folder_marker)
            r = download_one (ctx, client, bucket, l.objects[i].key, target_path, overwrite, tmpdir, err);
        }
      kiln_s3_listing_release (&l);
    }
  else
    {
      if (klen == 0 || key[klen - 1] == '/')
        r = kiln_fail_invalid (err, "source '%s' names no object: give a key, or a prefix ending in '/*'", source);
      else
        {
          _cleanup_free_ char *copy = kiln_xstrdup (dest);
          const char *folder = dirname (copy);
          r = require_folder (ctx->target, folder, "destination", err);
          if (r == 0)
            r = download_one (ctx, client, bucket, key, dest, overwrite, tmpdir, err);
        }
    }
  kiln_s3_client_free (client);
  return r;
}

/* Files on the target to upload, as paths relative to `base`. */
static int
list_upload_sources (struct kiln_action_ctx *ctx, const char *source, bool recurse, char **base_out,
                     json_t **files_out, kiln_error **err)
{
  _cleanup_free_ char *copy = kiln_xstrdup (source);
  const char *slash = strrchr (source, '/');
  const char *last = slash ? slash + 1 : source;
  _cleanup_json_ json_t *files = json_array ();
  _cleanup_free_ char *base = NULL;
  const char *pattern = "*";

  if (strchr (last, '*'))
    {
      base = slash ? kiln_xstrndup (source, (size_t) (slash - source)) : kiln_xstrdup (".");
      if (base[0] == '\0')
        {
          free (base);
          base = kiln_xstrdup ("/");
        }
      pattern = last;
    }
  else
    {
      struct kiln_target_stat st;
      if (kiln_target_stat (ctx->target, source, &st, err) < 0)
        return -1;
      if (!st.exists)
        return kiln_error_set (err, KILN_ERR_NOT_FOUND, 0, "source '%s' does not exist", source);
      if (!st.is_dir)
        {
          /* One file: its key is decided by the destination. */
          base = slash ? kiln_xstrndup (source, (size_t) (slash - source)) : kiln_xstrdup (".");
          json_array_append_new (files, json_string (last));
          *base_out = kiln_steal_pointer (&base);
          *files_out = kiln_steal_pointer (&files);
          return 0;
        }
      base = kiln_xstrdup (source);
    }

  /* find prints paths one per line; names holding newlines are not supported. */
  char *argv[] = {(char *) "find", base, (char *) "-mindepth", (char *) "1", (char *) "-type", (char *) "f", NULL,
                  NULL, NULL};
  if (!recurse)
    {
      argv[2] = (char *) "-maxdepth";
      argv[3] = (char *) "1";
      argv[4] = (char *) "-type";
      argv[5] = (char *) "f";
    }
  struct kiln_target_command cmd = {.argv = argv, .timeout_seconds = ctx->timeout_seconds};
  struct kiln_target_result res = {0};
  if (kiln_target_run (ctx->target, &cmd, &res, err) < 0)
    return -1;
  if (res.exit_code != 0)
    {
      kiln_error_set (err, KILN_ERR_FAILED, 0, "list '%s': %s", base, kiln_buf_str (&res.err));
      kiln_target_result_release (&res);
      return -1;
    }
  size_t blen = strlen (base);
  char *save = NULL;
  for (char *line = strtok_r (res.out.data ? res.out.data : (char *) "", "\n", &save); line;
       line = strtok_r (NULL, "\n", &save))
    {
      if (strncmp (line, base, blen) != 0)
        continue;
      const char *rel = line + blen;
      while (*rel == '/')
        rel++;
      /* The pattern applies to the entries directly in the folder. */
      char first[4096];
      snprintf (first, sizeof first, "%.*s", (int) strcspn (rel, "/"), rel);
      if (fnmatch (pattern, first, 0) != 0)
        continue;
      json_array_append_new (files, json_string (rel));
    }
  kiln_target_result_release (&res);
  if (json_array_size (files) == 0)
    return kiln_error_set (err, KILN_ERR_NOT_FOUND, 0, "no files match '%s'", source);
  *base_out = kiln_steal_pointer (&base);
  *files_out = kiln_steal_pointer (&files);
  return 0;
}

static int
s3_upload_entry (struct kiln_action_ctx *ctx, json_t *entry, void *opaque, kiln_error **err)
{
  struct s3_step *step = opaque;
  const char *where = next_entry (step), *tmpdir = step->tmpdir;
  const char *source = NULL, *dest = NULL, *owner = NULL;
  bool recurse = false;
  if (kiln_input_required_string (entry, "source", where, &source, err) < 0
      || kiln_input_required_string (entry, "destination", where, &dest, err) < 0
      || kiln_input_string (entry, "expectedBucketOwner", where, &owner, err) < 0
      || kiln_input_bool (entry, "recurse", where, &recurse, err) < 0)
    return -1;
  _cleanup_free_ char *bucket = NULL;
  _cleanup_free_ char *prefix = NULL;
  if (kiln_s3_parse_uri (dest, &bucket, &prefix, err) < 0)
    return -1;
  _cleanup_free_ char *base = NULL;
  _cleanup_json_ json_t *files = NULL;
  if (list_upload_sources (ctx, source, recurse, &base, &files, err) < 0)
    return -1;
  size_t plen = strlen (prefix);
  bool to_folder = plen == 0 || prefix[plen - 1] == '/';
  if (!to_folder && json_array_size (files) > 1)
    return kiln_fail_invalid (err, "destination '%s' names one object but '%s' gives %zu files: end it with '/'",
                              dest, source, json_array_size (files));
  struct kiln_s3_client *client = NULL;
  if (open_client (owner, &client, err) < 0)
    return -1;
  int r = 0;
  size_t i;
  json_t *f;
  json_array_foreach (files, i, f)
    {
      const char *rel = json_string_value (f);
      _cleanup_free_ char *path = NULL;
      _cleanup_free_ char *key = NULL;
      _cleanup_free_ char *local = NULL;
      path = kiln_xasprintf ("%s%s%s", base, strcmp (base, "/") == 0 ? "" : "/", rel);
      key = kiln_xasprintf ("%s%s", prefix, to_folder ? rel : "");
      local = kiln_xasprintf ("%s/upload", tmpdir);
      r = kiln_target_get_file (ctx->target, path, local, err);
      if (r == 0)
        r = kiln_s3_put_object (client, bucket, key, local, NULL, err);
      unlink (local);
      if (r < 0)
        break;
      kiln_action_note (ctx, "S3Upload: %s -> s3://%s/%s", path, bucket, key);
    }
  kiln_s3_client_free (client);
  return r;
}

/* Runs fn for each entry with a fresh local folder for the transfers
 * (struct s3_step), removed afterwards. */
static int
run_entries (struct kiln_action_ctx *ctx, kiln_action_entry_fn fn, kiln_error **err)
{
  _cleanup_free_ char *tmpdir = NULL;
  if (kiln_make_temp_dir ("kiln-s3", &tmpdir, err) < 0)
    return -1;
  struct s3_step step = {.tmpdir = tmpdir};
  int r = kiln_action_for_each_entry (ctx, fn, &step, err);
  kiln_remove_tree (tmpdir, NULL);
  return r;
}

static int
s3_download_run (struct kiln_action_ctx *ctx, kiln_error **err)
{
  return run_entries (ctx, s3_download_entry, err);
}

static int
s3_upload_run (struct kiln_action_ctx *ctx, kiln_error **err)
{
  return run_entries (ctx, s3_upload_entry, err);
}

const struct kiln_action kiln_action_s3_download = {
  .name = "S3Download",
  .shape = KILN_INPUTS_LIST,
  .fields = s3_download_fields,
  .check = s3_download_check,
  .run = s3_download_run,
};

const struct kiln_action kiln_action_s3_upload = {
  .name = "S3Upload",
  .shape = KILN_INPUTS_LIST,
  .fields = s3_upload_fields,
  .check = s3_upload_check,
  .run = s3_upload_run,
};
