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
 * ("qcow2", "raw", "vmdk", "vhd", "vhdx"); compress applies to qcow2.  out is
 * written in place: callers write to a temporary name and rename. */
int kiln_disk_convert (const char *in, const char *out, const char *format, bool compress,
                       volatile sig_atomic_t *cancel, kiln_error **err);

#endif
