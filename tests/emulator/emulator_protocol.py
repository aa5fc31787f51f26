#!/usr/bin/env python3
"""kiln-emulator on the wire, run by `meson test` (suite emulator, TAP).

usage: emulator_protocol.py KILN_EMULATOR [FILTER]

Everything runs in mock mode (--instances mock) on 127.0.0.1 with free ports.
Two emulators are started:
  A  in-memory state, the default accounts (test/test, test2/test2):
     sigv4   every SigV4 failure, for EC2 (XML <Response><Errors>...) and for
             SSM (JSON {"__type", "message"}), with AWS's code and HTTP status;
             requests are built with botocore's SigV4Auth/SigV4QueryAuth and
             sent with http.client so the bytes on the wire are ours
     query   malformed EC2 query strings, missing and unknown actions, SSM's
             unknown operations and bodies that are not JSON
     limits  bodies over the 10 MiB limit (413 at once, from the head, and
             the server goes on)
  B  --state-dir (an AMI only comes from `kiln-emulator import-image`, which
     needs one), an --accounts file giving each client its own account:
     flood   8 threads of signed requests on keep-alive connections, ~10 s
     clients Debian's /usr/bin/aws (--endpoint-url), the pip `aws` on PATH
             (AWS_ENDPOINT_URL), boto3 with botocore's waiters, and Debian's
             boto3 under /usr/bin/python3
     restart SIGTERM, start again on the state directory, state still there
A FILTER argument runs only the cases whose name contains it.  Needs
qemu-img (import-image converts the disk) and botocore/boto3.
"""
import datetime
import hashlib
import http.client
import json
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.parse
import urllib.error
import urllib.request
import xml.etree.ElementTree as ET

import boto3
import botocore
from botocore.auth import SigV4Auth, SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.exceptions import ClientError, WaiterError

NS = "{http://ec2.amazonaws.com/doc/2016-11-15/}"
EC2_FORM = "application/x-www-form-urlencoded; charset=utf-8"
SSM_JSON = "application/x-amz-json-1.1"
REGION = "us-east-1"
DEFAULT_KEY, DEFAULT_SECRET = "test", "test"

# Server B's accounts: one per client so counts are exact.
ACCOUNTS = {
    "default": ("000000000000", "test", "test"),
    "second": ("111111111111", "test2", "test2"),
    "flood": ("222222222222", "AKIAFLOOD", "flood-secret"),
    "boto3": ("333333333333", "AKIABOTO3", "boto3-secret"),
    "debcli": ("444444444444", "AKIADEBCLI", "debcli-secret"),
    "pipcli": ("555555555555", "AKIAPIPCLI", "pipcli-secret"),
    "debboto": ("666666666666", "AKIADEBBOTO", "debboto-secret"),
    "sharer": ("777777777777", "AKIASHARER", "sharer-secret"),
    "viewer": ("888888888888", "AKIAVIEWER", "viewer-secret"),
}


class Fail(Exception):
    pass


def expect(cond, msg):
    if not cond:
        raise Fail(msg)


# ---- the emulator process ----

