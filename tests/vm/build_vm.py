#!/usr/bin/env python3
"""VM tests of `kiln build` with the QEMU driver (suite `vm`).

Real guests under TCG, one at a time.  The base image comes from
`kiln image bootstrap NAME` (cached between runs under ~/.cache/kiln).

  build_vm.py KILN IMAGE_NAME [CASE...]

Cases:
  build      a recipe of several components (files, a configuration change, a
             Reboot step, an exit-194 step, a loop); the published image's
             test stage, on a fresh instance, sees the build's changes;
             nothing is left running or on disk.  On images whose root file
             system grows (debian-12) the recipe also asks for a disk twice
             the parent's (blockDeviceMappings volumeSize), and the build and
             test instances must see a root file system bigger than the
             parent's whole disk.
  network    instances have user-mode networking by default: the build and
             test phases fetch a token from an HTTP server this test runs on
             the host's loopback (the guest reaches it at 10.0.2.2).
  no-network --no-network: the instances have no network interface but lo,
             and the HTTP server sees no request.
  failure    a failing component fails the build, publishes nothing and
             leaves nothing behind.
  sigterm    SIGTERM in the middle of a build: kiln exits 143 and leaves
             nothing behind.
  sigint     the same with SIGINT (Ctrl-C): exit 130, nothing left.
  qemu-crash the build instance's QEMU is SIGKILLed in the middle of a build:
             kiln fails (status 1) saying QEMU died, and leaves nothing.
  sigkill    SIGKILL in the middle of a build leaves QEMU dead (it dies with
             kiln) and the next kiln command removes the run directory.
  keep       --keep-on-failure keeps the failed build instance running after
             kiln exits, and the next kiln command leaves it alone.
  boot-stall a QEMU stand-in (KILN_QEMU) starts the first guest paused, so
             its console stays silent: with --boot-stall-timeout 20 kiln
             kills it and boots again, the build succeeds and the manifest
             says the build instance's boot was restarted and why.
  boot-stall-twice
             every guest starts paused: the build fails after the second
             stall, saying so with both boots' console tails, and leaves
             nothing behind.
  bootstrap-output
             `kiln image bootstrap NAME --output FILE` copies the cached image
             (no rebuild): FILE is identical to it and nothing else is left
             beside FILE.
  bootstrap-interrupt
             SIGINT to `kiln image bootstrap NAME --rebuild --output FILE`
             while build.sh runs: exit 130, no FILE and nothing beside it,
             the cached image untouched and no temporary file in the cache.
"""
import base64
import http.server
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from tap_cases import run_cases  # noqa: E402

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


# Base images whose root partition and file system grow to fill a bigger disk
# at boot (images/README.md); tiny's cannot.
GROWS = {"debian-12"}


class Case:
    def __init__(self, kiln, image, image_name):
        self.kiln = kiln
        self.image = image
        self.image_name = image_name
        self.tmp = tempfile.mkdtemp(prefix="kiln-vm-")
        self.runtime = os.path.join(self.tmp, "runtime")
        self.out = os.path.join(self.tmp, "out")
        os.makedirs(self.runtime)
        self.env = dict(os.environ, KILN_RUNTIME_DIR=self.runtime)

    def recipe(self, name, components, user_data=None, volume_gib=None):
        """components: document names under data/ (or absolute paths), or
        (name, {parameter: value}) pairs."""
        path = os.path.join(self.tmp, name + ".yml")
        comps = ""
        for c in components:
            doc, params = c if isinstance(c, tuple) else (c, {})
            comps += f"  - componentArn: {os.path.join(HERE, 'data', doc)}\n"
            if params:
                comps += "    parameters:\n"
                for k, v in params.items():
                    comps += f"      - name: {k}\n        value: ['{v}']\n"
        with open(path, "w") as f:
            f.write(f"name: {name}\nsemanticVersion: 1.0.0\nparentImage: {self.image}\n"
                    f"components:\n{comps}")
            if volume_gib:
                f.write(f"blockDeviceMappings:\n  - deviceName: /dev/xvda\n    ebs:\n"
                        f"      volumeSize: {volume_gib}\n")
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


def image_info(path):
    return json.loads(subprocess.run(["qemu-img", "info", "--output=json", path], capture_output=True,
                                     text=True, check=True).stdout)


def compressed_extents(path):
    """How many data extents of a qcow2 are compressed clusters (qemu-img
    map gives a compressed extent no host offset)."""
    m = json.loads(subprocess.run(["qemu-img", "map", "--output=json", path], capture_output=True, text=True,
                                  check=True).stdout)
    return sum(1 for e in m if e.get("data") and "offset" not in e)


