#!/usr/bin/env python3
"""kiln-emulator against an attacker and a careless client (suite emulator,
TAP).  usage: hardening.py KILN_EMULATOR [FILTER]

Mock instances, loopback only, every loop bounded in count and time.  The
emulator's memory is read from /proc (VmHWM, its peak) and its disk use from
its state directory.

  indices     signed requests whose list indices have leading zeros
              (Owner.01, Filter.01.Value.01, InstanceId.01, ...) to the 21
              actions one of which once crashed it: well-formed replies, and
              the emulator alive
  preauth     a 64 MiB S3 PUT with an unknown key, another with a known key
              and a wrong signature, sent without Expect: refused at once,
              nothing written under the state directory, no memory spent;
              40 connections declaring 10 MiB EC2 bodies with an unknown key:
              each refused from its head, peak memory unmoved
  slow-heads  1,100 connections sending their heads one byte a second while 12
              ordinary requests run: every ordinary request answers, and the
              slow ones are cut within the head deadline (10 s) plus slack
  entities    DeleteObjects bodies with an internal entity referenced 2,000
              times and with an external DTD: MalformedXML, memory unmoved
  utf8        invalid UTF-8 and control characters in EC2 parameters and S3
              keys: every reply parses as XML
  unsigned    EC2 and SSM requests signed over UNSIGNED-PAYLOAD, and a body
              swapped under one: refused, nothing created
  delete-tags DeleteTags on a missing AMI and on another account's key pair:
              not found, as CreateTags says
  scope       an EC2 request signed for ssm, an S3 PUT signed for ec2, an SSM
              request signed for ec2: each gets the error of the service it
              was sent to; boto3 with a session token nobody issued: refused
  kill-9      a writer (S3 PUTs, SSM parameters) acknowledged writes while the
              emulator was SIGKILLed at random moments (5 trials): after each
              restart every acknowledged write is there, and no S3 data file
              is left that no object names, nor anything in s3/tmp
"""
import http.client
import json
import os
import random
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
import urllib.parse
import xml.etree.ElementTree as ET

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from emulator_protocol import (  # noqa: E402
    EC2_CALL, Emulator, Fail, Tap, Wire, ec2_wire, expect, send, sign)

import boto3  # noqa: E402
from botocore.config import Config  # noqa: E402
from botocore.exceptions import ClientError  # noqa: E402

MIB = 1024 * 1024


