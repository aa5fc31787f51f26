#!/usr/bin/env python3
"""Benchmark: kiln-emulator in mock mode beside moto's server (the peer),
measured in the same run on the same requests.  Prints figures; not a test.

  python3 bench/emulator.py [KILN_EMULATOR] [--seconds S] [--no-peer]

KILN_EMULATOR defaults to build/emulator/kiln-emulator.  For each server:
  - time from process start to the first answered request (a signed
    DescribeRegions polled every 2 ms on a port chosen beforehand), and for
    kiln-emulator also when its ready line came;
  - RSS (VmRSS from /proc/PID/status) idle after startup and idle after the load;
  - requests/s and p50/p99 latency of DescribeInstances with 50 instances
    present, and of RunInstances (one instance each), with 1 and 8 client
    threads, S seconds each (default 5);
  - the server's CPU time per request (utime+stime from /proc/PID/stat) and
    the client's, so a client-bound figure shows as one.
Requests are signed with botocore's SigV4Auth before the timed loop and sent
over one persistent http.client connection per thread; the signing cost per
request is measured and printed on its own.  kiln-emulator checks every
signature (SigV4 recomputed per request); moto does not check them.
RunInstances on kiln-emulator spreads over many accounts (an --accounts file)
because each account may have 100 live instances per region, as EC2 limits.
Needs qemu-img (import-image converts the disk) and botocore; moto is the
peer when `python3 -m moto.server` runs (pip moto, or Debian's python3-moto).
Runs in about a minute and a half.
"""
import argparse
import datetime
import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import xml.etree.ElementTree as ET

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

REGION = "us-east-1"
FORM = "application/x-www-form-urlencoded; charset=utf-8"
N_ACCOUNTS = 400  # x 100 live instances: room for RunInstances at any rate seen here
CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def sign(port, body, key="test", secret="test"):
    """(headers, body) of a signed EC2 Query POST."""
    req = AWSRequest(method="POST", url=f"http://127.0.0.1:{port}/", data=body.encode(),
                     headers={"Content-Type": FORM})
    SigV4Auth(Credentials(key, secret), "ec2", REGION).add_auth(req)
    p = req.prepare()
    return {k: v for k, v in p.headers.items() if k.lower() != "content-length"}, p.body


def signing_cost(n=3000):
    t0 = time.perf_counter()
    for _ in range(n):
        sign(4566, "Action=DescribeInstances&Version=2016-11-15")
    return (time.perf_counter() - t0) / n