def step_results(c, phase):
    """(step name, status, outputs) of every step of phase, from the logs."""
    found = []
    for root, _, files in os.walk(os.path.join(c.out, "logs")):
        if "detailedoutput.json" in files and os.sep + phase + os.sep in root + os.sep:
            d = json.load(open(os.path.join(root, "detailedoutput.json")))
            for doc in d["documents"]:
                for ph in doc["phases"]:
                    for s in ph["steps"]:
                        found.append((s["name"], s["status"], s["outputs"]))
    return found


def case_build(c):
    components = ["files.yml", "config.yml"]
    parent_bytes = image_info(c.image)["virtual-size"]
    volume_gib = None
    if c.image_name in GROWS:
        # Twice the parent's disk: the root file system must end up bigger
        # than the parent's whole disk, which it can only by growing.
        volume_gib = 2 * ((parent_bytes + (1 << 30) - 1) >> 30)
        components.append(("grow.yml", {"MinRootBytes": parent_bytes}))
    recipe = c.recipe("vm-build", components, volume_gib=volume_gib,
                      user_data="#!/bin/sh\nmkdir -p /etc/kiln\necho from-user-data > /etc/kiln/user-data\n")
    t0 = time.time()
    p = subprocess.run([c.kiln, "build", recipe, "--output", c.out, "--json"], capture_output=True, text=True,
                       env=dict(c.env, KILN_LOG="info"), timeout=1800)
    print(f"# kiln build took {time.time() - t0:.1f} s", flush=True)
    if p.returncode != 0:
        return [f"kiln build failed ({p.returncode}):\n{p.stderr[-4000:]}"]
    manifest = json.loads(p.stdout)
    problems = []
    # By default the build instance is frozen clean and stopped, not shut
    # down (files.yml's test phase checks the file system came back clean).
    if "file systems frozen and the machine stopped" not in p.stderr:
        problems.append("the build instance was not frozen and stopped: " +
                        " | ".join(l for l in p.stderr.splitlines() if "qemu: build:" in l))
    image = manifest["output"]["path"]
    if not os.path.exists(image) or not os.path.exists(os.path.join(c.out, "vm-build-1.0.0.manifest.json")):
        problems.append("image or manifest not published")
    stages = {s["name"]: s["status"] for s in manifest["stages"]}
    if stages.get("test") != "success" or stages.get("build") != "success":
        problems.append(f"stages: {stages}")
    info = image_info(image)
    if info.get("format") != "qcow2" or info.get("backing-filename"):
        problems.append(f"published image is not a standalone qcow2: {info}")
    # Written plainly unless --compress asks (the fastest capture).
    if compressed_extents(image) or manifest["output"].get("compressed") is not False:
        problems.append(f"the image is compressed without --compress ({compressed_extents(image)} extents, "
                        f"manifest {manifest['output'].get('compressed')})")
    # The test stage ran on a fresh instance and saw the build's files.
    test_outputs = step_results(c, "test")
    if ("Content", "success") not in [(n, st) for n, st, _ in test_outputs]:
        problems.append(f"test phase results: {test_outputs}")
    if not any("motd=built by kiln" in o for _, _, o in test_outputs):
        problems.append(f"test phase did not see the configuration: {test_outputs}")
    if not any("from-user-data" in o for _, _, o in test_outputs):
        problems.append(f"test phase did not see what userDataOverride wrote: {test_outputs}")
    if volume_gib:
        if info.get("virtual-size") != volume_gib << 30:
            problems.append(f"published disk is {info.get('virtual-size')} bytes, not the recipe's {volume_gib} GiB")
        sizes = [int(o.split("root file system ")[1].split()[0])
                 for _, _, o in step_results(c, "build") + test_outputs if "root file system " in o]
        print(f"# parent disk {parent_bytes} bytes; root file system in the build and test instances: {sizes}")
        if len(sizes) != 2 or min(sizes) <= parent_bytes:
            problems.append(f"the root file system did not grow past the parent's {parent_bytes} bytes: {sizes}")
    problems += c.leftovers()
    return problems


