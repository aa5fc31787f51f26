/* test_qemu_driver.c - the qemu driver against a real guest (suite 'vm', TAP).
 *
 * Usage: test_qemu_driver [IMAGE]; IMAGE defaults to $KILN_TEST_IMAGE.
 * Without an image (or without qemu-system-x86_64) the whole test is skipped
 * ("1..0 # SKIP").  The image must boot by itself and run qemu-ga on its
 * org.qemu.guest_agent.0 port, with a POSIX sh, stat, chmod, mv, mktemp.
 *
 * One instance goes through its whole life: create, start, run, put and get
 * a 3 MiB file, stat, a command killed at its 1 s timeout, reboot, shutdown,
 * capture in every format, destroy; then nothing may be left but
 * console.log.  A second instance covers a work directory too deep for
 * socket paths, a grown disk, a start that fails, and destroy while running.
 * The times of boot, a guest-exec round trip and the file copies are printed
 * as TAP comments, for the record (never compared with anything).  The work
 * directory is removed after a success unless KILN_TEST_KEEP is set. */
#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdbool.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "buf.h"
#include "cleanup.h"
#include "driver.h"
#include "fsutil.h"
#include "log.h"
#include "process.h"
#include "tap.h"
#include "xalloc.h"

#define BOOT_TIMEOUT_S 300
#define BIG_FILE_SIZE (3 * 1024 * 1024)

/* A TAP diagnostic: every line of the message prefixed with "# " (QEMU's
 * messages quoted in errors span lines). */
static void diag (const char *fmt, ...) __attribute__ ((format (printf, 1, 2)));

static void
diag (const char *fmt, ...)
{
  char *text = NULL;
  va_list ap;
  va_start (ap, fmt);
  text = kiln_xvasprintf (fmt, ap);
  va_end (ap);
  for (char *line = text; *line;)
    {
      char *nl = strchr (line, '\n');
      size_t n = nl ? (size_t) (nl - line) : strlen (line);
      printf ("# %.*s\n", (int) n, line);
      line += n + (nl ? 1 : 0);
    }
  free (text);
}




static bool
program_exists (const char *name)
{
  char *argv[] = {"sh", "-c", "command -v \"$1\" >/dev/null", "sh", (char *) name, NULL};
  struct kiln_process_spec spec = {.argv = argv};
  struct kiln_process_result res;
  bool ok = kiln_process_run (&spec, &res, NULL) == 0 && res.exit_code == 0;
  kiln_process_result_release (&res);
  return ok;
}

/* Runs argv on the target; *out gets stdout; true when it exited 0. */
static bool
guest (struct kiln_target *t, char *const *argv, const char *cwd, char *const *env, struct kiln_buf *out)
{
  struct kiln_target_command cmd = {.argv = argv, .cwd = cwd, .env = env, .timeout_seconds = 120};
  struct kiln_target_result res;
  _cleanup_error_ kiln_error *err = NULL;
  if (kiln_target_run (t, &cmd, &res, &err) < 0)
    {
      diag ("%s: %s\n", argv[0], kiln_error_message (err));
      kiln_target_result_release (&res);
      return false;
    }
  bool ok = res.exit_code == 0;
  if (!ok)
    diag ("%s: exit %d, stderr: %s\n", argv[0], res.exit_code, kiln_buf_str (&res.err));
  if (out)
    {
      *out = res.out;
      res.out = (struct kiln_buf) KILN_BUF_INIT;
    }
  kiln_target_result_release (&res);
  return ok;
}

static char *
boot_id (struct kiln_target *t)
{
  char *argv[] = {"cat", "/proc/sys/kernel/random/boot_id", NULL};
  struct kiln_buf out = KILN_BUF_INIT;
  if (!guest (t, argv, NULL, NULL, &out))
    {
      kiln_buf_release (&out);
      return NULL;
    }
  return kiln_buf_steal (&out);
}

