#!/usr/bin/env python3
"""kiln-emulator's VM Import/Export APIs on the wire, run by `meson test`
(suite emulator, TAP).

usage: import_protocol.py KILN_EMULATOR [FILTER]

One emulator in mock mode with a --state-dir.  One small test disk (a raw
file with a byte pattern in some blocks, holes elsewhere) is converted by
qemu-img to raw, vmdk, vhd, vhdx and qcow2 and put in the emulator's S3;
then:
  boto3    ImportSnapshot of every format -> completed snapshots whose EBS
           direct blocks equal the source; ImportImage -> an available AMI
           mapping the snapshot, launched; Describe filters and paging;
           ClientToken; CancelImportTask; every failure (format mismatch,
           missing object, another account's bucket, a backing file, a
           truncated qcow2, a foreign VMDK extent) ending the task deleted
           with a ClientError and leaving nothing; synchronous refusals;
           ExportImage to RAW, VMDK and VHD compared with the source by
           qemu-img; CancelExportTask
  pip aws  the `aws` on PATH (CLI v1, AWS_ENDPOINT_URL)
  deb aws  Debian's /usr/bin/aws (CLI v2.9, --endpoint-url)
  restart  tasks kept across a restart on --state-dir; a task under way at
           the stop ends completed after the start, never stuck active
A FILTER argument runs only the cases whose name contains it.
"""
import json
import os
import re
import shutil
import subprocess
import sys
import time

import boto3
import botocore
from botocore.config import Config
from botocore.exceptions import ClientError

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from emulator_protocol import Emulator, Fail, Skip, expect, pip_aws, protocol_setup  # noqa: E402

REGION = "us-east-1"
KEY, SECRET, ACCOUNT = "test", "test", "000000000000"
KEY2, SECRET2 = "test2", "test2"
BLOCK = 524288
MiB = 1 << 20
GIB = 1 << 30
BUCKET = "kiln-import"
OTHER_BUCKET = "kiln-import-other"
CLIENT_CONFIG = Config(retries={"total_max_attempts": 1}, connect_timeout=10, read_timeout=120)
FORMATS = {"RAW": ("raw", "raw"), "VMDK": ("vmdk", "vmdk"), "VHD": ("vpc", "vhd"), "VHDX": ("vhdx", "vhdx"),
           "QCOW2": ("qcow2", "qcow2")}
STATE = {}


def session(key=KEY, secret=SECRET):
    return boto3.session.Session(aws_access_key_id=key, aws_secret_access_key=secret, region_name=REGION)


def clients(url, key=KEY, secret=SECRET):
    s = session(key, secret)
    return (s.client("ec2", endpoint_url=url, config=CLIENT_CONFIG),
            s.client("s3", endpoint_url=url, config=CLIENT_CONFIG),
            s.client("ebs", endpoint_url=url, config=CLIENT_CONFIG))


def error_of(fn, **kw):
    try:
        fn(**kw)
    except ClientError as e:
        return e.response["Error"]["Code"], e.response["Error"].get("Message", "")
    raise Fail(f"{getattr(fn, '__name__', fn)} succeeded; expected an error")


def qemu_img(*args):
    p = subprocess.run(["qemu-img"] + [str(a) for a in args], capture_output=True, text=True)
    expect(p.returncode == 0, f"qemu-img {' '.join(map(str, args))}: {p.stderr.strip()}")
    return p.stdout


