#!/usr/bin/env python3
"""Regenerates tests/fixtures/*.json: AdmissionReviews built from real kubectl output.

Stands in for the API server: kubectl makes the object (client-side dry run), this script
adds the defaults and metadata the API server adds before validating admission
(strategy, revisionHistoryLimit, pod defaults, uid, creationTimestamp, generation) and
wraps it as the API server wraps it (AdmissionReview v1, requestKind/requestResource,
userInfo, options). Run: python3 scripts/make-fixtures.py
"""
import copy
import json
import os
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "fixtures")

AI_AGENT = {"blastguard.io/ai-agent": "claude-code"}
AI_USER = {"username": "system:serviceaccount:ai-agents:claude", "uid": "9f2c1b7e-0000-4000-8000-00000000a1a1",
           "groups": ["system:serviceaccounts", "system:serviceaccounts:ai-agents", "system:authenticated"]}
PERSON = {"username": "alice@example.com", "groups": ["system:authenticated", "platform"]}
HPA = {"username": "system:serviceaccount:kube-system:horizontal-pod-autoscaler",
       "uid": "3c0a3c52-0000-4000-8000-00000000b2b2",
       "groups": ["system:serviceaccounts", "system:serviceaccounts:kube-system", "system:authenticated"]}


def kubectl(*args):
    return json.loads(subprocess.check_output(["kubectl", *args, "--dry-run=client", "-o", "json"]))


def default_pod_spec(spec):
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("securityContext", {})
    spec.setdefault("schedulerName", "default-scheduler")
    for c in spec.get("containers", []):
        c.setdefault("terminationMessagePath", "/dev/termination-log")
        c.setdefault("terminationMessagePolicy", "File")
        image = c.get("image", "")
        c.setdefault("imagePullPolicy", "Always" if ":" not in image or image.endswith(":latest") else "IfNotPresent")


