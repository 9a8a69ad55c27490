#!/usr/bin/env python3
"""The benchmark's reviews: Deployment UPDATEs as the API server sends them.

Writes into OUT_DIR (python3 scripts/bench/corpus.py BLASTGUARD_BINARY OUT_DIR):

  person.json       a person (alice@example.com) changes the image of a 3-replica
                    Deployment in namespace shop: no AI marker, allowed (the fast path)
  ai-allow.json     an AI agent (annotation blastguard.io/ai-agent and its service
                    account) makes the same change: 3 pods replaced, within the default
                    rule, allowed
  ai-deny.json      the same AI change in the protected namespace prod: denied, with the
                    approval payload to sign in the message
  ai-approved.json  ai-deny.json carrying a valid approval for exactly that change,
                    signed by two approvers with ssh-keygen ed25519 keys: allowed
  ai-deny-3mib.json ai-deny.json grown to 3 MiB (each object about 1.5 MiB, etcd's
                    object limit), as a Deployment with very long env lists is
  allowed_signers   the two approvers' public keys
  policy.yaml       the embedded default policy with maxPodsPerChangeSet raised, so the
                    AI change stays allowed over thousands of repetitions from one
                    requester (the default, 50 pods per change set, would deny it after
                    16 requests: exactly what it is for, but then the benchmark would no
                    longer measure an allowed change)

The objects are built the way the API server presents them to validating admission
(compact JSON, Go struct field order, sorted maps): metadata with resourceVersion,
generation, the deployment.kubernetes.io/revision and
kubectl.kubernetes.io/last-applied-configuration annotations and managedFields
(kubectl-client-side-apply and kube-controller-manager's status entry, with their
FieldsV1 trees), the defaulted spec, and the status. The 12 KB ones get their size from
realistic content: two containers with env, probes, resources, volume mounts, which the
spec, the FieldsV1 tree and the last-applied annotation each repeat.
"""
import copy
import json
import os
import subprocess
import sys
import tempfile

TARGET_BYTES = 12 * 1024
LARGE_BYTES = 3 * 1024 * 1024

AI_MARKER = ("blastguard.io/ai-agent", "claude-code")
PERSON = {"username": "alice@example.com", "uid": "5b0e5c1e-0000-4000-8000-0000000a11ce",
          "groups": ["platform", "system:authenticated"]}
AI_USER = {"username": "system:serviceaccount:ai-agents:claude", "uid": "9f2c1b7e-0000-4000-8000-00000000a1a1",
           "groups": ["system:serviceaccounts", "system:serviceaccounts:ai-agents", "system:authenticated"]}
APPROVERS = ("alice@corp", "bob@corp")


def compact(value):
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def env_list(prefix, n):
    out = []
    for i in range(n):
        if i % 5 == 4:
            out.append({"name": f"{prefix}_SECRET_{i}",
                        "valueFrom": {"secretKeyRef": {"name": "checkout-secrets", "key": f"{prefix.lower()}-key-{i}"}}})
        else:
            out.append({"name": f"{prefix}_SETTING_{i}", "value": f"https://{prefix.lower()}-{i}.internal.example.com:8443/v1"})
    return out


def manifest(namespace, image, ai, env_count, approval=None):
    """The Deployment as its owner wrote it (what kubectl apply sends)."""
    annotations = {}
    if ai:
        annotations[AI_MARKER[0]] = AI_MARKER[1]
    if approval:
        annotations.update(approval)
    containers = [
        {"name": "checkout", "image": image,
         "ports": [{"name": "http", "containerPort": 8080}],
         "env": env_list("CHECKOUT", env_count),
         "resources": {"requests": {"cpu": "500m", "memory": "512Mi"}, "limits": {"memory": "1Gi"}},
         "volumeMounts": [{"name": "config", "mountPath": "/etc/checkout", "readOnly": True}],
         "readinessProbe": {"httpGet": {"path": "/readyz", "port": 8080}, "periodSeconds": 5}},
    ]
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "checkout", "namespace": namespace, "annotations": annotations,
                     "labels": {"app.kubernetes.io/name": "checkout", "app.kubernetes.io/part-of": "shop",
                                "team": "payments"}},
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": {"app.kubernetes.io/name": "checkout"}},
            "template": {
                "metadata": {"labels": {"app.kubernetes.io/name": "checkout", "app.kubernetes.io/part-of": "shop"}},
                "spec": {"serviceAccountName": "checkout", "containers": containers,
                         "volumes": [{"name": "config", "configMap": {"name": "checkout-config"}}]}}}}


