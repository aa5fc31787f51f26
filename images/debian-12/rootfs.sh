#!/bin/bash
# Fills ROOT with a minimal Debian bookworm that boots by itself. Run by
# build.sh inside private mount and PID namespaces (unshare --mount --pid
# --kill-child): every mount made here (debootstrap's own, /proc, /sys,
# /dev/pts and the package cache in the chroot) and every process started in
# the chroot disappear when this script ends, however it ends.
#
# Environment: ROOT MIRROR SECURITY_MIRROR (may be empty) KILN_DEBS UUID
# HOSTNAME_ KERNEL_CMDLINE
set -euo pipefail
umask 022
export LC_ALL=C.UTF-8 DEBIAN_FRONTEND=noninteractive DEBCONF_NONINTERACTIVE_SEEN=true
here=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)
# shellcheck source=../lib.sh
. "$here/../lib.sh"
# shellcheck disable=SC2034 # used by kiln_log and kiln_die
KILN_IMAGE_NAME=debian-12

: "${ROOT:?}" "${MIRROR:?}" "${KILN_DEBS:?}" "${UUID:?}" "${HOSTNAME_:?}" "${KERNEL_CMDLINE:?}"

# Nothing mounted here may reach the host's mount table.
mount --make-rprivate / || kiln_die "cannot make the mount namespace private"

in_root() {
	chroot "$ROOT" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root \
		LC_ALL=C.UTF-8 DEBIAN_FRONTEND=noninteractive DEBCONF_NONINTERACTIVE_SEEN=true "$@"
}

# --- debootstrap ---------------------------------------------------------------
kiln_log "debootstrap --variant=minbase bookworm from $MIRROR"
debootstrap --variant=minbase --cache-dir="$KILN_DEBS" --merged-usr \
	--keyring=/usr/share/keyrings/debian-archive-keyring.gpg \
	bookworm "$ROOT" "$MIRROR" >"$ROOT.debootstrap.log" 2>&1 || {
	tail -n 40 "$ROOT.debootstrap.log" >&2
	[ -f "$ROOT/debootstrap/debootstrap.log" ] && tail -n 40 "$ROOT/debootstrap/debootstrap.log" >&2
	kiln_die "debootstrap failed"
}

# --- packages ---------------------------------------------------------------------
mount -t proc proc "$ROOT/proc"
mount -t sysfs sysfs "$ROOT/sys"
mkdir -p "$ROOT/dev/pts"
mount -t devpts -o newinstance,ptmxmode=0666 devpts "$ROOT/dev/pts"
mount --bind "$KILN_DEBS" "$ROOT/var/cache/apt/archives"

# No service starts in the chroot.
printf '#!/bin/sh\nexit 101\n' >"$ROOT/usr/sbin/policy-rc.d"
chmod 0755 "$ROOT/usr/sbin/policy-rc.d"

{
	echo "Types: deb"
	echo "URIs: $MIRROR"
	echo "Suites: bookworm bookworm-updates"
	echo "Components: main"
	echo "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg"
	if [ -n "${SECURITY_MIRROR:-}" ]; then
		echo
		echo "Types: deb"
		echo "URIs: $SECURITY_MIRROR"
		echo "Suites: bookworm-security"
		echo "Components: main"
		echo "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg"
	fi
} >"$ROOT/etc/apt/sources.list.d/debian.sources"
rm -f "$ROOT/etc/apt/sources.list"
# Downloads go to the package cache (bind-mounted, owned by root).
cat >"$ROOT/etc/apt/apt.conf.d/99kiln-build" <<'EOF'
APT::Sandbox::User "root";
Dpkg::Options { "--force-confdef"; "--force-confold"; };
EOF

# Kernel command line and disk drivers, before the kernel's initramfs is made.
mkdir -p "$ROOT/etc/initramfs-tools"
# Only the drivers a root disk under QEMU needs (virtio, SCSI, NVMe, SATA/IDE)
# and ext4: a small initramfs boots much faster under TCG than MODULES=most.
# Everything else is loaded from the root file system by udev.
mkdir -p "$ROOT/etc/initramfs-tools/conf.d"
cat >"$ROOT/etc/initramfs-tools/conf.d/kiln.conf" <<'EOF'
# kiln debian-12: the modules in /etc/initramfs-tools/modules (and their
# dependencies) only. Set MODULES=most here for a generic initramfs.
MODULES=list
EOF
cat >"$ROOT/etc/initramfs-tools/modules" <<'EOF'
# Root disk drivers for QEMU and similar (see conf.d/kiln.conf).
virtio_pci
virtio_blk
virtio_scsi
sd_mod
nvme
ahci
ata_piix
ext4
crc32c_generic
EOF
# Debian's kernel packages make /vmlinuz and /initrd.img symlinks at the root,
# which /boot/grub/grub.cfg boots.
printf 'do_symlinks = yes\nlink_in_boot = no\n' >"$ROOT/etc/kernel-img.conf"

