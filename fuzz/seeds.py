#!/usr/bin/env python3
"""Seed corpora for the fuzz targets, made from tests/fixtures/ (nothing here is committed:
`make fuzz` and `make fuzz-smoke` run this first).

    fuzz/seeds.py OUT_DIR     # writes OUT_DIR/<target>/<name> for every target

* review:  every recorded AdmissionReview, as recorded and without managedFields and
           last-applied-configuration (smaller inputs mutate faster);
* objects: the recorded cluster objects one per file, as a `kind: List`, as multi-document
           YAML, the CRD, and a gracegate-target-groups ConfigMap;
* records: ConfigMap data for the recorded binding's target group, a record alone, a
           broken entry;
* timing:  the annotations of every recorded pod and namespace, with the deregistration delay
           the recorded Ingress gives, and malformed values;
* watcher: the recorded pods as the watcher sees them (scheduled, an IP, gates, conditions),
           alive and terminating, with the recorded objects and ELB answers.
"""

import copy
import json
import os
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
FIXTURES = os.path.join(ROOT, "tests", "fixtures")
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"


def load(*path):
    with open(os.path.join(FIXTURES, *path)) as f:
        return json.load(f)


def compact(obj):
    obj = copy.deepcopy(obj)
    meta = obj.get("metadata") or {}
    meta.pop("managedFields", None)
    (meta.get("annotations") or {}).pop(LAST_APPLIED, None)
    return obj


def write(out, target, name, content):
    d = os.path.join(out, target)
    os.makedirs(d, exist_ok=True)
    if not isinstance(content, (bytes, str)):
        content = json.dumps(content, indent=1)
    if isinstance(content, str):
        content = content.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(content)


