#!/usr/bin/env python3
"""The kiln-emulator scenario of issue 4, driven by real AWS clients (suite `emulator`).

  emulator_scenario.py KILN_EMULATOR

One kiln-emulator in qemu mode on a temporary state directory, the image of
$KILN_TEST_IMAGE imported as a private AMI of account 000000000000 in
us-east-1, then:

  Debian's AWS CLI    /usr/bin/aws --endpoint-url: run-instances, wait
  (v2)                instance-running, ssm send-command (output that only the
                      guest can produce, stderr, a marker file written on its
                      disk), wait command-executed, get-command-invocation; a
                      command that exits 3 is Failed with ResponseCode 3;
                      get-console-output holds the guest's kernel messages.
  boto3 + waiters     under every python that has boto3 (the one running this
                      test and Debian's /usr/bin/python3): create_image (with
                      its reboot), image_available, copy_image to us-west-2
                      (invisible in us-east-1), launch permission for
                      111111111111, which then sees it, launches it and reads
                      the marker file back through SSM; the unshared
                      us-east-1 image is refused to that account (launch,
                      describe, copy); instance_terminated for every instance.
  restart             SIGTERM, the same state directory again: images in both
                      regions, launch permissions, terminated instances and
                      command invocations (with their output) are all there.
  pip AWS CLI (v1)    `aws` on PATH with AWS_ENDPOINT_URL: describe-images,
                      a launch of the us-west-2 copy, a send-command round trip
                      that reads the marker, describe-instances, terminate.
                      Skipped (TAP SKIP, with the reason) when there is no
                      such CLI: Debian ships only v2 and PyPI may be out of
                      reach; a failure when it is there and misbehaves.

Guests run under TCG, so this test runs alone.  Every client call has a
timeout; the emulator and its guests are killed and the temporary directory
removed whatever happens.  Without $KILN_TEST_IMAGE the test is skipped.

The boto3 part is this same file run as
  emulator_scenario.py --boto3 CONFIG_JSON
which prints one JSON object per line: {"step": NAME, "problems": [...]} for
each step and {"result": {...}} at the end.
"""
import base64
import json
import os
import re
import secrets
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

EAST, WEST = "us-east-1", "us-west-2"
OWNER = ("test", "test", "000000000000")
SHARED = ("test2", "test2", "111111111111")
DEBIAN_AWS = "/usr/bin/aws"
DEBIAN_PYTHON = "/usr/bin/python3"
AMI_RE = re.compile(r"^ami-[0-9a-f]{8,17}$")


# --------------------------------------------------------------------------
# Helpers shared by both halves

def tail(text, n=3000):
    text = text if isinstance(text, str) else text.decode(errors="replace")
    return text if len(text) <= n else "..." + text[-n:]


