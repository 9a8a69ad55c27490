#!/usr/bin/env python3
"""Runs the test binaries `cargo test --lib --bins --tests` would run, in parallel lanes.

    scripts/test-lanes.py [--lanes N] [--artifacts FILE] [NAME ...] [-- TEST-ARGS ...]

Why: cargo runs test binaries one after another, and most end-to-end binaries spend
their time waiting on a control plane (docs/development.md, "How the suite runs").
Here N lanes (default 3, or BLASTGUARD_TEST_LANES) each take the next binary from one
queue, longest first (the durations of the last run, target/test-logs/durations.json,
else the figures below), so the long ones never end up last.

- The binaries: the test executables of FILE (the JSON lines of `cargo test --no-run
  --message-format=json...`), or of that build run here when FILE is not given.
  NAME ... keeps only those binaries (a test file's name: `e2e_node`, `soak`; `lib`
  and `bin-blastguard` for the crate's unit tests). TEST-ARGS go to every binary (a filter,
  `--nocapture`, ...), as after `cargo test ... --`.
- Each binary runs as cargo runs it: from the package's directory, with cargo's
  CARGO_MANIFEST_DIR and CARGO_PKG_* in its environment. Its output (stdout and stderr)
  goes to target/test-logs/NAME.log and is printed whole when it ends, so lanes never
  interleave.
- Every binary runs even when another failed (cargo's --no-fail-fast); the summary
  lists each one's result, lane and time, and the exit status is 1 if any failed.
- Binaries that share state on the machine never run beside each other: see
  EXCLUSIVE.
"""

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Binaries that must not run at the same time, by the state they share. One node runs
# per machine (scripts/control-plane.sh takes a machine-wide lock and refuses a second,
# and both tests compare the machine's iptables, mounts and links before and after).
#
# Timing-bound tests never run beside the suite's heaviest loads on the CPU,
# write_timeout (a server answering thousands of reviews per case) and soak (100
# reviews a second for two minutes), which may run beside each other:
# tests/fairness.rs bounds every real review's time (1 s) while it floods the server.

EXCLUSIVE = {
    "e2e_node": {"node"},
    "e2e_node_replicas": {"node"},
    "write_timeout": {"cpu-write-timeout"},
    "soak": {"cpu-soak"},
    "fairness": {"cpu-write-timeout", "cpu-soak"},
}

# Binaries that run alone, nothing beside them: tests/e2e_motion.rs's approved
# Namespace delete was denied (its spent-approval record not written within the
# decision's budget) in each of three parallel runs at load 10-17, and passed alone.
ALONE = {"e2e_motion"}

# Seconds each binary took on the 2-core machine, run alone (warm): the order for a
# first run, before target/test-logs/durations.json exists. Unlisted ones count 2 s,
# 30 s for an end-to-end test (a control plane's start and stop alone take ~15 s).
FIGURES = {
    "e2e_node": 140, "write_timeout": 132, "soak": 121, "e2e_node_replicas": 86,
    "e2e_cluster_state": 39, "e2e_gitops": 38, "e2e_forged": 34, "e2e_inbox": 32,
    "e2e_state_load": 29, "e2e_self_protection": 26, "e2e_digest_agreement": 23,
    "fairness": 22, "e2e_install": 21, "e2e_outage": 21, "e2e_motion": 17, "lib": 16,
    "e2e_exact_budget": 14, "e2e_identity": 13, "e2e_people": 13, "e2e_approver": 13,
    "e2e_approvals": 12, "connection_age": 11, "release": 11, "chart_render": 10,
    "client_auth": 9,
}

LOGS = ROOT / "target" / "test-logs"
DURATIONS = LOGS / "durations.json"