# Go struct field order of the types involved, for the API server's serialization.
ORDER = {
    "container": ["name", "image", "command", "args", "workingDir", "ports", "envFrom", "env", "resources",
                  "volumeMounts", "livenessProbe", "readinessProbe", "startupProbe", "terminationMessagePath",
                  "terminationMessagePolicy", "imagePullPolicy", "securityContext"],
    "podspec": ["volumes", "containers", "restartPolicy", "terminationGracePeriodSeconds", "dnsPolicy",
                "serviceAccountName", "serviceAccount", "securityContext", "schedulerName"],
    "probe": ["httpGet", "timeoutSeconds", "periodSeconds", "successThreshold", "failureThreshold"],
    "port": ["name", "containerPort", "protocol"],
}


def ordered(d, keys):
    return {k: d[k] for k in keys if k in d} | {k: v for k, v in d.items() if k not in keys}


def sorted_map(d):
    return {k: d[k] for k in sorted(d)}


def defaulted(obj):
    """The object after the API server's defaulting, in its serialization order."""
    obj = copy.deepcopy(obj)
    spec = obj["spec"]
    pod = spec["template"]["spec"]
    for c in pod["containers"]:
        c["ports"] = [ordered({**p, "protocol": "TCP"}, ORDER["port"]) for p in c.get("ports", [])]
        for probe in ("livenessProbe", "readinessProbe"):
            if probe in c:
                c[probe]["httpGet"] = {**c[probe]["httpGet"], "scheme": "HTTP"}
                c[probe] = ordered({"timeoutSeconds": 1, "successThreshold": 1, "failureThreshold": 3, **c[probe]},
                                   ORDER["probe"])
        c.update({"terminationMessagePath": "/dev/termination-log", "terminationMessagePolicy": "File",
                  "imagePullPolicy": "IfNotPresent"})
    for v in pod["volumes"]:
        if "configMap" in v:
            v["configMap"]["defaultMode"] = 420
    pod["containers"] = [ordered(c, ORDER["container"]) for c in pod["containers"]]
    pod.update({"restartPolicy": "Always", "terminationGracePeriodSeconds": 30, "dnsPolicy": "ClusterFirst",
                "serviceAccount": pod["serviceAccountName"], "securityContext": {},
                "schedulerName": "default-scheduler"})
    spec["template"]["spec"] = ordered(pod, ORDER["podspec"])
    spec["template"]["metadata"] = {"creationTimestamp": None,
                                    "labels": sorted_map(spec["template"]["metadata"]["labels"])}
    spec["strategy"] = {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}}
    spec["revisionHistoryLimit"] = 10
    spec["progressDeadlineSeconds"] = 600
    return obj


# How the API server keys list items in FieldsV1.
LIST_KEYS = {"containers": ("name",), "env": ("name",), "ports": ("containerPort", "protocol"),
             "volumeMounts": ("mountPath",), "volumes": ("name",), "conditions": ("type",)}


def fields(value, key=None):
    """The FieldsV1 tree of a value, as server-side field tracking records it."""
    if isinstance(value, dict):
        return {f"f:{k}": fields(v, k) for k, v in value.items()}
    if isinstance(value, list) and key in LIST_KEYS:
        out = {}
        for item in value:
            ident = {k: item[k] for k in LIST_KEYS[key] if k in item}
            out[f"k:{compact(ident)}"] = {".": {}, **fields(item)}
        return out
    return {}