def peak_kib(emu):
    with open(f"/proc/{emu.proc.pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def tree_bytes(path):
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                pass
    return total


def client(url, service, key="test", secret="test"):
    return boto3.client(service, endpoint_url=url, region_name="us-east-1", aws_access_key_id=key,
                        aws_secret_access_key=secret,
                        config=Config(retries={"max_attempts": 1}, s3={"addressing_style": "path"}))


def raw_exchange(url, method, target, headers, body=b"", send_body=True, timeout=10):
    """Sends head (and body unless send_body is False) and reads the reply;
    a server that answers from the head and closes may reset the rest."""
    p = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(p.hostname, p.port, timeout=timeout)
    try:
        conn.putrequest(method, target, skip_accept_encoding=True)
        for k, v in headers.items():
            conn.putheader(k, v)
        conn.putheader("Content-Length", str(len(body)))
        conn.endheaders()
        sent = 0
        if send_body:
            try:
                view = memoryview(body)
                while sent < len(body):
                    conn.sock.sendall(view[sent:sent + MIB])
                    sent += MIB
            except (BrokenPipeError, ConnectionResetError):
                pass
        r = conn.getresponse()
        return r.status, r.read(), min(sent, len(body))
    finally:
        conn.close()


# ---- cases ----

INDEX_REQUESTS = [
    "Action=DescribeSnapshots&Owner.01=self",
    "Action=DescribeSnapshots&SnapshotId.01=snap-0123456789abcdef0",
    "Action=DescribeSnapshots&Filter.01.Name=status&Filter.01.Value.01=completed",
    "Action=DescribeImages&Owner.01=self",
    "Action=DescribeImages&ImageId.001=ami-0123456789abcdef0",
    "Action=DescribeImages&ExecutableBy.01=self",
    "Action=DescribeInstances&InstanceId.01=i-0123456789abcdef0",
    "Action=DescribeInstances&Filter.1.Name=instance-state-name&Filter.1.Value.01=running",
    "Action=DescribeInstanceStatus&InstanceId.01=i-0123456789abcdef0",
    "Action=TerminateInstances&InstanceId.01=i-0123456789abcdef0",
    "Action=StopInstances&InstanceId.01=i-0123456789abcdef0",
    "Action=StartInstances&InstanceId.01=i-0123456789abcdef0",
    "Action=RebootInstances&InstanceId.01=i-0123456789abcdef0",
    "Action=CreateTags&ResourceId.01=ami-0123456789abcdef0&Tag.01.Key=k&Tag.01.Value=v",
    "Action=DeleteTags&ResourceId.01=ami-0123456789abcdef0&Tag.01.Key=k",
    "Action=DescribeTags&Filter.01.Name=key&Filter.01.Value.01=k",
    "Action=DescribeKeyPairs&KeyName.01=missing",
    "Action=DescribeRegions&RegionName.01=us-east-1",
    "Action=DescribeAvailabilityZones&ZoneName.01=us-east-1a",
    "Action=DescribeImportSnapshotTasks&ImportTaskId.01=import-snap-0123456789abcdef0",
    "Action=DescribeExportImageTasks&ExportImageTaskId.01=export-ami-0123456789abcdef0",
]


def indices_case(emu):
    answered = 0
    for q in INDEX_REQUESTS:
        r = send(emu.url, ec2_wire(emu.url, q + "&Version=2016-11-15"))
        expect(emu.alive(), f"the emulator died on {q}:\n{emu.log_tail()}")
        expect(r.status in (200, 400), f"{q}: HTTP {r.status}: {r.text()}")
        r.xml()
        answered += 1
    r = send(emu.url, ec2_wire(emu.url, "Action=DescribeRegions&Version=2016-11-15&RegionName.01=us-east-1"))
    names = [e.text for e in r.xml().iter() if e.tag.endswith("regionName")]
    expect(names == ["us-east-1"], f"RegionName.01 is not member 1: {names}")
    return f"{answered} requests with leading-zero indices answered; the emulator is alive"


def preauth_case(emu, state_dir):
    before_disk = tree_bytes(state_dir)
    before_peak = peak_kib(emu)
    body = b"\0" * (64 * MIB)
    lines = []
    for label, key, secret in (("unknown key", "NOBODY", "x"), ("wrong secret", "test", "wrong")):
        w = sign(emu.url + "/bucket/object", method="PUT", service="s3", body=b"", key=key, secret=secret,
                 headers={"x-amz-content-sha256": "UNSIGNED-PAYLOAD"})
        t0 = time.monotonic()
        status, reply, sent = raw_exchange(emu.url, "PUT", w.target, w.headers, body)
        dt = time.monotonic() - t0
        expect(status == 403, f"{label}: HTTP {status}: {reply[:300]!r}")
        lines.append(f"S3 PUT of 64 MiB, {label}: 403 in {dt:.2f}s")
    grown = tree_bytes(state_dir) - before_disk
    expect(grown < MIB, f"the state directory grew by {grown} bytes for refused uploads")

    # Unsigned-looking EC2 bodies: each connection declares 10 MiB.
    def one(results):
        w = ec2_wire(emu.url, EC2_CALL, key="NOBODY", secret="x")
        try:
            status, _, _ = raw_exchange(emu.url, "POST", "/", w.headers, b"a" * (10 * MIB), timeout=30)
        except OSError as e:
            status = str(e)
        results.append(status)

    results = []
    threads = [threading.Thread(target=one, args=(results,)) for _ in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    expect(results.count(401) + results.count(403) == 40, f"40 unauthenticated 10 MiB bodies: {results}")
    peak = peak_kib(emu) - before_peak
    expect(peak < 64 * 1024, f"peak memory rose by {peak} KiB for refused requests")
    lines.append(f"40 x 10 MiB EC2 bodies with an unknown key: all refused; peak memory +{peak} KiB, "
                 f"state directory +{grown} bytes")
    return "\n".join(lines)


def slow_heads_case(emu):
    p = urllib.parse.urlsplit(emu.url)
    slow = []
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 1100
    if soft < want + 100:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, want + 200), hard))
        want = min(want, min(hard, want + 200) - 100)
    for _ in range(want):
        try:
            s = socket.create_connection((p.hostname, p.port), timeout=5)
        except OSError:
            break  # the server's own limit: the rest are refused
        s.sendall(b"POST / HTTP/1.1\r\nHost: x\r\n")
        slow.append(s)
    stop = time.monotonic() + 25
    cut = set()

    def trickle():
        while time.monotonic() < stop and len(cut) < len(slow):
            for i, s in enumerate(slow):
                if i in cut:
                    continue
                try:
                    s.sendall(b"X")
                except OSError:
                    cut.add(i)
            time.sleep(1)

    t = threading.Thread(target=trickle)
    t0 = time.monotonic()
    t.start()
    answered = 0
    try:
        for _ in range(12):
            r = send(emu.url, ec2_wire(emu.url, EC2_CALL), timeout=10)
            expect(r.status == 200, f"an ordinary request got HTTP {r.status}: {r.text()}")
            answered += 1
            time.sleep(0.2)
        t.join(30)
    finally:
        for s in slow:
            s.close()
    took = time.monotonic() - t0
    expect(len(cut) == len(slow), f"{len(slow) - len(cut)} of {len(slow)} slow connections were never cut "
                                  f"in {took:.0f}s")
    return f"12 of 12 ordinary requests answered; all {len(slow)} slow heads cut within {took:.0f}s"


