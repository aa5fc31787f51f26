/* driver.h - the driver table: how kiln makes, drives and captures the
 * machines a build runs on (QEMU guests, libvirt domains, EC2 instances, and
 * a fake for tests).
 *
 * One `struct kiln_driver` per driver, filled by field name, with the size of
 * its private instance state, the way libvirt's hypervisor drivers and QEMU's
 * BlockDriver are written.  Callers never call a slot directly: the
 * kiln_instance_* dispatchers check optional slots and report "driver 'X'
 * does not support Y", and keep the bookkeeping every driver would otherwise
 * repeat.  Nothing above drivers/ names a particular driver; kiln_driver_find()
 * is the one place that picks one by name.
 *
 * Life of an instance:
 *   create (from a parent image; nothing runs yet)
 *   → start (boot, wait until the agent answers)
 *   → the target operations (drivers/target.h), reboot included
 *   → shutdown (clean guest power-off)
 *   → capture (the instance's disk as a new image)
 *   → destroy (always; idempotent; also what signal-driven cleanup calls).
 * destroy must be safe at any point after create, including twice, and must
 * leave no process, socket or temporary file behind. */
#ifndef KILN_DRIVERS_DRIVER_H
#define KILN_DRIVERS_DRIVER_H

#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cleanup.h"
#include "error.h"
#include "target.h"

struct kiln_instance;

/* Where and how a cloud driver (ec2) launches: account settings and Image
 * Builder's infrastructure configuration.  Local drivers take none. */
struct kiln_cloud_settings {
  const char *endpoint_url;            /* overrides, or NULL: as AWS tools find them */
  const char *region;
  const char *profile;
  const char *instance_type;           /* wins over instance_types */
  const char *const *instance_types;   /* tried in order (NULL-terminated); NULL: the driver's default */
  const char *subnet_id;
  const char *const *security_group_ids; /* NULL-terminated, or NULL */
  const char *instance_profile_name;
  const char *key_pair;
  const char *const *tags;             /* key, value, key, value, ..., NULL: on everything made */
};

struct kiln_instance_spec {
  const char *name;            /* short label for logs ("build", "test") */
  /* Parent image: a file path, or a cloud driver's image id, or "filter:"
   * followed by a DescribeImages query as JSON ({"filters": {NAME: [VALUE,
   * ...]}, "owners": [...], "mostRecent": BOOL}) that must match exactly one
   * available image, or the newest with mostRecent. */
  const char *image;
  const char *image_format;    /* "qcow2", "raw", or NULL to detect */
  int vcpus;                   /* 0: driver default */
  uint64_t memory_mib;         /* 0: driver default */
  uint64_t disk_size_bytes;    /* grow the instance's disk to this size; 0: as the parent */
  bool network;                /* give the guest a (user-mode) network */
  /* Local hypervisors (qemu): "auto", "kvm" or "tcg" (accel/accel.h; NULL:
   * $KILN_ACCEL, else auto), and a -cpu model that replaces the one the
   * accelerator would use (NULL: host for KVM, max for TCG). */
  const char *accel;
  const char *cpu_model;
  /* Local hypervisors: a boot whose console stays silent this long before
   * the agent answers has stalled, and is started once more (0: 60 s; -1:
   * never). */
  int boot_stall_seconds;
  const char *user_data;       /* passed to the guest where the driver can, or NULL */
  const char *work_dir;        /* an existing directory the instance may fill (overlays,
                                  sockets, logs); removed by the caller after destroy */
  const char *console_log;     /* where the guest's serial console is written, or NULL */
  /* Raised by a signal handler when the user interrupts kiln: long waits
   * (boot, agent, commands) poll it and give up with KILN_ERR_CANCELLED.
   * Also copied into the instance's target. */
  volatile sig_atomic_t *cancel;
  /* The instance may outlive kiln (--keep-on-failure): the driver must not
   * tie its life to kiln's process. */
  bool detach;
  /* The instance's disk is durable, owned by the caller: create reuses the
   * disk an earlier instance with the same work_dir left there (else makes a
   * new one), and destroy leaves it (the caller deletes work_dir when the
   * disk should go).  How kiln-emulator stops, starts and restarts
   * instances. */
  bool persistent_disk;
  /* Local hypervisor drivers: shutdown powers the guest's OS off (its
   * services stop as at any shutdown).  Otherwise shutdown may instead
   * freeze the guest's file systems through its agent (a clean file-system
   * state on disk: data synced, journals committed) and stop the machine,
   * which is several times faster; what runs in the guest is then stopped,
   * not shut down.  kiln-emulator's StopInstances asks for the OS's. */
  bool full_shutdown;
  /* Cloud drivers: where to launch; NULL means the defaults AWS tools use. */
  const struct kiln_cloud_settings *cloud;
};

/* One region an image is distributed to (Image Builder's Distribution with
 * its amiDistributionConfiguration).  The caller fills the settings; the
 * driver's distribute slot fills the results. */
