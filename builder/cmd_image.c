/* cmd_image.c - `kiln image ...`: base images (convert, import and export
 * are in cmd_image_transfer.c).
 *
 * `kiln image bootstrap NAME [--output FILE] [--rebuild]` turns the
 * definition images/NAME/ into a bootable qcow2 by running its build.sh (as
 * images/README.md describes: `build.sh OUTPUT`, with KILN_IMAGE_WORKDIR and
 * KILN_IMAGE_CACHE in its environment).  Images live in the cache
 * ($XDG_CACHE_HOME/kiln/images, ~/.cache/kiln/images) under a name that
 * carries a hash of the definition, and an image already there is reused
 * (building debian-12 takes minutes) unless --rebuild.  build.sh writes the
 * cached file atomically (a temporary beside it, renamed when complete).
 * --output FILE gets a copy of the cached image, also atomically (a
 * temporary beside FILE, synced, renamed), so an interrupted or failed
 * bootstrap leaves neither a partial cache entry nor a partial FILE.  The
 * path (FILE, or the cached image) is printed on stdout. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "buf.h"
#include "cleanup.h"
#include "cli.h"
#include "digest.h"
#include "driver.h"
#include "fsutil.h"
#include "process.h"
#include "rundir.h"
#include "xalloc.h"

static void
image_usage (FILE *out)
{
  fputs ("usage: kiln image bootstrap NAME [--output FILE.qcow2] [--rebuild]\n"
         "       kiln image list\n"
         "       kiln image convert IN OUT [--format F] [--compress]\n"
         "       kiln image import FILE --name NAME [--share ACCOUNT]... [...]   (an AMI from a disk)\n"
         "       kiln image export IMAGE OUT [--format F] [...]                  (a disk from an AMI)\n",
         out);
}

/* Where image definitions are: $KILN_IMAGES_DIR, the source tree this kiln
 * was built from, or the installed data directory. */
static const char *
images_dir (void)
{
  const char *env = getenv ("KILN_IMAGES_DIR");
  if (env && *env)
    return env;
  if (access (KILN_SOURCE_DIR "/images", R_OK) == 0)
    return KILN_SOURCE_DIR "/images";
  return KILN_DATA_DIR "/images";
}

/* Appends "RELATIVE-NAME\n" and the contents of every regular file under
 * dir (names starting with '.' skipped), in name order, descending into
 * folders (tiny keeps its root file system's files in rootfs/). */
static int
hash_tree (const char *dir, const char *rel, struct kiln_buf *all, int depth, kiln_error **err)
{
  if (depth > 16)
    return kiln_fail (err, "image definition folder '%s' is nested too deep", dir);
  struct dirent **names = NULL;
  int n = scandir (dir, &names, NULL, alphasort);
  if (n < 0)
    return kiln_fail_errno (err, errno, "read image definition '%s'", dir);
  int r = 0;
  for (int i = 0; i < n; i++)
    {
      if (r == 0 && names[i]->d_name[0] != '.')
        {
          _cleanup_free_ char *path = NULL;
          _cleanup_free_ char *name = NULL;
          path = kiln_xasprintf ("%s/%s", dir, names[i]->d_name);
          name = kiln_xasprintf ("%s%s%s", rel, *rel ? "/" : "", names[i]->d_name);
          struct stat st;
          if (stat (path, &st) == 0 && S_ISREG (st.st_mode))
            {
              kiln_buf_printf (all, "%s\n", name);
              kiln_read_file (path, all, NULL);
            }
          else if (stat (path, &st) == 0 && S_ISDIR (st.st_mode))
            r = hash_tree (path, name, all, depth + 1, err);
        }
      free (names[i]);
    }
  free (names);
  return r;
}

/* SHA-256 over the definition's files, those in its folders too, and the
 * shared lib.sh, so a changed definition gets a new cache name. */
