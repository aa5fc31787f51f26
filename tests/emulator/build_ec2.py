#!/usr/bin/env python3
"""`kiln build --driver ec2` against kiln-emulator in qemu mode (suite `emulator`).

The same recipes as the vm suite's, built on "EC2": the build instance is
launched from an AMI, driven over SSM, stopped and imaged with CreateImage;
the test stage runs on a fresh instance of the new AMI.  Real guests under
TCG, one at a time; the base AMI is $KILN_TEST_IMAGE imported into the
emulator.

  build_ec2.py KILN KILN_EMULATOR [CASE...]

Cases:
  build    several components (files, a configuration change, a Reboot step,
           an exit-194 step) and userDataOverride: the AMI exists and is
           available, the manifest names it, the test stage saw the build's
           changes, and no instance is left that is not terminated.
  failure  a failing component fails the build (status 1, the step and its
           output named) and leaves no instance and no image.
  test-failure  a failing test phase fails the build and deletes the image
           the capture made (AMI and snapshot); no instance is left.
  sigterm  SIGTERM in the middle of a build: kiln exits 143 and leaves no
           instance running.
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
VM_DATA = os.path.join(HERE, "..", "vm", "data")
REGION = "us-east-1"


class Emulator:
    """A kiln-emulator on a free port with the test image as an AMI."""

    def __init__(self, binary, image):
        self.tmp = tempfile.mkdtemp(prefix="kiln-build-ec2-")
        self.state = os.path.join(self.tmp, "state")
        self.ami = subprocess.run([binary, "import-image", image, "--name", "base", "--state-dir", self.state],
                                  capture_output=True, text=True, check=True, timeout=600).stdout.strip()
        self.log = open(os.path.join(self.tmp, "emulator.log"), "w")
        self.proc = subprocess.Popen([binary, "--state-dir", self.state, "--listen", "127.0.0.1:0"],
                                     stdout=subprocess.PIPE, stderr=self.log, text=True)
        line = self.proc.stdout.readline()
        if "listening on " not in line:
            raise RuntimeError(f"kiln-emulator did not start: {line!r}")
        self.url = line.split("listening on ")[1].split()[0]
        self.env = dict(os.environ, AWS_ACCESS_KEY_ID="test", AWS_SECRET_ACCESS_KEY="test",
                        AWS_DEFAULT_REGION=REGION, AWS_REGION=REGION)
        for k in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"):
            self.env.pop(k, None)

    def aws(self, *args):
        p = subprocess.run(["/usr/bin/aws", "--endpoint-url", self.url, "--output", "json", *args],
                           capture_output=True, text=True, env=self.env, timeout=120)
        if p.returncode != 0:
            raise RuntimeError(f"aws {' '.join(args)}: {p.stderr}")
        return json.loads(p.stdout) if p.stdout.strip() else {}

    def instances(self):
        out = self.aws("ec2", "describe-instances")
        return [(i["InstanceId"], i["State"]["Name"]) for r in out["Reservations"] for i in r["Instances"]]

    def leftovers(self, wait=60):
        """Instances that are not (or not becoming) terminated."""
        deadline = time.time() + wait
        while True:
            live = [(i, s) for i, s in self.instances() if s not in ("terminated", "shutting-down")]
            if not live or time.time() > deadline:
                return live
            time.sleep(2)

    def close(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.log.close()
        shutil.rmtree(self.tmp, ignore_errors=True)


class Case:
    def __init__(self, kiln, emu):
        self.kiln = kiln
        self.emu = emu
        self.tmp = tempfile.mkdtemp(prefix="kiln-ec2-case-")
        self.out = os.path.join(self.tmp, "out")
        self.env = dict(emu.env, KILN_RUNTIME_DIR=os.path.join(self.tmp, "runtime"))
        os.makedirs(self.env["KILN_RUNTIME_DIR"])

    def recipe(self, name, components, user_data=None):
        path = os.path.join(self.tmp, name + ".yml")
        comps = "\n".join(f"  - componentArn: {c if os.path.isabs(c) else os.path.join(VM_DATA, c)}"
                           for c in components)
        with open(path, "w") as f:
            f.write(f"name: {name}\nsemanticVersion: 1.0.0\nparentImage: {self.emu.ami}\n"
                    f"components:\n{comps}\n")
            if user_data:
                encoded = base64.b64encode(user_data.encode()).decode()
                f.write(f"additionalInstanceConfiguration:\n  userDataOverride: {encoded}\n")
        return path

    def build_argv(self, recipe, *extra):
        return [self.kiln, "build", recipe, "--driver", "ec2", "--endpoint-url", self.emu.url, "--region", REGION,
                "--output", self.out, *extra]

    def close(self):
        shutil.rmtree(self.tmp, ignore_errors=True)


def test_outputs(out_dir):
    found = []
    for root, _, files in os.walk(os.path.join(out_dir, "logs")):
        if "detailedoutput.json" in files and os.sep + "test" + os.sep in root + os.sep:
            d = json.load(open(os.path.join(root, "detailedoutput.json")))
            for doc in d["documents"]:
                for ph in doc["phases"]:
                    for s in ph["steps"]:
                        found.append((s["name"], s["status"], s["outputs"]))
    return found


def case_build(c):
    recipe = c.recipe("ec2-build", ["files.yml", "config.yml"],
                      user_data="#!/bin/sh\nmkdir -p /etc/kiln\necho from-user-data > /etc/kiln/user-data\n")
    t0 = time.time()
    p = subprocess.run(c.build_argv(recipe, "--json"), capture_output=True, text=True, env=c.env, timeout=2400)
    print(f"# kiln build --driver ec2 took {time.time() - t0:.1f} s", flush=True)
    if p.returncode != 0:
        return [f"kiln build failed ({p.returncode}):\n{p.stderr[-4000:]}"]
    manifest = json.loads(p.stdout)
    problems = []
    images = manifest["output"].get("images", [])
    if len(images) != 1 or images[0].get("region") != REGION or not images[0].get("imageId", "").startswith("ami-"):
        return [f"manifest output: {manifest['output']}"]
    ami = images[0]["imageId"]
    described = c.emu.aws("ec2", "describe-images", "--image-ids", ami)["Images"]
    if not described or described[0]["State"] != "available":
        problems.append(f"AMI {ami}: {described}")
    if not os.path.exists(os.path.join(c.out, "ec2-build-1.0.0.manifest.json")):
        problems.append("manifest not published")
    stages = {s["name"]: s["status"] for s in manifest["stages"]}
    if stages.get("test") != "success" or stages.get("build") != "success":
        problems.append(f"stages: {stages}")
    outs = test_outputs(c.out)
    if not any("motd=built by kiln" in o for _, _, o in outs):
        problems.append(f"test phase did not see the configuration: {outs}")
    if not any("from-user-data" in o for _, _, o in outs):
        problems.append(f"test phase did not see what userDataOverride wrote: {outs}")
    launched = c.emu.instances()
    if len(launched) != 2:
        problems.append(f"expected a build and a test instance, found {launched}")
    left = c.emu.leftovers()
    if left:
        problems.append(f"instances left: {left}")
    return problems


def case_failure(c):
    before_images = {i["ImageId"] for i in c.emu.aws("ec2", "describe-images", "--owners", "self")["Images"]}
    recipe = c.recipe("ec2-failure", ["files.yml", "failing.yml"])
    p = subprocess.run(c.build_argv(recipe), capture_output=True, text=True, env=c.env, timeout=1800)
    problems = []
    if p.returncode != 1:
        problems.append(f"expected status 1, got {p.returncode}: {p.stderr[-2000:]}")
    if "Breaks" not in p.stderr or "something went wrong in the guest" not in p.stderr:
        problems.append(f"the error does not name the step and its output:\n{p.stderr[-2000:]}")
    after_images = {i["ImageId"] for i in c.emu.aws("ec2", "describe-images", "--owners", "self")["Images"]}
    if after_images != before_images:
        problems.append(f"images made by a failed build: {after_images - before_images}")
    left = c.emu.leftovers()
    if left:
        problems.append(f"instances left: {left}")
    return problems


def case_test_failure(c):
    def own_images():
        return {i["ImageId"] for i in c.emu.aws("ec2", "describe-images", "--owners", "self")["Images"]}

    def own_snapshots():
        return {s["SnapshotId"] for s in c.emu.aws("ec2", "describe-snapshots", "--owner-ids", "self")["Snapshots"]}

    images, snapshots = own_images(), own_snapshots()
    recipe = c.recipe("ec2-test-failure", [os.path.join(HERE, "data", "failing-test.yml")])
    p = subprocess.run(c.build_argv(recipe), capture_output=True, text=True, env=c.env, timeout=1800)
    problems = []
    if p.returncode != 1:
        problems.append(f"expected status 1, got {p.returncode}: {p.stderr[-2000:]}")
    if "FailsOnPurpose" not in p.stderr or "the test found a problem" not in p.stderr:
        problems.append(f"the error does not name the test step and its output:\n{p.stderr[-2000:]}")
    if "deleting image ami-" not in p.stderr:
        problems.append(f"kiln did not say it deleted the image:\n{p.stderr[-2000:]}")
    if own_images() != images:
        problems.append(f"images left by a failed test stage: {own_images() - images}")
    if own_snapshots() != snapshots:
        problems.append(f"snapshots left by a failed test stage: {own_snapshots() - snapshots}")
    left = c.emu.leftovers()
    if left:
        problems.append(f"instances left: {left}")
    return problems


def case_sigterm(c):
    recipe = c.recipe("ec2-sigterm", ["slow.yml"])
    proc = subprocess.Popen(c.build_argv(recipe), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=c.env)
    # Interrupt once the build instance runs components.
    deadline = time.time() + 900
    running = False
    while time.time() < deadline and proc.poll() is None:
        if any(s == "running" for _, s in c.emu.instances()):
            running = True
            time.sleep(8)
            break
        time.sleep(2)
    if not running:
        proc.kill()
        return ["the build instance never ran"]
    proc.send_signal(signal.SIGTERM)
    try:
        _, err = proc.communicate(timeout=600)
    except subprocess.TimeoutExpired:
        proc.kill()
        return ["kiln did not exit within 600 s of SIGTERM"]
    problems = []
    if proc.returncode != 143:
        problems.append(f"expected status 143, got {proc.returncode}: {err[-2000:]}")
    left = c.emu.leftovers()
    if left:
        problems.append(f"instances left: {left}")
    return problems


CASES = {"build": case_build, "failure": case_failure, "test-failure": case_test_failure, "sigterm": case_sigterm}


def main():
    kiln, emulator = sys.argv[1], sys.argv[2]
    names = sys.argv[3:] or list(CASES)
    image = os.environ.get("KILN_TEST_IMAGE")
    if not image:
        print("1..0 # SKIP KILN_TEST_IMAGE is not set")
        return 0
    print(f"1..{len(names)}", flush=True)
    failures = 0
    for i, name in enumerate(names, 1):
        emu = Emulator(emulator, image)
        c = Case(kiln, emu)
        try:
            problems = CASES[name](c)
        except Exception as e:  # a broken case is a failed case, with its reason
            problems = [f"{type(e).__name__}: {e}"]
        finally:
            c.close()
            emu.close()
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


if __name__ == "__main__":
    sys.exit(main())
