/* vmhost.h - the machines behind kiln-emulator's instances.
 *
 * In qemu mode every instance is a guest started through kiln's QEMU driver
 * (drivers/qemu, through the driver table) on a qcow2 overlay of its image's
 * disk, kept in DATA_DIR/instances/<id>/ so stop/start and an emulator restart
 * keep what the guest wrote.  In mock mode there are no guests: lifecycle
 * transitions still happen (quickly) and commands fail with a clear status.
 *
 * Handlers never wait for a guest.  They record the new state (pending,
 * stopping, shutting-down) and queue the work on the instance's job queue
 * (jobs.h: the queue is named by the instance id); its worker performs the
 * jobs in order and writes the outcome to the database (running, stopped,
 * terminated with a state reason).  Services queue their own job kinds on
 * the same queue (CreateImage's capture: ec2/ec2_capture.c; SSM's commands:
 * ssm/ssm_run.c), which reach the guest through emu_guest_*.
 *
 * Disks: an AMI's root volume is a snapshot whose disk is the file
 * DATA_DIR/disks/<snapshot-id>.<format>; completed snapshot disks are never
 * written again, so copies may share the file (hard links). */
#ifndef KILN_EMULATOR_VMHOST_H
#define KILN_EMULATOR_VMHOST_H

#include "driver.h"
#include "emulator.h"
#include "jobs.h"

/* Starts the job runner, then brings the instances in line after a restart:
 * pending and running ones boot again, stopping ones are stopped,
 * shutting-down ones terminate.  The services' start slots (services.h)
 * then recover their own work. */
int emu_vmhost_init (struct kiln_emu *emu, kiln_error **err);
/* Stops every worker and guest (their disks are kept). */
void emu_vmhost_shutdown (struct kiln_emu *emu);

/* Queue work for an instance.  The caller has already set the state the
 * work starts from (pending, stopping, shutting-down ...). */
void emu_vmhost_launch (struct kiln_emu *emu, const char *instance_id);
void emu_vmhost_start (struct kiln_emu *emu, const char *instance_id);
void emu_vmhost_stop (struct kiln_emu *emu, const char *instance_id, bool force);
void emu_vmhost_reboot (struct kiln_emu *emu, const char *instance_id);
void emu_vmhost_terminate (struct kiln_emu *emu, const char *instance_id);
/* The guest's serial console output so far, malloc'd; NULL when none. */
char *emu_vmhost_console (struct kiln_emu *emu, const char *instance_id, size_t max_bytes);

/* For job kinds on an instance's queue (w->queue is the instance id).
 * The instance's guest, NULL when none (mock mode, stopped). */
struct kiln_instance *emu_guest (struct emu_worker *w);
/* Creates (and unless create_only, boots) the instance's guest from its
 * row, reusing the overlay it has; a no-op for the creation when it exists. */
int emu_guest_up (struct emu_worker *w, bool create_only, kiln_error **err);
/* Stops the guest (cleanly when clean, else at once) and forgets it; the
 * overlay stays. */
int emu_guest_down (struct emu_worker *w, bool clean, kiln_error **err);

/* DATA_DIR/disks/<snapshot_id>.<format>, malloc'd. */
char *emu_disk_path (struct kiln_emu *emu, const char *snapshot_id, const char *format);
/* Removes disk files that no snapshot row and no live instance refers to. */
void emu_disks_collect (struct kiln_emu *emu);

#endif
