/* test_rundir.c - run directories (common/rundir.h): files tracked outside
 * are removed on release and by the reaper, publishing renames files
 * together, and a journal left by a command killed between two renames is
 * finished by the reaper. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cleanup.h"
#include "fsutil.h"
#include "rundir.h"
#include "tap.h"
#include "xalloc.h"

static char out_dir[4096];

static char *
out (const char *name)
{
  char *p = NULL;
  p = kiln_xasprintf ("%s/%s", out_dir, name);
  return p;
}

static bool
exists (const char *path)
{
  return access (path, F_OK) == 0;
}

static void
write_text (const char *path, const char *text)
{
  FILE *f = fopen (path, "w");
  if (f)
    {
      fputs (text, f);
      fclose (f);
    }
}

static bool
test_tracked_removed_on_release (void)
{
  struct kiln_rundir *rd = NULL;
  _cleanup_error_ kiln_error *err = NULL;
  _cleanup_free_ char *tmp = out (".partial.tmp");
  CHECK (kiln_rundir_create ("t", &rd, &err) == 0);
  CHECK (kiln_rundir_track (rd, tmp, &err) == 0);
  write_text (tmp, "half");
  /* keep keeps the run directory, never the partial files outside. */
  _cleanup_free_ char *dir = strdup (rd->path);
  kiln_rundir_release (rd, true);
  CHECK (!exists (tmp));
  CHECK (exists (dir));
  CHECK (kiln_remove_tree (dir, &err) == 0);
  return true;
}

static bool
test_publish (void)
{
  struct kiln_rundir *rd = NULL;
  _cleanup_error_ kiln_error *err = NULL;
  _cleanup_free_ char *a_tmp = out (".a.tmp"), *a = out ("a.img"), *b_tmp = out (".b.tmp"), *b = out ("b.json");
  CHECK (kiln_rundir_create ("t", &rd, &err) == 0);
  CHECK (kiln_rundir_track (rd, a_tmp, &err) == 0 && kiln_rundir_track (rd, b_tmp, &err) == 0);
  write_text (a_tmp, "image");
  write_text (b_tmp, "manifest");
  const char *const pairs[] = {a_tmp, a, b_tmp, b, NULL};
  CHECK (kiln_rundir_publish (rd, pairs, &err) == 0);
  _cleanup_free_ char *journal = NULL;
  journal = kiln_xasprintf ("%s/publish", rd->path);
  CHECK (!exists (journal));
  kiln_rundir_release (rd, false);
  CHECK (exists (a) && exists (b) && !exists (a_tmp) && !exists (b_tmp));

  /* A failing rename (the second destination's directory is missing)
   * publishes nothing: the first is undone, the sources are gone. */
  unlink (a);
  CHECK (kiln_rundir_create ("t", &rd, &err) == 0);
  write_text (a_tmp, "image");
  write_text (b_tmp, "manifest");
  _cleanup_free_ char *nowhere = out ("missing-dir/b.json");
  const char *const bad[] = {a_tmp, a, b_tmp, nowhere, NULL};
  CHECK (kiln_rundir_publish (rd, bad, &err) == -1);
  printf ("# %s\n", kiln_error_message (err));
  CHECK (strstr (kiln_error_message (err), "missing-dir/b.json") != NULL);
  CHECK (!exists (a) && !exists (a_tmp) && !exists (b_tmp));
  kiln_rundir_release (rd, false);
  unlink (b);
  return true;
}

/* A child makes a run directory, tracks two partial files and dies (as
 * SIGKILL would: no release); with journal, it dies between the renames. */
static pid_t
die_midway (bool journal)
{
  pid_t pid = fork ();
  if (pid != 0)
    return pid;
  struct kiln_rundir *rd = NULL;
  _cleanup_free_ char *a_tmp = out (".a.tmp"), *a = out ("a.img"), *b_tmp = out (".b.tmp"), *b = out ("b.json");
  if (kiln_rundir_create ("t", &rd, NULL) < 0 || kiln_rundir_track (rd, a_tmp, NULL) < 0
      || kiln_rundir_track (rd, b_tmp, NULL) < 0)
    _exit (1);
  write_text (a_tmp, "image");
  write_text (b_tmp, "manifest");
  if (journal)
    {
      /* What kiln_rundir_publish writes before its renames, then the first. */
      _cleanup_free_ char *path = NULL, *text = NULL;
      path = kiln_xasprintf ("%s/publish", rd->path);
      text = kiln_xasprintf ("%s\n%s\n%s\n%s\n", a_tmp, a, b_tmp, b);
      write_text (path, text);
      if (rename (a_tmp, a) < 0)
        _exit (1);
    }
  _exit (0);
}

static bool
test_reaper (void)
{
  _cleanup_free_ char *a_tmp = out (".a.tmp"), *a = out ("a.img"), *b_tmp = out (".b.tmp"), *b = out ("b.json");
  int status;
  pid_t pid = die_midway (false);
  CHECK (waitpid (pid, &status, 0) == pid && WIFEXITED (status) && WEXITSTATUS (status) == 0);
  CHECK (exists (a_tmp) && exists (b_tmp));
  _cleanup_error_ kiln_error *err = NULL;
  CHECK (kiln_rundir_reap_stale (NULL, &err) == 1);
  CHECK (!exists (a_tmp) && !exists (b_tmp) && !exists (a) && !exists (b));

  pid = die_midway (true);
  CHECK (waitpid (pid, &status, 0) == pid && WIFEXITED (status) && WEXITSTATUS (status) == 0);
  CHECK (exists (a) && !exists (b) && exists (b_tmp));
  CHECK (kiln_rundir_reap_stale (NULL, &err) == 1);
  /* Finished: both published, nothing partial left. */
  CHECK (exists (a) && exists (b) && !exists (a_tmp) && !exists (b_tmp));
  return true;
}

int
main (void)
{
  _cleanup_free_ char *base = NULL;
  _cleanup_error_ kiln_error *err = NULL;
  if (kiln_make_temp_dir ("kiln-test-rundir", &base, &err) < 0)
    {
      printf ("Bail out! %s\n", kiln_error_message (err));
      return 1;
    }
  _cleanup_free_ char *runtime = NULL;
  runtime = kiln_xasprintf ("%s/run", base);
  snprintf (out_dir, sizeof out_dir, "%s/out", base);
  mkdir (out_dir, 0755);
  setenv ("KILN_RUNTIME_DIR", runtime, 1);
  tap_ok (test_tracked_removed_on_release (), "tracked files outside go on release, also when the run dir is kept");
  tap_ok (test_publish (), "publish renames together; a failed rename publishes nothing");
  tap_ok (test_reaper (), "the reaper removes a dead command's partial files and finishes its journal");
  kiln_remove_tree (base, NULL);
  return tap_done ();
}