def proc_status(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def rss_kib(pid):
    return proc_status(pid, "VmRSS")


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime


def post(conn, headers, body):
    conn.request("POST", "/", body=body, headers=headers)
    r = conn.getresponse()
    return r.status, r.read()


def wait_first_answer(port, t0, proc, limit=60.0):
    """Seconds from t0 to the first 200 for a signed DescribeRegions."""
    headers, body = sign(port, "Action=DescribeRegions&Version=2016-11-15")
    while time.perf_counter() - t0 < limit:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with status {proc.returncode}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            status, _ = post(conn, headers, body)
            conn.close()
            if status == 200:
                return time.perf_counter() - t0
        except OSError:
            pass
        time.sleep(0.002)
    raise RuntimeError("no answer within 60 s")


def load(port, pid, next_request, threads, seconds, check):
    """Runs `threads` clients for `seconds`; next_request() gives (headers,
    body) or None when there is nothing left to send."""
    deadline = time.perf_counter() + seconds
    lats, errors, lock = [], [], threading.Lock()

    def worker():
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        mine, bad = [], []
        while time.perf_counter() < deadline:
            req = next_request()
            if req is None:
                break
            t = time.perf_counter()
            try:
                status, data = post(conn, *req)
            except OSError as e:
                bad.append(str(e))
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                continue
            mine.append(time.perf_counter() - t)
            if status != 200 or not check(data):
                bad.append(f"HTTP {status}: {data[:200]!r}")
        conn.close()
        with lock:
            lats.extend(mine)
            errors.extend(bad)

    cpu0, ccpu0, t0 = cpu_seconds(pid), time.process_time(), time.perf_counter()
    ts = [threading.Thread(target=worker) for _ in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    elapsed = time.perf_counter() - t0
    server_cpu, client_cpu = cpu_seconds(pid) - cpu0, time.process_time() - ccpu0
    lats.sort()
    n = len(lats)
    return {
        "requests": n, "errors": len(errors), "first_error": errors[0] if errors else None,
        "rps": n / elapsed if elapsed else 0,
        "p50_ms": lats[n // 2] * 1000 if n else 0,
        "p99_ms": lats[min(n - 1, int(n * 0.99))] * 1000 if n else 0,
        "server_cpu_us": server_cpu / n * 1e6 if n else 0,
        "client_cpu_us": client_cpu / n * 1e6 if n else 0,
        "client_cpu_pct": client_cpu / elapsed * 100 if elapsed else 0,
    }


def texts(data, name):
    """The text of every element called name, whatever its namespace (moto
    answers in an older EC2 namespace)."""
    return [e.text for e in ET.fromstring(data).iter() if e.tag.rsplit("}", 1)[-1] == name]


def count_instances(data):
    return len(texts(data, "instanceId"))


class Server:
    """One server under test: kiln-emulator or moto."""

    def __init__(self, name):
        self.name = name
        self.proc = None
        self.figures = {}

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_kiln(binary, work):
    s = Server("kiln-emulator")
    state = os.path.join(work, "state")
    os.makedirs(state)
    disk = os.path.join(work, "tiny.qcow2")
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", disk, "1G"], check=True)
    p = subprocess.run([binary, "import-image", disk, "--name", "bench-image", "--state-dir", state, "--public"],
                       capture_output=True, text=True, check=True)
    s.ami = p.stdout.strip()
    s.keys = [("test", "test")] + [(f"AKIABENCH{i:05d}", f"secret-{i}") for i in range(N_ACCOUNTS)]
    accounts = os.path.join(work, "accounts.json")
    with open(accounts, "w") as f:
        json.dump({"accounts": [{"id": f"{i:012d}", "accessKeyId": k, "secretAccessKey": sec}
                                for i, (k, sec) in enumerate(s.keys)]}, f)
    s.port = free_port()
    s.log = open(os.path.join(work, "kiln.log"), "w")
    t0 = time.perf_counter()
    s.proc = subprocess.Popen([binary, "--listen", f"127.0.0.1:{s.port}", "--instances", "mock",
                               "--state-dir", state, "--accounts", accounts],
                              stdout=subprocess.PIPE, stderr=s.log, text=True)
    ready = {}

    def read_ready():
        line = s.proc.stdout.readline()
        ready["t"] = time.perf_counter() - t0
        ready["line"] = line.strip()

    reader = threading.Thread(target=read_ready, daemon=True)
    reader.start()
    s.figures["first_answer_s"] = wait_first_answer(s.port, t0, s.proc)
    reader.join(10)
    s.figures["ready_line_s"] = ready.get("t")
    s.note = "SigV4 verified on every request; state in SQLite under --state-dir; --threads 4 (default)"
    return s


def moto_python():
    """A python that can run `-m moto.server`, or None and why."""
    tried = []
    for py in dict.fromkeys([sys.executable, shutil.which("python3") or "", "/usr/bin/python3"]):
        if not py or not os.path.exists(py):
            continue
        r = subprocess.run([py, "-c", "import moto, moto.server; print(moto.__version__)"], capture_output=True,
                           text=True)
        if r.returncode == 0:
            return py, r.stdout.strip(), None
        tried.append(f"{py}: no moto")
    apt = subprocess.run(["apt-cache", "policy", "python3-moto"], capture_output=True, text=True)
    deb = "Debian's python3-moto: " + ("not in the package lists" if not apt.stdout.strip()
                                       else apt.stdout.strip().splitlines()[1].strip())
    return None, None, "; ".join(tried + [deb])


def start_moto(py, version, work):
    s = Server(f"moto {version}")
    s.port = free_port()
    s.log = open(os.path.join(work, "moto.log"), "w")
    env = dict(os.environ)
    for k in list(env):
        if k.startswith("AWS_"):
            del env[k]
    t0 = time.perf_counter()
    s.proc = subprocess.Popen([py, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(s.port)],
                              stdout=s.log, stderr=subprocess.STDOUT, env=env)
    s.figures["first_answer_s"] = wait_first_answer(s.port, t0, s.proc)
    s.figures["ready_line_s"] = None
    # moto ships a table of AMIs; any of them launches.
    headers, body = sign(s.port, "Action=DescribeImages&Version=2016-11-15&Owner.1=amazon")
    conn = http.client.HTTPConnection("127.0.0.1", s.port, timeout=60)
    status, data = post(conn, headers, body)
    conn.close()
    ids = texts(data, "imageId")
    if status != 200 or not ids:
        raise RuntimeError(f"moto DescribeImages: HTTP {status}, {len(ids)} images")
    s.ami = ids[0]
    s.keys = [("test", "test")]
    s.note = "does not verify signatures; state in memory; werkzeug threaded dev server"
    return s


def run_server(s, seconds):
    f = s.figures
    time.sleep(1.0)
    f["rss_idle_kib"] = rss_kib(s.proc.pid)
    f["threads_idle"] = proc_status(s.proc.pid, "Threads")

    # 50 instances for DescribeInstances, in the account "test".
    headers, body = sign(s.port, f"Action=RunInstances&Version=2016-11-15&ImageId={s.ami}&MinCount=50&MaxCount=50"
                                 "&InstanceType=t3.micro")
    conn = http.client.HTTPConnection("127.0.0.1", s.port, timeout=120)
    status, data = post(conn, headers, body)
    if status != 200:
        raise RuntimeError(f"{s.name}: RunInstances 50: HTTP {status}: {data[:300]!r}")
    time.sleep(0.5)
    headers, body = sign(s.port, "Action=DescribeInstances&Version=2016-11-15")
    status, data = post(conn, headers, body)
    conn.close()
    n = count_instances(data)
    if status != 200 or n != 50:
        raise RuntimeError(f"{s.name}: DescribeInstances: HTTP {status}, {n} instances")

    describe = (headers, body)
    for threads in (1, 8):
        load(s.port, s.proc.pid, lambda: describe, threads, 0.5, lambda d: True)  # warm-up
        f[f"describe_{threads}"] = load(s.port, s.proc.pid, lambda: describe, threads, seconds,
                                        lambda d: d.count(b"<instanceId>") == 50)

    # RunInstances: one pre-signed request per account, each used 100 times
    # at most (the 50 above sit in the first account, so it is skipped).
    slots = [sign(s.port, f"Action=RunInstances&Version=2016-11-15&ImageId={s.ami}&MinCount=1&MaxCount=1"
                          "&InstanceType=t3.micro", key=k, secret=sec) for k, sec in s.keys[1:] or s.keys]
    per_slot = 100 if len(slots) > 1 else 10 ** 9
    state = {"slot": 0, "used": 0}
    lock = threading.Lock()

    def next_run():
        with lock:
            if state["used"] >= per_slot:
                state["slot"] += 1
                state["used"] = 0
            if state["slot"] >= len(slots):
                return None
            state["used"] += 1
            return slots[state["slot"]]

    for threads in (1, 8):
        f[f"run_{threads}"] = load(s.port, s.proc.pid, next_run, threads, seconds,
                                   lambda d: b"<instanceId>" in d)
        if state["slot"] >= len(slots):
            f[f"run_{threads}"]["note"] = "ran out of accounts before the time was up"
    time.sleep(2.0)
    f["rss_loaded_kib"] = rss_kib(s.proc.pid)
    f["threads_loaded"] = proc_status(s.proc.pid, "Threads")
    f["instances"] = 50 + f["run_1"]["requests"] + f["run_8"]["requests"]


def print_report(servers, sign_us, seconds, peer_problem):
    print(f"\nkiln-emulator benchmark ({seconds:g} s per figure, {os.cpu_count()} CPUs, "
          f"python {sys.version.split()[0]}, {datetime.datetime.now().isoformat(timespec='seconds')})")
    print(f"client signing cost (botocore SigV4Auth, DescribeInstances): {sign_us:.0f} us/request "
          "(done before the timed loops; requests/s below exclude it)")
    for s in servers:
        print(f"  {s.name}: {s.note}")
    if peer_problem:
        print(f"  peer: NOT MEASURED: {peer_problem}")
    names = [s.name for s in servers]
    w = max(21, *(len(n) + 2 for n in names))
    print()
    print(f"{'':50s}" + "".join(f"{n:>{w}s}" for n in names))

    def row(label, fmt):
        print(f"{label:50s}" + "".join(f"{fmt(s.figures):>{w}s}" for s in servers))

    row("start to first answered request", lambda f: f"{f['first_answer_s'] * 1000:.0f} ms")
    row("start to ready line", lambda f: f"{f['ready_line_s'] * 1000:.0f} ms" if f.get("ready_line_s") else "-")
    row("RSS idle after startup", lambda f: f"{f['rss_idle_kib'] / 1024:.1f} MiB")
    for key, label in (("describe", "DescribeInstances (50 instances)"), ("run", "RunInstances (1 instance)")):
        for threads in (1, 8):
            k = f"{key}_{threads}"
            row(f"{label}, {threads} thread{'s' if threads > 1 else ''}", lambda f: f"{f[k]['rps']:.0f} req/s")
            row("    p50 / p99 latency", lambda f: f"{f[k]['p50_ms']:.1f} / {f[k]['p99_ms']:.1f} ms")
            row("    server CPU per request", lambda f: f"{f[k]['server_cpu_us']:.0f} us")
            row("    client CPU per request (client busy)",
                lambda f: f"{f[k]['client_cpu_us']:.0f} us ({f[k]['client_cpu_pct']:.0f}%)")
            row("    errors", lambda f: f"{f[k]['errors']}")
    row("RSS idle after the load", lambda f: f"{f['rss_loaded_kib'] / 1024:.1f} MiB")
    row("instances held after the load", lambda f: f"{f['instances']}")
    row("threads: idle after startup / after the load", lambda f: f"{f['threads_idle']} / {f['threads_loaded']}")
    if len(servers) == 2:
        a, b = servers[0].figures, servers[1].figures
        print()
        for key, label in (("describe_1", "DescribeInstances 1 thread"), ("describe_8", "DescribeInstances 8 threads"),
                           ("run_1", "RunInstances 1 thread"), ("run_8", "RunInstances 8 threads")):
            if b[key]["rps"]:
                print(f"ratio {servers[0].name} / {servers[1].name}, {label}: {a[key]['rps'] / b[key]['rps']:.1f}x")
    for s in servers:
        for k, v in s.figures.items():
            if isinstance(v, dict) and (v.get("first_error") or v.get("note")):
                print(f"  {s.name} {k}: {v.get('note') or ''} {v.get('first_error') or ''}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("emulator", nargs="?", default="build/emulator/kiln-emulator")
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--no-peer", action="store_true")
    args = ap.parse_args()
    binary = os.path.abspath(args.emulator)
    work = tempfile.mkdtemp(prefix="kiln-bench-emulator-")
    servers = []
    peer_problem = None
    try:
        sign_us = signing_cost() * 1e6
        kiln = start_kiln(binary, work)
        servers.append(kiln)
        print(f"kiln-emulator: started ({kiln.figures['first_answer_s'] * 1000:.0f} ms to the first answer)",
              flush=True)
        run_server(kiln, args.seconds)
        kiln.stop()
        if args.no_peer:
            peer_problem = "--no-peer given"
        else:
            py, version, why = moto_python()
            if py is None:
                peer_problem = f"moto is not installed ({why})"
            else:
                moto = start_moto(py, version, work)
                servers.append(moto)
                print(f"moto {version} ({py}): started ({moto.figures['first_answer_s'] * 1000:.0f} ms to the "
                      "first answer)", flush=True)
                try:
                    run_server(moto, args.seconds)
                except Exception as e:
                    servers.pop()
                    peer_problem = f"moto failed during the run: {e}"
                moto.stop()
        print_report(servers, sign_us, args.seconds, peer_problem)
    finally:
        for s in servers:
            s.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
