#!/bin/sh
# kiln's test command (README.md): builds kiln and runs every meson test
# suite (unit, component, emulator, vm), then runs the unit and component
# suites and the emulator's protocol tests again in a build with
# AddressSanitizer and UBSan, then runs every fuzz target briefly when clang
# can build libFuzzer targets.  Build directories: build/, build-asan/,
# build-fuzz/.
set -eu
cd "$(dirname "$0")/.."

# Source rules the compiler does not check (allocation through xalloc.h).
sh ci/checksrc.sh

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
# (mock instances: the guests' side is the vm suite's): EC2/SSM, EBS direct,
# S3, import/export, and the hardening cases.
UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 ASAN_OPTIONS=detect_leaks=1 \
  meson test -C build-asan --print-errorlogs emulator_protocol ebs_protocol s3_protocol import_protocol hardening

if command -v clang >/dev/null 2>&1; then
  if [ ! -d build-fuzz ]; then
    CC=clang meson setup build-fuzz -Dfuzz=true -Db_sanitize=address,undefined -Db_lundef=false
  fi
  # Every parser that takes outside input, for a bounded time each, seeded
  # from the golden files (tests/fuzz/seeds.py): a crash, leak or undefined
  # behaviour fails the test command; new inputs stay in the corpus only.
  for spec in fuzz_component:60 fuzz_emulator_request:60 fuzz_sigv4:30 fuzz_build_config:30; do
    target=${spec%%:*}
    seconds=${spec#*:}
    meson compile -C build-fuzz "$target"
    corpus=$(mktemp -d)
    python3 tests/fuzz/seeds.py "$target" "$corpus"
    log=$(mktemp)
    status=0
    (cd "$corpus" && UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
      "$OLDPWD/build-fuzz/tests/fuzz/$target" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
      -print_final_stats=1 -artifact_prefix="$corpus/" "$corpus") >"$log" 2>&1 || status=$?
    tail -n 12 "$log"
    if [ "$status" -ne 0 ]; then
      tail -n 80 "$log" >&2
      echo "$target found a failing input (status $status)" >&2
      rm -rf "$corpus" "$log"
      exit 1
    fi
    rm -rf "$corpus" "$log"
  done
fi
