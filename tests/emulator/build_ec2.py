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
           an exit-194 step) and userDataOverride, with an infrastructure
           file (instance types, resource tags) and a distribution file (two
           regions, name template, AMI tags, launch permission for a second
           account): the AMI exists and is available in both regions under
           the templated name with its tags and snapshots, the manifest names
           both, the test stage saw the build's changes, the second account
           sees the copy and launches an instance of it, and no instance is
           left that is not terminated in either region.
  failure  a failing component fails the build (status 1, the step and its
           output named) and leaves no instance and no image; the parent image
           is given as a DescribeImages query (filters, owners, mostRecent).
  test-failure  a failing test phase fails the build and deletes the image
           the capture made (AMI and snapshot); no instance is left.
  sigterm  SIGTERM in the middle of a build: kiln exits 143 and leaves no
           instance running.
  sigkill  SIGKILL in the middle of a build leaves the build instance
           running; the next kiln command (`kiln build --plan`) terminates it
           from the record the killed kiln left.
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

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from tap_cases import run_cases  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
VM_DATA = os.path.join(HERE, "..", "vm", "data")
REGION = "us-east-1"
COPY_REGION = "eu-west-1"
SECOND_ACCOUNT = "111111111111"


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

    def aws(self, *args, region=REGION, account="test"):
        env = dict(self.env, AWS_ACCESS_KEY_ID=account, AWS_SECRET_ACCESS_KEY=account)
        p = subprocess.run(["/usr/bin/aws", "--endpoint-url", self.url, "--region", region, "--output", "json", *args],
                           capture_output=True, text=True, env=env, timeout=120)
        if p.returncode != 0:
            raise RuntimeError(f"aws {' '.join(args)}: {p.stderr}")
        return json.loads(p.stdout) if p.stdout.strip() else {}

    def instances(self, region=REGION, account="test", detail=False):
        out = self.aws("ec2", "describe-instances", region=region, account=account)
        found = [i for r in out["Reservations"] for i in r["Instances"]]
        return found if detail else [(i["InstanceId"], i["State"]["Name"]) for i in found]

    def leftovers(self, wait=60):
        """Instances, in any region or account the tests use, that are not
        (or not becoming) terminated."""
        deadline = time.time() + wait
        while True:
            live = [(i, s) for region in (REGION, COPY_REGION) for account in ("test", "test2")
                    for i, s in self.instances(region, account) if s not in ("terminated", "shutting-down")]
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

    def recipe(self, name, components, user_data=None, parent=None):
        path = os.path.join(self.tmp, name + ".yml")
        comps = "\n".join(f"  - componentArn: {c if os.path.isabs(c) else os.path.join(VM_DATA, c)}"
                           for c in components)
        with open(path, "w") as f:
            f.write(f"name: {name}\nsemanticVersion: 1.0.0\nparentImage: {parent or self.emu.ami}\n"
                    f"components:\n{comps}\n")
            if user_data:
                encoded = base64.b64encode(user_data.encode()).decode()
                f.write(f"additionalInstanceConfiguration:\n  userDataOverride: {encoded}\n")
        return path

    def write(self, name, text):
        path = os.path.join(self.tmp, name)
        with open(path, "w") as f:
            f.write(text)
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


INFRASTRUCTURE = """\
name: kiln-ci
instanceTypes: [t3.small, t3.micro]
resourceTags:
  Project: kiln-ci
terminateInstanceOnFailure: true
"""

DISTRIBUTION = f"""\
name: kiln-ci
distributions:
  - region: {REGION}
    amiDistributionConfiguration:
      name: "ec2-build {{{{ imagebuilder:buildVersion }}}} {{{{imagebuilder:buildDate}}}}"
      description: built by kiln in CI
      amiTags:
        Stage: home
      launchPermission:
        userIds: ["{SECOND_ACCOUNT}"]
  - region: {COPY_REGION}
    amiDistributionConfiguration:
      name: "ec2-build-copy-{{{{ imagebuilder:buildVersion }}}}"
      amiTags:
        Stage: copy
      launchPermission:
        userIds: ["{SECOND_ACCOUNT}"]
"""


