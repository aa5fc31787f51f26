#!/usr/bin/env python3
"""Golden tests for recipes and the build pipeline, without machines.

tests/data/recipe/NAME.yml: `kiln build --plan NAME.yml` must print
NAME.plan.json, or fail with NAME.err on stderr.

tests/data/build/NAME.yml: `kiln build --driver fake NAME.yml` runs the
whole pipeline on the fake driver, which writes every call it receives to a
transcript; NAME.transcript is the expected transcript and NAME.outcome the
expected result (exit status, files published).  NAME.env holds extra
environment (e.g. KILN_FAKE_FAIL=text makes commands containing text fail),
NAME.args extra arguments.

KILN_REGENERATE=1 rewrites the expectations from what kiln does now.
"""
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

REGENERATE = os.environ.get("KILN_REGENERATE") == "1"


def compare(path, actual):
    if REGENERATE:
        with open(path, "w") as f:
            f.write(actual)
        return None
    if not os.path.exists(path):
        return f"{path} is missing (run with KILN_REGENERATE=1 and review it)"
    expected = open(path).read()
    if expected != actual:
        import difflib
        diff = "".join(difflib.unified_diff(expected.splitlines(True), actual.splitlines(True), "expected", "actual"))
        return f"{os.path.basename(path)} differs:\n{diff}"
    return None


def plan_case(kiln, root, name):
    rel = os.path.join("tests", "data", "recipe", name + ".yml")
    proc = subprocess.run([kiln, "build", "--plan", rel], capture_output=True, text=True, cwd=root, timeout=60)
    base = os.path.join(root, "tests", "data", "recipe", name)
    if proc.returncode < 0:
        return f"kiln died with signal {-proc.returncode}"
    if proc.returncode == 0:
        if os.path.exists(base + ".err") and not REGENERATE:
            return f"expected failure, got a plan:\n{proc.stdout}"
        return compare(base + ".plan.json", proc.stdout)
    if os.path.exists(base + ".plan.json") and not REGENERATE:
        return f"expected a plan, got status {proc.returncode}: {proc.stderr}"
    return compare(base + ".err", proc.stderr)


def build_case(kiln, root, name):
    data = os.path.join(root, "tests", "data", "build")
    base = os.path.join(data, name)
    out = tempfile.mkdtemp(prefix="kiln-build-golden-")
    runtime = tempfile.mkdtemp(prefix="kiln-build-runtime-")
    try:
        transcript = os.path.join(out, "transcript")
        env = dict(os.environ, KILN_FAKE_TRANSCRIPT=transcript, KILN_RUNTIME_DIR=runtime)
        if os.path.exists(base + ".env"):
            for line in open(base + ".env"):
                if "=" in line:
                    k, v = line.rstrip("\n").split("=", 1)
                    env[k] = v
        args = open(base + ".args").read().split() if os.path.exists(base + ".args") else []
        output = os.path.join(out, "published")
        proc = subprocess.run([kiln, "build", "--driver", "fake", "--output", output, "--json"] + args +
                              [os.path.join("tests", "data", "build", name + ".yml")],
                              capture_output=True, text=True, cwd=root, timeout=120, env=env)
        if proc.returncode < 0:
            return f"kiln died with signal {-proc.returncode}: {proc.stderr}"
        published = sorted(f for f in os.listdir(output) if f != "logs") if os.path.isdir(output) else []
        leftovers = os.listdir(runtime)
        outcome = {"exitStatus": proc.returncode, "published": published, "runDirectoriesLeft": len(leftovers)}
        if proc.returncode == 0:
            manifest = json.loads(proc.stdout)
            outcome["manifest"] = {
                "name": manifest["name"], "version": manifest["version"], "driver": manifest["driver"],
                "format": manifest["output"]["format"], "compressed": manifest["output"]["compressed"],
                "components": [c["name"] for c in manifest["components"]],
                "stages": [(s["name"], s["status"]) for s in manifest["stages"]],
            }
        else:
            # The last line names the stage, component and step that failed.
            lines = [l for l in proc.stderr.splitlines() if l.startswith("kiln build: ") and "failed:" in l]
            error = lines[-1] if lines else proc.stderr[-500:]
            outcome["error"] = re.sub(r"\(logs: [^)]*\)", "(logs: @LOGS@)", error)
        text = open(transcript).read() if os.path.exists(transcript) else ""
        # Script names carry kiln's pid.
        text = re.sub(r"-\d+-(\d+)\.sh", r"-PID-\1.sh", text)
        problems = [compare(base + ".transcript", text),
                    compare(base + ".outcome", json.dumps(outcome, indent=2) + "\n")]
        problems = [p for p in problems if p]
        return "\n".join(problems) + ("\nstderr:\n" + proc.stderr[-2000:] if problems else "") if problems else None
    finally:
        shutil.rmtree(out, ignore_errors=True)
        shutil.rmtree(runtime, ignore_errors=True)


def main():
    kiln, root = os.path.abspath(sys.argv[1]), os.path.abspath(sys.argv[2])
    cases = []
    for kind in ("recipe", "build"):
        folder = os.path.join(root, "tests", "data", kind)
        for f in sorted(os.listdir(folder)):
            if f.endswith(".yml"):
                cases.append((kind, f[:-4]))
    print(f"TAP version 13\n1..{len(cases)}", flush=True)
    failures = 0
    for i, (kind, name) in enumerate(cases, 1):
        problem = plan_case(kiln, root, name) if kind == "recipe" else build_case(kiln, root, name)
        if problem:
            failures += 1
            print(f"not ok {i} - {kind}/{name}")
            for line in problem.splitlines():
                print(f"  # {line}")
        else:
            print(f"ok {i} - {kind}/{name}")
        sys.stdout.flush()
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