def server_object(applied, generation, revision, resource_version):
    """The object the API server holds after `kubectl apply` of `applied`."""
    obj = defaulted(applied)
    last_applied = compact(applied) + "\n"
    annotations = sorted_map({**applied["metadata"]["annotations"],
                              "deployment.kubernetes.io/revision": str(revision),
                              "kubectl.kubernetes.io/last-applied-configuration": last_applied})
    user_meta = {"annotations": {".": {}, **{f"f:{k}": {} for k in sorted(applied["metadata"]["annotations"])},
                                 "f:kubectl.kubernetes.io/last-applied-configuration": {}},
                 "labels": {".": {}, **{f"f:{k}": {} for k in sorted(applied["metadata"]["labels"])}}}
    spec_fields = fields(obj["spec"])
    status = {"observedGeneration": generation - 1, "replicas": 3, "updatedReplicas": 3, "readyReplicas": 3,
              "availableReplicas": 3,
              "conditions": [
                  {"type": "Available", "status": "True", "lastUpdateTime": "2026-11-20T08:12:41Z",
                   "lastTransitionTime": "2026-11-20T08:12:41Z", "reason": "MinimumReplicasAvailable",
                   "message": "Deployment has minimum availability."},
                  {"type": "Progressing", "status": "True", "lastUpdateTime": "2026-11-22T09:03:10Z",
                   "lastTransitionTime": "2026-11-18T14:00:02Z", "reason": "NewReplicaSetAvailable",
                   "message": 'ReplicaSet "checkout-6d9c7b8f5d" has successfully progressed.'}]}
    managed = [
        {"manager": "kubectl-client-side-apply", "operation": "Update", "apiVersion": "apps/v1",
         "time": "2026-11-22T09:00:00Z", "fieldsType": "FieldsV1",
         "fieldsV1": {"f:metadata": {"f:annotations": user_meta["annotations"], "f:labels": user_meta["labels"]},
                      "f:spec": spec_fields}},
        {"manager": "kube-controller-manager", "operation": "Update", "apiVersion": "apps/v1",
         "time": "2026-11-22T09:03:10Z", "fieldsType": "FieldsV1",
         "fieldsV1": {"f:metadata": {"f:annotations": {"f:deployment.kubernetes.io/revision": {}}},
                      "f:status": fields(status)},
         "subresource": "status"},
    ]
    meta = {"name": applied["metadata"]["name"], "namespace": applied["metadata"]["namespace"],
            "uid": "b5e7f0a2-1c1d-4a55-9d3e-6f0c2a9e1001", "resourceVersion": str(resource_version),
            "generation": generation, "creationTimestamp": "2026-11-18T14:00:00Z",
            "labels": sorted_map(applied["metadata"]["labels"]), "annotations": annotations,
            "managedFields": managed}
    return {"kind": "Deployment", "apiVersion": "apps/v1", "metadata": meta, "spec": obj["spec"], "status": status}


def review(uid, user, new, old):
    ns = new["metadata"]["namespace"]
    return {"kind": "AdmissionReview", "apiVersion": "admission.k8s.io/v1", "request": {
        "uid": uid,
        "kind": {"group": "apps", "version": "v1", "kind": "Deployment"},
        "resource": {"group": "apps", "version": "v1", "resource": "deployments"},
        "requestKind": {"group": "apps", "version": "v1", "kind": "Deployment"},
        "requestResource": {"group": "apps", "version": "v1", "resource": "deployments"},
        "name": new["metadata"]["name"], "namespace": ns, "operation": "UPDATE", "userInfo": user,
        "object": new, "oldObject": old, "dryRun": False,
        "options": {"kind": "PatchOptions", "apiVersion": "meta.k8s.io/v1",
                    "fieldManager": "kubectl-client-side-apply"}}}


def update(uid, user, namespace, ai, env_count, approval=None):
    """A review of `kubectl apply` changing the checkout image from 2.14.0 to 2.15.0."""
    old = server_object(manifest(namespace, "registry.example.com/shop/checkout:2.14.0", ai, env_count), 7, 7,
                        48211907)
    new = server_object(manifest(namespace, "registry.example.com/shop/checkout:2.15.0", ai, env_count, approval),
                        8, 7, 48211907)
    return review(uid, user, new, old)


