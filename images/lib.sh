# shellcheck shell=bash
# images/lib.sh: shell functions shared by images/*/build.sh.
#
# Sourced by bash scripts that run under `set -euo pipefail`. Everything here
# works without loop devices and without mounting anything on the host: file
# systems are made with `mke2fs -d`, partition tables with sfdisk, and the
# boot loader (GRUB for BIOS) is written into the disk image with dd.
# See images/README.md for the contract between kiln and build.sh.

# ---------------------------------------------------------------------------
# Messages, errors, cleanup

kiln_log() {
	printf '%s: %s\n' "${KILN_IMAGE_NAME:-image}" "$*" >&2
}

kiln_die() {
	printf '%s: error: %s\n' "${KILN_IMAGE_NAME:-image}" "$*" >&2
	exit 1
}

# Elapsed whole seconds since kiln_init.
kiln_elapsed() {
	echo $(($(date +%s) - KILN_START))
}

KILN_CHILD=""
KILN_OWN_WORKDIR=""
KILN_OUT_TMP=""

# Runs a command in the background and waits for it, so that a TERM or INT
# sent to build.sh stops the command too (see kiln_on_signal).
kiln_run() {
	"$@" &
	KILN_CHILD=$!
	local rc=0
	wait "$KILN_CHILD" || rc=$?
	KILN_CHILD=""
	return "$rc"
}

kiln_on_exit() {
	local rc=$?
	trap - EXIT INT TERM HUP
	# The partial output goes first, in case a SIGKILL follows soon.
	[ -n "$KILN_OUT_TMP" ] && rm -f "$KILN_OUT_TMP"
	if [ -n "$KILN_CHILD" ]; then
		# TERM, then KILL after 1 s (unshare ignores TERM; killing it kills
		# its namespaces and everything in them).
		kill -TERM "$KILN_CHILD" 2>/dev/null || true
		local i=0
		while kill -0 "$KILN_CHILD" 2>/dev/null && [ $i -lt 10 ]; do
			sleep 0.1
			i=$((i + 1))
		done
		kill -KILL "$KILN_CHILD" 2>/dev/null || true
		wait "$KILN_CHILD" 2>/dev/null || true
	fi
	if [ -n "$KILN_OWN_WORKDIR" ]; then
		rm -rf --one-file-system "$KILN_OWN_WORKDIR"
	fi
	if [ "$rc" -ne 0 ]; then
		printf '%s: failed (exit status %d) after %ss\n' \
			"${KILN_IMAGE_NAME:-image}" "$rc" "$(kiln_elapsed)" >&2
	fi
	exit "$rc"
}

kiln_on_signal() {
	printf '%s: error: stopped by signal %s\n' "${KILN_IMAGE_NAME:-image}" "$1" >&2
	case "$1" in
	INT) exit 130 ;;
	HUP) exit 129 ;;
	*) exit 143 ;;
	esac
}

