#!/bin/sh
# kiln's test command (README.md): builds kiln and runs every meson test
# suite (unit, component, emulator, vm), then runs the unit and component
# suites and the emulator's protocol test again in a build with
# AddressSanitizer and UBSan, then fuzzes the document parser briefly when
# clang can build libFuzzer targets.  Build directories: build/, build-asan/,
# build-fuzz/.
set -eu
cd "$(dirname "$0")/.."

meson setup build --reconfigure >/dev/null 2>&1 || meson setup build
meson compile -C build
# The vm suite boots real guests (TCG without /dev/kvm); its base images are
# built once and cached under ~/.cache/kiln/images.
KILN_TEST_IMAGE=$(build/builder/kiln image bootstrap tiny)
export KILN_TEST_IMAGE
meson test -C build --print-errorlogs

meson setup build-asan -Db_sanitize=address,undefined --reconfigure >/dev/null 2>&1 \
  || meson setup build-asan -Db_sanitize=address,undefined
meson compile -C build-asan
UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 ASAN_OPTIONS=detect_leaks=1 \
  meson test -C build-asan --print-errorlogs --suite unit --suite component
# kiln-emulator under the sanitizers too, driven by the real AWS clients
# (mock instances: the guests' side is the vm suite's): EC2/SSM, EBS direct
# and S3.
UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 ASAN_OPTIONS=detect_leaks=1 \
  meson test -C build-asan --print-errorlogs emulator_protocol ebs_protocol s3_protocol import_protocol

if command -v clang >/dev/null 2>&1; then
  if [ ! -d build-fuzz ]; then
    CC=clang meson setup build-fuzz -Dfuzz=true -Db_sanitize=address,undefined -Db_lundef=false
  fi
  meson compile -C build-fuzz fuzz_component
  corpus=$(mktemp -d)
  find tests/data/component -name '*.yml' -exec cp {} "$corpus" \;
  # A bounded run: crashes fail the test command; new inputs stay in $corpus.
  log=$(mktemp)
  status=0
  build-fuzz/tests/fuzz/fuzz_component -max_total_time=60 -timeout=10 -rss_limit_mb=2048 \
    -print_final_stats=1 "$corpus" >"$log" 2>&1 || status=$?
  tail -n 40 "$log"
  rm -rf "$corpus" "$log"
  if [ "$status" -ne 0 ]; then
    echo "fuzz_component found a failing input (status $status)" >&2
    exit 1
  fi
fi
