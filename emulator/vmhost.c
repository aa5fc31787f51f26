/* vmhost.c - the guests behind kiln-emulator's instances (vmhost.h).
 *
 * An instance's job queue (jobs.h, named by its id) has one worker thread,
 * which owns the instance's kiln_instance (the QEMU driver's object, through
 * the driver table) in w->held and is the only thread that touches it;
 * handlers only queue jobs, and terminating an instance raises the worker's
 * cancel flag to interrupt what it waits on (a boot, a command).  Every
 * outcome goes to the database with conditional updates ("... WHERE state =
 * 'pending'") so a late result never overwrites a newer decision such as a
 * termination.  This file holds the lifecycle kinds (launch, start, stop,
 * reboot, terminate); the services hold theirs.
 *
 * Instance directories: DATA_DIR/instances/<id>/ holds the overlay disk
 * (persistent: stop/start and restarts keep it), QEMU's sockets and pid, and
 * console.log (GetConsoleOutput reads it). */
#include "vmhost.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "aws_instance_types.h"
#include "cleanup.h"
#include "digest.h"
#include "fsutil.h"
#include "log.h"
#include "services.h"
#include "store.h"
#include "xalloc.h"

/* Boot: from QEMU's start to the guest agent answering. */
#define BOOT_TIMEOUT_SECONDS 900
#define SHUTDOWN_TIMEOUT_SECONDS 120
/* The first-boot user data script's deadline. */
#define USER_DATA_TIMEOUT_SECONDS 1800

static char *
instance_dir (struct kiln_emu *emu, const char *id)
{
  return kiln_xasprintf ("%s/instances/%s", emu->data_dir, id);
}

char *
emu_disk_path (struct kiln_emu *emu, const char *snapshot_id, const char *format)
{
  return kiln_xasprintf ("%s/disks/%s.%s", emu->data_dir, snapshot_id, format);
}

struct kiln_instance *
emu_guest (struct emu_worker *w)
{
  return w->held;
}

/* ---- guests (qemu mode) ---- */

int
emu_guest_up (struct emu_worker *w, bool create_only, kiln_error **err)
{
  struct kiln_emu *emu = w->emu;
  _cleanup_free_ char *dir = instance_dir (emu, w->queue);
  _cleanup_json_ json_t *row = emu_db_query_one (
      emu, err, "SELECT i.instance_type, i.disk_snapshot, s.disk, s.disk_format FROM instances i "
      "LEFT JOIN snapshots s ON s.id = i.disk_snapshot WHERE i.id = ?", w->queue);
  if (row == NULL)
    return *err ? -1 : kiln_error_set (err, KILN_ERR_NOT_FOUND, 0, "instance %s is gone", w->queue);
  const char *disk = emu_row_str_or_null (row, "disk");
  _cleanup_free_ char *overlay = NULL;
  overlay = kiln_xasprintf ("%s/overlay.qcow2", dir);
  if (disk == NULL && access (overlay, F_OK) < 0)
    return kiln_error_set (err, KILN_ERR_UNSUPPORTED, 0, "its image's snapshot %s has no disk (it was made by a "
                           "mock-mode instance or its disk was deleted)", emu_row_str (row, "disk_snapshot"));
  const struct kiln_aws_instance_type *type = kiln_aws_instance_type_find (emu_row_str (row, "instance_type"));
  if (kiln_mkdir_p (dir, 0755, err) < 0)
    return -1;
  _cleanup_free_ char *console = NULL;
  console = kiln_xasprintf ("%s/console.log", dir);
  struct kiln_instance_spec spec = {
    .name = w->queue,
    /* A reused overlay names its own parent; the spec's image then only
     * needs to exist, and the overlay itself does. */
    .image = disk ? disk : overlay,
    /* Never probed: a raw disk written through EBS direct may begin with
     * any bytes, a qcow2 header naming a backing file among them. */
    .image_format = disk ? emu_row_str_or_null (row, "disk_format") : NULL,
    .vcpus = type ? type->vcpus : 1,
    .memory_mib = type ? (uint64_t) type->memory_mib : 1024,
    .network = true,
    .accel = emu->accel,
    .cpu_model = emu->cpu_model,
    .work_dir = dir,
    .console_log = console,
    .cancel = &w->cancel,
    .persistent_disk = true,
    /* StopInstances and CreateImage stop the OS, as on EC2. */
    .full_shutdown = true,
  };
  const struct kiln_driver *qemu = kiln_driver_find ("qemu");
  if (qemu == NULL)
    return kiln_fail (err, "this kiln-emulator was built without the qemu driver");
  if (w->held == NULL)
    {
      struct kiln_instance *inst = NULL;
      if (kiln_instance_create (qemu, &spec, &inst, err) < 0)
        return -1;
      w->held = inst;
    }
  if (create_only)
    return 0;
  if (kiln_instance_start (w->held, BOOT_TIMEOUT_SECONDS, err) < 0)
    {
      kiln_instance_destroy (w->held);
      w->held = NULL;
      return -1;
    }
  return 0;
}

