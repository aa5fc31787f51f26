/* driver_qemu.c - the qemu driver: instances are QEMU guests on this host,
 * driven through QMP and the QEMU guest agent (see driver.h).
 *
 * An instance lives in the work directory its caller gives it:
 *   overlay.qcow2   the instance's disk, a qcow2 overlay on the parent image
 *                   (qemu-img create -b PARENT): the parent is never written
 *   qmp.sock        QMP, for events (RESET), powerdown and quit
 *   qga.sock        the guest agent's virtio-serial port
 *   qemu.pid        QEMU's pid, so a later kiln can stop the QEMU of a kiln
 *                   that was SIGKILLed (QEMU also dies with it: PDEATHSIG)
 *   console.log     the guest's serial console and QEMU's own stderr; kept
 *                   by destroy, everything else is removed
 * Unix socket paths are limited to 107 bytes; when the work directory is too
 * deep for that, the sockets go to a fresh directory under /tmp instead.
 *
 * Start spawns QEMU under the accelerator kiln_accel_resolve chose (KVM
 * only where a probe showed it runs guests faster than TCG; see
 * accel/accel.h; an auto choice of KVM whose QEMU still dies before QMP
 * answers is demoted and the guest started again under TCG), connects QMP, then
 * syncs with the guest agent until it answers: that is "booted".  If QEMU
 * exits first, the error carries the end of the console log, which holds
 * QEMU's complaint or the guest's last words.
 *
 * Commands run through the agent (qga.c's kiln_qga_run: a /bin/sh wrapper for
 * cwd, extra environment and a killable process group), so a guest needs
 * qemu-ga and a POSIX sh; stat also uses stat(1), put chmod(1) and mv(1).
 * A reboot is asked of the agent (guest-shutdown mode=reboot) and confirmed by
 * QMP's RESET event, after which the agent is synced again with a fresh id:
 * syncing alone could be answered by the agent that was about to go down. */
#include "driver.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <jansson.h>

#include "buf.h"
#include "cleanup.h"
#include "fsutil.h"
#include "log.h"
#include "process.h"
#include "accel/accel.h"
#include "qemu/qemu_argv.h"
#include "qemu/qga.h"
#include "qemu/qmp.h"
#include "xalloc.h"
#include "clock.h"

#define QEMU_IMG "qemu-img"
#define DEFAULT_VCPUS 2
#define DEFAULT_MEMORY_MIB 1024
/* Start and reboot without a timeout from the caller. */
#define DEFAULT_BOOT_TIMEOUT_S 300
/* A boot whose console stays silent this long has stalled (about three
 * times the longest quiet spell of a debian-12 boot under TCG). */
#define DEFAULT_STALL_S 60
/* Each guest agent call (a 1 MiB file chunk under TCG takes well under this). */
#define AGENT_CALL_TIMEOUT_MS 60000
/* Each QMP command (they answer at once unless QEMU is stuck). */
#define QMP_TIMEOUT_MS 10000
/* Sync attempts while waiting for the agent: short at first, so an early
 * agent is seen early, longer later, so few requests pile up. */
#define SYNC_ATTEMPT_FIRST_MS 500
#define SYNC_ATTEMPT_MAX_MS 5000
/* How long guest-shutdown may take to answer with an error (it answers
 * nothing when it works).  Running shutdown(8) fails fast when it fails. */
#define SHUTDOWN_ERROR_WAIT_MS 1000
/* Shutdown: after the guest ignored the agent's request for the caller's
 * timeout, the ACPI power button gets this long; then QMP quit, and after
 * it SIGTERM, get this long each before SIGKILL. */
#define POWERDOWN_GRACE_MS 30000
#define QUIT_GRACE_MS 5000
#define TERM_GRACE_MS 5000
#define QEMU_IMG_TIMEOUT_MS (2 * 60 * 60 * 1000)
#define CONSOLE_TAIL_IN_ERRORS 1500

struct qemu_instance {
  char *sock_dir;        /* holds the sockets: work_dir, or our own short directory */
  bool own_sock_dir;
  char *overlay;
  char *qmp_path;
  char *qga_path;
  char *pid_path;
  char *console_path;
  int vcpus;
  uint64_t memory_mib;
  bool network;
  enum kiln_accel_mode accel_mode;
  char *cpu_override;    /* --cpu, or NULL */
  int stall_ms;          /* console silence that is a stalled boot; 0: never */
  int boot_timeout_ms;   /* start's timeout, reused for reboots */
  pid_t pid;             /* QEMU while it runs (not yet reaped), else 0 */
  bool detach;           /* QEMU may outlive kiln (keep-on-failure) */
  bool persistent_disk;  /* the overlay is the caller's: destroy keeps it */
  bool full_shutdown;    /* shutdown powers the OS off, never freeze and quit */
  volatile sig_atomic_t *cancel; /* the user interrupted kiln: stop waiting */
  struct kiln_qmp *qmp;
  struct kiln_qga *qga;
};

static struct qemu_instance *
qemu_of (struct kiln_target *t)
{
  struct kiln_instance *inst = t->priv;
  return inst->priv;
}


static char *
path_join (const char *dir, const char *name)
{
  char *p = NULL;
  p = kiln_xasprintf ("%s/%s", dir, name);
  return p;
}

static int
timeout_ms_of (int seconds)
{
  if (seconds <= 0)
    seconds = DEFAULT_BOOT_TIMEOUT_S;
  return seconds > INT_MAX / 1000 ? INT_MAX : seconds * 1000;
}

static int
left_ms (int64_t deadline)
{
  int64_t left = deadline - kiln_monotonic_ms ();
  return left < 0 ? 0 : left > INT_MAX ? INT_MAX : (int) left;
}

/* The last max_bytes of a file, from the start of a line where one begins
 * within them; NULL when unreadable or empty. */