struct kiln_image_distribution {
  const char *region;                  /* the region, or NULL: the one the image was made in */
  const char *name;                    /* the image's name there (templates already expanded);
                                          NULL: the source image's */
  const char *description;             /* NULL: the source image's */
  const char *const *tags;             /* key, value, ..., NULL: tags on the image and its snapshots */
  const char *const *launch_user_ids;  /* accounts allowed to launch it, NULL-terminated, or NULL */
  const char *const *launch_groups;    /* "all" makes it public */
  const char *const *launch_organization_arns;
  const char *const *launch_organizational_unit_arns;
  /* Results, malloc'd (freed by kiln_image_distribution_release). */
  char *image_id;
  char **snapshot_ids;                 /* NULL-terminated */
  double seconds;                      /* how long the region's copy took */
};

void kiln_image_distribution_release (struct kiln_image_distribution *d);

/* Moving a disk file into a driver's image store and back (`kiln image
 * import` / `export`): settings from the caller, results from the driver. */
struct kiln_image_transfer {
  const char *name;                    /* import: the image's name */
  const char *description;
  const char *architecture;            /* "x86_64" (default) or "arm64" */
  const char *boot_mode;               /* "legacy-bios", "uefi", or NULL: the cloud's default */
  const char *const *share_user_ids;   /* accounts allowed to launch it, or NULL */
  const char *const *tags;             /* key, value, ..., NULL, or NULL */
  int workers;                         /* parallel transfers; 0: the driver's default */
  /* Import: how the data travels, "ebs" (NULL: the driver's default) or
   * "s3" (staged in bucket, removed afterwards, then imported by the
   * cloud); parent: an image or snapshot id the new snapshot is
   * incremental over ("ebs" only), or NULL. */
  const char *method;
  const char *bucket;
  const char *parent;
  /* Import: the disk's format, qemu-img's name (the dispatcher fills it
   * in); where the driver may write conversions (the caller's run
   * directory, removed by the caller). */
  const char *format;
  const char *scratch_dir;
  volatile sig_atomic_t *cancel;
  /* Called now and then with bytes done and the total expected. */
  void (*progress) (uint64_t done, uint64_t total, double seconds, void *opaque);
  void *progress_opaque;
  /* Results (malloc'd; kiln_image_transfer_release frees them). */
  char *image_id;
  char *snapshot_id;
  uint64_t bytes_read;                 /* read from the source */
  uint64_t bytes_sent;                 /* sent over the network (or written) */
  uint64_t blocks_skipped;             /* all-zero blocks not sent */
  uint64_t blocks_unchanged;           /* blocks equal to the parent's, not sent */
};

void kiln_image_transfer_release (struct kiln_image_transfer *t);

enum kiln_image_format {
  KILN_IMAGE_QCOW2,
  KILN_IMAGE_RAW,
  KILN_IMAGE_VMDK,
  KILN_IMAGE_VHD,   /* qemu-img's "vpc" */
  KILN_IMAGE_VHDX,
};

struct kiln_capture_spec {
  const char *output;          /* file to write (a temporary name: the caller publishes it) */
  enum kiln_image_format format;
  bool compress;               /* qcow2 only */
  /* Capture a running instance without shutting it down: the guest is paused
   * while its disk is copied, so the copy is crash-consistent (as EC2's
   * CreateImage with NoReboot).  Without it, capturing a running instance
   * is an error. */
  bool live;
  /* Drivers whose images live in a cloud (ec2) make an image there instead
   * of writing output: its id goes to *image_id (malloc'd), named image_name
   * with description.  Local drivers leave it alone. */
  char **image_id;
  char **image_region;         /* and the region it is in (malloc'd) */
  const char *image_name;
  const char *description;
};

struct kiln_driver {
  const char *name;
  size_t priv_size;            /* bytes of zeroed private state per instance */

  /* Whether images are files (qemu, fake) or ids in a cloud (ec2): what
   * spec->image names and what capture produces. */
  bool cloud_images;

  /* Required. */
  int (*create) (struct kiln_instance *inst, const struct kiln_instance_spec *spec, kiln_error **err);
  int (*start) (struct kiln_instance *inst, int timeout_seconds, kiln_error **err);
  int (*destroy) (struct kiln_instance *inst);
  /* The operations of the instance as a target (run, files, stat, reboot). */
  const struct kiln_target_ops *target_ops;