def size(body):
    return len(compact(body).encode())


def env_count_for(target, make):
    """The smallest env count whose review is at least `target` bytes."""
    n = 1
    while size(make(n * 2)) < target:
        n *= 2
    lo, hi = n, n * 2
    while lo < hi:
        mid = (lo + hi) // 2
        if size(make(mid)) < target:
            lo = mid + 1
        else:
            hi = mid
    return lo


def keygen(path):
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", os.path.basename(path), "-f", path],
                   check=True)


def approval_for(binary, unsigned_review, keys):
    """The payload `blastguard digest` builds for the review, signed with each key."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "review.json")
        with open(path, "w") as f:
            f.write(compact(unsigned_review))
        payload = subprocess.run([binary, "digest", "--review", "-f", path, "--ttl", "12h",
                                  "--reason", "bench: CHG-4711 canary passed"],
                                 check=True, capture_output=True, text=True).stdout.strip()
        json.loads(payload)
        payload_file = os.path.join(tmp, "payload.json")
        with open(payload_file, "w") as f:
            f.write(payload)
        signatures = ""
        for key in keys:
            subprocess.run(["ssh-keygen", "-q", "-Y", "sign", "-n", "approval@blastguard.io", "-f", key, payload_file],
                           check=True, capture_output=True)
            with open(payload_file + ".sig") as f:
                signatures += f.read()
            os.remove(payload_file + ".sig")
    return {"blastguard.io/approval": payload, "blastguard.io/approval-signature": signatures}


def main():
    binary, out = sys.argv[1], sys.argv[2]
    os.makedirs(out, exist_ok=True)
    keys = []
    for who in APPROVERS:
        key = os.path.join(out, who.split("@")[0])
        for f in (key, key + ".pub"):
            if os.path.exists(f):
                os.remove(f)
        keygen(key)
        keys.append(key)
    with open(os.path.join(out, "allowed_signers"), "w") as f:
        for who, key in zip(APPROVERS, keys):
            with open(key + ".pub") as pub:
                f.write(f'{who} namespaces="approval@blastguard.io" {pub.read().strip()}\n')

    policy = subprocess.run([binary, "policy", "default"], check=True, capture_output=True, text=True).stdout
    raised = policy.replace("maxPodsPerChangeSet: 50", "maxPodsPerChangeSet: 1000000000")
    if raised == policy:
        sys.exit("corpus: the default policy has no 'maxPodsPerChangeSet: 50' line to raise")
    with open(os.path.join(out, "policy.yaml"), "w") as f:
        f.write(raised)

    # One env count for all four, so they differ only in what the engine reads.
    n = env_count_for(TARGET_BYTES, lambda n: update("u", AI_USER, "prod", True, n))
    kinds = {
        "person": update("5c0d9f3e-8a41-4f7e-9b1d-000000000001", PERSON, "shop", False, n),
        "ai-allow": update("5c0d9f3e-8a41-4f7e-9b1d-000000000002", AI_USER, "shop", True, n),
        "ai-deny": update("5c0d9f3e-8a41-4f7e-9b1d-000000000003", AI_USER, "prod", True, n),
    }
    approval = approval_for(binary, kinds["ai-deny"], keys)
    kinds["ai-approved"] = update("5c0d9f3e-8a41-4f7e-9b1d-000000000004", AI_USER, "prod", True, n, approval)
    large_n = env_count_for(LARGE_BYTES, lambda n: update("u", AI_USER, "prod", True, n))
    kinds["ai-deny-3mib"] = update("5c0d9f3e-8a41-4f7e-9b1d-000000000005", AI_USER, "prod", True, large_n)
    for name, body in kinds.items():
        with open(os.path.join(out, name + ".json"), "w") as f:
            f.write(compact(body))
        print(f"corpus: {name}.json {size(body)} bytes")


if __name__ == "__main__":
    main()
