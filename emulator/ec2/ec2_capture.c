/* ec2_capture.c - CreateImage's capture: the instance's disk into a
 * snapshot's disk file, as a job on the instance's queue (jobs.h), so it
 * never overlaps the instance's boots, stops or commands.
 *
 * Unless NoReboot, a running guest is shut down first and started again
 * after, as CreateImage does; with NoReboot the disk is captured live.  The
 * disk is written hidden (a dot file emu_disks_collect leaves alone) and
 * renamed into place, then the snapshot is marked completed and the image
 * available, or both failed with the reason.  A capture dropped because
 * the instance was terminated, or under way when the emulator stopped
 * (ec2_capture_recover, at the next start), fails the same way. */
#include "ec2.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "cleanup.h"
#include "fsutil.h"
#include "log.h"
#include "store.h"
#include "vmhost.h"
#include "xalloc.h"

static void
capture_failed (struct kiln_emu *emu, const char *image, const char *snapshot, const char *why)
{
  emu_db_update (emu, "image failed", "UPDATE images SET state = 'failed', state_reason_code = 'Server.InternalError', "
             "state_reason_message = ? WHERE id = ? AND state = 'pending'", why, image);
  emu_db_update (emu, "snapshot error", "UPDATE snapshots SET state = 'error', state_message = ? WHERE id = ?", why,
             snapshot);
}

static void
job_capture (struct emu_worker *w, const char *image, const char *snapshot, bool no_reboot)
{
  struct kiln_emu *emu = w->emu;
  _cleanup_error_ kiln_error *err = NULL;
  if (emu->instances == EMU_INSTANCES_MOCK)
    {
      /* No guest, no disk: the image exists for the API; launching it in
       * qemu mode says why it cannot boot. */
      emu_db_update (emu, "snapshot", "UPDATE snapshots SET state = 'completed', progress = '100%' WHERE id = ?", snapshot);
      emu_db_update (emu, "image", "UPDATE images SET state = 'available' WHERE id = ? AND state = 'pending'", image);
      return;
    }
  _cleanup_json_ json_t *row = emu_db_query_one (emu, &err, "SELECT state FROM instances WHERE id = ?", w->queue);
  const char *state = row ? emu_row_str (row, "state") : "";
  bool running = strcmp (state, "running") == 0 && emu_guest (w) != NULL;
  bool restart = false;
  if (running && !no_reboot)
    {
      emu_db_update (emu, "instance agent", "UPDATE instances SET agent_online = 0 WHERE id = ?", w->queue);
      if (emu_guest_down (w, true, &err) < 0)
        {
          kiln_log_warn ("emulator: %s: shutdown before capture: %s", w->queue, kiln_error_message (err));
          kiln_error_free (err);
          err = NULL;
        }
      restart = true;
      running = false;
    }
  int r = 0;
  bool made_here = false;
  if (emu_guest (w) == NULL)
    {
      r = emu_guest_up (w, true, &err);
      made_here = r == 0;
    }
  _cleanup_free_ char *disk = emu_disk_path (emu, snapshot, "qcow2");
  _cleanup_free_ char *disks_dir = NULL;
  disks_dir = kiln_xasprintf ("%s/disks", emu->data_dir);
  /* Hidden while written: emu_disks_collect leaves dot files alone. */
  _cleanup_free_ char *tmp = NULL;
  tmp = kiln_xasprintf ("%s/.%s.qcow2.part", disks_dir, snapshot);
  if (r == 0)
    r = kiln_mkdir_p (disks_dir, 0755, &err);
  if (r == 0)
    {
      struct kiln_capture_spec spec = {.output = tmp, .format = KILN_IMAGE_QCOW2, .live = running};
      r = kiln_instance_capture (emu_guest (w), &spec, &err);
    }
  if (r == 0 && rename (tmp, disk) < 0)
    r = kiln_fail_errno (&err, errno, "rename '%s'", tmp);
  if (r < 0)
    unlink (tmp);
  if (made_here)
    emu_guest_down (w, false, NULL);
  if (restart)
    {
      _cleanup_error_ kiln_error *boot_err = NULL;
      if (emu_guest_up (w, false, &boot_err) < 0)
        {
          _cleanup_free_ char *msg = NULL;
          msg = kiln_xasprintf ("Server.InternalError: the guest did not boot again after CreateImage: %s",
                                kiln_error_message (boot_err));
          emu_db_update (emu, "instance stopped", "UPDATE instances SET state = 'stopped', state_reason_code = "
                     "'Server.InternalError', state_reason_message = ? WHERE id = ? AND state = 'running'", msg,
                     w->queue);
        }
      else
        emu_db_update (emu, "instance agent", "UPDATE instances SET agent_online = 1 WHERE id = ? AND state = 'running'",
                   w->queue);
    }
  if (r < 0)
    {
      kiln_log_warn ("emulator: %s: capture for %s: %s", w->queue, image, kiln_error_message (err));
      capture_failed (emu, image, snapshot, kiln_error_message (err));
      return;
    }
  emu_db_update (emu, "snapshot", "UPDATE snapshots SET state = 'completed', progress = '100%', disk = ?, "
             "disk_format = 'qcow2' WHERE id = ?", disk, snapshot);
  emu_db_update (emu, "image", "UPDATE images SET state = 'available' WHERE id = ? AND state = 'pending'", image);
}


static void
run_capture (struct emu_worker *w, const struct emu_job *job)
{
  job_capture (w, job->arg[0], job->arg[1], job->flag);
}

static void
capture_dropped (struct kiln_emu *emu, const char *queue, const struct emu_job *job)
{
  capture_failed (emu, job->arg[0], job->arg[1], "Server.InternalError: the instance was terminated during CreateImage");
}

static const struct emu_job_kind capture_job = {.name = "capture", .run = run_capture, .dropped = capture_dropped};

void
ec2_capture_queue (struct kiln_emu *emu, const char *instance_id, const char *image_id, const char *snapshot_id,
                   bool no_reboot)
{
  emu_jobs_queue (emu, instance_id, &capture_job, image_id, snapshot_id, no_reboot);
}

int
ec2_start (struct kiln_emu *emu, kiln_error **err)
{
  emu_db_update (emu, "recover", "UPDATE images SET state = 'failed', state_reason_code = 'Server.InternalError', "
                 "state_reason_message = 'Server.InternalError: kiln-emulator restarted during CreateImage' "
                 "WHERE state = 'pending' AND source_instance IS NOT NULL");
  emu_db_update (emu, "recover", "UPDATE snapshots SET state = 'error', state_message = 'kiln-emulator restarted "
                 "while the snapshot was taken' WHERE state = 'pending' AND id IN (SELECT root_snapshot FROM images "
                 "WHERE state = 'failed' AND source_instance IS NOT NULL AND state_reason_message LIKE ?)",
                 "%restarted during CreateImage");
  return emu_tasks_recover (emu, err);
}