def server_side(obj, uid, generation=1):
    """The object as the API server presents it to validating admission."""
    obj = copy.deepcopy(obj)
    meta = obj["metadata"]
    meta["uid"] = uid
    meta["creationTimestamp"] = "2026-11-22T09:00:00Z"
    meta["generation"] = generation
    meta.setdefault("annotations", {})
    meta["managedFields"] = [{"manager": "kubectl-client-side-apply", "operation": "Update",
                              "apiVersion": obj["apiVersion"], "time": "2026-11-22T09:00:00Z",
                              "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {}}}]
    obj.pop("status", None)
    obj["status"] = {}
    kind = obj["kind"]
    spec = obj.get("spec", {})
    if kind == "Deployment":
        if not spec.get("strategy"):
            spec["strategy"] = {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}}
        spec.setdefault("revisionHistoryLimit", 10)
        spec.setdefault("progressDeadlineSeconds", 600)
        default_pod_spec(spec["template"]["spec"])
    elif kind == "Job":
        spec.setdefault("parallelism", 1)
        spec.setdefault("completions", 1)
        spec.setdefault("backoffLimit", 6)
        spec.setdefault("completionMode", "NonIndexed")
        spec.setdefault("suspend", False)
        spec["template"]["spec"]["restartPolicy"] = spec["template"]["spec"].get("restartPolicy") or "Never"
        default_pod_spec(spec["template"]["spec"])
    elif kind == "CronJob":
        spec.setdefault("concurrencyPolicy", "Allow")
        spec.setdefault("suspend", False)
        spec.setdefault("successfulJobsHistoryLimit", 3)
        spec.setdefault("failedJobsHistoryLimit", 1)
        default_pod_spec(spec["jobTemplate"]["spec"]["template"]["spec"])
    if kind == "Namespace":
        obj["spec"] = {"finalizers": ["kubernetes"]}
        obj["status"] = {"phase": "Active"}
    return obj


def review(uid, op, gvk, resource, obj, old, user, namespace=None, name=None, sub=None, field_manager=None,
           dry_run=False):
    group, version, kind = gvk
    options_kind = {"CREATE": "CreateOptions", "UPDATE": "UpdateOptions", "DELETE": "DeleteOptions"}[op]
    options = {"kind": options_kind, "apiVersion": "meta.k8s.io/v1"}
    if field_manager:
        options["fieldManager"] = field_manager
    if op == "DELETE":
        options["propagationPolicy"] = "Background"
    req = {
        "uid": uid,
        "kind": {"group": group, "version": version, "kind": kind},
        "resource": {"group": resource[0], "version": resource[1], "resource": resource[2]},
        "requestKind": {"group": group, "version": version, "kind": kind},
        "requestResource": {"group": resource[0], "version": resource[1], "resource": resource[2]},
        "name": name if name is not None else (obj or old)["metadata"]["name"],
        "operation": op,
        "userInfo": user,
        "object": obj,
        "oldObject": old,
        "dryRun": dry_run,
        "options": options,
    }
    if namespace:
        req["namespace"] = namespace
    if sub:
        req["subResource"] = sub
        req["requestSubResource"] = sub
    return {"kind": "AdmissionReview", "apiVersion": "admission.k8s.io/v1", "request": req}


def scale(name, namespace, replicas, status_replicas, uid, rv):
    return {"kind": "Scale", "apiVersion": "autoscaling/v1",
            "metadata": {"name": name, "namespace": namespace, "uid": uid, "resourceVersion": rv,
                         "creationTimestamp": "2026-11-22T09:00:00Z"},
            "spec": {"replicas": replicas},
            "status": {"replicas": status_replicas, "selector": f"app={name}"}}


def main():
    os.makedirs(OUT, exist_ok=True)
    deploy_gvk, deploy_res = ("apps", "v1", "Deployment"), ("apps", "v1", "deployments")
    dep_uid = "b5e7f0a2-1c1d-4a55-9d3e-6f0c2a9e1001"

    api40 = server_side(kubectl("create", "deployment", "api", "--image=nginx:1.27", "--replicas=40", "-n", "prod"),
                        dep_uid)
    api40["metadata"]["annotations"].update(AI_AGENT)
    api5 = copy.deepcopy(api40)
    api5["spec"]["replicas"] = 5
    api5["metadata"]["namespace"] = "staging"
    api5_new_image = copy.deepcopy(api5)
    api5_new_image["spec"]["template"]["spec"]["containers"][0]["image"] = "nginx:1.28"
    api5_new_image["metadata"]["generation"] = 2
    stripped = copy.deepcopy(api5_new_image)
    del stripped["metadata"]["annotations"]["blastguard.io/ai-agent"]

    fixtures = {
        # An AI agent creates 40 replicas in a protected namespace: over maxPodsAffected 0.
        "deployment-create-ai-prod.json": review(
            "11111111-0000-4000-8000-000000000001", "CREATE", deploy_gvk, deploy_res, api40, None, PERSON,
            namespace="prod"),
        # A person updates the image of a 5-replica Deployment in staging: not AI, allowed.
        "deployment-update-image-person.json": review(
            "11111111-0000-4000-8000-000000000002", "UPDATE", deploy_gvk, deploy_res,
            json.loads(json.dumps(api5_new_image).replace('"claude-code"', '"false"')),
            json.loads(json.dumps(api5).replace('"claude-code"', '"false"')), PERSON, namespace="staging"),
        # The AI marker stripped on an image update of an AI-made Deployment: still AI (sticky).
        "deployment-update-strip-marker.json": review(
            "11111111-0000-4000-8000-000000000003", "UPDATE", deploy_gvk, deploy_res, stripped, api5, PERSON,
            namespace="staging"),
        # The HPA scales a Deployment from 5 to 30 through the scale subresource: not AI.
        "scale-by-hpa.json": review(
            "11111111-0000-4000-8000-000000000004", "UPDATE", ("autoscaling", "v1", "Scale"), deploy_res,
            scale("api", "staging", 30, 5, dep_uid, "1001"), scale("api", "staging", 5, 5, dep_uid, "1000"), HPA,
            namespace="staging", sub="scale"),
        # An AI agent's service account scales the same Deployment from 5 to 30: AI, 25 pods > 10.
        "scale-by-ai-identity.json": review(
            "11111111-0000-4000-8000-000000000005", "UPDATE", ("autoscaling", "v1", "Scale"), deploy_res,
            scale("api", "staging", 30, 5, dep_uid, "1001"), scale("api", "staging", 5, 5, dep_uid, "1000"), AI_USER,
            namespace="staging", sub="scale"),
        # An AI agent's service account deletes a 40-replica Deployment in prod.
        "delete-by-ai-identity.json": review(
            "11111111-0000-4000-8000-000000000006", "DELETE", deploy_gvk, deploy_res, None, api40, AI_USER,
            namespace="prod", name="api"),
        # An AI-annotated Namespace: cluster reach.
        "namespace-create-ai.json": review(
            "11111111-0000-4000-8000-000000000007", "CREATE", ("", "v1", "Namespace"), ("", "v1", "namespaces"),
            server_side({**kubectl("create", "namespace", "team-x"),
                         "metadata": {**kubectl("create", "namespace", "team-x")["metadata"],
                                      "annotations": dict(AI_AGENT)}}, "c0ffee00-0000-4000-8000-000000000007"),
            None, PERSON, namespace="team-x"),
        # A CronJob created through kubectl-ai's field manager.
        "cronjob-create-field-manager.json": review(
            "11111111-0000-4000-8000-000000000008", "CREATE", ("batch", "v1", "CronJob"), ("batch", "v1", "cronjobs"),
            server_side(kubectl("create", "cronjob", "report", "--image=busybox:1.36", "--schedule=*/5 * * * *",
                                "-n", "staging"), "c0ffee00-0000-4000-8000-000000000008"),
            None, PERSON, namespace="staging", field_manager="kubectl-ai-0.4"),
    }
    for name, body in fixtures.items():
        with open(os.path.join(OUT, name), "w") as f:
            json.dump(body, f, indent=2, sort_keys=False)
            f.write("\n")
        print("wrote", os.path.relpath(os.path.join(OUT, name), ROOT))


if __name__ == "__main__":
    main()