int
emu_guest_down (struct emu_worker *w, bool clean, kiln_error **err)
{
  struct kiln_instance *inst = w->held;
  if (inst == NULL)
    return 0;
  int r = 0;
  if (clean && inst->started)
    r = kiln_instance_shutdown (inst, SHUTDOWN_TIMEOUT_SECONDS, err);
  kiln_instance_destroy (inst);
  w->held = NULL;
  return r;
}

/* First boot only: a user data script ("#!...") runs as root once the agent
 * answers, as cloud-init would run it; its output goes to the console log. */
static void
run_user_data (struct emu_worker *w)
{
  struct kiln_emu *emu = w->emu;
  _cleanup_error_ kiln_error *err = NULL;
  _cleanup_json_ json_t *row = emu_db_query_one (emu, &err, "SELECT user_data FROM instances WHERE id = ?", w->queue);
  const char *b64 = row ? emu_row_str_or_null (row, "user_data") : NULL;
  if (b64 == NULL || *b64 == '\0')
    return;
  _cleanup_free_ unsigned char *script = NULL;
  size_t len = 0;
  if (kiln_base64_decode (b64, strlen (b64), &script, &len) < 0 || len < 2 || memcmp (script, "#!", 2) != 0)
    {
      kiln_log_info ("emulator: %s: user data is not a script (#!...): left for the guest", w->queue);
      return;
    }
  struct kiln_target *t = kiln_instance_target (w->held);
  _cleanup_free_ char *dir = instance_dir (emu, w->queue);
  char *const argv[] = {(char *) "/var/lib/kiln-emulator-user-data", NULL};
  struct kiln_target_command cmd = {.argv = argv, .timeout_seconds = USER_DATA_TIMEOUT_SECONDS};
  struct kiln_target_result res = {0};
  _cleanup_free_ char *console = NULL;
  console = kiln_xasprintf ("%s/console.log", dir);
  _cleanup_fclose_ FILE *log = fopen (console, "a");
  if (kiln_target_put_data (t, script, len, argv[0], 0700, &err) < 0 || kiln_target_run (t, &cmd, &res, &err) < 0)
    {
      if (log)
        fprintf (log, "\n[kiln-emulator] user data script failed: %s\n", kiln_error_message (err));
      kiln_target_result_release (&res);
      return;
    }
  if (log)
    {
      fprintf (log, "\n[kiln-emulator] user data script: exit %d\n", res.exit_code);
      fwrite (res.out.data ? res.out.data : "", 1, res.out.len, log);
      fwrite (res.err.data ? res.err.data : "", 1, res.err.len, log);
    }
  kiln_target_result_release (&res);
}

/* ---- lifecycle jobs ---- */

