#!/usr/bin/env python3
"""VM tests of kiln's accelerator choice (suite `vm`), on every machine
whatever its /dev/kvm.

  build_accel.py KILN IMAGE_NAME [CASE...]

kiln is pointed (KILN_QEMU, for tests only) at a stand-in for
qemu-system-x86_64 that behaves as QEMU does on a host whose /dev/kvm opens
but cannot run guests: with `-accel kvm` it prints "failed to set MSR 0x10a"
and aborts; anything else runs the real QEMU.  Each case probes afresh (its
own XDG_CACHE_HOME) and builds the `tiny` image.

Cases:
  fallback  `auto` (the default) builds under TCG: the manifest says tcg and
            why (QEMU's complaint, or /dev/kvm's absence), and stderr says so
            once; `--accel kvm` and KILN_ACCEL=kvm fail before any guest runs,
            saying why KVM is unusable; KILN_ACCEL=tcg builds without QEMU
            ever being started with `-accel kvm`.
  restart   the stand-in lets the probe pass under KVM but aborts the real
            guest: the build instance is started again under TCG, the manifest
            says why, and the demoted verdict is cached for the next kiln.
            Needs a /dev/kvm that opens (skipped elsewhere).
  no-kvm    in a mount namespace whose /dev has no kvm node, with the real
            QEMU: the build runs under TCG and the manifest says /dev/kvm is
            missing.  Needs root and unshare(1) (skipped elsewhere).
"""
import glob
import json
import os
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))
sys.path.insert(0, HERE)
from build_vm import Case, main_with  # noqa: E402

STAND_IN = """#!/bin/sh
# qemu-system-x86_64 as on a host with a broken KVM (see build_accel.py).
echo "$*" >> "$STAND_IN_LOG"
kvm=0 probe=0
for a in "$@"; do
  case "$a" in kvm) kvm=1 ;; -bios) probe=1 ;; esac
done
if [ "$kvm" = 1 ]; then
  # restart mode: the probe guest "finishes" at once under KVM.
  if [ "$STAND_IN_MODE" = restart ] && [ "$probe" = 1 ]; then exit 33; fi
  echo "qemu-system-x86_64: error: failed to set MSR 0x10a to 0x69" >&2
  echo "qemu-system-x86_64: ../../target/i386/kvm/kvm.c:3183: kvm_buf_set_msrs: Assertion failed." >&2
  kill -ABRT $$
fi
exec qemu-system-x86_64 "$@"
"""


def kvm_opens():
    try:
        os.close(os.open("/dev/kvm", os.O_RDWR))
        return True
    except OSError:
        return False


def setup(c, mode=""):
    """Points c's environment at the stand-in and a fresh cache."""
    stand_in = os.path.join(c.tmp, "qemu-stand-in")
    with open(stand_in, "w") as f:
        f.write(STAND_IN)
    os.chmod(stand_in, 0o755)
    c.log = os.path.join(c.tmp, "stand-in.log")
    c.cache = os.path.join(c.tmp, "cache")
    c.env.pop("KILN_ACCEL", None)
    c.env.update(KILN_QEMU=stand_in, STAND_IN_LOG=c.log, STAND_IN_MODE=mode, XDG_CACHE_HOME=c.cache)


def build(c, recipe, *args, env=None, prefix=()):
    p = subprocess.run(list(prefix) + [c.kiln, "build", recipe, "--output", c.out, "--json"] + list(args),
                       capture_output=True, text=True, env=env or c.env, timeout=1800)
    manifest = json.loads(p.stdout) if p.returncode == 0 and p.stdout.strip() else None
    accel = (manifest or {}).get("accelerator", {})
    print(f"# kiln build {' '.join(args)}: status {p.returncode}; accelerator {accel.get('name')}, "
          f"-cpu {accel.get('cpu')}: {accel.get('reason')}", flush=True)
    return p, manifest, accel


def stand_in_runs(c):
    return open(c.log).read().splitlines() if os.path.exists(c.log) else []


