#!/usr/bin/env python3
"""Disks to AMIs and back against kiln-emulator (suite `emulator`).

  image_transfer.py KILN KILN_EMULATOR

$KILN_TEST_IMAGE (the `tiny` base image, qcow2) goes through the commands
a user runs, against one kiln-emulator in qemu mode:

  import     kiln image import (EBS direct, the qcow2 read in place): prints
             an AMI id that is available, owned by the caller, shared with
             the --share account, whose root snapshot is completed; only
             data was sent (bytes sent <= the disk's allocated size, zero
             blocks skipped).  round-trip-s3 does the same by --method s3
             (a streamOptimized VMDK staged in S3, ImportSnapshot): the
             import task completed and the staging bucket is left empty.
  launch     the AMI boots as a real guest and answers an SSM command.
  export     kiln image export back to raw: byte for byte the original's raw
             conversion (the exported volume is rounded up to whole GiB, and
             the rest reads as zeros); to qcow2: qemu-img compare says
             identical.
  convert    kiln image convert round trip (qcow2 -> vmdk -> raw) is
             identical.
  parent     an import over a parent AMI (--parent) sends only the three
             blocks that changed (two written, one zeroed), and its export
             is the changed disk.
  interrupt  SIGINT during an import: status 130, no AMI and no snapshot
             left (pending or otherwise), no run directory left;
             interrupt-s3 the same during the S3 staging, with no object or
             multipart upload left in the bucket and no import task
             running.
  refusals   a missing --name, a name EC2 would refuse (before any data
             moves), a file with a backing file, --method s3 without a
             bucket or into a missing one, an unknown parent, an unknown
             image to export: clear errors, nothing made.
  build-import  a local build (qemu driver) with --import ec2 and a
             distribution of two regions: the disk is published as a file
             and as an AMI in both regions (templated name, tags, launch
             permission), the manifest names all three; no instance runs.

Guests run under TCG, so this test runs alone.  Without $KILN_TEST_IMAGE it
is skipped.
"""
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

REGION = "us-east-1"
SHARE = "111111111111"
GIB = 1024 ** 3