static void
set_state_reason (struct kiln_emu *emu, const char *id, const char *from, const char *to, const char *code,
                  const char *message)
{
  char now[24];
  emu_now_text (emu, now);
  emu_db_update (emu, "instance state",
             "UPDATE instances SET state = ?, state_reason_code = ?, state_reason_message = ?, state_changed = ?, "
             "agent_online = CASE WHEN ? = 'running' THEN agent_online ELSE 0 END WHERE id = ? AND state = ?",
             to, code, message, now, to, id, from);
}

static void
job_boot (struct emu_worker *w, bool first)
{
  struct kiln_emu *emu = w->emu;
  _cleanup_error_ kiln_error *err = NULL;
  if (emu->instances == EMU_INSTANCES_QEMU && emu_guest_up (w, false, &err) < 0)
    {
      bool cancelled = err && err->code == KILN_ERR_CANCELLED;
      kiln_log_warn ("emulator: %s: boot failed: %s", w->queue, kiln_error_message (err));
      if (!cancelled)
        {
          _cleanup_free_ char *msg = NULL;
          msg = kiln_xasprintf ("Server.InternalError: the guest did not boot: %s", kiln_error_message (err));
          /* A first boot that fails ends the instance, as EC2 does; a
           * restart that fails leaves it stopped with the reason. */
          set_state_reason (emu, w->queue, "pending", first ? "terminated" : "stopped", "Server.InternalError", msg);
        }
      return;
    }
  emu_db_update (emu, "instance running", "UPDATE instances SET state = 'running', state_reason_code = NULL, "
             "state_reason_message = NULL, agent_online = ? WHERE id = ? AND state = 'pending'",
             emu->instances == EMU_INSTANCES_QEMU ? "1" : "0", w->queue);
  if (first && emu->instances == EMU_INSTANCES_QEMU)
    run_user_data (w);
}

static void
job_stop (struct emu_worker *w, bool force)
{
  struct kiln_emu *emu = w->emu;
  _cleanup_error_ kiln_error *err = NULL;
  if (emu_guest_down (w, !force, &err) < 0)
    kiln_log_warn ("emulator: %s: stop: %s", w->queue, kiln_error_message (err));
  char now[24];
  emu_now_text (emu, now);
  emu_db_update (emu, "instance stopped", "UPDATE instances SET state = 'stopped', agent_online = 0, state_changed = ?, "
             "state_reason_code = 'Client.UserInitiatedShutdown', state_reason_message = "
             "'Client.UserInitiatedShutdown: User initiated shutdown' WHERE id = ? AND state = 'stopping'",
             now, w->queue);
}

static void
job_reboot (struct emu_worker *w)
{
  if (w->held == NULL)
    return;
  struct kiln_emu *emu = w->emu;
  emu_db_update (emu, "instance agent", "UPDATE instances SET agent_online = 0 WHERE id = ?", w->queue);
  enum kiln_reboot_outcome outcome;
  _cleanup_error_ kiln_error *err = NULL;
  if (kiln_target_reboot (kiln_instance_target (w->held), &outcome, &err) < 0)
    {
      kiln_log_warn ("emulator: %s: reboot: %s", w->queue, kiln_error_message (err));
      return;
    }
  emu_db_update (emu, "instance agent", "UPDATE instances SET agent_online = 1 WHERE id = ? AND state = 'running'",
             w->queue);
}

static void
job_terminate (struct emu_worker *w)
{
  struct kiln_emu *emu = w->emu;
  _cleanup_error_ kiln_error *err = NULL;
  emu_guest_down (w, false, NULL);
  _cleanup_free_ char *dir = instance_dir (emu, w->queue);
  if (kiln_remove_tree (dir, &err) < 0)
    kiln_log_warn ("emulator: %s: %s", w->queue, kiln_error_message (err));
  char now[24];
  emu_now_text (emu, now);
  emu_db_update (emu, "instance terminated", "UPDATE instances SET state = 'terminated', agent_online = 0, "
             "state_changed = ?, state_reason_code = COALESCE(state_reason_code, 'Client.UserInitiatedShutdown'), "
             "state_reason_message = COALESCE(state_reason_message, 'Client.UserInitiatedShutdown: User initiated "
             "shutdown') WHERE id = ? AND state = 'shutting-down'", now, w->queue);
  emu_services_instance_ended (emu, w->queue);
  emu_disks_collect (emu);
}