class Binary:
    """One test executable and what its run gave."""

    def __init__(self, artifact):
        target = artifact["target"]
        kind = target["kind"][0]
        # Integration tests by their file's name, the crate's unit tests as lib / bin.
        self.name = {"test": target["name"], "lib": "lib"}.get(kind, f"{kind}-{target['name']}")
        src = Path(target["src_path"])
        try:
            src = src.relative_to(ROOT)
        except ValueError:
            pass
        self.label = f"unittests {src}" if kind != "test" else str(src)
        self.path = artifact["executable"]
        self.manifest = artifact["manifest_path"]
        self.package = artifact["package_id"]
        self.locks = EXCLUSIVE.get(self.name, set())
        self.alone = self.name in ALONE
        self.expected = FIGURES.get(self.name, 30 if self.name.startswith("e2e_") else 2)
        self.lane = None
        self.started = None
        self.seconds = None
        self.status = None
        self.counts = (0, 0, 0)
        self.log = LOGS / f"{self.name}.log"

    def env(self):
        """cargo's environment for a test: the package's directory and version."""
        env = dict(os.environ)
        manifest_dir = str(Path(self.manifest).parent)
        env["CARGO_MANIFEST_DIR"] = manifest_dir
        env["CARGO_MANIFEST_PATH"] = self.manifest
        # package_id: "path+file:///dir#name@version" (or "#version" when the name
        # is the directory's).
        m = re.search(r"#(?:([^@]+)@)?([^@]+)$", self.package)
        if m:
            env["CARGO_PKG_NAME"] = m.group(1) or Path(manifest_dir).name
            env["CARGO_PKG_VERSION"] = m.group(2)
        return env, manifest_dir


def artifacts_of(lines):
    """The test executables among cargo's JSON messages, once each."""
    seen, binaries = set(), []
    for line in lines:
        line = line.strip()
        if not line.startswith("{"):
            continue
        msg = json.loads(line)
        if msg.get("reason") != "compiler-artifact" or not msg.get("executable"):
            continue
        if not msg["profile"]["test"] or msg["executable"] in seen:
            continue
        seen.add(msg["executable"])
        binaries.append(Binary(msg))
    return binaries


def build():
    """`cargo test --lib --bins --tests --no-run`: its JSON lines (diagnostics rendered
    on stderr as usual)."""
    cmd = [
        "cargo", "test", "--lib", "--bins", "--tests", "--no-run",
        "--message-format=json-render-diagnostics",
    ]
    out = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    if out.returncode != 0:
        sys.exit(f"test-lanes: {' '.join(cmd)} failed ({out.returncode})")
    return out.stdout.splitlines()


RESULT = re.compile(r"^test result: \w+\. (\d+) passed; (\d+) failed; (\d+) ignored")


def counts(text):
    """Passed, failed, ignored, summed over a binary's `test result:` lines."""
    total = [0, 0, 0]
    for line in text.splitlines():
        m = RESULT.match(line)
        if m:
            for i in range(3):
                total[i] += int(m.group(i + 1))
    return tuple(total)