class Emulator:
    def __init__(self, binary):
        self.tmp = tempfile.mkdtemp(prefix="kiln-transfer-")
        self.state = os.path.join(self.tmp, "state")
        self.log = open(os.path.join(self.tmp, "emulator.log"), "w")
        self.proc = subprocess.Popen([binary, "--state-dir", self.state, "--listen", "127.0.0.1:0"],
                                     stdout=subprocess.PIPE, stderr=self.log, text=True)
        line = self.proc.stdout.readline()
        if "listening on " not in line:
            raise RuntimeError(f"kiln-emulator did not start: {line!r}")
        self.url = line.split("listening on ")[1].split()[0]
        self.env = dict(os.environ, AWS_ACCESS_KEY_ID="test", AWS_SECRET_ACCESS_KEY="test", AWS_DEFAULT_REGION=REGION,
                        AWS_REGION=REGION, KILN_RUNTIME_DIR=os.path.join(self.tmp, "runtime"))
        for k in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"):
            self.env.pop(k, None)
        os.makedirs(self.env["KILN_RUNTIME_DIR"])

    def aws(self, *args, account="test"):
        env = dict(self.env, AWS_ACCESS_KEY_ID=account, AWS_SECRET_ACCESS_KEY=account)
        p = subprocess.run(["/usr/bin/aws", "--endpoint-url", self.url, "--region", REGION, "--output", "json", *args],
                           capture_output=True, text=True, env=env, timeout=120)
        if p.returncode != 0:
            raise RuntimeError(f"aws {' '.join(args)}: {p.stderr}")
        return json.loads(p.stdout) if p.stdout.strip() else {}

    def own_images(self):
        return {i["ImageId"]: i for i in self.aws("ec2", "describe-images", "--owners", "self")["Images"]}

    def own_snapshots(self):
        return {s["SnapshotId"]: s for s in
                self.aws("ec2", "describe-snapshots", "--owner-ids", "self")["Snapshots"]}

    def close(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.log.close()
        shutil.rmtree(self.tmp, ignore_errors=True)


def kiln_cmd(kiln, emu, *args, timeout=1200):
    return subprocess.run([kiln, "image", *args, "--endpoint-url", emu.url, "--region", REGION],
                          capture_output=True, text=True, env=emu.env, timeout=timeout)


BLOCK = 512 * 1024


def allocated_block_bytes(path):
    """Bytes of the 512 KiB blocks that hold any allocated data: what an
    importer reading only data must send at most."""
    blocks = set()
    fd = os.open(path, os.O_RDONLY)
    try:
        size, off = os.fstat(fd).st_size, 0
        while off < size:
            try:
                start = os.lseek(fd, off, os.SEEK_DATA)
            except OSError:
                break
            end = os.lseek(fd, start, os.SEEK_HOLE)
            blocks.update(range(start // BLOCK, (end - 1) // BLOCK + 1))
            off = end
    finally:
        os.close(fd)
    return len(blocks) * BLOCK


def same_prefix_then_zeros(original, exported):
    """The exported raw equals the original, then zeros to its end."""
    size = os.path.getsize(original)
    if os.path.getsize(exported) < size or os.path.getsize(exported) % GIB:
        return f"exported size {os.path.getsize(exported)} for an original of {size}"
    with open(original, "rb") as a, open(exported, "rb") as b:
        off = 0
        while True:
            x = a.read(1 << 20)
            if not x:
                break
            y = b.read(len(x))
            if x != y:
                return f"the bytes differ within MiB {off >> 20}"
            off += len(x)
        while True:
            y = b.read(1 << 20)
            if not y:
                break
            if y.count(0) != len(y):
                return "the exported tail past the original is not zeros"
    return None


def sent_bytes(stderr):
    """The "sent N MiB" figure of kiln image import's summary, in bytes."""
    sent = None
    for word in stderr.split("sent ")[1:]:
        sent = float(word.split(" MiB")[0]) * 1024 * 1024
    return sent


def s3_leftovers(emu, bucket):
    """Objects and multipart uploads left in the staging bucket."""
    objects = emu.aws("s3api", "list-objects-v2", "--bucket", bucket).get("Contents", [])
    uploads = emu.aws("s3api", "list-multipart-uploads", "--bucket", bucket).get("Uploads", [])
    return [o["Key"] for o in objects] + [f"upload {u['Key']}" for u in uploads]


def case_round_trip(kiln, emu, work, image):
    return round_trip(kiln, emu, work, image, [])


def case_round_trip_s3(kiln, emu, work, image):
    emu.aws("s3api", "create-bucket", "--bucket", "kiln-staging")
    problems = round_trip(kiln, emu, work, image, ["--method", "s3", "--bucket", "kiln-staging"])
    tasks = emu.aws("ec2", "describe-import-snapshot-tasks")["ImportSnapshotTasks"]
    if len(tasks) != 1 or tasks[0]["SnapshotTaskDetail"]["Status"] != "completed":
        problems.append(f"import snapshot tasks: {tasks}")
    elif tasks[0]["SnapshotTaskDetail"].get("Format") != "VMDK":
        problems.append(f"the disk was not staged as a VMDK: {tasks[0]}")
    left = s3_leftovers(emu, "kiln-staging")
    if left:
        problems.append(f"the staging bucket still holds {left}")
    return problems


def round_trip(kiln, emu, work, image, method):
    problems = []
    raw = os.path.join(work, "original.raw")
    subprocess.run(["qemu-img", "convert", "-O", "raw", image, raw], check=True, timeout=600)
    p = kiln_cmd(kiln, emu, "import", image, "--name", "kiln-transfer", "--share", SHARE, "--description", "round trip",
                 *method)
    if p.returncode != 0:
        return [f"import failed ({p.returncode}): {p.stderr[-3000:]}"]
    ami = p.stdout.strip()
    print(f"# import {' '.join(method) or '(ebs)'}: {p.stderr.strip().splitlines()[-1]}", flush=True)
    images = emu.own_images()
    if ami not in images or images[ami]["State"] != "available" or images[ami]["Name"] != "kiln-transfer":
        return [f"AMI {ami!r} not available under its name: {images.get(ami)}"]
    snap = [m["Ebs"]["SnapshotId"] for m in images[ami]["BlockDeviceMappings"] if "Ebs" in m]
    snaps = emu.own_snapshots()
    if len(snap) != 1 or snaps.get(snap[0], {}).get("State") != "completed":
        problems.append(f"root snapshot {snap}: {[snaps.get(s) for s in snap]}")
    shared = emu.aws("ec2", "describe-images", "--executable-users", "self", account="test2")["Images"]
    if ami not in {i["ImageId"] for i in shared}:
        problems.append(f"{ami} is not shared with {SHARE}")
    sent = sent_bytes(p.stderr)
    if not method:
        # The summary rounds to 0.1 MiB.
        if sent is None or sent > allocated_block_bytes(raw) + 0.05 * 1024 * 1024:
            problems.append(f"sent {sent} bytes, more than the {allocated_block_bytes(raw)} of blocks holding data")
    elif sent is None or sent > os.path.getsize(image) * 1.5:
        # Staged as a compressed VMDK: no bigger than the qcow2, give or take.
        problems.append(f"staged {sent} bytes for a {os.path.getsize(image)}-byte qcow2")

    # The AMI boots and answers.
    run = emu.aws("ec2", "run-instances", "--image-id", ami, "--instance-type", "t3.micro", "--count", "1")
    iid = run["Instances"][0]["InstanceId"]
    try:
        deadline = time.time() + 600
        online = False
        while time.time() < deadline and not online:
            info = emu.aws("ssm", "describe-instance-information")["InstanceInformationList"]
            online = any(i["InstanceId"] == iid and i["PingStatus"] == "Online" for i in info)
            time.sleep(2)
        if not online:
            problems.append(f"{iid} of the imported AMI never came online")
        else:
            cmd = emu.aws("ssm", "send-command", "--instance-ids", iid, "--document-name", "AWS-RunShellScript",
                          "--parameters", '{"commands":["echo imported-$((6*7))"]}')["Command"]["CommandId"]
            out = {}
            for _ in range(120):
                try:
                    out = emu.aws("ssm", "get-command-invocation", "--command-id", cmd, "--instance-id", iid)
                except RuntimeError:
                    out = {}
                if out.get("Status") in ("Success", "Failed", "TimedOut", "Cancelled"):
                    break
                time.sleep(1)
            if out.get("Status") != "Success" or "imported-42" not in out.get("StandardOutputContent", ""):
                problems.append(f"the command in the imported AMI's guest: {out}")
    finally:
        emu.aws("ec2", "terminate-instances", "--instance-ids", iid)

    # Back to a file.
    exported = os.path.join(work, "exported.raw")
    p = kiln_cmd(kiln, emu, "export", ami, exported)
    if p.returncode != 0:
        problems.append(f"export failed ({p.returncode}): {p.stderr[-3000:]}")
    else:
        diff = same_prefix_then_zeros(raw, exported)
        if diff:
            problems.append(f"raw export: {diff}")
    exported_qcow2 = os.path.join(work, "exported.qcow2")
    p = kiln_cmd(kiln, emu, "export", ami, exported_qcow2)
    if p.returncode != 0:
        problems.append(f"qcow2 export failed ({p.returncode}): {p.stderr[-3000:]}")
    else:
        fmt = json.loads(subprocess.run(["qemu-img", "info", "--output=json", exported_qcow2], capture_output=True,
                                        text=True, check=True).stdout)["format"]
        # compare -s would also hold the size difference against us: the
        # volume was rounded up to whole GiB.
        cmp = subprocess.run(["qemu-img", "compare", raw, exported_qcow2], capture_output=True, text=True)
        if fmt != "qcow2" or cmp.returncode != 0:
            problems.append(f"qcow2 export: format {fmt}, compare: {cmp.stdout} {cmp.stderr}")
    leftovers = [f for f in os.listdir(work) if ".tmp-" in f]
    if leftovers:
        problems.append(f"temporary files left: {leftovers}")
    return problems


def case_convert(kiln, emu, work, image):
    vmdk = os.path.join(work, "c.vmdk")
    back = os.path.join(work, "c.raw")
    problems = []
    for args in ((image, vmdk), (vmdk, back)):
        p = subprocess.run([kiln, "image", "convert", *args], capture_output=True, text=True, timeout=600)
        if p.returncode != 0:
            return [f"convert {args}: {p.stderr}"]
    fmt = json.loads(subprocess.run(["qemu-img", "info", "--output=json", vmdk], capture_output=True, text=True,
                                    check=True).stdout)["format"]
    if fmt != "vmdk":
        problems.append(f"{vmdk} is {fmt}")
    cmp = subprocess.run(["qemu-img", "compare", image, back], capture_output=True, text=True)
    if cmp.returncode != 0:
        problems.append(f"convert round trip differs: {cmp.stdout} {cmp.stderr}")
    return problems


def case_interrupt(kiln, emu, work, image):
    # A disk big enough to take a while: 1 GiB of random data.
    big = os.path.join(work, "big.raw")
    with open(big, "wb") as f:
        for _ in range(1024):
            f.write(os.urandom(1 << 20))
    images, snaps = emu.own_images(), emu.own_snapshots()
    proc = subprocess.Popen([kiln, "image", "import", big, "--name", "interrupted", "--workers", "1",
                             "--endpoint-url", emu.url, "--region", REGION], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=emu.env)
    # Interrupt once the snapshot exists.
    deadline = time.time() + 120
    while time.time() < deadline and set(emu.own_snapshots()) == set(snaps) and proc.poll() is None:
        time.sleep(0.2)
    time.sleep(1)
    proc.send_signal(signal.SIGINT)
    try:
        _, err = proc.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        proc.kill()
        return ["kiln image import did not stop within 300 s of SIGINT"]
    problems = []
    if proc.returncode != 130:
        problems.append(f"expected status 130, got {proc.returncode}: {err[-2000:]}")
    if set(emu.own_images()) != set(images):
        problems.append(f"images left: {set(emu.own_images()) - set(images)}")
    left = {k: v["State"] for k, v in emu.own_snapshots().items() if k not in snaps}
    if left:
        problems.append(f"snapshots left: {left}")
    if os.listdir(emu.env["KILN_RUNTIME_DIR"]):
        problems.append(f"run directories left: {os.listdir(emu.env['KILN_RUNTIME_DIR'])}")
    return problems


def case_parent(kiln, emu, work, image):
    """An import over a parent AMI sends only the blocks that changed."""
    p = kiln_cmd(kiln, emu, "import", image, "--name", "parent")
    if p.returncode != 0:
        return [f"parent import failed ({p.returncode}): {p.stderr[-3000:]}"]
    parent = p.stdout.strip()
    child = os.path.join(work, "child.qcow2")
    shutil.copy(image, child)
    # Two changed blocks (1 MiB of 0x33 at 100 MiB) and a zeroed range that
    # the parent holds data in (the start of the disk: its boot sector).
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 0x33 100M 1M", "-c", "write -z 0 512k", child],
                   check=True, capture_output=True)
    p = kiln_cmd(kiln, emu, "import", child, "--name", "child", "--parent", parent)
    if p.returncode != 0:
        return [f"child import failed ({p.returncode}): {p.stderr[-3000:]}"]
    ami = p.stdout.strip()
    print(f"# import --parent: {p.stderr.strip().splitlines()[-1]}", flush=True)
    problems = []
    sent = sent_bytes(p.stderr)
    if sent is None or sent > 3 * BLOCK + 0.05 * 1024 * 1024 or sent < 3 * BLOCK - 0.05 * 1024 * 1024:
        problems.append(f"sent {sent} bytes over the parent; 3 blocks changed")
    if " 0 unchanged" in p.stderr:
        problems.append("no block was found unchanged")
    raw = os.path.join(work, "child.raw")
    subprocess.run(["qemu-img", "convert", "-O", "raw", child, raw], check=True, timeout=600)
    exported = os.path.join(work, "exported.raw")
    p = kiln_cmd(kiln, emu, "export", ami, exported)
    if p.returncode != 0:
        problems.append(f"export failed ({p.returncode}): {p.stderr[-3000:]}")
    else:
        diff = same_prefix_then_zeros(raw, exported)
        if diff:
            problems.append(f"the child's export: {diff}")
    snapshots = emu.own_snapshots()
    child_snap = [m["Ebs"]["SnapshotId"] for m in emu.own_images()[ami]["BlockDeviceMappings"] if "Ebs" in m]
    if len(child_snap) != 1 or snapshots[child_snap[0]]["State"] != "completed":
        problems.append(f"the child's snapshot: {child_snap}")
    return problems


def case_interrupt_s3(kiln, emu, work, image):
    """SIGINT while the disk is staged in S3: no object, no multipart upload,
    no import task running, no snapshot, no run directory."""
    emu.aws("s3api", "create-bucket", "--bucket", "kiln-staging")
    big = os.path.join(work, "big.raw")
    with open(big, "wb") as f:
        for _ in range(512):
            f.write(os.urandom(1 << 20))
    snaps = emu.own_snapshots()
    proc = subprocess.Popen([kiln, "image", "import", big, "--name", "interrupted", "--method", "s3", "--bucket",
                             "kiln-staging", "--endpoint-url", emu.url, "--region", REGION],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=emu.env)
    # Interrupt once the multipart upload has begun.
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and not s3_leftovers(emu, "kiln-staging"):
        time.sleep(0.2)
    if proc.poll() is not None:
        return [f"the import ended ({proc.returncode}) before it could be interrupted: {proc.stderr.read()[-2000:]}"]
    proc.send_signal(signal.SIGINT)
    try:
        _, err = proc.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        proc.kill()
        return ["kiln image import did not stop within 300 s of SIGINT"]
    problems = []
    if proc.returncode != 130:
        problems.append(f"expected status 130, got {proc.returncode}: {err[-2000:]}")
    left = s3_leftovers(emu, "kiln-staging")
    if left:
        problems.append(f"the staging bucket still holds {left}")
    tasks = [t for t in emu.aws("ec2", "describe-import-snapshot-tasks")["ImportSnapshotTasks"]
             if t["SnapshotTaskDetail"]["Status"] == "active"]
    if tasks:
        problems.append(f"import tasks still active: {tasks}")
    if set(emu.own_snapshots()) != set(snaps):
        problems.append(f"snapshots left: {set(emu.own_snapshots()) - set(snaps)}")
    if os.listdir(emu.env["KILN_RUNTIME_DIR"]):
        problems.append(f"run directories left: {os.listdir(emu.env['KILN_RUNTIME_DIR'])}")
    return problems


def case_refusals(kiln, emu, work, image):
    problems = []
    images, snaps = emu.own_images(), emu.own_snapshots()
    p = kiln_cmd(kiln, emu, "import", image)
    if p.returncode != 2 or "--name" not in p.stderr:
        problems.append(f"import without --name: {p.returncode} {p.stderr}")
    p = kiln_cmd(kiln, emu, "import", image, "--name", "ab")
    if p.returncode != 2 or "3 to 128" not in p.stderr:
        problems.append(f"import with a name EC2 refuses: {p.returncode} {p.stderr}")
    overlay = os.path.join(work, "overlay.qcow2")
    subprocess.run(["qemu-img", "create", "-f", "qcow2", "-F", "qcow2", "-b", os.path.abspath(image), overlay],
                   check=True, capture_output=True)
    p = kiln_cmd(kiln, emu, "import", overlay, "--name", "overlay")
    if p.returncode != 1 or "backing file" not in p.stderr:
        problems.append(f"import of an overlay: {p.returncode} {p.stderr}")
    p = kiln_cmd(kiln, emu, "import", image, "--name", "s3", "--method", "s3")
    if p.returncode != 2 or "--bucket" not in p.stderr:
        problems.append(f"--method s3 without --bucket: {p.returncode} {p.stderr}")
    p = kiln_cmd(kiln, emu, "import", image, "--name", "nobucket", "--method", "s3", "--bucket", "no-such-bucket")
    if p.returncode != 1 or "NoSuchBucket" not in p.stderr:
        problems.append(f"--method s3 into a missing bucket: {p.returncode} {p.stderr}")
    p = kiln_cmd(kiln, emu, "import", image, "--name", "orphan", "--parent", "snap-00000000000000000")
    if p.returncode != 1 or "snap-00000000000000000" not in p.stderr:
        problems.append(f"import over an unknown parent: {p.returncode} {p.stderr}")
    out = os.path.join(work, "none.raw")
    p = kiln_cmd(kiln, emu, "export", "ami-00000000000000000", out)
    if p.returncode != 1 or "ami-00000000000000000" not in p.stderr or os.path.exists(out):
        problems.append(f"export of an unknown image: {p.returncode} {p.stderr}")
    if set(emu.own_images()) != set(images) or set(emu.own_snapshots()) != set(snaps):
        problems.append("a refused command made an image or a snapshot")
    return problems


def case_build_import(kiln, emu, work, image):
    vm_data = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "vm", "data")
    recipe = os.path.join(work, "recipe.yml")
    with open(recipe, "w") as f:
        f.write(f"name: imported\nsemanticVersion: 1.0.0\nparentImage: {os.path.abspath(image)}\n"
                f"components:\n  - componentArn: {os.path.join(vm_data, 'files.yml')}\n")
    dist = os.path.join(work, "dist.yml")
    with open(dist, "w") as f:
        f.write(f"distributions:\n"
                f"  - region: {REGION}\n    amiDistributionConfiguration:\n"
                f"      name: 'imported-{{{{ imagebuilder:buildVersion }}}}'\n"
                f"      amiTags: {{Stage: local}}\n"
                f"      launchPermission: {{userIds: ['{SHARE}']}}\n"
                f"  - region: eu-west-1\n    amiDistributionConfiguration:\n"
                f"      name: 'imported-copy-{{{{ imagebuilder:buildVersion }}}}'\n")
    out = os.path.join(work, "out")
    p = subprocess.run([kiln, "build", recipe, "--driver", "qemu", "--import", "ec2", "--distribution", dist,
                        "--endpoint-url", emu.url, "--region", REGION, "--output", out, "--json"],
                       capture_output=True, text=True, env=emu.env, timeout=1800)
    if p.returncode != 0:
        return [f"kiln build --import ec2 failed ({p.returncode}): {p.stderr[-3000:]}"]
    m = json.loads(p.stdout)
    problems = []
    if not os.path.exists(os.path.join(out, "imported-1.qcow2")):
        problems.append(f"published files: {os.listdir(out)}")
    images = {i["region"]: i for i in m["output"].get("images", [])}
    if set(images) != {REGION, "eu-west-1"}:
        return problems + [f"manifest images: {m['output']}"]
    home = emu.own_images().get(images[REGION]["imageId"])
    if not home or home["Name"] != "imported-1" or {"Key": "Stage", "Value": "local"} not in home.get("Tags", []):
        problems.append(f"{REGION} AMI: {home}")
    shared = emu.aws("ec2", "describe-images", "--executable-users", "self", account="test2")["Images"]
    if images[REGION]["imageId"] not in {i["ImageId"] for i in shared}:
        problems.append("the AMI is not shared")
    env = dict(emu.env, AWS_ACCESS_KEY_ID="test", AWS_SECRET_ACCESS_KEY="test")
    q = subprocess.run(["/usr/bin/aws", "--endpoint-url", emu.url, "--region", "eu-west-1", "--output", "json", "ec2",
                        "describe-images", "--image-ids", images["eu-west-1"]["imageId"]], capture_output=True,
                       text=True, env=env, timeout=120)
    copy = json.loads(q.stdout)["Images"] if q.returncode == 0 else []
    if len(copy) != 1 or copy[0]["State"] != "available" or copy[0]["Name"] != "imported-copy-1":
        problems.append(f"eu-west-1 copy: {copy or q.stderr}")
    if [s["name"] for s in m["stages"]] != ["build", "capture", "test", "import", "distribute", "publish"]:
        problems.append(f"stages: {[(s['name'], s['status']) for s in m['stages']]}")
    return problems


CASES = {"round-trip": case_round_trip, "round-trip-s3": case_round_trip_s3, "parent": case_parent,
         "build-import": case_build_import, "convert": case_convert, "interrupt": case_interrupt,
         "interrupt-s3": case_interrupt_s3, "refusals": case_refusals}


def main():
    kiln, emulator = sys.argv[1], sys.argv[2]
    names = sys.argv[3:] or list(CASES)
    image = os.environ.get("KILN_TEST_IMAGE")
    if not image:
        print("1..0 # SKIP KILN_TEST_IMAGE is not set")
        return 0

    def run_one(name):
        emu = Emulator(emulator)
        work = tempfile.mkdtemp(prefix="kiln-transfer-work-")
        try:
            return CASES[name](kiln, emu, work, image)
        finally:
            emu.close()
            shutil.rmtree(work, ignore_errors=True)

    return run_cases(names, run_one)

if __name__ == "__main__":
    sys.exit(main())
