#!/usr/bin/env python3
"""Instructions per request of whole servers, under callgrind: what each setting costs.

CPU per request at fixed rates moves by ±0.2× between runs on a shared machine;
instruction counts do not. This runs each server under `valgrind --tool=callgrind`,
sends it N, N again and then 3N requests of one review with oha (1 connection, HTTP/2 or
HTTP/1.1, 100 requests/s) on a fresh connection each time, and reports (count of 3N
requests - count of N) / 2N: one request's user-space instructions, the server's setup
and the TLS handshake cancelled out. Kernel time (system calls, TCP) is not counted.

    python3 scripts/bench/server_instructions.py OUT_DIR   (after scripts/bench.sh, which
    built the servers and wrote OUT_DIR/corpus; default target/bench)

Servers: hyper-defaults; the baseline with rustls's and hyper's defaults put back one at
a time and both (`--default-tls`, `--default-http`); the baseline as benchmarked
(blastguard's TLS configuration and listener settings); blastguard on a person's change
and an AI change denied.
"""
import os
import re
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(__file__))
import run  # noqa: E402

N = 200


def dump_total(path):
    """The instructions counted in one callgrind dump."""
    with open(path) as f:
        for line in f:
            m = re.match(r"(?:summary|totals): (\d+)", line)
            if m:
                return int(m.group(1))
    raise SystemExit(f"{path}: no total")


def measure(args, name, cmd, pattern, review, proto, work):
    """(instructions of 3N requests - those of N) / 2N, each counted from a dump taken
    after its oha run (callgrind zeroes its counters at each dump). Each oha run opens
    one connection, so the difference holds no TLS handshake and no setup."""
    out = os.path.join(work, f"callgrind.{name}.{proto}")
    proc = subprocess.Popen(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"] + cmd,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        webhook = run.read_address(proc, pattern, name, time.monotonic() + 120)
        server = run.Server(name, proc, webhook)
        seen = set()
        counts = []
        for n in (N, N, 3 * N):
            oha = run.oha_cmd(args, server, review, proto, 1, 1) + ["-n", str(n), "-q", "100", server.url()]
            subprocess.run(oha, check=True, timeout=900, stdout=subprocess.DEVNULL)
            subprocess.run(["callgrind_control", "--dump", str(proc.pid)], check=True, capture_output=True,
                           timeout=120)
            new = []
            deadline = time.monotonic() + 60
            while not new and time.monotonic() < deadline:
                time.sleep(0.5)
                new = [f for f in os.listdir(work) if f.startswith(os.path.basename(out) + ".") and f not in seen]
            if len(new) != 1:
                raise SystemExit(f"{name}: expected one new dump, found {new}")
            seen.update(new)
            counts.append(dump_total(os.path.join(work, new[0])))
        return (counts[2] - counts[1]) / (2 * N)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


def main():
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(root, "target", "bench")
    release = os.path.join(root, "target", "release")
    corpus = os.path.join(out, "corpus")
    work = tempfile.mkdtemp(prefix="blastguard-cg-")
    ca, cert, key = run.make_cert(work)

    class Args:
        pass

    args = Args()
    args.oha = os.environ.get("OHA") or subprocess.run(["sh", "-c", "command -v oha || echo .tools/bin/oha"],
                                                       capture_output=True, text=True).stdout.strip()
    args.files = {"ca": ca}
    baseline = os.path.join(release, "examples", "baseline_server")
    addr = "127.0.0.1:0"
    bg = [os.path.join(release, "blastguard"), "serve", "--tls-cert", cert, "--tls-key", key,
          "--policy", os.path.join(corpus, "policy.yaml"), "--allowed-signers", os.path.join(corpus, "allowed_signers"),
          "--listen", addr, "--admin-listen", addr, "--state", "memory"]
    any_review = os.path.join(corpus, "person.json")
    servers = [
        ("hyper-defaults", [os.path.join(release, "examples", "hyper_defaults_server"), addr, cert, key], any_review),
        ("baseline --default-tls --default-http", [baseline, addr, cert, key, "--default-tls", "--default-http"],
         any_review),
        ("baseline --default-http", [baseline, addr, cert, key, "--default-http"], any_review),
        ("baseline --default-tls", [baseline, addr, cert, key, "--default-tls"], any_review),
        ("baseline", [baseline, addr, cert, key], any_review),
        ("baseline+scan", [baseline, addr, cert, key, "--scan"], any_review),
        ("blastguard, a person's change", bg, any_review),
        ("blastguard, AI change denied", bg, os.path.join(corpus, "ai-deny.json")),
    ]
    print("| server | HTTP/2 instructions/request | HTTP/1.1 instructions/request |")
    print("|---|---:|---:|")
    for name, cmd, review in servers:
        row = []
        for proto in ("h2", "h1"):
            slug = re.sub(r"[^a-z0-9]+", "-", name)
            row.append(measure(args, slug, cmd, r"listening on https://([^/\s]+)/", review, proto, work))
        print(f"| {name} | {row[0] / 1000:,.1f}k | {row[1] / 1000:,.1f}k |", flush=True)


if __name__ == "__main__":
    main()