static bool
check_run (struct kiln_target *t)
{
  char *uname[] = {"uname", "-a", NULL};
  struct kiln_buf out = KILN_BUF_INIT;
  bool ok = guest (t, uname, NULL, NULL, &out) && strncmp (kiln_buf_str (&out), "Linux", 5) == 0;
  diag ("%s", kiln_buf_str (&out));
  kiln_buf_release (&out);

  /* A round trip: guest-exec, status polls, output. */
  char *truth[] = {"true", NULL};
  double start = seconds_now ();
  for (int i = 0; i < 5; i++)
    ok = guest (t, truth, NULL, NULL, NULL) && ok;
  diag ("guest-exec round trip ('true'): %.0f ms\n", (seconds_now () - start) / 5 * 1000);

  char *where[] = {"sh", "-c", "pwd; echo \"$KILN_X\"", NULL};
  char *env[] = {"KILN_X=a b", NULL};
  ok = guest (t, where, "/tmp", env, &out) && strcmp (kiln_buf_str (&out), "/tmp\na b\n") == 0 && ok;
  kiln_buf_release (&out);

  char *status[] = {"sh", "-c", "echo out; echo err >&2; exit 7", NULL};
  struct kiln_target_command cmd = {.argv = status};
  struct kiln_target_result res;
  _cleanup_error_ kiln_error *err = NULL;
  ok = kiln_target_run (t, &cmd, &res, &err) == 0 && res.exit_code == 7 && strcmp (kiln_buf_str (&res.out), "out\n") == 0
       && strcmp (kiln_buf_str (&res.err), "err\n") == 0 && ok;
  kiln_target_result_release (&res);

  char *missing[] = {"kiln-no-such-program", NULL};
  cmd.argv = missing;
  ok = kiln_target_run (t, &cmd, &res, &err) < 0 && err->code == KILN_ERR_NOT_FOUND && ok;
  diag ("%s\n", kiln_error_message (err));
  kiln_target_result_release (&res);
  return ok;
}

static bool
check_files (struct kiln_target *t, const char *work_dir)
{
  _cleanup_free_ char *local = NULL, *back = NULL, *remote = NULL;
  local = kiln_xasprintf ("%s/big.in", work_dir);
  back = kiln_xasprintf ("%s/big.out", work_dir);
  remote = kiln_xasprintf ("%s/big.bin", t->scratch_dir);
  _cleanup_free_ char *data = malloc (BIG_FILE_SIZE);
  uint32_t x = 2463534242u;
  for (size_t i = 0; i < BIG_FILE_SIZE; i++)
    {
      x ^= x << 13;
      x ^= x >> 17;
      x ^= x << 5;
      data[i] = (char) x;
    }
  _cleanup_error_ kiln_error *err = NULL;
  if (kiln_write_file_atomic (local, data, BIG_FILE_SIZE, 0644, &err) < 0)
    return false;

  double start = seconds_now ();
  bool ok = kiln_target_put_file (t, local, remote, 0640, &err) == 0;
  diag ("put 3 MiB: %.2f s%s%s\n", seconds_now () - start, ok ? "" : ": ", ok ? "" : kiln_error_message (err));
  struct kiln_target_stat st;
  ok = ok && kiln_target_stat (t, remote, &st, &err) == 0 && st.exists && st.is_file && !st.is_dir
       && st.size == BIG_FILE_SIZE && st.mode == 0640 && st.uid == 0;
  start = seconds_now ();
  ok = ok && kiln_target_get_file (t, remote, back, &err) == 0;
  diag ("get 3 MiB: %.2f s\n", seconds_now () - start);
  struct kiln_buf got = KILN_BUF_INIT;
  ok = ok && kiln_read_file (back, &got, &err) == 0 && got.len == BIG_FILE_SIZE
       && memcmp (got.data, data, BIG_FILE_SIZE) == 0;
  kiln_buf_release (&got);
  if (!ok)
    diag ("%s\n", kiln_error_message (err));
  unlink (local);
  unlink (back);

  /* A file put into a missing directory fails, naming the path. */
  kiln_error_freep (&err);
  ok = kiln_target_put_data (t, "x", 1, "/nonexistent-kiln-dir/f", 0644, &err) < 0 && ok;
  diag ("%s\n", kiln_error_message (err));
  return ok;
}

