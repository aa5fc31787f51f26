#!/usr/bin/env python3
"""kiln-emulator's EBS direct APIs on the wire, run by `meson test` (suite
emulator, TAP).

usage: ebs_protocol.py KILN_EMULATOR [FILTER]

One emulator in mock mode (--instances mock) with a --state-dir (the test
reads the snapshots' disk files and `import-image` needs one) and an
--accounts file giving each client its own account.  Driven by:
  boto3    the python running this test (pip boto3/botocore 1.43 on these
           machines): the whole API, every negative, pagination, lineage,
           qcow2-backed snapshots from import-image, Timeout, RegisterImage
  wire     requests signed by botocore's SigV4Auth and sent with http.client:
           rest-json error shape, SigV4 failures for service ebs, unknown
           paths and methods, the double URI-encoding of non-S3 paths
  pip aws  the `aws` on PATH (CLI v1, AWS_ENDPOINT_URL)
  deb aws  Debian's /usr/bin/aws (CLI v2.9, --endpoint-url)
  deb boto3 Debian's python3-boto3 1.26 under /usr/bin/python3
A FILTER argument runs only the cases whose name contains it.  Reuses the
process, signing and TAP helpers of emulator_protocol.py.
"""
import base64
import hashlib
import json
import os
import re
import shutil
import socket
import sqlite3
import subprocess
import sys
import threading
import time

import boto3
import botocore
from botocore.config import Config
from botocore.exceptions import ClientError

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from emulator_protocol import Emulator, Fail, Skip, expect, pip_aws, protocol_setup, send, sign  # noqa: E402

REGION = "us-east-1"
BLOCK = 524288
GIB = 1 << 30
ACCOUNTS = {
    "boto3": ("333333333333", "AKIAEBSBOTO3", "ebs-boto3-secret"),
    "other": ("111111111111", "test2", "test2"),
    "pipcli": ("555555555555", "AKIAEBSPIP", "ebs-pip-secret"),
    "debcli": ("444444444444", "AKIAEBSDEB", "ebs-deb-secret"),
    "debboto": ("666666666666", "AKIAEBSDEBBOTO", "ebs-debboto-secret"),
}
CLIENT_CONFIG = Config(retries={"total_max_attempts": 1}, connect_timeout=10, read_timeout=120)
MISSING = "snap-0123456789abcdef0"
STATE = {}


def b64sha(data):
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


def aggregate(blocks):
    """LINEAR: base64 SHA-256 over the blocks' SHA-256 digests in index order."""
    return base64.b64encode(hashlib.sha256(b"".join(hashlib.sha256(blocks[i]).digest()
                                                    for i in sorted(blocks))).digest()).decode()


