#!/usr/bin/env python3
"""A small S3-compatible server for kiln's tests (Python 3 standard library only).

It speaks path-style S3 on 127.0.0.1: PUT/GET/HEAD/DELETE object, PUT bucket,
ListObjectsV2 (list-type=2 with prefix, max-keys, continuation-token,
start-after and encoding-type=url).  Every request must carry a valid AWS
Signature Version 4, in the Authorization header or in the query string
(presigned URL); the signature is recomputed here with an implementation
written independently of kiln's C code, so the two check each other.  A bad
signature gets S3's 403 SignatureDoesNotMatch error document, including the
canonical request and string to sign this side computed.

Usage:
  s3_fixture.py --root DIR [--port N] [--access-key test] [--secret test]
                [--account ID] [--bucket NAME ...] [--page-size N] [--verbose]

The port actually bound is printed alone on the first line of stdout (so
--port 0 lets the kernel choose).  Objects live under DIR/<bucket>/ as data
and JSON metadata files named by the SHA-256 of the key.  With --account, a
request whose x-amz-expected-bucket-owner differs gets 403 AccessDenied.
"""

import argparse
import base64
import calendar
import hashlib
import hmac
import json
import os
import re
import sys
import tempfile
import threading
import time
import uuid
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import quote, quote_plus, unquote
from xml.sax.saxutils import escape

ALGORITHM = "AWS4-HMAC-SHA256"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
BUCKET_RE = re.compile(r"^[A-Za-z0-9._-]{1,255}$")
AUTH_RE = re.compile(
    r"^AWS4-HMAC-SHA256\s+Credential=([^,\s]+)\s*,\s*SignedHeaders=([^,\s]+)\s*,\s*Signature=([0-9a-fA-F]+)\s*$")


class S3Error(Exception):
    def __init__(self, status, code, message, extra=None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.extra = extra or {}


# ---- SigV4, written from the published algorithm ----

def uri_encode(text, keep_slash):
    """AWS URI encoding: unreserved characters kept, '/' kept in paths."""
    return quote(text, safe="/~" if keep_slash else "~")


def hmac_sha256(key, msg):
    return hmac.new(key, msg.encode("utf-8"), hashlib.sha256).digest()


def signing_key(secret, date, region, service):
    k = hmac_sha256(("AWS4" + secret).encode("utf-8"), date)
    k = hmac_sha256(k, region)
    k = hmac_sha256(k, service)
    return hmac_sha256(k, "aws4_request")


def split_query(raw):
    """Decoded (name, value) pairs in order; '+' stays '+' as SDKs sign it."""
    pairs = []
    for part in raw.split("&"):
        if not part:
            continue
        name, sep, value = part.partition("=")
        pairs.append((unquote(name), unquote(value)))
    return pairs


def canonical_query(pairs):
    enc = sorted((uri_encode(n, False), uri_encode(v, False)) for n, v in pairs)
    return "&".join("%s=%s" % nv for nv in enc)


def trim_value(v):
    return " ".join(v.split())


# ---- storage ----

class Store:
    def __init__(self, root):
        self.root = root
        self.lock = threading.Lock()

    def bucket_dir(self, bucket):
        return os.path.join(self.root, bucket)

    @staticmethod
    def valid_bucket(bucket):
        # No '.' first, so "." and ".." cannot escape the root.
        return BUCKET_RE.match(bucket) is not None and not bucket.startswith(".")

    def has_bucket(self, bucket):
        return self.valid_bucket(bucket) and os.path.isdir(self.bucket_dir(bucket))

    def create_bucket(self, bucket):
        os.makedirs(self.bucket_dir(bucket), exist_ok=True)

    def _paths(self, bucket, key):
        h = hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()
        d = self.bucket_dir(bucket)
        return os.path.join(d, h + ".data"), os.path.join(d, h + ".json")

    @staticmethod
    def _write_atomic(path, data):
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        except BaseException:
            os.unlink(tmp)
            raise

    def put(self, bucket, key, data, content_type):
        meta = {
            "key": key,
            "size": len(data),
            "etag": '"%s"' % hashlib.md5(data).hexdigest(),
            "content_type": content_type or "binary/octet-stream",
            "mtime": time.time(),
        }
        data_path, meta_path = self._paths(bucket, key)
        with self.lock:
            self._write_atomic(data_path, data)
            self._write_atomic(meta_path, json.dumps(meta).encode("utf-8"))
        return meta

    def get_meta(self, bucket, key):
        _, meta_path = self._paths(bucket, key)
        try:
            with open(meta_path, "rb") as f:
                return json.loads(f.read())
        except FileNotFoundError:
            return None

    def read(self, bucket, key):
        data_path, _ = self._paths(bucket, key)
        with open(data_path, "rb") as f:
            return f.read()

    def delete(self, bucket, key):
        with self.lock:
            for p in self._paths(bucket, key):
                try:
                    os.unlink(p)
                except FileNotFoundError:
                    pass

    def list(self, bucket):
        out = []
        for name in os.listdir(self.bucket_dir(bucket)):
            if name.endswith(".json") and not name.startswith("."):
                with open(os.path.join(self.bucket_dir(bucket), name), "rb") as f:
                    out.append(json.loads(f.read()))
        # S3 lists in UTF-8 binary order.
        out.sort(key=lambda m: m["key"].encode("utf-8", "surrogateescape"))
        return out


def iso8601(ts):
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(ts))