kiln_log "installing the kernel, systemd, qemu-guest-agent, GRUB and networking"
in_root apt-get -q update >"$ROOT.apt.log" 2>&1 || { tail -n 30 "$ROOT.apt.log" >&2; kiln_die "apt-get update failed in the image"; }
in_root apt-get -q -y dist-upgrade >>"$ROOT.apt.log" 2>&1 || { tail -n 30 "$ROOT.apt.log" >&2; kiln_die "apt-get dist-upgrade failed in the image"; }
in_root apt-get -q -y install --no-install-recommends \
	linux-image-amd64 initramfs-tools zstd systemd-sysv udev dbus qemu-guest-agent \
	grub-pc-bin ifupdown isc-dhcp-client iproute2 netbase procps e2fsprogs kmod \
	cloud-guest-utils \
	>>"$ROOT.apt.log" 2>&1 || { tail -n 40 "$ROOT.apt.log" >&2; kiln_die "apt-get install failed in the image"; }
ls "$ROOT"/boot/vmlinuz-* >/dev/null 2>&1 || kiln_die "no kernel in /boot"
ls "$ROOT"/boot/initrd.img-* >/dev/null 2>&1 || kiln_die "no initramfs in /boot"

# --- configuration ------------------------------------------------------------------
kiln_log "configuring"
echo "$HOSTNAME_" >"$ROOT/etc/hostname"
cat >"$ROOT/etc/hosts" <<EOF
127.0.0.1	localhost
127.0.1.1	$HOSTNAME_
::1		localhost ip6-localhost ip6-loopback
ff02::1		ip6-allnodes
ff02::2		ip6-allrouters
EOF
cat >"$ROOT/etc/fstab" <<EOF
# <file system> <mount point> <type> <options> <dump> <pass>
UUID=$UUID / ext4 errors=remount-ro 0 1
EOF

# DHCP on the first network interface (named eth0: net.ifnames=0), brought up
# when it appears, without holding up the boot.
cat >"$ROOT/etc/network/interfaces" <<'EOF'
# interfaces(5); see also /etc/network/interfaces.d
source /etc/network/interfaces.d/*

auto lo
iface lo inet loopback

allow-hotplug eth0
iface eth0 inet dhcp
EOF

# Boot loader configuration (the GRUB core image itself is written into the
# disk by build.sh; it reads this file).
mkdir -p "$ROOT/boot/grub"
cat >"$ROOT/boot/grub/grub.cfg" <<EOF
# GRUB (BIOS) configuration of the kiln "debian-12" image. The kernel and
# initramfs are the /vmlinuz and /initrd.img symlinks that Debian's kernel
# packages keep up to date (/vmlinuz.old, /initrd.img.old: previous kernel).
serial --unit=0 --speed=115200
terminal_input serial console
terminal_output serial console
set default=0
set timeout=0
menuentry "Debian GNU/Linux 12" {
	linux16 /vmlinuz root=UUID=$UUID ro $KERNEL_CMDLINE
	initrd16 /initrd.img
}
menuentry "Debian GNU/Linux 12 (previous kernel)" {
	linux16 /vmlinuz.old root=UUID=$UUID ro $KERNEL_CMDLINE
	initrd16 /initrd.img.old
}
EOF

# Root's password is locked (the guest agent is the way in).
in_root passwd -q -l root >/dev/null

# systemd: a fresh machine-id on first boot; the agent is started by udev when
# its port appears (Debian's unit and rule); no wait for the network.
: >"$ROOT/etc/machine-id"
rm -f "$ROOT/var/lib/dbus/machine-id"
in_root systemctl mask systemd-networkd-wait-online.service >/dev/null 2>&1 || true
in_root systemctl set-default multi-user.target >/dev/null 2>&1

# The root partition and file system grow to fill a bigger disk at boot
# (growpart from cloud-guest-utils, then resize2fs), as cloud images do.
install -m 0755 "$here/kiln-growroot" "$ROOT/usr/sbin/kiln-growroot"
install -m 0644 "$here/kiln-growroot.service" "$ROOT/etc/systemd/system/kiln-growroot.service"
in_root systemctl enable kiln-growroot.service >/dev/null 2>&1 || kiln_die "cannot enable kiln-growroot.service"

# Done with the package cache: leave the image's apt in its normal state.
rm -f "$ROOT/usr/sbin/policy-rc.d" "$ROOT/etc/apt/apt.conf.d/99kiln-build"
umount "$ROOT/var/cache/apt/archives"
in_root apt-get clean
rm -rf "$ROOT"/var/lib/apt/lists/* "$ROOT"/var/log/apt/* "$ROOT"/var/cache/debconf/*-old \
	"$ROOT"/var/lib/dpkg/*-old "$ROOT"/tmp/* "$ROOT"/var/tmp/*
: >"$ROOT/etc/resolv.conf"
find "$ROOT/var/log" -type f -exec truncate -s 0 {} +

umount "$ROOT/dev/pts" "$ROOT/sys" "$ROOT/proc"
kiln_log "root file system ready: $(du -sh --apparent-size "$ROOT" | cut -f1)"
