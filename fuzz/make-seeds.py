#!/usr/bin/env python3
"""Writes the starting corpus of every fuzz target into fuzz/seeds/<target>/.

The seeds are real inputs: the AdmissionReview fixtures of tests/fixtures (as the
API server sends them), the same reviews carrying an approval signed by a fresh
ed25519 key with `blastguard approve`, that key's allowed_signers line, the signed
payloads and armoured signatures on their own, and the embedded and documented
policies. The key is made for this run and thrown away; only its public half is
kept, in seeds/allowed_signers/fuzz-approver, which the review harness trusts
(fuzz/harness.rs), so the fuzzer starts from approvals that verify.

Usage: fuzz/make-seeds.py [path/to/blastguard]   (default: target/debug/blastguard)
"""

import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile

import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
SEEDS = ROOT / "fuzz" / "seeds"
BLASTGUARD = sys.argv[1] if len(sys.argv) > 1 else str(ROOT / "target" / "debug" / "blastguard")


def write(target, name, data):
    d = SEEDS / target
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_bytes(data if isinstance(data, bytes) else data.encode())


def main():
    if SEEDS.exists():
        shutil.rmtree(SEEDS)
    tmp = pathlib.Path(tempfile.mkdtemp())
    key = tmp / "approver"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "fuzz-approver", "-f", str(key)],
        check=True,
    )
    public = (tmp / "approver.pub").read_text().strip()
    signers = f"fuzz@blastguard.example {public}\n"
    write("allowed_signers", "fuzz-approver", signers)
    write(
        "allowed_signers",
        "options",
        'alice@corp.example,*@ops.example namespaces="approval@blastguard.io",'
        f'valid-after="20260101",valid-before="20300101Z" {public}\n'
        f"# a comment\n\n!mallory@corp.example cert-authority {public}\n",
    )

    for fixture in sorted((ROOT / "tests" / "fixtures").glob("*.json")):
        write("review", fixture.name, fixture.read_bytes())
        review = json.loads(fixture.read_text())
        request = review["request"]
        where = "oldObject" if request["operation"] == "DELETE" else "object"
        if not request.get(where):
            continue
        out = subprocess.run(
            [BLASTGUARD, "approve", "--review", "-f", str(fixture), "--key", str(key),
             "--ttl", "24h", "--reason", "fuzz seed"],
            capture_output=True, text=True,
        )
        if out.returncode != 0:
            continue
        annotations = yaml.safe_load(out.stdout)
        request[where]["metadata"].setdefault("annotations", {}).update(annotations)
        write("review", "signed-" + fixture.name, json.dumps(review, indent=1))
        payload = annotations["blastguard.io/approval"]
        signature = annotations["blastguard.io/approval-signature"]
        write("approval_payload", fixture.stem, payload)
        write("sshsig", fixture.stem, signature)
        write("sshsig", "two-" + fixture.stem, signature + "\n" + signature)

    for name, text in [
        ("garbage", b"\x00\xff{"),
        ("not-review", b'{"kind":"Pod","apiVersion":"v1"}'),
        ("no-request", b'{"kind":"AdmissionReview","apiVersion":"admission.k8s.io/v1"}'),
        ("uid-only", b'{"request":{"uid":"1"}}'),
    ]:
        write("review", name, text)

    write("policy", "default.yaml", (ROOT / "src" / "policy" / "default.yaml").read_bytes())
    default = yaml.safe_load((ROOT / "src" / "policy" / "default.yaml").read_text())
    write("policy", "default.json", json.dumps(default))
    write("policy", "default-flow.yaml", yaml.safe_dump(default, default_flow_style=True))
    for doc in sorted((ROOT / "docs").glob("*.md")):
        # Every ```yaml block of the docs that is a policy.
        blocks = doc.read_text().split("```yaml\n")[1:]
        for i, block in enumerate(blocks):
            body = block.split("```", 1)[0]
            if "BlastRadiusPolicy" in body:
                write("policy", f"{doc.stem}-{i}.yaml", body)
    shutil.rmtree(tmp)
    for d in sorted(SEEDS.iterdir()):
        print(f"{d.name}: {len(list(d.iterdir()))} seeds")


if __name__ == "__main__":
    main()
