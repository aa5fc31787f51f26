/* disk_image.h - disk image files through qemu-img: what a file is (format,
 * virtual size) and converting between formats.  Used by the drivers that
 * keep disks as local files and by publishing and `kiln image convert`. */
#ifndef KILN_COMMON_DISK_IMAGE_H
#define KILN_COMMON_DISK_IMAGE_H

#include <signal.h>
#include <stdbool.h>
#include <stdint.h>

#include "error.h"

struct kiln_disk_info {
  char *format;            /* qemu-img's name: "qcow2", "raw", "vmdk", "vpc", "vhdx" */
  uint64_t virtual_size;   /* bytes */
  uint64_t actual_size;    /* bytes allocated on the host */
  char *backing_file;      /* NULL when none */
};

int kiln_disk_info (const char *path, struct kiln_disk_info *out, kiln_error **err);
void kiln_disk_info_release (struct kiln_disk_info *info);

/* qemu-img's format name for one kiln publishes as: "vhd" is "vpc". */
const char *kiln_disk_qemu_format (const char *kiln_format);

/* Converts in (any format qemu-img reads) to out in the given kiln format
 * ("qcow2", "raw", "vmdk", "vhd", "vhdx").  compress makes a compressed
 * qcow2, or a streamOptimized VMDK (compressed, the form EC2's VM import
 * prefers); other formats ignore it.  out is written in place: callers
 * write to a temporary name and rename. */
int kiln_disk_convert (const char *in, const char *out, const char *format, bool compress,
                       volatile sig_atomic_t *cancel, kiln_error **err);

/* One run of a disk's guest bytes, as `qemu-img map` reports it. */
struct kiln_disk_extent {
  uint64_t start;          /* guest offset */
  uint64_t length;
  bool data;               /* false: reads as zeros (a hole, or clusters known to be zero) */
  /* Where the data sits in the file itself, or -1 when it is not stored
   * plainly there (compressed clusters): such an extent cannot be read
   * with pread. */
  int64_t offset;
};

/* The disk's extents in guest order, covering [0, virtual size), read with
 * `qemu-img map` for the given format (qemu-img's name, never probed).  A
 * disk with a backing file is refused: its data is partly elsewhere.  *out
 * is malloc'd. */
int kiln_disk_map (const char *path, const char *format, struct kiln_disk_extent **out, size_t *n,
                   kiln_error **err);

#endif
