#!/usr/bin/env python3
"""kiln-emulator's S3 on the wire, run by `meson test` (suite emulator, TAP).

usage: s3_protocol.py KILN_EMULATOR [FILTER]

One emulator in mock mode on 127.0.0.1 with a free port and a --state-dir
(so the data directory can be inspected), the default accounts (test/test is
000000000000, test2/test2 is 111111111111).  Driven by:
  pip aws       the `aws` on PATH (CLI v1, botocore 1.4x: CRC32 checksums),
                endpoint from AWS_ENDPOINT_URL
  debian aws    /usr/bin/aws (CLI v2.9, Content-MD5), --endpoint-url
  boto3         this python's boto3 (bucket and object operations, errors,
                multipart, checksums, presigned URLs, region redirects,
                virtual-host addressing, botocore's own aws-chunked trailer
                encoder), and Debian's boto3 under /usr/bin/python3
  raw requests  signed with botocore's S3SigV4Auth and sent with http.client,
                so the bytes are ours: aws-chunked bodies with signed chunks
                and with trailers, a Host header naming the bucket, a body
                cut short on a raw socket
Then a 300 MiB object goes up (one PutObject, then a multipart upload) and
down, with the emulator's VmHWM checked, and the emulator restarts on its
state directory with the objects still there.  A FILTER argument runs only
the cases whose name contains it.
"""
import base64
import datetime
import hashlib
import hmac
import http.client
import io
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET
import zlib

import boto3
import botocore
import botocore.httpchecksum
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from emulator_protocol import Emulator, Fail, Reply, Skip, expect, pip_aws, protocol_setup  # noqa: E402

REGION = "us-east-1"
KEY, SECRET, ACCOUNT = "test", "test", "000000000000"
KEY2, SECRET2 = "test2", "test2"
S3NS = "{http://s3.amazonaws.com/doc/2006-03-01/}"
MiB = 1024 * 1024
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
CLIENT_CONFIG = Config(retries={"max_attempts": 0})

STATE = {}


# ---- helpers ----

def session(key=KEY, secret=SECRET):
    return boto3.session.Session(aws_access_key_id=key, aws_secret_access_key=secret, region_name=REGION)


def s3_client(url, key=KEY, secret=SECRET, region=REGION, config=CLIENT_CONFIG):
    return session(key, secret).client("s3", region_name=region, endpoint_url=url, config=config)


def error_code(fn, *args, **kw):
    """The S3 error code a boto3 call fails with (it must fail)."""
    try:
        fn(*args, **kw)
    except ClientError as e:
        return e.response["Error"]["Code"], e.response
    raise Fail(f"{fn.__name__} succeeded; expected an error")


def expect_code(want, fn, *args, **kw):
    code, resp = error_code(fn, *args, **kw)
    expect(code == want, f"{fn.__name__}: expected {want}, got {code}: {resp.get('Error')}")
    return resp


def crc32_b64(data):
    return base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()


def md5_b64(data):
    return base64.b64encode(hashlib.md5(data).digest()).decode()


def file_sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(MiB), b""):
            h.update(block)
    return h.hexdigest()


def make_file(path, size, seed):
    """size bytes that differ from file to file, written in pieces."""
    with open(path, "wb") as f:
        block = hashlib.sha256(seed.encode()).digest() * (MiB // 32)
        left = size
        n = 0
        while left > 0:
            piece = block[: min(left, MiB)]
            piece = n.to_bytes(8, "big") + piece[8:]
            f.write(piece)
            left -= len(piece)
            n += 1


class S3Auth(S3SigV4Auth):
    """botocore's S3 signer with a chosen x-amz-content-sha256 (a literal
    such as UNSIGNED-PAYLOAD or STREAMING-...) and a chosen time."""

    def __init__(self, credentials, region, payload=None, when=None):
        super().__init__(credentials, "s3", region)
        self._payload = payload
        self._when = when

    def payload(self, request):
        return self._payload if self._payload is not None else super().payload(request)

    def add_auth(self, request):
        if self._when is None:
            return super().add_auth(request)
        request.context["timestamp"] = self._when.strftime("%Y%m%dT%H%M%SZ")
        self._modify_request_before_signing(request)
        canonical = self.canonical_request(request)
        sts = self.string_to_sign(request, canonical)
        self._inject_signature_to_request(request, self.signature(sts, request))


def s3_sign(url, method, path, *, query="", body=b"", headers=None, key=KEY, secret=SECRET, region=REGION,
            payload=None, host=None, sign_body=True, when=None):
    """A signed S3 request: (target, headers).  path is decoded (it is
    encoded here the way SDKs do); host overrides the Host header signed and
    sent.  payload: the x-amz-content-sha256 literal, or None to sign the
    body's hash.  when: the signing time (a datetime in UTC; it becomes
    X-Amz-Date), else now; botocore replaces any X-Amz-Date in headers."""
    p = urllib.parse.urlsplit(url)
    target = urllib.parse.quote(path, safe="/~") + ("?" + query if query else "")
    h = dict(headers or {})
    if host:
        h["Host"] = host
    req = AWSRequest(method=method, url=f"{p.scheme}://{p.netloc}{target}",
                     data=body if (sign_body and isinstance(body, bytes)) else b"", headers=h)
    if payload is None and not isinstance(body, bytes):
        payload = "UNSIGNED-PAYLOAD"
    S3Auth(Credentials(key, secret), region, payload, when).add_auth(req)
    hdrs = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in req.headers.items()}
    return target, hdrs


def s3_send(url, method, path, **kw):
    body = kw.get("body", b"")
    target, hdrs = s3_sign(url, method, path, **kw)
    p = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(p.hostname, p.port, timeout=120)
    try:
        conn.request(method, target, body=body if body else None, headers=hdrs)
        r = conn.getresponse()
        return Reply(r.status, r.getheaders(), r.read())
    finally:
        conn.close()


def s3_error(reply):
    """(status, code, root) of an S3 error reply, checking its shape."""
    try:
        root = ET.fromstring(reply.body)
    except ET.ParseError as e:
        raise Fail(f"HTTP {reply.status}: error body is not XML ({e}): {reply.text()!r}")
    expect(root.tag == "Error", f"HTTP {reply.status}: error root <{root.tag}>: {reply.text()!r}")
    for part in ("Code", "Message", "Resource", "RequestId"):
        expect(root.find(part) is not None, f"HTTP {reply.status}: no <{part}>: {reply.text()!r}")
    expect(reply.headers.get("x-amz-request-id") == root.findtext("RequestId"),
           f"x-amz-request-id {reply.headers.get('x-amz-request-id')!r} vs <RequestId> {root.findtext('RequestId')!r}")
    return reply.status, root.findtext("Code"), root


def expect_s3_error(reply, status, code):
    got = s3_error(reply)
    expect(got[:2] == (status, code), f"expected HTTP {status} {code}, got HTTP {got[0]} {got[1]}: {reply.text()!r}")
    return got[2]


def signing_key(secret, date, region, service="s3"):
    k = hmac.new(("AWS4" + secret).encode(), date.encode(), hashlib.sha256).digest()
    for part in (region, service, "aws4_request"):
        k = hmac.new(k, part.encode(), hashlib.sha256).digest()
    return k


def aws_chunked_signed(seed, amz_date, scope, key, chunks, trailer=None):
    """An aws-chunked body with each chunk signed over the previous
    signature (the request's own for the first); with trailer (name, value)
    the trailer is signed too (STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER)."""
    out = bytearray()
    prev = seed
    for data in list(chunks) + [b""]:
        sts = "\n".join(["AWS4-HMAC-SHA256-PAYLOAD", amz_date, scope, prev, EMPTY_SHA256,
                         hashlib.sha256(data).hexdigest()])
        prev = hmac.new(key, sts.encode(), hashlib.sha256).hexdigest()
        out += f"{len(data):x};chunk-signature={prev}\r\n".encode() + data
        if data:
            out += b"\r\n"
    if trailer:
        text = f"{trailer[0]}:{trailer[1]}\n"
        sts = "\n".join(["AWS4-HMAC-SHA256-TRAILER", amz_date, scope, prev, hashlib.sha256(text.encode()).hexdigest()])
        sig = hmac.new(key, sts.encode(), hashlib.sha256).hexdigest()
        out += f"{trailer[0]}:{trailer[1]}\r\nx-amz-trailer-signature:{sig}\r\n".encode()
    out += b"\r\n"
    return bytes(out)


def aws_chunked_unsigned(chunks, trailer):
    out = bytearray()
    for data in chunks:
        out += f"{len(data):x}\r\n".encode() + data + b"\r\n"
    out += b"0\r\n" + f"{trailer[0]}:{trailer[1]}\r\n\r\n".encode()
    return bytes(out)


def data_files(state_dir):
    d = os.path.join(state_dir, "s3", "data")
    return sorted(os.listdir(d)) if os.path.isdir(d) else []