ENTITY_BOMB = ('<?xml version="1.0"?>\n<!DOCTYPE Delete [<!ENTITY big "' + "x" * 100000 + '">]>\n'
               '<Delete><Object><Key>' + "&big;" * 2000 + '</Key></Object></Delete>').encode()
EXTERNAL_DTD = ('<?xml version="1.0"?>\n<!DOCTYPE Delete SYSTEM "http://127.0.0.1:1/x.dtd">\n'
                '<Delete><Object><Key>k</Key></Object></Delete>').encode()


def entities_case(emu):
    s3 = client(emu.url, "s3")
    s3.create_bucket(Bucket="hardening-xml")
    before = peak_kib(emu)
    import base64
    import hashlib
    lines = []
    for label, body in (("internal entity x 2,000", ENTITY_BOMB), ("external DTD", EXTERNAL_DTD)):
        md5 = base64.b64encode(hashlib.md5(body).digest()).decode()
        w = sign(emu.url + "/hardening-xml?delete", method="POST", service="s3", body=body,
                 headers={"Content-MD5": md5, "x-amz-content-sha256": hashlib.sha256(body).hexdigest()})
        t0 = time.monotonic()
        r = send(emu.url, w, timeout=30)
        dt = time.monotonic() - t0
        code = r.xml().findtext("Code")
        expect(r.status == 400 and code == "MalformedXML", f"{label}: HTTP {r.status} {code}: {r.text()}")
        lines.append(f"{label}: MalformedXML in {dt:.2f}s, reply {len(r.body)} bytes")
    grown = peak_kib(emu) - before
    expect(grown < 32 * 1024, f"peak memory rose by {grown} KiB")
    return "\n".join(lines + [f"peak memory +{grown} KiB"])


def utf8_case(emu):
    s3 = client(emu.url, "s3")
    s3.create_bucket(Bucket="hardening-utf8")
    checked = 0
    for q in ("Action=DescribeKeyPairs&Version=2016-11-15&KeyName.1=caf%C3%A9%FF",
              "Action=DescribeKeyPairs&Version=2016-11-15&KeyName.1=bell%07%1B",
              "Action=Describe%FFKeyPairs&Version=2016-11-15",
              "Action=DescribeKeyPairs&Version=2016-11-15&Key%FE%FFName.1=x"):
        r = send(emu.url, ec2_wire(emu.url, q))
        r.xml()
        checked += 1
    for key in ("bad%FF%FEkey", "ctl%01%02key", "ok%E2%82%ACkey"):
        w = sign(emu.url + "/hardening-utf8/" + key, method="GET", service="s3",
                 headers={"x-amz-content-sha256": "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"})
        r = send(emu.url, w)
        expect(r.status in (400, 403, 404), f"GET {key}: HTTP {r.status}")
        r.xml()
        checked += 1
    return f"{checked} replies quoting invalid UTF-8 or control characters parse as XML"


