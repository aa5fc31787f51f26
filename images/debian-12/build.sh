#!/bin/bash
# kiln base image "debian-12": a minimal Debian bookworm (debootstrap minbase,
# Debian's kernel, systemd, qemu-guest-agent, ifupdown with DHCP) on a 2 GiB
# disk that boots by itself (GRUB in the MBR, serial console on ttyS0) and
# grows its root partition and file system to fill a bigger disk at boot.
#
# Usage (as root): build.sh OUTPUT.qcow2
# Environment: KILN_IMAGE_WORKDIR (empty scratch directory), KILN_IMAGE_CACHE
# (optional: keeps downloaded .deb files between builds), KILN_DEBIAN_MIRROR
# and KILN_DEBIAN_SECURITY_MIRROR (optional: default from this host's apt
# sources). See ../README.md.
set -euo pipefail
umask 022
export LC_ALL=C

here=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)
# shellcheck source=../lib.sh
. "$here/../lib.sh"

kiln_init debian-12 "$@"
kiln_need debootstrap:debootstrap unshare:util-linux chroot:coreutils \
	qemu-img:qemu-utils mke2fs:e2fsprogs sfdisk:fdisk
kiln_need_file /usr/share/keyrings/debian-archive-keyring.gpg debian-archive-keyring

DISK_MIB=2048
LABEL=debian-root
ROOT=$KILN_WORK/root

MIRROR=$(kiln_debian_mirror bookworm) ||
	kiln_die "no Debian mirror for bookworm in /etc/apt/sources.list{,.d}: set KILN_DEBIAN_MIRROR"
SECURITY_MIRROR=$(kiln_debian_mirror bookworm-security) || SECURITY_MIRROR=""
[ -n "$SECURITY_MIRROR" ] || kiln_log "no bookworm-security source found: the image gets no security updates"
UUID=$(kiln_new_uuid)

# Everything that mounts or starts processes in the new root runs in its own
# mount and PID namespaces, which vanish with it.
mkdir -p "$ROOT"
kiln_run env ROOT="$ROOT" MIRROR="$MIRROR" SECURITY_MIRROR="$SECURITY_MIRROR" \
	KILN_DEBS="$KILN_DEBS" UUID="$UUID" HOSTNAME_=debian \
	KERNEL_CMDLINE="console=ttyS0,115200 net.ifnames=0 edd=off" \
	unshare --mount --propagation private --pid --fork --kill-child --mount-proc \
	bash "$here/rootfs.sh" || kiln_die "making the root file system failed"

kiln_log "making the GRUB core image with the image's own GRUB"
kiln_grub_core "$KILN_WORK/core.img" "$UUID" "$ROOT"
cp "$ROOT/usr/lib/grub/i386-pc/boot.img" "$KILN_WORK/boot.img"

kiln_make_disk "$KILN_WORK/disk.raw" "$DISK_MIB" "$ROOT" "$UUID" "$LABEL" \
	"$KILN_WORK/boot.img" "$KILN_WORK/core.img"
kiln_publish "$KILN_WORK/disk.raw"