static bool
check_stat (struct kiln_target *t)
{
  struct kiln_target_stat st;
  _cleanup_error_ kiln_error *err = NULL;
  bool ok = kiln_target_stat (t, "/", &st, &err) == 0 && st.exists && st.is_dir && !st.is_symlink;
  ok = kiln_target_stat (t, "/nonexistent-kiln-path", &st, &err) == 0 && !st.exists && ok;
  _cleanup_free_ char *link = NULL;
  link = kiln_xasprintf ("%s/link", t->scratch_dir);
  char *ln[] = {"ln", "-s", "/nonexistent-target", link, NULL};
  ok = guest (t, ln, NULL, NULL, NULL) && ok;
  /* lstat: a dangling link exists, as a link. */
  ok = kiln_target_stat (t, link, &st, &err) == 0 && st.exists && st.is_symlink && !st.is_file && ok;
  if (!ok)
    diag ("%s\n", kiln_error_message (err));
  return ok;
}

static bool
check_timeout (struct kiln_target *t)
{
  char *argv[] = {"sh", "-c", "sleep 30; echo never", NULL};
  struct kiln_target_command cmd = {.argv = argv, .timeout_seconds = 1};
  struct kiln_target_result res;
  _cleanup_error_ kiln_error *err = NULL;
  double start = seconds_now ();
  int r = kiln_target_run (t, &cmd, &res, &err);
  double elapsed = seconds_now () - start;
  diag ("'sleep 30' with a 1 s timeout returned after %.2f s\n", elapsed);
  bool ok = r == 0 && res.timed_out && res.exit_code == -1 && elapsed < 10;
  if (r < 0)
    diag ("%s\n", kiln_error_message (err));
  kiln_target_result_release (&res);

  /* Neither the shell nor its sleep is left. */
  char *ps[] = {"sh", "-c",
                "for d in /proc/[0-9]*; do tr '\\0' ' ' <$d/cmdline 2>/dev/null; echo; done | "
                "grep -q '^sleep 30' && echo alive || echo gone",
                NULL};
  struct kiln_buf out = KILN_BUF_INIT;
  ok = guest (t, ps, NULL, NULL, &out) && strcmp (kiln_buf_str (&out), "gone\n") == 0 && ok;
  kiln_buf_release (&out);
  return ok;
}

static bool
check_reboot (struct kiln_target *t)
{
  _cleanup_free_ char *before = boot_id (t);
  enum kiln_reboot_outcome outcome = KILN_REBOOT_DEFERRED;
  _cleanup_error_ kiln_error *err = NULL;
  double start = seconds_now ();
  int r = kiln_target_reboot (t, &outcome, &err);
  diag ("reboot until the agent answered again: %.1f s\n", seconds_now () - start);
  if (r < 0)
    diag ("%s\n", kiln_error_message (err));
  _cleanup_free_ char *after = r == 0 ? boot_id (t) : NULL;
  struct kiln_target_stat st;
  return r == 0 && outcome == KILN_REBOOT_DONE && before && after && strcmp (before, after) != 0
         && kiln_target_stat (t, t->scratch_dir, &st, &err) == 0 && st.is_dir;
}

/* Captures in one format and checks what qemu-img says of the result:
 * its format, no backing file, and the instance's virtual size. */
static bool
capture_one (struct kiln_instance *inst, const char *work_dir, enum kiln_image_format format, bool compress,
             const char *qemu_format, uint64_t *size)
{
  _cleanup_free_ char *output = NULL;
  output = kiln_xasprintf ("%s/captured.%s", work_dir, kiln_image_format_extension (format));
  struct kiln_capture_spec spec = {.output = output, .format = format, .compress = compress};
  _cleanup_error_ kiln_error *err = NULL;
  double start = seconds_now ();
  bool ok = kiln_instance_capture (inst, &spec, &err) == 0;
  double elapsed = seconds_now () - start;
  if (!ok)
    diag ("%s\n", kiln_error_message (err));
  char *argv[] = {"qemu-img", "info", "--output=json", output, NULL};
  struct kiln_process_spec ps = {.argv = argv, .timeout_ms = 60000};
  struct kiln_process_result res;
  ok = ok && kiln_process_run (&ps, &res, &err) == 0 && res.exit_code == 0;
  if (ok)
    {
      json_t *info = json_loads (kiln_buf_str (&res.out), 0, NULL);
      const char *got = json_string_value (json_object_get (info, "format"));
      uint64_t virtual = (uint64_t) json_integer_value (json_object_get (info, "virtual-size"));
      diag ("captured as %s%s in %.1f s: qemu-img says %s, %llu bytes, %lld on disk\n",
              kiln_image_format_name (format), compress ? " (compressed)" : "", elapsed, got ? got : "?",
              (unsigned long long) virtual, (long long) json_integer_value (json_object_get (info, "actual-size")));
      ok = got && strcmp (got, qemu_format) == 0 && json_object_get (info, "backing-filename") == NULL
           && (*size == 0 || virtual == *size);
      *size = virtual;
      json_decref (info);
    }
  kiln_process_result_release (&res);
  unlink (output); /* the caller's file: what is left afterwards is checked */
  return ok;
}