def tmp_files(state_dir):
    d = os.path.join(state_dir, "s3", "tmp")
    return sorted(os.listdir(d)) if os.path.isdir(d) else []


def vm_hwm_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise Fail("no VmHWM in /proc/PID/status")


def wait_for(cond, timeout=10.0, step=0.1):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(step)
    return cond()


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

    def run(self, *args, timeout=600):
        cmd = [self.path] + ([] if self.by_env else ["--endpoint-url", self.url]) + [str(a) for a in args]
        p = subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=timeout)
        return p.returncode, p.stdout, p.stderr

    def __call__(self, *args):
        rc, out, err = self.run(*args)
        expect(rc == 0, f"aws {' '.join(map(str, args))}: exit {rc}: {(err or out).strip()[-800:]}")
        return out

    def json(self, *args):
        out = self("--output", "json", *args)
        try:
            return json.loads(out) if out.strip() else {}
        except ValueError:
            raise Fail(f"aws {' '.join(map(str, args))}: output is not JSON: {out[:300]!r}")

    def error(self, *args):
        rc, out, err = self.run(*args)
        expect(rc != 0, f"aws {' '.join(map(str, args))} succeeded; expected an error")
        m = re.search(r"An error occurred \(([^)]+)\)", err)
        return m.group(1) if m else err.strip()[-300:]


def cli_cases(tap, label, cli, work, state_dir):
    bucket = f"kiln-{label}-bucket"
    small = os.path.join(work, f"{label}-small.txt")
    big = os.path.join(work, f"{label}-big.bin")
    with open(small, "w") as f:
        f.write(f"hello from {label}\n")
    make_file(big, 40 * MiB + 12345, label)

    def version():
        rc, out, err = cli.run("--version")
        expect(rc == 0, f"--version: {err}")
        return (out or err).strip()

    def mb_ls():
        cli("s3", "mb", f"s3://{bucket}")
        out = cli("s3", "ls")
        expect(re.search(rf"^\S+ \S+ {re.escape(bucket)}$", out, re.M), f"aws s3 ls does not list {bucket}: {out!r}")
        code = cli.error("s3api", "create-bucket", "--bucket", bucket, "--create-bucket-configuration",
                         "LocationConstraint=eu-west-1")
        expect(code == "BucketAlreadyOwnedByYou", f"create-bucket of {bucket} again in eu-west-1: {code}")

    def small_round_trip():
        cli("s3", "cp", small, f"s3://{bucket}/dir/small.txt")
        back = small + ".back"
        cli("s3", "cp", f"s3://{bucket}/dir/small.txt", back)
        expect(open(back, "rb").read() == open(small, "rb").read(), "small file came back different")
        out = cli("s3", "ls", f"s3://{bucket}/")
        expect(re.search(r"^\s+PRE dir/$", out, re.M), f"aws s3 ls s3://{bucket}/ has no 'PRE dir/': {out!r}")
        out = cli("s3", "ls", f"s3://{bucket}/dir/")
        size = os.path.getsize(small)
        expect(re.search(rf"\s{size} small\.txt$", out, re.M), f"aws s3 ls of dir/: {out!r}")
        h = cli.json("s3api", "head-object", "--bucket", bucket, "--key", "dir/small.txt")
        want = '"' + hashlib.md5(open(small, "rb").read()).hexdigest() + '"'
        expect(h["ETag"] == want and h["ContentLength"] == size, f"head-object {h}")

    def big_round_trip():
        t0 = time.monotonic()
        cli("s3", "cp", big, f"s3://{bucket}/big.bin")
        up = time.monotonic() - t0
        h = cli.json("s3api", "head-object", "--bucket", bucket, "--key", "big.bin")
        expect(re.fullmatch(r'"[0-9a-f]{32}-\d+"', h["ETag"]), f"a 40 MiB cp should be multipart: ETag {h['ETag']}")
        expect(h["ContentLength"] == os.path.getsize(big), f"ContentLength {h['ContentLength']}")
        back = big + ".back"
        t0 = time.monotonic()
        cli("s3", "cp", f"s3://{bucket}/big.bin", back)
        down = time.monotonic() - t0
        expect(file_sha256(back) == file_sha256(big), "40 MiB file came back different")
        os.unlink(back)
        return f"up {up:.1f}s, down {down:.1f}s, ETag {h['ETag']}"

    def s3api_range():
        out = os.path.join(work, f"{label}-range.out")
        r = cli.json("s3api", "get-object", "--bucket", bucket, "--key", "big.bin", "--range", "bytes=100-199", out)
        with open(big, "rb") as f:
            f.seek(100)
            want = f.read(100)
        expect(open(out, "rb").read() == want, "get-object --range bytes=100-199: wrong bytes")
        expect(r.get("ContentRange") == f"bytes 100-199/{os.path.getsize(big)}", f"ContentRange {r.get('ContentRange')}")
        code = cli.error("s3api", "get-object", "--bucket", bucket, "--key", "nope", out)
        expect(code == "NoSuchKey", f"get-object of a missing key: {code}")

    def rm_recursive():
        for i in range(5):
            cli("s3", "cp", small, f"s3://{bucket}/tree/{i}/f.txt")
        cli("s3", "rm", f"s3://{bucket}/", "--recursive")
        out = cli("s3", "ls", f"s3://{bucket}/", "--recursive")
        expect(out.strip() == "", f"after rm --recursive: {out!r}")
        cli("s3", "rb", f"s3://{bucket}")
        out = cli("s3", "ls")
        expect(bucket not in out, f"after rb: {out!r}")

    tap.case(f"{label}: runs", version)
    for title, fn in [
        ("s3 mb, s3 ls, create-bucket again", mb_ls),
        ("s3 cp a small file up and down, s3 ls with PRE, head-object ETag", small_round_trip),
        ("s3 cp a 40 MiB file up (multipart) and down (ranged GETs), same bytes", big_round_trip),
        ("s3api get-object --range, NoSuchKey", s3api_range),
        ("s3 rm --recursive, s3 rb", rm_recursive),
    ]:
        tap.case(f"{label}: {title}", fn)


# ---- boto3 ----

