/* vmhost.h - the machines behind kiln-emulator's instances.
 *
 * In qemu mode every instance is a guest started through kiln's QEMU driver
 * (drivers/qemu, through the driver table) on a qcow2 overlay of its image's
 * disk, kept in DATA_DIR/instances/<id>/ so stop/start and an emulator restart
 * keep what the guest wrote.  In mock mode there are no guests: lifecycle
 * transitions still happen (quickly) and commands fail with a clear status.
 *
 * Handlers never wait for a guest.  They record the new state (pending,
 * stopping, shutting-down, an image or command Pending) and queue the work
 * here; each instance has one worker thread that performs its jobs in order
 * and writes the outcome to the database (running, stopped, terminated with
 * a state reason, image available or failed, command Success/Failed/...).
 *
 * Disks: an AMI's root volume is a snapshot whose disk is the file
 * DATA_DIR/disks/<snapshot-id>.<format>; completed snapshot disks are never
 * written again, so copies may share the file (hard links). */
#ifndef KILN_EMULATOR_VMHOST_H
#define KILN_EMULATOR_VMHOST_H

#include "emulator.h"

/* Starts the host: in qemu mode checks QEMU is usable.  Also brings the
 * database in line after a restart: instances that were pending or running
 * boot again, stopping ones are stopped, shutting-down ones terminate,
 * captures and commands that were under way fail with a reason. */
int emu_vmhost_init (struct kiln_emu *emu, kiln_error **err);
/* Stops every guest (their disks are kept) and the workers. */
void emu_vmhost_shutdown (struct kiln_emu *emu);

/* Queue work for an instance.  The caller has already set the state the
 * work starts from (pending, stopping, shutting-down ...). */
void emu_vmhost_launch (struct kiln_emu *emu, const char *instance_id);
void emu_vmhost_start (struct kiln_emu *emu, const char *instance_id);
void emu_vmhost_stop (struct kiln_emu *emu, const char *instance_id, bool force);
void emu_vmhost_reboot (struct kiln_emu *emu, const char *instance_id);
void emu_vmhost_terminate (struct kiln_emu *emu, const char *instance_id);
/* Captures the instance's disk into snapshot_id's disk file and marks the
 * snapshot completed and the image available (or both failed).  Unless
 * no_reboot, a running guest is shut down first and started again after, as
 * CreateImage does. */
void emu_vmhost_capture (struct kiln_emu *emu, const char *instance_id, const char *image_id,
                         const char *snapshot_id, bool no_reboot);
/* Runs the invocation (command_id, instance_id), which is Pending. */
void emu_vmhost_run_command (struct kiln_emu *emu, const char *command_id, const char *instance_id);
/* Stops the invocation if it is running (a queued one is skipped when its
 * turn comes, since its status is no longer Pending). */
void emu_vmhost_cancel_command (struct kiln_emu *emu, const char *command_id, const char *instance_id);
/* The guest's serial console output so far, malloc'd; NULL when none. */
char *emu_vmhost_console (struct kiln_emu *emu, const char *instance_id, size_t max_bytes);

/* Blocks until every queued job has been done (tests: makes the state a
 * request sees after others deterministic). */
void emu_vmhost_wait_idle (struct kiln_emu *emu);

/* DATA_DIR/disks/<snapshot_id>.<format>, malloc'd. */
char *emu_disk_path (struct kiln_emu *emu, const char *snapshot_id, const char *format);
/* Removes disk files that no snapshot row and no live instance refers to. */
void emu_disks_collect (struct kiln_emu *emu);

#endif