static int
definition_hash (const char *dir, char out[17], kiln_error **err)
{
  struct kiln_buf all = KILN_BUF_INIT;
  _cleanup_free_ char *lib = NULL;
  lib = kiln_xasprintf ("%s/../lib.sh", dir);
  if (hash_tree (dir, "", &all, 0, err) < 0)
    {
      kiln_buf_release (&all);
      return -1;
    }
  kiln_read_file (lib, &all, NULL);
  char hex[65];
  kiln_sha256_hex (all.data ? all.data : "", all.len, hex);
  kiln_buf_release (&all);
  memcpy (out, hex, 16);
  out[16] = '\0';
  return 0;
}

/* Bytes per copy_file_range / read-write round: small enough that a SIGINT
 * is noticed quickly. */
#define COPY_CHUNK (8u << 20)

/* Copies the image src to dst: into a temporary file beside dst, synced and
 * renamed over dst only when complete.  On failure or interruption (SIGINT,
 * SIGTERM: kiln_cli_cancel) the temporary file is removed and dst is left as
 * it was.  copy_file_range shares extents where the file system can; across
 * file systems that refuse it, plain reads and writes. */
static int
copy_image_atomic (const char *src, const char *dst, kiln_error **err)
{
  _cleanup_close_ int in = open (src, O_RDONLY | O_CLOEXEC);
  if (in < 0)
    return kiln_fail_errno (err, errno, "open '%s'", src);
  struct stat st;
  if (fstat (in, &st) < 0)
    return kiln_fail_errno (err, errno, "stat '%s'", src);
  _cleanup_unlink_ char *tmp = NULL;
  _cleanup_close_ int out = kiln_make_temp_beside (dst, &tmp, err);
  if (out < 0)
    return -1;
  _cleanup_free_ char *buf = NULL;
  bool plain = false;
  off_t left = st.st_size;
  while (left > 0)
    {
      if (kiln_cli_cancel)
        return kiln_error_set (err, KILN_ERR_CANCELLED, 0, "interrupted while copying '%s' to '%s'", src, dst);
      size_t want = left > (off_t) COPY_CHUNK ? COPY_CHUNK : (size_t) left;
      ssize_t n = -1;
      if (!plain)
        {
          n = copy_file_range (in, NULL, out, NULL, want, 0);
          if (n < 0 && (errno == EXDEV || errno == ENOSYS || errno == EOPNOTSUPP || errno == EINVAL))
            {
              plain = true;
              continue;
            }
        }
      else
        {
          if (buf == NULL && (buf = malloc (COPY_CHUNK)) == NULL)
            abort ();
          n = read (in, buf, want);
          if (n > 0 && kiln_write_all (out, buf, (size_t) n) < 0)
            return kiln_fail_errno (err, errno, "write '%s'", tmp);
        }
      if (n < 0 && errno == EINTR)
        continue;
      if (n < 0)
        return kiln_fail_errno (err, errno, "copy '%s' to '%s'", src, tmp);
      if (n == 0)
        return kiln_fail (err, "copy '%s': the file shrank while it was copied", src);
      left -= n;
    }
  if (fchmod (out, 0644) < 0 || fsync (out) < 0)
    return kiln_fail_errno (err, errno, "write '%s'", tmp);
  if (rename (tmp, dst) < 0)
    return kiln_fail_errno (err, errno, "rename '%s' to '%s'", tmp, dst);
  free (kiln_steal_pointer (&tmp));
  return 0;
}

static void
stream_to_stderr (void *opaque, enum kiln_stream stream, const char *data, size_t len)
{
  (void) opaque;
  (void) stream;
  fwrite (data, 1, len, stderr);
}

static int build_image (const char *name, const char *def, const char *script, const char *debs,
                        const char *output);