class Emulator:
    def __init__(self, binary, *args, state_dir=None, accounts=None, log_dir=None):
        self.binary = binary
        self.args = list(args)
        self.state_dir = state_dir
        self.accounts = accounts
        self.log_dir = log_dir or tempfile.mkdtemp(prefix="kiln-emu-log-")
        self.proc = None
        self.url = None
        self.starts = 0

    def start(self):
        cmd = [self.binary, "--listen", "127.0.0.1:0", "--instances", "mock"] + self.args
        if self.state_dir:
            cmd += ["--state-dir", self.state_dir]
        if self.accounts:
            cmd += ["--accounts", self.accounts]
        self.starts += 1
        self.log_path = os.path.join(self.log_dir, f"emulator-{self.starts}.log")
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self.log, text=True)
        ready, _, _ = select.select([self.proc.stdout], [], [], 30)
        line = self.proc.stdout.readline() if ready else ""
        m = re.match(r"^kiln-emulator: listening on (http://127\.0\.0\.1:(\d+)) \(", line)
        if not m:
            self.proc.kill()
            self.proc.wait()
            raise RuntimeError(f"kiln-emulator did not start: {line!r}; log:\n{self.log_tail()}")
        self.url = m.group(1)
        self.port = int(m.group(2))
        return self

    def stop(self, timeout=30):
        """SIGTERM; returns the exit status (None if it had to be killed)."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            rc = None
        self.proc.stdout.close()
        self.log.close()
        return rc

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, n=3000):
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()[-n:]
        except OSError:
            return ""


# ---- signed requests, sent byte for byte ----

class FixedClock:
    """add_auth with a chosen signing time instead of the clock's (works for
    SigV4Auth and SigV4QueryAuth, old and new botocore)."""

    def __init__(self, when, **kw):
        super().__init__(**kw)
        self.when = when

    def add_auth(self, request):
        request.context["timestamp"] = self.when.strftime("%Y%m%dT%H%M%SZ")
        self._modify_request_before_signing(request)
        canonical = self.canonical_request(request)
        sts = self.string_to_sign(request, canonical)
        self._inject_signature_to_request(request, self.signature(sts, request))


class ClockSigV4(FixedClock, SigV4Auth):
    pass


class ClockSigV4Query(FixedClock, SigV4QueryAuth):
    pass


class Wire:
    """One HTTP request as it goes on the wire."""

    def __init__(self, method, url, headers, body):
        self.method, self.url, self.headers, self.body = method, url, dict(headers), body

    @property
    def target(self):
        p = urllib.parse.urlsplit(self.url)
        return p.path + ("?" + p.query if p.query else "")


def sign(url, *, method="POST", service="ec2", region=REGION, body=b"", headers=None, key=DEFAULT_KEY,
         secret=DEFAULT_SECRET, when=None, presign_expires=None):
    """A request signed by botocore: header form, or query-string form when
    presign_expires is given.  when: the signing time (default now)."""
    creds = Credentials(key, secret)
    req = AWSRequest(method=method, url=url, data=body, headers=dict(headers or {}))
    if presign_expires is not None:
        if when is None:
            when = datetime.datetime.now(datetime.timezone.utc)
        ClockSigV4Query(when, credentials=creds, service_name=service, region_name=region,
                        expires=presign_expires).add_auth(req)
    elif when is not None:
        ClockSigV4(when, credentials=creds, service_name=service, region_name=region).add_auth(req)
    else:
        SigV4Auth(creds, service, region).add_auth(req)
    p = req.prepare()
    hdrs = {k: v for k, v in p.headers.items() if k.lower() != "content-length"}
    body = p.body
    if isinstance(body, str):
        body = body.encode()
    return Wire(method, p.url, hdrs, body if body else (b"" if method == "POST" else None))


def ec2_wire(url, body, **kw):
    headers = {"Content-Type": EC2_FORM}
    headers.update(kw.pop("headers", {}))
    return sign(url, body=body.encode() if isinstance(body, str) else body, headers=headers, **kw)


def ssm_wire(url, op, payload, **kw):
    headers = {"Content-Type": SSM_JSON, "X-Amz-Target": "AmazonSSM." + op}
    headers.update(kw.pop("headers", {}))
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    kw.setdefault("service", "ssm")
    return sign(url, body=body, headers=headers, **kw)


class Reply:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = {k.lower(): v for k, v in headers}
        self.body = body

    def text(self, n=400):
        return self.body[:n].decode("utf-8", "replace")

    def xml(self):
        try:
            return ET.fromstring(self.body)
        except ET.ParseError as e:
            raise Fail(f"HTTP {self.status}: body is not XML ({e}): {self.text()!r}")

    def json(self):
        try:
            return json.loads(self.body)
        except ValueError as e:
            raise Fail(f"HTTP {self.status}: body is not JSON ({e}): {self.text()!r}")


def send(base, wire, conn=None, timeout=60):
    """Sends wire to base (http://host:port) or over conn; returns a Reply."""
    own = conn is None
    if own:
        p = urllib.parse.urlsplit(base)
        conn = http.client.HTTPConnection(p.hostname, p.port, timeout=timeout)
    try:
        conn.request(wire.method, wire.target, body=wire.body, headers=wire.headers)
        r = conn.getresponse()
        return Reply(r.status, r.getheaders(), r.read())
    finally:
        if own:
            conn.close()


def ec2_error(reply):
    """(status, code, message) of an EC2 Query error, checking its shape:
    <Response><Errors><Error><Code/><Message/></Error></Errors><RequestID/></Response>."""
    root = reply.xml()
    expect(root.tag == "Response", f"HTTP {reply.status}: error root is <{root.tag}>, not <Response>: {reply.text()!r}")
    code = root.findtext("Errors/Error/Code")
    message = root.findtext("Errors/Error/Message")
    expect(code, f"HTTP {reply.status}: no Errors/Error/Code: {reply.text()!r}")
    expect(message is not None, f"HTTP {reply.status}: no Errors/Error/Message: {reply.text()!r}")
    expect(root.findtext("RequestID"), f"HTTP {reply.status}: no RequestID: {reply.text()!r}")
    expect("xml" in reply.headers.get("content-type", ""), f"content type {reply.headers.get('content-type')!r}")
    return reply.status, code, message


def ssm_error(reply):
    """(status, code, message) of an awsJson1_1 error {"__type", "message"}."""
    doc = reply.json()
    expect(isinstance(doc, dict) and isinstance(doc.get("__type"), str),
           f"HTTP {reply.status}: no __type: {reply.text()!r}")
    expect(isinstance(doc.get("message"), str), f"HTTP {reply.status}: no message: {reply.text()!r}")
    expect("json" in reply.headers.get("content-type", ""), f"content type {reply.headers.get('content-type')!r}")
    return reply.status, doc["__type"].split("#")[-1], doc["message"]


def expect_error(kind, reply, status, code, message_re=None):
    got_status, got_code, message = (ec2_error if kind == "ec2" else ssm_error)(reply)
    expect((got_status, got_code) == (status, code),
           f"expected HTTP {status} {code}, got HTTP {got_status} {got_code}: {message}")
    if message_re:
        expect(re.search(message_re, message), f"{code} message {message!r} does not match /{message_re}/")
    expect(reply.headers.get("x-amzn-requestid"), "no x-amzn-RequestId header")
    return message


def expect_ec2_ok(reply, action):
    expect(reply.status == 200, f"{action}: HTTP {reply.status}: {reply.text()!r}")
    root = reply.xml()
    expect(root.tag == NS + action + "Response", f"{action}: root <{root.tag}>")
    expect(root.findtext(NS + "requestId"), f"{action}: no requestId")
    return root


def expect_ssm_ok(reply, op):
    expect(reply.status == 200, f"{op}: HTTP {reply.status}: {reply.text()!r}")
    doc = reply.json()
    expect(isinstance(doc, dict), f"{op}: reply is not an object")
    return doc


# ---- TAP ----

class Tap:
    def __init__(self, only):
        self.only = only
        self.n = 0
        self.failed = 0
        self.logs = []
        print("TAP version 13", flush=True)

    def case(self, name, fn, *args):
        if self.only and self.only not in name:
            return None
        self.n += 1
        t0 = time.monotonic()
        result, problem, skip = None, None, None
        try:
            result = fn(*args)
        except Skip as e:
            skip = str(e)
        except Fail as e:
            problem = str(e)
        except ClientError as e:
            problem = f"unexpected {e.response.get('Error', {}).get('Code')}: {e}"
        except Exception:
            problem = traceback.format_exc()
        dt = time.monotonic() - t0
        if skip is not None:
            print(f"ok {self.n} - {name} # SKIP {skip}")
        elif problem:
            self.failed += 1
            print(f"not ok {self.n} - {name}")
            for line in problem.splitlines():
                print(f"# {line}")
        else:
            print(f"ok {self.n} - {name} ({dt:.1f}s)")
            if isinstance(result, str) and result:
                for line in result.splitlines():
                    print(f"# {line}")
        sys.stdout.flush()
        return result

    def diag(self, text):
        for line in text.splitlines():
            print(f"# {line}")
        sys.stdout.flush()

    def done(self):
        print(f"1..{self.n}", flush=True)
        return 1 if self.failed else 0


class Skip(Exception):
    pass


# ---- A: SigV4 ----

def amz_now(delta_minutes=0):
    return datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(minutes=delta_minutes)


EC2_CALL = "Action=DescribeRegions&Version=2016-11-15"
SSM_OP, SSM_PAYLOAD = "DescribeParameters", {}


def base_wire(url, kind, **kw):
    if kind == "ec2":
        return ec2_wire(url, EC2_CALL, **kw)
    return ssm_wire(url, SSM_OP, SSM_PAYLOAD, **kw)


def sigv4_cases(tap, url):
    """Every SigV4 failure for both protocols."""
    def control(kind):
        r = send(url, base_wire(url, kind))
        if kind == "ec2":
            expect_ec2_ok(r, "DescribeRegions")
        else:
            expect_ssm_ok(r, SSM_OP)
        r = send(url, base_wire(url, kind, key="test2", secret="test2"))
        expect(r.status == 200, f"test2/test2: HTTP {r.status}: {r.text()!r}")

    tap.case("sigv4 ec2: a signed request is served (test/test and test2/test2)", control, "ec2")
    tap.case("sigv4 ssm: a signed request is served (test/test and test2/test2)", control, "ssm")

    # kind -> (status, code) per failure, as AWS answers (emulator/auth.c).
    expected = {
        "missing": {"ec2": (401, "MissingAuthenticationToken"), "ssm": (400, "MissingAuthenticationTokenException")},
        "incomplete": {"ec2": (400, "IncompleteSignature"), "ssm": (400, "IncompleteSignatureException")},
        "unknown_key": {"ec2": (401, "AuthFailure"), "ssm": (400, "UnrecognizedClientException")},
        "mismatch": {"ec2": (403, "SignatureDoesNotMatch"), "ssm": (400, "InvalidSignatureException")},
        "expired": {"ec2": (400, "RequestExpired"), "ssm": (400, "InvalidSignatureException")},
        "scope": {"ec2": (401, "AuthFailure"), "ssm": (400, "InvalidSignatureException")},
    }

    def no_auth(kind):
        w = base_wire(url, kind)
        for h in ("Authorization", "X-Amz-Date"):
            w.headers.pop(h, None)
        return send(url, w)

    def malformed_authorization(kind):
        w = base_wire(url, kind)
        # No SignedHeaders.
        date = w.headers["X-Amz-Date"][:8]
        w.headers["Authorization"] = (f"AWS4-HMAC-SHA256 Credential=test/{date}/{REGION}/{kind}/aws4_request, "
                                      "Signature=" + "0" * 64)
        return send(url, w)

    def garbage_authorization(kind):
        w = base_wire(url, kind)
        w.headers["Authorization"] = "Basic dGVzdDp0ZXN0"
        return send(url, w)

    def no_date(kind):
        w = base_wire(url, kind)
        del w.headers["X-Amz-Date"]
        return send(url, w)

    def unknown_key(kind):
        return send(url, base_wire(url, kind, key="AKIANOBODY", secret="whatever"))

    def wrong_secret(kind):
        return send(url, base_wire(url, kind, secret="not-the-secret"))

    def tampered_body(kind):
        w = base_wire(url, kind)
        tampered = w.body.replace(b"Regions", b"Regionz") if kind == "ec2" else b'{"MaxResults":1}'
        expect(tampered != w.body, "tamper did nothing")
        w.body = tampered
        return send(url, w)

    def tampered_header(kind):
        w = base_wire(url, kind, headers={"X-Kiln-Note": "signed"})
        w.headers["X-Kiln-Note"] = "changed"
        return send(url, w)

    def dated(minutes):
        return lambda kind: send(url, base_wire(url, kind, when=amz_now(minutes)))

    def wrong_region(kind):
        return send(url, base_wire(url, kind, region="xx-nowhere-1"))

    def wrong_service(kind):
        return send(url, base_wire(url, kind, service="sqs"))

    failures = [
        ("no Authorization header, no query signature", no_auth, "missing", None),
        ("Authorization without SignedHeaders", malformed_authorization, "incomplete", None),
        ("Authorization that is not AWS4-HMAC-SHA256", garbage_authorization, "incomplete", None),
        ("signed X-Amz-Date header missing", no_date, "incomplete", None),
        ("unknown access key", unknown_key, "unknown_key", None),
        ("wrong secret", wrong_secret, "mismatch", None),
        ("body changed after signing", tampered_body, "mismatch", None),
        ("signed header changed after signing", tampered_header, "mismatch", None),
        ("dated 20 minutes ago", dated(-20), "expired", r"(?i)expired"),
        ("dated 20 minutes ahead", dated(20), "expired", None),
        ("region xx-nowhere-1 in the scope", wrong_region, "scope", r"xx-nowhere-1"),
        ("service sqs in the scope", wrong_service, "scope", r"sqs"),
    ]
    for kind in ("ec2", "ssm"):
        for title, make, what, msg_re in failures:
            status, code = expected[what][kind]

            def run(make=make, kind=kind, status=status, code=code, msg_re=msg_re):
                return expect_error(kind, make(kind), status, code, msg_re)

            tap.case(f"sigv4 {kind}: {title} -> {status} {code}", run)

    # Within the skew: 10 minutes either way is still served.
    def within_skew(kind):
        for m in (-10, 10):
            r = send(url, base_wire(url, kind, when=amz_now(m)))
            expect(r.status == 200, f"signed {m:+d} min: HTTP {r.status}: {r.text()!r}")

    tap.case("sigv4 ec2: dated 10 minutes either way is within the 15-minute skew", within_skew, "ec2")
    tap.case("sigv4 ssm: dated 10 minutes either way is within the 15-minute skew", within_skew, "ssm")

    # Query-string (presigned) form.
    def presigned_ec2(expires, when=None):
        return sign(url + "/?" + EC2_CALL, method="GET", presign_expires=expires, when=when)

    def presign_ok():
        w = presigned_ec2(300)
        expect("X-Amz-Signature=" in w.url and "Authorization" not in w.headers, f"not presigned: {w.url}")
        expect_ec2_ok(send(url, w), "DescribeRegions")

    def presign_boto3():
        # boto3's own presigner, the URL fetched as a user would paste it.
        # The method is signed: EC2 operations presign as POST unless told,
        # and a GET of a POST-signed URL fails on AWS too.
        ec2 = boto3.session.Session(aws_access_key_id=DEFAULT_KEY, aws_secret_access_key=DEFAULT_SECRET,
                                    region_name=REGION).client("ec2", endpoint_url=url)
        presigned = ec2.generate_presigned_url("describe_regions", ExpiresIn=300, HttpMethod="GET")
        try:
            with urllib.request.urlopen(presigned, timeout=30) as r:
                root = ET.fromstring(r.read())
                expect(root.tag == NS + "DescribeRegionsResponse", f"boto3 presigned URL: root {root.tag}")
        except urllib.error.HTTPError as e:
            raise Fail(f"boto3 generate_presigned_url: HTTP {e.code}: {e.read()[:300]!r}")

    def presign_expired():
        w = presigned_ec2(60, when=amz_now(-20))
        return expect_error("ec2", send(url, w), 400, "RequestExpired", r"(?i)expired")

    def presign_tampered():
        w = presigned_ec2(300)
        w.url = w.url.replace("DescribeRegions", "DescribeKeyPairs")
        return expect_error("ec2", send(url, w), 403, "SignatureDoesNotMatch")

    def presign_unknown_key():
        w = sign(url + "/?" + EC2_CALL, method="GET", presign_expires=300, key="AKIANOBODY", secret="x")
        return expect_error("ec2", send(url, w), 401, "AuthFailure")

    def presigned_ssm(expires, when=None):
        # awsJson1_1 by POST with an empty body (an empty body is {}).
        return sign(url + "/", method="POST", service="ssm", presign_expires=expires, when=when,
                    headers={"X-Amz-Target": "AmazonSSM." + SSM_OP, "Content-Type": SSM_JSON})

    def presign_ssm_ok():
        expect_ssm_ok(send(url, presigned_ssm(300)), SSM_OP)

    def presign_ssm_expired():
        return expect_error("ssm", send(url, presigned_ssm(60, when=amz_now(-20))), 400,
                            "InvalidSignatureException", r"(?i)expired")

    tap.case("sigv4 ec2: presigned GET (botocore SigV4QueryAuth) is served", presign_ok)
    tap.case("sigv4 ec2: a boto3 generate_presigned_url GET URL fetched by urllib is served", presign_boto3)
    tap.case("sigv4 ec2: presigned GET signed 20 min ago for 60 s -> 400 RequestExpired", presign_expired)
    tap.case("sigv4 ec2: presigned GET with the query changed -> 403 SignatureDoesNotMatch", presign_tampered)
    tap.case("sigv4 ec2: presigned GET with an unknown key -> 401 AuthFailure", presign_unknown_key)
    tap.case("sigv4 ssm: presigned POST is served", presign_ssm_ok)
    tap.case("sigv4 ssm: presigned POST signed 20 min ago for 60 s -> 400 InvalidSignatureException",
             presign_ssm_expired)

    def payload_hash_header():
        # A client that sends x-amz-content-sha256 (as S3 signers do): a body
        # that does not hash to it is refused, whatever else is right.
        w = ec2_wire(url, EC2_CALL, headers={"X-Amz-Content-SHA256": hashlib.sha256(EC2_CALL.encode()).hexdigest()})
        expect_ec2_ok(send(url, w), "DescribeRegions")
        w.body = w.body.replace(b"Regions", b"Regionz")
        r = send(url, w)
        st, code, msg = ec2_error(r)
        expect(400 <= st < 500 and r.status != 200, f"tampered body with x-amz-content-sha256: HTTP {st} {code}")
        return f"tampered body under x-amz-content-sha256: HTTP {st} {code}"

    tap.case("sigv4 ec2: x-amz-content-sha256 is checked against the body", payload_hash_header)


# ---- A: the Query protocol and awsJson1_1 ----

def query_cases(tap, url):
    def ec2_body(body, status, code, message_re=None):
        return lambda: expect_error("ec2", send(url, ec2_wire(url, body)), status, code, message_re)

    def ec2_get(query, status, code, message_re=None):
        return lambda: expect_error("ec2", send(url, sign(url + "/?" + query, method="GET")), status, code,
                                    message_re)

    base = "Action=DescribeRegions&Version=2016-11-15"
    cases = [
        ("POST body with a bad %-escape (%zz)", ec2_body(base + "&RegionName.1=%zz", 400, "MalformedQueryString")),
        ("POST body with a cut %-escape at the end", ec2_body(base + "&RegionName.1=us%2", 400,
                                                             "MalformedQueryString")),
        ("POST body with a pair with no name (=value)", ec2_body("Action=DescribeRegions&=orphan&Version=2016-11-15",
                                                                400, "MalformedQueryString")),
        ("POST body with a parameter given twice", ec2_body(base + "&Version=2016-11-15", 400,
                                                           "MalformedQueryString", r"Version")),
        ("GET query with a bad %-escape (%zz)", ec2_get(base + "&RegionName.1=%zz", 400, "MalformedQueryString")),
        ("GET query with a pair with no name", ec2_get("Action=DescribeRegions&=orphan&Version=2016-11-15", 400,
                                                       "MalformedQueryString")),
        ("GET query with a parameter given twice", ec2_get(base + "&Action=DescribeRegions", 400,
                                                           "MalformedQueryString", r"Action")),
        ("no Action", ec2_body("Version=2016-11-15", 400, "MissingAction")),
        ("empty Action", ec2_body("Action=&Version=2016-11-15", 400, "MissingAction")),
        ("unknown Action LaunchRockets", ec2_body("Action=LaunchRockets&Version=2016-11-15", 400, "InvalidAction",
                                                  r"LaunchRockets")),
        ("unknown Action by GET", ec2_get("Action=FlyToTheMoon&Version=2016-11-15", 400, "InvalidAction",
                                          r"FlyToTheMoon")),
    ]
    for title, fn in cases:
        tap.case(f"query ec2: {title}", fn)

    def ssm(target, body, status, code, message_re=None):
        def run():
            w = sign(url + "/", body=body, service="ssm", headers={"Content-Type": SSM_JSON, "X-Amz-Target": target})
            return expect_error("ssm", send(url, w), status, code, message_re)
        return run

    tap.case("query ssm: unknown operation AmazonSSM.LaunchRockets -> 400 UnknownOperationException",
             ssm("AmazonSSM.LaunchRockets", b"{}", 400, "UnknownOperationException", r"LaunchRockets"))
    tap.case("query ssm: target outside AmazonSSM (AmazonEC2.Foo) -> 400 UnknownOperationException",
             ssm("AmazonEC2.Foo", b"{}", 400, "UnknownOperationException", r"AmazonEC2\.Foo"))
    tap.case("query ssm: body that is not JSON -> 400 SerializationException",
             ssm("AmazonSSM.GetParameter", b"{not json", 400, "SerializationException"))
    tap.case("query ssm: JSON body that is not an object -> 400 SerializationException",
             ssm("AmazonSSM.GetParameter", b"[1, 2]", 400, "SerializationException"))

    def ssm_get():
        w = sign(url + "/?x=1", method="GET", service="ssm", headers={"X-Amz-Target": "AmazonSSM.DescribeParameters"})
        st, code, _ = ssm_error(send(url, w))
        expect(st == 400, f"SSM by GET: HTTP {st} {code}")
        return f"SSM by GET: HTTP {st} {code}"

    tap.case("query ssm: GET instead of POST is refused with a JSON error", ssm_get)


# ---- A: limits ----

MIB = 1024 * 1024


def limit_cases(tap, url):
    def follow_up():
        expect_ec2_ok(send(url, ec2_wire(url, EC2_CALL)), "DescribeRegions")

    def oversized():
        # The 413 comes at once, from the head: the client has sent none of
        # its body when it reads the reply (as with Expect: 100-continue).
        body = (EC2_CALL + "&Pad=").encode() + b"a" * (11 * MIB)
        w = ec2_wire(url, body)
        p = urllib.parse.urlsplit(url)
        conn = http.client.HTTPConnection(p.hostname, p.port, timeout=10)
        t0 = time.monotonic()
        try:
            conn.putrequest("POST", "/")
            for k, v in w.headers.items():
                conn.putheader(k, v)
            conn.putheader("Content-Length", str(len(body)))
            conn.endheaders()
            r = conn.getresponse()
            status, text = r.status, r.read()
        finally:
            conn.close()
        dt = time.monotonic() - t0
        expect(status == 413, f"11 MiB body: HTTP {status}: {text[:300]!r}")
        expect(dt < 5, f"the 413 took {dt:.2f}s: the server waited for the body")
        follow_up()
        return f"11 MiB body answered 413 in {dt:.2f}s, before any of it was sent"

    def oversized_chunked():
        # No Content-Length: the limit has to hold as the bytes arrive.
        w = ec2_wire(url, EC2_CALL)
        p = urllib.parse.urlsplit(url)
        conn = http.client.HTTPConnection(p.hostname, p.port, timeout=120)
        chunk = b"b" * MIB
        try:
            conn.putrequest("POST", "/")
            for k, v in w.headers.items():
                conn.putheader(k, v)
            conn.putheader("Transfer-Encoding", "chunked")
            conn.endheaders()
            sent = 0
            try:
                for _ in range(11):
                    conn.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                    sent += len(chunk)
                conn.send(b"0\r\n\r\n")
            except (BrokenPipeError, ConnectionResetError):
                pass  # the server may stop reading once it has refused
            r = conn.getresponse()
            status, body = r.status, r.read()
        finally:
            conn.close()
        expect(status == 413, f"11 MiB chunked body: HTTP {status}: {body[:300]!r}")
        follow_up()

    def at_limit():
        # Exactly 10 MiB is not over the limit.
        head = (EC2_CALL + "&Pad=").encode()
        body = head + b"a" * (10 * MIB - len(head))
        expect(len(body) == 10 * MIB, "arithmetic")
        r = send(url, ec2_wire(url, body), timeout=120)
        expect(r.status != 413, f"a body of exactly 10 MiB was refused as too large: {r.text()!r}")
        expect(r.status == 200 or ec2_error(r), f"HTTP {r.status}")
        follow_up()
        return f"10 MiB body: HTTP {r.status}"

    def keep_alive_after_errors():
        # Refusals answer on the same keep-alive connection and leave it usable.
        p = urllib.parse.urlsplit(url)
        conn = http.client.HTTPConnection(p.hostname, p.port, timeout=60)
        try:
            unsigned = ec2_wire(url, EC2_CALL)
            del unsigned.headers["Authorization"]
            steps = [
                (unsigned, 401),
                (ec2_wire(url, EC2_CALL, secret="wrong"), 403),
                (ec2_wire(url, "Action=LaunchRockets&Version=2016-11-15"), 400),
                (ssm_wire(url, "GetParameter", b"{not json"), 400),
                (ec2_wire(url, EC2_CALL), 200),
                (ssm_wire(url, SSM_OP, SSM_PAYLOAD), 200),
            ]
            sock = None
            for n, (w, status) in enumerate(steps):
                r = send(url, w, conn=conn)
                expect(r.status == status, f"step {n}: HTTP {r.status}, expected {status}: {r.text()!r}")
                expect(sock is None or conn.sock is sock, f"step {n}: the server closed the connection")
                expect(r.headers.get("connection", "").lower() != "close", f"step {n}: Connection: close")
                sock = conn.sock
        finally:
            conn.close()

    tap.case("limits: error replies keep the keep-alive connection open", keep_alive_after_errors)
    tap.case("limits: 11 MiB body with Content-Length -> 413, then the server still answers", oversized)
    tap.case("limits: 11 MiB chunked body -> 413, then the server still answers", oversized_chunked)
    tap.case("limits: a body of exactly 10 MiB is not refused as too large", at_limit)

    def missing_ami():
        r = send(url, ec2_wire(url, "Action=RunInstances&Version=2016-11-15&ImageId=ami-0123456789abcdef0&MinCount=1"
                                    "&MaxCount=1"))
        st, code, msg = ec2_error(r)
        expect((st, code) == (400, "InvalidAMIID.NotFound"), f"RunInstances of a missing AMI: HTTP {st} {code}")

    tap.case("in-memory: RunInstances of an AMI that does not exist -> 400 InvalidAMIID.NotFound", missing_ami)


# ---- B: the flood ----

def flood_case(url, seconds=10.0, threads=8):
    acct, key, secret = ACCOUNTS["flood"]
    s = boto_session("flood")
    ec2 = s.client("ec2", endpoint_url=url, config=CLIENT_CONFIG)
    ssm = s.client("ssm", endpoint_url=url, config=CLIENT_CONFIG)
    ec2.run_instances(ImageId=STATE["ami"], MinCount=5, MaxCount=5, InstanceType="t3.nano")
    ssm.put_parameter(Name="/flood/value", Value="flood-ok", Type="String")

    calls = [
        ("DescribeInstances", lambda: ec2_wire(url, "Action=DescribeInstances&Version=2016-11-15", key=key,
                                               secret=secret)),
        ("DescribeRegions", lambda: ec2_wire(url, EC2_CALL, key=key, secret=secret)),
        ("GetParameter", lambda: ssm_wire(url, "GetParameter", {"Name": "/flood/value"}, key=key, secret=secret)),
    ]

    def check(name, r):
        if name == "GetParameter":
            doc = expect_ssm_ok(r, name)
            p = doc.get("Parameter", {})
            expect(p.get("Name") == "/flood/value" and p.get("Value") == "flood-ok", f"GetParameter: {doc}")
            return
        root = expect_ec2_ok(r, name)
        if name == "DescribeInstances":
            ids = [e.text for e in root.iter(NS + "instanceId")]
            expect(len(ids) == 5, f"DescribeInstances: {len(ids)} instances, expected 5")
        else:
            names = [e.text for e in root.iter(NS + "regionName")]
            expect(REGION in names, f"DescribeRegions: {names}")

    p = urllib.parse.urlsplit(url)
    deadline = time.monotonic() + seconds
    results = []
    lock = threading.Lock()

    def worker(n):
        conn = http.client.HTTPConnection(p.hostname, p.port, timeout=30)
        count, failures, reconnects, socks = 0, [], 0, None
        latencies = []
        i = n
        while time.monotonic() < deadline:
            name, make = calls[i % len(calls)]
            i += 1
            try:
                w = make()
                t0 = time.monotonic()
                r = send(url, w, conn=conn)
                latencies.append(time.monotonic() - t0)
                check(name, r)
            except Exception as e:
                failures.append(f"{name}: {e}")
                conn.close()
                conn = http.client.HTTPConnection(p.hostname, p.port, timeout=30)
                socks = None
                if len(failures) > 20:
                    break
            else:
                if socks is not None and conn.sock is not socks:
                    reconnects += 1
                socks = conn.sock
            count += 1
        conn.close()
        with lock:
            results.append((count, failures, reconnects, latencies))

    ts = [threading.Thread(target=worker, args=(n,)) for n in range(threads)]
    t0 = time.monotonic()
    for t in ts:
        t.start()
    for t in ts:
        t.join(seconds + 120)
    elapsed = time.monotonic() - t0
    total = sum(r[0] for r in results)
    failures = [f for r in results for f in r[1]]
    reconnects = sum(r[2] for r in results)
    lat = sorted(x for r in results for x in r[3])
    expect(len(results) == threads, f"only {len(results)} of {threads} threads finished")
    expect(not failures, f"{len(failures)} of {total} requests failed; first: " + "; ".join(failures[:5]))
    expect(reconnects == 0, f"{reconnects} keep-alive connections were dropped by the server and reopened")
    expect(total > threads, f"only {total} requests in {elapsed:.1f}s")
    p50 = lat[len(lat) // 2] * 1000 if lat else 0
    p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000 if lat else 0
    return (f"flood: {total} signed requests from {threads} threads in {elapsed:.1f}s "
            f"({total / elapsed:.0f}/s), 0 failures, 0 reconnects; latency p50 {p50:.1f} ms p99 {p99:.1f} ms")


# ---- B: clients ----

STATE = {}
CLIENT_CONFIG = Config(retries={"total_max_attempts": 1}, connect_timeout=10, read_timeout=60)
FAST = {"Delay": 1, "MaxAttempts": 30}


def boto_session(name):
    _, key, secret = ACCOUNTS[name]
    return boto3.session.Session(aws_access_key_id=key, aws_secret_access_key=secret, region_name=REGION)


def client_error(fn, *args, **kw):
    """The error code fn raises (Fail if it succeeds)."""
    try:
        fn(*args, **kw)
    except ClientError as e:
        return e.response["Error"]["Code"], e.response["Error"].get("Message", ""), \
            e.response["ResponseMetadata"]["HTTPStatusCode"]
    raise Fail(f"{getattr(fn, '__name__', fn)} succeeded; expected an error")


def ids_of(reply):
    return [i["InstanceId"] for r in reply["Reservations"] for i in r["Instances"]]


def states_of(ec2, ids):
    out = {}
    for r in ec2.describe_instances(InstanceIds=ids)["Reservations"]:
        for i in r["Instances"]:
            out[i["InstanceId"]] = i["State"]["Name"]
    return out


def invocation_settled(get_invocation):
    """Polls an SSM invocation until it leaves Pending/InProgress/Delayed."""
    inv = None
    for _ in range(60):
        try:
            inv = get_invocation()
        except ClientError as e:
            if e.response["Error"]["Code"] != "InvocationDoesNotExist":
                raise
            time.sleep(0.5)
            continue
        if inv["Status"] not in ("Pending", "InProgress", "Delayed"):
            return inv
        time.sleep(0.5)
    raise Fail(f"invocation never settled: {inv}")


def check_mock_invocation(inv):
    expect(inv["Status"] != "Success", f"mock mode reported Success: {inv}")
    expect(inv["Status"] in ("Failed", "Undeliverable"), f"Status {inv['Status']!r}, expected Failed/Undeliverable")
    expect("mock" in json.dumps(inv, default=str).lower(), f"no word of mock mode in the invocation: {inv}")
    return f"send-command in mock mode: Status {inv['Status']}, StatusDetails {inv.get('StatusDetails')}, " \
           f"{inv.get('StandardErrorContent', '')[:100]!r}"


def boto3_cases(tap, url):
    s = boto_session("boto3")
    ec2 = s.client("ec2", endpoint_url=url, config=CLIENT_CONFIG)
    ssm = s.client("ssm", endpoint_url=url, config=CLIENT_CONFIG)
    ami = STATE["ami"]
    b = {}

    def run3():
        r = ec2.run_instances(ImageId=ami, InstanceType="t3.micro", MinCount=3, MaxCount=3,
                              TagSpecifications=[{"ResourceType": "instance", "Tags": [
                                  {"Key": "Name", "Value": "boto-trio"}, {"Key": "team", "Value": "kiln"}]}])
        ids = [i["InstanceId"] for i in r["Instances"]]
        expect(len(ids) == 3 and len(set(ids)) == 3, f"RunInstances gave {ids}")
        expect(all(i["State"]["Name"] == "pending" for i in r["Instances"]), "not pending at launch")
        expect(all(i["ImageId"] == ami for i in r["Instances"]), "ImageId")
        expect(sorted(i["AmiLaunchIndex"] for i in r["Instances"]) == [0, 1, 2], "AmiLaunchIndex")
        b["trio"] = ids
        ec2.get_waiter("instance_running").wait(InstanceIds=ids, WaiterConfig=FAST)
        d = ec2.describe_instances(InstanceIds=ids)
        for i in (x for res in d["Reservations"] for x in res["Instances"]):
            tags = {t["Key"]: t["Value"] for t in i.get("Tags", [])}
            expect(tags == {"Name": "boto-trio", "team": "kiln"}, f"{i['InstanceId']} tags {tags}")
            expect(i["InstanceType"] == "t3.micro", "InstanceType")
        expect(len({res["ReservationId"] for res in d["Reservations"]}) == 1, "three reservations for one call")

    def filters():
        more = ec2.run_instances(ImageId=ami, MinCount=9, MaxCount=9, TagSpecifications=[
            {"ResourceType": "instance", "Tags": [{"Key": "Name", "Value": "boto-nine"}]}])
        b["nine"] = [i["InstanceId"] for i in more["Instances"]]
        ec2.get_waiter("instance_running").wait(InstanceIds=b["nine"], WaiterConfig=FAST)
        got = ids_of(ec2.describe_instances(Filters=[{"Name": "tag:Name", "Values": ["boto-trio"]}]))
        expect(sorted(got) == sorted(b["trio"]), f"tag:Name=boto-trio gave {got}")
        got = ids_of(ec2.describe_instances(Filters=[{"Name": "tag:Name", "Values": ["boto-*"]}]))
        expect(len(got) == 12, f"tag:Name=boto-* gave {len(got)}")
        got = ids_of(ec2.describe_instances(Filters=[{"Name": "instance-id", "Values": [b["trio"][1]]}]))
        expect(got == [b["trio"][1]], f"instance-id filter gave {got}")
        got = ids_of(ec2.describe_instances(Filters=[{"Name": "instance-state-name", "Values": ["running"]},
                                                     {"Name": "tag:Name", "Values": ["boto-nine"]}]))
        expect(sorted(got) == sorted(b["nine"]), f"running + boto-nine gave {len(got)}")
        got = ids_of(ec2.describe_instances(Filters=[{"Name": "instance-state-name", "Values": ["stopped"]}]))
        expect(got == [], f"stopped gave {got}")
        got = ids_of(ec2.describe_instances(Filters=[{"Name": "tag:Name", "Values": ["nobody"]}]))
        expect(got == [], f"tag:Name=nobody gave {got}")
        code, _, _ = client_error(ec2.describe_instances, Filters=[{"Name": "no-such-filter", "Values": ["x"]}])
        expect(code == "InvalidParameterValue", f"unknown filter: {code}")

    def pagination():
        seen, pages, token = [], 0, None
        while True:
            kw = {"MaxResults": 5}
            if token:
                kw["NextToken"] = token
            r = ec2.describe_instances(**kw)
            page = ids_of(r)
            pages += 1
            expect(len(page) <= 5, f"page {pages} has {len(page)} instances with MaxResults 5")
            seen += page
            token = r.get("NextToken")
            if not token:
                break
            expect(pages < 10, "more than 10 pages")
        everyone = b["trio"] + b["nine"]
        expect(len(seen) == len(set(seen)), f"an instance came twice: {seen}")
        expect(sorted(seen) == sorted(everyone), f"pages gave {len(seen)} of 12")
        expect(pages >= 3, f"{pages} pages for 12 instances at 5 a page")
        via = [i for p in ec2.get_paginator("describe_instances").paginate(PaginationConfig={"PageSize": 5})
               for i in ids_of(p)]
        expect(sorted(via) == sorted(everyone), f"paginator gave {len(via)}")
        code, _, _ = client_error(ec2.describe_instances, MaxResults=5, NextToken="not-a-token")
        expect(code == "InvalidNextToken", f"bad NextToken: {code}")
        return f"MaxResults 5 over 12 instances: {pages} pages"

    def lifecycle():
        i = b["trio"][0]
        r = ec2.stop_instances(InstanceIds=[i])["StoppingInstances"][0]
        expect(r["PreviousState"]["Name"] == "running", f"stop: previous {r['PreviousState']}")
        expect(r["CurrentState"]["Name"] in ("stopping", "stopped"), f"stop: current {r['CurrentState']}")
        ec2.get_waiter("instance_stopped").wait(InstanceIds=[i], WaiterConfig=FAST)
        expect(states_of(ec2, [i])[i] == "stopped", "not stopped")
        r = ec2.start_instances(InstanceIds=[i])["StartingInstances"][0]
        expect(r["PreviousState"]["Name"] == "stopped" and r["CurrentState"]["Name"] in ("pending", "running"),
               f"start: {r}")
        ec2.get_waiter("instance_running").wait(InstanceIds=[i], WaiterConfig=FAST)
        r = ec2.terminate_instances(InstanceIds=[i])["TerminatingInstances"][0]
        expect(r["CurrentState"]["Name"] in ("shutting-down", "terminated"), f"terminate: {r}")
        ec2.get_waiter("instance_terminated").wait(InstanceIds=[i], WaiterConfig=FAST)
        d = ec2.describe_instances(InstanceIds=[i])["Reservations"][0]["Instances"][0]
        expect(d["State"] == {"Code": 48, "Name": "terminated"}, f"state {d['State']}")
        b["terminated"] = i

    def waiter_fails():
        t0 = time.monotonic()
        try:
            ec2.get_waiter("instance_running").wait(InstanceIds=[b["terminated"]], WaiterConfig=FAST)
        except WaiterError as e:
            dt = time.monotonic() - t0
            expect("terminal failure" in str(e).lower() or "failure" in str(e).lower(), f"WaiterError: {e}")
            expect(dt < 10, f"the waiter took {dt:.0f}s to fail")
            return f"instance_running on a terminated instance: WaiterError after {dt:.1f}s: {e}"
        raise Fail("instance_running succeeded on a terminated instance")

    def incorrect_state():
        code, msg, st = client_error(ec2.start_instances, InstanceIds=[b["terminated"]])
        expect((code, st) == ("IncorrectInstanceState", 400), f"start terminated: {st} {code}")
        code, msg, st = client_error(ec2.stop_instances, InstanceIds=[b["terminated"]])
        expect((code, st) == ("IncorrectInstanceState", 400), f"stop terminated: {st} {code}")

    def bad_ids():
        code, msg, st = client_error(ec2.describe_instances, InstanceIds=["i-0123456789abcdef0"])
        expect((code, st) == ("InvalidInstanceID.NotFound", 400), f"missing id: {st} {code}")
        expect("i-0123456789abcdef0" in msg, f"message does not name the id: {msg}")
        code, msg, st = client_error(ec2.describe_instances, InstanceIds=["bogus-id"])
        expect((code, st) == ("InvalidInstanceID.Malformed", 400), f"malformed id: {st} {code}")
        code, msg, st = client_error(ec2.terminate_instances, InstanceIds=["i-0123456789abcdef0"])
        expect(code == "InvalidInstanceID.NotFound", f"terminate missing: {code}")
        # Another account's instance does not exist for this one.
        other = boto_session("second").client("ec2", endpoint_url=url, config=CLIENT_CONFIG)
        code, msg, st = client_error(other.describe_instances, InstanceIds=[b["trio"][1]])
        expect(code == "InvalidInstanceID.NotFound", f"another account's instance: {code}")

    def send_command():
        i = b["trio"][1]
        cmd = ssm.send_command(InstanceIds=[i], DocumentName="AWS-RunShellScript",
                               Parameters={"commands": ["echo hello"]})["Command"]
        cid = cmd["CommandId"]
        inv = invocation_settled(lambda: ssm.get_command_invocation(CommandId=cid, InstanceId=i))
        note = check_mock_invocation(inv)
        listed = ssm.list_command_invocations(CommandId=cid, Details=True)["CommandInvocations"]
        expect(len(listed) == 1 and listed[0]["Status"] != "Success", f"ListCommandInvocations: {listed}")
        cmds = ssm.list_commands(CommandId=cid)["Commands"]
        expect(len(cmds) == 1 and cmds[0]["Status"] != "Success", f"ListCommands: {cmds}")
        try:
            ssm.get_waiter("command_executed").wait(CommandId=cid, InstanceId=i, WaiterConfig=FAST)
        except WaiterError:
            pass
        else:
            raise Fail("command_executed waiter succeeded in mock mode")
        return note

    def parameters():
        n = "/kiln/boto/alpha"
        v1 = ssm.put_parameter(Name=n, Value="one", Type="String")
        expect(v1["Version"] == 1, f"first version {v1}")
        code, _, _ = client_error(ssm.put_parameter, Name=n, Value="two", Type="String")
        expect(code == "ParameterAlreadyExists", f"put again without Overwrite: {code}")
        v2 = ssm.put_parameter(Name=n, Value="two", Type="String", Overwrite=True)
        expect(v2["Version"] == 2, f"overwrite version {v2}")
        p = ssm.get_parameter(Name=n)["Parameter"]
        expect((p["Value"], p["Version"], p["Type"]) == ("two", 2, "String"), f"get {p}")
        p = ssm.get_parameter(Name=n + ":1")["Parameter"]
        expect(p["Value"] == "one", f"get version 1: {p}")
        hist = ssm.get_parameter_history(Name=n)["Parameters"]
        expect([h["Value"] for h in hist] == ["one", "two"], f"history {hist}")
        ssm.put_parameter(Name="/kiln/boto/beta", Value="a,b", Type="StringList")
        ssm.put_parameter(Name="/kiln/boto/deep/gamma", Value="s3cret", Type="SecureString")
        ssm.put_parameter(Name="/elsewhere/delta", Value="x", Type="String")
        flat = ssm.get_parameters_by_path(Path="/kiln/boto")["Parameters"]
        expect(sorted(x["Name"] for x in flat) == ["/kiln/boto/alpha", "/kiln/boto/beta"], f"by path {flat}")
        deep = ssm.get_parameters_by_path(Path="/kiln/boto", Recursive=True, WithDecryption=True)["Parameters"]
        got = {x["Name"]: x["Value"] for x in deep}
        expect(got == {"/kiln/boto/alpha": "two", "/kiln/boto/beta": "a,b", "/kiln/boto/deep/gamma": "s3cret"},
               f"recursive {got}")
        enc = ssm.get_parameter(Name="/kiln/boto/deep/gamma")["Parameter"]["Value"]
        expect(enc != "s3cret", "SecureString returned in clear without WithDecryption")
        paged = [x["Name"] for pg in ssm.get_paginator("get_parameters_by_path").paginate(
            Path="/kiln/boto", Recursive=True, PaginationConfig={"PageSize": 1}) for x in pg["Parameters"]]
        expect(sorted(paged) == sorted(got), f"paged by path {paged}")
        many = ssm.get_parameters(Names=[n, "/kiln/boto/none"])
        expect([x["Name"] for x in many["Parameters"]] == [n] and many["InvalidParameters"] == ["/kiln/boto/none"],
               f"GetParameters {many}")
        ssm.delete_parameter(Name=n)
        code, _, st = client_error(ssm.get_parameter, Name=n)
        expect((code, st) == ("ParameterNotFound", 400), f"get deleted: {st} {code}")
        code, _, _ = client_error(ssm.delete_parameter, Name=n)
        expect(code == "ParameterNotFound", f"delete twice: {code}")

    def key_pairs():
        k = ec2.create_key_pair(KeyName="boto-key")
        expect(k["KeyMaterial"].startswith("-----BEGIN"), f"KeyMaterial {k['KeyMaterial'][:40]!r}")
        expect(k.get("KeyFingerprint") and k.get("KeyPairId", "").startswith("key-"), f"create {k}")
        code, _, _ = client_error(ec2.create_key_pair, KeyName="boto-key")
        expect(code == "InvalidKeyPair.Duplicate", f"duplicate: {code}")
        d = ec2.describe_key_pairs(KeyNames=["boto-key"])["KeyPairs"]
        expect(len(d) == 1 and d[0]["KeyFingerprint"] == k["KeyFingerprint"], f"describe {d}")
        r = ec2.run_instances(ImageId=ami, MinCount=1, MaxCount=1, KeyName="boto-key")
        expect(r["Instances"][0].get("KeyName") == "boto-key", "KeyName not on the instance")
        ec2.terminate_instances(InstanceIds=[r["Instances"][0]["InstanceId"]])
        ec2.delete_key_pair(KeyName="boto-key")
        code, _, _ = client_error(ec2.describe_key_pairs, KeyNames=["boto-key"])
        expect(code == "InvalidKeyPair.NotFound", f"after delete: {code}")

    def geography():
        regions = {r["RegionName"]: r for r in ec2.describe_regions()["Regions"]}
        expect(REGION in regions and "eu-west-1" in regions, f"regions {sorted(regions)}")
        expect(all(r.get("Endpoint") for r in regions.values()), "a region without Endpoint")
        zones = ec2.describe_availability_zones()["AvailabilityZones"]
        names = sorted(z["ZoneName"] for z in zones)
        expect(names and all(n.startswith(REGION) for n in names), f"zones {names}")
        expect(all(z["State"] == "available" and z.get("ZoneId") for z in zones), f"zones {zones}")
        types = ec2.describe_instance_types(InstanceTypes=["t3.micro", "m5.large"])["InstanceTypes"]
        t = {x["InstanceType"]: x for x in types}
        expect(t["t3.micro"]["VCpuInfo"]["DefaultVCpus"] == 2 and t["t3.micro"]["MemoryInfo"]["SizeInMiB"] == 1024,
               f"t3.micro {t.get('t3.micro')}")
        expect(t["m5.large"]["MemoryInfo"]["SizeInMiB"] == 8192, f"m5.large {t.get('m5.large')}")
        code, _, _ = client_error(ec2.describe_instance_types, InstanceTypes=["z9.huge"])
        expect(code == "InvalidInstanceType", f"unknown type: {code}")
        return f"{len(regions)} regions, {len(zones)} zones in {REGION}"

    def tags():
        i = b["trio"][1]
        ec2.create_tags(Resources=[i], Tags=[{"Key": "stage", "Value": "test"}, {"Key": "owner", "Value": "kiln"}])
        d = ec2.describe_tags(Filters=[{"Name": "resource-id", "Values": [i]}])["Tags"]
        got = {t["Key"]: t["Value"] for t in d}
        expect(got == {"Name": "boto-trio", "team": "kiln", "stage": "test", "owner": "kiln"}, f"tags {got}")
        expect(all(t["ResourceType"] == "instance" and t["ResourceId"] == i for t in d), f"{d}")
        d = ec2.describe_tags(Filters=[{"Name": "key", "Values": ["stage"]}])["Tags"]
        expect([t["ResourceId"] for t in d] == [i], f"key=stage {d}")
        ec2.delete_tags(Resources=[i], Tags=[{"Key": "stage"}, {"Key": "owner", "Value": "someone-else"}])
        got = {t["Key"]: t["Value"] for t in ec2.describe_tags(
            Filters=[{"Name": "resource-id", "Values": [i]}])["Tags"]}
        # A Value given to DeleteTags must match: owner=kiln stays.
        expect(got == {"Name": "boto-trio", "team": "kiln", "owner": "kiln"}, f"after delete {got}")
        got = ids_of(ec2.describe_instances(Filters=[{"Name": "tag:owner", "Values": ["kiln"]}]))
        expect(got == [i], f"tag:owner filter {got}")

    def dry_run():
        code, _, st = client_error(ec2.run_instances, ImageId=ami, MinCount=1, MaxCount=1, DryRun=True)
        expect((code, st) == ("DryRunOperation", 412), f"RunInstances DryRun: {st} {code}")
        code, _, st = client_error(ec2.stop_instances, InstanceIds=[b["trio"][2]], DryRun=True)
        expect(code == "DryRunOperation", f"StopInstances DryRun: {code}")
        code, _, st = client_error(ec2.describe_instances, DryRun=True)
        expect(code == "DryRunOperation", f"DescribeInstances DryRun: {code}")
        expect(states_of(ec2, [b["trio"][2]])[b["trio"][2]] == "running", "DryRun stopped the instance")
        live = ids_of(ec2.describe_instances(Filters=[{"Name": "instance-state-name", "Values": ["pending",
                                                                                                 "running"]}]))
        expect(len(live) == 11, f"a DryRun launched something: {len(live)} live")

    steps = [
        ("run-instances MinCount/MaxCount 3 with TagSpecifications, instance_running", run3),
        ("describe-instances filters (tag:Name, instance-id, instance-state-name)", filters),
        ("describe-instances MaxResults 5 over 12 instances: each exactly once", pagination),
        ("stop/start/terminate with instance_stopped/running/terminated waiters", lifecycle),
        ("instance_running on a terminated instance raises WaiterError", waiter_fails),
        ("start/stop a terminated instance -> IncorrectInstanceState", incorrect_state),
        ("InvalidInstanceID.NotFound and .Malformed", bad_ids),
        ("send-command in mock mode fails clearly, never Success", send_command),
        ("SSM parameters put/overwrite/versions/by-path/delete, ParameterNotFound", parameters),
        ("key pairs create/describe/delete", key_pairs),
        ("describe-regions, availability zones, instance types", geography),
        ("create-tags/describe-tags/delete-tags", tags),
        ("DryRun -> DryRunOperation", dry_run),
    ]
    for title, fn in steps:
        tap.case(f"boto3 {boto3.__version__}: {title}", fn)
    STATE["boto_live"] = b["trio"][1] if "trio" in b else None


class Cli:
    """One AWS CLI; endpoint by --endpoint-url or by AWS_ENDPOINT_URL."""

    def __init__(self, path, url, account, by_env, home):
        _, key, secret = ACCOUNTS[account]
        self.path, self.url, self.by_env = path, url, by_env
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        self.env.update({"AWS_ACCESS_KEY_ID": key, "AWS_SECRET_ACCESS_KEY": secret, "AWS_DEFAULT_REGION": REGION,
                         "AWS_CONFIG_FILE": "/dev/null", "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
                         "AWS_PAGER": "", "AWS_EC2_METADATA_DISABLED": "true", "HOME": home})
        if by_env:
            self.env["AWS_ENDPOINT_URL"] = url
        self.calls = 0

    def run(self, *args):
        cmd = [self.path]
        if not self.by_env:
            cmd += ["--endpoint-url", self.url]
        cmd += ["--output", "json"] + [str(a) for a in args]
        self.calls += 1
        p = subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=180)
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
        m = re.search(r"An error occurred \(([^)]+)\)", err)
        return m.group(1) if m else err.strip()[-300:]


def cli_cases(tap, label, cli):
    ami = STATE["ami"]
    c = {}

    def version():
        rc, out, err = cli.run("--version")
        expect(rc == 0, f"--version: {err}")
        return (out or err).strip()

    def run3():
        r = cli("ec2", "run-instances", "--image-id", ami, "--instance-type", "t3.small", "--count", "3",
                "--tag-specifications", "ResourceType=instance,Tags=[{Key=Name,Value=cli-trio},{Key=team,Value=kiln}]")
        c["trio"] = [i["InstanceId"] for i in r["Instances"]]
        expect(len(set(c["trio"])) == 3, f"run-instances gave {c['trio']}")
        cli("ec2", "wait", "instance-running", "--instance-ids", *c["trio"])
        d = cli("ec2", "describe-instances", "--instance-ids", *c["trio"])
        for i in (x for res in d["Reservations"] for x in res["Instances"]):
            tags = {t["Key"]: t["Value"] for t in i.get("Tags", [])}
            expect(tags == {"Name": "cli-trio", "team": "kiln"}, f"tags {tags}")
            expect(i["State"]["Name"] == "running" and i["InstanceType"] == "t3.small", f"{i['State']}")

    def filters_and_pages():
        r = cli("ec2", "run-instances", "--image-id", ami, "--count", "9", "--tag-specifications",
                "ResourceType=instance,Tags=[{Key=Name,Value=cli-nine}]")
        c["nine"] = [i["InstanceId"] for i in r["Instances"]]
        got = ids_of(cli("ec2", "describe-instances", "--filters", "Name=tag:Name,Values=cli-trio"))
        expect(sorted(got) == sorted(c["trio"]), f"tag:Name=cli-trio gave {got}")
        got = ids_of(cli("ec2", "describe-instances", "--filters", f"Name=instance-id,Values={c['trio'][2]}"))
        expect(got == [c["trio"][2]], f"instance-id gave {got}")
        got = ids_of(cli("ec2", "describe-instances", "--filters", "Name=instance-state-name,Values=running",
                         "Name=tag:Name,Values=cli-trio"))
        expect(sorted(got) == sorted(c["trio"]), f"running + cli-trio gave {got}")
        everyone = c["trio"] + c["nine"]
        got = ids_of(cli("ec2", "describe-instances", "--page-size", "5"))
        expect(len(got) == len(set(got)) and sorted(got) == sorted(everyone),
               f"--page-size 5 gave {len(got)} ({len(set(got))} distinct) of 12")
        one = cli("ec2", "describe-instances", "--max-results", "5", "--no-paginate")
        expect(len(ids_of(one)) <= 5 and one.get("NextToken"), f"--max-results 5: {len(ids_of(one))}, "
               f"NextToken {one.get('NextToken')!r}")

    def lifecycle():
        i = c["trio"][0]
        r = cli("ec2", "stop-instances", "--instance-ids", i)["StoppingInstances"][0]
        expect(r["PreviousState"]["Name"] == "running", f"stop: {r}")
        cli("ec2", "wait", "instance-stopped", "--instance-ids", i)
        cli("ec2", "start-instances", "--instance-ids", i)
        cli("ec2", "wait", "instance-running", "--instance-ids", i)
        cli("ec2", "terminate-instances", "--instance-ids", i)
        cli("ec2", "wait", "instance-terminated", "--instance-ids", i)
        st = cli("ec2", "describe-instances", "--instance-ids", i)["Reservations"][0]["Instances"][0]["State"]
        expect(st == {"Code": 48, "Name": "terminated"}, f"state {st}")
        rc, out, err = cli.run("ec2", "wait", "instance-running", "--instance-ids", i)
        expect(rc != 0 and "fail" in err.lower(), f"wait instance-running on a terminated instance: exit {rc}: {err}")
        code = cli.error("ec2", "start-instances", "--instance-ids", i)
        expect(code == "IncorrectInstanceState", f"start terminated: {code}")

    def errors():
        code = cli.error("ec2", "describe-instances", "--instance-ids", "i-0123456789abcdef0")
        expect(code == "InvalidInstanceID.NotFound", f"missing id: {code}")
        code = cli.error("ec2", "describe-instances", "--instance-ids", "bogus-id")
        expect(code == "InvalidInstanceID.Malformed", f"malformed id: {code}")
        code = cli.error("ec2", "run-instances", "--image-id", ami, "--count", "1", "--dry-run")
        expect(code == "DryRunOperation", f"--dry-run: {code}")

    def send_command():
        i = c["trio"][1]
        cid = cli("ssm", "send-command", "--instance-ids", i, "--document-name", "AWS-RunShellScript",
                  "--parameters", "commands=echo hi")["Command"]["CommandId"]
        inv = invocation_settled(lambda: cli_invocation(cid, i))
        return check_mock_invocation(inv)

    def cli_invocation(cid, i):
        rc, out, err = cli.run("ssm", "get-command-invocation", "--command-id", cid, "--instance-id", i)
        if rc != 0:
            code = re.search(r"An error occurred \(([^)]+)\)", err)
            raise ClientError({"Error": {"Code": code.group(1) if code else err, "Message": err}},
                              "GetCommandInvocation")
        return json.loads(out)

    def parameters():
        n = f"/kiln/{label}/p"
        expect(cli("ssm", "put-parameter", "--name", n, "--value", "v1", "--type", "String")["Version"] == 1, "v1")
        code = cli.error("ssm", "put-parameter", "--name", n, "--value", "v2", "--type", "String")
        expect(code == "ParameterAlreadyExists", f"put twice: {code}")
        expect(cli("ssm", "put-parameter", "--name", n, "--value", "v2", "--type", "String",
                   "--overwrite")["Version"] == 2, "v2")
        p = cli("ssm", "get-parameter", "--name", n)["Parameter"]
        expect((p["Value"], p["Version"]) == ("v2", 2), f"get {p}")
        h = cli("ssm", "get-parameter-history", "--name", n)["Parameters"]
        expect([x["Value"] for x in h] == ["v1", "v2"], f"history {h}")
        cli("ssm", "put-parameter", "--name", f"/kiln/{label}/sub/q", "--value", "q", "--type", "String")
        byp = cli("ssm", "get-parameters-by-path", "--path", f"/kiln/{label}", "--recursive")["Parameters"]
        expect(sorted(x["Name"] for x in byp) == [n, f"/kiln/{label}/sub/q"], f"by path {byp}")
        cli("ssm", "delete-parameter", "--name", n)
        code = cli.error("ssm", "get-parameter", "--name", n)
        expect(code == "ParameterNotFound", f"after delete: {code}")

    def keys_regions_tags():
        k = cli("ec2", "create-key-pair", "--key-name", f"{label}-key")
        expect(k["KeyMaterial"].startswith("-----BEGIN"), "KeyMaterial")
        d = cli("ec2", "describe-key-pairs", "--key-names", f"{label}-key")["KeyPairs"]
        expect(len(d) == 1, f"describe-key-pairs {d}")
        cli("ec2", "delete-key-pair", "--key-name", f"{label}-key")
        code = cli.error("ec2", "describe-key-pairs", "--key-names", f"{label}-key")
        expect(code == "InvalidKeyPair.NotFound", f"after delete: {code}")
        regions = [r["RegionName"] for r in cli("ec2", "describe-regions")["Regions"]]
        expect(REGION in regions, f"regions {regions}")
        zones = [z["ZoneName"] for z in cli("ec2", "describe-availability-zones")["AvailabilityZones"]]
        expect(zones and all(z.startswith(REGION) for z in zones), f"zones {zones}")
        t = cli("ec2", "describe-instance-types", "--instance-types", "t3.small")["InstanceTypes"]
        expect(t and t[0]["MemoryInfo"]["SizeInMiB"] == 2048, f"t3.small {t}")
        i = c["trio"][1]
        cli("ec2", "create-tags", "--resources", i, "--tags", "Key=stage,Value=cli")
        tags = cli("ec2", "describe-tags", "--filters", f"Name=resource-id,Values={i}")["Tags"]
        expect({t["Key"]: t["Value"] for t in tags} == {"Name": "cli-trio", "team": "kiln", "stage": "cli"},
               f"tags {tags}")
        cli("ec2", "delete-tags", "--resources", i, "--tags", "Key=stage")
        tags = cli("ec2", "describe-tags", "--filters", f"Name=resource-id,Values={i}")["Tags"]
        expect("stage" not in {t["Key"] for t in tags}, f"after delete-tags {tags}")

    v = tap.case(f"{label}: runs", version)
    for title, fn in [
        ("run-instances --count 3 with --tag-specifications, wait instance-running", run3),
        ("describe-instances filters and --page-size 5 over 12 instances", filters_and_pages),
        ("stop/start/terminate with waits; a wait that fails; IncorrectInstanceState", lifecycle),
        ("InvalidInstanceID.NotFound/.Malformed, DryRunOperation", errors),
        ("send-command in mock mode fails clearly", send_command),
        ("SSM parameters put/overwrite/history/by-path/delete", parameters),
        ("key pairs, regions, zones, instance types, tags", keys_regions_tags),
    ]:
        tap.case(f"{label}: {title}", fn)
    return v


DEBIAN_BOTO3_SCRIPT = r"""
import json, sys, boto3, botocore
from botocore.config import Config
from botocore.exceptions import ClientError, WaiterError
url, ami, key, secret = sys.argv[1:5]
s = boto3.session.Session(aws_access_key_id=key, aws_secret_access_key=secret, region_name="us-east-1")
cfg = Config(retries={"max_attempts": 0})
ec2 = s.client("ec2", endpoint_url=url, config=cfg)
ssm = s.client("ssm", endpoint_url=url, config=cfg)
fast = {"Delay": 1, "MaxAttempts": 30}
r = ec2.run_instances(ImageId=ami, MinCount=2, MaxCount=2, TagSpecifications=[
    {"ResourceType": "instance", "Tags": [{"Key": "Name", "Value": "deb"}]}])
ids = [i["InstanceId"] for i in r["Instances"]]
assert len(ids) == 2, ids
ec2.get_waiter("instance_running").wait(InstanceIds=ids, WaiterConfig=fast)
got = [i["InstanceId"] for x in ec2.describe_instances(
    Filters=[{"Name": "tag:Name", "Values": ["deb"]}])["Reservations"] for i in x["Instances"]]
assert sorted(got) == sorted(ids), got
ec2.stop_instances(InstanceIds=ids[:1])
ec2.get_waiter("instance_stopped").wait(InstanceIds=ids[:1], WaiterConfig=fast)
ec2.terminate_instances(InstanceIds=ids)
ec2.get_waiter("instance_terminated").wait(InstanceIds=ids, WaiterConfig=fast)
try:
    ec2.get_waiter("instance_running").wait(InstanceIds=ids[:1], WaiterConfig=fast)
    raise SystemExit("instance_running succeeded on a terminated instance")
except WaiterError:
    pass
try:
    ec2.start_instances(InstanceIds=ids[:1])
    raise SystemExit("start of a terminated instance succeeded")
except ClientError as e:
    assert e.response["Error"]["Code"] == "IncorrectInstanceState", e
ssm.put_parameter(Name="/deb/p", Value="1", Type="String")
ssm.put_parameter(Name="/deb/p", Value="2", Type="String", Overwrite=True)
p = ssm.get_parameter(Name="/deb/p")["Parameter"]
assert (p["Value"], p["Version"]) == ("2", 2), p
try:
    ssm.get_parameter(Name="/deb/none")
    raise SystemExit("missing parameter found")
except ClientError as e:
    assert e.response["Error"]["Code"] == "ParameterNotFound", e
print("boto3 %s botocore %s" % (boto3.__version__, botocore.__version__))
"""


def debian_boto3_case(url):
    py = "/usr/bin/python3"
    if not os.path.exists(py) or subprocess.run([py, "-c", "import boto3"], capture_output=True).returncode != 0:
        raise Skip("/usr/bin/python3 has no boto3 (Debian python3-boto3)")
    _, key, secret = ACCOUNTS["debboto"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_") and not k.startswith("PYTHON")}
    env.update({"AWS_CONFIG_FILE": "/dev/null", "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
                "AWS_EC2_METADATA_DISABLED": "true"})
    p = subprocess.run([py, "-c", DEBIAN_BOTO3_SCRIPT, url, STATE["ami"], key, secret], capture_output=True,
                       text=True, timeout=300, env=env)
    expect(p.returncode == 0, f"exit {p.returncode}: {(p.stderr or p.stdout)[-1500:]}")
    return p.stdout.strip()


def sharing_cases(tap, url, home):
    """Public sharing (LaunchPermission Group=all) and its reset, seen by
    another account through boto3 and Debian's CLI (describe-images
    --executable-users all / --owners); RebootInstances; SendCommand by
    Targets.  Accounts sharer and viewer are used by nothing else."""
    sharer_id = ACCOUNTS["sharer"][0]
    s = boto_session("sharer")
    ec2 = s.client("ec2", endpoint_url=url, config=CLIENT_CONFIG)
    ssm = s.client("ssm", endpoint_url=url, config=CLIENT_CONFIG)
    v = boto_session("viewer")
    v_ec2 = v.client("ec2", endpoint_url=url, config=CLIENT_CONFIG)
    cli = Cli("/usr/bin/aws", url, "viewer", False, home) if os.access("/usr/bin/aws", os.X_OK) else None
    st = {}

    def viewer_sees():
        """(in --executable-users all, in --owners SHARER, launchable) for the viewer."""
        image = st["image"]
        by_all = [i["ImageId"] for i in v_ec2.describe_images(ExecutableUsers=["all"])["Images"]]
        by_owner = [i["ImageId"] for i in v_ec2.describe_images(Owners=[sharer_id])["Images"]]
        if cli:
            cli_all = [i["ImageId"] for i in cli("ec2", "describe-images", "--executable-users", "all")["Images"]]
            cli_owner = [i["ImageId"] for i in cli("ec2", "describe-images", "--owners", sharer_id)["Images"]]
            expect((image in cli_all, cli_owner) == (image in by_all, by_owner),
                   f"Debian CLI and boto3 disagree: {cli_all} / {cli_owner} vs {by_all} / {by_owner}")
        try:
            r = v_ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1)
            v_ec2.terminate_instances(InstanceIds=[r["Instances"][0]["InstanceId"]])
            launched = True
        except ClientError as e:
            expect(e.response["Error"]["Code"] == "InvalidAMIID.NotFound", f"viewer launch: {e}")
            launched = False
        return image in by_all, by_owner, launched

    def setup():
        r = ec2.run_instances(ImageId=STATE["ami"], MinCount=1, MaxCount=1, TagSpecifications=[
            {"ResourceType": "instance", "Tags": [{"Key": "role", "Value": "sharer-web"}]}])
        st["instance"] = r["Instances"][0]["InstanceId"]
        ec2.get_waiter("instance_running").wait(InstanceIds=[st["instance"]], WaiterConfig=FAST)
        st["image"] = ec2.create_image(InstanceId=st["instance"], Name="sharer-image", NoReboot=True)["ImageId"]
        ec2.get_waiter("image_available").wait(ImageIds=[st["image"]], WaiterConfig=FAST)
        got = viewer_sees()
        expect(got == (False, [], False), f"a private image, for another account: (in all, owners, launch) = {got}")

    def public():
        ec2.modify_image_attribute(ImageId=st["image"], LaunchPermission={"Add": [{"Group": "all"}]})
        perms = ec2.describe_image_attribute(ImageId=st["image"], Attribute="launchPermission")["LaunchPermissions"]
        expect(perms == [{"Group": "all"}], f"launch permissions: {perms}")
        img = v_ec2.describe_images(ImageIds=[st["image"]])["Images"][0]
        expect(img["Public"] is True and img["OwnerId"] == sharer_id, f"as the viewer sees it: {img}")
        got = viewer_sees()
        expect(got == (True, [st["image"]], True), f"public, for another account: (in all, owners, launch) = {got}")

    def reset():
        expect(ec2.reset_image_attribute(ImageId=st["image"], Attribute="launchPermission")["ResponseMetadata"]
               ["HTTPStatusCode"] == 200, "ResetImageAttribute")
        perms = ec2.describe_image_attribute(ImageId=st["image"], Attribute="launchPermission")["LaunchPermissions"]
        expect(perms == [], f"launch permissions after the reset: {perms}")
        got = viewer_sees()
        expect(got == (False, [], False), f"after the reset, for another account: (in all, owners, launch) = {got}")
        code = client_error(v_ec2.reset_image_attribute, ImageId=st["image"], Attribute="launchPermission")
        expect(code[0] in ("InvalidAMIID.NotFound", "AuthFailure"), f"viewer resetting: {code}")

    def reboot():
        ec2.reboot_instances(InstanceIds=[st["instance"]])
        state = ec2.describe_instances(InstanceIds=[st["instance"]])["Reservations"][0]["Instances"][0]["State"]
        expect(state["Name"] == "running", f"after RebootInstances: {state}")
        code = client_error(v_ec2.reboot_instances, InstanceIds=[st["instance"]])
        expect(code[0] == "InvalidInstanceID.NotFound", f"another account rebooting it: {code}")

    def targets():
        t = [{"Key": "tag:role", "Values": ["sharer-web"]}]
        cmd = ssm.send_command(DocumentName="AWS-RunShellScript", Targets=t,
                               Parameters={"commands": ["true"]})["Command"]
        expect(cmd["Targets"] == t, f"Targets echoed: {cmd['Targets']}")
        invs = ssm.list_command_invocations(CommandId=cmd["CommandId"])["CommandInvocations"]
        expect([i["InstanceId"] for i in invs] == [st["instance"]], f"invocations: {invs}")
        code = client_error(ssm.send_command, DocumentName="AWS-RunShellScript",
                            Targets=[{"Key": "tag:role", "Values": ["nobody"]}], Parameters={"commands": ["true"]})
        expect(code[0] == "InvalidInstanceId", f"Targets matching nothing: {code}")

    tap.case("sharing: a private image is invisible to another account (boto3, Debian CLI)", setup)
    tap.case("sharing: LaunchPermission Group=all makes it public: --executable-users all, --owners, launch",
             lambda: public() if "image" in st else (_ for _ in ()).throw(Skip("no image")))
    tap.case("sharing: ResetImageAttribute launchPermission makes it private again",
             lambda: reset() if "image" in st else (_ for _ in ()).throw(Skip("no image")))
    tap.case("RebootInstances: running stays running; another account's instance is not found",
             lambda: reboot() if "instance" in st else (_ for _ in ()).throw(Skip("no instance")))
    tap.case("SendCommand by Targets (tag:role): the tagged instance only; no match refused",
             lambda: targets() if "instance" in st else (_ for _ in ()).throw(Skip("no instance")))


def sts_case(url, clis):
    """STS GetCallerIdentity names each caller's account (its root user),
    through boto3 and every CLI installed; an unknown key is
    InvalidClientTokenId, as STS says it; GetSessionToken's credentials
    work for EC2, SSM, S3 (aws-chunked bodies included) and STS."""
    for name in ("boto3", "second"):
        sts = boto_session(name).client("sts", endpoint_url=url, config=CLIENT_CONFIG)
        who = sts.get_caller_identity()
        account = ACCOUNTS[name][0]
        expect(who["Account"] == account and who["UserId"] == account
               and who["Arn"] == f"arn:aws:iam::{account}:root", f"{name}: {who}")
        expect(who["ResponseMetadata"]["RequestId"], "no request id")
    stranger = boto3.session.Session(aws_access_key_id="AKIANOBODY", aws_secret_access_key="x",
                                     region_name=REGION).client("sts", endpoint_url=url, config=CLIENT_CONFIG)
    code, _, status = client_error(stranger.get_caller_identity)
    expect((code, status) == ("InvalidClientTokenId", 403), f"unknown key: {code} {status}")
    # Temporary credentials: every service takes them with their token,
    # none without it; a session cannot make another; root sessions last
    # an hour at most.
    sts = boto_session("boto3").client("sts", endpoint_url=url, config=CLIENT_CONFIG)
    creds = sts.get_session_token(DurationSeconds=7200)["Credentials"]
    left = (creds["Expiration"] - datetime.datetime.now(datetime.timezone.utc)).total_seconds()
    expect(creds["AccessKeyId"].startswith("ASIA") and 3500 < left <= 3600, f"session: {creds['AccessKeyId']}, "
           f"{left:.0f} s left")
    temp = boto3.session.Session(aws_access_key_id=creds["AccessKeyId"],
                                 aws_secret_access_key=creds["SecretAccessKey"],
                                 aws_session_token=creds["SessionToken"], region_name=REGION)
    who = temp.client("sts", endpoint_url=url, config=CLIENT_CONFIG).get_caller_identity()
    expect(who["Account"] == ACCOUNTS["boto3"][0], f"session caller: {who}")
    temp.client("ec2", endpoint_url=url, config=CLIENT_CONFIG).describe_regions()
    temp.client("ssm", endpoint_url=url, config=CLIENT_CONFIG).describe_parameters()
    s3 = temp.client("s3", endpoint_url=url, config=CLIENT_CONFIG)
    s3.create_bucket(Bucket="sts-session-bucket")
    s3.put_object(Bucket="sts-session-bucket", Key="k", Body=b"x" * 100000)
    got = s3.get_object(Bucket="sts-session-bucket", Key="k")["Body"].read()
    expect(got == b"x" * 100000, "S3 object through session credentials")
    code, _, status = client_error(temp.client("sts", endpoint_url=url, config=CLIENT_CONFIG).get_session_token)
    expect((code, status) == ("AccessDenied", 403), f"session making a session: {code} {status}")
    tokenless = boto3.session.Session(aws_access_key_id=creds["AccessKeyId"],
                                      aws_secret_access_key=creds["SecretAccessKey"], region_name=REGION)
    code, _, status = client_error(tokenless.client("ec2", endpoint_url=url, config=CLIENT_CONFIG).describe_regions)
    expect(code == "AuthFailure", f"session key without its token: {code} {status}")
    for account, cli in clis:
        who = cli("sts", "get-caller-identity")
        expect(who["Account"] == ACCOUNTS[account][0] and who["Arn"] == f"arn:aws:iam::{ACCOUNTS[account][0]}:root",
               f"{cli.path}: {who}")


def pip_aws():
    """The first `aws` on PATH that is not Debian's /usr/bin/aws."""
    debian = os.path.realpath("/usr/bin/aws")
    for d in os.environ.get("PATH", "").split(os.pathsep):
        cand = os.path.join(d, "aws")
        if os.access(cand, os.X_OK) and os.path.realpath(cand) != debian and d not in ("/usr/bin", "/bin"):
            return cand
    return None


# ---- B: restart ----

def restart_case(server):
    s = boto_session("boto3")
    ec2 = s.client("ec2", endpoint_url=server.url, config=CLIENT_CONFIG)
    ssm = s.client("ssm", endpoint_url=server.url, config=CLIENT_CONFIG)
    marker = f"kept-{os.getpid()}-{int(time.time())}"
    ssm.put_parameter(Name="/kiln/persist/marker", Value=marker, Type="String")
    ssm.put_parameter(Name="/kiln/persist/marker", Value=marker + "-v2", Type="String", Overwrite=True)
    r = ec2.run_instances(ImageId=STATE["ami"], MinCount=1, MaxCount=1, TagSpecifications=[
        {"ResourceType": "instance", "Tags": [{"Key": "Name", "Value": "survivor"}]}])
    iid = r["Instances"][0]["InstanceId"]
    ec2.get_waiter("instance_running").wait(InstanceIds=[iid], WaiterConfig=FAST)
    old_url = server.url
    t0 = time.monotonic()
    rc = server.stop()
    dt = time.monotonic() - t0
    expect(rc == 0, f"SIGTERM: exit status {rc} after {dt:.1f}s; log:\n{server.log_tail()}")
    server.start()
    ec2 = s.client("ec2", endpoint_url=server.url, config=CLIENT_CONFIG)
    ssm = s.client("ssm", endpoint_url=server.url, config=CLIENT_CONFIG)
    p = ssm.get_parameter(Name="/kiln/persist/marker")["Parameter"]
    expect((p["Value"], p["Version"]) == (marker + "-v2", 2), f"parameter after restart: {p}")
    h = ssm.get_parameter_history(Name="/kiln/persist/marker")["Parameters"]
    expect([x["Value"] for x in h] == [marker, marker + "-v2"], f"history after restart: {h}")
    d = ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]
    tags = {t["Key"]: t["Value"] for t in d.get("Tags", [])}
    expect(tags.get("Name") == "survivor", f"tags after restart: {tags}")
    expect(d["State"]["Name"] == "running", f"state after restart: {d['State']}")
    imgs = ec2.describe_images(ImageIds=[STATE["ami"]])["Images"]
    expect(len(imgs) == 1 and imgs[0]["State"] == "available", f"AMI after restart: {imgs}")
    # Other accounts' state too: the boto3 trio is still there.
    live = STATE.get("boto_live")
    if live:
        expect(ec2.describe_instances(InstanceIds=[live])["Reservations"], "boto3 trio instance lost")
    return f"SIGTERM exit 0 in {dt:.2f}s; restarted on {server.url} (was {old_url})"


