#!/usr/bin/env python3
"""`kiln image import --method ebs` beside `qemu-img convert -O raw`.

  python3 bench/image_import.py [KILN] [KILN_EMULATOR] [--size-gib 4] [--data-gib 1]

Makes a qcow2 of SIZE GiB virtual holding DATA GiB of random data in 1 MiB
runs spread over the disk, then, in the same run on the same machine:

  peer   qemu-img convert -O raw of it to a sparse file: the disk's own limit
         for reading the data out of qcow2 (what any importer must at least do)
  kiln   kiln image import of the qcow2 into a kiln-emulator (mock instances,
         state on disk): the qcow2 read in place (qemu-img map), EBS direct
         upload, RegisterImage

and prints seconds, bytes read and sent, the CPU time of kiln (with the
qemu-img it runs) and of the emulator during the import, and the ratios:
kiln's time over the convert's (target: at most 2x), bytes sent over the
data allocated (target: at most 1).  The emulator runs on this machine, so the upload is
bounded by its CPU, not by a network.
"""
import argparse
import json
import os
import re
import resource
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


def proc_cpu(pid):
    """User and system CPU seconds a running process has used so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def children_cpu():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime, r.ru_stime


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
        emu_before = proc_cpu(emu.pid)
        kids_before = children_cpu()
        t0 = time.monotonic()
        p = subprocess.run([args.kiln, "image", "import", disk, "--name", "bench", "--endpoint-url", url],
                           capture_output=True, text=True, env=env)
        kiln_s = time.monotonic() - t0
        kids_after = children_cpu()
        emu_after = proc_cpu(emu.pid)
        # kiln's CPU includes the qemu-img it runs (map, to find the data).
        kiln_cpu = [a - b for a, b in zip(kids_after, kids_before)]
        emu_cpu = [a - b for a, b in zip(emu_after, emu_before)]
        if p.returncode != 0:
            print(p.stderr, file=sys.stderr)
            return 1
        summary = p.stderr.strip().splitlines()[-1]
        read = float(re.search(r"read ([0-9.]+) MiB", summary).group(1)) * MIB
        sent = float(re.search(r"sent ([0-9.]+) MiB", summary).group(1)) * MIB
        print(f"disk: qcow2, {args.size_gib} GiB virtual, {args.data_gib} GiB of data")
        print(f"qemu-img convert -O raw (peer): {peer_s:.1f} s")
        print(f"kiln image import (ebs):        {kiln_s:.1f} s; read {read / MIB:.0f} MiB of the qcow2 in place, "
              f"sent {sent / MIB:.0f} MiB")
        print(f"  CPU: kiln (with its qemu-img) {kiln_cpu[0]:.1f} s user + {kiln_cpu[1]:.1f} s sys, "
              f"kiln-emulator {emu_cpu[0]:.1f} s user + {emu_cpu[1]:.1f} s sys "
              f"(both on this machine's {os.cpu_count()} CPUs)")
        print(f"ratio time kiln/convert: {kiln_s / peer_s:.2f} (target <= 2)")
        print(f"ratio bytes sent/data:   {sent / data:.2f} (target <= 1)")
        print(f"ratio bytes read/data:   {read / data:.2f}")
        return 0
    finally:
        if emu and emu.poll() is None:
            emu.send_signal(signal.SIGTERM)
            emu.wait(timeout=60)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