# ---- HTTP ----

class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "kiln-s3-fixture"

    def log_message(self, fmt, *args):
        if self.server.verbose:
            sys.stderr.write("s3_fixture: %s\n" % (fmt % args))

    # -- plumbing --

    def send_xml(self, status, body, headers=None):
        data = ('<?xml version="1.0" encoding="UTF-8"?>\n' + body).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("x-amz-request-id", self.request_id)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def send_error_doc(self, err):
        extra = "".join("<%s>%s</%s>" % (k, escape(v), k) for k, v in err.extra.items())
        body = "<Error><Code>%s</Code><Message>%s</Message>%s<RequestId>%s</RequestId></Error>" % (
            err.code, escape(err.message), extra, self.request_id)
        if self.command == "HEAD":
            self.send_response(err.status)
            self.send_header("Content-Length", "0")
            self.send_header("x-amz-request-id", self.request_id)
            self.end_headers()
        else:
            self.send_xml(err.status, body)

    def read_body(self):
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            self.close_connection = True
            raise S3Error(411, "MissingContentLength", "You must provide the Content-Length HTTP header.")
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    # -- signature verification --

    def verify(self, raw_path, raw_query, body):
        cfg = self.server.cfg
        pairs = split_query(raw_query)
        params = dict(pairs)
        presigned = "X-Amz-Signature" in params
        if presigned:
            if params.get("X-Amz-Algorithm") != ALGORITHM:
                raise S3Error(400, "AuthorizationQueryParametersError", "X-Amz-Algorithm must be " + ALGORITHM)
            try:
                credential = params["X-Amz-Credential"]
                signed = params["X-Amz-SignedHeaders"]
                signature = params["X-Amz-Signature"]
                amz_date = params["X-Amz-Date"]
                expires = int(params["X-Amz-Expires"])
            except (KeyError, ValueError):
                raise S3Error(400, "AuthorizationQueryParametersError", "Missing or malformed X-Amz parameters")
            pairs = [(n, v) for n, v in pairs if n != "X-Amz-Signature"]
            payload_hash = "UNSIGNED-PAYLOAD"
        else:
            auth = self.headers.get("Authorization")
            if not auth:
                raise S3Error(403, "AccessDenied", "Access Denied")
            m = AUTH_RE.match(auth)
            if not m:
                raise S3Error(400, "AuthorizationHeaderMalformed", "The authorization header is malformed")
            credential, signed, signature = m.group(1), m.group(2), m.group(3)
            amz_date = self.headers.get("x-amz-date")
            if not amz_date:
                raise S3Error(403, "AccessDenied", "AWS authentication requires a valid Date or x-amz-date header")
            payload_hash = self.headers.get("x-amz-content-sha256")
            if not payload_hash:
                raise S3Error(400, "InvalidRequest", "Missing required header for this request: x-amz-content-sha256")

        parts = credential.split("/")
        if len(parts) < 5 or parts[-1] != "aws4_request":
            raise S3Error(400, "AuthorizationHeaderMalformed", "The credential is malformed")
        access_key = "/".join(parts[:-4])
        date, region, service = parts[-4], parts[-3], parts[-2]
        if access_key != cfg.access_key:
            raise S3Error(403, "InvalidAccessKeyId",
                          "The AWS Access Key Id you provided does not exist in our records.")
        if service != "s3":
            raise S3Error(400, "AuthorizationHeaderMalformed", "The credential names service '%s', not s3" % service)
        if not re.match(r"^\d{8}T\d{6}Z$", amz_date) or amz_date[:8] != date:
            raise S3Error(400, "AuthorizationHeaderMalformed", "The request date does not match the credential date")
        when = calendar.timegm(time.strptime(amz_date, "%Y%m%dT%H%M%SZ"))
        if presigned:
            if expires < 1 or expires > 604800:
                raise S3Error(400, "AuthorizationQueryParametersError", "X-Amz-Expires must be 1..604800")
            if time.time() > when + expires:
                raise S3Error(403, "AccessDenied", "Request has expired")
        elif abs(time.time() - when) > 15 * 60:
            raise S3Error(403, "RequestTimeTooSkewed",
                          "The difference between the request time and the current time is too large.")

        names = signed.split(";")
        if "host" not in names:
            raise S3Error(400, "AuthorizationHeaderMalformed", "The host header must be signed")
        canon_headers = ""
        for name in names:
            values = self.headers.get_all(name)
            if values is None:
                raise S3Error(403, "SignatureDoesNotMatch", "Signed header %s is missing" % name)
            canon_headers += "%s:%s\n" % (name, ",".join(trim_value(v) for v in values))
        canonical_request = "\n".join([
            self.command,
            uri_encode(unquote(raw_path), True),
            canonical_query(pairs),
            canon_headers,
            signed,
            payload_hash,
        ])
        scope = "%s/%s/%s/aws4_request" % (date, region, service)
        string_to_sign = "\n".join([
            ALGORITHM, amz_date, scope, hashlib.sha256(canonical_request.encode("utf-8")).hexdigest()])
        expected = hmac.new(signing_key(cfg.secret, date, region, service),
                            string_to_sign.encode("utf-8"), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, signature.lower()):
            raise S3Error(403, "SignatureDoesNotMatch",
                          "The request signature we calculated does not match the signature you provided. "
                          "Check your key and signing method.",
                          {"StringToSign": string_to_sign, "CanonicalRequest": canonical_request})
        if re.match(r"^[0-9a-f]{64}$", payload_hash) and hashlib.sha256(body).hexdigest() != payload_hash:
            raise S3Error(400, "XAmzContentSHA256Mismatch",
                          "The provided 'x-amz-content-sha256' header does not match what was computed.")
        owner = self.headers.get("x-amz-expected-bucket-owner")
        if owner is not None and cfg.account is not None and owner != cfg.account:
            raise S3Error(403, "AccessDenied", "Access Denied")

    # -- dispatch --

    def handle_any(self):
        self.request_id = uuid.uuid4().hex[:16].upper()
        try:
            raw_path, _, raw_query = self.path.partition("?")
            body = self.read_body() if self.command in ("PUT", "POST") else b""
            self.verify(raw_path, raw_query, body)
            path = unquote(raw_path)
            if not path.startswith("/"):
                raise S3Error(400, "InvalidURI", "Couldn't parse the specified URI.")
            bucket, _, key = path[1:].partition("/")
            if not bucket:
                raise S3Error(501, "NotImplemented", "ListBuckets is not implemented by this fixture")
            params = dict(split_query(raw_query))
            if not Store.valid_bucket(bucket):
                raise S3Error(400, "InvalidBucketName", "The specified bucket is not valid.")
            if self.command == "PUT" and not key:
                self.server.store.create_bucket(bucket)
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.send_header("Location", "/" + bucket)
                self.end_headers()
                return
            if not self.server.store.has_bucket(bucket):
                raise S3Error(404, "NoSuchBucket", "The specified bucket does not exist")
            if not key:
                if self.command == "GET" and params.get("list-type") == "2":
                    return self.list_v2(bucket, params)
                raise S3Error(501, "NotImplemented", "Only ListObjectsV2 is implemented on buckets")
            if self.command == "PUT":
                return self.put_object(bucket, key, body)
            if self.command in ("GET", "HEAD"):
                return self.get_object(bucket, key)
            if self.command == "DELETE":
                self.server.store.delete(bucket, key)
                self.send_response(204)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            raise S3Error(405, "MethodNotAllowed", "The specified method is not allowed against this resource.")
        except S3Error as e:
            self.send_error_doc(e)

    do_GET = do_PUT = do_HEAD = do_DELETE = do_POST = handle_any

    def put_object(self, bucket, key, body):
        meta = self.server.store.put(bucket, key, body, self.headers.get("Content-Type"))
        self.send_response(200)
        self.send_header("ETag", meta["etag"])
        self.send_header("Content-Length", "0")
        self.send_header("x-amz-request-id", self.request_id)
        self.end_headers()

    def get_object(self, bucket, key):
        meta = self.server.store.get_meta(bucket, key)
        if meta is None:
            raise S3Error(404, "NoSuchKey", "The specified key does not exist.", {"Key": key})
        data = self.server.store.read(bucket, key) if self.command == "GET" else b""
        self.send_response(200)
        self.send_header("Content-Type", meta["content_type"])
        self.send_header("Content-Length", str(meta["size"]))
        self.send_header("ETag", meta["etag"])
        self.send_header("Last-Modified", formatdate(meta["mtime"], usegmt=True))
        self.send_header("x-amz-request-id", self.request_id)
        self.end_headers()
        if self.command == "GET":
            self.wfile.write(data)

    def list_v2(self, bucket, params):
        prefix = params.get("prefix", "")
        url_encode = params.get("encoding-type") == "url"
        try:
            max_keys = int(params.get("max-keys", "1000"))
        except ValueError:
            raise S3Error(400, "InvalidArgument", "max-keys must be an integer")
        max_keys = min(max_keys, self.server.cfg.page_size)
        after = params.get("start-after", "")
        token = params.get("continuation-token")
        if token is not None:
            try:
                after = base64.urlsafe_b64decode(token.encode("ascii")).decode("utf-8", "surrogateescape")
            except Exception:
                raise S3Error(400, "InvalidArgument", "The continuation token provided is incorrect")
        objs = [m for m in self.server.store.list(bucket)
                if m["key"].startswith(prefix) and m["key"].encode("utf-8", "surrogateescape")
                > after.encode("utf-8", "surrogateescape")]
        page, rest = objs[:max_keys], objs[max_keys:]

        def enc(k):
            return quote_plus(k, safe="/") if url_encode else k

        out = ['<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">',
               "<Name>%s</Name>" % escape(bucket),
               "<Prefix>%s</Prefix>" % escape(enc(prefix)),
               "<KeyCount>%d</KeyCount>" % len(page),
               "<MaxKeys>%d</MaxKeys>" % max_keys]
        if url_encode:
            out.append("<EncodingType>url</EncodingType>")
        out.append("<IsTruncated>%s</IsTruncated>" % ("true" if rest else "false"))
        if token is not None:
            out.append("<ContinuationToken>%s</ContinuationToken>" % escape(token))
        if rest:
            nxt = base64.urlsafe_b64encode(page[-1]["key"].encode("utf-8", "surrogateescape")).decode("ascii")
            out.append("<NextContinuationToken>%s</NextContinuationToken>" % escape(nxt))
        for m in page:
            out.append("<Contents><Key>%s</Key><LastModified>%s</LastModified><ETag>%s</ETag>"
                       "<Size>%d</Size><StorageClass>STANDARD</StorageClass></Contents>"
                       % (escape(enc(m["key"])), iso8601(m["mtime"]), escape(m["etag"], {'"': "&quot;"}),
                          m["size"]))
        out.append("</ListBucketResult>")
        self.send_xml(200, "".join(out))


class Config:
    pass


def main():
    ap = argparse.ArgumentParser(description="S3-compatible test server with SigV4 verification")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--root", required=True)
    ap.add_argument("--access-key", default="test")
    ap.add_argument("--secret", default="test")
    ap.add_argument("--account", default=None)
    ap.add_argument("--bucket", action="append", default=[])
    ap.add_argument("--page-size", type=int, default=1000)
    ap.add_argument("--verbose", action="store_true")
    args = ap.parse_args()

    cfg = Config()
    cfg.access_key, cfg.secret, cfg.account = args.access_key, args.secret, args.account
    cfg.page_size = max(1, args.page_size)
    store = Store(args.root)
    os.makedirs(args.root, exist_ok=True)
    for b in args.bucket:
        store.create_bucket(b)

    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True
    server.cfg, server.store, server.verbose = cfg, store, args.verbose
    sys.stdout.write("%d\n" % server.server_address[1])
    sys.stdout.flush()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
