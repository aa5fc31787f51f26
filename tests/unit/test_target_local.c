/* test_target_local.c - the local target through the target.h dispatchers,
 * and the dispatchers' handling of a target that lacks operations (TAP
 * output).  TMPDIR points at a private directory for the whole run so the
 * test can check that the conveniences leave no temporary files behind. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cleanup.h"
#include "fsutil.h"
#include "target.h"
#include "tap.h"
#include "xalloc.h"

#define CHECK_OK(call, err)                                                                               \
  do                                                                                                      \
    {                                                                                                     \
      if ((call) < 0)                                                                                     \
        {                                                                                                 \
          printf ("# %s:%d: %s failed: %s\n", __FILE__, __LINE__, #call, kiln_error_message (err));       \
          return false;                                                                                   \
        }                                                                                                 \
    }                                                                                                     \
  while (0)

static char *private_tmpdir;

/* Entries in TMPDIR left by put_data/get_data ("kiln-put-*", "kiln-get-*"). */
static int
count_leftover_temp_files (void)
{
  DIR *d = opendir (private_tmpdir);
  if (d == NULL)
    return -1;
  int n = 0;
  struct dirent *de;
  while ((de = readdir (d)) != NULL)
    if (strncmp (de->d_name, "kiln-put-", 9) == 0 || strncmp (de->d_name, "kiln-get-", 9) == 0)
      n++;
  closedir (d);
  return n;
}

static char *
scratch_path (struct kiln_target *t, const char *name)
{
  char *p = NULL;
  p = kiln_xasprintf ("%s/%s", t->scratch_dir, name);
  return p;
}

static bool
test_open_close (void)
{
  struct kiln_target *t = NULL;
  _cleanup_error_ kiln_error *err = NULL;
  CHECK_OK (kiln_target_local_open (&t, &err), err);
  CHECK (t->scratch_dir != NULL);
  CHECK (strncmp (t->scratch_dir, private_tmpdir, strlen (private_tmpdir)) == 0);
  CHECK (strstr (t->scratch_dir, "/kiln-target-") != NULL);
  struct stat st;
  CHECK (stat (t->scratch_dir, &st) == 0 && S_ISDIR (st.st_mode));

  /* Close removes the scratch directory with what is inside. */
  _cleanup_free_ char *saved = strdup (t->scratch_dir);
  _cleanup_free_ char *inner = scratch_path (t, "sub");
  CHECK (mkdir (inner, 0755) == 0);
  _cleanup_free_ char *file = scratch_path (t, "sub/file");
  CHECK_OK (kiln_target_put_data (t, "x", 1, file, 0600, &err), err);
  kiln_target_close (t);
  CHECK (stat (saved, &st) < 0 && errno == ENOENT);
  return true;
}

static bool
test_put_get_data (struct kiln_target *t)
{
  _cleanup_error_ kiln_error *err = NULL;
  _cleanup_free_ char *path = scratch_path (t, "data.txt");
  const char *text = "line one\nline two\n";
  CHECK_OK (kiln_target_put_data (t, text, strlen (text), path, 0640, &err), err);

  struct kiln_target_stat st;
  CHECK_OK (kiln_target_stat (t, path, &st, &err), err);
  CHECK (st.exists && st.is_file && !st.is_dir && !st.is_symlink);
  CHECK (st.mode == 0640);
  CHECK (st.size == strlen (text));
  CHECK (st.uid == getuid ());

  struct kiln_buf got = KILN_BUF_INIT;
  kiln_buf_puts (&got, "stale contents to be replaced");
  int r = kiln_target_get_data (t, path, &got, &err);
  bool ok = r == 0 && got.len == strlen (text) && strcmp (kiln_buf_str (&got), text) == 0;
  kiln_buf_release (&got);
  CHECK (ok);

  /* Replacing keeps no temporary files and applies the new mode even when
   * the umask would narrow it. */
  mode_t old_umask = umask (077);
  r = kiln_target_put_data (t, "new", 3, path, 0755, &err);
  umask (old_umask);
  CHECK_OK (r, err);
  CHECK_OK (kiln_target_stat (t, path, &st, &err), err);
  CHECK (st.mode == 0755 && st.size == 3);

  /* Empty data round-trips as an empty file. */
  CHECK_OK (kiln_target_put_data (t, "", 0, path, 0600, &err), err);
  CHECK_OK (kiln_target_get_data (t, path, &got, &err), err);
  CHECK (got.len == 0 && strcmp (kiln_buf_str (&got), "") == 0);
  kiln_buf_release (&got);

  CHECK (count_leftover_temp_files () == 0);

  DIR *d = opendir (t->scratch_dir);
  CHECK (d != NULL);
  int entries = 0;
  struct dirent *de;
  while ((de = readdir (d)) != NULL)
    if (de->d_name[0] != '.')
      entries++;
  closedir (d);
  CHECK (entries == 1);
  return true;
}

