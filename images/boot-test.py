#!/usr/bin/env python3
"""Boots a kiln base image under QEMU (TCG) and checks it through its guest agent.

Usage: python3 images/boot-test.py IMAGE.qcow2 [--timeout SECONDS] [--keep DIR]
           [--like-kiln] [--machine M] [--cpu C] [--smp N] [--nodefaults] [--mem MIB]

The image itself is never written: the guest runs on a qcow2 overlay in a
temporary directory. Checks, in order:
  1. time from QEMU start to the first answer to guest-sync (printed);
  2. guest-exec of /bin/sh and of bash with captured output;
  3. guest-file-open/write/close/read of a file on the root disk;
  4. guest-shutdown mode=reboot, then the agent answers again and the file is
     still there;
  5. guest-shutdown mode=powerdown ends the QEMU process;
  6. a fresh boot of the same overlay still has the file; powered off again.
Prints 'N passed, N failed' at the end; exits 1 if anything failed. Every
QEMU process it starts is killed before it returns.
"""
import argparse
import base64
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

results = []


def check(name, ok, detail=""):
    results.append((name, bool(ok)))
    print(("ok   " if ok else "FAIL ") + name + (": " + detail if detail else ""), flush=True)
    return ok


class Agent:
    def __init__(self, path):
        self.path = path
        self.sock = None
        self.buf = b""
        self.out = bytearray()
        self.sync_id = int(time.time()) % 100000

    def connect(self, deadline):
        while time.monotonic() < deadline:
            try:
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                s.connect(self.path)
                self.sock = s
                return True
            except OSError:
                time.sleep(0.05)
        return False

    def close(self):
        if self.sock:
            self.sock.close()
            self.sock = None

    def send(self, obj):
        self.sock.settimeout(10)
        self.sock.sendall(bytes(self.out) + json.dumps(obj).encode() + b"\n")
        self.out.clear()

    def flush_nowait(self):
        """Sends what is queued without blocking. While no agent reads the
        port, QEMU does not read the socket either, and a few dozen queued
        messages fill it: a client waiting for the agent must not block."""
        self.sock.setblocking(False)
        try:
            while self.out:
                n = self.sock.send(self.out)
                del self.out[:n]
        except BlockingIOError:
            pass

    def read(self, timeout):
        """One JSON message, or None on timeout or closed socket."""
        end = time.monotonic() + timeout
        while b"\n" not in self.buf:
            left = end - time.monotonic()
            if left <= 0:
                return None
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(65536)
            except OSError:  # includes timeouts
                return None
            if not data:
                return None
            self.buf += data
        line, self.buf = self.buf.split(b"\n", 1)
        line = line.strip().lstrip(b"\xff")
        if not line:
            return self.read(max(0.0, end - time.monotonic()))
        try:
            return json.loads(line)
        except ValueError:
            return {"garbage": line.decode(errors="replace")}

    def sync(self, deadline, interval=0.25):
        """guest-sync until the agent answers with our id (or deadline).
        Answers to earlier guest-syncs still queued are skipped."""
        while time.monotonic() < deadline:
            if not self.out:  # a new id for every guest-sync sent
                self.sync_id += 1
                msg = {"execute": "guest-sync", "arguments": {"id": self.sync_id}}
                self.out += json.dumps(msg).encode() + b"\n"
            self.flush_nowait()
            end = min(deadline, time.monotonic() + interval)
            while time.monotonic() < end:
                msg = self.read(end - time.monotonic())
                if msg is None:
                    break
                if msg.get("return") == self.sync_id and not self.out:
                    return True
        return False

    def cmd(self, execute, timeout=30, **arguments):
        msg = {"execute": execute}
        if arguments:
            msg["arguments"] = arguments
        self.send(msg)
        reply = self.read(timeout)
        if reply is None:
            raise RuntimeError("no answer to " + execute)
        if "error" in reply:
            raise RuntimeError("%s: %s" % (execute, reply["error"]))
        return reply.get("return")

    def run(self, path, args, timeout=60):
        pid = self.cmd("guest-exec", path=path, arg=args, **{"capture-output": True})["pid"]
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            st = self.cmd("guest-exec-status", pid=pid)
            if st.get("exited"):
                out = base64.b64decode(st.get("out-data", "")).decode(errors="replace")
                err = base64.b64decode(st.get("err-data", "")).decode(errors="replace")
                return st.get("exitcode"), out, err
            time.sleep(0.1)
        raise RuntimeError("guest-exec of %s did not finish" % path)

    def write_file(self, path, data):
        h = self.cmd("guest-file-open", path=path, mode="w")
        self.cmd("guest-file-write", handle=h, **{"buf-b64": base64.b64encode(data).decode()})
        self.cmd("guest-file-close", handle=h)

    def read_file(self, path):
        h = self.cmd("guest-file-open", path=path, mode="r")
        data = b""
        while True:
            r = self.cmd("guest-file-read", handle=h, count=65536)
            data += base64.b64decode(r.get("buf-b64", ""))
            if r.get("eof") or not r.get("count"):
                break
        self.cmd("guest-file-close", handle=h)
        return data


