#!/bin/sh
# Installs what kiln needs to build, to run, and to run its tests, from
# Debian's packages.  Run as root on Debian bookworm (a fresh machine or CI).
set -eu
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends \
  build-essential meson ninja-build pkg-config \
  clang libclang-rt-14-dev \
  libyaml-dev libjansson-dev libssl-dev libcurl4-openssl-dev \
  python3 ca-certificates bash coreutils findutils bc \
  qemu-system-x86 qemu-utils \
  e2fsprogs fdisk util-linux kmod cpio gzip grub-common grub-pc-bin \
  debootstrap debian-archive-keyring \
  libmicrohttpd-dev libxml2-dev libsqlite3-dev \
  awscli python3-boto3