static bool
test_put_get_file (struct kiln_target *t)
{
  _cleanup_error_ kiln_error *err = NULL;
  _cleanup_free_ char *local_src = NULL;
  CHECK (asprintf (&local_src, "%s/source.bin", private_tmpdir) > 0);
  size_t len = 300000;
  _cleanup_free_ char *data = malloc (len);
  CHECK (data != NULL);
  for (size_t i = 0; i < len; i++)
    data[i] = (char) (i * 31 % 256);
  CHECK_OK (kiln_write_file_atomic (local_src, data, len, 0644, &err), err);

  _cleanup_free_ char *remote = scratch_path (t, "copied.bin");
  CHECK_OK (kiln_target_put_file (t, local_src, remote, 0700, &err), err);
  struct kiln_target_stat st;
  CHECK_OK (kiln_target_stat (t, remote, &st, &err), err);
  CHECK (st.is_file && st.mode == 0700 && st.size == len);

  _cleanup_free_ char *local_back = NULL;
  CHECK (asprintf (&local_back, "%s/back.bin", private_tmpdir) > 0);
  CHECK_OK (kiln_target_get_file (t, remote, local_back, &err), err);
  struct kiln_buf back = KILN_BUF_INIT;
  int r = kiln_read_file (local_back, &back, &err);
  bool same = r == 0 && back.len == len && memcmp (back.data, data, len) == 0;
  kiln_buf_release (&back);
  CHECK (same);
  struct stat lst;
  CHECK (stat (local_back, &lst) == 0 && (lst.st_mode & 07777) == 0700);
  unlink (local_back);
  unlink (local_src);

  /* Errors name the path. */
  _cleanup_free_ char *missing = scratch_path (t, "no-such-file");
  CHECK (kiln_target_get_file (t, missing, local_back, &err) < 0);
  printf ("# %s\n", err->message);
  CHECK (strstr (err->message, missing) != NULL && err->code == KILN_ERR_NOT_FOUND);
  kiln_error_freep (&err);

  _cleanup_free_ char *no_dir = scratch_path (t, "no-dir/file");
  CHECK (kiln_target_put_data (t, "x", 1, no_dir, 0644, &err) < 0);
  printf ("# %s\n", err->message);
  CHECK (strstr (err->message, no_dir) != NULL);
  CHECK (count_leftover_temp_files () == 0);
  return true;
}

static bool
test_stat (struct kiln_target *t)
{
  _cleanup_error_ kiln_error *err = NULL;
  struct kiln_target_stat st;

  CHECK_OK (kiln_target_stat (t, t->scratch_dir, &st, &err), err);
  CHECK (st.exists && st.is_dir && !st.is_file);

  _cleanup_free_ char *missing = scratch_path (t, "missing");
  CHECK_OK (kiln_target_stat (t, missing, &st, &err), err);
  CHECK (!st.exists);

  /* A path through a regular file (ENOTDIR) does not exist either. */
  _cleanup_free_ char *file = scratch_path (t, "plain");
  CHECK_OK (kiln_target_put_data (t, "x", 1, file, 0644, &err), err);
  _cleanup_free_ char *through = scratch_path (t, "plain/below");
  CHECK_OK (kiln_target_stat (t, through, &st, &err), err);
  CHECK (!st.exists);

  _cleanup_free_ char *link = scratch_path (t, "link");
  CHECK (symlink ("plain", link) == 0);
  CHECK_OK (kiln_target_stat (t, link, &st, &err), err);
  CHECK (st.exists && st.is_symlink && !st.is_file);
  return true;
}