def check_distributed(c, images):
    """Both regions hold an available AMI with the templated name, its tags
    and snapshots, and the second account can launch the copy."""
    problems = []
    by_region = {i.get("region"): i for i in images}
    if set(by_region) != {REGION, COPY_REGION} or len({i.get("imageId") for i in images}) != 2:
        return [f"manifest images: {images}"]
    expect = {REGION: ("ec2-build 1 ", "home", "built by kiln in CI"), COPY_REGION: ("ec2-build-copy-1", "copy", None)}
    for region, (name, stage, description) in expect.items():
        ami = by_region[region]["imageId"]
        described = c.emu.aws("ec2", "describe-images", "--image-ids", ami, region=region)["Images"]
        if len(described) != 1 or described[0]["State"] != "available":
            problems.append(f"{region} AMI {ami}: {described}")
            continue
        img = described[0]
        if not img.get("Name", "").startswith(name) or (region == REGION and not img["Name"].endswith("Z")):
            problems.append(f"{region} AMI name {img.get('Name')!r}, expected {name!r} and the build date")
        if description and img.get("Description") != description:
            problems.append(f"{region} AMI description {img.get('Description')!r}")
        tags = {t["Key"]: t["Value"] for t in img.get("Tags", [])}
        if tags.get("Stage") != stage or tags.get("kiln:created-by") != "kiln" or tags.get("Project") != "kiln-ci":
            problems.append(f"{region} AMI tags {tags}")
        snaps = by_region[region].get("snapshotIds", [])
        in_image = [m["Ebs"]["SnapshotId"] for m in img.get("BlockDeviceMappings", []) if "Ebs" in m]
        if not snaps or snaps != in_image:
            problems.append(f"{region} snapshots in the manifest {snaps}, in the image {in_image}")
        shared = c.emu.aws("ec2", "describe-images", "--executable-users", "self", region=region, account="test2")
        if ami not in {i["ImageId"] for i in shared["Images"]}:
            problems.append(f"{region} AMI {ami} is not shared with {SECOND_ACCOUNT}")
        perms = c.emu.aws("ec2", "describe-image-attribute", "--image-id", ami, "--attribute", "launchPermission",
                          region=region)
        if [p.get("UserId") for p in perms.get("LaunchPermissions", [])] != [SECOND_ACCOUNT]:
            problems.append(f"{region} launch permissions {perms}")
    # The second account launches the copy, then ends it.
    copy = by_region[COPY_REGION]["imageId"]
    run = c.emu.aws("ec2", "run-instances", "--image-id", copy, "--instance-type", "t3.micro", "--count", "1",
                    region=COPY_REGION, account="test2")
    iid = run["Instances"][0]["InstanceId"]
    deadline = time.time() + 300
    state = None
    while time.time() < deadline:
        state = dict(c.emu.instances(COPY_REGION, "test2")).get(iid)
        if state in ("running", "terminated"):
            break
        time.sleep(2)
    if state != "running":
        problems.append(f"the second account's instance {iid} of {copy} is {state}, not running")
    c.emu.aws("ec2", "terminate-instances", "--instance-ids", iid, region=COPY_REGION, account="test2")
    return problems


def case_build(c):
    recipe = c.recipe("ec2-build", ["files.yml", "config.yml"],
                      user_data="#!/bin/sh\nmkdir -p /etc/kiln\necho from-user-data > /etc/kiln/user-data\n")
    infra = c.write("infrastructure.yml", INFRASTRUCTURE)
    dist = c.write("distribution.yml", DISTRIBUTION)
    t0 = time.time()
    p = subprocess.run(c.build_argv(recipe, "--json", "--infrastructure", infra, "--distribution", dist),
                       capture_output=True, text=True, env=c.env, timeout=2400)
    print(f"# kiln build --driver ec2 took {time.time() - t0:.1f} s", flush=True)
    if p.returncode != 0:
        return [f"kiln build failed ({p.returncode}):\n{p.stderr[-4000:]}"]
    manifest = json.loads(p.stdout)
    problems = []
    images = manifest["output"].get("images", [])
    problems += check_distributed(c, images)
    if manifest.get("buildVersion") != 1:
        problems.append(f"buildVersion {manifest.get('buildVersion')}")
    for inst in c.emu.instances(detail=True):
        tags = {t["Key"]: t["Value"] for t in inst.get("Tags", [])}
        if inst["InstanceType"] != "t3.small" or tags.get("Project") != "kiln-ci":
            problems.append(f"instance {inst['InstanceId']}: type {inst['InstanceType']}, tags {tags}")
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
    instance_ids = {s["name"]: s.get("instance") for s in manifest["stages"]}
    if {instance_ids.get("build"), instance_ids.get("test")} != {i for i, _ in launched}:
        problems.append(f"manifest stages name instances {instance_ids}, launched {launched}")
    if len(launched) != 2:
        problems.append(f"expected a build and a test instance, found {launched}")
    left = c.emu.leftovers()
    if left:
        problems.append(f"instances left: {left}")
    return problems