def case_compressed(c):
    """--compress: the published qcow2 holds compressed clusters, made while
    the test stage ran; the test instance booted the plain capture.  With
    --full-shutdown, the build instance's OS powered off."""
    recipe = c.recipe("vm-compressed", ["files.yml"])
    t0 = time.time()
    p = subprocess.run([c.kiln, "build", recipe, "--output", c.out, "--json", "--compress", "--full-shutdown"],
                       capture_output=True, text=True, env=dict(c.env, KILN_LOG="info"), timeout=1800)
    print(f"# kiln build --compress took {time.time() - t0:.1f} s", flush=True)
    if p.returncode != 0:
        return [f"kiln build failed ({p.returncode}):\n{p.stderr[-4000:]}"]
    manifest = json.loads(p.stdout)
    image = manifest["output"]["path"]
    problems = []
    if "qemu: build: powered off" not in p.stderr:
        problems.append("--full-shutdown: the build instance did not power off: " +
                        " | ".join(l for l in p.stderr.splitlines() if "qemu: build:" in l))
    n = compressed_extents(image)
    print(f"# {n} compressed extents; {os.path.getsize(image)} bytes")
    if n == 0 or manifest["output"].get("compressed") is not True:
        problems.append(f"no compressed clusters in {image} (manifest compressed={manifest['output'].get('compressed')})")
    stages = {s["name"]: s["status"] for s in manifest["stages"]}
    if stages.get("test") != "success":
        problems.append(f"stages: {stages}")
    check = subprocess.run(["qemu-img", "check", image], capture_output=True, text=True)
    if check.returncode != 0:
        problems.append(f"qemu-img check: {check.stdout}{check.stderr}")
    problems += c.leftovers()
    return problems


class TokenServer:
    """An HTTP server on the host's loopback that serves one random token at
    /token and counts requests; user-mode guests reach it at 10.0.2.2."""

    def __init__(self):
        self.token = secrets.token_hex(16)
        self.requests = 0
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                outer.requests += 1
                body = (outer.token + "\n").encode() if self.path == "/token" else b"no\n"
                self.send_response(200 if self.path == "/token" else 404)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def network_component(c, server, expect_network):
    """A component whose build and test phases check the guest's network.
    The request is made with bash's /dev/tcp (both images have Debian's
    bash; tiny's static busybox wget crashes in its name lookup)."""
    fetch = (f"fetch() {{ exec 3<>/dev/tcp/10.0.2.2/{server.port} || return 1; "
             "printf \"GET /token HTTP/1.0\\r\\nHost: 10.0.2.2\\r\\n\\r\\n\" >&3; tail -n 1 <&3; exec 3<&-; }")
    if expect_network:
        # The agent can answer before DHCP is done: retry for a while.
        check = [fetch,
                 "for i in $(seq 60); do got=$(fetch) && [ -n \"$got\" ] && break; sleep 1; done",
                 "echo \"fetched: $got\"",
                 f"[ \"$got\" = {server.token} ]"]
    else:
        check = [fetch,
                 "nics=$(ls /sys/class/net | tr '\\n' ' ')",
                 "echo \"interfaces: $nics\"",
                 "[ \"$nics\" = 'lo ' ] || { echo \"a network interface besides lo: $nics\" >&2; exit 1; }",
                 "if (fetch); then echo 'reached the host' >&2; exit 1; fi"]
    steps = "\n".join(f"            - '{line}'" for line in [x.replace("'", "''") for x in check])
    path = os.path.join(c.tmp, "network.yml")
    with open(path, "w") as f:
        f.write("name: vm-network\nschemaVersion: 1.0\nphases:\n")
        for phase in ("build", "test"):
            f.write(f"  - name: {phase}\n    steps:\n      - name: Network\n        action: ExecuteBash\n"
                    f"        inputs:\n          commands:\n{steps}\n")
    return path


def network_case(c, expect_network):
    server = TokenServer()
    try:
        recipe = c.recipe("vm-network", [network_component(c, server, expect_network)])
        args = [] if expect_network else ["--no-network"]
        t0 = time.time()
        p = subprocess.run([c.kiln, "build", recipe, "--output", c.out] + args, capture_output=True, text=True,
                           env=c.env, timeout=1800)
        print(f"# kiln build took {time.time() - t0:.1f} s", flush=True)
    finally:
        server.close()
    problems = []
    if p.returncode != 0:
        problems.append(f"kiln build failed ({p.returncode}):\n{p.stderr[-4000:]}")
    outputs = [o for _, _, o in step_results(c, "build") + step_results(c, "test")]
    print(f"# guest said: {[o.strip() for o in outputs]}; the host's server saw {server.requests} requests")
    if expect_network and server.requests < 2:
        problems.append(f"the host's HTTP server saw {server.requests} requests, expected one per instance")
    if not expect_network and server.requests:
        problems.append(f"a guest without network reached the host's HTTP server ({server.requests} requests)")
    return problems + c.leftovers()


