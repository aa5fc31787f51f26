#!/bin/sh
# Source checks a compiler does not make, as curl's checksrc: allocation goes
# through common/xalloc.h (kiln does not run on after the heap is exhausted,
# so no caller checks for NULL), never through calls whose failure every
# caller would have to handle.  Prints each offending line; exits 1 if any.
set -eu
cd "$(dirname "$0")/.."
status=0
check () {
  what=$1
  pattern=$2
  found=$(git ls-files 'common/*.c' 'common/*.h' 'drivers/*.c' 'builder/*.c' 'emulator/*.c' \
          | grep -v '^common/xalloc.h$' | xargs grep -nP "$pattern" || true)
  if [ -n "$found" ]; then
    echo "checksrc: $what:" >&2
    echo "$found" | sed 's/^/  /' >&2
    status=1
  fi
}
check "asprintf/vasprintf (use kiln_xasprintf/kiln_xvasprintf)" '(?<![A-Za-z_])v?asprintf \('
check "strdup/strndup (use kiln_xstrdup/kiln_xstrndup)" '(?<![A-Za-z_])strn?dup \('
# kiln-emulator's parts depend on each other one way (issue 11): no include
# cycle between its modules (a .c with its .h) longer than two.
python3 ci/include_cycles.py emulator 2 || status=1
exit $status