struct stream_log {
  struct kiln_buf out;
  struct kiln_buf err;
};

static void
log_output (void *opaque, int stream, const char *data, size_t len)
{
  struct stream_log *log = opaque;
  kiln_buf_append (stream == 1 ? &log->out : &log->err, data, len);
}

static bool
test_run (struct kiln_target *t)
{
  _cleanup_error_ kiln_error *err = NULL;
  char *argv[] = {"sh", "-c", "echo \"$KILN_T:$(pwd)\"; echo warn >&2; exit 7", NULL};
  char *env[] = {"KILN_T=value", NULL};
  struct stream_log log = {KILN_BUF_INIT, KILN_BUF_INIT};
  struct kiln_target_command cmd = {
    .argv = argv, .env = env, .cwd = "/", .timeout_seconds = 10, .on_output = log_output, .opaque = &log};
  struct kiln_target_result res;
  CHECK_OK (kiln_target_run (t, &cmd, &res, &err), err);
  bool ok = res.exit_code == 7 && !res.timed_out && strcmp (kiln_buf_str (&res.out), "value:/\n") == 0
            && strcmp (kiln_buf_str (&res.err), "warn\n") == 0
            && strcmp (kiln_buf_str (&log.out), "value:/\n") == 0
            && strcmp (kiln_buf_str (&log.err), "warn\n") == 0;
  kiln_target_result_release (&res);
  kiln_buf_release (&log.out);
  kiln_buf_release (&log.err);
  CHECK (ok);

  char *sleeper[] = {"sleep", "30", NULL};
  struct kiln_target_command slow = {.argv = sleeper, .timeout_seconds = 1};
  CHECK_OK (kiln_target_run (t, &slow, &res, &err), err);
  ok = res.timed_out && res.exit_code == -1;
  kiln_target_result_release (&res);
  CHECK (ok);

  char *missing[] = {"kiln-no-such-program", NULL};
  struct kiln_target_command bad = {.argv = missing};
  CHECK (kiln_target_run (t, &bad, &res, &err) < 0);
  kiln_target_result_release (&res);
  CHECK (strcmp (err->message, "execute 'kiln-no-such-program': No such file or directory") == 0);
  return true;
}

static bool
test_run_checked (struct kiln_target *t)
{
  _cleanup_error_ kiln_error *err = NULL;
  struct kiln_buf out = KILN_BUF_INIT;
  char *good[] = {"echo", "hello", NULL};
  int r = kiln_target_run_checked (t, good, 10, &out, &err);
  bool ok = r == 0 && strcmp (kiln_buf_str (&out), "hello\n") == 0;
  kiln_buf_release (&out);
  CHECK (ok);
  CHECK_OK (kiln_target_run_checked (t, good, 10, NULL, &err), err);

  char *failing[] = {"sh", "-c", "echo '  first problem  ' >&2; echo >&2; echo second >&2; exit 4", NULL};
  CHECK (kiln_target_run_checked (t, failing, 10, &out, &err) < 0);
  printf ("# %s\n", err->message);
  CHECK (strcmp (err->message, "'sh -c echo '  first problem  ' >&2; echo >&2; echo second >&2; exit 4' "
                               "exited with status 4: first problem; second")
         == 0);
  kiln_error_freep (&err);

  char *quiet[] = {"false", NULL};
  CHECK (kiln_target_run_checked (t, quiet, 10, NULL, &err) < 0);
  CHECK (strcmp (err->message, "'false' exited with status 1") == 0);
  kiln_error_freep (&err);

  char *slow[] = {"sleep", "30", NULL};
  CHECK (kiln_target_run_checked (t, slow, 1, NULL, &err) < 0);
  printf ("# %s\n", err->message);
  CHECK (strcmp (err->message, "'sleep 30' timed out after 1 s") == 0 && err->code == KILN_ERR_TIMEOUT);
  kiln_error_freep (&err);

  char *killed[] = {"sh", "-c", "kill -KILL $$", NULL};
  CHECK (kiln_target_run_checked (t, killed, 10, NULL, &err) < 0);
  CHECK (strstr (err->message, "killed by a signal") != NULL);
  CHECK (kiln_buf_str (&out)[0] == '\0');
  return true;
}