def boto3_cases(tap, url, state_dir, work):
    s3 = s3_client(url)
    b = "kiln-boto3"

    def buckets():
        s3.create_bucket(Bucket=b)
        names = [x["Name"] for x in s3.list_buckets()["Buckets"]]
        expect(b in names, f"list_buckets {names}")
        s3.head_bucket(Bucket=b)
        # us-east-1's legacy answer to creating your own bucket again: 200.
        s3.create_bucket(Bucket=b)
        eu = s3_client(url, region="eu-west-1")
        eu.create_bucket(Bucket="kiln-boto3-eu", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
        expect_code("BucketAlreadyOwnedByYou", eu.create_bucket, Bucket="kiln-boto3-eu",
                    CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
        loc = s3.get_bucket_location(Bucket="kiln-boto3-eu")["LocationConstraint"]
        expect(loc == "eu-west-1", f"get_bucket_location {loc!r}")
        expect(s3.get_bucket_location(Bucket=b)["LocationConstraint"] is None, "us-east-1 location is not empty")
        other = s3_client(url, KEY2, SECRET2)
        expect_code("BucketAlreadyExists", other.create_bucket, Bucket=b)
        expect_code("InvalidBucketName", s3.create_bucket, Bucket="Bad_Name")
        expect_code("InvalidLocationConstraint", s3.create_bucket, Bucket="kiln-boto3-x",
                    CreateBucketConfiguration={"LocationConstraint": "us-east-1"})
        expect_code("IllegalLocationConstraintException", eu.create_bucket, Bucket="kiln-boto3-y")
        expect_code("NoSuchBucket", s3.delete_bucket, Bucket="kiln-no-such-bucket")
        code, resp = error_code(s3.head_bucket, Bucket="kiln-no-such-bucket")
        expect(code == "404", f"head_bucket of a missing bucket: {code}")

    def put_get_head():
        body = b"0123456789" * 1000
        r = s3.put_object(Bucket=b, Key="obj", Body=body, ContentType="text/plain", Metadata={"color": "blue"},
                          CacheControl="no-cache")
        etag = '"' + hashlib.md5(body).hexdigest() + '"'
        expect(r["ETag"] == etag, f"put_object ETag {r['ETag']} != {etag}")
        expect(r.get("ChecksumCRC32") == crc32_b64(body), f"put_object ChecksumCRC32 {r.get('ChecksumCRC32')}")
        g = s3.get_object(Bucket=b, Key="obj")
        expect(g["Body"].read() == body, "get_object: wrong bytes")
        expect(g["ETag"] == etag and g["ContentType"] == "text/plain" and g["Metadata"] == {"color": "blue"}
               and g.get("CacheControl") == "no-cache", f"get_object: {g}")
        h = s3.head_object(Bucket=b, Key="obj")
        expect(h["ContentLength"] == len(body) and h["ETag"] == etag, f"head_object {h}")
        h = s3.head_object(Bucket=b, Key="obj", ChecksumMode="ENABLED")
        expect(h.get("ChecksumCRC32") == crc32_b64(body) and h.get("ChecksumType") == "FULL_OBJECT",
               f"head_object with checksum mode: {h}")
        r = s3.get_object(Bucket=b, Key="obj", Range="bytes=10-19")
        expect(r["ResponseMetadata"]["HTTPStatusCode"] == 206, f"range: HTTP {r['ResponseMetadata']['HTTPStatusCode']}")
        expect(r["ContentRange"] == f"bytes 10-19/{len(body)}", f"ContentRange {r['ContentRange']}")
        expect(r["Body"].read() == body[10:20], "range: wrong bytes")
        r = s3.get_object(Bucket=b, Key="obj", Range="bytes=-5")
        expect(r["Body"].read() == body[-5:] and r["ContentRange"] == f"bytes {len(body) - 5}-{len(body) - 1}/"
               f"{len(body)}", f"suffix range {r['ContentRange']}")
        r = s3.get_object(Bucket=b, Key="obj", Range=f"bytes=9990-{len(body) + 100}")
        expect(r["Body"].read() == body[9990:], "range past the end is not clamped")
        resp = expect_code("InvalidRange", s3.get_object, Bucket=b, Key="obj", Range=f"bytes={len(body)}-")
        expect(resp["ResponseMetadata"]["HTTPStatusCode"] == 416, "InvalidRange is not 416")
        code, resp = error_code(s3.get_object, Bucket=b, Key="obj", IfNoneMatch=etag)
        expect(code == "304", f"If-None-Match with the ETag: {code}")
        expect_code("PreconditionFailed", s3.get_object, Bucket=b, Key="obj", IfMatch='"0000"')
        expect(s3.get_object(Bucket=b, Key="obj", IfMatch=etag)["Body"].read() == body, "If-Match with the ETag")
        expect_code("NoSuchKey", s3.get_object, Bucket=b, Key="missing")
        code, _ = error_code(s3.head_object, Bucket=b, Key="missing")
        expect(code == "404", f"head_object of a missing key: {code}")
        # Conditional writes.
        expect_code("PreconditionFailed", s3.put_object, Bucket=b, Key="obj", Body=b"x", IfNoneMatch="*")
        s3.put_object(Bucket=b, Key="obj", Body=b"replaced")
        expect(s3.get_object(Bucket=b, Key="obj")["Body"].read() == b"replaced", "replaced object")
        empty = s3.put_object(Bucket=b, Key="empty", Body=b"")
        expect(empty["ETag"] == '"d41d8cd98f00b204e9800998ecf8427e"', f"empty object ETag {empty['ETag']}")
        expect(s3.get_object(Bucket=b, Key="empty")["Body"].read() == b"", "empty object body")

    def odd_keys():
        keys = ["with space.txt", "ünïcødé/日本語 ☃.txt", "../../escape-1.txt", "a/../../../escape-2.txt",
                "plus+and%percent&amp?.txt", "//double//slash", "a/./b"]
        before = set(data_files(state_dir))
        for i, k in enumerate(keys):
            s3.put_object(Bucket=b, Key=k, Body=f"body {i}".encode())
        for i, k in enumerate(keys):
            got = s3.get_object(Bucket=b, Key=k)["Body"].read()
            expect(got == f"body {i}".encode(), f"key {k!r}: got {got!r}")
        listed = [o["Key"] for o in s3.list_objects_v2(Bucket=b)["Contents"]]
        for k in keys:
            expect(k in listed, f"key {k!r} not listed as given: {listed}")
        listed1 = [o["Key"] for o in s3.list_objects(Bucket=b)["Contents"]]
        expect(sorted(listed1) == sorted(listed), f"ListObjects v1 {listed1} vs v2 {listed}")
        # Nothing named after a key anywhere near the data directory.
        for root, _, files in os.walk(work):
            for f in files:
                expect("escape" not in f, f"a file named after a key: {os.path.join(root, f)}")
        new = set(data_files(state_dir)) - before
        expect(len(new) == len(keys) and all(re.fullmatch(r"[0-9a-f]{32}", f) for f in new),
               f"data files are not one generated id per object: {sorted(new)}")
        for k in keys:
            s3.delete_object(Bucket=b, Key=k)
        expect(set(data_files(state_dir)) == before, "delete_object left data files behind")
        code, _ = error_code(s3.put_object, Bucket=b, Key="k" * 1025, Body=b"x")
        expect(code == "KeyTooLongError", f"a 1025-byte key: {code}")

    def listing():
        keys = [f"list/{d}/{i:02d}" for d in ("a", "b", "c") for i in range(7)] + ["list/top1", "list/top2"]
        for k in keys:
            s3.put_object(Bucket=b, Key=k, Body=b"x")
        r = s3.list_objects_v2(Bucket=b, Prefix="list/", Delimiter="/")
        cps = [c["Prefix"] for c in r.get("CommonPrefixes", [])]
        top = [o["Key"] for o in r.get("Contents", [])]
        expect(cps == ["list/a/", "list/b/", "list/c/"] and top == ["list/top1", "list/top2"],
               f"prefix+delimiter: CommonPrefixes {cps}, Contents {top}")
        expect(r["KeyCount"] == 5, f"KeyCount {r['KeyCount']}")
        got, pages, token = [], 0, None
        while True:
            kw = {"Bucket": b, "Prefix": "list/", "MaxKeys": 4}
            if token:
                kw["ContinuationToken"] = token
            r = s3.list_objects_v2(**kw)
            pages += 1
            got += [o["Key"] for o in r.get("Contents", [])]
            expect(r["KeyCount"] <= 4, f"page of {r['KeyCount']} > MaxKeys 4")
            if not r["IsTruncated"]:
                break
            token = r["NextContinuationToken"]
        expect(got == sorted(keys) and pages == 6, f"pages of 4: {pages} pages, {len(got)} keys")
        # Pagination across common prefixes, through the paginator.
        seen = []
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=b, Prefix="list/", Delimiter="/",
                                                                  PaginationConfig={"PageSize": 2}):
            seen += [c["Prefix"] for c in page.get("CommonPrefixes", [])] + [o["Key"] for o in page.get("Contents", [])]
        expect(sorted(seen) == ["list/a/", "list/b/", "list/c/", "list/top1", "list/top2"],
               f"paginated prefixes and keys: {seen}")
        r = s3.list_objects_v2(Bucket=b, Prefix="list/b/", StartAfter="list/b/04")
        expect([o["Key"] for o in r["Contents"]] == ["list/b/05", "list/b/06"], f"StartAfter: {r.get('Contents')}")
        r = s3.list_objects(Bucket=b, Prefix="list/c/", Marker="list/c/03", MaxKeys=2)
        expect([o["Key"] for o in r["Contents"]] == ["list/c/04", "list/c/05"] and r["IsTruncated"],
               f"ListObjects v1 with Marker: {r.get('Contents')}")
        code, _ = error_code(s3.list_objects_v2, Bucket=b, ContinuationToken="!!not-a-token!!")
        expect(code == "InvalidArgument", f"bad continuation token: {code}")
        d = s3.delete_objects(Bucket=b, Delete={"Objects": [{"Key": k} for k in keys]})
        expect(sorted(x["Key"] for x in d["Deleted"]) == sorted(keys) and not d.get("Errors"),
               f"delete_objects: {d.get('Errors')}")
        expect("Contents" not in s3.list_objects_v2(Bucket=b, Prefix="list/"), "keys left after delete_objects")

    def copy():
        s3.put_object(Bucket=b, Key="src", Body=b"copy me", Metadata={"m": "1"}, ContentType="text/x-src")
        r = s3.copy_object(Bucket=b, Key="dst", CopySource={"Bucket": b, "Key": "src"})
        expect(r["CopyObjectResult"]["ETag"] == '"' + hashlib.md5(b"copy me").hexdigest() + '"', f"copy {r}")
        g = s3.get_object(Bucket=b, Key="dst")
        expect(g["Body"].read() == b"copy me" and g["Metadata"] == {"m": "1"} and g["ContentType"] == "text/x-src",
               f"copied object {g['Metadata']} {g['ContentType']}")
        s3.copy_object(Bucket=b, Key="dst", CopySource=f"{b}/src", MetadataDirective="REPLACE",
                       Metadata={"m": "2"}, ContentType="text/x-new")
        g = s3.head_object(Bucket=b, Key="dst")
        expect(g["Metadata"] == {"m": "2"} and g["ContentType"] == "text/x-new", f"REPLACE: {g}")
        expect_code("InvalidRequest", s3.copy_object, Bucket=b, Key="src", CopySource=f"{b}/src")
        expect_code("NoSuchKey", s3.copy_object, Bucket=b, Key="dst", CopySource=f"{b}/nope")
        # A managed copy of a bigger object goes part by part (UploadPartCopy).
        big = os.urandom(11 * MiB + 3)
        s3.put_object(Bucket=b, Key="big-src", Body=big)
        calls = []
        s3.meta.events.register("before-send.s3", lambda request, **kw: calls.append(request.url),
                                unique_id="kiln-copy-calls")
        try:
            s3.copy({"Bucket": b, "Key": "big-src"}, b, "big-dst",
                    Config=boto3.s3.transfer.TransferConfig(multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB))
        finally:
            s3.meta.events.unregister("before-send.s3", unique_id="kiln-copy-calls")
        parts = [u for u in calls if "partNumber=" in u]
        expect(len(parts) == 3, f"managed copy made {len(parts)} UploadPartCopy calls, not 3: {calls}")
        g = s3.get_object(Bucket=b, Key="big-dst")
        expect(g["Body"].read() == big and g["ETag"].endswith('-3"'), f"managed copy: ETag {g['ETag']}")
        r = s3.create_multipart_upload(Bucket=b, Key="ranged")["UploadId"]
        expect_code("InvalidRequest", s3.upload_part_copy, Bucket=b, Key="ranged", UploadId=r, PartNumber=1,
                    CopySource=f"{b}/big-src", CopySourceRange=f"bytes=0-{len(big)}")
        s3.abort_multipart_upload(Bucket=b, Key="ranged", UploadId=r)
        for k in ("big-src", "big-dst"):
            s3.delete_object(Bucket=b, Key=k)

    def multipart():
        key = "mp/object"
        up = s3.create_multipart_upload(Bucket=b, Key=key, ContentType="application/x-kiln")["UploadId"]
        part1 = os.urandom(5 * MiB)
        part2 = os.urandom(5 * MiB + 7)
        part3 = b"tail"
        e1 = s3.upload_part(Bucket=b, Key=key, UploadId=up, PartNumber=1, Body=part1)["ETag"]
        e2 = s3.upload_part(Bucket=b, Key=key, UploadId=up, PartNumber=2, Body=part2)["ETag"]
        e3 = s3.upload_part(Bucket=b, Key=key, UploadId=up, PartNumber=3, Body=part3)["ETag"]
        parts = s3.list_parts(Bucket=b, Key=key, UploadId=up)["Parts"]
        expect([(p["PartNumber"], p["ETag"], p["Size"]) for p in parts]
               == [(1, e1, len(part1)), (2, e2, len(part2)), (3, e3, 4)], f"list_parts {parts}")
        ups = [u["UploadId"] for u in s3.list_multipart_uploads(Bucket=b).get("Uploads", [])]
        expect(up in ups, f"list_multipart_uploads {ups}")
        bad = [{"PartNumber": 1, "ETag": e1}, {"PartNumber": 2, "ETag": '"0123456789abcdef0123456789abcdef"'}]
        expect_code("InvalidPart", s3.complete_multipart_upload, Bucket=b, Key=key, UploadId=up,
                    MultipartUpload={"Parts": bad})
        expect_code("InvalidPart", s3.complete_multipart_upload, Bucket=b, Key=key, UploadId=up,
                    MultipartUpload={"Parts": [{"PartNumber": 4, "ETag": e3}]})
        expect_code("InvalidPartOrder", s3.complete_multipart_upload, Bucket=b, Key=key, UploadId=up,
                    MultipartUpload={"Parts": [{"PartNumber": 2, "ETag": e2}, {"PartNumber": 1, "ETag": e1}]})
        # EntityTooSmall: a part under 5 MiB that is not the last.
        s3.upload_part(Bucket=b, Key=key, UploadId=up, PartNumber=5, Body=b"small")
        e5 = '"' + hashlib.md5(b"small").hexdigest() + '"'
        expect_code("EntityTooSmall", s3.complete_multipart_upload, Bucket=b, Key=key, UploadId=up,
                    MultipartUpload={"Parts": [{"PartNumber": 3, "ETag": e3}, {"PartNumber": 5, "ETag": e5}]})
        r = s3.complete_multipart_upload(Bucket=b, Key=key, UploadId=up, MultipartUpload={"Parts": [
            {"PartNumber": 1, "ETag": e1}, {"PartNumber": 2, "ETag": e2}, {"PartNumber": 3, "ETag": e3}]})
        md5s = b"".join(hashlib.md5(p).digest() for p in (part1, part2, part3))
        want = '"' + hashlib.md5(md5s).hexdigest() + '-3"'
        expect(r["ETag"] == want, f"multipart ETag {r['ETag']} != {want}")
        g = s3.get_object(Bucket=b, Key=key)
        expect(g["Body"].read() == part1 + part2 + part3, "multipart object: wrong bytes")
        expect(g["ETag"] == want and g["ContentType"] == "application/x-kiln", f"multipart object {g['ETag']}")
        p2 = s3.get_object(Bucket=b, Key=key, PartNumber=2)
        expect(p2["Body"].read() == part2 and p2.get("PartsCount") == 3, f"get_object PartNumber=2 {p2.get('PartsCount')}")
        expect_code("NoSuchUpload", s3.upload_part, Bucket=b, Key=key, UploadId=up, PartNumber=1, Body=b"late")
        expect_code("NoSuchUpload", s3.list_parts, Bucket=b, Key=key, UploadId=up)
        # Abort.
        up2 = s3.create_multipart_upload(Bucket=b, Key="mp/aborted")["UploadId"]
        s3.upload_part(Bucket=b, Key="mp/aborted", UploadId=up2, PartNumber=1, Body=b"doomed")
        before = len(data_files(state_dir))
        s3.abort_multipart_upload(Bucket=b, Key="mp/aborted", UploadId=up2)
        expect(len(data_files(state_dir)) == before - 1, "abort left its part's data file")
        expect_code("NoSuchUpload", s3.abort_multipart_upload, Bucket=b, Key="mp/aborted", UploadId=up2)
        expect_code("NoSuchUpload", s3.complete_multipart_upload, Bucket=b, Key="mp/aborted", UploadId=up2,
                    MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": '"x"'}]})
        code, _ = error_code(s3.head_object, Bucket=b, Key="mp/aborted")
        expect(code == "404", f"aborted upload made an object: {code}")
        # Parts and uploads left out of the list are gone with the upload.
        expect(not [u for u in s3.list_multipart_uploads(Bucket=b).get("Uploads", []) if u["Key"].startswith("mp/")],
               "uploads left after complete/abort")

    def multipart_checksums():
        key = "mp/crc"
        up = s3.create_multipart_upload(Bucket=b, Key=key, ChecksumAlgorithm="CRC32")["UploadId"]
        p1, p2 = os.urandom(5 * MiB), os.urandom(1000)
        r1 = s3.upload_part(Bucket=b, Key=key, UploadId=up, PartNumber=1, Body=p1, ChecksumAlgorithm="CRC32")
        r2 = s3.upload_part(Bucket=b, Key=key, UploadId=up, PartNumber=2, Body=p2, ChecksumAlgorithm="CRC32")
        expect(r1.get("ChecksumCRC32") == crc32_b64(p1), f"part 1 ChecksumCRC32 {r1.get('ChecksumCRC32')}")
        bad = [{"PartNumber": 1, "ETag": r1["ETag"], "ChecksumCRC32": crc32_b64(p2)},
               {"PartNumber": 2, "ETag": r2["ETag"], "ChecksumCRC32": r2["ChecksumCRC32"]}]
        expect_code("InvalidPart", s3.complete_multipart_upload, Bucket=b, Key=key, UploadId=up,
                    MultipartUpload={"Parts": bad})
        good = [{"PartNumber": 1, "ETag": r1["ETag"], "ChecksumCRC32": r1["ChecksumCRC32"]},
                {"PartNumber": 2, "ETag": r2["ETag"], "ChecksumCRC32": r2["ChecksumCRC32"]}]
        r = s3.complete_multipart_upload(Bucket=b, Key=key, UploadId=up, MultipartUpload={"Parts": good})
        raw = zlib.crc32(base64.b64decode(r1["ChecksumCRC32"]) + base64.b64decode(r2["ChecksumCRC32"]))
        want = base64.b64encode(raw.to_bytes(4, "big")).decode() + "-2"
        expect(r.get("ChecksumCRC32") == want and r.get("ChecksumType") == "COMPOSITE",
               f"composite checksum {r.get('ChecksumCRC32')} {r.get('ChecksumType')}, want {want}")
        # A full-object CRC32 upload: the object's CRC is the whole data's.
        up = s3.create_multipart_upload(Bucket=b, Key="mp/full", ChecksumAlgorithm="CRC32",
                                        ChecksumType="FULL_OBJECT")["UploadId"]
        r1 = s3.upload_part(Bucket=b, Key="mp/full", UploadId=up, PartNumber=1, Body=p1, ChecksumAlgorithm="CRC32")
        r2 = s3.upload_part(Bucket=b, Key="mp/full", UploadId=up, PartNumber=2, Body=p2, ChecksumAlgorithm="CRC32")
        r = s3.complete_multipart_upload(Bucket=b, Key="mp/full", UploadId=up, ChecksumType="FULL_OBJECT",
                                         MultipartUpload={"Parts": [
                                             {"PartNumber": 1, "ETag": r1["ETag"], "ChecksumCRC32": r1["ChecksumCRC32"]},
                                             {"PartNumber": 2, "ETag": r2["ETag"], "ChecksumCRC32": r2["ChecksumCRC32"]}]})
        expect(r.get("ChecksumCRC32") == crc32_b64(p1 + p2) and r.get("ChecksumType") == "FULL_OBJECT",
               f"full-object checksum {r.get('ChecksumCRC32')}, want {crc32_b64(p1 + p2)}")
        g = s3.get_object(Bucket=b, Key="mp/full", ChecksumMode="ENABLED")
        expect(g.get("ChecksumCRC32") == crc32_b64(p1 + p2) and g["Body"].read() == p1 + p2,
               "full-object checksum on GetObject (botocore validates it)")

    def checksums():
        body = b"123456789"
        # Known values of "123456789" (CRC catalogues: CRC-32/ISO-HDLC, CRC-32C, CRC-64/NVME).
        known = {"crc32": "y/Q5Jg==", "crc32c": "4waSgw==", "crc64nvme": "rosUhgp5mIg=",
                 "sha1": base64.b64encode(hashlib.sha1(body).digest()).decode(),
                 "sha256": base64.b64encode(hashlib.sha256(body).digest()).decode()}
        expect(known["crc32"] == crc32_b64(body), "the CRC32 vector disagrees with zlib")
        for alg, value in known.items():
            r = s3_send(url, "PUT", f"/{b}/ck-{alg}", body=body, headers={f"x-amz-checksum-{alg}": value})
            expect(r.status == 200, f"{alg} {value}: HTTP {r.status}: {r.text()}")
            expect(r.headers.get(f"x-amz-checksum-{alg}") == value, f"{alg}: reply header {r.headers}")
            h = s3_send(url, "HEAD", f"/{b}/ck-{alg}", headers={"x-amz-checksum-mode": "ENABLED"})
            expect(h.headers.get(f"x-amz-checksum-{alg}") == value, f"{alg}: HEAD with checksum mode {h.headers}")
            wrong = base64.b64encode(bytes(len(base64.b64decode(value)))).decode()
            r = s3_send(url, "PUT", f"/{b}/ck-{alg}-bad", body=body, headers={f"x-amz-checksum-{alg}": wrong})
            expect_s3_error(r, 400, "BadDigest")
        r = s3_send(url, "PUT", f"/{b}/ck-two", body=body, headers={"x-amz-checksum-crc32": known["crc32"],
                                                                   "x-amz-checksum-sha1": known["sha1"]})
        expect_s3_error(r, 400, "InvalidRequest")
        # Wrong CRC32 and Content-MD5 through boto3 itself.
        expect_code("BadDigest", s3.put_object, Bucket=b, Key="bad-crc", Body=b"data", ChecksumCRC32=crc32_b64(b"other"))
        expect_code("BadDigest", s3.put_object, Bucket=b, Key="bad-md5", Body=b"data", ContentMD5=md5_b64(b"other"))
        expect_code("InvalidDigest", s3.put_object, Bucket=b, Key="bad-md5", Body=b"data", ContentMD5="bm90IG1kNQ==")
        for k in ("bad-crc", "bad-md5", "ck-two", "ck-crc32-bad"):
            code, _ = error_code(s3.head_object, Bucket=b, Key=k)
            expect(code == "404", f"a refused PUT stored {k}")
        r = s3.put_object(Bucket=b, Key="good-md5", Body=b"data", ContentMD5=md5_b64(b"data"),
                          ChecksumAlgorithm="SHA256")
        expect(r.get("ChecksumSHA256") == base64.b64encode(hashlib.sha256(b"data").digest()).decode(),
               f"SHA256 put: {r}")
        g = s3.get_object(Bucket=b, Key="good-md5", ChecksumMode="ENABLED")
        expect(g["Body"].read() == b"data" and g.get("ChecksumSHA256"), "SHA256 get with checksum mode")
        # A ranged read carries no checksum (there is nothing to check it against).
        g = s3_send(url, "GET", f"/{b}/ck-crc32", headers={"x-amz-checksum-mode": "ENABLED", "Range": "bytes=0-3"})
        expect(g.status == 206 and "x-amz-checksum-crc32" not in g.headers, f"ranged GET headers {g.headers}")

    def accounts():
        other = s3_client(url, KEY2, SECRET2)
        for fn, kw in ((other.list_objects_v2, {}), (other.put_object, {"Key": "x", "Body": b"x"}),
                       (other.get_object, {"Key": "obj"}), (other.delete_object, {"Key": "obj"}),
                       (other.delete_bucket, {}), (other.create_multipart_upload, {"Key": "m"})):
            expect_code("AccessDenied", fn, Bucket=b, **kw)
        code, resp = error_code(other.head_bucket, Bucket=b)
        expect(code == "403", f"head_bucket of another account's bucket: {code}")
        names = [x["Name"] for x in other.list_buckets()["Buckets"]]
        expect(b not in names, f"another account lists {b}: {names}")
        expect_code("AccessDenied", other.copy_object, Bucket=b, Key="x", CopySource=f"{b}/obj")
        other.create_bucket(Bucket="kiln-other-account")
        expect_code("AccessDenied", s3.copy_object, Bucket=b, Key="x", CopySource="kiln-other-account/x")

    def regions():
        eu = s3_client(url, region="eu-west-1")
        eu.put_object(Bucket="kiln-boto3-eu", Key="k", Body=b"euro")
        # Signed for the wrong region: the error names the right one...
        r = s3_send(url, "GET", "/kiln-boto3-eu/k")
        root = expect_s3_error(r, 400, "AuthorizationHeaderMalformed")
        expect(root.findtext("Region") == "eu-west-1" and r.headers.get("x-amz-bucket-region") == "eu-west-1",
               f"wrong region reply: {r.text()} {r.headers}")
        r = s3_send(url, "HEAD", "/kiln-boto3-eu")
        expect(r.status == 400 and r.body == b"" and r.headers.get("x-amz-bucket-region") == "eu-west-1",
               f"HEAD in the wrong region: HTTP {r.status} {r.body!r} {r.headers}")
        # ... which botocore follows, re-signing for eu-west-1.
        us = s3_client(url, config=Config(retries={"max_attempts": 2}))
        expect(us.get_object(Bucket="kiln-boto3-eu", Key="k")["Body"].read() == b"euro", "redirected get_object")
        eu.delete_object(Bucket="kiln-boto3-eu", Key="k")
        eu.delete_bucket(Bucket="kiln-boto3-eu")

    def not_empty():
        s3.create_bucket(Bucket="kiln-not-empty")
        s3.put_object(Bucket="kiln-not-empty", Key="k", Body=b"x")
        up = s3.create_multipart_upload(Bucket="kiln-not-empty", Key="m")["UploadId"]
        s3.upload_part(Bucket="kiln-not-empty", Key="m", UploadId=up, PartNumber=1, Body=b"part")
        expect_code("BucketNotEmpty", s3.delete_bucket, Bucket="kiln-not-empty")
        s3.delete_object(Bucket="kiln-not-empty", Key="k")
        before = len(data_files(state_dir))
        s3.delete_bucket(Bucket="kiln-not-empty")
        expect(len(data_files(state_dir)) == before - 1, "delete_bucket left an upload's part")
        expect_code("NoSuchBucket", s3.list_objects_v2, Bucket="kiln-not-empty")

    def presigned():
        s3.put_object(Bucket=b, Key="presigned", Body=b"via url")
        # botocore presigns S3 in us-east-1 with SigV2 unless told otherwise;
        # S3 refuses SigV2 on buckets made since 2020, and so does this.
        v2 = s3.generate_presigned_url("get_object", Params={"Bucket": b, "Key": "presigned"}, ExpiresIn=60)
        expect("AWSAccessKeyId=" in v2, f"botocore's default presigned URL is no longer SigV2: {v2}")
        try:
            urllib.request.urlopen(v2, timeout=30)
            raise Fail("a SigV2 presigned URL worked")
        except urllib.error.HTTPError as e:
            root = expect_s3_error(Reply(e.code, list(e.headers.items()), e.read()), 400, "InvalidRequest")
            expect("AWS4-HMAC-SHA256" in root.findtext("Message"), f"SigV2 refusal: {root.findtext('Message')}")
        v4 = s3_client(url, config=Config(signature_version="s3v4", retries={"max_attempts": 0}))
        u = v4.generate_presigned_url("get_object", Params={"Bucket": b, "Key": "presigned"}, ExpiresIn=60)
        expect("X-Amz-Signature=" in u, f"not a SigV4 URL: {u}")
        with urllib.request.urlopen(u, timeout=30) as f:
            expect(f.read() == b"via url", "presigned GET")
        put = v4.generate_presigned_url("put_object", Params={"Bucket": b, "Key": "presigned-put"}, ExpiresIn=60)
        req = urllib.request.Request(put, data=b"put via url", method="PUT")
        with urllib.request.urlopen(req, timeout=30) as f:
            expect(f.status == 200, f"presigned PUT: HTTP {f.status}")
        expect(s3.get_object(Bucket=b, Key="presigned-put")["Body"].read() == b"put via url", "presigned PUT body")
        sig = re.search(r"X-Amz-Signature=([0-9a-f]{64})", u).group(1)
        bad = u.replace(sig, sig[:-1] + ("0" if sig[-1] != "0" else "1"))
        try:
            urllib.request.urlopen(bad, timeout=30)
            raise Fail("a tampered presigned URL worked")
        except urllib.error.HTTPError as e:
            r = Reply(e.code, list(e.headers.items()), e.read())
            expect_s3_error(r, 403, "SignatureDoesNotMatch")
        old = v4.generate_presigned_url("get_object", Params={"Bucket": b, "Key": "presigned"}, ExpiresIn=1)
        time.sleep(2)
        try:
            urllib.request.urlopen(old, timeout=30)
            raise Fail("an expired presigned URL worked")
        except urllib.error.HTTPError as e:
            root = expect_s3_error(Reply(e.code, list(e.headers.items()), e.read()), 403, "AccessDenied")
            expect("expired" in root.findtext("Message"), f"expired URL: {root.findtext('Message')}")

    def auth_errors():
        r = s3_send(url, "GET", f"/{b}", secret="wrong")
        expect_s3_error(r, 403, "SignatureDoesNotMatch")
        r = s3_send(url, "GET", f"/{b}", key="AKIANOBODY")
        expect_s3_error(r, 403, "InvalidAccessKeyId")
        p = urllib.parse.urlsplit(url)
        conn = http.client.HTTPConnection(p.hostname, p.port, timeout=30)
        conn.request("GET", f"/{b}/obj")
        resp = conn.getresponse()
        r = Reply(resp.status, resp.getheaders(), resp.read())
        conn.close()
        expect_s3_error(r, 403, "AccessDenied")
        target, hdrs = s3_sign(url, "PUT", f"/{b}/tampered", body=b"signed body")
        conn = http.client.HTTPConnection(p.hostname, p.port, timeout=30)
        conn.request("PUT", target, body=b"other body!", headers=hdrs)
        resp = conn.getresponse()
        r = Reply(resp.status, resp.getheaders(), resp.read())
        conn.close()
        expect_s3_error(r, 400, "XAmzContentSHA256Mismatch")
        r = s3_send(url, "GET", f"/{b}", query="acl=")
        expect_s3_error(r, 501, "NotImplemented")

    steps = [
        ("buckets: create, list, head, location, BucketAlreadyOwnedByYou/Exists, names, location rules", buckets),
        ("put/get/head: metadata, ranges (206, suffix, clamped, 416), conditionals, empty object", put_get_head),
        ("keys with spaces, unicode, ../ stored and listed as given, data files by id only", odd_keys),
        ("list_objects_v2: prefix+delimiter, MaxKeys pages, paginator, StartAfter; v1 Marker; delete_objects",
         listing),
        ("copy_object: COPY and REPLACE metadata, to itself, missing source; managed copy by UploadPartCopy", copy),
        ("multipart: parts, list_parts/uploads, InvalidPart, InvalidPartOrder, EntityTooSmall, ETag, abort",
         multipart),
        ("multipart checksums: part CRC32s, InvalidPart on a wrong one, COMPOSITE and FULL_OBJECT", multipart_checksums),
        ("flexible checksums CRC32/CRC32C/CRC64NVME/SHA1/SHA256, BadDigest, Content-MD5, InvalidDigest", checksums),
        ("another account (test2): AccessDenied everywhere, BucketAlreadyExists", accounts),
        ("a bucket in eu-west-1: AuthorizationHeaderMalformed naming it, botocore follows", regions),
        ("BucketNotEmpty; delete_bucket aborts uploads", not_empty),
        ("presigned GET and PUT (SigV4); SigV2 refused; tampered and expired URLs", presigned),
        ("SigV4 failures in S3's shape; a tampered body; ?acl NotImplemented", auth_errors),
    ]
    for title, fn in steps:
        tap.case(f"boto3 {boto3.__version__}: {title}", fn)


# ---- wire: aws-chunked, virtual hosts, cut bodies ----

def wire_cases(tap, url, state_dir):
    s3 = s3_client(url)
    b = "kiln-wire"
    p = urllib.parse.urlsplit(url)

    def setup():
        s3.create_bucket(Bucket=b)

    def signed_chunks():
        data = [os.urandom(64 * 1024), os.urandom(64 * 1024), os.urandom(1000)]
        whole = b"".join(data)
        now = datetime.datetime.now(datetime.timezone.utc)
        amz_date = now.strftime("%Y%m%dT%H%M%SZ")
        scope = f"{amz_date[:8]}/{REGION}/s3/aws4_request"
        key = signing_key(SECRET, amz_date[:8], REGION)

        def put(name, payload, body_fn, extra=None):
            headers = {"Content-Encoding": "aws-chunked", "x-amz-decoded-content-length": str(len(whole)),
                       "X-Amz-Date": amz_date}
            headers.update(extra or {})
            # The body's length is signed: compute the body once with a
            # dummy seed (same length), sign, then build the real body.
            # The request is signed at `now`, the time the chunks are signed
            # with (botocore would put its own clock in X-Amz-Date, and a
            # second ticking over since amz_date breaks every chunk's
            # signature).
            probe = body_fn("0" * 64)
            headers["Content-Length"] = str(len(probe))
            target, hdrs = s3_sign(url, "PUT", f"/{b}/{name}", headers=headers, payload=payload, sign_body=False,
                                   when=now)
            expect(hdrs["X-Amz-Date"] == amz_date, f"signed at {hdrs['X-Amz-Date']}, chunks signed at {amz_date}")
            seed = re.search(r"Signature=([0-9a-f]{64})", hdrs["Authorization"]).group(1)
            body = body_fn(seed)
            conn = http.client.HTTPConnection(p.hostname, p.port, timeout=60)
            conn.request("PUT", target, body=body, headers=hdrs)
            r = conn.getresponse()
            reply = Reply(r.status, r.getheaders(), r.read())
            conn.close()
            return reply

        payload = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"
        r = put("signed", payload, lambda seed: aws_chunked_signed(seed, amz_date, scope, key, data))
        expect(r.status == 200, f"signed chunks: HTTP {r.status}: {r.text()}")
        expect(r.headers.get("etag") == '"' + hashlib.md5(whole).hexdigest() + '"', f"ETag {r.headers.get('etag')}")
        expect(s3.get_object(Bucket=b, Key="signed")["Body"].read() == whole, "signed chunks: stored bytes differ")

        def tampered(seed):
            body = bytearray(aws_chunked_signed(seed, amz_date, scope, key, data))
            i = body.index(b"\r\n") + 2 + 100
            body[i] ^= 1
            return bytes(body)
        r = put("signed-bad", payload, tampered)
        expect_s3_error(r, 403, "SignatureDoesNotMatch")
        code, _ = error_code(s3.head_object, Bucket=b, Key="signed-bad")
        expect(code == "404", "a body with a bad chunk signature was stored")
        small = [os.urandom(1000), os.urandom(1000)]
        r = put("signed-small", payload, lambda seed: aws_chunked_signed(seed, amz_date, scope, key, small),
                {"x-amz-decoded-content-length": "2000"})
        expect_s3_error(r, 403, "InvalidChunkSizeError")
        # Signed chunks and a signed trailer carrying the CRC32.
        crc = crc32_b64(whole)
        r = put("signed-trailer", payload + "-TRAILER",
                lambda seed: aws_chunked_signed(seed, amz_date, scope, key, data, ("x-amz-checksum-crc32", crc)),
                {"x-amz-trailer": "x-amz-checksum-crc32"})
        expect(r.status == 200, f"signed trailer: HTTP {r.status}: {r.text()}")
        h = s3.head_object(Bucket=b, Key="signed-trailer", ChecksumMode="ENABLED")
        expect(h.get("ChecksumCRC32") == crc, f"signed trailer's CRC32 not kept: {h.get('ChecksumCRC32')}")

    def unsigned_trailer():
        data = [os.urandom(70000), os.urandom(33)]
        whole = b"".join(data)

        def put(name, crc):
            body = aws_chunked_unsigned(data, ("x-amz-checksum-crc32", crc))
            headers = {"Content-Encoding": "aws-chunked", "x-amz-decoded-content-length": str(len(whole)),
                       "x-amz-trailer": "x-amz-checksum-crc32", "Content-Length": str(len(body))}
            target, hdrs = s3_sign(url, "PUT", f"/{b}/{name}", headers=headers,
                                   payload="STREAMING-UNSIGNED-PAYLOAD-TRAILER", sign_body=False)
            conn = http.client.HTTPConnection(p.hostname, p.port, timeout=60)
            conn.request("PUT", target, body=body, headers=hdrs)
            r = conn.getresponse()
            reply = Reply(r.status, r.getheaders(), r.read())
            conn.close()
            return reply

        r = put("trailer", crc32_b64(whole))
        expect(r.status == 200, f"unsigned trailer: HTTP {r.status}: {r.text()}")
        expect(s3.get_object(Bucket=b, Key="trailer")["Body"].read() == whole, "trailer: stored bytes differ")
        r = put("trailer-bad", crc32_b64(b"not it"))
        expect_s3_error(r, 400, "BadDigest")

    def botocore_trailer():
        """botocore's own aws-chunked encoder: it only sends trailers over
        https, so its scheme test is made to see https for this case."""
        real = botocore.httpchecksum.urlparse
        botocore.httpchecksum.urlparse = lambda u: real(u.replace("http://", "https://", 1))
        sent = []
        client = s3_client(url)
        client.meta.events.register("before-send.s3", lambda request, **kw: sent.append(dict(request.headers)))
        body = os.urandom(300000)
        try:
            r = client.put_object(Bucket=b, Key="botocore-trailer", Body=io.BytesIO(body))
        finally:
            botocore.httpchecksum.urlparse = real
        h = sent[-1]
        expect(h.get("X-Amz-Content-SHA256") == b"STREAMING-UNSIGNED-PAYLOAD-TRAILER"
               and h.get("Content-Encoding") == b"aws-chunked", f"botocore did not send a trailer: {h}")
        expect(r.get("ChecksumCRC32") == crc32_b64(body), f"ChecksumCRC32 {r.get('ChecksumCRC32')}")
        g = s3.get_object(Bucket=b, Key="botocore-trailer", ChecksumMode="ENABLED")
        expect(g["Body"].read() == body and g.get("ChecksumCRC32") == crc32_b64(body), "botocore trailer round trip")
        return f"headers {sorted(k for k in h if k.lower().startswith(('x-amz', 'content')))}"

    def virtual_host_boto3():
        real = socket.getaddrinfo

        def resolve(host, *a, **kw):
            if isinstance(host, str) and host.endswith(".localhost"):
                host = "127.0.0.1"
            return real(host, *a, **kw)
        resolves = True
        try:
            socket.getaddrinfo(f"{b}.localhost", p.port)
        except socket.gaierror:
            resolves = False
        if not resolves:
            socket.getaddrinfo = resolve
        urls = []
        try:
            v = s3_client(f"http://localhost:{p.port}", config=Config(s3={"addressing_style": "virtual"},
                                                                      retries={"max_attempts": 0}))
            v.meta.events.register("before-send.s3", lambda request, **kw: urls.append(request.url))
            v.put_object(Bucket=b, Key="virtual/a b.txt", Body=b"virtual")
            got = v.get_object(Bucket=b, Key="virtual/a b.txt")["Body"].read()
            listed = [o["Key"] for o in v.list_objects_v2(Bucket=b, Prefix="virtual/")["Contents"]]
        finally:
            socket.getaddrinfo = real
        expect(urls and all(u.startswith(f"http://{b}.localhost:{p.port}/") for u in urls),
               f"boto3 did not address the bucket by host: {urls}")
        expect(got == b"virtual" and listed == ["virtual/a b.txt"], f"virtual host: {got!r} {listed}")
        return f"*.localhost {'resolves' if resolves else 'does not resolve here (resolver patched in-process)'}"

    def virtual_host_raw():
        host = f"{b}.localhost:{p.port}"
        r = s3_send(url, "PUT", "/raw/host.txt", body=b"by host", host=host)
        expect(r.status == 200, f"PUT with Host {host}: HTTP {r.status}: {r.text()}")
        r = s3_send(url, "GET", "/raw/host.txt", host=f"{b}.s3.localhost:{p.port}")
        expect(r.status == 200 and r.body == b"by host", f"GET with Host {b}.s3.localhost: {r.status} {r.body!r}")
        r = s3_send(url, "GET", "/", query="list-type=2&prefix=raw%2F", host=f"{b}.s3.{REGION}.localhost:{p.port}")
        expect(r.status == 200 and b"<Key>raw/host.txt</Key>" in r.body, f"ListObjectsV2 by host: {r.text()}")
        expect(s3.get_object(Bucket=b, Key="raw/host.txt")["Body"].read() == b"by host", "path style sees it")
        r = s3_send(url, "GET", "/raw/host.txt", host=f"kiln-no-such.localhost:{p.port}")
        root = expect_s3_error(r, 404, "NoSuchBucket")
        expect(root.findtext("BucketName") == "kiln-no-such", f"NoSuchBucket names {root.findtext('BucketName')}")

    def truncated():
        before = set(data_files(state_dir))
        length = 4 * MiB
        target, hdrs = s3_sign(url, "PUT", f"/{b}/cut", headers={"Content-Length": str(length)},
                               payload="UNSIGNED-PAYLOAD", sign_body=False)
        sock = socket.create_connection((p.hostname, p.port), timeout=30)
        # The Host header it signed goes with it: a head that does not
        # authenticate is refused before any of its body is read.
        hdrs.setdefault("Host", p.netloc)
        head = f"PUT {target} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in hdrs.items()) + "\r\n"
        sock.sendall(head.encode())
        sent = 0
        chunk = os.urandom(256 * 1024)
        while sent < length // 2:
            sock.sendall(chunk)
            sent += len(chunk)
        # While the body is on its way, its temporary file exists.
        seen = wait_for(lambda: tmp_files(state_dir), timeout=10)
        sock.close()
        expect(seen, "no temporary file while the body was arriving")
        gone = wait_for(lambda: not tmp_files(state_dir), timeout=15)
        expect(gone, f"temporary files left after the client went away: {tmp_files(state_dir)}")
        code, _ = error_code(s3.head_object, Bucket=b, Key="cut")
        expect(code == "404", "a cut-short upload made an object")
        expect(set(data_files(state_dir)) == before, "a cut-short upload left a data file")
        # The same over aws-chunked: the decoded length was not reached.
        body = aws_chunked_unsigned([os.urandom(1000)], ("x-amz-checksum-crc32", "AAAAAA=="))
        headers = {"Content-Encoding": "aws-chunked", "x-amz-decoded-content-length": "5000",
                   "x-amz-trailer": "x-amz-checksum-crc32", "Content-Length": str(len(body))}
        target, hdrs = s3_sign(url, "PUT", f"/{b}/cut2", headers=headers, payload="STREAMING-UNSIGNED-PAYLOAD-TRAILER",
                               sign_body=False)
        conn = http.client.HTTPConnection(p.hostname, p.port, timeout=60)
        conn.request("PUT", target, body=body, headers=hdrs)
        resp = conn.getresponse()
        r = Reply(resp.status, resp.getheaders(), resp.read())
        conn.close()
        expect_s3_error(r, 400, "IncompleteBody")
        expect(not tmp_files(state_dir), "a refused upload left its temporary file")

    def replace_atomic():
        """Readers during replacements see one whole version or the other."""
        a, bb = b"A" * (3 * MiB), b"B" * (3 * MiB)
        s3.put_object(Bucket=b, Key="swap", Body=a)
        stop = threading.Event()
        bad = []

        def reader():
            c = s3_client(url)
            while not stop.is_set():
                got = c.get_object(Bucket=b, Key="swap")["Body"].read()
                if got not in (a, bb):
                    bad.append((len(got), got[:1], got[-1:]))
        threads = [threading.Thread(target=reader) for _ in range(3)]
        for t in threads:
            t.start()
        try:
            for i in range(12):
                s3.put_object(Bucket=b, Key="swap", Body=bb if i % 2 == 0 else a)
        finally:
            stop.set()
            for t in threads:
                t.join()
        expect(not bad, f"readers saw mixed objects: {bad[:3]}")

    tap.case("wire: setup", setup)
    for title, fn in [
        ("STREAMING-AWS4-HMAC-SHA256-PAYLOAD: chunk signatures checked, tampered chunk refused, 8 KiB rule, "
         "signed trailer", signed_chunks),
        ("STREAMING-UNSIGNED-PAYLOAD-TRAILER: CRC32 in the trailer, BadDigest on a wrong one", unsigned_trailer),
        ("botocore's own aws-chunked trailer encoder (forced on over http)", botocore_trailer),
        ("virtual-host addressing: boto3 addressing_style=virtual", virtual_host_boto3),
        ("virtual-host addressing: raw requests with Host bucket.localhost / bucket.s3[.region].localhost",
         virtual_host_raw),
        ("a body cut short: no object, no temporary file; aws-chunked short of its length: IncompleteBody", truncated),
        ("PutObject replaces atomically under concurrent readers", replace_atomic),
    ]:
        tap.case(f"wire: {title}", fn)


# ---- Debian's boto3 ----

DEBIAN_BOTO3_SCRIPT = r"""
import hashlib, os, sys, boto3, botocore
from botocore.config import Config
from botocore.exceptions import ClientError
url, key, secret = sys.argv[1:4]
s3 = boto3.session.Session(aws_access_key_id=key, aws_secret_access_key=secret,
                           region_name="us-east-1").client("s3", endpoint_url=url,
                                                            config=Config(retries={"max_attempts": 0}))
b = "kiln-debian-boto3"
s3.create_bucket(Bucket=b)
s3.put_object(Bucket=b, Key="a b/c.txt", Body=b"debian")
assert s3.get_object(Bucket=b, Key="a b/c.txt")["Body"].read() == b"debian"
r = s3.list_objects_v2(Bucket=b, Delimiter="/")
assert [c["Prefix"] for c in r["CommonPrefixes"]] == ["a b/"], r
up = s3.create_multipart_upload(Bucket=b, Key="mp")["UploadId"]
p1, p2 = os.urandom(5 << 20), b"end"
e1 = s3.upload_part(Bucket=b, Key="mp", UploadId=up, PartNumber=1, Body=p1)["ETag"]
e2 = s3.upload_part(Bucket=b, Key="mp", UploadId=up, PartNumber=2, Body=p2)["ETag"]
try:
    s3.complete_multipart_upload(Bucket=b, Key="mp", UploadId=up, MultipartUpload={"Parts": [
        {"PartNumber": 1, "ETag": e2}, {"PartNumber": 2, "ETag": e2}]})
    raise SystemExit("a wrong part ETag was accepted")
except ClientError as e:
    assert e.response["Error"]["Code"] == "InvalidPart", e
r = s3.complete_multipart_upload(Bucket=b, Key="mp", UploadId=up, MultipartUpload={"Parts": [
    {"PartNumber": 1, "ETag": e1}, {"PartNumber": 2, "ETag": e2}]})
assert r["ETag"].endswith('-2"'), r
assert s3.get_object(Bucket=b, Key="mp")["Body"].read() == p1 + p2
s3.delete_objects(Bucket=b, Delete={"Objects": [{"Key": "a b/c.txt"}, {"Key": "mp"}]})
s3.delete_bucket(Bucket=b)
print("boto3 %s botocore %s" % (boto3.__version__, botocore.__version__))
"""


def debian_boto3_case(url):
    py = "/usr/bin/python3"
    if not os.path.exists(py) or subprocess.run([py, "-c", "import boto3"], capture_output=True).returncode != 0:
        raise Skip("/usr/bin/python3 has no boto3 (Debian python3-boto3)")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_") and not k.startswith("PYTHON")}
    env.update({"AWS_CONFIG_FILE": "/dev/null", "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
                "AWS_EC2_METADATA_DISABLED": "true"})
    p = subprocess.run([py, "-c", DEBIAN_BOTO3_SCRIPT, url, KEY, SECRET], capture_output=True, text=True, timeout=300,
                       env=env)
    expect(p.returncode == 0, f"exit {p.returncode}: {(p.stderr or p.stdout)[-1500:]}")
    return p.stdout.strip()


# ---- memory ----

def memory_case(server, work):
    """300 MiB up in one PutObject, up again as a multipart upload, and down:
    the emulator's peak resident memory stays far below the object."""
    url = server.url
    s3 = s3_client(url, config=Config(retries={"max_attempts": 0}, read_timeout=300))
    s3.create_bucket(Bucket="kiln-big")
    path = os.path.join(work, "big-300.bin")
    size = 300 * MiB
    make_file(path, size, "three hundred")
    want = file_sha256(path)
    hwm0 = vm_hwm_kib(server.proc.pid)
    t0 = time.monotonic()
    with open(path, "rb") as f:
        s3.put_object(Bucket="kiln-big", Key="one-put", Body=f)
    put_s = time.monotonic() - t0
    t0 = time.monotonic()
    s3.upload_file(path, "kiln-big", "multipart",
                   Config=boto3.s3.transfer.TransferConfig(multipart_threshold=8 * MiB, multipart_chunksize=16 * MiB))
    mp_s = time.monotonic() - t0
    for key in ("one-put", "multipart"):
        h = hashlib.sha256()
        body = s3.get_object(Bucket="kiln-big", Key=key)["Body"]
        for block in iter(lambda: body.read(MiB), b""):
            h.update(block)
        expect(h.hexdigest() == want, f"{key}: 300 MiB came back different")
    hwm = vm_hwm_kib(server.proc.pid)
    os.unlink(path)
    # Under AddressSanitizer freed buffers sit in its quarantine and shadow
    # memory costs more: a looser bound, still far below the object.
    with open(f"/proc/{server.proc.pid}/maps") as f:
        asan = "libasan" in f.read()
    limit = 192 if asan else 96
    expect(hwm < limit * 1024,
           f"VmHWM {hwm // 1024} MiB after moving 300 MiB objects (limit {limit} MiB{' under ASan' if asan else ''})")
    for key in ("one-put", "multipart"):
        s3.delete_object(Bucket="kiln-big", Key=key)
    s3.delete_bucket(Bucket="kiln-big")
    return (f"VmHWM {hwm0 // 1024} MiB before, {hwm // 1024} MiB after; PutObject {put_s:.1f}s, "
            f"multipart {mp_s:.1f}s")


# ---- restart ----

def restart_case(server, state_dir):
    s3 = s3_client(server.url)
    s3.create_bucket(Bucket="kiln-persist")
    s3.put_object(Bucket="kiln-persist", Key="kept", Body=b"survives")
    up = s3.create_multipart_upload(Bucket="kiln-persist", Key="pending")["UploadId"]
    e1 = s3.upload_part(Bucket="kiln-persist", Key="pending", UploadId=up, PartNumber=1, Body=b"part one")["ETag"]
    os.makedirs(os.path.join(state_dir, "s3", "tmp"), exist_ok=True)
    with open(os.path.join(state_dir, "s3", "tmp", "body-leftover"), "wb") as f:
        f.write(b"from a crash")
    rc = server.stop()
    expect(rc == 0, f"SIGTERM: exit status {rc}")
    server.start()
    s3 = s3_client(server.url)
    expect(s3.get_object(Bucket="kiln-persist", Key="kept")["Body"].read() == b"survives", "object after restart")
    r = s3.complete_multipart_upload(Bucket="kiln-persist", Key="pending", UploadId=up,
                                     MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": e1}]})
    expect(s3.get_object(Bucket="kiln-persist", Key="pending")["Body"].read() == b"part one",
           f"upload completed after restart: {r['ETag']}")
    expect(not tmp_files(state_dir), f"leftover temporary files not removed: {tmp_files(state_dir)}")


# ---- main ----

def main():
    binary, work, tap = protocol_setup(sys.argv, "kiln-s3-protocol-")
    state_dir = os.path.join(work, "state")
    os.makedirs(state_dir)
    server = Emulator(binary, state_dir=state_dir, log_dir=work)
    try:
        server.start()
        tap.diag(f"emulator {server.url} (state {state_dir})")
        home = os.path.join(work, "home")
        os.makedirs(home)
        files = os.path.join(work, "files")
        os.makedirs(files)
        for label, path, by_env in (("pip aws (AWS_ENDPOINT_URL)", pip_aws(), True),
                                    ("debian aws (/usr/bin/aws, --endpoint-url)", "/usr/bin/aws", False)):
            short = "pipcli" if by_env else "debcli"
            if path is None or not os.access(path, os.X_OK):
                tap.case(f"{label}: present", lambda: (_ for _ in ()).throw(Skip("not installed")))
                continue
            tap.diag(label)
            cli_cases(tap, short, Cli(path, server.url, by_env, home), files, state_dir)
        boto3_cases(tap, server.url, state_dir, work)
        tap.case("debian boto3 under /usr/bin/python3: buckets, keys, delimiter, multipart, InvalidPart",
                 debian_boto3_case, server.url)
        wire_cases(tap, server.url, state_dir)
        tap.case("memory: 300 MiB PutObject and multipart up and down, VmHWM far below", memory_case, server, files)
        tap.case("the emulator is still alive", lambda: expect(server.alive(), "the emulator died"))
        tap.case("restart on --state-dir: objects and uploads kept, leftover temporary files removed",
                 restart_case, server, state_dir)
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