def case_qemu_crash(c):
    recipe = c.recipe("vm-qemu-crash", ["slow.yml"])
    proc = subprocess.Popen([c.kiln, "build", recipe, "--output", c.out], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=c.env)
    stderr = wait_for_build_phase(proc)
    time.sleep(5)
    victims = qemu_processes(c.runtime)
    if len(victims) != 1:
        proc.kill()
        proc.communicate()
        return [f"expected one QEMU of this build, found {victims}"]
    os.kill(int(victims[0].split(":")[0]), signal.SIGKILL)
    try:
        stderr += proc.communicate(timeout=120)[1]
    except subprocess.TimeoutExpired:
        proc.kill()
        return ["kiln did not end within 120 s of its QEMU being killed"]
    problems = []
    if proc.returncode != 1:
        problems.append(f"expected status 1, got {proc.returncode}: {stderr[-2000:]}")
    last = [line for line in stderr.splitlines() if line.startswith("kiln build: vm-qemu-crash failed")]
    print(f"# {last[0][:300] if last else stderr[-300:]}")
    if not last or "QEMU was killed by signal 9" not in last[0]:
        problems.append(f"the error does not say that QEMU died:\n{stderr[-2000:]}")
    published = [f for f in os.listdir(c.out) if f != "logs"] if os.path.isdir(c.out) else []
    if published:
        problems.append(f"a build whose QEMU died published {published}")
    return problems + c.leftovers()


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


def wait_for_build_phase(proc):
    """Reads kiln's stderr until the build phase runs in the guest (the slow
    step is next); returns what it read."""
    deadline = time.time() + 900
    stderr = ""
    while time.time() < deadline:
        line = proc.stderr.readline()
        stderr += line
        if ": phase build" in line or line == "":
            break
    return stderr


def interrupted(c, sig):
    recipe = c.recipe("vm-" + sig.name.lower(), ["slow.yml"])
    proc = subprocess.Popen([c.kiln, "build", recipe, "--output", c.out], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=c.env)
    stderr = wait_for_build_phase(proc)
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


STALLING_QEMU = """#!/bin/sh
# Starts guests paused (-S), as a guest whose boot hung: the first one only,
# or all with STALL_ALWAYS=1.  The accelerator probe (-bios) runs as it is.
case " $* " in *" -bios "*) exec qemu-system-x86_64 "$@" ;; esac
if [ -n "$STALL_ALWAYS" ] || [ ! -e "$STALL_MARK" ]; then
  touch "$STALL_MARK"
  exec qemu-system-x86_64 -S "$@"
fi
exec qemu-system-x86_64 "$@"
"""


def boot_stall_case(c, always):
    stand_in = os.path.join(c.tmp, "stalling-qemu")
    with open(stand_in, "w") as f:
        f.write(STALLING_QEMU)
    os.chmod(stand_in, 0o755)
    env = dict(c.env, KILN_QEMU=stand_in, STALL_MARK=os.path.join(c.tmp, "stalled-once"))
    if always:
        env["STALL_ALWAYS"] = "1"
    recipe = c.recipe("vm-stall", ["files.yml"])
    t0 = time.time()
    p = subprocess.run([c.kiln, "build", recipe, "--output", c.out, "--json", "--boot-stall-timeout", "20"],
                       capture_output=True, text=True, env=env, timeout=900)
    print(f"# kiln build took {time.time() - t0:.1f} s, status {p.returncode}", flush=True)
    problems = []
    if always:
        last = [line for line in p.stderr.splitlines() if line.startswith("kiln build: vm-stall failed")]
        if p.returncode != 1 or not last or "the boot stalled twice" not in last[0]:
            problems.append(f"expected a failure after two stalls, got {p.returncode}:\n{p.stderr[-3000:]}")
        elif "the first boot's console ended with" not in p.stderr or "the second boot's console ends with" not in p.stderr:
            problems.append(f"the error does not carry both console tails:\n{p.stderr[-3000:]}")
        else:
            print(f"# {last[0][:240]}")
        published = [f for f in os.listdir(c.out) if f != "logs"] if os.path.isdir(c.out) else []
        if published:
            problems.append(f"a failed build published {published}")
    else:
        if p.returncode != 0:
            return [f"kiln build failed ({p.returncode}):\n{p.stderr[-3000:]}"]
        build = [s for s in json.loads(p.stdout)["stages"] if s["name"] == "build"][0]
        note = build.get("bootRestarted", "")
        print(f"# build stage: bootRestarted: {note}")
        if "the boot stalled" not in note or "silent for 20 s" not in note:
            problems.append(f"the manifest does not say the boot was restarted: {build}")
        if "the boot stalled" not in p.stderr:
            problems.append("the log does not say the boot stalled")
    return problems + c.leftovers()