def start_qemu(overlay, qga, console, opts):
    argv = ["qemu-system-x86_64", "-accel", "tcg", "-m", str(opts.mem), "-nographic"]
    if opts.machine:
        argv += ["-machine", opts.machine]
    if opts.cpu:
        argv += ["-cpu", opts.cpu]
    if opts.smp:
        argv += ["-smp", str(opts.smp)]
    if opts.nodefaults:
        argv += ["-nodefaults"]
    argv += [
        "-drive", "file=%s,if=virtio,format=qcow2" % overlay,
        "-chardev", "socket,path=%s,server=on,wait=off,id=qga0" % qga,
        "-device", "virtio-serial",
        "-device", "virtserialport,chardev=qga0,name=org.qemu.guest_agent.0",
        "-serial", "file:%s" % console,
        "-monitor", "none",
    ]
    return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)


def stop(proc):
    if proc and proc.poll() is None:
        proc.kill()
        proc.wait()


def boot(tmp, overlay, opts, timeout, tag):
    qga = os.path.join(tmp, "qga-%s.sock" % tag)
    console = os.path.join(tmp, "console-%s.log" % tag)
    t0 = time.monotonic()
    proc = start_qemu(overlay, qga, console, opts)
    agent = Agent(qga)
    deadline = t0 + timeout
    if not agent.connect(deadline):
        return proc, None, None, console
    up = agent.sync(deadline)
    return proc, agent, (time.monotonic() - t0) if up else None, console


def wait_exit(proc, timeout):
    try:
        proc.wait(timeout)
        return True
    except subprocess.TimeoutExpired:
        return False


BOOT_ID = "/proc/sys/kernel/random/boot_id"