def unsigned_case(emu):
    body = b"Action=CreateKeyPair&Version=2016-11-15&KeyName=hardening-swapped"
    # Signed over UNSIGNED-PAYLOAD, as a client that means it does.
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    class UnsignedBody(SigV4Auth):
        def payload(self, request):
            return "UNSIGNED-PAYLOAD"

    def unsigned_wire(service, headers, signed_body, sent_body):
        req = AWSRequest(method="POST", url=emu.url + "/", data=signed_body, headers=headers)
        UnsignedBody(Credentials("test", "test"), service, "us-east-1").add_auth(req)
        p = req.prepare()
        hdrs = {k: v for k, v in p.headers.items() if k.lower() != "content-length"}
        return send(emu.url, Wire("POST", emu.url + "/", hdrs, sent_body))

    r = unsigned_wire("ec2", {"Content-Type": "application/x-www-form-urlencoded",
                              "x-amz-content-sha256": "UNSIGNED-PAYLOAD"},
                      b"Action=DescribeKeyPairs&Version=2016-11-15", body)
    expect(r.status == 403, f"EC2 body swapped under UNSIGNED-PAYLOAD: HTTP {r.status}: {r.text()}")
    ssm_body = json.dumps({"Name": "/hardening/swapped", "Value": "v", "Type": "String"}).encode()
    r = unsigned_wire("ssm", {"Content-Type": "application/x-amz-json-1.1", "X-Amz-Target": "AmazonSSM.PutParameter",
                              "x-amz-content-sha256": "UNSIGNED-PAYLOAD"}, ssm_body, ssm_body)
    expect(r.status == 400 and "Signature" in r.text(), f"SSM under UNSIGNED-PAYLOAD: HTTP {r.status}: {r.text()}")
    pairs = client(emu.url, "ec2").describe_key_pairs()["KeyPairs"]
    expect(not [p for p in pairs if p["KeyName"] == "hardening-swapped"], "the swapped body created a key pair")
    try:
        client(emu.url, "ssm").get_parameter(Name="/hardening/swapped")
        raise Fail("the unsigned SSM body created a parameter")
    except ClientError as e:
        expect(e.response["Error"]["Code"] == "ParameterNotFound", f"{e}")
    return "EC2 and SSM refuse UNSIGNED-PAYLOAD; nothing was created"


def delete_tags_case(emu):
    ec2 = client(emu.url, "ec2")
    other = client(emu.url, "ec2", key="test2", secret="test2")
    codes = []
    for label, c, rid in (("missing AMI", ec2, "ami-0123456789abcdef0"),):
        try:
            c.delete_tags(Resources=[rid], Tags=[{"Key": "k"}])
            codes.append(f"{label}: accepted")
        except ClientError as e:
            codes.append(f"{label}: {e.response['Error']['Code']}")
    kp = ec2.create_key_pair(KeyName="hardening-owned")["KeyPairId"]
    ec2.create_tags(Resources=[kp], Tags=[{"Key": "owner", "Value": "first"}])
    try:
        other.delete_tags(Resources=[kp], Tags=[{"Key": "owner"}])
        codes.append("another account's key pair: accepted")
    except ClientError as e:
        codes.append(f"another account's key pair: {e.response['Error']['Code']}")
    tags = ec2.describe_tags(Filters=[{"Name": "resource-id", "Values": [kp]}])["Tags"]
    expect(codes == ["missing AMI: InvalidAMIID.NotFound", "another account's key pair: InvalidKeyPair.NotFound"],
           f"DeleteTags answered {codes}")
    expect([t["Key"] for t in tags] == ["owner"], f"the owner's tag was touched: {tags}")
    return "; ".join(codes)


def scope_case(emu):
    lines = []
    r = send(emu.url, ec2_wire(emu.url, EC2_CALL, service="ssm"))
    root = r.xml()
    code = root.findtext(".//Code")
    expect(r.status == 401 and code == "AuthFailure" and "scoped to correct service: 'ec2'" in r.text(),
           f"EC2 signed for ssm: HTTP {r.status} {code}: {r.text()}")
    lines.append(f"EC2 signed for ssm: {r.status} {code}")
    w = sign(emu.url + "/scope-bucket", method="PUT", service="ec2",
             headers={"x-amz-content-sha256": "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"})
    r = send(emu.url, w)
    code = r.xml().findtext("Code")
    expect(r.status == 400 and code == "AuthorizationHeaderMalformed", f"S3 signed for ec2: HTTP {r.status} {code}")
    lines.append(f"S3 PUT signed for ec2: {r.status} {code}")
    from emulator_protocol import ssm_wire
    r = send(emu.url, ssm_wire(emu.url, "DescribeParameters", {}, service="ec2"))
    code = r.json().get("__type")
    expect(r.status == 400 and code == "InvalidSignatureException", f"SSM signed for ec2: HTTP {r.status} {code}")
    lines.append(f"SSM signed for ec2: {r.status} {code}")
    for service, want in (("ec2", "AuthFailure"), ("ssm", "UnrecognizedClientException")):
        c = boto3.client(service, endpoint_url=emu.url, region_name="us-east-1", aws_access_key_id="test",
                         aws_secret_access_key="test", aws_session_token="garbage",
                         config=Config(retries={"max_attempts": 1}))
        try:
            c.describe_regions() if service == "ec2" else c.describe_parameters()
            raise Fail(f"{service}: a session token nobody issued was accepted")
        except ClientError as e:
            got = e.response["Error"]["Code"]
            expect(got == want, f"{service} with a garbage session token: {got}")
            lines.append(f"{service} with a garbage session token: {got}")
    return "\n".join(lines)


