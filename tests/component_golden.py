#!/usr/bin/env python3
"""Golden tests for component documents, run by `meson test`.

Cases live under tests/data/component/:
  invalid/NAME.yml   `kiln validate` must fail; NAME.err holds the expected
                     stderr (one line, FILE:LINE:COL: message).
  valid/NAME.yml     `kiln validate` must succeed.
  run/NAME.yml       `kiln component run` is run on this host; NAME.expected.json
                     is a subset of detailedoutput.json (plus "exitStatus": the
                     command's exit status) that must match.  A run that
                     stops for a reboot (194) is run again to resume it, and
                     "exitStatuses" lists every run's status.

Documents under run/ may declare these parameters, which the runner fills:
  Work       a fresh empty directory (the only place a document should write)
  HttpBase   http://127.0.0.1:PORT of a server the runner starts on
             tests/data/component/www; HttpBase/flaky/N/KEY/FILE answers
             503 N times, then serves FILE (see QuietHandler)
  S3Bucket   a bucket on tests/s3_fixture.py, which the runner starts; kiln
             runs with AWS_ENDPOINT_URL pointing at it and access key/secret
             test/test (bucket owner account 123456789012)
Paths of the work directory are replaced by @WORK@, the data directory by
@DATA@ (the checkout may live anywhere) and the HTTP port by @PORT@ in results before comparing, so expectations are stable.

KILN_REGENERATE=1 rewrites the .err and .expected.json files from what kiln
does now (review the diff before committing it).  Timing fields are never
compared.
"""
import http.server
import json
import os
import re
import shutil
import socketserver
import subprocess
import sys
import tempfile
import threading

REGENERATE = os.environ.get("KILN_REGENERATE") == "1"
# Fields that change from run to run and are never part of an expectation.
VOLATILE = {"startTime", "endTime", "executionId", "logUrl", "sha256"}


def subset_mismatch(expected, actual, path="$"):
    """Returns a description of the first place where expected is not a subset
    of actual, or None.  Dicts: every expected key must match; lists: same
    length, item by item; anything else: equal."""
    if isinstance(expected, dict):
        if not isinstance(actual, dict):
            return f"{path}: expected an object, got {json.dumps(actual)[:200]}"
        for k, v in expected.items():
            if k not in actual:
                return f"{path}.{k}: missing"
            m = subset_mismatch(v, actual[k], f"{path}.{k}")
            if m:
                return m
        return None
    if isinstance(expected, list):
        if not isinstance(actual, list) or len(actual) != len(expected):
            return f"{path}: expected {len(expected)} items, got {json.dumps(actual)[:300]}"
        for i, (e, a) in enumerate(zip(expected, actual)):
            m = subset_mismatch(e, a, f"{path}[{i}]")
            if m:
                return m
        return None
    if expected != actual:
        return f"{path}: expected {json.dumps(expected)[:300]}, got {json.dumps(actual)[:300]}"
    return None


def normalise(obj, work, port, data=None):
    """Decodes the JSON-in-a-string inputs/outputs fields and masks paths."""
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            if k in VOLATILE:
                continue
            if k in ("inputs", "outputs") and isinstance(v, str):
                try:
                    v = json.loads(v)
                except ValueError:
                    pass
            out[k] = normalise(v, work, port, data)
        return out
    if isinstance(obj, list):
        return [normalise(v, work, port, data) for v in obj]
    if isinstance(obj, str):
        if data:
            obj = obj.replace(os.path.realpath(data), "@DATA@").replace(data, "@DATA@")
        if work:
            obj = obj.replace(os.path.realpath(work), "@WORK@").replace(work, "@WORK@")
        if port:
            obj = obj.replace(f"127.0.0.1:{port}", "127.0.0.1:@PORT@")
        return obj
    return obj