# kiln_init NAME "$@": checks the command line and the environment, and sets
#   KILN_OUT      absolute path of the image to write
#   KILN_OUT_TMP  temporary file beside it, renamed to KILN_OUT by kiln_publish
#   KILN_WORK     scratch directory (KILN_IMAGE_WORKDIR, or a private one)
#   KILN_DEBS     directory of downloaded .deb files (under KILN_IMAGE_CACHE
#                 when it is set, so that later builds reuse them)
kiln_init() {
	KILN_IMAGE_NAME=$1
	export PATH="${PATH:+$PATH:}/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	shift
	KILN_START=$(date +%s)
	trap kiln_on_exit EXIT
	trap 'kiln_on_signal INT' INT
	trap 'kiln_on_signal TERM' TERM
	trap 'kiln_on_signal HUP' HUP

	if [ $# -ne 1 ] || [ -z "$1" ]; then
		kiln_die "usage: build.sh OUTPUT.qcow2 (environment: KILN_IMAGE_WORKDIR, KILN_IMAGE_CACHE)"
	fi
	[ "$(id -u)" -eq 0 ] || kiln_die "must run as root"
	[ "$(uname -m)" = x86_64 ] || kiln_die "only x86_64 hosts are supported (this is $(uname -m))"

	local dir
	dir=$(dirname -- "$1")
	[ -d "$dir" ] || kiln_die "output directory $dir does not exist"
	dir=$(cd -- "$dir" && pwd -P)
	KILN_OUT="$dir/$(basename -- "$1")"
	[ -d "$KILN_OUT" ] && kiln_die "output $KILN_OUT is a directory"
	KILN_OUT_TMP="$dir/.$(basename -- "$1").tmp.$$"

	if [ -n "${KILN_IMAGE_WORKDIR:-}" ]; then
		[ -d "$KILN_IMAGE_WORKDIR" ] || kiln_die "KILN_IMAGE_WORKDIR=$KILN_IMAGE_WORKDIR is not a directory"
		KILN_WORK=$(cd -- "$KILN_IMAGE_WORKDIR" && pwd -P)
	else
		KILN_OWN_WORKDIR=$(mktemp -d /var/tmp/kiln-image.XXXXXX)
		KILN_WORK=$KILN_OWN_WORKDIR
	fi

	if [ -n "${KILN_IMAGE_CACHE:-}" ]; then
		mkdir -p -- "$KILN_IMAGE_CACHE" || kiln_die "cannot create KILN_IMAGE_CACHE=$KILN_IMAGE_CACHE"
		KILN_DEBS="$(cd -- "$KILN_IMAGE_CACHE" && pwd -P)/debs"
		# One build at a time per cache (apt and debootstrap do not share
		# a download directory safely).
		exec 9>"$KILN_IMAGE_CACHE/.lock"
		if ! flock -n 9; then
			kiln_log "waiting for another build that uses $KILN_IMAGE_CACHE"
			flock 9 || kiln_die "cannot lock $KILN_IMAGE_CACHE/.lock"
		fi
	else
		KILN_DEBS="$KILN_WORK/debs"
	fi
	mkdir -p "$KILN_DEBS/partial"
	kiln_log "building into $KILN_WORK, packages cached in $KILN_DEBS"
}

# kiln_need CMD[:PACKAGE]...: dies naming the Debian packages to install for
# every command that is missing.
kiln_need() {
	local spec cmd pkg missing=""
	for spec in "$@"; do
		cmd=${spec%%:*}
		pkg=${spec#*:}
		if ! command -v "$cmd" >/dev/null 2>&1 && [ ! -x "/usr/sbin/$cmd" ] && [ ! -x "/sbin/$cmd" ]; then
			missing="$missing $pkg"
		fi
	done
	if [ -n "$missing" ]; then
		# shellcheck disable=SC2086 # one package a word
		kiln_die "missing host tools; install them with: apt-get install$(printf '%s\n' $missing | sort -u | tr '\n' ' ' | sed 's/^/ /;s/ $//')"
	fi
}

# kiln_need_file FILE PACKAGE
kiln_need_file() {
	[ -e "$1" ] || kiln_die "missing $1; install it with: apt-get install $2"
}

# Moves the finished raw disk image into place as a compressed qcow2.
kiln_publish() {
	local raw=$1
	kiln_log "writing compressed qcow2"
	rm -f "$KILN_OUT_TMP"
	kiln_run qemu-img convert -q -c -f raw -O qcow2 "$raw" "$KILN_OUT_TMP" ||
		kiln_die "qemu-img convert failed"
	mv -f -- "$KILN_OUT_TMP" "$KILN_OUT" || kiln_die "cannot rename $KILN_OUT_TMP to $KILN_OUT"
	KILN_OUT_TMP=""
	kiln_log "wrote $KILN_OUT ($(du -h --apparent-size "$KILN_OUT" | cut -f1)) in $(kiln_elapsed)s"
}

# ---------------------------------------------------------------------------
# Debian packages, downloaded with the host's apt configuration and package
# lists but never installed on the host.

# apt-get/apt-cache against an empty package database, so that dependency
# resolution yields everything a package needs on an empty system. Nothing
# of the host's apt state is written.
kiln_apt() {
	local tool=$1
	shift
	[ -e "$KILN_WORK/apt-status" ] || : >"$KILN_WORK/apt-status"
	"$tool" -q \
		-o APT::Architecture=amd64 \
		-o Dir::State::status="$KILN_WORK/apt-status" \
		-o Dir::Cache::pkgcache= -o Dir::Cache::srcpkgcache= \
		-o Dir::Cache::archives="$KILN_DEBS" \
		-o APT::Sandbox::User=root \
		"$@"
}

kiln_candidate() {
	local v
	v=$(kiln_apt apt-cache policy "$1" 2>/dev/null | sed -n 's/^ *Candidate: *//p')
	if [ -z "$v" ] || [ "$v" = "(none)" ]; then
		kiln_die "apt knows no version of package $1: run 'apt-get update' on this host (with Debian bookworm sources)"
	fi
	printf '%s\n' "$v"
}

# The versioned kernel package behind linux-image-amd64, e.g.
# linux-image-6.1.0-56-amd64.
kiln_kernel_package() {
	local v dep
	v=$(kiln_candidate linux-image-amd64)
	dep=$(kiln_apt apt-cache show "linux-image-amd64=$v" 2>/dev/null |
		sed -n 's/^Depends: *//p' | head -n1 | tr ',' '\n' |
		sed -n 's/^ *\(linux-image-[0-9][^ ]*\).*/\1/p' | head -n1)
	[ -n "$dep" ] || kiln_die "cannot tell which kernel linux-image-amd64 $v depends on"
	printf '%s\n' "$dep"
}

# kiln_fetch_closure LISTFILE PACKAGE...: downloads PACKAGEs and everything
# they depend on (not recommends) into KILN_DEBS, reusing files already there,
# and writes the paths of the .deb files to LISTFILE.
kiln_fetch_closure() {
	local list=$1
	shift
	local p
	for p in "$@"; do kiln_candidate "$p" >/dev/null; done
	kiln_apt apt-get -s install -y --no-install-recommends "$@" >"$KILN_WORK/apt-sim.log" 2>&1 ||
		{ cat "$KILN_WORK/apt-sim.log" >&2; kiln_die "apt cannot resolve: $*"; }
	# "Inst NAME (VERSION ORIGIN [ARCH]) ..." -> NAME_VERSION_ARCH.deb, the
	# name apt and debootstrap give to downloaded files (':' as %3a).
	sed -n 's/^Inst \([^ ]*\) (\([^ ]*\) [^[]*\[\([a-z0-9]*\)\].*/\1_\2_\3.deb/p' \
		"$KILN_WORK/apt-sim.log" | sed 's/:/%3a/g; s|^|'"$KILN_DEBS"'/|' >"$list"
	[ -s "$list" ] || kiln_die "apt resolved no packages for: $*"
	kiln_run kiln_apt apt-get install -y --no-install-recommends --download-only "$@" \
		>"$KILN_WORK/apt-download.log" 2>&1 ||
		{ cat "$KILN_WORK/apt-download.log" >&2; kiln_die "downloading packages failed: $*"; }
	while read -r p; do
		[ -f "$p" ] || kiln_die "apt did not leave $p in the package cache"
	done <"$list"
}

# kiln_fetch_one PACKAGE: downloads exactly PACKAGE (its candidate version,
# no dependencies) into KILN_DEBS and prints the file's path.
kiln_fetch_one() {
	local v f arch
	v=$(kiln_candidate "$1")
	arch=$(kiln_apt apt-cache show "$1=$v" 2>/dev/null | sed -n 's/^Architecture: *//p' | head -n1)
	f="$KILN_DEBS/$(printf '%s_%s_%s.deb' "$1" "$v" "${arch:-amd64}" | sed 's/:/%3a/g')"
	# apt-get download verifies a file already present and skips it.
	(cd "$KILN_DEBS" && kiln_apt apt-get download "$1=$v") >"$KILN_WORK/apt-download.log" 2>&1 ||
		{ cat "$KILN_WORK/apt-download.log" >&2; kiln_die "downloading $1 failed"; }
	[ -f "$f" ] || kiln_die "apt did not leave $f in the package cache"
	printf '%s\n' "$f"
}

# kiln_extract DIR DEB...: unpacks .deb files into DIR (no maintainer scripts).
kiln_extract() {
	local dir=$1 deb
	shift
	mkdir -p "$dir"
	for deb in "$@"; do
		dpkg-deb -x "$deb" "$dir" || kiln_die "cannot unpack $deb"
	done
}

# The Debian mirror for bookworm: KILN_DEBIAN_MIRROR, or the first enabled
# 'deb' source of this host's apt configuration that serves SUITE.
# kiln_debian_mirror [SUITE]  (default bookworm)
kiln_debian_mirror() {
	local suite=${1:-bookworm} uri=""
	if [ "$suite" = bookworm ] && [ -n "${KILN_DEBIAN_MIRROR:-}" ]; then
		printf '%s\n' "${KILN_DEBIAN_MIRROR%/}"
		return 0
	fi
	if [ "$suite" = bookworm-security ] && [ -n "${KILN_DEBIAN_SECURITY_MIRROR:-}" ]; then
		printf '%s\n' "${KILN_DEBIAN_SECURITY_MIRROR%/}"
		return 0
	fi
	local f
	for f in /etc/apt/sources.list.d/*.sources; do
		[ -f "$f" ] || continue
		uri=$(awk -v suite="$suite" '
			function flush() {
				if (types ~ /(^| )deb( |$)/ && (" " suites " ") ~ (" " suite " ") && enabled != "no" && uris != "" && found == "") {
					split(uris, u, " "); found = u[1]
				}
				types = ""; suites = ""; uris = ""; enabled = ""
			}
			/^[ \t]*#/ { next }
			/^[ \t]*$/ { flush(); next }
			{
				key = tolower($1); sub(/:$/, "", key)
				val = $0; sub(/^[^:]*:[ \t]*/, "", val)
				if (key == "types") types = val
				else if (key == "suites") suites = val
				else if (key == "uris") uris = val
				else if (key == "enabled") enabled = tolower(val)
			}
			END { flush(); print found }' "$f")
		[ -n "$uri" ] && break
	done
	if [ -z "$uri" ]; then
		for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
			[ -f "$f" ] || continue
			uri=$(awk -v suite="$suite" '
				$1 == "deb" {
					i = 2
					if ($2 ~ /^\[/) { while (i <= NF && $i !~ /\]$/) i++; i++ }
					if ($(i + 1) == suite) { print $i; exit }
				}' "$f")
			[ -n "$uri" ] && break
		done
	fi
	[ -n "$uri" ] || return 1
	printf '%s\n' "${uri%/}"
}

# ---------------------------------------------------------------------------
# Disk images

# kiln_new_uuid: a random UUID for the root file system.
kiln_new_uuid() {
	cat /proc/sys/kernel/random/uuid
}

# kiln_grub_core OUT.img UUID [CHROOT]: a GRUB core image for BIOS that
# finds the file system with UUID and reads /boot/grub/grub.cfg from it. The
# modules that file needs are built in, so the disk needs no
# /boot/grub/i386-pc directory. With CHROOT, the GRUB installed there
# (grub-pc-bin) makes it; otherwise this host's.
kiln_grub_core() {
	local out=$1 uuid=$2 chroot_dir=${3:-} tmp
	local modules="biosdisk part_msdos ext2 search_fs_uuid normal linux linux16 boot configfile echo test serial terminal sleep"
	if [ -n "$chroot_dir" ]; then
		tmp=$(mktemp -d "$chroot_dir/tmp/grub.XXXXXX")
	else
		tmp=$(mktemp -d "$KILN_WORK/grub.XXXXXX")
	fi
	cat >"$tmp/early.cfg" <<EOF
search.fs_uuid $uuid root
set prefix=(\$root)/boot/grub
EOF
	if [ -n "$chroot_dir" ]; then
		local t=${tmp#"$chroot_dir"}
		# shellcheck disable=SC2086
		chroot "$chroot_dir" grub-mkimage -O i386-pc -d /usr/lib/grub/i386-pc \
			-o "$t/core.img" -c "$t/early.cfg" -p /boot/grub $modules ||
			kiln_die "grub-mkimage (in $chroot_dir) failed"
	else
		# shellcheck disable=SC2086
		grub-mkimage -O i386-pc -d /usr/lib/grub/i386-pc \
			-o "$tmp/core.img" -c "$tmp/early.cfg" -p /boot/grub $modules ||
			kiln_die "grub-mkimage failed"
	fi
	mv "$tmp/core.img" "$out"
	rm -rf "$tmp"
}

# kiln_make_disk RAW SIZE_MIB ROOTDIR UUID LABEL BOOT_IMG CORE_IMG
# Writes a raw disk image: MBR partition table with one bootable Linux
# partition from 1 MiB to the end, holding an ext4 file system made from
# ROOTDIR (owners, modes, device nodes and symlinks kept), and GRUB's boot
# sector and core image in the MBR and the gap before the partition.
kiln_make_disk() {
	local raw=$1 size=$2 root=$3 uuid=$4 label=$5 bootimg=$6 coreimg=$7
	local core_bytes
	core_bytes=$(stat -c %s "$coreimg")
	[ "$core_bytes" -le $((2047 * 512)) ] || kiln_die "GRUB core image too big ($core_bytes bytes)"
	rm -f "$raw"
	truncate -s "${size}M" "$raw"
	printf 'label: dos\nstart=2048, type=83, bootable\n' |
		sfdisk --quiet --no-reread --no-tell-kernel "$raw" >/dev/null ||
		kiln_die "sfdisk failed"
	kiln_log "making ext4 file system ($((size - 1)) MiB) from $root"
	kiln_run mke2fs -q -F -t ext4 -b 4096 -L "$label" -U "$uuid" \
		-E offset=1048576 -d "$root" "$raw" "$((size - 1))M" ||
		kiln_die "mke2fs failed"
	# boot.img's first 440 bytes (the partition table stays), then the core
	# image from sector 1, where boot.img looks for it.
	dd if="$bootimg" of="$raw" bs=440 count=1 conv=notrunc status=none || kiln_die "writing MBR failed"
	dd if="$coreimg" of="$raw" bs=512 seek=1 conv=notrunc status=none || kiln_die "writing GRUB core failed"
}