def make_disks(work):
    """The source raw disk (3 MiB + 4 KiB, data in some blocks) and its
    conversions; returns {API format: path}."""
    src = os.path.join(work, "source.raw")
    size = 3 * MiB + 4096
    with open(src, "wb") as f:
        f.truncate(size)
        for off, tag in ((0, b"boot-sector"), (BLOCK + 1000, b"block-one"), (5 * BLOCK + 7, b"block-five"),
                         (size - 4096, b"last-page")):
            f.seek(off)
            f.write((tag + b"-kiln-") * (3000 // len(tag)))
    out = {}
    for api, (qfmt, ext) in FORMATS.items():
        path = os.path.join(work, f"disk.{ext}")
        if qfmt == "raw":
            shutil.copy(src, path)
        else:
            opts = ["-o", "subformat=dynamic"] if qfmt in ("vpc", "vhdx") else []
            qemu_img("convert", "-f", "raw", "-O", qfmt, *opts, src, path)
        out[api] = path
    STATE["source"] = src
    return out


def wait_task(ec2, task_id, kind="snapshot", timeout=60):
    """The task once it has left active (and deleting)."""
    end = time.monotonic() + timeout
    seen = set()
    while True:
        if kind == "snapshot":
            t = ec2.describe_import_snapshot_tasks(ImportTaskIds=[task_id])["ImportSnapshotTasks"][0]
            status = t["SnapshotTaskDetail"]["Status"]
            seen.add(t["SnapshotTaskDetail"].get("StatusMessage"))
        elif kind == "image":
            t = ec2.describe_import_image_tasks(ImportTaskIds=[task_id])["ImportImageTasks"][0]
            status = t["Status"]
        else:
            t = ec2.describe_export_image_tasks(ExportImageTaskIds=[task_id])["ExportImageTasks"][0]
            status = t["Status"]
        if status not in ("active", "deleting"):
            t["_seen"] = seen
            return t
        expect(time.monotonic() < end, f"{task_id} still {status} after {timeout} s: {t}")
        time.sleep(0.2)


def snapshot_blocks(ebs, sid):
    blocks, token = {}, None
    while True:
        page = ebs.list_snapshot_blocks(SnapshotId=sid, **({"NextToken": token} if token else {}))
        for b in page["Blocks"]:
            blocks[b["BlockIndex"]] = ebs.get_snapshot_block(SnapshotId=sid, BlockIndex=b["BlockIndex"],
                                                             BlockToken=b["BlockToken"])["BlockData"].read()
        token = page.get("NextToken")
        if not token:
            return blocks, page["VolumeSize"]


def expect_snapshot_equals_source(ebs, sid):
    """Every block of the source equals the snapshot's (blocks not listed are zeros)."""
    blocks, gib = snapshot_blocks(ebs, sid)
    with open(STATE["source"], "rb") as f:
        data = f.read()
    n = (len(data) + BLOCK - 1) // BLOCK
    for i in range(n):
        want = data[i * BLOCK:(i + 1) * BLOCK].ljust(BLOCK, b"\0")
        got = blocks.get(i, bytes(BLOCK))
        expect(got == want, f"{sid}: block {i} differs from the source")
    extra = [i for i in blocks if i >= n and blocks[i] != bytes(BLOCK)]
    expect(not extra, f"{sid}: data past the source in blocks {extra}")
    return gib, sorted(blocks)


def put(s3, bucket, key, path=None, body=None):
    if path:
        with open(path, "rb") as f:
            body = f.read()
    s3.put_object(Bucket=bucket, Key=key, Body=body)


def import_snapshot(ec2, fmt, key, **kw):
    r = ec2.import_snapshot(DiskContainer={"Format": fmt, "UserBucket": {"S3Bucket": BUCKET, "S3Key": key}}, **kw)
    expect(re.fullmatch(r"import-snap-[0-9a-f]{17}", r["ImportTaskId"]), f"ImportTaskId {r['ImportTaskId']!r}")
    return r


def expect_deleted(ec2, task_id, message_re, kind="snapshot"):
    t = wait_task(ec2, task_id, kind)
    if kind == "snapshot":
        d = t["SnapshotTaskDetail"]
        status, msg = d["Status"], d.get("StatusMessage", "")
        expect("SnapshotId" not in d, f"{task_id}: a snapshot was named: {d}")
    else:
        status, msg = t["Status"], t.get("StatusMessage", "")
        expect("ImageId" not in t, f"{task_id}: an image was named: {t}")
    expect(status == "deleted", f"{task_id}: status {status}, expected deleted ({msg})")
    expect(re.search(message_re, msg), f"{task_id}: statusMessage {msg!r} does not match /{message_re}/")
    snaps = ec2.describe_snapshots(OwnerIds=["self"])["Snapshots"]
    left = [s["SnapshotId"] for s in snaps if task_id in s.get("Description", "")]
    expect(not left, f"{task_id}: snapshots left behind: {left}")
    return f"{task_id} deleted: {msg}"


# ---- boto3 ----

def boto3_cases(tap, url, work, disks):
    ec2, s3, ebs = clients(url)
    ec2_2, s3_2, _ = clients(url, KEY2, SECRET2)
    b = {}

    def upload():
        s3.create_bucket(Bucket=BUCKET)
        for api, path in disks.items():
            put(s3, BUCKET, f"disks/{os.path.basename(path)}", path)
        s3_2.create_bucket(Bucket=OTHER_BUCKET)
        put(s3_2, OTHER_BUCKET, "disk.raw", disks["RAW"])
        return ", ".join(f"{api} {os.path.getsize(p)} B" for api, p in disks.items())

    tap.case("setup: the test disk in five formats uploaded to S3 (and one in another account's bucket)", upload)

    def import_format(api):
        key = f"disks/{os.path.basename(disks[api])}"
        r = import_snapshot(ec2, api, key, Description=f"kiln {api}", RoleName="vmimport", TagSpecifications=[
            {"ResourceType": "import-snapshot-task", "Tags": [{"Key": "format", "Value": api}]}])
        d = r["SnapshotTaskDetail"]
        expect(d["Status"] == "active" and d["Format"] == api and d["UserBucket"] == {"S3Bucket": BUCKET, "S3Key": key},
               f"reply {r}")
        expect({t["Key"]: t["Value"] for t in r.get("Tags", [])} == {"format": api}, f"tags {r.get('Tags')}")
        t = wait_task(ec2, r["ImportTaskId"])
        d = t["SnapshotTaskDetail"]
        expect(d["Status"] == "completed" and d.get("SnapshotId"), f"task {t}")
        expect(d["DiskImageSize"] == float(os.path.getsize(disks[api])), f"DiskImageSize {d['DiskImageSize']}")
        snap = ec2.describe_snapshots(SnapshotIds=[d["SnapshotId"]])["Snapshots"][0]
        expect(snap["State"] == "completed" and snap["VolumeSize"] == 1, f"snapshot {snap}")
        gib, listed = expect_snapshot_equals_source(ebs, d["SnapshotId"])
        b.setdefault("snapshots", {})[api] = d["SnapshotId"]
        return f"{r['ImportTaskId']} -> {d['SnapshotId']} ({gib} GiB, blocks {listed}) equals the source"

    for api in FORMATS:
        tap.case(f"boto3: import-snapshot {api} -> completed snapshot, EBS direct blocks equal the source",
                 import_format, api)

    def waiter():
        r = import_snapshot(ec2, "raw", "disks/disk.raw")
        ec2.get_waiter("snapshot_imported").wait(ImportTaskIds=[r["ImportTaskId"]],
                                                 WaiterConfig={"Delay": 1, "MaxAttempts": 30})
        return f"{r['ImportTaskId']}: SnapshotImported waiter satisfied (format 'raw' taken in any case)"

    tap.case("boto3: SnapshotImported waiter", waiter)

    def import_image():
        r = ec2.import_image(DiskContainers=[{"Format": "VHDX", "Description": "root disk",
                                              "UserBucket": {"S3Bucket": BUCKET, "S3Key": "disks/disk.vhdx"}}],
                             Description="kiln image", Architecture="x86_64", Platform="Linux", BootMode="uefi",
                             LicenseType="BYOL", RoleName="vmimport", TagSpecifications=[
                                 {"ResourceType": "import-image-task", "Tags": [{"Key": "Name", "Value": "img"}]}])
        expect(re.fullmatch(r"import-ami-[0-9a-f]{17}", r["ImportTaskId"]) and r["Status"] == "active", f"reply {r}")
        expect(r["SnapshotDetails"][0]["Format"] == "VHDX", f"reply {r}")
        t = wait_task(ec2, r["ImportTaskId"], "image")
        expect(t["Status"] == "completed" and t.get("ImageId"), f"task {t}")
        expect((t["Architecture"], t["Platform"], t["BootMode"], t["LicenseType"]) == ("x86_64", "Linux", "uefi",
                                                                                         "BYOL"), f"task {t}")
        sd = t["SnapshotDetails"][0]
        expect(sd["Status"] == "completed" and sd.get("SnapshotId") and sd["DeviceName"] == "/dev/sda1", f"{sd}")
        img = ec2.describe_images(ImageIds=[t["ImageId"]])["Images"][0]
        expect(img["State"] == "available" and img["Name"] == r["ImportTaskId"], f"image {img}")
        bdm = img["BlockDeviceMappings"][0]
        expect(bdm["Ebs"]["SnapshotId"] == sd["SnapshotId"] and img["RootDeviceName"] == bdm["DeviceName"],
               f"mapping {img['BlockDeviceMappings']}")
        expect(img.get("BootMode") == "uefi", f"BootMode {img.get('BootMode')}")
        ec2.get_waiter("image_available").wait(ImageIds=[t["ImageId"]], WaiterConfig={"Delay": 1, "MaxAttempts": 5})
        expect_snapshot_equals_source(ebs, sd["SnapshotId"])
        inst = ec2.run_instances(ImageId=t["ImageId"], MinCount=1, MaxCount=1)["Instances"][0]
        ec2.terminate_instances(InstanceIds=[inst["InstanceId"]])
        b["image"], b["image_task"] = t["ImageId"], r["ImportTaskId"]
        return f"{r['ImportTaskId']} -> {t['ImageId']} available on {sd['SnapshotId']}; launched {inst['InstanceId']}"

    tap.case("boto3: import-image VHDX -> available AMI mapping the imported snapshot, launchable", import_image)

    def idempotent():
        first = import_snapshot(ec2, "QCOW2", "disks/disk.qcow2", ClientToken="kiln-token-1")
        again = import_snapshot(ec2, "QCOW2", "disks/disk.qcow2", ClientToken="kiln-token-1")
        expect(first["ImportTaskId"] == again["ImportTaskId"], f"{first['ImportTaskId']} then {again['ImportTaskId']}")
        img1 = ec2.import_image(ClientToken="kiln-token-1", DiskContainers=[
            {"Format": "RAW", "UserBucket": {"S3Bucket": BUCKET, "S3Key": "disks/disk.raw"}}])
        img2 = ec2.import_image(ClientToken="kiln-token-1", DiskContainers=[
            {"Format": "RAW", "UserBucket": {"S3Bucket": BUCKET, "S3Key": "disks/disk.raw"}}])
        expect(img1["ImportTaskId"] == img2["ImportTaskId"], f"{img1['ImportTaskId']} then {img2['ImportTaskId']}")
        expect(wait_task(ec2, img1["ImportTaskId"], "image")["Status"] == "completed", "image task did not complete")
        wait_task(ec2, first["ImportTaskId"])
        return f"snapshot token -> {first['ImportTaskId']} twice; image token -> {img1['ImportTaskId']} twice"

    tap.case("boto3: ClientToken returns the same task", idempotent)

    def failures():
        out = []
        r = import_snapshot(ec2, "RAW", "disks/disk.qcow2")
        out.append(expect_deleted(ec2, r["ImportTaskId"], r"^ClientError: .*qcow2.*not RAW"))
        r = import_snapshot(ec2, "VMDK", "disks/disk.qcow2")
        out.append(expect_deleted(ec2, r["ImportTaskId"], r"^ClientError: "))
        r = import_snapshot(ec2, "RAW", "disks/no-such-disk.raw")
        out.append(expect_deleted(ec2, r["ImportTaskId"], r"^ClientError: .*no such key"))
        r = ec2.import_snapshot(DiskContainer={"Format": "RAW", "UserBucket": {"S3Bucket": OTHER_BUCKET,
                                                                               "S3Key": "disk.raw"}})
        out.append(expect_deleted(ec2, r["ImportTaskId"], r"^ClientError: .*another account"))
        r = ec2.import_snapshot(DiskContainer={"Format": "RAW", "UserBucket": {"S3Bucket": "kiln-no-such-bucket",
                                                                               "S3Key": "disk.raw"}})
        out.append(expect_deleted(ec2, r["ImportTaskId"], r"^ClientError: .*does not exist"))
        # A qcow2 whose backing file is a file of this host.
        back = os.path.join(work, "backed.qcow2")
        qemu_img("create", "-f", "qcow2", "-b", STATE["source"], "-F", "raw", back)
        put(s3, BUCKET, "disks/backed.qcow2", back)
        r = import_snapshot(ec2, "QCOW2", "disks/backed.qcow2")
        out.append(expect_deleted(ec2, r["ImportTaskId"], r"^ClientError: .*backing file"))
        # A VMDK descriptor whose extent is a file of this host.
        desc = ('# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\ncreateType="monolithicFlat"\n'
                f'RW 2048 FLAT "{STATE["source"]}" 0\n').encode()
        put(s3, BUCKET, "disks/extent.vmdk", body=desc)
        r = import_snapshot(ec2, "VMDK", "disks/extent.vmdk")
        out.append(expect_deleted(ec2, r["ImportTaskId"], r"^ClientError: .*extent"))
        # Truncated qcow2 and VMDK: they open, only a check sees the loss.
        for api, key in (("QCOW2", "disk.qcow2"), ("VMDK", "disk.vmdk")):
            with open(disks[api], "rb") as f:
                data = f.read()
            put(s3, BUCKET, f"disks/cut-{key}", body=data[:len(data) // 2])
            r = import_snapshot(ec2, api, f"disks/cut-{key}")
            out.append(expect_deleted(ec2, r["ImportTaskId"], r"^ClientError: .*(corrupt|truncated|valid)"))
        r = ec2.import_image(DiskContainers=[{"Format": "RAW", "Url": f"s3://{BUCKET}/disks/disk.qcow2"}])
        out.append(expect_deleted(ec2, r["ImportTaskId"], r"^ClientError: ", "image"))
        return "\n".join(out)

    tap.case("boto3: mismatched format, missing object or bucket, another account's bucket, backing file, foreign "
             "extent, truncated qcow2/vmdk -> deleted with ClientError, nothing made", failures)

    def refusals():
        out = []
        for kw, code in (
                ({"DiskContainer": {"Format": "RAW", "Url": "https://example.com/disk.raw"}}, "UnsupportedOperation"),
                ({"DiskContainer": {"Format": "RAW", "UserBucket": {"S3Bucket": BUCKET, "S3Key": "disks/disk.raw"}},
                  "Encrypted": True}, "UnsupportedOperation"),
                ({"DiskContainer": {"Format": "ISO", "UserBucket": {"S3Bucket": BUCKET, "S3Key": "k"}}},
                 "InvalidParameterValue"),
                ({"DiskContainer": {"UserBucket": {"S3Bucket": BUCKET, "S3Key": "k"}}}, "MissingParameter"),
                ({"DiskContainer": {"Format": "RAW"}}, "MissingParameter"),
                ({"DiskContainer": {"Format": "RAW", "UserBucket": {"S3Bucket": BUCKET, "S3Key": "k"}},
                  "TagSpecifications": [{"ResourceType": "image", "Tags": [{"Key": "a", "Value": "b"}]}]},
                 "InvalidParameterValue")):
            c, m = error_of(ec2.import_snapshot, **kw)
            expect(c == code, f"{kw}: {c} ({m}), expected {code}")
            out.append(f"{c}: {m}")
        two = [{"Format": "RAW", "UserBucket": {"S3Bucket": BUCKET, "S3Key": "disks/disk.raw"}}] * 2
        c, m = error_of(ec2.import_image, DiskContainers=two)
        expect(c == "UnsupportedOperation", f"two disks: {c} {m}")
        out.append(f"{c}: {m}")
        c, m = error_of(ec2.import_image, DiskContainers=two[:1], Platform="Windows")
        expect(c == "InvalidParameterValue", f"Windows: {c} {m}")
        west = session().client("s3", region_name="us-west-2", endpoint_url=url, config=CLIENT_CONFIG)
        west.create_bucket(Bucket="kiln-import-west", CreateBucketConfiguration={"LocationConstraint": "us-west-2"})
        c, m = error_of(ec2.import_snapshot, DiskContainer={"Format": "RAW", "UserBucket": {
            "S3Bucket": "kiln-import-west", "S3Key": "k"}})
        expect(c == "InvalidParameter" and "not local" in m, f"bucket in another region: {c} {m}")
        out.append(f"{c}: {m}")
        for fn, kw, code in (
                (ec2.describe_import_snapshot_tasks, {"ImportTaskIds": ["import-snap-nothex"]},
                 "InvalidConversionTaskId.Malformed"),
                (ec2.describe_import_snapshot_tasks, {"ImportTaskIds": ["import-snap-0123456789abcdef0"]},
                 "InvalidConversionTaskId"),
                (ec2.describe_import_image_tasks, {"ImportTaskIds": ["import-ami-0123456789abcdef0"]},
                 "InvalidConversionTaskId"),
                (ec2.describe_import_image_tasks, {"Filters": [{"Name": "colour", "Values": ["x"]}]},
                 "InvalidParameterValue"),
                (ec2.cancel_import_task, {"ImportTaskId": "import-ami-0123456789abcdef0"}, "InvalidConversionTaskId"),
                (ec2.cancel_import_task, {"ImportTaskId": "ami-0123456789abcdef0"},
                 "InvalidConversionTaskId.Malformed")):
            c, m = error_of(fn, **kw)
            expect(c == code, f"{kw}: {c} ({m}), expected {code}")
            out.append(f"{c}: {m}")
        return "\n".join(out)

    tap.case("boto3: synchronous refusals (Url, Encrypted, formats, missing parameters, tag types, two disks, "
             "Windows, another region's bucket, task ids)", refusals)

    def describe_filters_paging():
        all_ids = [t["ImportTaskId"] for t in ec2.describe_import_snapshot_tasks()["ImportSnapshotTasks"]]
        completed = ec2.describe_import_snapshot_tasks(Filters=[{"Name": "task-state", "Values": ["completed"]}])
        deleted = ec2.describe_import_snapshot_tasks(Filters=[{"Name": "task-state", "Values": ["deleted"]}])
        c_ids = [t["ImportTaskId"] for t in completed["ImportSnapshotTasks"]]
        d_ids = [t["ImportTaskId"] for t in deleted["ImportSnapshotTasks"]]
        expect(all(t["SnapshotTaskDetail"]["Status"] == "completed" for t in completed["ImportSnapshotTasks"]),
               "filter completed returned others")
        expect(sorted(c_ids + d_ids) == sorted(all_ids), f"completed {len(c_ids)} + deleted {len(d_ids)} != "
               f"{len(all_ids)}")
        paged, token, pages = [], None, 0
        while True:
            kw = {"MaxResults": 3}
            if token:
                kw["NextToken"] = token
            page = ec2.describe_import_snapshot_tasks(**kw)
            paged += [t["ImportTaskId"] for t in page["ImportSnapshotTasks"]]
            pages += 1
            token = page.get("NextToken")
            if not token:
                break
        expect(paged == all_ids, f"paging gave {len(paged)} tasks, not {len(all_ids)}")
        pag = ec2.get_paginator("describe_import_image_tasks")
        images = [t["ImportTaskId"] for p in pag.paginate(PaginationConfig={"PageSize": 1})
                  for t in p["ImportImageTasks"]]
        expect(b["image_task"] in images, f"{b['image_task']} not listed by the paginator")
        one = ec2.describe_import_image_tasks(ImportTaskIds=[b["image_task"]])["ImportImageTasks"]
        expect(len(one) == 1 and one[0]["ImportTaskId"] == b["image_task"], f"by id: {one}")
        other = ec2_2.describe_import_snapshot_tasks()["ImportSnapshotTasks"]
        expect(not set(t["ImportTaskId"] for t in other) & set(all_ids), "another account sees the tasks")
        return (f"{len(all_ids)} tasks: {len(c_ids)} completed, {len(d_ids)} deleted; {pages} pages of 3; "
                f"{len(images)} image tasks through the paginator")

    tap.case("boto3: describe with task-state filters, MaxResults/NextToken, paginator, by id, per account",
             describe_filters_paging)

    def cancel():
        big = os.path.join(work, "big.raw")
        with open(big, "wb") as f:
            f.write(os.urandom(48 * MiB))
        put(s3, BUCKET, "disks/big.raw", big)
        ids = [import_snapshot(ec2, "RAW", "disks/big.raw")["ImportTaskId"] for _ in range(4)]
        r = ec2.cancel_import_task(ImportTaskId=ids[-1], CancelReason="kiln test")
        expect((r["ImportTaskId"], r["PreviousState"], r["State"]) == (ids[-1], "active", "deleting"), f"reply {r}")
        out = [expect_deleted(ec2, ids[-1], r"kiln test")]
        img = ec2.import_image(DiskContainers=[{"Format": "RAW", "UserBucket": {"S3Bucket": BUCKET,
                                                                                 "S3Key": "disks/big.raw"}}])
        r = ec2.cancel_import_task(ImportTaskId=img["ImportTaskId"])
        expect(r["State"] == "deleting", f"reply {r}")
        out.append(expect_deleted(ec2, img["ImportTaskId"], r".", "image"))
        for i in ids[:-1]:
            expect(wait_task(ec2, i)["SnapshotTaskDetail"]["Status"] == "completed", f"{i} did not complete")
        c, m = error_of(ec2.cancel_import_task, ImportTaskId=ids[0])
        expect(c == "IncorrectState", f"cancel a completed task: {c} {m}")
        out.append(f"cancel of completed {ids[0]}: {c}: {m}")
        return "\n".join(out)

    tap.case("boto3: cancel-import-task (snapshot and image) -> deleting then deleted, nothing made; a completed "
             "task cannot be cancelled", cancel)

    def export(fmt, qfmt, ext):
        r = ec2.export_image(ImageId=b["image"], DiskImageFormat=fmt, RoleName="vmimport", Description=f"out {fmt}",
                             S3ExportLocation={"S3Bucket": BUCKET, "S3Prefix": "exports/"}, TagSpecifications=[
                                 {"ResourceType": "export-image-task", "Tags": [{"Key": "fmt", "Value": fmt}]}])
        tid = r["ExportImageTaskId"]
        expect(re.fullmatch(r"export-ami-[0-9a-f]{17}", tid) and r["Status"] == "active", f"reply {r}")
        expect(r["DiskImageFormat"] == fmt and r["S3ExportLocation"] == {"S3Bucket": BUCKET, "S3Prefix": "exports/"},
               f"reply {r}")
        t = wait_task(ec2, tid, "export")
        expect(t["Status"] == "completed", f"task {t}")
        expect({x["Key"]: x["Value"] for x in t.get("Tags", [])} == {"fmt": fmt}, f"tags {t.get('Tags')}")
        key = f"exports/{tid}.{ext}"
        path = os.path.join(work, f"{tid}.{ext}")
        s3.download_file(BUCKET, key, path)
        info = json.loads(qemu_img("info", "--output=json", "-f", qfmt, path))
        expect(info["virtual-size"] == GIB, f"{key}: virtual size {info['virtual-size']}")
        back = path + ".raw"
        qemu_img("convert", "-f", qfmt, "-O", "raw", path, back)
        qemu_img("compare", "-f", "raw", "-F", "raw", STATE["source"], back)
        os.unlink(back)
        return f"{tid}: s3://{BUCKET}/{key} ({os.path.getsize(path)} B, {qfmt}) equals the source"

    for fmt, qfmt, ext in (("RAW", "raw", "raw"), ("VMDK", "vmdk", "vmdk"), ("VHD", "vpc", "vhd")):
        tap.case(f"boto3: export-image {fmt} -> S3 object that qemu-img finds equal to the source", export, fmt, qfmt,
                 ext)

    def export_refusals():
        out = []
        for kw, code in (
                ({"S3ExportLocation": {"S3Bucket": OTHER_BUCKET}}, "InvalidParameter"),
                ({"S3ExportLocation": {"S3Bucket": "kiln-no-such-bucket"}}, "InvalidParameter"),
                ({"S3ExportLocation": {"S3Bucket": BUCKET}, "DiskImageFormat": "QCOW2"}, "InvalidParameterValue"),
                ({"S3ExportLocation": {"S3Bucket": BUCKET}, "ImageId": "ami-0123456789abcdef0"},
                 "InvalidAMIID.NotFound")):
            args = {"ImageId": b["image"], "DiskImageFormat": "RAW"}
            args.update(kw)
            c, m = error_of(ec2.export_image, **args)
            expect(c == code, f"{kw}: {c} ({m}), expected {code}")
            out.append(f"{c}: {m}")
        done = ec2.describe_export_image_tasks(Filters=[{"Name": "task-state", "Values": ["completed"]}])
        expect(len(done["ExportImageTasks"]) >= 3, f"completed exports: {done['ExportImageTasks']}")
        page = ec2.describe_export_image_tasks(MaxResults=1)
        expect(len(page["ExportImageTasks"]) == 1 and page.get("NextToken"), f"page {page}")
        # Cancel: queued behind an import of the big disk, still active.
        slow = import_snapshot(ec2, "RAW", "disks/big.raw")
        r = ec2.export_image(ImageId=b["image"], DiskImageFormat="RAW", S3ExportLocation={"S3Bucket": BUCKET,
                                                                                           "S3Prefix": "cancel/"})
        ec2.cancel_export_task(ExportTaskId=r["ExportImageTaskId"])
        t = wait_task(ec2, r["ExportImageTaskId"], "export")
        expect(t["Status"] == "deleted", f"cancelled export: {t}")
        expect("Contents" not in s3.list_objects_v2(Bucket=BUCKET, Prefix="cancel/"), "a cancelled export wrote")
        wait_task(ec2, slow["ImportTaskId"])
        out.append(f"{r['ExportImageTaskId']} cancelled: {t.get('StatusMessage')}")
        return "\n".join(out)

    tap.case("boto3: export-image refusals (buckets, format, AMI), describe filters/paging, cancel-export-task",
             export_refusals)


# ---- the CLIs ----

class Cli:
    def __init__(self, path, url, by_env, home):
        self.path, self.url, self.by_env = path, url, by_env
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        self.env.update({"AWS_ACCESS_KEY_ID": KEY, "AWS_SECRET_ACCESS_KEY": SECRET, "AWS_DEFAULT_REGION": REGION,
                         "AWS_CONFIG_FILE": "/dev/null", "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
                         "AWS_PAGER": "", "AWS_EC2_METADATA_DISABLED": "true", "HOME": home})
        if by_env:
            self.env["AWS_ENDPOINT_URL"] = url

    def json(self, *args):
        cmd = [self.path] + ([] if self.by_env else ["--endpoint-url", self.url]) + ["--output", "json"] + list(args)
        p = subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=300)
        expect(p.returncode == 0, f"aws {' '.join(args)}: exit {p.returncode}: {(p.stderr or p.stdout).strip()[-800:]}")
        return json.loads(p.stdout) if p.stdout.strip() else {}

    def error(self, *args):
        cmd = [self.path] + ([] if self.by_env else ["--endpoint-url", self.url]) + list(args)
        p = subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=300)
        expect(p.returncode != 0, f"aws {' '.join(args)} succeeded; expected an error")
        m = re.search(r"An error occurred \(([^)]+)\)", p.stderr)
        return m.group(1) if m else p.stderr.strip()[-300:]


def cli_wait(cli, what, task_id, path):
    end = time.monotonic() + 60
    while True:
        r = cli.json("ec2", what, "--import-task-ids" if "import" in what else "--export-image-task-ids", task_id)
        t = r[path][0]
        status = t["SnapshotTaskDetail"]["Status"] if "SnapshotTaskDetail" in t else t["Status"]
        if status not in ("active", "deleting"):
            return t
        expect(time.monotonic() < end, f"{task_id} still {status}")
        time.sleep(0.3)


def cli_cases(tap, label, cli, url):
    _, _, ebs = clients(url)

    def snapshot():
        r = cli.json("ec2", "import-snapshot", "--description", f"{label} raw", "--disk-container",
                     f"Format=VMDK,UserBucket={{S3Bucket={BUCKET},S3Key=disks/disk.vmdk}}")
        tid = r["ImportTaskId"]
        expect(r["SnapshotTaskDetail"]["Status"] == "active", f"reply {r}")
        t = cli_wait(cli, "describe-import-snapshot-tasks", tid, "ImportSnapshotTasks")
        d = t["SnapshotTaskDetail"]
        expect(d["Status"] == "completed" and d["Format"] == "VMDK", f"task {t}")
        expect_snapshot_equals_source(ebs, d["SnapshotId"])
        listed = cli.json("ec2", "describe-import-snapshot-tasks", "--filters", "Name=task-state,Values=completed",
                          "--max-results", "2")
        expect(len(listed["ImportSnapshotTasks"]) == 2 and listed.get("NextToken"), f"page {listed}")
        code = cli.error("ec2", "describe-import-snapshot-tasks", "--import-task-ids", "import-snap-zz")
        expect(code == "InvalidConversionTaskId.Malformed", f"malformed id: {code}")
        return f"{tid} -> {d['SnapshotId']} equals the source; filtered page of 2 with NextToken; {code}"

    def image():
        r = cli.json("ec2", "import-image", "--description", f"{label} image", "--boot-mode", "legacy-bios",
                     "--disk-containers", f"Format=qcow2,Url=s3://{BUCKET}/disks/disk.qcow2")
        tid = r["ImportTaskId"]
        t = cli_wait(cli, "describe-import-image-tasks", tid, "ImportImageTasks")
        expect(t["Status"] == "completed" and t.get("ImageId"), f"task {t}")
        img = cli.json("ec2", "describe-images", "--image-ids", t["ImageId"])["Images"][0]
        expect(img["State"] == "available" and img["BlockDeviceMappings"][0]["Ebs"]["SnapshotId"]
               == t["SnapshotDetails"][0]["SnapshotId"], f"image {img}")
        e = cli.json("ec2", "export-image", "--image-id", t["ImageId"], "--disk-image-format", "VMDK",
                     "--s3-export-location", f"S3Bucket={BUCKET},S3Prefix={label}/")
        et = cli_wait(cli, "describe-export-image-tasks", e["ExportImageTaskId"], "ExportImageTasks")
        expect(et["Status"] == "completed", f"export {et}")
        head = cli.json("s3api", "head-object", "--bucket", BUCKET, "--key",
                        f"{label}/{e['ExportImageTaskId']}.vmdk")
        code = cli.error("ec2", "cancel-import-task", "--import-task-id", tid)
        expect(code == "IncorrectState", f"cancel completed: {code}")
        return (f"{tid} -> {t['ImageId']}; {e['ExportImageTaskId']} -> {label}/...vmdk "
                f"({head['ContentLength']} B); cancel after completion: {code}")

    tap.case(f"{label}: import-snapshot VMDK, describe with filter and paging, malformed id", snapshot)
    tap.case(f"{label}: import-image qcow2 by s3:// Url, describe-images, export-image VMDK, cancel refused", image)


# ---- restart ----

def restart_case(server):
    ec2, _, ebs = clients(server.url)
    before = {t["ImportTaskId"]: t["SnapshotTaskDetail"]["Status"]
              for t in ec2.describe_import_snapshot_tasks()["ImportSnapshotTasks"]}
    images = {t["ImportTaskId"]: t["Status"] for t in ec2.describe_import_image_tasks()["ImportImageTasks"]}
    exports = {t["ExportImageTaskId"]: t["Status"] for t in ec2.describe_export_image_tasks()["ExportImageTasks"]}
    # Under way when the emulator stops: queued behind two big imports.
    queued = [import_snapshot(ec2, "RAW", "disks/big.raw")["ImportTaskId"] for _ in range(2)]
    last = import_snapshot(ec2, "VHD", "disks/disk.vhd")["ImportTaskId"]
    rc = server.stop()
    expect(rc == 0, f"emulator exit status {rc}")
    server.start()
    ec2, _, ebs = clients(server.url)
    after = {t["ImportTaskId"]: t["SnapshotTaskDetail"]["Status"]
             for t in ec2.describe_import_snapshot_tasks()["ImportSnapshotTasks"]}
    for tid, status in before.items():
        expect(after.get(tid) == status, f"{tid}: {status} before the restart, {after.get(tid)} after")
    expect({t["ImportTaskId"]: t["Status"] for t in ec2.describe_import_image_tasks()["ImportImageTasks"]} == images,
           "image tasks changed across the restart")
    expect({t["ExportImageTaskId"]: t["Status"]
            for t in ec2.describe_export_image_tasks()["ExportImageTasks"]} == exports,
           "export tasks changed across the restart")
    for tid in queued + [last]:
        t = wait_task(ec2, tid, timeout=120)
        expect(t["SnapshotTaskDetail"]["Status"] == "completed", f"{tid} after the restart: {t}")
    d = wait_task(ec2, last)["SnapshotTaskDetail"]
    expect_snapshot_equals_source(ebs, d["SnapshotId"])
    return (f"{len(before)} snapshot, {len(images)} image, {len(exports)} export tasks kept; the 3 under way at "
            f"the stop completed after the start")


def main():
    binary, work, tap = protocol_setup(sys.argv, "kiln-import-protocol-")
    if shutil.which("qemu-img") is None:
        tap.case("qemu-img present", lambda: (_ for _ in ()).throw(Skip("qemu-img is not installed")))
        return tap.done()
    state_dir = os.path.join(work, "state")
    os.makedirs(state_dir)
    server = Emulator(binary, state_dir=state_dir, log_dir=work)
    try:
        server.start()
        tap.diag(f"emulator {server.url} (state {state_dir})")
        home = os.path.join(work, "home")
        os.makedirs(home)
        disks = make_disks(work)
        boto3_cases(tap, server.url, work, disks)
        for label, path, by_env in (("pip aws (AWS_ENDPOINT_URL)", pip_aws(), True),
                                    ("debian aws (/usr/bin/aws, --endpoint-url)", "/usr/bin/aws", False)):
            if path is None or not os.access(path, os.X_OK):
                tap.case(f"{label}: present", lambda: (_ for _ in ()).throw(Skip("not installed")))
                continue
            cli_cases(tap, "pipcli" if by_env else "debcli", Cli(path, server.url, by_env, home), server.url)
        tap.case("the emulator is still alive", lambda: expect(server.alive(), "the emulator died"))
        tap.case("restart on --state-dir: tasks kept, tasks under way at the stop complete after it", restart_case,
                 server)
    finally:
        if server.alive():
            server.stop()
        if tap.failed:
            tail = server.log_tail()
            if tail:
                tap.diag(f"emulator log {server.log_path}:\n{tail}")
        shutil.rmtree(work, ignore_errors=True)
    return tap.done()


if __name__ == "__main__":
    sys.exit(main())