static void
run_launch (struct emu_worker *w, const struct emu_job *job)
{
  job_boot (w, true);
}

static void
run_start (struct emu_worker *w, const struct emu_job *job)
{
  job_boot (w, false);
}

static void
run_stop (struct emu_worker *w, const struct emu_job *job)
{
  job_stop (w, job->flag);
}

static void
run_reboot (struct emu_worker *w, const struct emu_job *job)
{
  job_reboot (w);
}

static void
run_terminate (struct emu_worker *w, const struct emu_job *job)
{
  job_terminate (w);
}

static const struct emu_job_kind launch_job = {.name = "launch", .run = run_launch};
static const struct emu_job_kind start_job = {.name = "start", .run = run_start};
static const struct emu_job_kind stop_job = {.name = "stop", .run = run_stop};
static const struct emu_job_kind reboot_job = {.name = "reboot", .run = run_reboot};
/* Whatever the worker waits on (a boot, a command) gives up, and nothing
 * queued behind will run. */
static const struct emu_job_kind terminate_job = {.name = "terminate", .run = run_terminate, .clears_queue = true};

void
emu_vmhost_launch (struct kiln_emu *emu, const char *id)
{
  emu_jobs_queue (emu, id, &launch_job, NULL, NULL, false);
}

void
emu_vmhost_start (struct kiln_emu *emu, const char *id)
{
  emu_jobs_queue (emu, id, &start_job, NULL, NULL, false);
}

void
emu_vmhost_stop (struct kiln_emu *emu, const char *id, bool force)
{
  emu_jobs_queue (emu, id, &stop_job, NULL, NULL, force);
}

void
emu_vmhost_reboot (struct kiln_emu *emu, const char *id)
{
  emu_jobs_queue (emu, id, &reboot_job, NULL, NULL, false);
}

void
emu_vmhost_terminate (struct kiln_emu *emu, const char *id)
{
  emu_jobs_queue (emu, id, &terminate_job, NULL, NULL, false);
}

char *
emu_vmhost_console (struct kiln_emu *emu, const char *instance_id, size_t max_bytes)
{
  _cleanup_free_ char *dir = instance_dir (emu, instance_id);
  _cleanup_free_ char *path = NULL;
  path = kiln_xasprintf ("%s/console.log", dir);
  _cleanup_fclose_ FILE *f = fopen (path, "rb");
  if (f == NULL)
    return NULL;
  if (fseeko (f, 0, SEEK_END) < 0)
    return NULL;
  off_t size = ftello (f);
  off_t from = size > (off_t) max_bytes ? size - (off_t) max_bytes : 0;
  if (fseeko (f, from, SEEK_SET) < 0)
    return NULL;
  char *buf = kiln_xcalloc ((size_t) (size - from) + 1, 1);
  size_t got = fread (buf, 1, (size_t) (size - from), f);
  buf[got] = '\0';
  return buf;
}

