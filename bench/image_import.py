#!/usr/bin/env python3
"""`kiln image import --method ebs` beside `qemu-img convert -O raw`.

  python3 bench/image_import.py [KILN] [KILN_EMULATOR] [--size-gib 4] [--data-gib 1]

Makes a qcow2 of SIZE GiB virtual holding DATA GiB of random data in 1 MiB
runs spread over the disk, then, in the same run on the same machine:

  peer   qemu-img convert -O raw of it to a sparse file: the disk's own limit
         for reading the data out of qcow2 (what any importer must at least do)
  kiln   kiln image import of the qcow2 into a kiln-emulator (mock instances,
         state on disk): conversion, EBS direct upload, RegisterImage

and prints seconds, bytes read and sent, and the ratios: kiln's time over
the convert's (target: at most 2x), bytes sent over the data allocated
(target: at most 1).  The emulator runs on this machine, so the upload is
bounded by its CPU, not by a network.
"""
import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

MIB = 1024 * 1024
GIB = 1024 * MIB
HERE = os.path.dirname(os.path.abspath(__file__))


def make_disk(path, size_gib, data_gib):
    raw = path + ".src.raw"
    with open(raw, "wb") as f:
        f.truncate(size_gib * GIB)
        runs = data_gib * 1024
        stride = (size_gib * GIB) // runs
        for i in range(runs):
            f.seek(i * stride)
            f.write(os.urandom(MIB))
    subprocess.run(["qemu-img", "convert", "-O", "qcow2", raw, path], check=True)
    os.unlink(raw)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("kiln", nargs="?", default=os.path.join(HERE, "..", "build", "builder", "kiln"))
    ap.add_argument("emulator", nargs="?", default=os.path.join(HERE, "..", "build", "emulator", "kiln-emulator"))
    ap.add_argument("--size-gib", type=int, default=4)
    ap.add_argument("--data-gib", type=int, default=1)
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="kiln-bench-import-")
    emu = None
    try:
        disk = os.path.join(tmp, "disk.qcow2")
        make_disk(disk, args.size_gib, args.data_gib)
        data = args.data_gib * GIB

        t0 = time.monotonic()
        subprocess.run(["qemu-img", "convert", "-O", "raw", disk, os.path.join(tmp, "peer.raw")], check=True)
        peer_s = time.monotonic() - t0
        os.unlink(os.path.join(tmp, "peer.raw"))

        log = open(os.path.join(tmp, "emulator.log"), "w")
        emu = subprocess.Popen([args.emulator, "--instances", "mock", "--state-dir", os.path.join(tmp, "state"),
                                "--listen", "127.0.0.1:0"], stdout=subprocess.PIPE, stderr=log, text=True)
        url = emu.stdout.readline().split("listening on ")[1].split()[0]
        env = dict(os.environ, AWS_ACCESS_KEY_ID="test", AWS_SECRET_ACCESS_KEY="test", AWS_REGION="us-east-1",
                   KILN_RUNTIME_DIR=os.path.join(tmp, "runtime"))
        os.makedirs(env["KILN_RUNTIME_DIR"])
        t0 = time.monotonic()
        p = subprocess.run([args.kiln, "image", "import", disk, "--name", "bench", "--endpoint-url", url],
                           capture_output=True, text=True, env=env)
        kiln_s = time.monotonic() - t0
        if p.returncode != 0:
            print(p.stderr, file=sys.stderr)
            return 1
        summary = p.stderr.strip().splitlines()[-1]
        read = float(re.search(r"read ([0-9.]+) MiB", summary).group(1)) * MIB
        sent = float(re.search(r"sent ([0-9.]+) MiB", summary).group(1)) * MIB
        print(f"disk: qcow2, {args.size_gib} GiB virtual, {args.data_gib} GiB of data")
        print(f"qemu-img convert -O raw (peer): {peer_s:.1f} s")
        print(f"kiln image import (ebs):        {kiln_s:.1f} s; read {read / MIB:.0f} MiB of the raw form, "
              f"sent {sent / MIB:.0f} MiB")
        print(f"ratio time kiln/convert: {kiln_s / peer_s:.2f} (target <= 2)")
        print(f"ratio bytes sent/data:   {sent / data:.2f} (target <= 1)")
        return 0
    finally:
        if emu and emu.poll() is None:
            emu.send_signal(signal.SIGTERM)
            emu.wait(timeout=60)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
