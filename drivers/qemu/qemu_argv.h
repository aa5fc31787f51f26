/* qemu_argv.h - the QEMU command line of a kiln instance, as a pure function
 * of its configuration.
 *
 * Everything that decides how a guest is started lives in the config struct,
 * so the command line can be golden-tested (tests/data/qemu-argv) and read in
 * one place.  Facts about the host (which accelerator runs guests here) are
 * found by the caller and passed in; kiln_qemu_build_argv() itself reads
 * nothing. */
#ifndef KILN_DRIVERS_QEMU_ARGV_H
#define KILN_DRIVERS_QEMU_ARGV_H

#include <stdbool.h>
#include <stdint.h>

#include "accel/accel.h"
#include "error.h"

struct kiln_qemu_config {
  const char *binary;        /* "qemu-system-x86_64" */
  const char *name;          /* -name, for ps and QEMU's messages */
  enum kiln_accel accel;      /* decided by the caller (accel/accel.h) */
  const char *machine;       /* NULL: "q35" */
  const char *cpu;           /* NULL: "host" with KVM, "max" with TCG */
  int vcpus;                 /* >= 1 */
  uint64_t memory_mib;       /* >= 16 */
  const char *disk_path;     /* the instance's overlay */
  const char *disk_format;   /* NULL: "qcow2" */
  const char *qmp_socket;    /* unix socket QEMU listens on for QMP */
  const char *qga_socket;    /* unix socket QEMU listens on for the guest agent's port */
  const char *serial_log;    /* file the guest's first serial port is appended to */
  bool network;              /* user-mode network on a virtio NIC */
};

/* Builds the NULL-terminated argument vector (argv[0] = binary) into *argv
 * (free with kiln_strv_free).  Fails with KILN_ERR_INVALID on a missing or
 * out-of-range field, naming it. */
int kiln_qemu_build_argv (const struct kiln_qemu_config *cfg, char ***argv, kiln_error **err);

#endif
