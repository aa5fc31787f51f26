"""The loop the case-per-scenario test scripts share (tests/vm/build_vm.py,
tests/emulator/build_ec2.py, tests/emulator/image_transfer.py).

Each case is a function returning a list of problems (empty: it passed); a
case that raises has failed, with the exception as its problem.  Results
go out as TAP, the plan first, one "ok"/"not ok" line per case as soon as it
ends, its problems as diagnostics beneath.

Scripts import it with the tests directory on sys.path:

    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    from tap_cases import run_cases
"""
import sys


def run_cases(names, run_one):
    """Runs run_one(name) for each name in order; returns the exit status
    (0 when every case passed, 1 otherwise)."""
    print(f"1..{len(names)}", flush=True)
    failures = 0
    for i, name in enumerate(names, 1):
        try:
            problems = run_one(name)
        except Exception as e:  # a broken case is a failed case, with its reason
            problems = [f"{type(e).__name__}: {e}"]
        if problems:
            failures += 1
            print(f"not ok {i} - {name}")
            for p in problems:
                for line in str(p).splitlines():
                    print(f"# {line}")
        else:
            print(f"ok {i} - {name}")
        sys.stdout.flush()
    return 1 if failures else 0