static char *
file_tail (const char *path, size_t max_bytes)
{
  _cleanup_close_ int fd = open (path, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return NULL;
  struct stat st;
  if (fstat (fd, &st) < 0 || st.st_size <= 0)
    return NULL;
  size_t size = (size_t) st.st_size;
  size_t n = size < max_bytes ? size : max_bytes;
  char *buf = malloc (n + 1);
  if (buf == NULL)
    abort ();
  ssize_t got = pread (fd, buf, n, (off_t) (size - n));
  if (got <= 0)
    {
      free (buf);
      return NULL;
    }
  buf[got] = '\0';
  if (n < size)
    {
      char *nl = strchr (buf, '\n');
      if (nl && nl[1])
        memmove (buf, nl + 1, strlen (nl + 1) + 1);
    }
  return buf;
}

/* "; the console log ends with:\n..." for errors, or "". */
static char *
console_context (struct qemu_instance *q)
{
  _cleanup_free_ char *tail = q->console_path ? file_tail (q->console_path, CONSOLE_TAIL_IN_ERRORS) : NULL;
  char *s = NULL;
  if (tail == NULL || *tail == '\0')
    return kiln_xstrdup ("");
  s = kiln_xasprintf ("; %s ends with:\n%s", q->console_path, tail);
  return s;
}

/* Runs a host tool to completion; fails unless it exits 0, with the end of
 * its stderr in the message.  *out (when non-NULL) gets its stdout. */
static int
run_tool (char *const *argv, struct kiln_buf *out, kiln_error **err)
{
  struct kiln_process_spec spec = {.argv = argv, .timeout_ms = QEMU_IMG_TIMEOUT_MS, .capture_limit = 1 << 20};
  struct kiln_process_result res;
  if (kiln_process_run (&spec, &res, err) < 0)
    {
      kiln_process_result_release (&res);
      return -1;
    }
  int r = 0;
  if (res.exit_code != 0 || res.timed_out)
    {
      const char *msg = kiln_buf_str (&res.err);
      size_t len = strlen (msg);
      while (len > 0 && (msg[len - 1] == '\n' || msg[len - 1] == ' '))
        len--;
      if (len > 600)
        {
          msg += len - 600;
          len = 600;
        }
      if (res.timed_out)
        r = kiln_error_set (err, KILN_ERR_TIMEOUT, 0, "'%s %s' did not finish in time", argv[0], argv[1]);
      else
        r = kiln_fail (err, "'%s %s' failed (exit status %d)%s%.*s", argv[0], argv[1], res.exit_code,
                       len ? ": " : "", (int) len, msg);
    }
  else if (out)
    {
      *out = res.out;
      res.out = (struct kiln_buf) KILN_BUF_INIT;
    }
  kiln_process_result_release (&res);
  return r;
}

/* qemu-img info: the image's format and virtual size. */
static int
image_info (const char *image, const char *format, char **detected, uint64_t *virtual_size, kiln_error **err)
{
  _cleanup_strv_ char **argv = kiln_strv_new (QEMU_IMG, "info", "--output=json", NULL);
  if (format)
    {
      kiln_strv_push (&argv, "-f");
      kiln_strv_push (&argv, format);
    }
  kiln_strv_push (&argv, image);
  struct kiln_buf out = KILN_BUF_INIT;
  if (run_tool (argv, &out, err) < 0)
    return kiln_error_prefix (err, "inspect image '%s'", image);
  json_error_t je;
  _cleanup_json_ json_t *info = json_loadb (kiln_buf_str (&out), out.len, 0, &je);
  kiln_buf_release (&out);
  const char *fmt = json_string_value (json_object_get (info, "format"));
  json_t *size = json_object_get (info, "virtual-size");
  if (fmt == NULL || !json_is_integer (size))
    return kiln_fail (err, "inspect image '%s': qemu-img info gave no format or virtual size", image);
  *detected = kiln_xstrdup (fmt);
  *virtual_size = (uint64_t) json_integer_value (size);
  return 0;
}

static int
qemu_create (struct kiln_instance *inst, const struct kiln_instance_spec *spec, kiln_error **err)
{
  struct qemu_instance *q = inst->priv;
  if (spec->work_dir == NULL || *spec->work_dir == '\0')
    return kiln_fail_invalid (err, "no work directory given");
  if (spec->image == NULL || *spec->image == '\0')
    return kiln_fail_invalid (err, "no parent image given");
  if (spec->vcpus < 0)
    return kiln_fail_invalid (err, "vcpus %d is negative", spec->vcpus);

  /* The overlay names its parent by absolute path: relative names are
   * resolved from the overlay's directory, not ours. */
  _cleanup_free_ char *parent = realpath (spec->image, NULL);
  if (parent == NULL)
    return kiln_error_set (err, errno == ENOENT ? KILN_ERR_NOT_FOUND : KILN_ERR_IO, errno, "parent image '%s'",
                           spec->image);
  _cleanup_free_ char *format = NULL;
  uint64_t parent_size = 0;
  if (image_info (parent, spec->image_format, &format, &parent_size, err) < 0)
    return -1;
  if (spec->disk_size_bytes > 0 && spec->disk_size_bytes < parent_size)
    return kiln_fail_invalid (err, "disk size %" PRIu64 " bytes is smaller than the image's %" PRIu64
                              " bytes: disks can grow, not shrink", spec->disk_size_bytes, parent_size);

  q->overlay = path_join (spec->work_dir, "overlay.qcow2");
  q->pid_path = path_join (spec->work_dir, "qemu.pid");
  q->console_path = spec->console_log ? kiln_xstrdup (spec->console_log) : path_join (spec->work_dir, "console.log");
  q->vcpus = spec->vcpus > 0 ? spec->vcpus : DEFAULT_VCPUS;
  q->memory_mib = spec->memory_mib > 0 ? spec->memory_mib : DEFAULT_MEMORY_MIB;
  q->network = spec->network;
  q->detach = spec->detach;
  q->persistent_disk = spec->persistent_disk;
  q->full_shutdown = spec->full_shutdown;
  q->cancel = spec->cancel;
  if (kiln_accel_mode_parse (spec->accel, &q->accel_mode, err) < 0)
    return -1;
  q->cpu_override = spec->cpu_model && *spec->cpu_model ? kiln_xstrdup (spec->cpu_model) : NULL;
  q->stall_ms = spec->boot_stall_seconds < 0 ? 0 : timeout_ms_of (spec->boot_stall_seconds ? spec->boot_stall_seconds
                                                                                             : DEFAULT_STALL_S);

  /* "/qmp.sock" is the longest name that goes in the socket directory. */
  size_t sun_path_max = sizeof ((struct sockaddr_un *) 0)->sun_path - 1;
  if (strlen (spec->work_dir) + strlen ("/qmp.sock") <= sun_path_max)
    q->sock_dir = kiln_xstrdup (spec->work_dir);
  else
    {
      char templ[] = "/tmp/kiln-qemu-XXXXXX";
      if (mkdtemp (templ) == NULL)
        return kiln_fail_errno (err, errno, "work directory '%s' is too long for unix sockets, and creating a "
                                "socket directory under /tmp failed", spec->work_dir);
      q->sock_dir = kiln_xstrdup (templ);
      q->own_sock_dir = true;
    }
  q->qmp_path = path_join (q->sock_dir, "qmp.sock");
  q->qga_path = path_join (q->sock_dir, "qga.sock");

  if (spec->persistent_disk && access (q->overlay, F_OK) == 0)
    {
      kiln_log_debug ("qemu: %s: reusing the disk %s", inst->name, q->overlay);
      return 0;
    }
  _cleanup_strv_ char **argv
      = kiln_strv_new (QEMU_IMG, "create", "-q", "-f", "qcow2", "-b", parent, "-F", format, q->overlay, NULL);
  if (spec->disk_size_bytes > parent_size)
    {
      char size[32];
      snprintf (size, sizeof size, "%" PRIu64, spec->disk_size_bytes);
      kiln_strv_push (&argv, size);
    }
  if (run_tool (argv, NULL, err) < 0)
    return kiln_error_prefix (err, "create overlay '%s'", q->overlay);
  kiln_log_debug ("qemu: %s: overlay %s on %s (%s)", inst->name, q->overlay, parent, format);
  return 0;
}

/* Whether QEMU has ended, waiting up to wait_ms for it; an ended QEMU is
 * reaped, with its wait status in *status (when non-NULL). */
static bool
qemu_ended (struct qemu_instance *q, int wait_ms, int *status)
{
  if (q->pid <= 0)
    return true;
  if (kiln_process_wait_exit (q->pid, wait_ms, status) == 0)
    return false;
  q->pid = 0; /* reaped, or not ours any more */
  unlink (q->pid_path);
  return true;
}

static bool
qemu_running (struct qemu_instance *q, int *status)
{
  return !qemu_ended (q, 0, status);
}

static int
exited_early (struct qemu_instance *q, int status, const char *while_doing, kiln_error **err)
{
  _cleanup_free_ char *context = console_context (q);
  if (WIFSIGNALED (status))
    return kiln_fail (err, "QEMU was killed by signal %d %s%s", WTERMSIG (status), while_doing, context);
  return kiln_fail (err, "QEMU exited with status %d %s%s", WEXITSTATUS (status), while_doing, context);
}

/* Closes QMP and the agent and removes their sockets. */
static void
forget_connections (struct qemu_instance *q)
{
  kiln_qmp_close (q->qmp);
  q->qmp = NULL;
  kiln_qga_close (q->qga);
  q->qga = NULL;
  if (q->qmp_path)
    unlink (q->qmp_path);
  if (q->qga_path)
    unlink (q->qga_path);
}

/* Closes the protocol connections and stops QEMU by whatever it takes (QMP
 * quit, SIGTERM, SIGKILL), reaping it.  Returns 0 when it ended on quit or
 * SIGTERM, -1 when it had to be SIGKILLed. */
static int
stop_qemu (struct qemu_instance *q)
{
  int r = 0;
  if (q->pid > 0 && q->qmp)
    {
      _cleanup_error_ kiln_error *ignored = NULL;
      kiln_qmp_execute (q->qmp, "quit", NULL, NULL, QMP_TIMEOUT_MS, &ignored);
    }
  forget_connections (q);
  if (q->pid > 0)
    {
      if (kiln_process_wait_exit (q->pid, QUIT_GRACE_MS, NULL) == 0)
        {
          kill (q->pid, SIGTERM);
          if (kiln_process_wait_exit (q->pid, TERM_GRACE_MS, NULL) == 0)
            {
              kill (-q->pid, SIGKILL);
              kill (q->pid, SIGKILL);
              kiln_process_wait_exit (q->pid, -1, NULL);
              r = -1;
            }
        }
      q->pid = 0;
    }
  if (q->pid_path)
    unlink (q->pid_path);
  return r;
}

/* The console log's size, or -1. */
static off_t
console_size (struct qemu_instance *q)
{
  struct stat st;
  return q->console_path && stat (q->console_path, &st) == 0 ? st.st_size : -1;
}

/* Syncs with the guest agent until it answers or deadline; fails early when
 * QEMU exits.  With stall_ms > 0, returns 2 (err set) when the console stays
 * silent that long before the agent answers: a boot that stopped making
 * progress (a guest kernel that hung at 1.16 s once made a build wait its
 * whole 600 s). */
static int
wait_for_agent (struct qemu_instance *q, int64_t deadline, int timeout_ms, int stall_ms, const char *while_doing,
                kiln_error **err)
{
  int attempt = SYNC_ATTEMPT_FIRST_MS;
  off_t seen = console_size (q);
  int64_t progress_at = kiln_monotonic_ms ();
  for (;;)
    {
      int status = 0;
      if (!qemu_running (q, &status))
        return exited_early (q, status, while_doing, err);
      if (q->cancel && *q->cancel)
        return kiln_error_set (err, KILN_ERR_CANCELLED, 0, "interrupted %s", while_doing);
      off_t size = console_size (q);
      int64_t now = kiln_monotonic_ms ();
      if (size != seen)
        {
          seen = size;
          progress_at = now;
        }
      else if (stall_ms > 0 && now - progress_at >= stall_ms)
        {
          kiln_error_set (err, KILN_ERR_TIMEOUT, 0, "the boot stalled: the guest's console was silent for %d s "
                          "and its agent did not answer", stall_ms / 1000);
          return 2;
        }
      int left = left_ms (deadline);
      if (left == 0)
        {
          _cleanup_free_ char *context = console_context (q);
          return kiln_error_set (err, KILN_ERR_TIMEOUT, 0, "the guest agent did not answer within %d s %s%s",
                                 timeout_ms / 1000, while_doing, context);
        }
      if (stall_ms > 0)
        {
          /* Wake in time to see a stall. */
          int64_t until_stall = progress_at + stall_ms - now;
          if (until_stall < left)
            left = until_stall < 1 ? 1 : (int) until_stall;
        }
      _cleanup_error_ kiln_error *sync_err = NULL;
      if (kiln_qga_sync (q->qga, attempt < left ? attempt : left, &sync_err) == 0)
        return 0;
      kiln_log_debug ("qemu: %s (%d ms left)", kiln_error_message (sync_err), left);
      if (sync_err->code != KILN_ERR_TIMEOUT)
        {
          /* The socket closed: QEMU is probably on its way out. */
          if (!qemu_ended (q, 2000, &status))
            {
              kiln_error_move (err, &sync_err);
              return kiln_error_prefix (err, "wait for the guest agent");
            }
          return exited_early (q, status, while_doing, err);
        }
      attempt = attempt * 2 > SYNC_ATTEMPT_MAX_MS ? SYNC_ATTEMPT_MAX_MS : attempt * 2;
    }
}

static int run_checked (struct qemu_instance *q, char *const *argv, struct kiln_buf *out, kiln_error **err);

static int
make_scratch_dir (struct kiln_instance *inst, kiln_error **err)
{
  struct qemu_instance *q = inst->priv;
  struct kiln_buf out = KILN_BUF_INIT;
  if (inst->target.scratch_dir)
    {
      /* After a reboot: a tmpfs /var/tmp comes back empty. */
      char *argv[] = {"mkdir", "-p", inst->target.scratch_dir, NULL};
      return run_checked (q, argv, NULL, err);
    }
  char *argv[] = {"sh", "-c", "mkdir -p /var/tmp && mktemp -d /var/tmp/kiln-scratch-XXXXXX", NULL};
  if (run_checked (q, argv, &out, err) < 0)
    {
      kiln_buf_release (&out);
      return kiln_error_prefix (err, "create a scratch directory on the guest");
    }
  char *dir = kiln_buf_steal (&out);
  dir[strcspn (dir, "\n")] = '\0';
  if (dir[0] != '/')
    {
      kiln_fail (err, "create a scratch directory on the guest: mktemp printed '%s'", dir);
      free (dir);
      return -1;
    }
  inst->target.scratch_dir = dir;
  return 0;
}

/* Spawns QEMU with the chosen accelerator and waits until QMP answers.
 * Returns 1 (with err) when QEMU ended before QMP answered: what an
 * accelerator that cannot run guests does. */
static int
launch_qemu (struct kiln_instance *inst, const struct kiln_accel_choice *choice, int64_t deadline, kiln_error **err)
{
  struct qemu_instance *q = inst->priv;
  _cleanup_free_ char *name = kiln_xasprintf ("kiln-%s", inst->name);
  struct kiln_qemu_config cfg = {
    .binary = kiln_accel_qemu_binary (),
    .name = name,
    .accel = choice->accel,
    .cpu = choice->cpu,
    .vcpus = q->vcpus,
    .memory_mib = q->memory_mib,
    .disk_path = q->overlay,
    .disk_format = "qcow2",
    .qmp_socket = q->qmp_path,
    .qga_socket = q->qga_path,
    .serial_log = q->console_path,
    .network = q->network,
  };
  _cleanup_strv_ char **argv = NULL;
  if (kiln_qemu_build_argv (&cfg, &argv, err) < 0)
    return -1;
  /* A socket left by an earlier QEMU would take our connection attempts. */
  unlink (q->qmp_path);
  unlink (q->qga_path);

  struct kiln_process_spawn_spec spawn = {
    .argv = argv, .stdout_path = q->console_path, .stderr_path = q->console_path, .outlive_parent = q->detach};
  if (kiln_process_spawn (&spawn, &q->pid, err) < 0)
    return -1;
  kiln_log_debug ("qemu: %s: started QEMU %d (%s, -cpu %s)", inst->name, (int) q->pid, kiln_accel_name (cfg.accel),
                  cfg.cpu);
  char pid_text[32];
  int n = snprintf (pid_text, sizeof pid_text, "%d\n", (int) q->pid);
  if (kiln_write_file_atomic (q->pid_path, pid_text, (size_t) n, 0644, err) < 0)
    return -1;
  free (inst->id);
  inst->id = kiln_xasprintf ("qemu-%d", (int) q->pid);

  /* QMP: QEMU creates its sockets early, but not at once. */
  for (;;)
    {
      int status = 0;
      if (!qemu_running (q, &status))
        return exited_early (q, status, "before QMP answered", err), 1;
      int left = left_ms (deadline);
      _cleanup_error_ kiln_error *qmp_err = NULL;
      if (kiln_qmp_connect (q->qmp_path, left < 1000 ? left : 1000, &q->qmp, &qmp_err) == 0)
        return 0;
      if (left == 0 || qmp_err->code != KILN_ERR_TIMEOUT)
        {
          /* QMP closing on us is QEMU on its way out (e.g. its disk would
           * not open): give it a moment to be reaped and tell that. */
          if (qemu_ended (q, qmp_err->code == KILN_ERR_TIMEOUT ? 0 : 2000, &status))
            return exited_early (q, status, "before QMP answered", err), 1;
          kiln_error_move (err, &qmp_err);
          return kiln_error_prefix (err, "connect to QMP");
        }
    }
}

/* Records on the instance what it runs under, for the build manifest. */
static void
note_accel (struct kiln_instance *inst, const struct kiln_accel_choice *choice)
{
  free (inst->accel);
  free (inst->cpu_model);
  free (inst->accel_reason);
  inst->accel = kiln_xstrdup (kiln_accel_name (choice->accel));
  inst->cpu_model = kiln_xstrdup (choice->cpu);
  inst->accel_reason = kiln_xstrdup (choice->reason);
}

/* Launches QEMU and waits for the guest agent.  An auto choice of KVM whose
 * QEMU dies before QMP answers, although the probe passed, is demoted (for
 * later builds too) and the guest launched once more under TCG.  Returns 2
 * (err set) when the boot stalled (see wait_for_agent). */
static int
boot_once (struct kiln_instance *inst, int64_t deadline, int timeout_ms, struct kiln_accel_choice *choice,
           kiln_error **err)
{
  struct qemu_instance *q = inst->priv;
  if (kiln_accel_resolve (q->accel_mode, NULL, q->cpu_override, choice, NULL, err) < 0)
    return -1;
  int r = launch_qemu (inst, choice, deadline, err);
  if (r == 1 && choice->accel == KILN_ACCEL_KVM && q->accel_mode == KILN_ACCEL_MODE_AUTO)
    {
      const char *msg = kiln_error_message (*err);
      _cleanup_free_ char *why = kiln_xasprintf ("a guest did not start under kvm after the probe passed: %.*s",
                                                 (int) strcspn (msg, ";\n"), msg);
      kiln_log_warn ("qemu: %s: %s; starting it again under tcg", inst->name, why);
      kiln_accel_demote (NULL, why);
      kiln_error_freep (err);
      if (kiln_accel_resolve (q->accel_mode, NULL, q->cpu_override, choice, NULL, err) < 0)
        return -1;
      r = launch_qemu (inst, choice, deadline, err);
    }
  if (r != 0)
    return -1;
  note_accel (inst, choice);
  /* QEMU made this socket with QMP's, before QMP answered: no long wait. */
  int left = left_ms (deadline);
  if (kiln_qga_connect (q->qga_path, left < 5000 ? left : 5000, &q->qga, err) < 0)
    {
      int status = 0;
      if (qemu_ended (q, 2000, &status))
        {
          kiln_error_freep (err);
          return exited_early (q, status, "before the guest agent's socket could be reached", err);
        }
      return -1;
    }
  return wait_for_agent (q, deadline, timeout_ms, q->stall_ms, "while the guest booted", err);
}

/* Boots the instance.  A boot that stalls is killed and started once more,
 * with the reason in the log and on the instance (the manifest); a second
 * stall fails with both console tails. */
static int
start_qemu (struct kiln_instance *inst, int timeout_ms, kiln_error **err)
{
  struct qemu_instance *q = inst->priv;
  int64_t started_at = kiln_monotonic_ms ();
  int64_t deadline = started_at + timeout_ms;
  struct kiln_accel_choice choice;
  int r = boot_once (inst, deadline, timeout_ms, &choice, err);
  if (r == 2)
    {
      _cleanup_free_ char *first_tail = q->console_path ? file_tail (q->console_path, CONSOLE_TAIL_IN_ERRORS) : NULL;
      _cleanup_free_ char *why = kiln_xasprintf ("%s; the boot was started again", kiln_error_message (*err));
      kiln_log_warn ("qemu: %s: %s", inst->name, why);
      free (inst->boot_note);
      inst->boot_note = kiln_xstrdup (why);
      kiln_error_freep (err);
      stop_qemu (q);
      /* The console log goes on: mark where the second boot begins. */
      int fd = open (q->console_path, O_WRONLY | O_APPEND | O_CLOEXEC);
      if (fd >= 0)
        {
          static const char mark[] = "\n[kiln: the boot stalled; starting the guest again]\n";
          kiln_write_all (fd, mark, sizeof mark - 1);
          close (fd);
        }
      r = boot_once (inst, deadline, timeout_ms, &choice, err);
      if (r == 2)
        {
          _cleanup_free_ char *second_tail
              = q->console_path ? file_tail (q->console_path, CONSOLE_TAIL_IN_ERRORS) : NULL;
          kiln_error_freep (err);
          return kiln_error_set (err, KILN_ERR_TIMEOUT, 0, "the boot stalled twice (the guest's console was silent "
                                 "for %d s each time); the first boot's console ended with:\n%s\nthe second "
                                 "boot's console ends with:\n%s", q->stall_ms / 1000,
                                 first_tail ? first_tail : "(nothing)", second_tail ? second_tail : "(nothing)");
        }
    }
  if (r != 0)
    return -1;
  int64_t booted_at = kiln_monotonic_ms ();
  kiln_log_info ("qemu: %s: the guest agent answered %.1f s after start (%s)", inst->name,
                 (double) (booted_at - started_at) / 1000.0, kiln_accel_name (choice.accel));
  return make_scratch_dir (inst, err);
}

static int
qemu_start (struct kiln_instance *inst, int timeout_seconds, kiln_error **err)
{
  struct qemu_instance *q = inst->priv;
  if (q->pid > 0)
    return kiln_fail (err, "the instance is already running");
  if (q->overlay == NULL)
    return kiln_fail (err, "the instance was not created");
  q->boot_timeout_ms = timeout_ms_of (timeout_seconds);
  if (start_qemu (inst, q->boot_timeout_ms, err) < 0)
    {
      /* A failed start leaves nothing running. */
      stop_qemu (q);
      return -1;
    }
  return 0;
}

/* --- target operations ---------------------------------------------------- */

static int
require_running (struct qemu_instance *q, kiln_error **err)
{
  if (q->qga == NULL || q->pid <= 0)
    return kiln_fail (err, "the instance is not running");
  return 0;
}

/* When an agent call failed because the whole VM went away (QEMU crashed,
 * was killed, or the guest powered off), says so first: "the guest is gone:
 * QEMU was killed by signal 9; <console tail>; before that: <agent error>".
 * The agent's socket closes as QEMU dies, possibly a moment before QEMU can
 * be reaped, so a connection that failed (KILN_ERR_IO: closed, reset) waits a
 * little for it; the agent's own errors (a missing file, a command not
 * found) and timeouts (a hung guest) only look. */
static int
agent_failure (struct qemu_instance *q, kiln_error **err)
{
  int status = 0;
  int wait_ms = *err && (*err)->code == KILN_ERR_IO ? 2000 : 0;
  if (q->pid > 0 && qemu_ended (q, wait_ms, &status))
    {
      _cleanup_free_ char *context = console_context (q);
      if (WIFSIGNALED (status))
        kiln_error_prefix (err, "the guest is gone: QEMU was killed by signal %d%s; before that", WTERMSIG (status),
                           context);
      else
        kiln_error_prefix (err, "the guest is gone: QEMU exited with status %d%s; before that",
                           WIFEXITED (status) ? WEXITSTATUS (status) : -1, context);
    }
  return -1;
}

static int
qemu_run (struct kiln_target *t, const struct kiln_target_command *cmd, struct kiln_target_result *res,
          kiln_error **err)
{
  struct qemu_instance *q = qemu_of (t);
  *res = (struct kiln_target_result){.exit_code = -1, .out = KILN_BUF_INIT, .err = KILN_BUF_INIT};
  if (require_running (q, err) < 0)
    return -1;
  struct kiln_qga_run_spec spec = {
    .argv = cmd->argv,
    .env = cmd->env,
    .cwd = cmd->cwd,
    .timeout_ms = cmd->timeout_seconds > 0 ? timeout_ms_of (cmd->timeout_seconds) : 0,
    .call_timeout_ms = AGENT_CALL_TIMEOUT_MS,
    .cancel = t->cancel,
  };
  struct kiln_qga_exec_result r;
  if (kiln_qga_run (q->qga, &spec, &r, err) < 0)
    {
      kiln_qga_exec_result_release (&r);
      return agent_failure (q, err);
    }
  res->exit_code = r.timed_out ? -1 : r.exit_code;
  res->timed_out = r.timed_out;
  res->out = r.out;
  res->err = r.err;
  if (r.out_truncated)
    kiln_buf_puts (&res->err, "\n[kiln: the guest agent kept only the first 16 MiB of stdout]\n");
  if (r.err_truncated)
    kiln_buf_puts (&res->err, "\n[kiln: the guest agent kept only the first 16 MiB of stderr]\n");
  return 0;
}

/* Runs argv on the guest; fails unless it exits 0, with its stderr. */
static int
run_checked (struct qemu_instance *q, char *const *argv, struct kiln_buf *out, kiln_error **err)
{
  struct kiln_qga_run_spec spec = {.argv = argv, .call_timeout_ms = AGENT_CALL_TIMEOUT_MS};
  struct kiln_qga_exec_result r;
  if (kiln_qga_run (q->qga, &spec, &r, err) < 0)
    {
      kiln_qga_exec_result_release (&r);
      return agent_failure (q, err);
    }
  int ret = 0;
  if (r.exit_code != 0)
    {
      const char *msg = kiln_buf_str (&r.err);
      size_t len = strlen (msg);
      while (len > 0 && msg[len - 1] == '\n')
        len--;
      ret = kiln_fail (err, "'%s' failed on the guest (exit status %d)%s%.*s", argv[0], r.exit_code,
                       len ? ": " : "", (int) (len > 400 ? 400 : len), msg);
    }
  else if (out)
    {
      *out = r.out;
      r.out = (struct kiln_buf) KILN_BUF_INIT;
    }
  kiln_qga_exec_result_release (&r);
  return ret;
}

static int
qemu_put_file (struct kiln_target *t, const char *local_path, const char *path, mode_t mode, kiln_error **err)
{
  struct qemu_instance *q = qemu_of (t);
  if (require_running (q, err) < 0)
    return -1;
  /* Written beside the target and renamed over it: a reader (or a program
   * being replaced while it runs) sees the old file or the new one. */
  uint32_t r = 0;
  if (getrandom (&r, sizeof r, GRND_NONBLOCK) != (ssize_t) sizeof r)
    r = (uint32_t) kiln_monotonic_ms ();
  _cleanup_free_ char *tmp = NULL;
  tmp = kiln_xasprintf ("%s.kiln-%08x", path, r);
  if (kiln_qga_file_put (q->qga, local_path, tmp, AGENT_CALL_TIMEOUT_MS, err) < 0)
    {
      agent_failure (q, err);
      return kiln_error_prefix (err, "put '%s'", path);
    }
  char mode_text[16];
  snprintf (mode_text, sizeof mode_text, "%04o", (unsigned) (mode & 07777));
  char *argv[] = {"sh", "-c", "chmod \"$1\" \"$2\" && mv -f \"$2\" \"$3\" || { rm -f \"$2\"; exit 1; }",
                  "kiln-put", mode_text, tmp, (char *) path, NULL};
  if (run_checked (q, argv, NULL, err) < 0)
    return kiln_error_prefix (err, "put '%s'", path);
  return 0;
}

static int
qemu_get_file (struct kiln_target *t, const char *path, const char *local_path, kiln_error **err)
{
  struct qemu_instance *q = qemu_of (t);
  if (require_running (q, err) < 0)
    return -1;
  if (kiln_qga_file_get (q->qga, path, local_path, AGENT_CALL_TIMEOUT_MS, err) < 0)
    return agent_failure (q, err);
  return 0;
}

static int
qemu_stat (struct kiln_target *t, const char *path, struct kiln_target_stat *st, kiln_error **err)
{
  struct qemu_instance *q = qemu_of (t);
  memset (st, 0, sizeof *st);
  if (require_running (q, err) < 0)
    return -1;
  /* stat(1) without -L is lstat; %f is the raw st_mode in hex. */
  char *argv[] = {"sh", "-c",
                  "if [ -e \"$1\" ] || [ -L \"$1\" ]; then exec stat -c '%f %u %g %s' -- \"$1\"; else echo missing; fi",
                  "kiln-stat", (char *) path, NULL};
  struct kiln_buf out = KILN_BUF_INIT;
  if (run_checked (q, argv, &out, err) < 0)
    {
      kiln_buf_release (&out);
      return kiln_error_prefix (err, "stat '%s'", path);
    }
  const char *text = kiln_buf_str (&out);
  int r = 0;
  if (strcmp (text, "missing\n") == 0)
    st->exists = false;
  else if (!kiln_target_stat_from_text (text, st))
    r = kiln_fail (err, "stat '%s': unexpected output from stat(1) on the guest: '%.80s'", path, text);
  kiln_buf_release (&out);
  return r;
}

static int
qemu_reboot (struct kiln_target *t, enum kiln_reboot_outcome *outcome, kiln_error **err)
{
  struct kiln_instance *inst = t->priv;
  struct qemu_instance *q = inst->priv;
  if (require_running (q, err) < 0)
    return -1;
  int timeout_ms = q->boot_timeout_ms > 0 ? q->boot_timeout_ms : timeout_ms_of (0);
  int64_t started_at = kiln_monotonic_ms ();
  int64_t deadline = started_at + timeout_ms;

  /* Only a RESET after our request counts. */
  kiln_qmp_clear_events (q->qmp);
  if ((!kiln_qga_synced (q->qga) && kiln_qga_sync (q->qga, AGENT_CALL_TIMEOUT_MS, err) < 0)
      || kiln_qga_shutdown (q->qga, "reboot", SHUTDOWN_ERROR_WAIT_MS, err) < 0)
    {
      agent_failure (q, err);
      return kiln_error_prefix (err, "reboot");
    }
  if (kiln_qmp_wait_event (q->qmp, "RESET", timeout_ms, NULL, err) < 0)
    {
      /* QMP closing first means QEMU is on its way out: let it finish. */
      int status = 0;
      if (qemu_ended (q, (*err)->code == KILN_ERR_TIMEOUT ? 0 : 5000, &status))
        {
          kiln_error_freep (err);
          return exited_early (q, status, "instead of rebooting (did the guest power off?)", err);
        }
      return kiln_error_prefix (err, "reboot: the guest did not reset");
    }
  kiln_log_debug ("qemu: %s: guest reset %.1f s after the reboot request", inst->name,
                  (double) (kiln_monotonic_ms () - started_at) / 1000.0);
  kiln_qga_invalidate (q->qga);
  if (wait_for_agent (q, deadline, timeout_ms, 0, "after the reboot", err) != 0)
    return kiln_error_prefix (err, "reboot");
  kiln_log_info ("qemu: %s: rebooted in %.1f s", inst->name, (double) (kiln_monotonic_ms () - started_at) / 1000.0);
  if (make_scratch_dir (inst, err) < 0)
    return kiln_error_prefix (err, "reboot");
  *outcome = KILN_REBOOT_DONE;
  return 0;
}

static const struct kiln_target_ops qemu_target_ops = {
  .name = "qemu",
  .run = qemu_run,
  .put_file = qemu_put_file,
  .get_file = qemu_get_file,
  .stat = qemu_stat,
  .reboot = qemu_reboot,
};

/* --- shutdown, capture, destroy ------------------------------------------- */

static int
qemu_shutdown (struct kiln_instance *inst, int timeout_seconds, kiln_error **err)
{
  struct qemu_instance *q = inst->priv;
  if (!qemu_running (q, NULL))
    {
      forget_connections (q);
      return 0;
    }
  int timeout_ms = timeout_ms_of (timeout_seconds);
  int64_t started_at = kiln_monotonic_ms ();

  /* 0. Unless the OS's own shutdown was asked for: freeze the guest's file
   * systems (FIFREEZE: dirty data written, journals committed, each file
   * system clean on disk as after an unmount) and stop the machine; QEMU
   * flushes its disk as it quits.  Seconds faster than an OS shutdown under
   * TCG.  A guest whose agent cannot freeze gets the OS shutdown. */
  if (!q->full_shutdown && q->qga && q->qmp
      && (kiln_qga_synced (q->qga) || kiln_qga_sync (q->qga, timeout_ms, NULL) == 0))
    {
      _cleanup_error_ kiln_error *freeze_err = NULL;
      _cleanup_json_ json_t *frozen = NULL;
      if (kiln_qga_call (q->qga, "guest-fsfreeze-freeze", NULL, &frozen, left_ms (started_at + timeout_ms),
                         &freeze_err) == 0
          && json_integer_value (frozen) > 0)
        {
          _cleanup_error_ kiln_error *quit_err = NULL;
          if (kiln_qmp_execute (q->qmp, "quit", NULL, NULL, QMP_TIMEOUT_MS, &quit_err) == 0
              && kiln_process_wait_exit (q->pid, QUIT_GRACE_MS, NULL) == 1)
            {
              q->pid = 0;
              unlink (q->pid_path);
              forget_connections (q);
              kiln_log_info ("qemu: %s: %lld file systems frozen and the machine stopped in %.1f s", inst->name,
                             (long long) json_integer_value (frozen),
                             (double) (kiln_monotonic_ms () - started_at) / 1000.0);
              return 0;
            }
          /* Frozen, but QEMU did not quit: stopping it by force is as clean
           * for the disk. */
          stop_qemu (q);
          kiln_log_info ("qemu: %s: file systems frozen; QEMU stopped by force (%s)", inst->name,
                         quit_err ? kiln_error_message (quit_err) : "it did not exit on quit");
          return 0;
        }
      kiln_log_debug ("qemu: %s: freezing file systems: %s; shutting the OS down", inst->name,
                      freeze_err ? kiln_error_message (freeze_err) : "none frozen");
    }

  /* 1. Ask the guest through its agent; QEMU exits when the guest powers off. */
  _cleanup_error_ kiln_error *agent_err = NULL;
  if (q->qga && (kiln_qga_synced (q->qga) || kiln_qga_sync (q->qga, timeout_ms, &agent_err) == 0)
      && kiln_qga_shutdown (q->qga, "powerdown", SHUTDOWN_ERROR_WAIT_MS, &agent_err) == 0
      && kiln_process_wait_exit (q->pid, left_ms (started_at + timeout_ms), NULL) == 1)
    {
      q->pid = 0;
      unlink (q->pid_path);
      forget_connections (q);
      kiln_log_info ("qemu: %s: powered off in %.1f s", inst->name,
                     (double) (kiln_monotonic_ms () - started_at) / 1000.0);
      return 0;
    }
  if (agent_err)
    kiln_log_warn ("qemu: %s: %s", inst->name, kiln_error_message (agent_err));

  /* 2. The ACPI power button. */
  kiln_log_warn ("qemu: %s: the guest did not power off within %d s; pressing the power button", inst->name,
                 timeout_ms / 1000);
  _cleanup_error_ kiln_error *qmp_err = NULL;
  if (q->qmp && kiln_qmp_execute (q->qmp, "system_powerdown", NULL, NULL, QMP_TIMEOUT_MS, &qmp_err) == 0
      && kiln_process_wait_exit (q->pid, POWERDOWN_GRACE_MS, NULL) == 1)
    {
      q->pid = 0;
      unlink (q->pid_path);
      forget_connections (q);
      return 0;
    }

  /* 3. Forced: the guest's disk may miss what it had not written. */
  stop_qemu (q);
  return kiln_error_set (err, KILN_ERR_TIMEOUT, 0, "the guest did not power off (asked through its agent for "
                         "%d s, then with the power button for %d s); QEMU was stopped, so its disk may be "
                         "inconsistent", timeout_ms / 1000, POWERDOWN_GRACE_MS / 1000);
}

static int
qemu_capture (struct kiln_instance *inst, const struct kiln_capture_spec *spec, kiln_error **err)
{
  struct qemu_instance *q = inst->priv;
  bool running = qemu_running (q, NULL);
  if (running && !spec->live)
    return kiln_fail (err, "the instance is still running: shut it down before capturing its disk");
  if (running && q->qmp == NULL)
    return kiln_fail (err, "the instance is running but its QMP connection is gone: cannot pause it to capture");
  if (q->overlay == NULL || access (q->overlay, R_OK) < 0)
    return kiln_fail (err, "the instance has no disk to capture");

  const char *format;
  switch (spec->format)
    {
    case KILN_IMAGE_QCOW2: format = "qcow2"; break;
    case KILN_IMAGE_RAW: format = "raw"; break;
    case KILN_IMAGE_VMDK: format = "vmdk"; break;
    case KILN_IMAGE_VHD: format = "vpc"; break;
    case KILN_IMAGE_VHDX: format = "vhdx"; break;
    default: return kiln_fail_invalid (err, "unknown image format %d", (int) spec->format);
    }
  _cleanup_strv_ char **argv = kiln_strv_new (QEMU_IMG, "convert", "-q", "-f", "qcow2", "-O", format, NULL);
  /* A running QEMU holds the image's lock; reading beside it is safe once
   * the guest is paused (pausing drains and flushes its I/O). */
  if (running)
    kiln_strv_push (&argv, "-U");
  if (spec->compress)
    {
      if (spec->format == KILN_IMAGE_QCOW2)
        kiln_strv_push (&argv, "-c");
      else
        kiln_log_warn ("qemu: %s: compression applies to qcow2 only; writing %s uncompressed", inst->name,
                       kiln_image_format_name (spec->format));
    }
  /* Dynamic (sparse) VHD/VHDX: the size of the data, not of the disk.  VHD
   * would otherwise round the disk to a CHS geometry; force_size keeps the
   * exact size (clouds that import VHDs want it MiB-aligned, as it was). */
  if (spec->format == KILN_IMAGE_VHD || spec->format == KILN_IMAGE_VHDX)
    {
      kiln_strv_push (&argv, "-o");
      kiln_strv_push (&argv, spec->format == KILN_IMAGE_VHD ? "subformat=dynamic,force_size=on" : "subformat=dynamic");
    }
  kiln_strv_push (&argv, q->overlay);
  kiln_strv_push (&argv, spec->output);
  int64_t started_at = kiln_monotonic_ms ();
  if (running && kiln_qmp_execute (q->qmp, "stop", NULL, NULL, QMP_TIMEOUT_MS, err) < 0)
    return kiln_error_prefix (err, "pause the guest to capture its disk");
  int r = run_tool (argv, NULL, err);
  if (running)
    {
      _cleanup_error_ kiln_error *cont_err = NULL;
      if (kiln_qmp_execute (q->qmp, "cont", NULL, NULL, QMP_TIMEOUT_MS, &cont_err) < 0)
        {
          if (r == 0)
            {
              kiln_error_move (err, &cont_err);
              return kiln_error_prefix (err, "resume the guest after capturing its disk");
            }
          kiln_log_warn ("qemu: %s: resume after capture: %s", inst->name, kiln_error_message (cont_err));
        }
    }
  if (r < 0)
    return kiln_error_prefix (err, "convert '%s' to %s '%s'", q->overlay, format, spec->output);
  kiln_log_debug ("qemu: %s: captured as %s in %.1f s", inst->name, format,
                  (double) (kiln_monotonic_ms () - started_at) / 1000.0);
  return 0;
}

static int
remove_file (const char *path)
{
  if (path && unlink (path) < 0 && errno != ENOENT)
    {
      kiln_log_warn ("qemu: remove '%s': %s", path, strerror (errno));
      return -1;
    }
  return 0;
}

static void
free_paths (struct qemu_instance *q)
{
  free (q->sock_dir);
  free (q->overlay);
  free (q->qmp_path);
  free (q->qga_path);
  free (q->pid_path);
  free (q->console_path);
  free (q->cpu_override);
  q->sock_dir = q->overlay = q->qmp_path = q->qga_path = q->pid_path = q->console_path = NULL;
}

static int
qemu_destroy (struct kiln_instance *inst)
{
  struct qemu_instance *q = inst->priv;
  if (q == NULL)
    return 0;
  int r = 0;
  if (stop_qemu (q) < 0)
    kiln_log_warn ("qemu: %s: QEMU did not stop on quit or SIGTERM and was killed", inst->name);
  if ((!q->persistent_disk && remove_file (q->overlay) < 0) || remove_file (q->qmp_path) < 0 || remove_file (q->qga_path) < 0
      || remove_file (q->pid_path) < 0)
    r = -1;
  if (q->own_sock_dir && q->sock_dir && rmdir (q->sock_dir) < 0 && errno != ENOENT)
    {
      kiln_log_warn ("qemu: remove '%s': %s", q->sock_dir, strerror (errno));
      r = -1;
    }
  free_paths (q);
  return r;
}

static char *
qemu_console_tail (struct kiln_instance *inst, size_t max_bytes)
{
  struct qemu_instance *q = inst->priv;
  return q->console_path ? file_tail (q->console_path, max_bytes) : NULL;
}

const struct kiln_driver kiln_driver_qemu = {
  .name = "qemu",
  .priv_size = sizeof (struct qemu_instance),
  .create = qemu_create,
  .start = qemu_start,
  .destroy = qemu_destroy,
  .target_ops = &qemu_target_ops,
  .shutdown = qemu_shutdown,
  .capture = qemu_capture,
  .console_tail = qemu_console_tail,
};