def clean_env(tmp, **extra):
    """The environment for AWS clients: nothing from the user's AWS setup
    (profiles, config files, endpoints) leaks into the scenario."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("AWS_") and k not in ("PYTHONPATH", "PYTHONHOME")}
    env.update(AWS_CONFIG_FILE=os.path.join(tmp, "no-aws-config"),
               AWS_SHARED_CREDENTIALS_FILE=os.path.join(tmp, "no-aws-credentials"),
               AWS_EC2_METADATA_DISABLED="true", AWS_PAGER="", AWS_CLI_AUTO_PROMPT="off",
               AWS_RETRY_MODE="standard", AWS_MAX_ATTEMPTS="3")
    env.update(extra)
    return env


# --------------------------------------------------------------------------
# The boto3 half (run under each interpreter)

def boto3_main(config):
    import boto3
    import botocore
    from botocore.config import Config
    from botocore.exceptions import ClientError, WaiterError

    url = config["endpoint"]
    tag = config["tag"]
    marker = config["marker"]
    src_image = config["image"]
    src_instance = config["instance"]
    result = {"boto3": boto3.__version__, "botocore": botocore.__version__,
              "python": sys.version.split()[0], "images": {}, "terminated": [], "commands": []}
    cfg = Config(retries={"max_attempts": 3, "mode": "standard"}, connect_timeout=10, read_timeout=120)
    fast = {"Delay": 2, "MaxAttempts": 300}

    def client(service, region, who):
        return boto3.client(service, region_name=region, endpoint_url=url, aws_access_key_id=who[0],
                            aws_secret_access_key=who[1], config=cfg)

    ec2_east, ec2_west = client("ec2", EAST, OWNER), client("ec2", WEST, OWNER)
    ec2_east2, ec2_west2 = client("ec2", EAST, SHARED), client("ec2", WEST, SHARED)
    ssm_west2 = client("ssm", WEST, SHARED)

    def emit(obj):
        print(json.dumps(obj), flush=True)

    def error_code(fn, **kw):
        """Calls fn; returns the ClientError code, or None when it succeeded."""
        try:
            fn(**kw)
        except ClientError as e:
            return e.response.get("Error", {}).get("Code")
        return None

    state = {}

    def step(name, fn, needs=()):
        missing = [k for k in needs if k not in state]
        if missing:
            emit({"step": name, "skip": f"needs {', '.join(missing)} from a step that failed"})
            return
        problems = []
        t0 = time.time()
        try:
            fn(problems)
        except WaiterError as e:
            problems.append(f"{e}; last response: {json.dumps(e.last_response, default=str)[:1500]}")
        except ClientError as e:
            problems.append(f"{e.operation_name} failed: {e.response.get('Error')} "
                            f"(HTTP {e.response.get('ResponseMetadata', {}).get('HTTPStatusCode')})")
        except Exception as e:  # a crash of the step is a failure, with its reason
            problems.append(f"{type(e).__name__}: {e}")
        emit({"step": name, "problems": problems, "seconds": round(time.time() - t0, 1)})

    def image_of(ec2, image_id):
        images = ec2.describe_images(ImageIds=[image_id])["Images"]
        return images[0] if len(images) == 1 else None

    ssm_east = client("ssm", EAST, OWNER)

    def run_command(ssm, iid, commands):
        cid = ssm.send_command(InstanceIds=[iid], DocumentName="AWS-RunShellScript",
                               Parameters={"commands": commands}, Comment=f"scenario {tag}")["Command"]["CommandId"]
        ssm.get_waiter("command_executed").wait(CommandId=cid, InstanceId=iid, WaiterConfig=fast)
        return cid, ssm.get_command_invocation(CommandId=cid, InstanceId=iid)

    def create_image(problems):
        called = time.time()
        r = ec2_east.create_image(InstanceId=src_instance, Name=f"kiln-scenario-{tag}",
                                  Description="captured by emulator_scenario.py", NoReboot=False)
        image_id = r.get("ImageId", "")
        if not AMI_RE.match(image_id):
            problems.append(f"CreateImage answered {r}")
            return
        ec2_east.get_waiter("image_available").wait(ImageIds=[image_id], WaiterConfig=fast)
        img = image_of(ec2_east, image_id)
        if not img or img.get("State") != "available" or img.get("OwnerId") != OWNER[2] \
                or img.get("Name") != f"kiln-scenario-{tag}" or img.get("Public") is not False:
            problems.append(f"the new image is not an available private image of {OWNER[2]}: {img}")
            return
        snaps = [m["Ebs"]["SnapshotId"] for m in img.get("BlockDeviceMappings", []) if "Ebs" in m
                 and m["Ebs"].get("SnapshotId")]
        if not snaps:
            problems.append(f"the new image has no EBS snapshot: {img.get('BlockDeviceMappings')}")
        else:
            found = ec2_east.describe_snapshots(SnapshotIds=snaps)["Snapshots"]
            if sorted(s["SnapshotId"] for s in found) != sorted(snaps) \
                    or any(s.get("State") != "completed" for s in found):
                problems.append(f"the image's snapshots {snaps} are not described as completed: {found}")
        # CreateImage without NoReboot rebooted the guest: it is running again.
        ec2_east.get_waiter("instance_running").wait(InstanceIds=[src_instance], WaiterConfig=fast)
        _, inv = run_command(ssm_east, src_instance, ["cut -d' ' -f1 /proc/uptime"])
        try:
            uptime = float(inv.get("StandardOutputContent", "").strip())
        except ValueError:
            uptime = None
        if inv.get("Status") != "Success" or uptime is None or uptime > time.time() - called + 1:
            problems.append(f"CreateImage with NoReboot=False did not reboot the guest: {time.time() - called:.0f} s "
                            f"after the call its uptime is {uptime} ({inv})")
        state["east"] = image_id
        result["images"]["east"] = image_id

    def copy_image(problems):
        east = state["east"]
        r = ec2_west.copy_image(SourceImageId=east, SourceRegion=EAST, Name=f"kiln-scenario-{tag}-west",
                                Description="copied by emulator_scenario.py")
        west = r.get("ImageId", "")
        if not AMI_RE.match(west) or west == east:
            problems.append(f"CopyImage answered {r}")
            return
        ec2_west.get_waiter("image_available").wait(ImageIds=[west], WaiterConfig=fast)
        img = image_of(ec2_west, west)
        if not img or img.get("State") != "available" or img.get("OwnerId") != OWNER[2]:
            problems.append(f"the copy is not available in {WEST}: {img}")
        code = error_code(ec2_east.describe_images, ImageIds=[west])
        if code != "InvalidAMIID.NotFound":
            problems.append(f"the {WEST} copy {west} described in {EAST}: expected InvalidAMIID.NotFound, "
                            f"got {code or 'success'}")
        code = error_code(ec2_west.describe_images, ImageIds=[east])
        if code != "InvalidAMIID.NotFound":
            problems.append(f"the {EAST} image {east} described in {WEST}: expected InvalidAMIID.NotFound, "
                            f"got {code or 'success'}")
        snaps = [m["Ebs"]["SnapshotId"] for m in (img or {}).get("BlockDeviceMappings", []) if "Ebs" in m
                 and m["Ebs"].get("SnapshotId")]
        east_snaps = [m["Ebs"]["SnapshotId"] for m in image_of(ec2_east, east).get("BlockDeviceMappings", [])
                      if "Ebs" in m]
        if not snaps or set(snaps) & set(east_snaps):
            problems.append(f"the copy's snapshots {snaps} are not its own (the source's: {east_snaps})")
        else:
            found = [x["SnapshotId"] for x in ec2_west.describe_snapshots(SnapshotIds=snaps)["Snapshots"]]
            if sorted(found) != sorted(snaps):
                problems.append(f"the copy's snapshots {snaps} described in {WEST}: {found}")
            code = error_code(ec2_east.describe_snapshots, SnapshotIds=snaps)
            if code != "InvalidSnapshot.NotFound":
                problems.append(f"the copy's snapshots {snaps} described in {EAST}: expected "
                                f"InvalidSnapshot.NotFound, got {code or 'success'}")
        own_west = [i["ImageId"] for i in ec2_west.describe_images(Owners=["self"])["Images"]]
        if west not in own_west or east in own_west:
            problems.append(f"describe_images(Owners=[self]) in {WEST}: {own_west}")
        state["west"] = west
        result["images"]["west"] = west

    def share(problems):
        west = state["west"]
        ec2_west.modify_image_attribute(ImageId=west, LaunchPermission={"Add": [{"UserId": SHARED[2]}]})
        perms = ec2_west.describe_image_attribute(ImageId=west, Attribute="launchPermission")
        if perms.get("LaunchPermissions") != [{"UserId": SHARED[2]}]:
            problems.append(f"launchPermission after the Add: {perms.get('LaunchPermissions')}")
        img = image_of(ec2_west, west)
        if img and img.get("Public") is not False:
            problems.append(f"sharing with one account made the image public: {img}")
        # The owner scoping its images by the account it shared with.
        given = [i["ImageId"] for i in ec2_west.describe_images(ExecutableUsers=[SHARED[2]])["Images"]]
        if west not in given:
            problems.append(f"describe_images(ExecutableUsers=[{SHARED[2]}]) as the owner does not list "
                            f"{west}: {given}")
        # Sharing in us-west-2 shares nothing in us-east-1.
        perms = ec2_east.describe_image_attribute(ImageId=state["east"], Attribute="launchPermission")
        if perms.get("LaunchPermissions"):
            problems.append(f"the {EAST} image has launch permissions: {perms.get('LaunchPermissions')}")
        state["shared"] = True

    def shared_visible(problems):
        west = state["west"]
        mine = [i["ImageId"] for i in ec2_west2.describe_images(ExecutableUsers=["self"])["Images"]]
        if west not in mine:
            problems.append(f"describe_images(ExecutableUsers=[self]) as {SHARED[2]} in {WEST} "
                            f"does not list {west}: {mine}")
        img = image_of(ec2_west2, west)
        if not img or img.get("OwnerId") != OWNER[2]:
            problems.append(f"the shared image described to {SHARED[2]}: {img}")
        for kw in ({}, {"Owners": [OWNER[2]]}):
            listed = [i["ImageId"] for i in ec2_west2.describe_images(**kw)["Images"]]
            if west not in listed:
                problems.append(f"describe_images({kw}) as {SHARED[2]} does not list the shared {west}: {listed}")
        owned = [i["ImageId"] for i in ec2_west2.describe_images(Owners=["self"])["Images"]]
        if west in owned:
            problems.append(f"describe_images(Owners=[self]) as {SHARED[2]} lists the image it was only "
                            f"given: {owned}")

    def shared_launch(problems):
        r = ec2_west2.run_instances(ImageId=state["west"], InstanceType="t3.micro", MinCount=1, MaxCount=1,
                                    TagSpecifications=[{"ResourceType": "instance",
                                                        "Tags": [{"Key": "Name", "Value": f"scenario-{tag}"}]}])
        inst = r["Instances"][0]
        iid = inst["InstanceId"]
        state["instance2"] = iid
        if inst.get("ImageId") != state["west"] or r.get("OwnerId") != SHARED[2]:
            problems.append(f"RunInstances of the shared image answered {r}")
        ec2_west2.get_waiter("instance_running").wait(InstanceIds=[iid], WaiterConfig=fast)
        desc = ec2_west2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]
        if desc["State"]["Name"] != "running" or not desc.get("Placement", {}).get("AvailabilityZone",
                                                                                      "").startswith(WEST):
            problems.append(f"the instance as described: {desc}")
        # The owner's account does not see the other account's instance.
        code = error_code(ec2_west.describe_instances, InstanceIds=[iid])
        if code != "InvalidInstanceID.NotFound":
            problems.append(f"{OWNER[2]} describing {SHARED[2]}'s instance: expected "
                            f"InvalidInstanceID.NotFound, got {code or 'success'}")

    def shared_command(problems):
        iid = state["instance2"]
        cid, inv = run_command(ssm_west2, iid, ["cat /etc/kiln-scenario-marker", "echo guest-hostname=$(uname -n)"])
        result["commands"].append({"region": WEST, "account": "shared", "command": cid, "instance": iid})
        out = inv.get("StandardOutputContent", "")
        if inv.get("Status") != "Success" or inv.get("ResponseCode") != 0:
            problems.append(f"the command in the shared image's instance: {inv}")
        if marker not in out:
            problems.append(f"the instance launched from the copy does not have the file written before "
                            f"CreateImage ({marker}): stdout {out!r}, stderr "
                            f"{inv.get('StandardErrorContent')!r}")
        result["commands"][-1]["stdout"] = out

    def unshared_refused(problems):
        east = state["east"]
        code = error_code(ec2_east2.run_instances, ImageId=east, InstanceType="t3.micro", MinCount=1,
                          MaxCount=1)
        if code != "InvalidAMIID.NotFound":
            problems.append(f"{SHARED[2]} launching the unshared {east}: expected InvalidAMIID.NotFound, "
                            f"got {code or 'success (an instance was launched)'}")
        for kw in ({"ExecutableUsers": ["self"]}, {}, {"Owners": [OWNER[2]]}):
            listed = [i["ImageId"] for i in ec2_east2.describe_images(**kw)["Images"]]
            if east in listed:
                problems.append(f"describe_images({kw}) as {SHARED[2]} lists the unshared {east}")
        code = error_code(ec2_east2.describe_images, ImageIds=[east])
        if code != "InvalidAMIID.NotFound":
            problems.append(f"describe_images(ImageIds=[{east}]) as {SHARED[2]}: expected "
                            f"InvalidAMIID.NotFound, got {code or 'success'}")
        before = {i["ImageId"] for i in ec2_west2.describe_images(Owners=["self"])["Images"]}
        code = error_code(ec2_west2.copy_image, SourceImageId=east, SourceRegion=EAST, Name=f"stolen-{tag}")
        after = {i["ImageId"] for i in ec2_west2.describe_images(Owners=["self"])["Images"]}
        if code is None or after != before:
            problems.append(f"{SHARED[2]} copied the unshared {east}: error {code}, its images "
                            f"{sorted(before)} -> {sorted(after)}")
        elif code != "InvalidAMIID.NotFound":
            problems.append(f"{SHARED[2]} copying the unshared {east}: expected InvalidAMIID.NotFound, "
                            f"got {code}")

    def terminate(problems):
        pairs = []
        if "instance2" in state:
            pairs.append((ec2_west2, state["instance2"]))
        for iid in config.get("terminate", []):
            pairs.append((ec2_east, iid))
        for ec2, iid in pairs:
            r = ec2.terminate_instances(InstanceIds=[iid])["TerminatingInstances"]
            if [t["InstanceId"] for t in r] != [iid] or r[0]["CurrentState"]["Name"] not in (
                    "shutting-down", "terminated"):
                problems.append(f"TerminateInstances({iid}) answered {r}")
        for ec2, iid in pairs:
            ec2.get_waiter("instance_terminated").wait(InstanceIds=[iid], WaiterConfig=fast)
            st = ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]["State"]
            if st != {"Code": 48, "Name": "terminated"}:
                problems.append(f"{iid} after the instance_terminated waiter: {st}")
            else:
                result["terminated"].append(iid)

    step("create_image (NoReboot=False) + waiter image_available", create_image)
    step(f"copy_image to {WEST} + waiter image_available; invisible in {EAST}", copy_image, needs=["east"])
    step(f"modify_image_attribute launchPermission Add {SHARED[2]}", share, needs=["west"])
    step(f"{SHARED[2]} sees the shared image (ExecutableUsers=[self])", shared_visible, needs=["shared"])
    step(f"{SHARED[2]} run_instances of the shared image + waiter instance_running", shared_launch,
         needs=["shared"])
    step(f"{SHARED[2]} send_command + waiter command_executed reads the captured disk", shared_command,
         needs=["instance2"])
    step(f"the unshared {EAST} image is refused to {SHARED[2]}", unshared_refused, needs=["east"])
    step("terminate_instances + waiter instance_terminated", terminate)
    emit({"result": result})
    return 0


# --------------------------------------------------------------------------
# The driver half

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
            found.append((int(pid), cmd[:200]))
    return found


class StepFailed(Exception):
    pass


class Scenario:
    def __init__(self, emulator, image):
        self.emulator = emulator
        self.image = image
        self.tmp = tempfile.mkdtemp(prefix="kiln-emu-scenario-")
        self.state_dir = os.path.join(self.tmp, "state")
        self.log_path = os.path.join(self.tmp, "emulator.log")
        self.proc = None
        self.url = None
        self.n = 0
        self.failures = 0
        self.state = {}
        self.marker = "kiln-scenario-" + secrets.token_hex(6)

    # ---- TAP

    def report(self, name, problems, seconds=None, skip=None):
        self.n += 1
        if skip:
            print(f"ok {self.n} - {name} # SKIP {skip}", flush=True)
            return
        took = f" ({seconds:.0f} s)" if seconds is not None and seconds >= 1 else ""
        if problems:
            self.failures += 1
            print(f"not ok {self.n} - {name}{took}")
            for p in problems:
                for line in str(p).splitlines() or [""]:
                    print(f"  # {line}")
        else:
            print(f"ok {self.n} - {name}{took}")
        sys.stdout.flush()

    def step(self, name, fn, needs=()):
        missing = [k for k in needs if k not in self.state]
        if missing:
            self.report(name, [], skip=f"needs {', '.join(missing)} from a step that failed")
            return False
        problems = []
        t0 = time.time()
        try:
            fn(problems)
        except StepFailed as e:
            problems.append(str(e))
        except subprocess.TimeoutExpired as e:
            problems.append(f"timed out after {e.timeout} s: {' '.join(map(str, e.cmd))[:300]}")
        except Exception as e:  # a crash of the test itself is a failure, with its reason
            problems.append(f"{type(e).__name__}: {e}")
        if problems and self.proc is not None and self.proc.poll() is not None:
            problems.append(f"the emulator exited with status {self.proc.returncode}")
        self.report(name, problems, time.time() - t0)
        return not problems

    # ---- the emulator

    def start(self):
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([self.emulator, "--instances", "qemu", "--state-dir", self.state_dir,
                                      "--listen", "127.0.0.1:0"],
                                     stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL)
        log.close()
        deadline = time.time() + 60
        line = b""
        while time.time() < deadline and not line.endswith(b"\n"):
            ready, _, _ = select.select([self.proc.stdout], [], [], 1)
            if ready:
                chunk = os.read(self.proc.stdout.fileno(), 1)
                if not chunk:
                    break
                line += chunk
            elif self.proc.poll() is not None:
                break
        text = line.decode(errors="replace").strip()
        m = re.match(r"^kiln-emulator: listening on (http://127\.0\.0\.1:(\d+))\b", text)
        if not m:
            raise StepFailed(f"no ready line within 60 s (got {text!r}, exit status {self.proc.poll()}); "
                             f"log:\n{self.log_tail()}")
        self.url = m.group(1)
        # Whatever the emulator prints later goes to the log, so its stdout never fills up.
        threading.Thread(target=self.drain, args=(self.proc.stdout,), daemon=True).start()
        # The ready line means the listener answers.
        socket.create_connection(("127.0.0.1", int(m.group(2))), timeout=5).close()

    def drain(self, stream):
        with open(self.log_path, "ab") as log:
            for chunk in iter(lambda: os.read(stream.fileno(), 65536), b""):
                log.write(b"[stdout] " + chunk)
                log.flush()

    def stop(self, problems):
        """SIGTERM: a graceful stop, status 0, no guest left behind."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            status = self.proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            problems.append(f"the emulator did not stop within 120 s of SIGTERM; log:\n{self.log_tail()}")
            return
        if status != 0:
            problems.append(f"the emulator exited with status {status} after SIGTERM; log:\n{self.log_tail()}")
        time.sleep(1)
        left = qemu_processes(self.tmp)
        if left:
            problems.append(f"QEMU outlived the emulator: {left}")

    def log_tail(self, n=2500):
        try:
            return tail(open(self.log_path, "rb").read(), n)
        except OSError:
            return "(no log)"

    def close(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for pid, _ in qemu_processes(self.tmp):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        shutil.rmtree(self.tmp, ignore_errors=True)

    # ---- clients

    def aws(self, args, cli="debian", who=OWNER, region=EAST, timeout=120, check=True):
        """Runs an AWS CLI; returns (status, parsed JSON or text, stderr)."""
        env = clean_env(self.tmp, AWS_ACCESS_KEY_ID=who[0], AWS_SECRET_ACCESS_KEY=who[1],
                        AWS_DEFAULT_REGION=region)
        if cli == "debian":
            argv = [DEBIAN_AWS, "--endpoint-url", self.url]
        else:
            argv = [self.pip_aws]
            env["AWS_ENDPOINT_URL"] = self.url
        argv += ["--output", "json", "--cli-read-timeout", "120", "--cli-connect-timeout", "10"] + list(args)
        p = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=timeout,
                           stdin=subprocess.DEVNULL)
        out = p.stdout
        try:
            out = json.loads(p.stdout) if p.stdout.strip() else {}
        except ValueError:
            pass
        if check and p.returncode != 0:
            shown = " ".join(a for a in argv[1:] if not a.startswith("http"))
            raise StepFailed(f"`aws {shown}` ({cli} CLI, {who[2]}, {region}) exited {p.returncode}:\n"
                             f"{tail(p.stderr, 1500)}{tail(p.stdout, 1000) if p.stdout else ''}")
        return p.returncode, out, p.stderr

    def find_pip_aws(self):
        """The pip AWS CLI (v1) on PATH: the first `aws` that is not Debian's
        and reports aws-cli/1.x.  Returns (path, version, why): path None and
        why the reason when there is none (Debian ships only v2 and a fresh
        machine may not reach PyPI: the step is then skipped, as the other
        emulator tests skip it); an `aws` whose --version itself fails is
        returned, so the round trip reports it broken rather than absent."""
        seen = []
        for d in os.environ.get("PATH", "").split(os.pathsep):
            cand = os.path.join(d, "aws")
            if os.access(cand, os.X_OK) and os.path.realpath(cand) != os.path.realpath(DEBIAN_AWS):
                p = subprocess.run([cand, "--version"], capture_output=True, text=True, timeout=60,
                                   env=clean_env(self.tmp))
                version = (p.stdout + p.stderr).strip()
                if p.returncode != 0:
                    return cand, f"(--version exited {p.returncode}: {version[-300:]})", None
                if version.startswith("aws-cli/1."):
                    return cand, version, None
                seen.append(f"{cand}: {version.split()[0] if version else '?'}")
        why = "no `aws` other than /usr/bin/aws reporting aws-cli/1.x on PATH"
        return None, None, why + (f" (found {', '.join(seen)})" if seen else "")

    def boto3_interpreters(self):
        """Every python (this one, Debian's) that has boto3, once each."""
        found, seen = [], set()
        for py in (sys.executable, DEBIAN_PYTHON):
            if not py or not os.access(py, os.X_OK):
                continue
            try:
                p = subprocess.run([py, "-c", "import sys, boto3, botocore; print(sys.version.split()[0], "
                                              "boto3.__version__, botocore.__version__, sys.executable)"],
                                   capture_output=True, text=True, timeout=60, env=clean_env(self.tmp))
            except subprocess.TimeoutExpired:
                continue
            if p.returncode != 0:
                continue
            pyver, b3, bc, exe = p.stdout.split()
            key = os.path.realpath(exe)
            if key in seen:
                continue
            seen.add(key)
            found.append((py, f"boto3 {b3}/botocore {bc}, python {pyver}"))
        return found

    def run_boto3(self, python, label, terminate):
        """The boto3 half under python; its steps become TAP steps here."""
        config = {"endpoint": self.url, "tag": secrets.token_hex(3), "marker": self.marker,
                  "image": self.state["image"], "instance": self.state["instance"], "terminate": terminate}
        proc = subprocess.Popen([python, os.path.abspath(__file__), "--boto3", json.dumps(config)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=clean_env(self.tmp, PYTHONUNBUFFERED="1"), stdin=subprocess.DEVNULL)
        timer = threading.Timer(900, proc.kill)
        timer.start()
        errs = []
        drain = threading.Thread(target=lambda: errs.append(proc.stderr.read()), daemon=True)
        drain.start()
        result = None
        try:
            t0 = time.time()
            for line in proc.stdout:
                try:
                    obj = json.loads(line)
                except ValueError:
                    print(f"# {label}: {line.rstrip()}")
                    continue
                if "result" in obj:
                    result = obj["result"]
                elif "skip" in obj:
                    self.report(f"{label}: {obj['step']}", [], skip=obj["skip"])
                else:
                    self.report(f"{label}: {obj['step']}", obj["problems"], obj.get("seconds"))
            proc.wait()
            drain.join(10)
        finally:
            timer.cancel()
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        if result is None or proc.returncode != 0:
            self.report(f"{label}: the boto3 run ended", [
                f"status {proc.returncode} after {time.time() - t0:.0f} s"
                f"{' (killed after 900 s)' if proc.returncode == -9 else ''}; stderr:\n"
                f"{tail(''.join(errs), 2500)}"])
        return result

    # ---- the steps

    def s_start(self, problems):
        self.start()
        print(f"# {self.url} state {self.state_dir}")

    def s_import(self, problems):
        p = subprocess.run([self.emulator, "import-image", self.image, "--name", "kiln-scenario-base",
                            "--state-dir", self.state_dir, "--region", EAST, "--account", OWNER[2]],
                           capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
        image = p.stdout.strip()
        if p.returncode != 0 or not AMI_RE.match(image):
            raise StepFailed(f"import-image exited {p.returncode}, printed {p.stdout!r}:\n{tail(p.stderr)}")
        _, out, _ = self.aws(["ec2", "describe-images", "--image-ids", image])
        imgs = out.get("Images", [])
        if len(imgs) != 1 or imgs[0].get("State") != "available" or imgs[0].get("OwnerId") != OWNER[2] \
                or imgs[0].get("Public") is not False or imgs[0].get("Name") != "kiln-scenario-base":
            raise StepFailed(f"the imported image as described: {out}")
        self.state["image"] = image

    def s_run(self, problems):
        _, out, _ = self.aws(["ec2", "run-instances", "--image-id", self.state["image"], "--instance-type",
                              "t3.micro", "--count", "1", "--tag-specifications",
                              "ResourceType=instance,Tags=[{Key=Name,Value=kiln-scenario}]"])
        insts = out.get("Instances", [])
        if len(insts) != 1 or not insts[0].get("InstanceId", "").startswith("i-"):
            raise StepFailed(f"RunInstances answered {out}")
        inst = insts[0]
        self.state["instance"] = inst["InstanceId"]
        if inst.get("State", {}).get("Name") not in ("pending", "running") \
                or inst.get("ImageId") != self.state["image"] or out.get("OwnerId") != OWNER[2]:
            problems.append(f"RunInstances answered {out}")

    def s_wait_running(self, problems):
        iid = self.state["instance"]
        self.aws(["ec2", "wait", "instance-running", "--instance-ids", iid], timeout=660)
        _, out, _ = self.aws(["ec2", "describe-instances", "--instance-ids", iid])
        inst = out["Reservations"][0]["Instances"][0]
        tags = {t["Key"]: t["Value"] for t in inst.get("Tags", [])}
        if inst["State"] != {"Code": 16, "Name": "running"} or tags.get("Name") != "kiln-scenario":
            problems.append(f"the instance as described: {inst}")
        self.state["running"] = True

    def send(self, cli, iid, commands, region=EAST, who=OWNER, expect_failure=False, targets=None, extra=()):
        """send-command (to iid, or to the instances Targets names, which
        must be just iid; extra: more send-command options), wait
        command-executed, get-command-invocation."""
        to = ["--targets", json.dumps(targets)] if targets else ["--instance-ids", iid]
        _, out, _ = self.aws(["ssm", "send-command", "--document-name", "AWS-RunShellScript"] + to +
                             ["--comment", "emulator_scenario", "--parameters", json.dumps({"commands": commands})] +
                             list(extra), cli=cli, region=region, who=who)
        cid = out.get("Command", {}).get("CommandId")
        if not cid:
            raise StepFailed(f"SendCommand answered {out}")
        if targets and out["Command"].get("Targets") != targets:
            raise StepFailed(f"SendCommand with Targets {targets}: the command names {out['Command'].get('Targets')}")
        st, _, err = self.aws(["ssm", "wait", "command-executed", "--command-id", cid, "--instance-id", iid],
                              cli=cli, region=region, who=who, timeout=300, check=False)
        problems = []
        if not expect_failure and st != 0:
            problems.append(f"`aws ssm wait command-executed` exited {st}: {tail(err, 800)}")
        if expect_failure and (st == 0 or "Failed" not in err):
            problems.append(f"`aws ssm wait command-executed` on a failing command exited {st} "
                            f"(expected the waiter's terminal failure on Failed): {tail(err, 800)}")
        _, inv, _ = self.aws(["ssm", "get-command-invocation", "--command-id", cid, "--instance-id", iid],
                             cli=cli, region=region, who=who)
        return cid, inv, problems

    def s_command(self, problems):
        iid = self.state["instance"]
        host_name = os.uname().nodename
        host_cmdline = open("/proc/cmdline").read().strip()
        cid, inv, probs = self.send("debian", iid, [
            "echo guest-hostname=$(uname -n)",
            "echo guest-cmdline=$(cat /proc/cmdline)",
            "echo sum=$((6 * 7))",
            "echo to-stderr >&2",
            f"echo {self.marker} > /etc/kiln-scenario-marker",
            "sync",
        ])
        problems += probs
        out = inv.get("StandardOutputContent", "")
        m_host = re.search(r"^guest-hostname=(.*)$", out, re.M)
        m_cmd = re.search(r"^guest-cmdline=(.*)$", out, re.M)
        if inv.get("Status") != "Success" or inv.get("StatusDetails") != "Success" \
                or inv.get("ResponseCode") != 0:
            problems.append(f"the invocation: {inv}")
        if not m_host or not m_host.group(1) or m_host.group(1) == host_name:
            problems.append(f"no guest hostname (the host is {host_name!r}) in stdout {out!r}")
        if not m_cmd or m_cmd.group(1).strip() == host_cmdline or "root=" not in m_cmd.group(1):
            problems.append(f"no guest kernel command line (the host's is {host_cmdline!r}) in stdout {out!r}")
        if "sum=42" not in out:
            problems.append(f"the shell did not evaluate $((6 * 7)): stdout {out!r}")
        if inv.get("StandardErrorContent") != "to-stderr\n":
            problems.append(f"stderr: expected 'to-stderr\\n', got {inv.get('StandardErrorContent')!r}")
        if inv.get("InstanceId") != iid or inv.get("CommandId") != cid \
                or inv.get("DocumentName") != "AWS-RunShellScript":
            problems.append(f"the invocation names: {inv}")
        if m_cmd:
            self.state["guest_cmdline"] = m_cmd.group(1).strip()
        self.state["commands"] = [{"region": EAST, "account": "owner", "command": cid, "instance": iid,
                                   "stdout": out, "status": "Success", "code": 0}]

    def s_failing(self, problems):
        iid = self.state["instance"]
        cid, inv, probs = self.send("debian", iid, ["echo before-failure", "echo failing >&2", "exit 3",
                                                    "echo after-exit"], expect_failure=True)
        problems += probs
        out = inv.get("StandardOutputContent", "")
        if inv.get("Status") != "Failed" or inv.get("StatusDetails") != "Failed" or inv.get("ResponseCode") != 3:
            problems.append(f"expected Status Failed, ResponseCode 3: {inv}")
        if "before-failure" not in out or "after-exit" in out:
            problems.append(f"stdout of the failing command: {out!r}")
        if "failing" not in inv.get("StandardErrorContent", ""):
            problems.append(f"stderr of the failing command: {inv.get('StandardErrorContent')!r}")
        self.state.setdefault("commands", []).append({"region": EAST, "account": "owner", "command": cid,
                                                      "instance": iid, "stdout": out, "status": "Failed",
                                                      "code": 3})

    def s_truncated(self, problems):
        # 3,000 numbered lines of 10 characters on stdout (30,000) and 1,000
        # on stderr (10,000): GetCommandInvocation shows the first 24,000 and
        # 8,000 characters, as AWS does, and the plugin's Output in
        # list-command-invocations --details the first 2,500 of stdout.  Sent
        # by tag (Targets) rather than by id, which costs no extra guest time,
        # and with --output-s3-bucket-name / --output-s3-key-prefix: the whole
        # of both streams is then in the bucket, at the agent's keys, and
        # StandardOutputUrl / StandardErrorUrl name those objects.
        iid = self.state["instance"]
        bucket, prefix = "kiln-scenario-ssm-output", "scenario/output"
        self.aws(["s3api", "create-bucket", "--bucket", bucket])
        cid, inv, probs = self.send("debian", iid, [
            "i=0; while [ $i -lt 3000 ]; do printf '%09d\\n' $i; i=$((i+1)); done",
            "i=0; while [ $i -lt 1000 ]; do printf 'e%08d\\n' $i; i=$((i+1)); done >&2",
        ], targets=[{"Key": "tag:Name", "Values": ["kiln-scenario"]}],
            extra=["--output-s3-bucket-name", bucket, "--output-s3-key-prefix", prefix])
        problems += probs
        if inv.get("Status") != "Success" or inv.get("InstanceId") != iid:
            problems.append(f"the invocation: { {k: v for k, v in inv.items() if 'Content' not in k} }")
        out, err = inv.get("StandardOutputContent", ""), inv.get("StandardErrorContent", "")
        want_out = "".join(f"{i:09d}\n" for i in range(2400))
        want_err = "".join(f"e{i:08d}\n" for i in range(800))
        if out != want_out:
            problems.append(f"StandardOutputContent: expected the first 24,000 of 30,000 characters (lines 0-2399), "
                            f"got {len(out)}: {out[:40]!r}...{out[-40:]!r}")
        if err != want_err:
            problems.append(f"StandardErrorContent: expected the first 8,000 of 10,000 characters, got {len(err)}: "
                            f"{err[:40]!r}...{err[-40:]!r}")
        _, listed, _ = self.aws(["ssm", "list-command-invocations", "--command-id", cid, "--details"])
        plugins = [p for i in listed.get("CommandInvocations", []) for p in i.get("CommandPlugins", [])]
        if len(plugins) != 1 or plugins[0].get("Output") != want_out[:2500]:
            problems.append(f"list-command-invocations --details: expected one plugin whose Output is the first "
                            f"2,500 characters of stdout, got {[(p.get('Name'), len(p.get('Output', ''))) for p in plugins]}")
        base = f"{prefix}/{cid}/{iid}/awsrunShellScript/0.awsrunShellScript"
        full = {"stdout": "".join(f"{i:09d}\n" for i in range(3000)),
                "stderr": "".join(f"e{i:08d}\n" for i in range(1000))}
        for stream, field in (("stdout", "StandardOutputUrl"), ("stderr", "StandardErrorUrl")):
            url = f"https://s3.{EAST}.amazonaws.com/{bucket}/{base}/{stream}"
            if inv.get(field) != url:
                problems.append(f"{field}: expected {url}, got {inv.get(field)!r}")
            path = os.path.join(self.tmp, f"ssm-output-{stream}")
            st, _, get_err = self.aws(["s3api", "get-object", "--bucket", bucket, "--key", f"{base}/{stream}",
                                       path], check=False)
            got = open(path, encoding="utf-8").read() if st == 0 and os.path.exists(path) else None
            if got != full[stream]:
                problems.append(f"s3://{bucket}/{base}/{stream}: expected the whole {len(full[stream]):,} "
                                f"characters, got " + (f"{len(got)}" if got is not None else
                                                       f"none: {tail(get_err, 400)}"))
        if plugins and (plugins[0].get("OutputS3BucketName"), plugins[0].get("OutputS3KeyPrefix"),
                        plugins[0].get("StandardOutputUrl")) != (bucket, prefix, inv.get("StandardOutputUrl")):
            problems.append(f"list-command-invocations --details: the plugin's output location is "
                            f"{ {k: v for k, v in plugins[0].items() if k.startswith(('OutputS3', 'Standard'))} }")
        _, cmds, _ = self.aws(["ssm", "list-commands", "--command-id", cid])
        cmd = (cmds.get("Commands") or [{}])[0]
        if (cmd.get("OutputS3BucketName"), cmd.get("OutputS3KeyPrefix"), cmd.get("OutputS3Region")) != \
                (bucket, prefix, EAST):
            problems.append(f"list-commands: the command's output location is "
                            f"{ {k: v for k, v in cmd.items() if k.startswith('OutputS3')} }")

    def s_agent(self, problems):
        iid = self.state["instance"]
        _, out, _ = self.aws(["ssm", "describe-instance-information"])
        infos = {i.get("InstanceId"): i for i in out.get("InstanceInformationList", [])}
        info = infos.get(iid)
        if not info or info.get("PingStatus") != "Online":
            problems.append(f"describe-instance-information: expected {iid} Online, got {out}")

    def s_console(self, problems):
        iid = self.state["instance"]
        _, out, _ = self.aws(["ec2", "get-console-output", "--instance-id", iid])
        text = out.get("Output", "") if isinstance(out, dict) else ""
        if out.get("InstanceId") != iid:
            problems.append(f"GetConsoleOutput answered for {out.get('InstanceId')!r}")
        if "Linux version" not in text:
            problems.append(f"no 'Linux version' in the console output ({len(text)} characters): "
                            f"{text[:600]!r}")
        cmdline = self.state.get("guest_cmdline")
        if cmdline and f"Command line: {cmdline}" not in text:
            problems.append(f"the console output does not show the guest's kernel command line {cmdline!r}")
        try:
            base64.b64decode(text, validate=True)
            if text:
                problems.append("the CLI left the console output base64-encoded")
        except ValueError:
            pass

    def s_restart(self, problems):
        self.stop(problems)
        if problems:
            return
        self.proc = None
        self.start()
        print(f"# restarted on {self.url}")
        self.state["restarted"] = True

    def s_state_images(self, problems):
        images = self.state["images"]
        for region, ids in ((EAST, [self.state["image"]] + [r["east"] for r in images if "east" in r]),
                            (WEST, [r["west"] for r in images if "west" in r])):
            if not ids:
                continue
            _, out, _ = self.aws(["ec2", "describe-images", "--image-ids"] + ids, region=region)
            got = {i["ImageId"]: i.get("State") for i in out.get("Images", [])}
            if got != {i: "available" for i in ids}:
                problems.append(f"images in {region} after the restart: expected {ids} available, got {got}")
        for r in images:
            if "west" not in r:
                continue
            _, out, _ = self.aws(["ec2", "describe-image-attribute", "--image-id", r["west"], "--attribute",
                                  "launchPermission"], region=WEST)
            if out.get("LaunchPermissions") != [{"UserId": SHARED[2]}]:
                problems.append(f"launchPermission of {r['west']} after the restart: {out}")
            code, _, err = self.aws(["ec2", "describe-images", "--image-ids", r["west"]], region=EAST,
                                    check=False)
            if code == 0 or "InvalidAMIID.NotFound" not in err:
                problems.append(f"the {WEST} copy {r['west']} described in {EAST} after the restart: "
                                f"status {code}, {tail(err, 300)}")
        if any("west" in r for r in images):
            _, out, _ = self.aws(["ec2", "describe-images", "--executable-users", "self"], who=SHARED,
                                 region=WEST)
            listed = {i["ImageId"] for i in out.get("Images", [])}
            wanted = {r["west"] for r in images if "west" in r}
            if not wanted <= listed:
                problems.append(f"{SHARED[2]} no longer sees the shared images {sorted(wanted)}: {sorted(listed)}")
            _, out, _ = self.aws(["ec2", "describe-images", "--executable-users", "self"], who=SHARED,
                                 region=EAST)
            if self.state["image"] in {i["ImageId"] for i in out.get("Images", [])}:
                problems.append(f"{SHARED[2]} sees the unshared {self.state['image']} after the restart")

    def s_state_instances(self, problems):
        for region, who, iid in self.state["terminated"]:
            code, out, err = self.aws(["ec2", "describe-instances", "--instance-ids", iid], who=who,
                                      region=region, check=False)
            if code != 0:
                problems.append(f"{iid} ({who[2]}, {region}) after the restart: {tail(err, 400)}")
                continue
            st = out["Reservations"][0]["Instances"][0]["State"]
            if st != {"Code": 48, "Name": "terminated"}:
                problems.append(f"{iid} ({who[2]}, {region}) after the restart: {st}")

    def s_state_commands(self, problems):
        for c in self.state["commands"]:
            who = OWNER if c["account"] == "owner" else SHARED
            _, inv, _ = self.aws(["ssm", "get-command-invocation", "--command-id", c["command"],
                                  "--instance-id", c["instance"]], who=who, region=c["region"])
            if inv.get("StandardOutputContent") != c["stdout"] or inv.get("Status") != c["status"] \
                    or inv.get("ResponseCode") != c["code"]:
                problems.append(f"command {c['command']} after the restart: expected {c['status']} "
                                f"{c['code']} {c['stdout']!r}, got {inv}")
        # The listing keeps them too.
        _, out, _ = self.aws(["ssm", "list-command-invocations", "--details"])
        listed = {i.get("CommandId") for i in out.get("CommandInvocations", [])}
        missing = [c["command"] for c in self.state["commands"] if c["region"] == EAST and c["account"] == "owner"
                   and c["command"] not in listed]
        if missing:
            problems.append(f"list-command-invocations after the restart lacks {missing}: {sorted(listed)}")

    def s_pip_cli(self, problems):
        west = self.state["west_for_pip"]
        _, out, _ = self.aws(["ec2", "describe-images", "--owners", "self"], cli="pip", region=WEST)
        got = {i["ImageId"]: i.get("State") for i in out.get("Images", [])}
        if got.get(west) != "available":
            problems.append(f"describe-images --owners self in {WEST}: {got}")
        _, out, _ = self.aws(["ec2", "run-instances", "--image-id", west, "--instance-type", "t3.micro",
                              "--count", "1"], cli="pip", region=WEST)
        iid = out["Instances"][0]["InstanceId"]
        self.state["pip_instance"] = iid
        self.aws(["ec2", "wait", "instance-running", "--instance-ids", iid], cli="pip", region=WEST,
                 timeout=660)
        _, out, _ = self.aws(["ec2", "describe-instances", "--filters", "Name=instance-state-name,Values=running"],
                             cli="pip", region=WEST)
        running = [i["InstanceId"] for r in out.get("Reservations", []) for i in r["Instances"]]
        if running != [iid]:
            problems.append(f"describe-instances (running) in {WEST}: expected [{iid}], got {running}")
        cid, inv, probs = self.send("pip", iid, ["cat /etc/kiln-scenario-marker", "echo pip-round-trip"],
                                    region=WEST)
        problems += probs
        out_text = inv.get("StandardOutputContent", "")
        if inv.get("Status") != "Success" or self.marker not in out_text or "pip-round-trip" not in out_text:
            problems.append(f"the command through the pip CLI: {inv}")
        self.aws(["ec2", "terminate-instances", "--instance-ids", iid], cli="pip", region=WEST)
        self.aws(["ec2", "wait", "instance-terminated", "--instance-ids", iid], cli="pip", region=WEST,
                 timeout=660)
        _, out, _ = self.aws(["ec2", "describe-instances", "--instance-ids", iid], cli="pip", region=WEST)
        st = out["Reservations"][0]["Instances"][0]["State"]
        if st != {"Code": 48, "Name": "terminated"}:
            problems.append(f"{iid} after wait instance-terminated: {st}")
        _, out, _ = self.aws(["ec2", "describe-instances", "--instance-ids", self.state["instance"]], cli="pip")
        st = out["Reservations"][0]["Instances"][0]["State"]
        if st != {"Code": 48, "Name": "terminated"}:
            problems.append(f"{self.state['instance']} in {EAST} through the pip CLI: {st}")

    def s_final_stop(self, problems):
        self.stop(problems)
        self.proc = None

    def run(self):
        self.pip_aws, pip_version, no_pip_why = self.find_pip_aws()
        interpreters = self.boto3_interpreters()
        debian = subprocess.run([DEBIAN_AWS, "--version"], capture_output=True, text=True, timeout=60,
                                env=clean_env(self.tmp)) if os.access(DEBIAN_AWS, os.X_OK) else None
        print(f"# image {self.image}")
        print(f"# Debian CLI: {(debian.stdout + debian.stderr).strip() if debian else 'missing'}")
        print(f"# pip CLI: {self.pip_aws} {pip_version}" if self.pip_aws else f"# pip CLI: none: {no_pip_why}")
        for py, label in interpreters:
            print(f"# boto3: {py}: {label}")
        sys.stdout.flush()

        if not self.step("kiln-emulator starts (qemu, state dir, port 0)", self.s_start):
            return
        self.state["started"] = True
        if debian is None or debian.returncode != 0:
            self.report("Debian's AWS CLI is installed", [f"{DEBIAN_AWS} is missing or broken"])
            return
        self.step("import-image registers $KILN_TEST_IMAGE as a private AMI", self.s_import)
        self.step("aws ec2 run-instances (Debian CLI)", self.s_run, needs=["image"])
        self.step("aws ec2 wait instance-running", self.s_wait_running, needs=["instance"])
        self.step("aws ssm send-command + wait command-executed + get-command-invocation: guest output",
                  self.s_command, needs=["running"])
        self.step("a command exiting 3 is Failed with ResponseCode 3", self.s_failing, needs=["running"])
        self.step("send-command by Targets (tag:Name): stdout cut at 24,000 characters, stderr at 8,000, "
                  "plugin Output at 2,500; the whole of both in S3 (--output-s3-bucket-name)", self.s_truncated,
                  needs=["running"])
        self.step("aws ssm describe-instance-information shows the agent Online", self.s_agent,
                  needs=["running"])
        self.step("aws ec2 get-console-output shows the guest's kernel", self.s_console, needs=["running"])

        self.state["images"] = []
        self.state["terminated"] = []
        if not interpreters:
            self.report("boto3 is importable by some python", [f"neither {sys.executable} nor {DEBIAN_PYTHON} "
                                                               f"can import boto3"])
        elif "running" in self.state and "commands" in self.state:
            for k, (py, label) in enumerate(interpreters):
                last = k == len(interpreters) - 1
                result = self.run_boto3(py, label, [self.state["instance"]] if last else [])
                if result:
                    self.state["images"].append(result["images"])
                    for iid in result["terminated"]:
                        who, region = (OWNER, EAST) if iid == self.state["instance"] else (SHARED, WEST)
                        self.state["terminated"].append((region, who, iid))
                    self.state["commands"] += [dict(c, status="Success", code=0) for c in result["commands"]
                                               if "stdout" in c]
                    if "west" in result["images"]:
                        self.state["west_for_pip"] = result["images"]["west"]
        else:
            self.report("boto3 scenario", [], skip="needs a running instance from a step that failed")
        # Whatever the boto3 runs did, nothing is left running before the restart.
        if "instance" in self.state and not any(t[2] == self.state["instance"] for t in self.state["terminated"]):
            self.aws(["ec2", "terminate-instances", "--instance-ids", self.state["instance"]], check=False)

        if not self.step("SIGTERM stops the emulator; it restarts on the same state directory", self.s_restart):
            return
        self.step("after the restart: images in both regions, available, launch permissions kept",
                  self.s_state_images, needs=["image"])
        self.step("after the restart: terminated instances are still terminated", self.s_state_instances)
        self.step("after the restart: command invocations keep their status and output", self.s_state_commands,
                  needs=["commands"])
        if not self.pip_aws:
            self.report("pip AWS CLI (v1, AWS_ENDPOINT_URL) round trip", [], skip=no_pip_why)
        else:
            self.step(f"pip AWS CLI ({pip_version.split()[0]}, AWS_ENDPOINT_URL): describe-images, "
                      f"run-instances, send-command round trip, terminate", self.s_pip_cli,
                      needs=["west_for_pip", "commands"])
        self.step("SIGTERM stops the emulator with status 0 and no QEMU left", self.s_final_stop)


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--boto3":
        return boto3_main(json.loads(sys.argv[2]))
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    print("TAP version 13", flush=True)
    image = os.environ.get("KILN_TEST_IMAGE")
    if not image:
        print("1..0 # SKIP KILN_TEST_IMAGE is not set")
        return 0
    if not os.access(image, os.R_OK):
        print(f"1..0 # SKIP image '{image}' is not readable")
        return 0
    if not shutil.which("qemu-system-x86_64"):
        print("1..0 # SKIP qemu-system-x86_64 is not installed")
        return 0

    # meson test sends SIGTERM on timeout: unwind so the emulator and its guests die with us.
    def on_term(signum, frame):
        raise SystemExit(128 + signum)
    signal.signal(signal.SIGTERM, on_term)

    sc = Scenario(os.path.abspath(sys.argv[1]), os.path.abspath(image))
    t0 = time.time()
    try:
        sc.run()
    except SystemExit:
        sc.report("the scenario was interrupted", ["SIGTERM"])
        raise
    finally:
        failed = sc.failures
        if failed:
            print("# emulator log (tail):")
            for line in sc.log_tail(4000).splitlines() or ["(empty)"]:
                print(f"#   {line}")
        sc.close()
        print(f"1..{sc.n}")
        print(f"# {time.time() - t0:.0f} s, {failed} failed", flush=True)
    return 1 if sc.failures else 0


if __name__ == "__main__":
    sys.exit(main())