def expectation_from(detail, status):
    """The subset regenerate writes: the outcome of every step, no timings."""
    keep_step = ("name", "action", "status", "failureMessage", "exitCode", "attempts", "inputs", "outputs",
                 "detailedOutput")
    docs = []
    for d in detail.get("documents", []):
        phases = []
        for p in d.get("phases", []):
            steps = [{k: s[k] for k in keep_step if k in s and s[k] is not None} for s in p.get("steps", [])]
            phases.append({"name": p["name"], "status": p["status"], "steps": steps})
        docs.append({"status": d["status"], "failureMessage": d.get("failureMessage", ""), "phases": phases})
    return {"exitStatus": status, "status": detail.get("status"), "executedStepCount": detail.get("executedStepCount"),
            "failedStepCount": detail.get("failedStepCount"), "documents": docs}


def declared_parameters(path):
    text = open(path, encoding="utf-8", errors="replace").read()
    return set(re.findall(r"^\s*-\s*(Work|HttpBase|S3Bucket)\s*:", text, re.M))


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    """Serves tests/data/component/www, plus failing servers by path:
      /flaky/N/KEY/FILE  answers 503 to the first N requests for this exact
                         path, then serves FILE (KEY keeps steps apart, as
                         the counts live as long as the runner)."""
    flaky_counts = {}
    flaky_lock = threading.Lock()

    def log_message(self, *args):
        pass

    def do_GET(self):
        m = re.match(r"^/flaky/(\d+)/[^/]+(/.*)$", self.path)
        if m:
            with self.flaky_lock:
                seen = self.flaky_counts.get(self.path, 0)
                self.flaky_counts[self.path] = seen + 1
            if seen < int(m.group(1)):
                self.send_error(503, "Service Unavailable")
                return
            self.path = m.group(2)
        super().do_GET()


def start_http(root):
    handler = lambda *a, **kw: QuietHandler(*a, directory=root, **kw)
    server = socketserver.TCPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


S3_BUCKET = "kiln-test"
S3_ACCOUNT = "123456789012"


class S3Fixture:
    """tests/s3_fixture.py, started on first use and stopped at the end."""

    def __init__(self, script):
        self.script = script
        self.proc = None
        self.root = None
        self.port = None

    def endpoint(self):
        if self.proc is None:
            self.root = tempfile.mkdtemp(prefix="kiln-golden-s3-")
            self.proc = subprocess.Popen([sys.executable, self.script, "--root", self.root, "--port", "0",
                                          "--bucket", S3_BUCKET, "--account", S3_ACCOUNT],
                                         stdout=subprocess.PIPE, text=True)
            self.port = int(self.proc.stdout.readline().strip())
        return f"http://127.0.0.1:{self.port}"

    def stop(self):
        if self.proc:
            self.proc.terminate()
            self.proc.wait(timeout=30)
            shutil.rmtree(self.root, ignore_errors=True)


