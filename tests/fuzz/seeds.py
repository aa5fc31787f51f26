#!/usr/bin/env python3
"""Seed corpora for the fuzz targets (tests/fuzz), from the golden files.

  seeds.py TARGET OUT_DIR

fuzz_component: the component documents; fuzz_emulator_request: each request
of tests/data/emulator/*.req in a file of its own; fuzz_sigv4: the
Authorization headers and query strings of the SigV4 goldens, a line each
joined as the target reads them; fuzz_build_config: recipes, infrastructure
and distribution files behind the selector byte that picks their reader."""
import glob
import os
import re
import sys

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data")


def write(out, name, data):
    with open(os.path.join(out, name), "wb") as f:
        f.write(data)


def main():
    target, out = sys.argv[1], sys.argv[2]
    os.makedirs(out, exist_ok=True)
    n = 0
    if target == "fuzz_component":
        for path in glob.glob(os.path.join(DATA, "component", "**", "*.yml"), recursive=True):
            write(out, f"doc-{n}", open(path, "rb").read())
            n += 1
    elif target == "fuzz_emulator_request":
        for path in sorted(glob.glob(os.path.join(DATA, "emulator", "*.req"))):
            text = open(path, "rb").read()
            text = re.sub(rb"\A(#[^\n]*\n)+", b"", text)
            for one in text.split(b"\n%%\n"):
                if not one.startswith(b"KILN "):
                    write(out, f"req-{n}", one.rstrip(b"\n"))
                    n += 1
        # aws-chunked object data (s3_upload.c's decoder): a bucket, then
        # bodies with unsigned and signed chunks and a trailer.
        write(out, f"req-{n}", b"PUT /fuzz-chunked HTTP/1.1\nHost: 127.0.0.1\nx-amz-content-sha256: UNSIGNED-PAYLOAD\n"
              b"X-Kiln-Sign: test test us-east-1 s3\n")
        n += 1
        chunks = (b"a\r\n0123456789\r\n5\r\nabcde\r\n0\r\n"
                  b"x-amz-checksum-crc32:AAAAAA==\r\n\r\n")
        for payload, body in ((b"STREAMING-UNSIGNED-PAYLOAD-TRAILER", chunks),
                              (b"STREAMING-AWS4-HMAC-SHA256-PAYLOAD",
                               b"a;chunk-signature=" + b"0" * 64 + b"\r\n0123456789\r\n0;chunk-signature="
                               + b"0" * 64 + b"\r\n\r\n")):
            write(out, f"req-{n}", b"PUT /fuzz-chunked/object HTTP/1.1\nHost: 127.0.0.1\n"
                  b"Content-Encoding: aws-chunked\nx-amz-decoded-content-length: 15\n"
                  b"x-amz-trailer: x-amz-checksum-crc32\nx-amz-content-sha256: " + payload +
                  b"\nX-Kiln-Sign: test test us-east-1 s3\n\n" + body)
            n += 1
    elif target == "fuzz_sigv4":
        found = set()
        for path in glob.glob(os.path.join(DATA, "sigv4", "**", "*"), recursive=True):
            if os.path.isfile(path):
                for m in re.finditer(rb"AWS4-HMAC-SHA256 Credential=[^\n\"]*", open(path, "rb").read()):
                    found.add(m.group(0))
        found.add(b"AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/s3/aws4_request, "
                  b"SignedHeaders=host;x-amz-date, Signature=" + b"0" * 64)
        query = (b"X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=test%2F20260101%2Fus-east-1%2Fs3%2Faws4_request"
                 b"&X-Amz-Date=20260101T000000Z&X-Amz-Expires=300&X-Amz-SignedHeaders=host&X-Amz-Signature="
                 + b"0" * 64)
        for header in sorted(found):
            write(out, f"sig-{n}", header + b"\n" + query)
            n += 1
        write(out, f"sig-{n}", b"20260101T000000Z\nAction=DescribeRegions&Version=2016-11-15")
        n += 1
    elif target == "fuzz_build_config":
        for selector, sub in ((0, "recipe"), (1, "infrastructure"), (2, "distribution"), (5, "infrastructure"),
                              (6, "distribution")):
            for path in glob.glob(os.path.join(DATA, sub, "**", "*.y*ml"), recursive=True) + \
                    glob.glob(os.path.join(DATA, sub, "**", "*.json"), recursive=True):
                write(out, f"cfg-{n}", bytes([selector]) + open(path, "rb").read())
                n += 1
    else:
        sys.exit(f"seeds.py: unknown target {target}")
    print(f"{target}: {n} seeds in {out}")


if __name__ == "__main__":
    main()