static int
bootstrap (int argc, char **argv)
{
  static const struct option options[] = {
    {"output", required_argument, NULL, 'o'},
    {"rebuild", no_argument, NULL, 'r'},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
  };
  const char *output = NULL;
  bool rebuild = false;
  int opt;
  optind = 1;
  while ((opt = getopt_long (argc, argv, "o:h", options, NULL)) != -1)
    switch (opt)
      {
      case 'o':
        output = optarg;
        break;
      case 'r':
        rebuild = true;
        break;
      case 'h':
        image_usage (stdout);
        return KILN_EXIT_OK;
      default:
        image_usage (stderr);
        return KILN_EXIT_USAGE;
      }
  if (optind != argc - 1)
    {
      image_usage (stderr);
      return KILN_EXIT_USAGE;
    }
  const char *name = argv[optind];
  _cleanup_error_ kiln_error *e = NULL;
  _cleanup_free_ char *def = kiln_xasprintf ("%s/%s", images_dir (), name);
  _cleanup_free_ char *script = kiln_xasprintf ("%s/build.sh", def);
  if (strchr (name, '/') || name[0] == '.' || access (script, R_OK) < 0)
    {
      fprintf (stderr, "kiln image bootstrap: no image definition '%s' (in %s)\n", name, images_dir ());
      return KILN_EXIT_FAILED;
    }

  _cleanup_free_ char *cache = NULL;
  _cleanup_free_ char *cached = NULL;
  _cleanup_free_ char *debs = NULL;
  char hash[17];
  if (kiln_cache_dir (&cache, &e) < 0 || definition_hash (def, hash, &e) < 0)
    {
      fprintf (stderr, "kiln image bootstrap: %s\n", kiln_error_message (e));
      return KILN_EXIT_FAILED;
    }
  /* build.sh keeps its downloads in KILN_IMAGE_CACHE/debs. */
  debs = kiln_xasprintf ("%s/packages", cache);
  kiln_mkdir_p (debs, 0755, NULL);
  {
    _cleanup_free_ char *dir = NULL;
    /* build.sh runs in its definition's folder: its output path must be
     * absolute. */
    _cleanup_free_ char *cwd = cache[0] == '/' ? NULL : getcwd (NULL, 0);
    dir = kiln_xasprintf ("%s%s%s/images", cwd ? cwd : "", cwd ? "/" : "", cache);
    cached = kiln_xasprintf ("%s/%s-%s.qcow2", dir, name, hash);
    if (kiln_mkdir_p (dir, 0755, &e) < 0)
      {
        fprintf (stderr, "kiln image bootstrap: %s\n", kiln_error_message (e));
        return KILN_EXIT_FAILED;
      }
  }
  /* --output's folder is made now, so a bad FILE fails before a build. */
  if (output)
    {
      _cleanup_free_ char *dir = kiln_xstrdup (output);
      char *slash = strrchr (dir, '/');
      if (slash && slash != dir)
        *slash = '\0';
      if (slash && kiln_mkdir_p (dir, 0755, &e) < 0)
        {
          fprintf (stderr, "kiln image bootstrap: %s\n", kiln_error_message (e));
          return KILN_EXIT_FAILED;
        }
    }

  int status = KILN_EXIT_OK;
  if (!rebuild && access (cached, R_OK) == 0)
    fprintf (stderr, "kiln image bootstrap: %s is cached (%s)\n", name, cached);
  else if ((status = build_image (name, def, script, debs, cached)) != KILN_EXIT_OK)
    return status;

  if (output == NULL)
    {
      printf ("%s\n", cached);
      return KILN_EXIT_OK;
    }
  if (copy_image_atomic (cached, output, &e) < 0)
    {
      fprintf (stderr, "kiln image bootstrap: %s\n", kiln_error_message (e));
      return kiln_cli_cancel ? 128 + (kiln_cli_signal ? kiln_cli_signal : 2) : KILN_EXIT_FAILED;
    }
  fprintf (stderr, "kiln image bootstrap: copied %s to %s\n", cached, output);
  printf ("%s\n", output);
  return KILN_EXIT_OK;
}