def case_fallback(c):
    setup(c)
    recipe = c.recipe("vm-accel", ["files.yml"])
    problems = []
    p, manifest, accel = build(c, recipe)
    if p.returncode != 0:
        return [f"kiln build with auto failed ({p.returncode}):\n{p.stderr[-3000:]}"]
    why = "failed to set MSR 0x10a" if kvm_opens() else "/dev/kvm"
    if accel.get("name") != "tcg" or accel.get("cpu") != "max" or why not in accel.get("reason", ""):
        problems.append(f"the manifest's accelerator is not tcg because of '{why}': {accel}")
    stages = [s for s in manifest["stages"] if s["name"] in ("build", "test")]
    if any(s.get("accelerator", {}).get("name") != "tcg" for s in stages):
        problems.append(f"the build and test stages do not both record tcg: {stages}")
    told = [line for line in p.stderr.splitlines() if "using tcg" in line]
    if len(told) != 1 or why not in told[0]:
        problems.append(f"stderr should say once why tcg is used, said: {told}")

    for args, env in ((["--accel", "kvm"], None), ([], dict(c.env, KILN_ACCEL="kvm"))):
        q, _, _ = build(c, recipe, *args, env=env)
        last = [line for line in q.stderr.splitlines() if line.startswith("kiln build: vm-accel failed")]
        if q.returncode != 1 or not last or "KVM is unusable here" not in last[0] or why not in last[0]:
            problems.append(f"{args or 'KILN_ACCEL=kvm'}: expected a failure saying why KVM is unusable, got "
                            f"{q.returncode}: {q.stderr[-1500:]}")
        elif "[test]" in q.stderr:
            problems.append(f"{args or 'KILN_ACCEL=kvm'}: the build went on to a test instance")
        else:
            print(f"# {last[0][:300]}")

    os.unlink(c.log)
    q, _, tcg = build(c, recipe, env=dict(c.env, KILN_ACCEL="tcg"))
    kvm_runs = [r for r in stand_in_runs(c) if " kvm " in f" {r} "]
    if q.returncode != 0 or tcg.get("name") != "tcg" or "asked for" not in tcg.get("reason", ""):
        problems.append(f"KILN_ACCEL=tcg: expected a tcg build, got {q.returncode}: {tcg} {q.stderr[-1500:]}")
    if kvm_runs or not stand_in_runs(c):
        problems.append(f"KILN_ACCEL=tcg started QEMU with -accel kvm (or not at all): {stand_in_runs(c)}")
    return problems + c.leftovers()


def case_restart(c):
    if not kvm_opens():
        print("# skipped: /dev/kvm does not open here, so no probe can pass under KVM")
        return []
    setup(c, mode="restart")
    recipe = c.recipe("vm-accel-restart", ["files.yml"])
    p, manifest, accel = build(c, recipe)
    if p.returncode != 0:
        return [f"kiln build failed ({p.returncode}):\n{p.stderr[-3000:]}"]
    problems = []
    if accel.get("name") != "tcg" or "after the probe passed" not in accel.get("reason", ""):
        problems.append(f"the manifest does not say the guest was restarted under tcg: {accel}")
    if "starting it again under tcg" not in p.stderr:
        problems.append(f"stderr does not say the guest is started again under tcg:\n{p.stderr[-2000:]}")
    runs = stand_in_runs(c)
    guest_kvm = [r for r in runs if " kvm " in f" {r} " and "-bios" not in r]
    if len(guest_kvm) != 1:
        problems.append(f"expected one guest started under kvm (the build instance), then tcg: {runs}")
    records = [json.load(open(f)) for f in glob.glob(os.path.join(c.cache, "kiln", "accel", "*.json"))]
    if len(records) != 1 or "after the probe passed" not in records[0].get("demoted", ""):
        problems.append(f"the demoted verdict is not cached for the next kiln: {records}")
    return problems + c.leftovers()


def case_no_kvm(c):
    if os.geteuid() != 0 or not shutil.which("unshare"):
        print("# skipped: needs root and unshare(1) for a mount namespace")
        return []
    c.cache = os.path.join(c.tmp, "cache")
    env = dict(c.env, XDG_CACHE_HOME=c.cache)
    env.pop("KILN_ACCEL", None)
    env.pop("KILN_QEMU", None)
    # A /dev of its own: the usual character devices and no kvm.
    nodes = {"null": (1, 3), "zero": (1, 5), "full": (1, 7), "random": (1, 8), "urandom": (1, 9), "tty": (5, 0)}
    hide = " && ".join(["mount -t tmpfs -o mode=755 kiln-dev /dev"]
                       + [f"mknod -m 666 /dev/{n} c {a} {b}" for n, (a, b) in nodes.items()]
                       + ["ln -s /proc/self/fd /dev/fd", "mkdir /dev/shm", "test ! -e /dev/kvm", 'exec "$0" "$@"'])
    recipe = c.recipe("vm-accel-no-kvm", ["files.yml"])
    p, manifest, accel = build(c, recipe, env=env,
                               prefix=("unshare", "-m", "--propagation", "private", "--", "sh", "-c", hide))
    if p.returncode != 0:
        return [f"kiln build without /dev/kvm failed ({p.returncode}):\n{p.stderr[-3000:]}"]
    problems = []
    if accel.get("name") != "tcg" or "/dev/kvm: No such file or directory" not in accel.get("reason", ""):
        problems.append(f"the manifest does not say tcg because /dev/kvm is missing: {accel}")
    return problems + c.leftovers()


CASES = {"fallback": case_fallback, "restart": case_restart, "no-kvm": case_no_kvm}


if __name__ == "__main__":
    sys.exit(main_with(CASES))