def pattern(tag, n=BLOCK):
    """A block whose bytes say what it is."""
    unit = tag.encode()
    return (unit * (n // len(unit) + 1))[:n]


def session(name):
    _, key, secret = ACCOUNTS[name]
    return boto3.session.Session(aws_access_key_id=key, aws_secret_access_key=secret, region_name=REGION)


def ebs_error(fn, **kw):
    """(HTTP status, code, Reason, message) of the error fn raises; Fail if it succeeds."""
    try:
        fn(**kw)
    except ClientError as e:
        r = e.response
        expect(r.get("ResponseMetadata", {}).get("RequestId"), f"no request id on {r['Error']}")
        return r["ResponseMetadata"]["HTTPStatusCode"], r["Error"]["Code"], r.get("Reason"), r["Error"]["Message"]
    raise Fail(f"{getattr(fn, '__name__', fn)}({kw.get('SnapshotId', '')}) succeeded; expected an error")


def expect_ebs_error(got, status, code, reason=None, message_re=None):
    s, c, r, m = got
    expect((s, c) == (status, code), f"expected HTTP {status} {code}, got HTTP {s} {c} ({r}): {m}")
    if reason is not None:
        expect(r == reason, f"{code}: Reason {r!r}, expected {reason!r} ({m})")
    if message_re:
        expect(re.search(message_re, m), f"{code} message {m!r} does not match /{message_re}/")
    return f"{s} {c} {r}: {m}"


def put(ebs, sid, index, data, **kw):
    args = dict(SnapshotId=sid, BlockIndex=index, BlockData=data, DataLength=len(data), Checksum=b64sha(data),
                ChecksumAlgorithm="SHA256")
    args.update(kw)
    return ebs.put_snapshot_block(**args)


def all_blocks(ebs, sid, **kw):
    out, token = [], None
    while True:
        page = ebs.list_snapshot_blocks(SnapshotId=sid, **({"NextToken": token} if token else {}), **kw)
        out += page["Blocks"]
        token = page.get("NextToken")
        if not token:
            return out


def snapshot_state(ec2, sid):
    return ec2.describe_snapshots(SnapshotIds=[sid])["Snapshots"][0]


def disk_path(sid):
    return os.path.join(STATE["state_dir"], "disks", sid + ".raw")


def check_raw_disk(sid, size_gib, blocks):
    """The snapshot's disk is a sparse raw file of size_gib GiB holding blocks
    (index -> bytes) at index * 512 KiB."""
    path = disk_path(sid)
    expect(os.path.exists(path), f"no disk file {path}")
    st = os.stat(path)
    expect(st.st_size == size_gib * GIB, f"{path}: {st.st_size} bytes, expected {size_gib} GiB")
    expect(st.st_blocks * 512 < 64 * 1024 * 1024, f"{path}: {st.st_blocks * 512} bytes allocated: not sparse")
    info = json.loads(subprocess.run(["qemu-img", "info", "--output=json", "-f", "raw", path], check=True,
                                     capture_output=True, text=True).stdout)
    expect(info["format"] == "raw" and info["virtual-size"] == size_gib * GIB, f"qemu-img info: {info}")
    with open(path, "rb") as f:
        for index, data in blocks.items():
            f.seek(index * BLOCK)
            expect(f.read(BLOCK) == data, f"{path}: block {index} differs from what was put")
    return f"{path}: raw, {size_gib} GiB, {st.st_blocks * 512 // 1024} KiB allocated"


# ---- boto3 ----

def boto3_cases(tap, url):
    s = session("boto3")
    ebs = s.client("ebs", endpoint_url=url, config=CLIENT_CONFIG)
    ec2 = s.client("ec2", endpoint_url=url, config=CLIENT_CONFIG)
    o = session("other")
    other_ebs = o.client("ebs", endpoint_url=url, config=CLIENT_CONFIG)
    other_ec2 = o.client("ec2", endpoint_url=url, config=CLIENT_CONFIG)
    v = f"boto3 {boto3.__version__}"
    b = {}
    parent_blocks = {0: os.urandom(BLOCK), 1: bytes(BLOCK), 7: pattern("parent-7"), 2047: os.urandom(BLOCK)}
    child_blocks = {7: pattern("child-7"), 3000: pattern("child-3000")}

    def start():
        t0 = int(time.time())
        r = ebs.start_snapshot(VolumeSize=1, Description="kiln ebs parent", ClientToken="parent-token-1",
                               Tags=[{"Key": "Name", "Value": "ebs-parent"}, {"Key": "team", "Value": "kiln"}],
                               Timeout=60)
        expect(r["ResponseMetadata"]["HTTPStatusCode"] == 201, f"HTTP {r['ResponseMetadata']['HTTPStatusCode']}")
        sid = r["SnapshotId"]
        expect(re.fullmatch(r"snap-[0-9a-f]{17}", sid), f"SnapshotId {sid!r}")
        expect((r["OwnerId"], r["Status"], r["VolumeSize"], r["BlockSize"]) == (ACCOUNTS["boto3"][0], "pending", 1,
                                                                                BLOCK), f"reply {r}")
        expect(r["Description"] == "kiln ebs parent", f"Description {r.get('Description')!r}")
        expect({t["Key"]: t["Value"] for t in r.get("Tags", [])} == {"Name": "ebs-parent", "team": "kiln"},
               f"Tags {r.get('Tags')}")
        expect(abs(r["StartTime"].timestamp() - t0) < 60, f"StartTime {r['StartTime']}")
        b["parent"] = sid
        return f"{sid} pending, 1 GiB, block size {r['BlockSize']}"

    def idempotent():
        again = ebs.start_snapshot(VolumeSize=1, Description="kiln ebs parent", ClientToken="parent-token-1",
                                   Tags=[{"Key": "Name", "Value": "ebs-parent"}, {"Key": "team", "Value": "kiln"}],
                                   Timeout=60)
        expect(again["SnapshotId"] == b["parent"], f"same token gave {again['SnapshotId']}, not {b['parent']}")
        got = ebs_error(ebs.start_snapshot, VolumeSize=2, ClientToken="parent-token-1")
        return expect_ebs_error(got, 409, "ConflictException", message_re=b["parent"])

    def described_pending():
        snap = snapshot_state(ec2, b["parent"])
        expect(snap["State"] == "pending", f"describe-snapshots: {snap}")
        expect(snap["VolumeSize"] == 1 and snap["Description"] == "kiln ebs parent", f"describe-snapshots: {snap}")
        tags = {t["Key"]: t["Value"] for t in snap.get("Tags", [])}
        expect(tags.get("Name") == "ebs-parent", f"tags {tags}")
        expect(not other_ec2.describe_snapshots(Filters=[{"Name": "snapshot-id", "Values": [b["parent"]]}])
               ["Snapshots"], "another account sees the snapshot")
        return f"{snap['SnapshotId']} {snap['State']} {snap['Progress']}"

    def put_blocks():
        out = []
        for i, (index, data) in enumerate(sorted(parent_blocks.items())):
            r = put(ebs, b["parent"], index, data, Progress=25 * (i + 1))
            expect(r["ResponseMetadata"]["HTTPStatusCode"] == 201, f"block {index}: HTTP "
                   f"{r['ResponseMetadata']['HTTPStatusCode']}")
            expect(r["Checksum"] == b64sha(data) and r["ChecksumAlgorithm"] == "SHA256", f"block {index}: {r}")
            out.append(index)
        snap = snapshot_state(ec2, b["parent"])
        expect(snap["Progress"] == "100%" and snap["State"] == "pending", f"after x-amz-Progress 100: {snap}")
        return f"blocks {out} (block 1 all zeros), 201 each"

    def wrong_checksum():
        got = ebs_error(put, ebs=ebs, sid=b["parent"], index=3, data=pattern("three"),
                        Checksum=b64sha(b"something else"))
        return expect_ebs_error(got, 400, "ValidationException", "INVALID_PARAMETER_VALUE", r"(?i)checksum")

    def index_past_volume():
        got = ebs_error(put, ebs=ebs, sid=b["parent"], index=2048, data=pattern("past"))
        return expect_ebs_error(got, 400, "ValidationException", "INVALID_BLOCK", r"2048")

    def short_data():
        data = pattern("short", 1000)
        got = ebs_error(put, ebs=ebs, sid=b["parent"], index=4, data=data, DataLength=BLOCK)
        m1 = expect_ebs_error(got, 400, "ValidationException", "INVALID_PARAMETER_VALUE", r"1000")
        got = ebs_error(put, ebs=ebs, sid=b["parent"], index=4, data=data)
        expect_ebs_error(got, 400, "ValidationException", "INVALID_PARAMETER_VALUE", r"524288")
        return m1

    def unknown_snapshot():
        got = ebs_error(put, ebs=ebs, sid=MISSING, index=0, data=pattern("x"))
        m = expect_ebs_error(got, 404, "ResourceNotFoundException", "SNAPSHOT_NOT_FOUND", MISSING)
        got = ebs_error(ebs.list_snapshot_blocks, SnapshotId=MISSING)
        expect_ebs_error(got, 404, "ResourceNotFoundException", "SNAPSHOT_NOT_FOUND")
        got = ebs_error(ebs.complete_snapshot, SnapshotId="snap-NOT-HEX", ChangedBlocksCount=0)
        expect_ebs_error(got, 400, "ValidationException", "INVALID_SNAPSHOT_ID")
        return m

    def other_account():
        got = ebs_error(put, ebs=other_ebs, sid=b["parent"], index=5, data=pattern("intruder"))
        m = expect_ebs_error(got, 403, "AccessDeniedException", "UNAUTHORIZED_ACCOUNT", b["parent"])
        got = ebs_error(other_ebs.complete_snapshot, SnapshotId=b["parent"], ChangedBlocksCount=4)
        expect_ebs_error(got, 403, "AccessDeniedException", "UNAUTHORIZED_ACCOUNT")
        expect(snapshot_state(ec2, b["parent"])["State"] == "pending", "another account completed it")
        return m

    def reads_need_completed():
        got = ebs_error(ebs.list_snapshot_blocks, SnapshotId=b["parent"])
        return expect_ebs_error(got, 400, "ValidationException", "INVALID_SNAPSHOT_ID", r"pending")

    def register_pending():
        try:
            ec2.register_image(Name="ebs-too-early", RootDeviceName="/dev/xvda", BlockDeviceMappings=[
                {"DeviceName": "/dev/xvda", "Ebs": {"SnapshotId": b["parent"]}}])
        except ClientError as e:
            expect(e.response["Error"]["Code"] == "IncorrectState", f"{e}")
            return str(e)
        raise Fail("RegisterImage took a pending snapshot")

    def complete_wrong_count():
        got = ebs_error(ebs.complete_snapshot, SnapshotId=b["parent"], ChangedBlocksCount=5,
                        Checksum=aggregate(parent_blocks), ChecksumAlgorithm="SHA256",
                        ChecksumAggregationMethod="LINEAR")
        m = expect_ebs_error(got, 400, "ValidationException", "INVALID_PARAMETER_VALUE", r"ChangedBlocksCount.*\b4\b")
        expect(snapshot_state(ec2, b["parent"])["State"] == "pending", "completed despite the wrong count")
        return m

    def complete_wrong_aggregate():
        wrong = dict(parent_blocks)
        wrong[3] = pattern("three")   # the block whose put failed is not in the snapshot
        got = ebs_error(ebs.complete_snapshot, SnapshotId=b["parent"], ChangedBlocksCount=4,
                        Checksum=aggregate({k: wrong[k] for k in (0, 1, 3, 7)}), ChecksumAlgorithm="SHA256",
                        ChecksumAggregationMethod="LINEAR")
        m = expect_ebs_error(got, 400, "ValidationException", "INVALID_PARAMETER_VALUE", r"(?i)aggregate")
        expect(snapshot_state(ec2, b["parent"])["State"] == "pending", "completed despite the wrong checksum")
        return m

    def complete():
        r = ebs.complete_snapshot(SnapshotId=b["parent"], ChangedBlocksCount=4, Checksum=aggregate(parent_blocks),
                                  ChecksumAlgorithm="SHA256", ChecksumAggregationMethod="LINEAR")
        expect(r["ResponseMetadata"]["HTTPStatusCode"] == 202 and r["Status"] == "completed", f"reply {r}")
        snap = snapshot_state(ec2, b["parent"])
        expect(snap["State"] == "completed" and snap["Progress"] == "100%", f"describe-snapshots: {snap}")
        ec2.get_waiter("snapshot_completed").wait(SnapshotIds=[b["parent"]], WaiterConfig={"Delay": 1,
                                                                                            "MaxAttempts": 5})
        return f"202 {r['Status']}; describe-snapshots {snap['State']} {snap['Progress']}"

    def complete_twice():
        got = ebs_error(ebs.complete_snapshot, SnapshotId=b["parent"], ChangedBlocksCount=4)
        m = expect_ebs_error(got, 400, "ValidationException", "INVALID_SNAPSHOT_ID", r"completed")
        got = ebs_error(put, ebs=ebs, sid=b["parent"], index=9, data=pattern("late"))
        expect_ebs_error(got, 400, "ValidationException", "INVALID_SNAPSHOT_ID", r"completed")
        return m

    def list_and_get():
        r = ebs.list_snapshot_blocks(SnapshotId=b["parent"])
        indices = [x["BlockIndex"] for x in r["Blocks"]]
        expect(indices == sorted(parent_blocks), f"listed {indices}, expected {sorted(parent_blocks)} (the zero "
               f"block 1 too)")
        expect((r["VolumeSize"], r["BlockSize"]) == (1, BLOCK) and "NextToken" not in r, f"reply {r}")
        expect(r["ExpiryTime"].timestamp() > time.time() + 3600, f"ExpiryTime {r['ExpiryTime']}")
        b["tokens"] = {x["BlockIndex"]: x["BlockToken"] for x in r["Blocks"]}
        for index, token in b["tokens"].items():
            g = ebs.get_snapshot_block(SnapshotId=b["parent"], BlockIndex=index, BlockToken=token)
            data = g["BlockData"].read()
            expect(data == parent_blocks[index], f"block {index}: bytes differ from what was put")
            expect(g["DataLength"] == BLOCK and g["Checksum"] == b64sha(data) and g["ChecksumAlgorithm"] == "SHA256",
                   f"block {index}: headers {g['DataLength']!r} {g['Checksum']!r} {g['ChecksumAlgorithm']!r}")
        return f"blocks {indices}, each read back byte for byte"

    def bad_tokens():
        got = ebs_error(ebs.get_snapshot_block, SnapshotId=b["parent"], BlockIndex=7, BlockToken=b["tokens"][0])
        m = expect_ebs_error(got, 400, "ValidationException", "INVALID_BLOCK_TOKEN")
        got = ebs_error(ebs.get_snapshot_block, SnapshotId=b["parent"], BlockIndex=0, BlockToken="bm90YXRva2Vu")
        expect_ebs_error(got, 400, "ValidationException", "INVALID_BLOCK_TOKEN")
        got = ebs_error(ebs.list_snapshot_blocks, SnapshotId=b["parent"], NextToken="Z2FyYmFnZQ==")
        expect_ebs_error(got, 400, "ValidationException", "INVALID_PAGE_TOKEN")
        got = ebs_error(other_ebs.get_snapshot_block, SnapshotId=b["parent"], BlockIndex=0,
                        BlockToken=b["tokens"][0])
        expect_ebs_error(got, 403, "AccessDeniedException", "UNAUTHORIZED_ACCOUNT")
        return m

    def disk_file():
        return check_raw_disk(b["parent"], 1, parent_blocks)

    def child():
        got = ebs_error(ebs.start_snapshot, VolumeSize=1, ParentSnapshotId=b["parent"], Encrypted=False)
        expect_ebs_error(got, 400, "ValidationException")
        r = ebs.start_snapshot(VolumeSize=2, ParentSnapshotId=b["parent"], Description="kiln ebs child")
        expect(r.get("ParentSnapshotId") == b["parent"] and r["VolumeSize"] == 2, f"reply {r}")
        sid = b["child"] = r["SnapshotId"]
        for index, data in child_blocks.items():
            put(ebs, sid, index, data)
        got = ebs_error(ebs.complete_snapshot, SnapshotId=sid, ChangedBlocksCount=6)
        expect_ebs_error(got, 400, "ValidationException", "INVALID_PARAMETER_VALUE", r"\b2 blocks")
        ebs.complete_snapshot(SnapshotId=sid, ChangedBlocksCount=2, Checksum=aggregate(child_blocks),
                              ChecksumAlgorithm="SHA256", ChecksumAggregationMethod="LINEAR")
        merged = dict(parent_blocks)
        merged.update(child_blocks)
        listed = [x["BlockIndex"] for x in all_blocks(ebs, sid)]
        expect(listed == sorted(merged), f"child lists {listed}, expected {sorted(merged)}")
        check_raw_disk(sid, 2, merged)
        return f"{sid}: 2 GiB child of {b['parent']}, blocks {listed}"

    def changed_blocks():
        r = ebs.list_changed_blocks(FirstSnapshotId=b["parent"], SecondSnapshotId=b["child"])
        changed = [(x["BlockIndex"], "FirstBlockToken" in x, "SecondBlockToken" in x) for x in r["ChangedBlocks"]]
        expect(changed == [(7, True, True), (3000, False, True)], f"changed blocks {changed}")
        expect(r["VolumeSize"] == 2 and r["BlockSize"] == BLOCK, f"reply {r}")
        seven = r["ChangedBlocks"][0]
        old = ebs.get_snapshot_block(SnapshotId=b["parent"], BlockIndex=7, BlockToken=seven["FirstBlockToken"])
        new = ebs.get_snapshot_block(SnapshotId=b["child"], BlockIndex=7, BlockToken=seven["SecondBlockToken"])
        expect(old["BlockData"].read() == parent_blocks[7], "FirstBlockToken read the wrong bytes")
        expect(new["BlockData"].read() == child_blocks[7], "SecondBlockToken read the wrong bytes")
        got = ebs_error(ebs.get_snapshot_block, SnapshotId=b["child"], BlockIndex=7,
                        BlockToken=seven["FirstBlockToken"])
        expect_ebs_error(got, 400, "ValidationException", "INVALID_BLOCK_TOKEN")
        alone = ebs.list_changed_blocks(SecondSnapshotId=b["child"])
        every = [x["BlockIndex"] for x in alone["ChangedBlocks"] if "FirstBlockToken" not in x]
        expect(every == [0, 1, 7, 2047, 3000], f"without a first snapshot: {every}")
        return f"parent -> child changed (index, first token, second token): {changed}"

    def unrelated():
        r = ebs.start_snapshot(VolumeSize=1)
        ebs.complete_snapshot(SnapshotId=r["SnapshotId"], ChangedBlocksCount=0)
        expect(ebs.list_snapshot_blocks(SnapshotId=r["SnapshotId"])["Blocks"] == [], "an empty snapshot lists blocks")
        got = ebs_error(ebs.list_changed_blocks, FirstSnapshotId=r["SnapshotId"], SecondSnapshotId=b["child"])
        return expect_ebs_error(got, 400, "ValidationException", "UNRELATED_SNAPSHOTS")

    def start_refusals():
        got = ebs_error(ebs.start_snapshot, VolumeSize=1, Encrypted=True)
        m = expect_ebs_error(got, 400, "ValidationException", message_re=r"does not encrypt")
        got = ebs_error(ebs.start_snapshot, VolumeSize=65537)
        expect_ebs_error(got, 400, "ValidationException", "INVALID_VOLUME_SIZE")
        got = ebs_error(ebs.start_snapshot, VolumeSize=1, ParentSnapshotId=b["child"])
        expect_ebs_error(got, 400, "ValidationException", "INVALID_VOLUME_SIZE", r"2 GiB")
        got = ebs_error(ebs.start_snapshot, VolumeSize=1, ParentSnapshotId=MISSING)
        expect_ebs_error(got, 404, "ResourceNotFoundException", "SNAPSHOT_NOT_FOUND")
        got = ebs_error(ebs.start_snapshot, VolumeSize=1, Tags=[{"Key": "aws:reserved", "Value": "x"}])
        expect_ebs_error(got, 400, "ValidationException", "INVALID_TAG")
        got = ebs_error(other_ebs.start_snapshot, VolumeSize=1, ParentSnapshotId=b["parent"])
        expect_ebs_error(got, 403, "AccessDeniedException", "UNAUTHORIZED_ACCOUNT")
        return m

    def register_and_launch():
        r = ec2.register_image(Name="ebs-direct-parent", RootDeviceName="/dev/xvda", Architecture="x86_64",
                               VirtualizationType="hvm", BlockDeviceMappings=[
                                   {"DeviceName": "/dev/xvda", "Ebs": {"SnapshotId": b["parent"]}}])
        ami = r["ImageId"]
        ec2.get_waiter("image_available").wait(ImageIds=[ami], WaiterConfig={"Delay": 1, "MaxAttempts": 10})
        img = ec2.describe_images(ImageIds=[ami])["Images"][0]
        ebs_map = img["BlockDeviceMappings"][0]["Ebs"]
        expect(img["State"] == "available" and ebs_map["SnapshotId"] == b["parent"] and ebs_map["VolumeSize"] == 1,
               f"describe-images: {img}")
        run = ec2.run_instances(ImageId=ami, MinCount=1, MaxCount=1)
        iid = run["Instances"][0]["InstanceId"]
        ec2.get_waiter("instance_running").wait(InstanceIds=[iid], WaiterConfig={"Delay": 1, "MaxAttempts": 30})
        ec2.terminate_instances(InstanceIds=[iid])
        return f"{ami} available on {b['parent']}; mock instance {iid} ran"

    def imported_qcow2():
        # A disk with data in 150 scattered blocks, imported (as qcow2) by
        # `kiln-emulator import-image`: its blocks come from `qemu-img map`.
        raw = os.path.join(STATE["work"], "scattered.raw")
        wanted = [3 * i for i in range(150)]
        with open(raw, "wb") as f:
            f.truncate(GIB)
            for index in wanted:
                f.seek(index * BLOCK + 4096)
                f.write(f"block {index} of the imported disk".encode())
        p = subprocess.run([STATE["binary"], "import-image", raw, "--name", "ebs-scattered", "--state-dir",
                            STATE["state_dir"], "--account", ACCOUNTS["boto3"][0]], capture_output=True, text=True,
                           timeout=120)
        expect(p.returncode == 0, f"import-image: {p.stderr}")
        ami = p.stdout.strip()
        sid = ec2.describe_images(ImageIds=[ami])["Images"][0]["BlockDeviceMappings"][0]["Ebs"]["SnapshotId"]
        b["imported"] = sid
        page1 = ebs.list_snapshot_blocks(SnapshotId=sid, MaxResults=100)
        expect(len(page1["Blocks"]) == 100 and page1.get("NextToken"), f"page 1: {len(page1['Blocks'])} blocks, "
               f"NextToken {page1.get('NextToken')!r}")
        page2 = ebs.list_snapshot_blocks(SnapshotId=sid, MaxResults=100, NextToken=page1["NextToken"])
        expect("NextToken" not in page2, f"page 2 has a NextToken: {page2.get('NextToken')}")
        listed = [x["BlockIndex"] for x in page1["Blocks"] + page2["Blocks"]]
        expect(listed == wanted, f"listed {listed[:8]}... ({len(listed)}), expected {wanted[:8]}... ({len(wanted)})")
        from_300 = ebs.list_snapshot_blocks(SnapshotId=sid, StartingBlockIndex=300)["Blocks"]
        expect(from_300[0]["BlockIndex"] == 300 and len(from_300) == 50, f"StartingBlockIndex 300: {from_300[:2]}")
        token = {x["BlockIndex"]: x["BlockToken"] for x in page1["Blocks"]}[15]
        data = ebs.get_snapshot_block(SnapshotId=sid, BlockIndex=15, BlockToken=token)["BlockData"].read()
        expected = bytearray(BLOCK)
        text = b"block 15 of the imported disk"
        expected[4096:4096 + len(text)] = text
        expect(data == bytes(expected), "block 15 of the qcow2 snapshot read back wrong")
        return f"{sid} (qcow2): 150 blocks in pages of 100 + 50, block 15 read through qemu-img"

    def child_of_qcow2():
        r = ebs.start_snapshot(VolumeSize=1, ParentSnapshotId=b["imported"])
        sid = r["SnapshotId"]
        put(ebs, sid, 1, pattern("new-1"))
        ebs.complete_snapshot(SnapshotId=sid, ChangedBlocksCount=1)
        listed = [x["BlockIndex"] for x in all_blocks(ebs, sid, MaxResults=1000)]
        expect(listed == sorted([3 * i for i in range(150)] + [1]), f"child lists {len(listed)} blocks: {listed[:5]}")
        ch = ebs.list_changed_blocks(FirstSnapshotId=b["imported"], SecondSnapshotId=sid)["ChangedBlocks"]
        expect([x["BlockIndex"] for x in ch] == [1], f"changed {ch}")
        with open(disk_path(sid), "rb") as f:
            f.seek(15 * BLOCK + 4096)
            expect(f.read(29) == b"block 15 of the imported disk", "the child's raw disk lacks the parent's data")
        return f"{sid}: raw child of the qcow2 snapshot, 151 blocks, 1 changed"

    def parallel_puts():
        # As coldsnap uploads: many blocks at once, then one aggregate.
        sid = ebs.start_snapshot(VolumeSize=1, Description="parallel")["SnapshotId"]
        blocks = {i * 7: hashlib.sha256(str(i).encode()).digest() * (BLOCK // 32) for i in range(96)}
        errors = []

        def worker(indices):
            client = s.client("ebs", endpoint_url=url, config=CLIENT_CONFIG)
            for index in indices:
                try:
                    put(client, sid, index, blocks[index])
                except Exception as e:  # reported below, in the main thread
                    errors.append(f"block {index}: {e}")

        order = sorted(blocks)
        threads = [threading.Thread(target=worker, args=(order[k::8],)) for k in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        expect(not errors, f"{len(errors)} puts failed: {errors[:3]}")
        ebs.complete_snapshot(SnapshotId=sid, ChangedBlocksCount=len(blocks), Checksum=aggregate(blocks),
                              ChecksumAlgorithm="SHA256", ChecksumAggregationMethod="LINEAR")
        listed = [x["BlockIndex"] for x in all_blocks(ebs, sid)]
        expect(listed == order, f"listed {len(listed)} blocks, expected {len(order)}")
        check_raw_disk(sid, 1, blocks)
        return f"{sid}: {len(blocks)} blocks from 8 threads, aggregate checked"

    def timeout():
        r = ebs.start_snapshot(VolumeSize=1, Timeout=10)
        sid = r["SnapshotId"]
        put(ebs, sid, 0, pattern("soon-gone"))
        # No test waits 10 minutes: move the deadline into the past.
        db = sqlite3.connect(os.path.join(STATE["state_dir"], "emulator.db"), timeout=30)
        with db:
            n = db.execute("UPDATE ebs_snapshots SET deadline = 1 WHERE id = ?", (sid,)).rowcount
        db.close()
        expect(n == 1, f"no ebs_snapshots row for {sid}")
        snap = snapshot_state(ec2, sid)
        expect(snap["State"] == "error" and re.search(r"(?i)timeout", snap.get("StateMessage", "")),
               f"after its deadline: {snap}")
        got = ebs_error(put, ebs=ebs, sid=sid, index=1, data=pattern("too-late"))
        expect_ebs_error(got, 400, "ValidationException", "INVALID_SNAPSHOT_ID", r"error")
        return f"{sid}: {snap['State']}: {snap['StateMessage']}"

    steps = [
        ("StartSnapshot -> 201 pending with tags", start),
        ("StartSnapshot with the same ClientToken -> same snapshot; other params -> 409 ConflictException",
         idempotent),
        ("describe-snapshots shows it pending, only to its owner", described_pending),
        ("PutSnapshotBlock 0, 1 (zeros), 7, 2047 -> 201 with checksum headers, x-amz-Progress", put_blocks),
        ("PutSnapshotBlock with a wrong checksum -> ValidationException", wrong_checksum),
        ("PutSnapshotBlock past the volume -> ValidationException INVALID_BLOCK", index_past_volume),
        ("PutSnapshotBlock short data -> ValidationException", short_data),
        ("unknown and malformed snapshot ids -> 404 / ValidationException", unknown_snapshot),
        ("another account's snapshot -> 403 AccessDeniedException", other_account),
        ("ListSnapshotBlocks of a pending snapshot -> ValidationException", reads_need_completed),
        ("RegisterImage of a pending snapshot -> IncorrectState", register_pending),
        ("CompleteSnapshot with a wrong ChangedBlocksCount -> ValidationException", complete_wrong_count),
        ("CompleteSnapshot with a wrong aggregate checksum -> ValidationException", complete_wrong_aggregate),
        ("CompleteSnapshot -> 202 completed; describe-snapshots completed 100%", complete),
        ("CompleteSnapshot twice, PutSnapshotBlock after -> ValidationException", complete_twice),
        ("ListSnapshotBlocks / GetSnapshotBlock round trip (zero block listed)", list_and_get),
        ("block tokens and page tokens that are not ours -> ValidationException", bad_tokens),
        ("the disk file is a sparse raw disk of VolumeSize GiB holding the blocks", disk_file),
        ("child of the parent, 2 GiB: inherits, overwrites, adds", child),
        ("ListChangedBlocks parent -> child, and without a first snapshot", changed_blocks),
        ("ListChangedBlocks across lineages -> UNRELATED_SNAPSHOTS", unrelated),
        ("StartSnapshot refusals: Encrypted, size, parent too big, missing parent, aws: tag, other's parent",
         start_refusals),
        ("RegisterImage from the completed snapshot -> available; a mock instance runs", register_and_launch),
        ("import-image (qcow2) snapshot: pagination, StartingBlockIndex, GetSnapshotBlock via qemu-img",
         imported_qcow2),
        ("child of the qcow2 snapshot: raw copy, ListChangedBlocks", child_of_qcow2),
        ("8 threads put 96 blocks at once; the aggregate and the disk agree", parallel_puts),
        ("Timeout: a pending snapshot past its deadline is error", timeout),
    ]
    for title, fn in steps:
        tap.case(f"{v}: {title}", fn)


# ---- the wire ----

def wire_cases(tap, url):
    key, secret = ACCOUNTS["boto3"][1:]

    def ebs_wire(method, path, body=b"", headers=None, **kw):
        return sign(url + path, method=method, service="ebs", body=body, headers=headers, key=kw.pop("key", key),
                    secret=kw.pop("secret", secret), **kw)

    def rest_json_error(reply, status, code, message_re=None):
        expect(reply.status == status, f"HTTP {reply.status}, expected {status}: {reply.text()!r}")
        expect(reply.headers.get("x-amzn-errortype") == code,
               f"x-amzn-ErrorType {reply.headers.get('x-amzn-errortype')!r}, expected {code}")
        expect("json" in reply.headers.get("content-type", ""), f"content type {reply.headers.get('content-type')}")
        doc = reply.json()
        expect(isinstance(doc.get("Message"), str), f"no Message: {doc}")
        expect(reply.headers.get("x-amzn-requestid"), "no x-amzn-RequestId")
        if message_re:
            expect(re.search(message_re, doc["Message"]), f"message {doc['Message']!r} does not match /{message_re}/")
        return doc

    def signature_failures():
        r = send(url, ebs_wire("GET", f"/snapshots/{MISSING}/blocks", secret="wrong"))
        rest_json_error(r, 403, "InvalidSignatureException", r"signature")
        r = send(url, ebs_wire("GET", f"/snapshots/{MISSING}/blocks", key="AKIANOBODY"))
        rest_json_error(r, 403, "UnrecognizedClientException")
        r = send(url, ebs_wire("POST", "/snapshots", body=b'{"VolumeSize": 1}',
                               headers={"Content-Type": "application/json"}, region="xx-nowhere-1"))
        doc = rest_json_error(r, 403, "InvalidSignatureException", r"xx-nowhere-1")
        return f"403 InvalidSignatureException / UnrecognizedClientException: {doc['Message']}"

    def unsigned_payload_tampered():
        # PutSnapshotBlock signs UNSIGNED-PAYLOAD; a header it signed that
        # changes in flight still fails, the body is checked by x-amz-Checksum.
        data = pattern("wire")
        w = ebs_wire("PUT", f"/snapshots/{MISSING}/blocks/0", body=data, headers={
            "x-amz-Data-Length": str(BLOCK), "x-amz-Checksum": b64sha(data), "x-amz-Checksum-Algorithm": "SHA256",
            "X-Amz-Content-SHA256": "UNSIGNED-PAYLOAD"})
        r = send(url, w)
        rest_json_error(r, 404, "ResourceNotFoundException", MISSING)
        w.headers["x-amz-Checksum"] = b64sha(b"other")
        r = send(url, w)
        rest_json_error(r, 403, "InvalidSignatureException")
        return "UNSIGNED-PAYLOAD accepted; a changed signed header is not"

    def truncated_upload():
        # Content-Length promises a whole block, 1000 bytes come and the
        # client goes away: nothing is written, the server carries on.
        ebs = session("boto3").client("ebs", endpoint_url=url, config=CLIENT_CONFIG)
        sid = ebs.start_snapshot(VolumeSize=1)["SnapshotId"]
        data = pattern("truncated")
        w = ebs_wire("PUT", f"/snapshots/{sid}/blocks/0", body=data, headers={
            "x-amz-Data-Length": str(BLOCK), "x-amz-Checksum": b64sha(data), "x-amz-Checksum-Algorithm": "SHA256",
            "X-Amz-Content-SHA256": "UNSIGNED-PAYLOAD"})
        host, port = url.split("//")[1].split(":")
        head = f"{w.method} {w.target} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Length: {BLOCK}\r\n"
        head += "".join(f"{k}: {v}\r\n" for k, v in w.headers.items() if k.lower() != "host") + "\r\n"
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            sock.sendall(head.encode() + data[:1000])
            sock.shutdown(socket.SHUT_WR)
            try:
                answer = sock.recv(4096)
            except OSError:
                answer = b""
        expect(not answer.startswith(b"HTTP/1.1 201"), f"a truncated block was accepted: {answer[:200]!r}")
        got = ebs_error(ebs.complete_snapshot, SnapshotId=sid, ChangedBlocksCount=1)
        expect_ebs_error(got, 400, "ValidationException", "INVALID_PARAMETER_VALUE", r"\b0 blocks")
        r = ebs.complete_snapshot(SnapshotId=sid, ChangedBlocksCount=0)
        expect(r["Status"] == "completed", f"complete: {r}")
        return f"answer to the truncated upload: {answer[:40]!r}; no block written"

    def double_encoding():
        # Non-S3 paths are URI-encoded twice in the canonical request: a
        # space in the snapshot id must reach the handler, not fail SigV4.
        r = send(url, ebs_wire("GET", "/snapshots/snap-0123%20x/blocks"))
        doc = rest_json_error(r, 400, "ValidationException", r"snap-0123 x")
        expect(doc.get("Reason") == "INVALID_SNAPSHOT_ID", f"Reason {doc.get('Reason')}")
        return doc["Message"]

    def unknown_routes():
        r = send(url, ebs_wire("GET", "/volumes"))
        rest_json_error(r, 404, "UnknownOperationException", r"/volumes")
        r = send(url, ebs_wire("DELETE", "/snapshots"))
        doc = rest_json_error(r, 405, "UnknownOperationException", r"DELETE")
        return doc["Message"]

    def bad_bodies():
        r = send(url, ebs_wire("POST", "/snapshots", body=b"{not json", headers={"Content-Type": "application/json"}))
        rest_json_error(r, 400, "SerializationException")
        r = send(url, ebs_wire("POST", "/snapshots", body=b'{"VolumeSize": "one"}',
                               headers={"Content-Type": "application/json"}))
        rest_json_error(r, 400, "ValidationException", r"VolumeSize")
        r = send(url, ebs_wire("POST", "/snapshots", body=b"{}", headers={"Content-Type": "application/json"}))
        doc = rest_json_error(r, 400, "ValidationException", r"VolumeSize.*must not be null")
        r = send(url, ebs_wire("PUT", f"/snapshots/{MISSING}/blocks/x", body=b"",
                               headers={"x-amz-Data-Length": "0", "x-amz-Checksum": "AA==",
                                        "x-amz-Checksum-Algorithm": "SHA256"}))
        rest_json_error(r, 400, "ValidationException", r"blockIndex")
        # botocore refuses maxResults under 100 itself; the server does too.
        r = send(url, ebs_wire("GET", f"/snapshots/{MISSING}/blocks?maxResults=50"))
        rest_json_error(r, 400, "ValidationException", r"maxResults.*100")
        return doc["Message"]

    for title, fn in [
        ("SigV4 failures for service ebs -> 403 rest-json errors", signature_failures),
        ("UNSIGNED-PAYLOAD body, signed headers still checked", unsigned_payload_tampered),
        ("truncated upload (Content-Length 524288, 1000 bytes, then EOF) writes nothing", truncated_upload),
        ("double URI-encoding of a non-S3 path", double_encoding),
        ("unknown path -> 404, wrong method -> 405 UnknownOperationException", unknown_routes),
        ("bodies that are not StartSnapshot input -> SerializationException / ValidationException", bad_bodies),
    ]:
        tap.case(f"wire: {title}", fn)


# ---- the CLIs ----

class Cli:
    """One AWS CLI in its own account; endpoint by --endpoint-url or AWS_ENDPOINT_URL."""

    def __init__(self, path, url, account, by_env, home):
        _, key, secret = ACCOUNTS[account]
        self.path, self.url, self.by_env = path, url, by_env
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        self.env.update({"AWS_ACCESS_KEY_ID": key, "AWS_SECRET_ACCESS_KEY": secret, "AWS_DEFAULT_REGION": REGION,
                         "AWS_CONFIG_FILE": "/dev/null", "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
                         "AWS_PAGER": "", "AWS_EC2_METADATA_DISABLED": "true", "HOME": home,
                         "AWS_MAX_ATTEMPTS": "1"})
        if by_env:
            self.env["AWS_ENDPOINT_URL"] = url

    def run(self, *args):
        cmd = [self.path] + ([] if self.by_env else ["--endpoint-url", self.url]) + ["--output", "json"]
        p = subprocess.run(cmd + [str(a) for a in args], env=self.env, capture_output=True, text=True, timeout=180)
        return p.returncode, p.stdout, p.stderr

    def __call__(self, *args):
        rc, out, err = self.run(*args)
        expect(rc == 0, f"aws {' '.join(map(str, args))}: exit {rc}: {err.strip()[-600:]}")
        try:
            return json.loads(out) if out.strip() else {}
        except ValueError:
            raise Fail(f"aws {' '.join(map(str, args))}: output is not JSON: {out[:300]!r}")

    def error(self, *args):
        rc, out, err = self.run(*args)
        expect(rc != 0, f"aws {' '.join(map(str, args))} succeeded; expected an error")
        m = re.search(r"An error occurred \(([^)]+)\) when calling the \w+ operation(?: \([^)]*\))?: (.*)", err)
        expect(m, f"aws {' '.join(map(str, args))}: no AWS error in {err.strip()[-300:]!r}")
        return m.group(1), m.group(2)


def cli_cases(tap, label, cli, work):
    c = {}
    blocks = {2: pattern(f"{label}-2"), 5: bytes(BLOCK)}
    files = {}
    for index, data in blocks.items():
        files[index] = os.path.join(work, f"{label}-block-{index}.bin")
        with open(files[index], "wb") as f:
            f.write(data)

    def version():
        rc, out, err = cli.run("--version")
        expect(rc == 0, f"--version: {err}")
        return (out or err).strip()

    def put_args(sid, index, checksum=None):
        return ["ebs", "put-snapshot-block", "--snapshot-id", sid, "--block-index", index, "--block-data",
                files[index], "--data-length", BLOCK, "--checksum", checksum or b64sha(blocks[index]),
                "--checksum-algorithm", "SHA256"]

    def write_and_complete():
        r = cli("ebs", "start-snapshot", "--volume-size", "1", "--description", f"{label} snapshot",
                "--tags", "Key=Name,Value=" + label)
        sid = c["sid"] = r["SnapshotId"]
        expect(r["Status"] == "pending" and r["BlockSize"] == BLOCK, f"start-snapshot: {r}")
        for index in blocks:
            p = cli(*put_args(sid, index))
            expect(p["Checksum"] == b64sha(blocks[index]), f"put-snapshot-block {index}: {p}")
        code, msg = cli.error(*put_args(sid, 2, checksum=b64sha(b"not it")))
        expect(code == "ValidationException" and re.search(r"(?i)checksum", msg), f"wrong checksum: {code}: {msg}")
        code, msg = cli.error("ebs", "complete-snapshot", "--snapshot-id", sid, "--changed-blocks-count", "1")
        expect(code == "ValidationException", f"wrong count: {code}: {msg}")
        done = cli("ebs", "complete-snapshot", "--snapshot-id", sid, "--changed-blocks-count", len(blocks),
                   "--checksum", aggregate(blocks), "--checksum-algorithm", "SHA256",
                   "--checksum-aggregation-method", "LINEAR")
        expect(done.get("Status") == "completed", f"complete-snapshot: {done}")
        code, msg = cli.error("ebs", "complete-snapshot", "--snapshot-id", sid, "--changed-blocks-count", "2")
        expect(code == "ValidationException", f"complete twice: {code}: {msg}")
        snap = cli("ec2", "describe-snapshots", "--snapshot-ids", sid)["Snapshots"][0]
        expect(snap["State"] == "completed" and snap["Progress"] == "100%", f"describe-snapshots: {snap}")
        return f"{sid}: blocks {sorted(blocks)}, completed"

    def read_back():
        sid = c["sid"]
        listed = cli("ebs", "list-snapshot-blocks", "--snapshot-id", sid)
        indices = [x["BlockIndex"] for x in listed["Blocks"]]
        expect(indices == sorted(blocks), f"list-snapshot-blocks: {indices}")
        for x in listed["Blocks"]:
            out = os.path.join(work, f"{label}-out-{x['BlockIndex']}.bin")
            meta = cli("ebs", "get-snapshot-block", "--snapshot-id", sid, "--block-index", x["BlockIndex"],
                       "--block-token", x["BlockToken"], out)
            with open(out, "rb") as f:
                expect(f.read() == blocks[x["BlockIndex"]], f"block {x['BlockIndex']}: bytes differ")
            expect(meta["Checksum"] == b64sha(blocks[x["BlockIndex"]]), f"get-snapshot-block: {meta}")
            expect(int(meta["DataLength"]) == BLOCK, f"DataLength {meta['DataLength']!r}")
        return f"{indices} read back; DataLength printed as {meta['DataLength']!r}"

    def changed():
        r = cli("ebs", "start-snapshot", "--volume-size", "1", "--parent-snapshot-id", c["sid"])
        child = r["SnapshotId"]
        cli("ebs", "put-snapshot-block", "--snapshot-id", child, "--block-index", "9", "--block-data", files[2],
            "--data-length", BLOCK, "--checksum", b64sha(blocks[2]), "--checksum-algorithm", "SHA256")
        cli("ebs", "complete-snapshot", "--snapshot-id", child, "--changed-blocks-count", "1")
        ch = cli("ebs", "list-changed-blocks", "--first-snapshot-id", c["sid"], "--second-snapshot-id", child)
        got = [(x["BlockIndex"], "FirstBlockToken" in x) for x in ch["ChangedBlocks"]]
        expect(got == [(9, False)], f"list-changed-blocks: {got}")
        return f"{c['sid']} -> {child}: {got}"

    def register():
        r = cli("ec2", "register-image", "--name", f"ebs-{label}", "--root-device-name", "/dev/xvda",
                "--block-device-mappings", json.dumps([{"DeviceName": "/dev/xvda", "Ebs": {"SnapshotId": c["sid"]}}]))
        img = cli("ec2", "describe-images", "--image-ids", r["ImageId"])["Images"][0]
        expect(img["State"] == "available" and img["BlockDeviceMappings"][0]["Ebs"]["SnapshotId"] == c["sid"],
               f"describe-images: {img}")
        return f"{r['ImageId']} available"

    def errors():
        code, msg = cli.error("ebs", "list-snapshot-blocks", "--snapshot-id", MISSING)
        expect(code == "ResourceNotFoundException", f"{code}: {msg}")
        code, msg = cli.error("ebs", "list-snapshot-blocks", "--snapshot-id", STATE["boto3_parent"])
        expect(code == "AccessDeniedException", f"another account's: {code}: {msg}")
        return f"{code}: {msg}"

    tap.case(f"{label}: version", version)
    for title, fn in [("start / put (zero block too) / wrong checksum / wrong count / complete / twice", write_and_complete),
                      ("list-snapshot-blocks / get-snapshot-block to a file", read_back),
                      ("list-changed-blocks of a child", changed),
                      ("register-image from the snapshot, describe-images", register),
                      ("unknown and another account's snapshots", errors)]:
        tap.case(f"{label}: {title}", fn)


DEBIAN_BOTO3_SCRIPT = r"""
import base64, hashlib, sys, boto3, botocore
from botocore.config import Config
from botocore.exceptions import ClientError
url, key, secret = sys.argv[1:4]
B = 524288
s = boto3.session.Session(aws_access_key_id=key, aws_secret_access_key=secret, region_name="us-east-1")
ebs = s.client("ebs", endpoint_url=url, config=Config(retries={"max_attempts": 0}))
ec2 = s.client("ec2", endpoint_url=url, config=Config(retries={"max_attempts": 0}))
sha = lambda d: base64.b64encode(hashlib.sha256(d).digest()).decode()
blocks = {0: (b"deb" * B)[:B], 4: bytes(B)}
sid = ebs.start_snapshot(VolumeSize=1, Description="debian boto3")["SnapshotId"]
for i, d in blocks.items():
    r = ebs.put_snapshot_block(SnapshotId=sid, BlockIndex=i, BlockData=d, DataLength=B, Checksum=sha(d),
                               ChecksumAlgorithm="SHA256")
    assert r["Checksum"] == sha(d), r
try:
    ebs.put_snapshot_block(SnapshotId=sid, BlockIndex=1, BlockData=blocks[0], DataLength=B, Checksum=sha(b"x"),
                           ChecksumAlgorithm="SHA256")
    raise SystemExit("wrong checksum accepted")
except ClientError as e:
    assert e.response["Error"]["Code"] == "ValidationException", e.response
    assert e.response.get("Reason") == "INVALID_PARAMETER_VALUE", e.response
agg = base64.b64encode(hashlib.sha256(b"".join(hashlib.sha256(blocks[i]).digest() for i in sorted(blocks))).digest())
try:
    ebs.complete_snapshot(SnapshotId=sid, ChangedBlocksCount=2, Checksum=sha(b"wrong"), ChecksumAlgorithm="SHA256",
                          ChecksumAggregationMethod="LINEAR")
    raise SystemExit("wrong aggregate accepted")
except ClientError as e:
    assert e.response["Error"]["Code"] == "ValidationException", e.response
r = ebs.complete_snapshot(SnapshotId=sid, ChangedBlocksCount=2, Checksum=agg.decode(), ChecksumAlgorithm="SHA256",
                          ChecksumAggregationMethod="LINEAR")
assert r["Status"] == "completed", r
assert ec2.describe_snapshots(SnapshotIds=[sid])["Snapshots"][0]["State"] == "completed"
listed = ebs.list_snapshot_blocks(SnapshotId=sid)["Blocks"]
assert [x["BlockIndex"] for x in listed] == [0, 4], listed
for x in listed:
    g = ebs.get_snapshot_block(SnapshotId=sid, BlockIndex=x["BlockIndex"], BlockToken=x["BlockToken"])
    assert g["BlockData"].read() == blocks[x["BlockIndex"]], x
child = ebs.start_snapshot(VolumeSize=1, ParentSnapshotId=sid)["SnapshotId"]
ebs.put_snapshot_block(SnapshotId=child, BlockIndex=4, BlockData=blocks[0], DataLength=B, Checksum=sha(blocks[0]),
                       ChecksumAlgorithm="SHA256")
ebs.complete_snapshot(SnapshotId=child, ChangedBlocksCount=1)
ch = ebs.list_changed_blocks(FirstSnapshotId=sid, SecondSnapshotId=child)["ChangedBlocks"]
assert [(x["BlockIndex"], "FirstBlockToken" in x) for x in ch] == [(4, True)], ch
try:
    ebs.complete_snapshot(SnapshotId=child, ChangedBlocksCount=1)
    raise SystemExit("completed twice")
except ClientError as e:
    assert e.response["Error"]["Code"] == "ValidationException", e.response
ami = ec2.register_image(Name="ebs-debian-boto3", RootDeviceName="/dev/xvda", BlockDeviceMappings=[
    {"DeviceName": "/dev/xvda", "Ebs": {"SnapshotId": child}}])["ImageId"]
assert ec2.describe_images(ImageIds=[ami])["Images"][0]["State"] == "available"
print("boto3 %s botocore %s: %s, child %s, %s" % (boto3.__version__, botocore.__version__, sid, child, ami))
"""


def debian_boto3_case(url):
    py = "/usr/bin/python3"
    if not os.path.exists(py) or subprocess.run([py, "-c", "import boto3"], capture_output=True).returncode != 0:
        raise Skip("/usr/bin/python3 has no boto3 (Debian python3-boto3)")
    _, key, secret = ACCOUNTS["debboto"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_") and not k.startswith("PYTHON")}
    env.update({"AWS_CONFIG_FILE": "/dev/null", "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
                "AWS_EC2_METADATA_DISABLED": "true"})
    p = subprocess.run([py, "-c", DEBIAN_BOTO3_SCRIPT, url, key, secret], capture_output=True, text=True,
                       timeout=300, env=env)
    expect(p.returncode == 0, f"exit {p.returncode}: {(p.stderr or p.stdout)[-1500:]}")
    return p.stdout.strip()


# ---- durability and the raw form of qcow2 snapshots ----

def restart_cases(tap, binary, work, accounts):
    """Emulators of their own on a state directory of their own: killed
    outright and started again, and the cached raw form of a qcow2 snapshot."""
    state_dir = os.path.join(work, "state-restart")
    os.makedirs(state_dir)
    cache_dir = os.path.join(state_dir, "ebs-cache")
    run = {}

    def clients(server):
        s = session("boto3")
        return (s.client("ebs", endpoint_url=server.url, config=CLIENT_CONFIG),
                s.client("ec2", endpoint_url=server.url, config=CLIENT_CONFIG))

    def killed_after_puts():
        # PutSnapshotBlock answered 201 is kept by an emulator killed with
        # SIGKILL (no power loss): its row and its bytes are there after a
        # restart, and CompleteSnapshot counts them.
        server = Emulator(binary, state_dir=state_dir, accounts=accounts, log_dir=work).start()
        ebs, _ = clients(server)
        sid = ebs.start_snapshot(VolumeSize=1)["SnapshotId"]
        blocks = {i * 5: pattern(f"kept-{i}") for i in range(24)}
        errors = []

        def worker(indices):
            client, _ = clients(server)
            for index in indices:
                try:
                    put(client, sid, index, blocks[index])
                except Exception as e:  # reported below
                    errors.append(f"block {index}: {e}")

        order = sorted(blocks)
        threads = [threading.Thread(target=worker, args=(order[k::8],)) for k in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        expect(not errors, f"{len(errors)} puts failed: {errors[:3]}")
        server.proc.kill()
        server.proc.wait()
        server = Emulator(binary, state_dir=state_dir, accounts=accounts, log_dir=work).start()
        run["server"] = server
        ebs, _ = clients(server)
        ebs.complete_snapshot(SnapshotId=sid, ChangedBlocksCount=len(blocks), Checksum=aggregate(blocks),
                              ChecksumAlgorithm="SHA256", ChecksumAggregationMethod="LINEAR")
        listed = all_blocks(ebs, sid)
        expect([x["BlockIndex"] for x in listed] == order, f"listed {len(listed)} blocks after the restart, "
               f"expected {len(order)}")
        for x in listed[:4]:
            data = ebs.get_snapshot_block(SnapshotId=sid, BlockIndex=x["BlockIndex"],
                                          BlockToken=x["BlockToken"])["BlockData"].read()
            expect(data == blocks[x["BlockIndex"]], f"block {x['BlockIndex']} read back wrong after the restart")
        return f"{sid}: {len(blocks)} blocks put from 8 threads, SIGKILL, restart: completed with them all"

    def server_up():
        if not (run.get("server") and run["server"].alive()):
            run["server"] = Emulator(binary, state_dir=state_dir, accounts=accounts, log_dir=work).start()
        return run["server"]

    def qcow2_cached():
        server = server_up()
        ebs, ec2 = clients(server)
        raw = os.path.join(work, "cached.raw")
        with open(raw, "wb") as f:
            f.truncate(GIB)
            for index in (2, 9, 40):
                f.seek(index * BLOCK + 512)
                f.write(f"block {index} of the cached disk".encode())
        p = subprocess.run([binary, "import-image", raw, "--name", "ebs-cached", "--state-dir", state_dir,
                            "--account", ACCOUNTS["boto3"][0]], capture_output=True, text=True, timeout=120)
        expect(p.returncode == 0, f"import-image: {p.stderr}")
        ami = p.stdout.strip()
        sid = ec2.describe_images(ImageIds=[ami])["Images"][0]["BlockDeviceMappings"][0]["Ebs"]["SnapshotId"]
        run.update(ami=ami, sid=sid)
        tokens = {x["BlockIndex"]: x["BlockToken"] for x in all_blocks(ebs, sid)}
        expect(sorted(tokens) == [2, 9, 40], f"listed {sorted(tokens)}")

        def get(index):
            return ebs.get_snapshot_block(SnapshotId=sid, BlockIndex=index, BlockToken=tokens[index])[
                "BlockData"].read()

        first = get(9)
        cached = os.path.join(cache_dir, sid + ".raw")
        expect(os.path.exists(cached), f"no raw form {cached} after the first read")
        inode = os.stat(cached).st_ino
        expect(get(9) == first, "block 9 read twice gave different bytes")
        expected = bytearray(BLOCK)
        text = b"block 9 of the cached disk"
        expected[512:512 + len(text)] = text
        expect(first == bytes(expected), "block 9 of the qcow2 snapshot read back wrong")
        expect(os.stat(cached).st_ino == inode, "the second read converted the disk again")
        # The disk file is not the one converted (times changed): converted again.
        db = sqlite3.connect(os.path.join(state_dir, "emulator.db"), timeout=30)
        path = db.execute("SELECT disk FROM snapshots WHERE id = ?", (sid,)).fetchone()[0]
        db.close()
        path = path if path.startswith("/") else os.path.join(state_dir, path)
        os.utime(path, None)
        text = b"block 40 of the cached disk"
        expect(get(40)[512:512 + len(text)] == text, "block 40 read back wrong")
        expect(os.stat(cached).st_ino != inode, "a disk whose times changed was read from the old raw form")
        return f"{sid} (qcow2): block 9 twice from {cached}, converted again when the disk changed"

    def cache_follows_snapshot():
        server = server_up()
        _, ec2 = clients(server)
        cached = os.path.join(cache_dir, run["sid"] + ".raw")
        expect(os.path.exists(cached), f"{cached} is gone already")
        ec2.deregister_image(ImageId=run["ami"])
        if ec2.describe_snapshots(Filters=[{"Name": "snapshot-id", "Values": [run["sid"]]}])["Snapshots"]:
            ec2.delete_snapshot(SnapshotId=run["sid"])
        expect(not os.path.exists(cached), f"{cached} outlived its snapshot")
        rc = server.stop()
        expect(rc == 0, f"exit status {rc}")
        expect(not os.path.exists(cache_dir), f"{cache_dir} outlived the emulator")
        return f"{cached} removed with its snapshot; {cache_dir} at SIGTERM"

    def cache_leftovers():
        # A raw form left by an emulator killed outright goes when the next
        # one first reads a qcow2 snapshot.
        leftover = os.path.join(cache_dir, "snap-0000000000000000a.raw")
        os.makedirs(cache_dir, exist_ok=True)
        with open(leftover, "wb") as f:
            f.write(b"left")
        server = Emulator(binary, state_dir=state_dir, accounts=accounts, log_dir=work).start()
        run["server"] = server
        ebs, ec2 = clients(server)
        raw = os.path.join(work, "cached2.raw")
        with open(raw, "wb") as f:
            f.truncate(GIB)
            f.seek(3 * BLOCK)
            f.write(b"three")
        p = subprocess.run([binary, "import-image", raw, "--name", "ebs-cached-2", "--state-dir", state_dir,
                            "--account", ACCOUNTS["boto3"][0]], capture_output=True, text=True, timeout=120)
        expect(p.returncode == 0, f"import-image: {p.stderr}")
        sid = ec2.describe_images(ImageIds=[p.stdout.strip()])["Images"][0]["BlockDeviceMappings"][0]["Ebs"][
            "SnapshotId"]
        x = all_blocks(ebs, sid)[0]
        data = ebs.get_snapshot_block(SnapshotId=sid, BlockIndex=x["BlockIndex"], BlockToken=x["BlockToken"])[
            "BlockData"].read()
        expect(x["BlockIndex"] == 3 and data[:5] == b"three", f"block {x['BlockIndex']}: {data[:5]!r}")
        expect(not os.path.exists(leftover), f"{leftover} was left in place")
        rc = server.stop()
        expect(rc == 0, f"exit status {rc}")
        return f"{leftover} removed at the first read"

    tap.case("restart: PutSnapshotBlock answered, SIGKILL, restart -> the blocks are there", killed_after_puts)
    tap.case("qcow2 snapshot: GetSnapshotBlock twice from one raw form, made again when the disk changes",
             qcow2_cached)
    tap.case("qcow2 snapshot: its raw form goes with the snapshot, the cache with the emulator",
             cache_follows_snapshot)
    tap.case("qcow2 snapshot: a killed emulator's raw forms go at the next one's first read", cache_leftovers)
    if run.get("server") and run["server"].alive():
        run["server"].stop()


# ---- main ----

def main():
    binary, work, tap = protocol_setup(sys.argv, "kiln-ebs-protocol-")
    server = None
    try:
        state_dir = os.path.join(work, "state")
        os.makedirs(state_dir)
        accounts = os.path.join(work, "accounts.json")
        with open(accounts, "w") as f:
            json.dump({"accounts": [{"id": i, "accessKeyId": k, "secretAccessKey": s}
                                    for i, k, s in ACCOUNTS.values()]}, f)
        STATE.update(binary=binary, state_dir=state_dir, work=work)
        server = Emulator(binary, state_dir=state_dir, accounts=accounts, log_dir=work).start()
        tap.diag(f"{server.url} (state {state_dir})")
        boto3_cases(tap, server.url)
        wire_cases(tap, server.url)
        # A snapshot of the boto3 account the CLIs must not reach.
        STATE["boto3_parent"] = session("boto3").client("ebs", endpoint_url=server.url).start_snapshot(
            VolumeSize=1)["SnapshotId"]
        tap.case("debian boto3 under /usr/bin/python3: write, read, lineage, errors, RegisterImage",
                 debian_boto3_case, server.url)
        home = os.path.join(work, "home")
        os.makedirs(home)
        for label, path, account, by_env in (("deb aws (/usr/bin/aws, --endpoint-url)", "/usr/bin/aws", "debcli",
                                              False),
                                             ("pip aws (AWS_ENDPOINT_URL)", pip_aws(), "pipcli", True)):
            short = account
            if path is None or not os.access(path, os.X_OK):
                tap.case(f"{label}: present", lambda: (_ for _ in ()).throw(Skip("not installed")))
                continue
            tap.diag(label)
            cli_cases(tap, short, Cli(path, server.url, account, by_env, home), work)
        tap.case("the emulator is still alive", lambda: expect(server.alive(), "kiln-emulator died"))
        rc = server.stop()
        tap.case("SIGTERM stops it with status 0", lambda: expect(rc == 0, f"exit status {rc}"))
        restart_cases(tap, binary, work, accounts)
    finally:
        if server and server.alive():
            server.stop()
        if tap.failed and server:
            tail = server.log_tail()
            if tail:
                tap.diag(f"emulator log {server.log_path}:\n{tail}")
        shutil.rmtree(work, ignore_errors=True)
    return tap.done()


if __name__ == "__main__":
    sys.exit(main())