class Runner:
    """The queue, the lanes that take from it, and the printing of what ends."""

    def __init__(self, binaries, lanes, args):
        self.queue = sorted(binaries, key=lambda b: -b.expected)
        self.binaries = list(self.queue)
        self.lanes = lanes
        self.args = args
        self.held = set()
        self.running = 0
        self.running_alone = False
        self.cond = threading.Condition()
        self.printing = threading.Lock()
        self.children = {}
        self.t0 = time.monotonic()
        self.busy = [0.0] * lanes

    def take(self):
        """The longest binary whose exclusive state is free; None when none is left.
        Waits while the only ones left wait for such state."""
        with self.cond:
            while True:
                if not self.queue:
                    return None
                for b in self.queue:
                    if self.running_alone or (b.alone and self.running):
                        continue
                    if not (b.locks & self.held):
                        self.queue.remove(b)
                        self.held |= b.locks
                        self.running += 1
                        self.running_alone = b.alone
                        return b
                self.cond.wait()

    def release(self, b):
        with self.cond:
            self.held -= b.locks
            self.running -= 1
            if b.alone:
                self.running_alone = False
            self.cond.notify_all()

    def say(self, text):
        with self.printing:
            sys.stdout.write(text)
            sys.stdout.flush()

    def lane(self, n):
        while True:
            b = self.take()
            if b is None:
                return
            try:
                self.run(n, b)
            finally:
                self.release(b)

    def run(self, n, b):
        b.lane = n + 1
        b.started = time.monotonic() - self.t0
        self.say(f"test-lanes: [lane {b.lane}, {b.started:6.1f}s] start {b.label}\n")
        env, cwd = b.env()
        with open(b.log, "wb") as log:
            child = subprocess.Popen(
                [b.path] + self.args, cwd=cwd, env=env,
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            )
            with self.cond:
                self.children[b.name] = child
            b.status = child.wait()
            with self.cond:
                self.children.pop(b.name, None)
        b.seconds = time.monotonic() - self.t0 - b.started
        self.busy[n] += b.seconds
        text = b.log.read_text(errors="replace")
        b.counts = counts(text)
        verdict = "ok" if b.status == 0 else f"FAILED (exit status {b.status})"
        self.say(
            f"\n===== {b.label} ({b.path}) =====\n{text}"
            f"===== {b.label}: {verdict} in {b.seconds:.1f}s, lane {b.lane} =====\n\n"
        )

    def stop(self, signum, _frame):
        """On INT or TERM: end the running binaries (their own watchdogs stop their
        control planes), then exit."""
        with self.cond:
            self.queue.clear()
            children = list(self.children.values())
        for child in children:
            child.send_signal(signum)
        sys.exit(128 + signum)

    def start(self):
        threads = [
            threading.Thread(target=self.lane, args=(n,), daemon=True)
            for n in range(self.lanes)
        ]
        for t in threads:
            t.start()
        for t in threads:
            while t.is_alive():
                t.join(0.5)
        return time.monotonic() - self.t0

    def summary(self, wall):
        lines = ["test-lanes: summary (longest first)"]
        for b in sorted(self.binaries, key=lambda b: -(b.seconds or 0)):
            verdict = "ok" if b.status == 0 else "FAILED"
            p, f, i = b.counts
            lines.append(
                f"  {verdict:6} {b.label:40} lane {b.lane}  start {b.started or 0:6.1f}s"
                f"  {b.seconds or 0:6.1f}s  {p} passed, {f} failed, {i} ignored"
            )
        total = [sum(b.counts[i] for b in self.binaries) for i in range(3)]
        failed = [b.label for b in self.binaries if b.status != 0]
        busy = ", ".join(f"lane {n + 1} {s:.0f}s" for n, s in enumerate(self.busy))
        lines.append(
            f"test-lanes: {len(self.binaries)} binaries in {wall:.0f}s on {self.lanes} lanes"
            f" ({busy}); {total[0]} passed, {total[1]} failed, {total[2]} ignored"
        )
        if failed:
            lines.append("test-lanes: FAILED: " + ", ".join(failed))
            lines.append(f"test-lanes: each binary's output is in {LOGS}/NAME.log")
        self.say("\n".join(lines) + "\n")
        return not failed


def main():
    argv = sys.argv[1:]
    args = []
    if "--" in argv:
        i = argv.index("--")
        argv, args = argv[:i], argv[i + 1:]
    lanes = int(os.environ.get("BLASTGUARD_TEST_LANES", "3"))
    artifacts = None
    names = []
    while argv:
        a = argv.pop(0)
        if a == "--lanes":
            lanes = int(argv.pop(0))
        elif a == "--artifacts":
            artifacts = argv.pop(0)
        elif a.startswith("-"):
            sys.exit(f"test-lanes: unknown option {a} (see the head of {__file__})")
        else:
            names.append(a)
    if lanes < 1:
        sys.exit("test-lanes: --lanes must be at least 1")

    lines = Path(artifacts).read_text().splitlines() if artifacts else build()
    binaries = artifacts_of(lines)
    if names:
        unknown = set(names) - {b.name for b in binaries}
        if unknown:
            sys.exit(f"test-lanes: no test binary {sorted(unknown)}")
        binaries = [b for b in binaries if b.name in names]
    if not binaries:
        sys.exit("test-lanes: cargo built no test binary")
    LOGS.mkdir(parents=True, exist_ok=True)
    try:
        last = json.loads(DURATIONS.read_text())
    except (OSError, ValueError):
        last = {}
    for b in binaries:
        b.expected = last.get(b.name, b.expected)

    runner = Runner(binaries, lanes, args)
    signal.signal(signal.SIGINT, runner.stop)
    signal.signal(signal.SIGTERM, runner.stop)
    wall = runner.start()
    ok = runner.summary(wall)
    # The order of the next run: this run's times (a filtered run updates its own).
    last.update({b.name: round(b.seconds, 1) for b in binaries if b.seconds})
    DURATIONS.write_text(json.dumps(last, indent=1, sort_keys=True) + "\n")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