def case_failure(c):
    before_images = {i["ImageId"] for i in c.emu.aws("ec2", "describe-images", "--owners", "self")["Images"]}
    # The parent found by a DescribeImages query, as Packer's source_ami_filter.
    recipe = c.recipe("ec2-failure", ["files.yml", "failing.yml"],
                      parent='{filters: {name: "bas*"}, owners: [self], mostRecent: true}')
    p = subprocess.run(c.build_argv(recipe), capture_output=True, text=True, env=c.env, timeout=1800)
    problems = []
    if p.returncode != 1:
        problems.append(f"expected status 1, got {p.returncode}: {p.stderr[-2000:]}")
    if "Breaks" not in p.stderr or "something went wrong in the guest" not in p.stderr:
        problems.append(f"the error does not name the step and its output:\n{p.stderr[-2000:]}")
    launched = c.emu.instances(detail=True)
    if [i["ImageId"] for i in launched] != [c.emu.ami]:
        problems.append(f"the query did not launch the base AMI {c.emu.ami}: {launched}")
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


def case_sigkill(c):
    recipe = c.recipe("ec2-sigkill", ["slow.yml"])
    proc = subprocess.Popen(c.build_argv(recipe), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env=c.env)
    deadline = time.time() + 900
    running = []
    while time.time() < deadline and proc.poll() is None and not running:
        running = [i for i, s in c.emu.instances() if s == "running"]
        time.sleep(2)
    if not running:
        proc.kill()
        return ["the build instance never ran"]
    proc.kill()
    proc.communicate(timeout=60)
    problems = []
    if not c.emu.leftovers(wait=0):
        problems.append("SIGKILL left nothing running: the case tests nothing")
    # Any kiln command reaps what a dead kiln left.
    p = subprocess.run([c.kiln, "build", recipe, "--plan"], capture_output=True, text=True, env=c.env, timeout=300)
    if p.returncode != 0:
        problems.append(f"kiln build --plan failed ({p.returncode}): {p.stderr[-2000:]}")
    if f"terminated {running[0]}" not in p.stderr:
        problems.append(f"the next kiln did not say it terminated {running[0]}:\n{p.stderr[-2000:]}")
    left = c.emu.leftovers()
    if left:
        problems.append(f"instances left: {left}")
    if os.listdir(c.env["KILN_RUNTIME_DIR"]):
        problems.append(f"run directories left: {os.listdir(c.env['KILN_RUNTIME_DIR'])}")
    return problems


CASES = {"build": case_build, "failure": case_failure, "test-failure": case_test_failure, "sigterm": case_sigterm,
         "sigkill": case_sigkill}


def main():
    kiln, emulator = sys.argv[1], sys.argv[2]
    names = sys.argv[3:] or list(CASES)
    image = os.environ.get("KILN_TEST_IMAGE")
    if not image:
        print("1..0 # SKIP KILN_TEST_IMAGE is not set")
        return 0

    def run_one(name):
        emu = Emulator(emulator, image)
        c = Case(kiln, emu)
        try:
            return CASES[name](c)
        finally:
            c.close()
            emu.close()

    return run_cases(names, run_one)

if __name__ == "__main__":
    sys.exit(main())