static bool
check_capture (struct kiln_instance *inst, const char *work_dir)
{
  uint64_t size = 0;
  bool ok = capture_one (inst, work_dir, KILN_IMAGE_QCOW2, true, "qcow2", &size);
  ok = capture_one (inst, work_dir, KILN_IMAGE_RAW, false, "raw", &size) && ok;
  ok = capture_one (inst, work_dir, KILN_IMAGE_VMDK, false, "vmdk", &size) && ok;
  ok = capture_one (inst, work_dir, KILN_IMAGE_VHD, false, "vpc", &size) && ok;
  ok = capture_one (inst, work_dir, KILN_IMAGE_VHDX, false, "vhdx", &size) && ok;
  return ok;
}

/* Names in dir other than "." and "..", space-separated. */
static char *
listing (const char *dir)
{
  struct kiln_buf b = KILN_BUF_INIT;
  DIR *d = opendir (dir);
  if (d)
    {
      struct dirent *e;
      while ((e = readdir (d)) != NULL)
        if (strcmp (e->d_name, ".") != 0 && strcmp (e->d_name, "..") != 0)
          kiln_buf_printf (&b, "%s%s", b.len ? " " : "", e->d_name);
      closedir (d);
    }
  return kiln_buf_steal (&b);
}

static uint64_t
virtual_size (const char *image)
{
  char *argv[] = {"qemu-img", "info", "--output=json", (char *) image, NULL};
  struct kiln_process_spec ps = {.argv = argv, .timeout_ms = 60000};
  struct kiln_process_result res;
  uint64_t size = 0;
  if (kiln_process_run (&ps, &res, NULL) == 0 && res.exit_code == 0)
    {
      json_t *info = json_loads (kiln_buf_str (&res.out), 0, NULL);
      size = (uint64_t) json_integer_value (json_object_get (info, "virtual-size"));
      json_decref (info);
    }
  kiln_process_result_release (&res);
  return size;
}

/* The directory of the QMP socket on QEMU pid's command line. */
static char *
socket_dir_of (pid_t pid)
{
  _cleanup_free_ char *path = NULL;
  path = kiln_xasprintf ("/proc/%d/cmdline", (int) pid);
  struct kiln_buf cmdline = KILN_BUF_INIT;
  if (kiln_read_file (path, &cmdline, NULL) < 0)
    return NULL;
  char *dir = NULL;
  for (size_t i = 0; i < cmdline.len; i += strlen (cmdline.data + i) + 1)
    {
      const char *arg = cmdline.data + i;
      const char *p = strstr (arg, "socket,id=qmp,path=");
      if (p)
        {
          p += strlen ("socket,id=qmp,path=");
          const char *end = strstr (p, "/qmp.sock");
          if (end)
            dir = strndup (p, (size_t) (end - p));
        }
    }
  kiln_buf_release (&cmdline);
  return dir;
}

/* A second instance, in a work directory too deep for unix socket paths,
 * with a grown disk: a start that fails because QEMU cannot open its disk
 * reports QEMU's words and leaves nothing running; a good start writes the
 * pid file; destroy without shutdown (what cleanup after a signal does)
 * stops QEMU and removes everything but console.log, the socket directory
 * it had to make elsewhere included. */