static bool
test_reboot_deferred (struct kiln_target *t)
{
  _cleanup_error_ kiln_error *err = NULL;
  enum kiln_reboot_outcome outcome = KILN_REBOOT_DONE;
  CHECK_OK (kiln_target_reboot (t, &outcome, &err), err);
  CHECK (outcome == KILN_REBOOT_DEFERRED);
  return true;
}

static bool
test_unsupported_slots (void)
{
  static const struct kiln_target_ops bare_ops = {.name = "bare"};
  struct kiln_target *t = calloc (1, sizeof *t);
  CHECK (t != NULL);
  t->ops = &bare_ops;
  t->scratch_dir = strdup ("/nonexistent");
  _cleanup_error_ kiln_error *err = NULL;

  enum kiln_reboot_outcome outcome;
  bool ok = kiln_target_reboot (t, &outcome, &err) < 0 && err->code == KILN_ERR_UNSUPPORTED
            && strcmp (err->message, "target 'bare' does not support reboot") == 0;

  struct kiln_target_stat st;
  ok = ok && kiln_target_stat (t, "/", &st, &err) < 0
       && strcmp (err->message, "target 'bare' does not support stat") == 0;

  char *argv[] = {"true", NULL};
  ok = ok && kiln_target_run_checked (t, argv, 1, NULL, &err) < 0
       && strcmp (err->message, "target 'bare' does not support run") == 0;

  /* put_data fails in put_file but still removes its temporary file. */
  ok = ok && kiln_target_put_data (t, "x", 1, "/x", 0644, &err) < 0
       && strcmp (err->message, "target 'bare' does not support put_file") == 0
       && count_leftover_temp_files () == 0;

  struct kiln_buf buf = KILN_BUF_INIT;
  ok = ok && kiln_target_get_data (t, "/x", &buf, &err) < 0
       && strcmp (err->message, "target 'bare' does not support get_file") == 0
       && count_leftover_temp_files () == 0;
  kiln_buf_release (&buf);

  if (!ok)
    printf ("# %s\n", kiln_error_message (err));
  /* Close with no close slot still frees the struct and scratch_dir. */
  kiln_target_close (t);
  kiln_target_close (NULL);
  return ok;
}

int
main (void)
{
  _cleanup_error_ kiln_error *err = NULL;
  if (kiln_make_temp_dir ("kiln-test-target", &private_tmpdir, &err) < 0)
    {
      printf ("Bail out! %s\n", kiln_error_message (err));
      return 1;
    }
  setenv ("TMPDIR", private_tmpdir, 1);

  tap_ok (test_open_close (), "open makes a scratch directory, close removes it");

  struct kiln_target *t = NULL;
  if (kiln_target_local_open (&t, &err) < 0)
    {
      printf ("Bail out! %s\n", kiln_error_message (err));
      return 1;
    }
  tap_ok (test_put_get_data (t), "put_data / get_data / stat");
  tap_ok (test_put_get_file (t), "put_file / get_file copy and replace");
  tap_ok (test_stat (t), "stat of directories, missing paths and symbolic links");
  tap_ok (test_run (t), "run with env, cwd, streaming and timeout");
  tap_ok (test_run_checked (t), "run_checked messages");
  tap_ok (test_reboot_deferred (t), "reboot is deferred on this host");
  kiln_target_close (t);
  tap_ok (test_unsupported_slots (), "missing operations fail as unsupported");

  if (kiln_remove_tree (private_tmpdir, &err) < 0)
    printf ("# %s\n", kiln_error_message (err));
  free (private_tmpdir);

  return tap_done ();
}
