#!/usr/bin/env python3
"""VM tests of `kiln build` with the QEMU driver (suite `vm`).

Real guests under TCG, one at a time.  The base image comes from
`kiln image bootstrap NAME` (cached between runs under ~/.cache/kiln).

  build_vm.py KILN IMAGE_NAME [CASE...]

Cases:
  build      a recipe of several components (files, a configuration change, a
             Reboot step, an exit-194 step, a loop); the published image's
             test stage, on a fresh instance, sees the build's changes;
             nothing is left running or on disk.
  failure    a failing component fails the build, publishes nothing and
             leaves nothing behind.
  sigterm    SIGTERM in the middle of a build: kiln exits 143 and leaves
             nothing behind.
  sigkill    SIGKILL in the middle of a build leaves QEMU dead (it dies with
             kiln) and the next kiln command removes the run directory.
  keep       --keep-on-failure keeps the failed build instance running after
             kiln exits, and the next kiln command leaves it alone.
"""
import base64
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def qemu_processes(marker):
    """QEMU processes whose command line mentions marker."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmd = open(f"/proc/{pid}/cmdline", "rb").read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if "qemu-system" in cmd and marker in cmd:
            found.append(f"{pid}: {cmd[:200]}")
    return found


class Case:
    def __init__(self, kiln, image):
        self.kiln = kiln
        self.image = image
        self.tmp = tempfile.mkdtemp(prefix="kiln-vm-")
        self.runtime = os.path.join(self.tmp, "runtime")
        self.out = os.path.join(self.tmp, "out")
        os.makedirs(self.runtime)
        self.env = dict(os.environ, KILN_RUNTIME_DIR=self.runtime)

    def recipe(self, name, components, user_data=None):
        path = os.path.join(self.tmp, name + ".yml")
        comps = "\n".join(f"  - componentArn: {os.path.join(HERE, 'data', c)}" for c in components)
        with open(path, "w") as f:
            f.write(f"name: {name}\nsemanticVersion: 1.0.0\nparentImage: {self.image}\n"
                    f"components:\n{comps}\n")
            if user_data:
                encoded = base64.b64encode(user_data.encode()).decode()
                f.write(f"additionalInstanceConfiguration:\n  userDataOverride: {encoded}\n")
        return path

    def leftovers(self):
        problems = []
        procs = qemu_processes(self.runtime)
        if procs:
            problems.append("QEMU still running: " + "; ".join(procs))
        left = os.listdir(self.runtime)
        if left:
            problems.append(f"run directories left: {left}")
        stray = [f for f in (os.listdir(self.out) if os.path.isdir(self.out) else []) if f.startswith(".")]
        if stray:
            problems.append(f"temporary files left in the output: {stray}")
        return problems

    def close(self):
        for line in qemu_processes(self.runtime):
            os.kill(int(line.split(":")[0]), signal.SIGKILL)
        shutil.rmtree(self.tmp, ignore_errors=True)


def case_build(c):
    recipe = c.recipe("vm-build", ["files.yml", "config.yml"],
                      user_data="#!/bin/sh\nmkdir -p /etc/kiln\necho from-user-data > /etc/kiln/user-data\n")
    t0 = time.time()
    p = subprocess.run([c.kiln, "build", recipe, "--output", c.out, "--json"], capture_output=True, text=True,
                       env=c.env, timeout=1800)
    print(f"# kiln build took {time.time() - t0:.1f} s", flush=True)
    if p.returncode != 0:
        return [f"kiln build failed ({p.returncode}):\n{p.stderr[-4000:]}"]
    manifest = json.loads(p.stdout)
    problems = []
    image = manifest["output"]["path"]
    if not os.path.exists(image) or not os.path.exists(os.path.join(c.out, "vm-build-1.0.0.manifest.json")):
        problems.append("image or manifest not published")
    stages = {s["name"]: s["status"] for s in manifest["stages"]}
    if stages.get("test") != "success" or stages.get("build") != "success":
        problems.append(f"stages: {stages}")
    info = json.loads(subprocess.run(["qemu-img", "info", "--output=json", image], capture_output=True,
                                     text=True, check=True).stdout)
    if info.get("format") != "qcow2" or info.get("backing-filename"):
        problems.append(f"published image is not a standalone qcow2: {info}")
    # The test stage ran on a fresh instance and saw the build's files.
    logs = os.path.join(c.out, "logs")
    test_outputs = []
    for root, _, files in os.walk(logs):
        if "detailedoutput.json" in files and os.sep + "test" + os.sep in root + os.sep:
            d = json.load(open(os.path.join(root, "detailedoutput.json")))
            for doc in d["documents"]:
                for ph in doc["phases"]:
                    for s in ph["steps"]:
                        test_outputs.append((s["name"], s["status"], s["outputs"]))
    if ("Content", "success") not in [(n, st) for n, st, _ in test_outputs]:
        problems.append(f"test phase results: {test_outputs}")
    if not any("motd=built by kiln" in o for _, _, o in test_outputs):
        problems.append(f"test phase did not see the configuration: {test_outputs}")
    if not any("from-user-data" in o for _, _, o in test_outputs):
        problems.append(f"test phase did not see what userDataOverride wrote: {test_outputs}")
    problems += c.leftovers()
    return problems


def case_failure(c):
    recipe = c.recipe("vm-failure", ["files.yml", "failing.yml"])
    p = subprocess.run([c.kiln, "build", recipe, "--output", c.out], capture_output=True, text=True, env=c.env,
                       timeout=1800)
    problems = []
    if p.returncode != 1:
        problems.append(f"expected status 1, got {p.returncode}")
    if "Breaks" not in p.stderr or "something went wrong in the guest" not in p.stderr:
        problems.append(f"the error does not name the step and its output:\n{p.stderr[-2000:]}")
    published = [f for f in os.listdir(c.out) if f != "logs"] if os.path.isdir(c.out) else []
    if published:
        problems.append(f"a failed build published {published}")
    return problems + c.leftovers()


def interrupted(c, sig):
    recipe = c.recipe("vm-" + sig.name.lower(), ["slow.yml"])
    proc = subprocess.Popen([c.kiln, "build", recipe, "--output", c.out], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=c.env)
    # Wait until the build phase runs in the guest (the slow step is next).
    deadline = time.time() + 900
    stderr = ""
    while time.time() < deadline:
        line = proc.stderr.readline()
        stderr += line
        if ": phase build" in line or line == "":
            break
    time.sleep(5)
    proc.send_signal(sig)
    try:
        rest = proc.communicate(timeout=120)[1]
    except subprocess.TimeoutExpired:
        proc.kill()
        return ["kiln did not stop within 120 s of " + sig.name]
    problems = []
    expected = 128 + sig.value if sig != signal.SIGKILL else -9
    if proc.returncode != expected:
        problems.append(f"expected status {expected}, got {proc.returncode}: {(stderr + rest)[-2000:]}")
    if sig == signal.SIGKILL:
        time.sleep(2)
        if qemu_processes(c.runtime):
            problems.append("QEMU outlived a SIGKILLed kiln")
        # The next kiln command reaps what the killed one left.
        subprocess.run([c.kiln, "build", "--plan", recipe], capture_output=True, env=c.env)
        subprocess.run([c.kiln, "build", os.path.join(c.tmp, "missing.yml")], capture_output=True, env=c.env)
    published = [f for f in os.listdir(c.out) if f != "logs"] if os.path.isdir(c.out) else []
    if published:
        problems.append(f"an interrupted build published {published}")
    return problems + c.leftovers()


def case_keep(c):
    recipe = c.recipe("vm-keep", ["failing.yml"])
    p = subprocess.run([c.kiln, "build", recipe, "--output", c.out, "--keep-on-failure"], capture_output=True,
                       text=True, env=c.env, timeout=1800)
    problems = []
    if p.returncode != 1 or "kept instance" not in p.stderr:
        problems.append(f"expected a failure that keeps the instance, got {p.returncode}: {p.stderr[-1500:]}")
    if not qemu_processes(c.runtime):
        problems.append("the kept instance is not running after kiln exited")
    # Another kiln command must leave the kept instance alone.
    subprocess.run([c.kiln, "build", os.path.join(c.tmp, "missing.yml")], capture_output=True, env=c.env)
    if not qemu_processes(c.runtime) or not os.listdir(c.runtime):
        problems.append("the next kiln command reaped the kept instance")
    return problems  # Case.close() stops the kept QEMU and removes its files


CASES = {
    "build": case_build,
    "failure": case_failure,
    "sigterm": lambda c: interrupted(c, signal.SIGTERM),
    "sigkill": lambda c: interrupted(c, signal.SIGKILL),
    "keep": case_keep,
}


def main():
    kiln, image_name = os.path.abspath(sys.argv[1]), sys.argv[2]
    names = sys.argv[3:] or list(CASES)
    print("TAP version 13", flush=True)
    boot = subprocess.run([kiln, "image", "bootstrap", image_name], capture_output=True, text=True)
    if boot.returncode != 0:
        print(f"1..0 # SKIP could not bootstrap {image_name}: {boot.stderr[-500:]}")
        return 1
    image = boot.stdout.strip()
    print(f"# base image {image}")
    print(f"1..{len(names)}", flush=True)
    failures = 0
    for i, name in enumerate(names, 1):
        c = Case(kiln, image)
        try:
            problems = CASES[name](c)
        except Exception as e:  # a crash of the test itself is a failure, with its reason
            problems = [f"{type(e).__name__}: {e}"]
        finally:
            c.close()
        if problems:
            failures += 1
            print(f"not ok {i} - {name}")
            for p in problems:
                for line in str(p).splitlines():
                    print(f"  # {line}")
        else:
            print(f"ok {i} - {name}")
        sys.stdout.flush()
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