static bool
check_second_instance (const struct kiln_driver *driver, const char *image, const char *base_dir)
{
  uint64_t parent_size = virtual_size (image);
  _cleanup_free_ char *deep = NULL;
  deep = kiln_xasprintf ("%s/%s", base_dir,
                         "a-directory-name-long-enough-that-sockets-cannot-live-here/and-some-more-depth-for-good-measure");
  _cleanup_error_ kiln_error *err = NULL;
  if (kiln_mkdir_p (deep, 0755, &err) < 0)
    return false;

  struct kiln_instance_spec spec = {.name = "second", .image = image, .work_dir = deep,
                                    .disk_size_bytes = parent_size / 2};
  struct kiln_instance *inst = NULL;
  bool ok = kiln_instance_create (driver, &spec, &inst, &err) < 0 && strstr (err->message, "smaller") != NULL;
  diag ("%s\n", kiln_error_message (err));
  kiln_error_freep (&err);

  spec.disk_size_bytes = parent_size + 64 * 1024 * 1024;
  if (kiln_instance_create (driver, &spec, &inst, &err) < 0)
    {
      diag ("%s\n", kiln_error_message (err));
      return false;
    }
  _cleanup_free_ char *overlay = NULL, *hidden = NULL, *pid_file = NULL;
  overlay = kiln_xasprintf ("%s/overlay.qcow2", deep);
  hidden = kiln_xasprintf ("%s/hidden.qcow2", deep);
  pid_file = kiln_xasprintf ("%s/qemu.pid", deep);
  ok = virtual_size (overlay) == spec.disk_size_bytes && ok;

  ok = rename (overlay, hidden) == 0 && ok;
  int r = kiln_instance_start (inst, 60, &err);
  diag ("%s\n", kiln_error_message (err));
  ok = r < 0 && strstr (kiln_error_message (err), "QEMU exited") && strstr (kiln_error_message (err), "overlay.qcow2")
       && access (pid_file, F_OK) < 0 && ok;
  kiln_error_freep (&err);
  ok = rename (hidden, overlay) == 0 && ok;

  pid_t pid = 0;
  _cleanup_free_ char *sock_dir = NULL;
  if (kiln_instance_start (inst, BOOT_TIMEOUT_S, &err) == 0)
    {
      pid = (pid_t) atoi (inst->id + strlen ("qemu-"));
      struct kiln_buf text = KILN_BUF_INIT;
      ok = kiln_read_file (pid_file, &text, &err) == 0 && atoi (kiln_buf_str (&text)) == pid && ok;
      kiln_buf_release (&text);
      /* The guest sees the grown disk. */
      char *argv[] = {"sh", "-c", "cat /sys/block/vda/size", NULL};
      struct kiln_buf out = KILN_BUF_INIT;
      ok = guest (kiln_instance_target (inst), argv, NULL, NULL, &out)
           && strtoull (kiln_buf_str (&out), NULL, 10) * 512 == spec.disk_size_bytes && ok;
      kiln_buf_release (&out);
      sock_dir = socket_dir_of (pid);
      diag ("sockets in %s\n", sock_dir ? sock_dir : "?");
      ok = sock_dir && strncmp (sock_dir, deep, strlen (deep)) != 0 && ok;
    }
  else
    {
      diag ("%s\n", kiln_error_message (err));
      ok = false;
    }
  kiln_instance_destroy (inst);
  _cleanup_free_ char *left = listing (deep);
  diag ("left in the deep work directory: %s\n", left);
  bool no_sock_dir = sock_dir && access (sock_dir, F_OK) < 0 && errno == ENOENT;
  return ok && pid > 0 && kill (pid, 0) < 0 && errno == ESRCH && strcmp (left, "console.log") == 0 && no_sock_dir;
}