/* Runs images/NAME/build.sh to write output (the cache entry, an absolute
 * path in an existing folder; build.sh renames it into place only when
 * complete).  Returns the command's exit status. */
static int
build_image (const char *name, const char *def, const char *script, const char *debs, const char *output)
{
  _cleanup_error_ kiln_error *e = NULL;

  kiln_rundir_reap_stale (kiln_drivers_reap, NULL);
  struct kiln_rundir *rd = NULL;
  if (kiln_rundir_create ("image", &rd, &e) < 0)
    {
      fprintf (stderr, "kiln image bootstrap: %s\n", kiln_error_message (e));
      return KILN_EXIT_FAILED;
    }
  _cleanup_free_ char *work = NULL;
  _cleanup_free_ char *env_work = NULL;
  _cleanup_free_ char *env_cache = NULL;
  work = kiln_xasprintf ("%s/work", rd->path);
  env_work = kiln_xasprintf ("KILN_IMAGE_WORKDIR=%s", work);
  env_cache = kiln_xasprintf ("KILN_IMAGE_CACHE=%s", debs);
  mkdir (work, 0755);
  char *env[] = {env_work, env_cache, NULL};
  char *cmd[] = {(char *) "bash", (char *) script, (char *) output, NULL};
  struct kiln_process_spec spec = {
    .argv = cmd,
    .env = env,
    .cwd = def,
    .on_output = stream_to_stderr,
    .capture_limit = 1,
    .cancel = &kiln_cli_cancel,
  };
  fprintf (stderr, "kiln image bootstrap: building %s with %s\n", name, script);
  struct kiln_process_result res = {0};
  int r = kiln_process_run (&spec, &res, &e);
  int status = KILN_EXIT_OK;
  if (r < 0)
    {
      fprintf (stderr, "kiln image bootstrap: %s\n", kiln_error_message (e));
      status = kiln_cli_cancel ? 128 + (kiln_cli_signal ? kiln_cli_signal : 2) : KILN_EXIT_FAILED;
    }
  else if (res.exit_code != 0)
    {
      fprintf (stderr, "kiln image bootstrap: %s failed (%s %d)\n", script, res.exit_code < 0 ? "signal" : "status",
               res.exit_code < 0 ? res.term_signal : res.exit_code);
      status = KILN_EXIT_FAILED;
    }
  else
    fprintf (stderr, "kiln image bootstrap: built %s\n", output);
  kiln_process_result_release (&res);
  kiln_rundir_release (rd, false);
  return status;
}

int
kiln_cmd_image (int argc, char **argv)
{
  if (argc >= 2 && strcmp (argv[1], "bootstrap") == 0)
    return bootstrap (argc - 1, argv + 1);
  if (argc >= 2 && strcmp (argv[1], "convert") == 0)
    return kiln_cmd_image_convert (argc - 1, argv + 1);
  if (argc >= 2 && strcmp (argv[1], "import") == 0)
    return kiln_cmd_image_import (argc - 1, argv + 1);
  if (argc >= 2 && strcmp (argv[1], "export") == 0)
    return kiln_cmd_image_export (argc - 1, argv + 1);
  if (argc >= 2 && strcmp (argv[1], "list") == 0)
    {
      struct dirent **names = NULL;
      int n = scandir (images_dir (), &names, NULL, alphasort);
      for (int i = 0; i < n; i++)
        {
          _cleanup_free_ char *script = NULL;
          script = kiln_xasprintf ("%s/%s/build.sh", images_dir (), names[i]->d_name);
          if (names[i]->d_name[0] != '.' && access (script, R_OK) == 0)
            printf ("%s\n", names[i]->d_name);
          free (names[i]);
        }
      free (names);
      return n < 0 ? KILN_EXIT_FAILED : KILN_EXIT_OK;
    }
  image_usage (stderr);
  return KILN_EXIT_USAGE;
}