def main(out):
    reviews = {
        n: load("admission", n) for n in sorted(os.listdir(os.path.join(FIXTURES, "admission")))
    }
    cluster = {
        n: load("cluster", n) for n in sorted(os.listdir(os.path.join(FIXTURES, "cluster")))
    }
    binding = cluster["targetgroupbinding.json"]
    arn = binding["spec"]["targetGroupARN"]
    ingress = cluster["ingress.json"]
    namespace = cluster["namespace.json"]

    # review
    for name, review in reviews.items():
        with open(os.path.join(FIXTURES, "admission", name), "rb") as f:
            write(out, "review", name, f.read())
        small = copy.deepcopy(review)
        small["request"]["object"] = compact(small["request"]["object"])
        small["request"].pop("oldObject", None)
        write(out, "review", "compact-" + name, json.dumps(small))

    # records
    record = {
        "targetGroupArn": arn,
        "facts": {
            "protocol": "HTTP",
            "loadBalancer": "application",
            "deregistrationDelaySeconds": 30,
            "healthCheck": {"intervalSeconds": 10, "healthyThresholdCount": 2},
        },
        "factsAt": "2026-11-26T12:00:00Z",
        "drains": [
            {"at": "2026-11-26T12:0%d:00Z" % i, "drainSeconds": 31.5 + i, "lagSeconds": 1.5}
            for i in range(6)
        ],
        "updatedAt": "2026-11-26T12:05:00Z",
    }
    key = arn.split(":targetgroup/")[1].replace("/", ".")
    data = {key: json.dumps(record)}
    write(out, "records", "configmap-data.json", data)
    write(out, "records", "record.json", record)
    write(out, "records", "broken.json", {key: json.dumps(record), "bad": "{not json"})
    nlb = dict(record, facts={"protocol": "TCP", "loadBalancer": "network"}, drains=[])
    write(out, "records", "nlb.json", {"nlb.1": json.dumps(nlb)})

    # objects
    for name, obj in cluster.items():
        write(out, "objects", name, obj)
        write(out, "objects", "compact-" + name, compact(obj))
    items = [compact(o) for o in cluster.values()]
    configmap = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "gracegate-target-groups", "namespace": "gracegate-system"},
        "data": data,
    }
    write(out, "objects", "list.json", {"apiVersion": "v1", "kind": "List", "items": items})
    write(out, "objects", "configmap.json", configmap)
    # JSON is YAML: one document each.
    write(out, "objects", "multi.yaml", "".join("---\n" + json.dumps(o) + "\n" for o in items))
    with open(os.path.join(FIXTURES, "crds", "elbv2.k8s.aws_targetgroupbindings.yaml")) as f:
        write(out, "objects", "crd.yaml", f.read())

    # timing
    delay = int(
        ingress["metadata"]["annotations"]["alb.ingress.kubernetes.io/target-group-attributes"]
        .split("=")[1]
    )
    ns_annotations = compact(namespace)["metadata"].get("annotations") or {}
    for name, review in reviews.items():
        pod = review["request"]["object"]
        annotations = compact(pod)["metadata"].get("annotations") or {}
        grace = (pod.get("spec") or {}).get("terminationGracePeriodSeconds")
        case = {
            "pod": annotations,
            "namespace": ns_annotations,
            "delay": [delay, "ingress"],
            "ownGrace": grace,
        }
        write(out, "timing", name, case)
    for i, (value, budget) in enumerate(
        [("abc", "-5"), ("99999", " 30 "), ("0", "3600"), ("121", "3601"), ("", "1e3")]
    ):
        case = {
            "settings": [40, 120, 30, 5],
            "pod": {"gracegate.io/prestop-seconds": value},
            "namespace": {
                "gracegate.io/prestop-seconds": "45",
                "gracegate.io/shutdown-budget-seconds": budget,
            },
            "delay": [300, "target group"],
            "measured": [130.5, 7],
            "unmeasuredNlbs": ["nlb-a", "nlb-b"],
            "ownGrace": 3600,
        }
        write(out, "timing", "malformed-%d.json" % i, case)

    # watcher
    node = {
        "metadata": {"name": "ip-10-0-1-1.ec2.internal"},
        "spec": {"providerID": "aws:///ap-northeast-1a/i-0123456789abcdef0"},
    }
    gate = "target-health.elbv2.k8s.aws/" + binding["metadata"]["name"]
    objects = {
        "services": [compact(cluster["service.json"])],
        "bindings": [compact(binding)],
        "ingresses": [compact(ingress)],
        "nodes": [node],
    }
    pods = []
    for i, (name, review) in enumerate(reviews.items()):
        pod = compact(review["request"]["object"])
        meta = pod["metadata"]
        meta["name"] = meta.get("name") or "pod-%d" % i
        meta["namespace"] = "game-2048"
        meta["uid"] = "uid-%d" % i
        meta["creationTimestamp"] = "2026-11-26T12:00:00Z"
        spec = pod.setdefault("spec", {})
        spec["nodeName"] = node["metadata"]["name"]
        gates = spec.setdefault("readinessGates", [])
        if not any(g["conditionType"] == gate for g in gates):
            gates.append({"conditionType": gate})
        pod["status"] = {
            "podIP": "10.0.1.%d" % (10 + i),
            "conditions": [
                {"type": gate, "status": "False", "reason": "Elb.InitialHealthChecking",
                 "lastTransitionTime": "2026-11-26T12:00:05Z"}
            ],
        }
        pods.append(pod)
        alive = dict(objects, pods=[pod], now="2026-11-26T12:00:30Z", gateTimeoutSeconds=600,
                     health=[{"state": "initial", "reason": "Elb.InitialHealthChecking"},
                             {"state": "healthy"}, None])
        write(out, "watcher", "alive-" + name, alive)
        gone = copy.deepcopy(pod)
        gone["metadata"]["deletionTimestamp"] = "2026-11-26T12:01:10Z"
        gone["metadata"]["deletionGracePeriodSeconds"] = 70
        terminating = dict(objects, pods=[gone], now="2026-11-26T12:00:30Z",
                           health=[{"state": "healthy"},
                                   {"state": "draining", "reason": "Target.DeregistrationInProgress"},
                                   {"state": "unused", "reason": "Target.NotRegistered"}, None])
        write(out, "watcher", "terminating-" + name, terminating)
    write(out, "watcher", "all.json", dict(objects, pods=pods, gateTimeoutSeconds=0,
                                           health=[{"state": "unhealthy", "reason": "Target.Timeout",
                                                    "description": "Request timed out"}]))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: fuzz/seeds.py OUT_DIR")
    main(sys.argv[1])