def kiln_environment(s3_endpoint):
    """kiln's environment: isolated from the machine's own AWS setup."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update({"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_REGION": "us-east-1",
                "AWS_CONFIG_FILE": "/dev/null", "AWS_SHARED_CREDENTIALS_FILE": "/dev/null"})
    if s3_endpoint:
        env["AWS_ENDPOINT_URL"] = s3_endpoint
    return env


def run_case(kiln, data, name, http_port, s3):
    src = os.path.join(data, "run", name + ".yml")
    expected_path = os.path.join(data, "run", name + ".expected.json")
    work = tempfile.mkdtemp(prefix="kiln-golden-")
    logs = tempfile.mkdtemp(prefix="kiln-golden-logs-")
    try:
        params = []
        wanted = declared_parameters(src)
        if "Work" in wanted:
            params.append(f"Work={work}")
        if "HttpBase" in wanted:
            params.append(f"HttpBase=http://127.0.0.1:{http_port}")
        s3_endpoint = None
        if "S3Bucket" in wanted:
            s3_endpoint = s3.endpoint()
            params.append(f"S3Bucket={S3_BUCKET}")
        extra_path = os.path.join(data, "run", name + ".params")
        if os.path.exists(extra_path):
            params += [l.strip() for l in open(extra_path) if l.strip()]
        cmd = [kiln, "component", "run", "--documents", src, "--log-directory", logs,
               "--execution-id", "golden-" + name, "--state-directory", os.path.join(logs, "state")]
        if params:
            cmd += ["--parameters", ",".join(params)]
        phases_path = os.path.join(data, "run", name + ".phases")
        if os.path.exists(phases_path):
            cmd += ["--phases", open(phases_path).read().strip()]
        # A run that stops for a reboot (status 194) is run again, as a user
        # would after rebooting, to resume it.
        statuses = []
        for _ in range(5):
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=work,
                                  env=kiln_environment(s3_endpoint))
            statuses.append(proc.returncode)
            if proc.returncode != 194:
                break
        runs = [d for d in os.listdir(logs) if d.startswith("TOE_")]
        if len(runs) != 1:
            return f"expected one TOE_ folder, found {runs}; stderr:\n{proc.stderr}"
        with open(os.path.join(logs, runs[0], "detailedoutput.json")) as f:
            detail = normalise(json.load(f), work, http_port, data)
        actual = dict(detail)
        actual["exitStatus"] = proc.returncode
        actual["exitStatuses"] = statuses
        if REGENERATE:
            with open(expected_path, "w") as f:
                exp = expectation_from(detail, proc.returncode)
                if len(statuses) > 1:
                    exp["exitStatuses"] = statuses
                json.dump(exp, f, indent=2, ensure_ascii=False)
                f.write("\n")
            return None
        if not os.path.exists(expected_path):
            return f"{expected_path} is missing (run with KILN_REGENERATE=1 and review it)"
        with open(expected_path) as f:
            expected = json.load(f)
        m = subset_mismatch(expected, actual)
        if m:
            return m + "\nstderr:\n" + proc.stderr[-3000:]
        return None
    finally:
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(logs, ignore_errors=True)


def validate_case(kiln, data, kind, name):
    src = os.path.join("tests", "data", "component", kind, name + ".yml")
    proc = subprocess.run([kiln, "validate", src], capture_output=True, text=True, timeout=60,
                          cwd=os.path.dirname(os.path.dirname(os.path.dirname(data))))
    if proc.returncode < 0:
        return f"kiln died with signal {-proc.returncode}"
    if kind == "valid":
        if proc.returncode != 0:
            return f"expected valid, got status {proc.returncode}: {proc.stderr}"
        return None
    err_path = os.path.join(data, kind, name + ".err")
    if proc.returncode != 1:
        return f"expected status 1, got {proc.returncode}: {proc.stderr}"
    if not re.match(r"^[^:\n]+:\d+:\d+: ", proc.stderr):
        return f"error does not start with FILE:LINE:COL: {proc.stderr!r}"
    if REGENERATE:
        with open(err_path, "w") as f:
            f.write(proc.stderr)
        return None
    if not os.path.exists(err_path):
        return f"{err_path} is missing (run with KILN_REGENERATE=1 and review it)"
    expected = open(err_path).read()
    if expected != proc.stderr:
        return f"stderr differs:\n  expected: {expected!r}\n  actual:   {proc.stderr!r}"
    return None


def main():
    kiln, data = os.path.abspath(sys.argv[1]), os.path.abspath(sys.argv[2])
    only = sys.argv[3] if len(sys.argv) > 3 else None
    cases = []
    for kind in ("invalid", "valid", "run"):
        folder = os.path.join(data, kind)
        for f in sorted(os.listdir(folder)):
            if f.endswith(".yml") and (only is None or only in f"{kind}/{f}"):
                cases.append((kind, f[:-4]))
    server = start_http(os.path.join(data, "www"))
    s3 = S3Fixture(os.path.join(os.path.dirname(os.path.abspath(__file__)), "s3_fixture.py"))
    port = server.server_address[1]
    print(f"TAP version 13\n1..{len(cases)}", flush=True)
    failures = 0
    for i, (kind, name) in enumerate(cases, 1):
        try:
            if kind == "run":
                problem = run_case(kiln, data, name, port, s3)
            else:
                problem = validate_case(kiln, data, kind, name)
        except subprocess.TimeoutExpired as e:
            problem = f"timed out: {e}"
        if problem:
            failures += 1
            print(f"not ok {i} - {kind}/{name}")
            for line in problem.splitlines():
                print(f"  # {line}")
        else:
            print(f"ok {i} - {kind}/{name}")
        sys.stdout.flush()
    server.shutdown()
    s3.stop()
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