void
emu_disks_collect (struct kiln_emu *emu)
{
  _cleanup_free_ char *dir_path = NULL;
  dir_path = kiln_xasprintf ("%s/disks", emu->data_dir);
  DIR *dir = opendir (dir_path);
  if (dir == NULL)
    return;
  _cleanup_error_ kiln_error *err = NULL;
  /* In a write transaction: `import-image` (another process) renames its
   * disk into place inside its own, so a disk seen here without its row is
   * truly unused, not one about to be committed. */
  if (emu_db_begin (emu, &err) < 0)
    {
      kiln_log_warn ("emulator: collect disks: %s", kiln_error_message (err));
      closedir (dir);
      return;
    }
  /* Disks in use: every snapshot's, and every live instance's parent. */
  _cleanup_json_ json_t *used = emu_db_query0 (emu, &err,
                                               "SELECT disk FROM snapshots WHERE disk IS NOT NULL UNION "
                                               "SELECT s.disk FROM instances i JOIN snapshots s ON s.id = i.disk_snapshot "
                                               "WHERE i.state <> 'terminated' AND s.disk IS NOT NULL");
  if (used == NULL)
    {
      kiln_log_warn ("emulator: collect disks: %s", kiln_error_message (err));
      emu_db_end (emu, false, NULL);
      closedir (dir);
      return;
    }
  /* Live instances whose snapshot row is gone still hold their disk by name. */
  _cleanup_json_ json_t *held = emu_db_query0 (emu, &err, "SELECT disk_snapshot FROM instances WHERE state <> "
                                               "'terminated' AND disk_snapshot IS NOT NULL");
  struct dirent *e;
  while ((e = readdir (dir)))
    {
      if (e->d_name[0] == '.')
        continue;
      _cleanup_free_ char *full = NULL;
      full = kiln_xasprintf ("%s/%s", dir_path, e->d_name);
      bool in_use = false;
      size_t i;
      json_t *row;
      json_array_foreach (used, i, row)
        if (strcmp (emu_row_str (row, "disk"), full) == 0)
          in_use = true;
      json_array_foreach (held, i, row)
        {
          const char *snap = emu_row_str (row, "disk_snapshot");
          size_t n = strlen (snap);
          if (strncmp (e->d_name, snap, n) == 0 && e->d_name[n] == '.')
            in_use = true;
        }
      if (!in_use && unlink (full) == 0)
        kiln_log_debug ("emulator: removed unused disk %s", full);
    }
  emu_db_end (emu, false, NULL);
  closedir (dir);
}

/* ---- start and stop ---- */

/* Instances an earlier run left mid-way: stopping ones are stopped, pending
 * and running ones boot again, shutting-down ones terminate. */
static void
recover (struct kiln_emu *emu)
{
  _cleanup_error_ kiln_error *err = NULL;
  char now[24];
  emu_now_text (emu, now);
  emu_db_update (emu, "recover", "UPDATE instances SET state = 'stopped', agent_online = 0, state_changed = ? "
                 "WHERE state = 'stopping'", now);
  emu_db_update (emu, "recover", "UPDATE instances SET agent_online = ? WHERE agent_online <> 0", "0");
  _cleanup_json_ json_t *rows = emu_db_query0 (emu, &err, "SELECT id, state FROM instances WHERE state IN "
                                               "('pending', 'running', 'shutting-down') ORDER BY seq");
  if (rows == NULL)
    {
      kiln_log_warn ("emulator: recover: %s", kiln_error_message (err));
      return;
    }
  size_t i;
  json_t *row;
  json_array_foreach (rows, i, row)
    {
      const char *id = emu_row_str (row, "id");
      if (strcmp (emu_row_str (row, "state"), "shutting-down") == 0)
        emu_vmhost_terminate (emu, id);
      else
        {
          emu_db_update (emu, "recover", "UPDATE instances SET state = 'pending' WHERE id = ?", id);
          emu_vmhost_start (emu, id);
        }
    }
}

/* Emulator shutdown: the guest stops, its disk stays for the restart. */
static void
release_guest (struct emu_worker *w)
{
  emu_guest_down (w, false, NULL);
}

int
emu_vmhost_init (struct kiln_emu *emu, kiln_error **err)
{
  _cleanup_free_ char *dir = NULL;
  dir = kiln_xasprintf ("%s/instances", emu->data_dir);
  if (kiln_mkdir_p (dir, 0755, err) < 0)
    return -1;
  emu_jobs_init (emu, release_guest);
  recover (emu);
  return 0;
}

void
emu_vmhost_shutdown (struct kiln_emu *emu)
{
  emu_jobs_shutdown (emu);
}