def case_bootstrap_output(c):
    target = os.path.join(c.tmp, "copy", "base.qcow2")
    t0 = time.time()
    p = subprocess.run([c.kiln, "image", "bootstrap", c.image_name, "--output", target], capture_output=True,
                       text=True, env=c.env, timeout=600)
    took = time.time() - t0
    print(f"# kiln image bootstrap --output took {took:.1f} s")
    problems = []
    if p.returncode != 0 or p.stdout.strip() != target:
        return [f"bootstrap --output failed ({p.returncode}): {p.stdout} {p.stderr[-1500:]}"]
    if "is cached" not in p.stderr or "building" in p.stderr:
        problems.append(f"the cached image was not reused: {p.stderr[-1500:]}")
    if subprocess.run(["cmp", "-s", c.image, target]).returncode != 0:
        problems.append(f"{target} differs from the cached {c.image}")
    beside = os.listdir(os.path.dirname(target))
    if beside != ["base.qcow2"]:
        problems.append(f"files beside the output: {beside}")
    return problems


def case_bootstrap_interrupt(c):
    target = os.path.join(c.tmp, "copy", "base.qcow2")
    cache_dir = os.path.dirname(c.image)
    before = os.stat(c.image)
    cache_before = set(os.listdir(cache_dir))
    proc = subprocess.Popen([c.kiln, "image", "bootstrap", c.image_name, "--rebuild", "--output", target],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=c.env)
    stderr = ""
    deadline = time.time() + 300
    while time.time() < deadline:
        line = proc.stderr.readline()
        stderr += line
        if line.startswith(c.image_name + ": ") or line == "":  # build.sh is under way
            break
    time.sleep(3)
    proc.send_signal(signal.SIGINT)
    try:
        out, rest = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        return ["kiln image bootstrap did not stop within 60 s of SIGINT"]
    stderr += rest
    print("# " + " | ".join(stderr.strip().splitlines()[-3:]))
    problems = []
    if proc.returncode != 130:
        problems.append(f"expected status 130, got {proc.returncode}: {stderr[-1500:]}")
    if os.path.exists(os.path.dirname(target)) and os.listdir(os.path.dirname(target)):
        problems.append(f"left beside the output: {os.listdir(os.path.dirname(target))}")
    after = os.stat(c.image) if os.path.exists(c.image) else None
    if after is None or (after.st_ino, after.st_mtime_ns) != (before.st_ino, before.st_mtime_ns):
        problems.append(f"the cached image {c.image} was removed or replaced")
    new = set(os.listdir(cache_dir)) - cache_before
    if new:
        problems.append(f"new files in the cache: {sorted(new)}")
    return problems


CASES = {
    "build": case_build,
    "compressed": case_compressed,
    "failure": case_failure,
    "network": lambda c: network_case(c, True),
    "no-network": lambda c: network_case(c, False),
    "sigterm": lambda c: interrupted(c, signal.SIGTERM),
    "sigint": lambda c: interrupted(c, signal.SIGINT),
    "qemu-crash": case_qemu_crash,
    "sigkill": lambda c: interrupted(c, signal.SIGKILL),
    "keep": case_keep,
    "boot-stall": lambda c: boot_stall_case(c, False),
    "boot-stall-twice": lambda c: boot_stall_case(c, True),
    "bootstrap-output": case_bootstrap_output,
    "bootstrap-interrupt": case_bootstrap_interrupt,
}


def main_with(cases):
    """Runs the cases named on the command line (KILN IMAGE_NAME [CASE...],
    all by default), each on a fresh Case of the bootstrapped image."""
    kiln, image_name = os.path.abspath(sys.argv[1]), sys.argv[2]
    names = sys.argv[3:] or list(cases)
    print("TAP version 13", flush=True)
    if not shutil.which("qemu-system-x86_64"):
        print("1..0 # SKIP qemu-system-x86_64 is not installed")
        return 0
    boot = subprocess.run([kiln, "image", "bootstrap", image_name], capture_output=True, text=True)
    if boot.returncode != 0:
        print(f"1..0 # SKIP could not bootstrap {image_name}: {boot.stderr[-500:]}")
        return 1
    image = boot.stdout.strip()
    print(f"# base image {image}")

    def run_one(name):
        c = Case(kiln, image, image_name)
        try:
            return cases[name](c)
        finally:
            c.close()

    return run_cases(names, run_one)


if __name__ == "__main__":
    sys.exit(main_with(CASES))
