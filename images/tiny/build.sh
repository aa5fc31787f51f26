#!/bin/bash
# kiln base image "tiny": Debian's kernel, busybox, bash and the QEMU guest
# agent on a 1 GiB disk that boots by itself (GRUB in the MBR) to a running
# qemu-ga in a few seconds under TCG.
#
# Usage (as root): build.sh OUTPUT.qcow2
# Environment: KILN_IMAGE_WORKDIR (empty scratch directory), KILN_IMAGE_CACHE
# (optional: keeps downloaded .deb files between builds). See ../README.md.
set -euo pipefail
umask 022
export LC_ALL=C

here=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)
# shellcheck source=../lib.sh
. "$here/../lib.sh"

kiln_init tiny "$@"
kiln_need apt-get:apt dpkg-deb:dpkg qemu-img:qemu-utils mke2fs:e2fsprogs \
	sfdisk:fdisk grub-mkimage:grub-common depmod:kmod modprobe:kmod \
	cpio:cpio gzip:gzip
kiln_need_file /usr/lib/grub/i386-pc/boot.img grub-pc-bin

DISK_MIB=1024
LABEL=kiln-root
W=$KILN_WORK
ROOT=$W/root
STAGE=$W/stage

# --- packages ---------------------------------------------------------------
kiln_log "downloading packages"
kpkg=$(kiln_kernel_package)
kdeb=$(kiln_fetch_one "$kpkg")
kiln_fetch_closure "$W/debs.list" busybox-static bash qemu-guest-agent
mapfile -t debs <"$W/debs.list"

kiln_log "unpacking $kpkg and ${#debs[@]} packages"
kiln_extract "$W/kernel" "$kdeb"
kiln_extract "$STAGE" "${debs[@]}"

KVER=$(ls "$W/kernel/lib/modules")
if [ -z "$KVER" ] || [ ! -f "$W/kernel/boot/vmlinuz-$KVER" ]; then
	kiln_die "unexpected layout in $kdeb"
fi
depmod -b "$W/kernel" "$KVER" || kiln_die "depmod failed"

# --- root file system ---------------------------------------------------------
kiln_log "assembling the root file system"
mkdir -p "$ROOT"
# Merged /usr, as in Debian.
mkdir -p "$ROOT"/usr/{bin,sbin,lib,lib64} "$ROOT"/usr/lib/x86_64-linux-gnu "$ROOT"/usr/local/{bin,sbin}
for d in bin sbin lib lib64; do ln -s "usr/$d" "$ROOT/$d"; done
mkdir -p "$ROOT"/{boot/grub,dev,etc,home,mnt,proc,root,run,sys,tmp,var/{cache,lib,log,spool,tmp}}
ln -s ../run "$ROOT/var/run"
ln -s ../run/lock "$ROOT/var/lock"
chmod 0700 "$ROOT/root"
chmod 1777 "$ROOT/tmp" "$ROOT/var/tmp"
mknod -m 0600 "$ROOT/dev/console" c 5 1
mknod -m 0666 "$ROOT/dev/null" c 1 3

# busybox and its applets (as relative symlinks), bash, qemu-ga.
install -m 0755 "$STAGE/bin/busybox" "$ROOT/usr/bin/busybox"
"$STAGE/bin/busybox" --list-full | while read -r applet; do
	case "$applet" in
	linuxrc | */dpkg | */dpkg-deb | */rpm | */rpm2cpio) continue ;;
	bin/* | sbin/*) applet=usr/$applet ;;
	esac
	case "$applet" in
	usr/bin/*) target=busybox ;;
	usr/sbin/*) target=../bin/busybox ;;
	*) kiln_die "unexpected busybox applet path $applet" ;;
	esac
	[ -e "$ROOT/$applet" ] || [ -L "$ROOT/$applet" ] || ln -s "$target" "$ROOT/$applet"
done
install -m 0755 "$STAGE/bin/bash" "$ROOT/usr/bin/bash"
install -m 0755 "$STAGE/usr/sbin/qemu-ga" "$ROOT/usr/sbin/qemu-ga"

# Shared libraries those need, as the Debian loader resolves them inside the
# unpacked packages (run with chroot: nothing is mounted).
install -m 0755 "$STAGE/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2" \
	"$ROOT/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"
ln -s ../lib/x86_64-linux-gnu/ld-linux-x86-64.so.2 "$ROOT/usr/lib64/ld-linux-x86-64.so.2"
for bin in /bin/bash /usr/sbin/qemu-ga; do
	chroot "$STAGE" /lib64/ld-linux-x86-64.so.2 --list "$bin" >"$W/ldd.out" 2>&1 ||
		{ cat "$W/ldd.out" >&2; kiln_die "cannot list the libraries of $bin"; }
	if grep -q 'not found' "$W/ldd.out"; then
		cat "$W/ldd.out" >&2
		kiln_die "libraries of $bin missing from the downloaded packages"
	fi
	sed -n 's/^[[:space:]]*[^ ]* => \(\/[^ ]*\) .*/\1/p' "$W/ldd.out" | while read -r lib; do
		name=$(basename "$lib")
		[ -e "$ROOT/usr/lib/x86_64-linux-gnu/$name" ] ||
			install -m 0644 "$STAGE$lib" "$ROOT/usr/lib/x86_64-linux-gnu/$name"
	done
done

# Copyright files of every package a file was taken from.
(cd "$ROOT/usr/lib/x86_64-linux-gnu" && ls) | sed 's|^|/x86_64-linux-gnu/|' >"$W/shipped"
printf '%s\n' /bin/bash /bin/busybox /usr/sbin/qemu-ga >>"$W/shipped"
for deb in "${debs[@]}"; do
	pkg=$(dpkg-deb -f "$deb" Package)
	dpkg-deb -c "$deb" | awk '{ print $6 }' | sed 's|^\.||' >"$W/contents"
	if grep -q -F -f "$W/shipped" "$W/contents" && [ -f "$STAGE/usr/share/doc/$pkg/copyright" ]; then
		install -D -m 0644 "$STAGE/usr/share/doc/$pkg/copyright" "$ROOT/usr/share/doc/$pkg/copyright"
	fi