  /* Optional. */
  int (*shutdown) (struct kiln_instance *inst, int timeout_seconds, kiln_error **err);
  int (*capture) (struct kiln_instance *inst, const struct kiln_capture_spec *spec, kiln_error **err);
  /* Deletes an image capture made (cloud drivers: the AMI and its
   * snapshots), for a build that failed after its capture.  Called on an
   * instance that was created but need not have been started. */
  int (*delete_image) (struct kiln_instance *inst, const char *image_id, kiln_error **err);
  /* Distributes image_id (made by capture, in the region capture reported)
   * to every target in d: the target in that region (region NULL or equal)
   * is the image itself, given its tags and launch permissions (its name
   * and description were set at capture); every other region gets a copy,
   * all copies made in parallel and waited for.  On failure every copy made
   * so far is deleted again and err names the region. */
  int (*distribute) (struct kiln_instance *inst, const char *image_id, struct kiln_image_distribution *d, size_t n,
                     kiln_error **err);
  /* Ends what a kiln killed outright (SIGKILL) left running in a cloud:
   * called by kiln_drivers_reap() with the work directory of each instance
   * of a dead run directory.  Returns 0 when nothing of the driver's is left
   * there (or it never was), -1 with err when it could not be ended (the
   * run directory is kept so a later run tries again). */
  int (*reap) (const char *work_dir, kiln_error **err);
  /* Makes an image of a disk file in t->format (import; any format qemu-img
   * reads, never with a backing file) or writes an image's root disk into a
   * raw file (export, sparse).  On a failed or interrupted import nothing is
   * left behind: no half-registered image, no snapshot, no staged object. */
  int (*import_image) (struct kiln_instance *inst, const char *path, struct kiln_image_transfer *t,
                       kiln_error **err);
  int (*export_image) (struct kiln_instance *inst, const char *image_id, const char *raw_path,
                       struct kiln_image_transfer *t, kiln_error **err);
  /* Console output so far (for error messages), malloc'd; NULL if none. */
  char *(*console_tail) (struct kiln_instance *inst, size_t max_bytes);
};

struct kiln_instance {
  const struct kiln_driver *driver;
  void *priv;                  /* driver->priv_size bytes */
  char *name;
  char *id;                    /* the driver's id for it (pid, domain name, i-...) once known */
  char *location;              /* where it runs when that is a choice (a cloud region), or NULL */
  struct kiln_target target;   /* ops = driver->target_ops, priv = the instance */
  /* Local hypervisors, once started: "kvm" or "tcg", the CPU model and why
   * that accelerator (for the manifest); NULL elsewhere.  malloc'd. */
  char *accel;
  char *cpu_model;
  char *accel_reason;
  /* Why the boot had to be started again (a stalled boot), or NULL. */
  char *boot_note;
  bool started;
  bool destroyed;
};

/* The driver registered under name, or NULL. */
const struct kiln_driver *kiln_driver_find (const char *name);
/* "qemu, ec2, fake" for messages. */
const char *kiln_driver_names (void);

/* Dispatchers.  Each names the driver and instance in its errors. */
int kiln_instance_create (const struct kiln_driver *driver, const struct kiln_instance_spec *spec,
                          struct kiln_instance **out, kiln_error **err);
int kiln_instance_start (struct kiln_instance *inst, int timeout_seconds, kiln_error **err);
struct kiln_target *kiln_instance_target (struct kiln_instance *inst);
int kiln_instance_shutdown (struct kiln_instance *inst, int timeout_seconds, kiln_error **err);
int kiln_instance_capture (struct kiln_instance *inst, const struct kiln_capture_spec *spec, kiln_error **err);
char *kiln_instance_console_tail (struct kiln_instance *inst, size_t max_bytes);
/* Deletes image_id (made by capture) with an instance of driver created from
 * spec for the purpose and destroyed after; nothing is launched. */
int kiln_image_delete (const struct kiln_driver *driver, const struct kiln_instance_spec *spec, const char *image_id,
                       kiln_error **err);
/* See the distribute slot.  Runs on an instance created (not started) from
 * spec for the purpose and destroyed after. */
int kiln_image_distribute (const struct kiln_driver *driver, const struct kiln_instance_spec *spec,
                           const char *image_id, struct kiln_image_distribution *d, size_t n, kiln_error **err);
/* See the import_image and export_image slots.  Each runs on an instance
 * created (not started) from spec for the purpose (spec->image may be NULL
 * for an import) and destroyed after.  Import first reads what path is
 * (qemu-img info): t->format is set for the slot, and a disk with a backing
 * file is refused. */
int kiln_image_import (const struct kiln_driver *driver, const struct kiln_instance_spec *spec, const char *path,
                       struct kiln_image_transfer *t, kiln_error **err);
int kiln_image_export (const struct kiln_driver *driver, const struct kiln_instance_spec *spec, const char *image_id,
                       const char *raw_path, struct kiln_image_transfer *t, kiln_error **err);
/* Offers a dead run directory's instance work directory to every driver's
 * reap slot (see kiln_rundir_reap_stale's hook).  Returns -1 when some
 * driver could not end what it left there. */
int kiln_drivers_reap (const char *work_dir, kiln_error **err);
/* Destroys (once) and frees.  Safe on NULL. */
void kiln_instance_destroy (struct kiln_instance *inst);
KILN_DEFINE_CLEANUP (struct kiln_instance, kiln_instance_destroy)

const char *kiln_image_format_name (enum kiln_image_format f);     /* "qcow2", "vhd" ... */
int kiln_image_format_parse (const char *name, enum kiln_image_format *out, kiln_error **err);
/* The file extension kiln publishes a format under: "qcow2", "raw", "vmdk", "vhd", "vhdx". */
const char *kiln_image_format_extension (enum kiln_image_format f);

#endif