def wait_new_boot(agent, proc, old_boot_id, deadline):
    """True once the agent answers from a boot other than old_boot_id."""
    while time.monotonic() < deadline and proc.poll() is None:
        if agent.sync(min(deadline, time.monotonic() + 5)):
            try:
                if agent.read_file(BOOT_ID) != old_boot_id:
                    return True
            except RuntimeError:
                pass  # the agent went away in the middle
            time.sleep(0.5)
    return False


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("image")
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for the agent")
    ap.add_argument("--mem", type=int, default=512)
    ap.add_argument("--keep", help="copy console logs to this directory")
    ap.add_argument("--machine", help="QEMU -machine (default: QEMU's, i440fx)")
    ap.add_argument("--cpu", help="QEMU -cpu (default: QEMU's, qemu64)")
    ap.add_argument("--smp", type=int)
    ap.add_argument("--nodefaults", action="store_true", help="QEMU -nodefaults (no NIC, no VGA)")
    ap.add_argument("--like-kiln", action="store_true",
                    help="as kiln's qemu driver runs guests: q35, -cpu max, -nodefaults")
    a = ap.parse_args()
    if a.like_kiln:
        a.machine = a.machine or "q35"
        a.cpu = a.cpu or "max"
        a.nodefaults = True

    image = os.path.abspath(a.image)
    tmp = tempfile.mkdtemp(prefix="kiln-boot-test.")
    proc = None
    try:
        overlay = os.path.join(tmp, "overlay.qcow2")
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", image, "-F", "qcow2",
                        overlay], check=True)
        proc, agent, t, console = boot(tmp, overlay, a, a.timeout, "1")
        if not check("agent answers guest-sync", t is not None,
                     "%.1f s after QEMU start" % t if t else "no answer in %.0f s" % a.timeout):
            return
        print("boot-to-agent %.2f s" % t, flush=True)

        code, out, err = agent.run("/bin/sh", ["-c", "echo hi; uname -a"])
        check("guest-exec /bin/sh", code == 0 and out.startswith("hi\n"), repr(out.strip()))
        code, out, err = agent.run("/bin/bash", ["-c", "echo ${BASH_VERSION%%.*} $((6*7)); id -u"])
        check("guest-exec bash", code == 0 and out.split() == [out.split()[0], "42", "0"], repr(out.strip()))
        code, out, err = agent.run("/bin/sh", ["-c", "exit 3"])
        check("guest-exec exit status", code == 3, str(code))
        tools = "cp mv rm mkdir chmod chown find ln test cat stat sleep ip sha256sum base64 mktemp tar"
        code, out, err = agent.run("/bin/sh", ["-c", "for t in %s; do command -v $t >/dev/null || echo missing $t; done" % tools])
        check("shell tools present", code == 0 and out == "", out.strip())

        stamp = ("kiln boot test %f\n" % time.time()).encode()
        agent.write_file("/root/kiln-boot-test.txt", stamp)
        check("guest-file write+read", agent.read_file("/root/kiln-boot-test.txt") == stamp)

        # Reboot through the agent (a new boot_id tells it happened), then the
        # file must still be there.
        boot_id = agent.read_file(BOOT_ID)
        t1 = time.monotonic()
        agent.send({"execute": "guest-shutdown", "arguments": {"mode": "reboot"}})
        ok = wait_new_boot(agent, proc, boot_id, time.monotonic() + a.timeout)
        check("agent back after guest-shutdown reboot", ok, "%.1f s" % (time.monotonic() - t1))
        if ok:
            check("file kept across reboot", agent.read_file("/root/kiln-boot-test.txt") == stamp)

        # Power off through the agent: QEMU must exit.
        t1 = time.monotonic()
        agent.send({"execute": "guest-shutdown", "arguments": {"mode": "powerdown"}})
        ok = wait_exit(proc, 60)
        check("guest-shutdown powerdown ends QEMU", ok, "%.1f s" % (time.monotonic() - t1))
        agent.close()
        stop(proc)

        # A fresh boot of the same overlay.
        proc, agent, t, console = boot(tmp, overlay, a, a.timeout, "2")
        if check("second boot: agent answers", t is not None, "%.1f s" % t if t else ""):
            check("second boot: file still there", agent.read_file("/root/kiln-boot-test.txt") == stamp)
            agent.send({"execute": "guest-shutdown"})
            check("second boot: powered off", wait_exit(proc, 60))
            agent.close()
    except Exception as e:  # report, then clean up
        import traceback
        traceback.print_exc()
        check("no unexpected error", False, repr(e))
    finally:
        stop(proc)
        if a.keep:
            os.makedirs(a.keep, exist_ok=True)
            for f in os.listdir(tmp):
                if f.startswith("console-"):
                    shutil.copy(os.path.join(tmp, f), a.keep)
        shutil.rmtree(tmp, ignore_errors=True)
        passed = sum(1 for _, ok in results if ok)
        print("%d passed, %d failed" % (passed, len(results) - passed))
        sys.exit(0 if results and passed == len(results) else 1)


if __name__ == "__main__":
    main()