# ---- main ----

def make_image(binary, state_dir, work):
    if shutil.which("qemu-img") is None:
        raise RuntimeError("qemu-img is needed to make a disk for import-image")
    disk = os.path.join(work, "tiny.qcow2")
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", disk, "1G"], check=True)
    p = subprocess.run([binary, "import-image", disk, "--name", "kiln-test-image", "--state-dir", state_dir,
                        "--public"], capture_output=True, text=True, timeout=120)
    if p.returncode != 0 or not p.stdout.strip().startswith("ami-"):
        raise RuntimeError(f"import-image: exit {p.returncode}: {p.stderr}")
    return p.stdout.strip()


def protocol_setup(argv, prefix):
    """What each protocol test's main does first: the emulator binary and
    the optional case filter from argv; an environment in which nothing of
    the machine's AWS setup (profiles, credentials, endpoints) reaches the
    clients; a work directory; and a Tap that names the clients' versions.
    Returns (binary, work, tap)."""
    binary = os.path.abspath(argv[1])
    only = argv[2] if len(argv) > 2 else None
    for k in list(os.environ):
        if k.startswith("AWS_"):
            del os.environ[k]
    os.environ.update({"AWS_CONFIG_FILE": "/dev/null", "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
                       "AWS_EC2_METADATA_DISABLED": "true"})
    work = tempfile.mkdtemp(prefix=prefix)
    tap = Tap(only)
    tap.diag(f"botocore {botocore.__version__}, boto3 {boto3.__version__}, python {sys.version.split()[0]}")
    return binary, work, tap