def kill9_case(binary, work):
    state = os.path.join(work, "kill9-state")
    emu = Emulator(binary, state_dir=state, log_dir=work).start()
    acked = {"objects": {}, "parameters": {}}
    rng = random.Random(19)
    lines = []
    try:
        client(emu.url, "s3").create_bucket(Bucket="durable")
        for trial in range(5):
            s3, ssm = client(emu.url, "s3"), client(emu.url, "ssm")
            stop = threading.Event()

            def writer(n0):
                n = n0
                while not stop.is_set():
                    n += 1
                    data = os.urandom(rng.choice((1000, 300000, 2 * MIB)))
                    key = f"t{trial}/obj-{n}"
                    try:
                        s3.put_object(Bucket="durable", Key=key, Body=data)
                        acked["objects"][key] = len(data)
                        ssm.put_parameter(Name=f"/durable/t{trial}/p{n}", Value=str(n), Type="String")
                        acked["parameters"][f"/durable/t{trial}/p{n}"] = str(n)
                    except Exception:
                        return

            t = threading.Thread(target=writer, args=(trial * 100000,))
            t.start()
            time.sleep(rng.uniform(0.5, 2.5))
            emu.proc.send_signal(signal.SIGKILL)
            emu.proc.wait()
            stop.set()
            t.join(30)
            emu.start()
            s3, ssm = client(emu.url, "s3"), client(emu.url, "ssm")
            missing = []
            for key, size in acked["objects"].items():
                try:
                    got = s3.head_object(Bucket="durable", Key=key)["ContentLength"]
                    if got != size:
                        missing.append(f"{key}: {got} bytes, not {size}")
                except ClientError:
                    missing.append(key)
            for name, value in acked["parameters"].items():
                try:
                    if ssm.get_parameter(Name=name)["Parameter"]["Value"] != value:
                        missing.append(name)
                except ClientError:
                    missing.append(name)
            expect(not missing, f"trial {trial}: acknowledged writes lost after kill -9: {missing[:10]}")
            objects = sum(1 for _ in s3.get_paginator("list_objects_v2").paginate(Bucket="durable")
                          for _ in _.get("Contents", []))
            data_files = len(os.listdir(os.path.join(state, "s3", "data")))
            tmp_files = os.listdir(os.path.join(state, "s3", "tmp"))
            expect(data_files == objects, f"trial {trial}: {data_files} data files for {objects} objects")
            expect(not tmp_files, f"trial {trial}: left in s3/tmp after the restart: {tmp_files}")
            lines.append(f"trial {trial}: {len(acked['objects'])} objects and {len(acked['parameters'])} parameters "
                         f"acknowledged so far, all there; {data_files} data files for {objects} objects")
    finally:
        emu.stop()
    return "\n".join(lines)


def main():
    binary = sys.argv[1]
    only = sys.argv[2] if len(sys.argv) > 2 else None
    tap = Tap(only)
    work = tempfile.mkdtemp(prefix="kiln-emu-hardening-")
    state = os.path.join(work, "state")
    emu = Emulator(binary, state_dir=state, log_dir=work).start()
    try:
        tap.case("indices: leading-zero list indices on 21 actions, the emulator alive", indices_case, emu)
        tap.case("preauth: refused uploads and bodies cost no disk and no memory", preauth_case, emu, state)
        tap.case("slow-heads: 1,100 slow heads cut, ordinary requests answered", slow_heads_case, emu)
        tap.case("entities: DOCTYPE bodies refused as MalformedXML, memory unmoved", entities_case, emu)
        tap.case("utf8: every reply quoting a client's bytes is well-formed XML", utf8_case, emu)
        tap.case("unsigned: EC2 and SSM refuse UNSIGNED-PAYLOAD and a swapped body", unsigned_case, emu)
        tap.case("delete-tags: missing and foreign resources not found", delete_tags_case, emu)
        tap.case("scope: a scope for another service is the addressed service's error; session tokens refused",
                 scope_case, emu)
        tap.case("the emulator is alive", lambda: expect(emu.alive(), "the emulator died"))
    finally:
        emu.stop()
    try:
        tap.case("kill-9: acknowledged writes survive 5 SIGKILLs under load; no orphan data", kill9_case, binary, work)
    finally:
        if tap.failed:
            tap.diag(f"emulator log {emu.log_path}:\n{emu.log_tail()}")
        shutil.rmtree(work, ignore_errors=True)
    return tap.done()


if __name__ == "__main__":
    sys.exit(main())