int
main (int argc, char **argv)
{
  kiln_log_init_from_env ();
  if (kiln_log_get_level () < KILN_LOG_INFO)
    kiln_log_set_level (KILN_LOG_INFO);
  const char *image = argc > 1 ? argv[1] : getenv ("KILN_TEST_IMAGE");
  if (image == NULL || *image == '\0')
    {
      printf ("1..0 # SKIP no image: set KILN_TEST_IMAGE to a bootable image with qemu-ga\n");
      return 0;
    }
  if (access (image, R_OK) < 0)
    {
      printf ("1..0 # SKIP image '%s' is not readable\n", image);
      return 0;
    }
  if (!program_exists ("qemu-system-x86_64") || !program_exists ("qemu-img"))
    {
      printf ("1..0 # SKIP qemu-system-x86_64 or qemu-img is not installed\n");
      return 0;
    }

  const struct kiln_driver *driver = kiln_driver_find ("qemu");
  char work_dir[] = "/tmp/kiln-vm-test-XXXXXX";
  if (driver == NULL || mkdtemp (work_dir) == NULL)
    {
      printf ("Bail out! no qemu driver or no work directory\n");
      return 1;
    }
  struct stat parent_before, parent_after;
  stat (image, &parent_before);

  struct kiln_instance_spec spec = {
    .name = "vmtest",
    .image = image,
    .work_dir = work_dir,
    .disk_size_bytes = 0,
  };
  struct kiln_instance *inst = NULL;
  _cleanup_error_ kiln_error *err = NULL;
  bool alive = tap_ok (kiln_instance_create (driver, &spec, &inst, &err) == 0, "create an overlay on the image");
  if (!alive)
    diag ("%s\n", kiln_error_message (err));

  pid_t qemu_pid = 0;
  if (alive)
    {
      double start = seconds_now ();
      alive = kiln_instance_start (inst, BOOT_TIMEOUT_S, &err) == 0;
      diag ("start until the agent answered: %.1f s\n", seconds_now () - start);
      if (!alive)
        diag ("%s\n", kiln_error_message (err));
      else
        qemu_pid = (pid_t) atoi (inst->id + strlen ("qemu-"));
      tap_ok (alive && inst->target.scratch_dir && strncmp (inst->target.scratch_dir, "/var/tmp/kiln-scratch-", 22) == 0,
              "start: boot until the guest agent answers");
    }
  struct kiln_target *t = alive ? kiln_instance_target (inst) : NULL;
  if (alive)
    {
      tap_ok (check_run (t), "run: uname, round trips, cwd and env, exit status, missing program");
      tap_ok (check_files (t, work_dir), "put and get a 3 MiB file");
      tap_ok (check_stat (t), "stat: directory, missing path, dangling symlink");
      tap_ok (check_timeout (t), "a 1 s timeout kills 'sleep 30' and its shell");
      alive = tap_ok (check_reboot (t), "reboot: a new boot id, the agent answers again");
    }
  if (alive)
    {
      double start = seconds_now ();
      alive = kiln_instance_shutdown (inst, 120, &err) == 0;
      diag ("shutdown: %.1f s\n", seconds_now () - start);
      if (!alive)
        diag ("%s\n", kiln_error_message (err));
      tap_ok (alive && kill (qemu_pid, 0) < 0 && errno == ESRCH, "shutdown: the guest powers off, QEMU exits");
    }
  if (alive)
    tap_ok (check_capture (inst, work_dir), "capture as qcow2 (compressed), raw, vmdk, vhd, vhdx: standalone, same size");

  kiln_instance_destroy (inst);
  _cleanup_free_ char *left = listing (work_dir);
  diag ("left in the work directory: %s\n", left);
  bool clean = strcmp (left, "console.log") == 0 || (inst == NULL && strcmp (left, "") == 0);
  tap_ok (clean && (qemu_pid == 0 || (kill (qemu_pid, 0) < 0 && errno == ESRCH)),
          "destroy: no QEMU, nothing left but console.log");
  tap_ok (check_second_instance (driver, image, work_dir),
          "deep work directory, grown disk, failed start, destroy while running");
  stat (image, &parent_after);
  tap_ok (parent_before.st_mtime == parent_after.st_mtime && parent_before.st_size == parent_after.st_size,
          "the parent image was not written");

  if (tap_failures == 0 && getenv ("KILN_TEST_KEEP") == NULL)
    {
      _cleanup_error_ kiln_error *rm_err = NULL;
      kiln_remove_tree (work_dir, &rm_err);
    }
  else
    diag ("work directory kept: %s\n", work_dir);
  return tap_done ();
}