def main():
    binary, work, tap = protocol_setup(sys.argv, "kiln-emu-protocol-")
    servers = []
    try:
        a = Emulator(binary, log_dir=work).start()
        servers.append(a)
        tap.diag(f"A: {a.url} (in memory)")
        sigv4_cases(tap, a.url)
        query_cases(tap, a.url)
        limit_cases(tap, a.url)
        tap.case("A is still alive after the negative cases", lambda: expect(a.alive(), "emulator A died"))
        a_rc = a.stop()
        tap.case("A: SIGTERM stops it with status 0", lambda: expect(a_rc == 0, f"exit status {a_rc}"))

        state_dir = os.path.join(work, "state")
        os.makedirs(state_dir)
        accounts = os.path.join(work, "accounts.json")
        with open(accounts, "w") as f:
            json.dump({"accounts": [{"id": i, "accessKeyId": k, "secretAccessKey": s}
                                    for i, k, s in ACCOUNTS.values()]}, f)
        STATE["ami"] = make_image(binary, state_dir, work)
        b = Emulator(binary, state_dir=state_dir, accounts=accounts, log_dir=work).start()
        servers.append(b)
        tap.diag(f"B: {b.url} (state {state_dir}, AMI {STATE['ami']})")
        tap.case("flood: 8 threads x ~10 s of signed DescribeInstances/DescribeRegions/GetParameter, keep-alive",
                 flood_case, b.url)
        boto3_cases(tap, b.url)
        tap.case("debian boto3 under /usr/bin/python3: run, waiters, stop/terminate, parameters",
                 debian_boto3_case, b.url)
        home = os.path.join(work, "home")
        os.makedirs(home)
        sharing_cases(tap, b.url, home)
        clis = []
        for label, path, account, by_env in (("debian aws (/usr/bin/aws, --endpoint-url)", "/usr/bin/aws", "debcli",
                                              False),
                                             ("pip aws (AWS_ENDPOINT_URL)", pip_aws(), "pipcli", True)):
            short = "debcli" if account == "debcli" else "pipcli"
            if path is None or not os.access(path, os.X_OK):
                tap.case(f"{label}: present", lambda: (_ for _ in ()).throw(Skip("not installed")))
                continue
            clis.append((account, Cli(path, b.url, account, by_env, home)))
            cli_cases(tap, short, clis[-1][1])
        tap.case("sts: get-caller-identity (boto3 and the CLIs), get-session-token credentials on every service",
                 sts_case, b.url, clis)
        tap.case("B is still alive after the clients", lambda: expect(b.alive(), "emulator B died"))
        tap.case("restart: SIGTERM, start again on --state-dir, parameter and instance still there",
                 restart_case, b)
    finally:
        for s in servers:
            if s.alive():
                s.stop()
        if tap.failed:
            for s in servers:
                tail = s.log_tail()
                if tail:
                    tap.diag(f"emulator log {s.log_path}:\n{tail}")
        shutil.rmtree(work, ignore_errors=True)
    return tap.done()


if __name__ == "__main__":
    sys.exit(main())