done
install -D -m 0644 "$W/kernel/usr/share/doc/$kpkg/copyright" "$ROOT/usr/share/doc/$kpkg/copyright"

# Kernel modules: the disk and file system drivers (also in the initramfs),
# virtio console, network, rng and balloon. modprobe works for these.
modlist() {
	local m
	for m in "$@"; do
		modprobe -d "$W/kernel" -S "$KVER" --show-depends "$m" ||
			kiln_die "no kernel module $m in $kpkg"
	done | sed -n "s|^insmod $W/kernel/lib/modules/$KVER/||p" | awk '!seen[$1]++ { print $1 }'
}
boot_modules=$(modlist virtio_pci virtio_blk ext4)
root_modules=$(modlist virtio_pci virtio_blk ext4 virtio_console virtio_net virtio_rng virtio_balloon)
mdir=$ROOT/usr/lib/modules/$KVER
for m in $root_modules; do
	install -D -m 0644 "$W/kernel/lib/modules/$KVER/$m" "$mdir/$m"
done
for f in modules.order modules.builtin modules.builtin.modinfo; do
	cp "$W/kernel/lib/modules/$KVER/$f" "$mdir/$f"
done
depmod -b "$ROOT" "$KVER" || kiln_die "depmod failed for the image"

# The image's own files (init scripts, agent start-up, shutdown, config).
cp -R "$here/rootfs/." "$ROOT/"
chmod 0755 "$ROOT"/etc/init.d/rcS "$ROOT"/etc/init.d/rcK "$ROOT"/usr/sbin/kiln-qga \
	"$ROOT"/usr/sbin/kiln-virtio-ports "$ROOT"/usr/sbin/shutdown \
	"$ROOT"/usr/share/udhcpc/default.script
chmod 0600 "$ROOT/etc/shadow"
ln -sfn /proc/mounts "$ROOT/etc/mtab"
qga_version=$(dpkg-deb -f "$(grep '/qemu-guest-agent_' "$W/debs.list")" Version)
bb_version=$(dpkg-deb -f "$(grep '/busybox-static_' "$W/debs.list")" Version)
bash_version=$(dpkg-deb -f "$(grep '/bash_' "$W/debs.list")" Version)
cat >"$ROOT/etc/os-release" <<EOF
PRETTY_NAME="kiln tiny"
NAME="kiln tiny"
ID=kiln-tiny
VERSION_ID=1
EOF
ln -s ../etc/os-release "$ROOT/usr/lib/os-release"
UUID=$(kiln_new_uuid)
cat >"$ROOT/etc/fstab" <<EOF
# The root file system is mounted read-write by the initramfs.
UUID=$UUID / ext4 rw 0 1
EOF
cat >"$ROOT/etc/kiln-image" <<EOF
name=tiny
built=$(date -u +%Y-%m-%dT%H:%M:%SZ)
kernel=$KVER ($kpkg $(dpkg-deb -f "$kdeb" Version))
qemu-guest-agent=$qga_version
busybox-static=$bb_version
bash=$bash_version
EOF

# --- initramfs ------------------------------------------------------------------
kiln_log "making the initramfs"
IRD=$W/initramfs
mkdir -p "$IRD"/{bin,dev,proc,sys,newroot,lib/modules}
install -m 0755 "$STAGE/bin/busybox" "$IRD/bin/busybox"
install -m 0755 "$here/initramfs-init" "$IRD/init"
mknod -m 0600 "$IRD/dev/console" c 5 1
: >"$IRD/modules.list"
for m in $boot_modules; do
	install -m 0644 "$W/kernel/lib/modules/$KVER/$m" "$IRD/lib/modules/${m##*/}"
	echo "${m##*/}" >>"$IRD/modules.list"
done
(cd "$IRD" && find . -mindepth 1 | LC_ALL=C sort | cpio --quiet -o -H newc -R 0:0) |
	gzip -9n >"$ROOT/boot/initrd.img-$KVER" || kiln_die "making the initramfs failed"

# --- boot loader -----------------------------------------------------------------
install -m 0644 "$W/kernel/boot/vmlinuz-$KVER" "$ROOT/boot/vmlinuz-$KVER"
install -m 0644 "$W/kernel/boot/config-$KVER" "$ROOT/boot/config-$KVER"
ln -s "vmlinuz-$KVER" "$ROOT/boot/vmlinuz"
ln -s "initrd.img-$KVER" "$ROOT/boot/initrd.img"
cat >"$ROOT/boot/grub/grub.cfg" <<EOF
# GRUB (BIOS) configuration of the kiln "tiny" image.
serial --unit=0 --speed=115200
terminal_input serial console
terminal_output serial console
set default=0
set timeout=0
menuentry "kiln tiny ($KVER)" {
	linux16 /boot/vmlinuz root=UUID=$UUID rw console=ttyS0,115200 edd=off
	initrd16 /boot/initrd.img
}
EOF
kiln_grub_core "$W/core.img" "$UUID"

# --- disk -------------------------------------------------------------------------
kiln_log "root file system: $(du -sh --apparent-size "$ROOT" | cut -f1)"
kiln_make_disk "$W/disk.raw" "$DISK_MIB" "$ROOT" "$UUID" "$LABEL" \
	/usr/lib/grub/i386-pc/boot.img "$W/core.img"
kiln_publish "$W/disk.raw"
