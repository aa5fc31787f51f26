/* qemu_argv.c - the QEMU command line of a kiln instance (see qemu_argv.h).
 *
 * The machine is built from nothing (-nodefaults -no-user-config): every
 * device is named here, so what a guest sees does not depend on QEMU's
 * defaults or on a configuration file on the host.
 *   - the disk: the instance's overlay on virtio-blk, with QEMU's default
 *     writeback cache (cache=unsafe would lose data a guest has synced if
 *     QEMU is killed before it flushes; a capture needs that data), and
 *     discard passed through so a guest's fstrim shrinks the overlay;
 *   - QMP on a unix socket QEMU listens on (server=on,wait=off: QEMU does not
 *     wait for us, and creates the socket before the guest starts);
 *   - the guest agent's virtio-serial port, named org.qemu.guest_agent.0 as
 *     qemu-ga expects, backed by another unix socket QEMU listens on;
 *   - the first serial port appended to a file (the console log);
 *   - a virtio RNG: guests under TCG otherwise wait long for entropy;
 *   - optionally user-mode networking on a virtio NIC.
 * Option values that hold paths have their commas doubled, QEMU's escape. */
#include "qemu_argv.h"

#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "buf.h"
#include "cleanup.h"
#include "process.h"
#include "xalloc.h"

/* Appends s to b with each ',' doubled: inside a QEMU option value a single
 * comma would start the next option. */
static void
put_escaped (struct kiln_buf *b, const char *s)
{
  for (const char *p = s; *p; p++)
    {
      if (*p == ',')
        kiln_buf_append (b, ",", 1);
      kiln_buf_append (b, p, 1);
    }
}

/* Pushes "<prefix><escaped value><suffix>". */
static void
push_option (char ***argv, const char *prefix, const char *value, const char *suffix)
{
  struct kiln_buf b = KILN_BUF_INIT;
  kiln_buf_puts (&b, prefix);
  put_escaped (&b, value);
  kiln_buf_puts (&b, suffix);
  kiln_strv_push (argv, kiln_buf_str (&b));
  kiln_buf_release (&b);
}

static void
push_pair (char ***argv, const char *a, const char *b)
{
  kiln_strv_push (argv, a);
  kiln_strv_push (argv, b);
}

static int
require (const char *value, const char *field, kiln_error **err)
{
  if (value == NULL || *value == '\0')
    return kiln_fail_invalid (err, "QEMU configuration: '%s' is required", field);
  return 0;
}

int
kiln_qemu_build_argv (const struct kiln_qemu_config *cfg, char ***out, kiln_error **err)
{
  *out = NULL;
  if (require (cfg->binary, "binary", err) < 0 || require (cfg->name, "name", err) < 0
      || require (cfg->disk_path, "disk_path", err) < 0 || require (cfg->qmp_socket, "qmp_socket", err) < 0
      || require (cfg->qga_socket, "qga_socket", err) < 0 || require (cfg->serial_log, "serial_log", err) < 0)
    return -1;
  if (cfg->vcpus < 1 || cfg->vcpus > 1024)
    return kiln_fail_invalid (err, "QEMU configuration: vcpus %d is out of range (1 to 1024)", cfg->vcpus);
  if (cfg->memory_mib < 16 || cfg->memory_mib > UINT64_C (16) * 1024 * 1024)
    return kiln_fail_invalid (err, "QEMU configuration: memory %" PRIu64 " MiB is out of range (16 MiB to 16 TiB)",
                              cfg->memory_mib);

  bool kvm = cfg->accel == KILN_ACCEL_KVM;
  const char *cpu = cfg->cpu ? cfg->cpu : kvm ? "host" : "max";
  char number[32];
  _cleanup_strv_ char **argv = kiln_strv_new (cfg->binary, NULL);

  kiln_strv_push (&argv, "-name");
  push_option (&argv, "", cfg->name, "");
  kiln_strv_push (&argv, "-nodefaults");
  kiln_strv_push (&argv, "-no-user-config");
  push_pair (&argv, "-display", "none");
  push_pair (&argv, "-machine", cfg->machine ? cfg->machine : "q35");
  push_pair (&argv, "-accel", kiln_accel_name (cfg->accel));
  push_pair (&argv, "-cpu", cpu);
  snprintf (number, sizeof number, "%d", cfg->vcpus);
  push_pair (&argv, "-smp", number);
  snprintf (number, sizeof number, "%" PRIu64 "M", cfg->memory_mib);
  push_pair (&argv, "-m", number);

  _cleanup_free_ char *drive_options = NULL;
  drive_options = kiln_xasprintf (",format=%s,if=none,id=disk0,discard=unmap",
                                  cfg->disk_format ? cfg->disk_format : "qcow2");
  kiln_strv_push (&argv, "-drive");
  push_option (&argv, "file=", cfg->disk_path, drive_options);
  push_pair (&argv, "-device", "virtio-blk-pci,drive=disk0,bootindex=1");

  kiln_strv_push (&argv, "-chardev");
  push_option (&argv, "socket,id=qmp,path=", cfg->qmp_socket, ",server=on,wait=off");
  push_pair (&argv, "-mon", "chardev=qmp,mode=control");

  kiln_strv_push (&argv, "-chardev");
  push_option (&argv, "socket,id=qga0,path=", cfg->qga_socket, ",server=on,wait=off");
  push_pair (&argv, "-device", "virtio-serial-pci,id=virtio-serial0");
  push_pair (&argv, "-device", "virtserialport,bus=virtio-serial0.0,chardev=qga0,name=org.qemu.guest_agent.0");

  kiln_strv_push (&argv, "-chardev");
  push_option (&argv, "file,id=serial0,path=", cfg->serial_log, ",append=on");
  push_pair (&argv, "-serial", "chardev:serial0");

  push_pair (&argv, "-device", "virtio-rng-pci");

  if (cfg->network)
    {
      push_pair (&argv, "-netdev", "user,id=net0");
      push_pair (&argv, "-device", "virtio-net-pci,netdev=net0");
    }

  *out = kiln_steal_pointer (&argv);
  return 0;
}
