#!/usr/bin/env python3
"""A tiny hostPath volume provisioner for the single-node test cluster (StatefulSet volumeClaimTemplates).
usage: pv-provisioner.py API_URL TOKEN CA_FILE DATA_DIR PROVISIONER_NAME
Every second: each Pending PVC without a volume whose StorageClass is ours (or that has no class) gets a
PV pre-bound to it (claimRef), backed by DATA_DIR/<ns>-<claim>-<uid> (mode 0777: pods run as any uid and
hostPath volumes ignore fsGroup). PVs of ours that become Released (claim deleted) are deleted with
their directory. It is also the class's external resizer: a bound claim asking for more than its
capacity gets its PV's capacity raised, then its own status.capacity (hostPath has no size to grow). Like dns-sync.py: only the API through urllib, no client library."""
import json, os, shutil, ssl, sys, time, urllib.error, urllib.request

api, token, ca, data_dir, provisioner = sys.argv[1:6]
ctx = ssl.create_default_context(cafile=ca)
ANN = "pv.kubernetes.io/provisioned-by"


def call(method, path, body=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(api + path, data=data, method=method, headers={
        "Authorization": "Bearer " + token, "Content-Type": "application/json"})
    return json.load(urllib.request.urlopen(req, context=ctx, timeout=5))


def patch(path, body):
    req = urllib.request.Request(api + path, data=json.dumps(body).encode(), method="PATCH", headers={
        "Authorization": "Bearer " + token, "Content-Type": "application/merge-patch+json"})
    return json.load(urllib.request.urlopen(req, context=ctx, timeout=5))


UNITS = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}


def qty(q):
    for u, m in UNITS.items():
        if q.endswith(u):
            return float(q[:-len(u)]) * m
    return float(q)


def log(*a):
    print("pv-provisioner:", *a, file=sys.stderr, flush=True)


def our_classes():
    out = set()
    for sc in call("GET", "/apis/storage.k8s.io/v1/storageclasses")["items"]:
        if sc.get("provisioner") == provisioner:
            out.add(sc["metadata"]["name"])
    return out


while True:
    try:
        classes = our_classes()
        pvs = call("GET", "/api/v1/persistentvolumes")["items"]
        claimed = {(pv["spec"].get("claimRef") or {}).get("uid") for pv in pvs}
        for pvc in call("GET", "/api/v1/persistentvolumeclaims")["items"]:
            m, spec = pvc["metadata"], pvc["spec"]
            cls = spec.get("storageClassName") or ""
            if spec.get("volumeName") or pvc.get("status", {}).get("phase") != "Pending":
                continue
            if cls and cls not in classes:
                continue
            if m["uid"] in claimed:
                continue
            path = os.path.join(data_dir, f"{m['namespace']}-{m['name']}-{m['uid'][:8]}")
            os.makedirs(path, exist_ok=True)
            os.chmod(path, 0o777)
            size = spec.get("resources", {}).get("requests", {}).get("storage", "1Gi")
            pv = {"apiVersion": "v1", "kind": "PersistentVolume",
                  "metadata": {"name": "pvc-" + m["uid"], "annotations": {ANN: provisioner}},
                  "spec": {"capacity": {"storage": size},
                           "accessModes": spec.get("accessModes") or ["ReadWriteOnce"],
                           "persistentVolumeReclaimPolicy": "Retain", "storageClassName": cls,
                           "volumeMode": spec.get("volumeMode") or "Filesystem",
                           "claimRef": {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "namespace": m["namespace"],
                                        "name": m["name"], "uid": m["uid"]},
                           "hostPath": {"path": path, "type": "DirectoryOrCreate"}}}
            call("POST", "/api/v1/persistentvolumes", pv)
            log("provisioned", pv["metadata"]["name"], "for", f"{m['namespace']}/{m['name']}", path)
        ours = {pv["metadata"]["name"]: pv for pv in pvs
                if pv["metadata"].get("annotations", {}).get(ANN) == provisioner}
        for pvc in call("GET", "/api/v1/persistentvolumeclaims")["items"]:
            m, spec, st = pvc["metadata"], pvc["spec"], pvc.get("status", {})
            pv = ours.get(spec.get("volumeName") or "")
            want = spec.get("resources", {}).get("requests", {}).get("storage")
            have = st.get("capacity", {}).get("storage")
            if pv is None or st.get("phase") != "Bound" or not want or not have or qty(want) <= qty(have):
                continue
            patch("/api/v1/persistentvolumes/" + pv["metadata"]["name"], {"spec": {"capacity": {"storage": want}}})
            patch(f"/api/v1/namespaces/{m['namespace']}/persistentvolumeclaims/{m['name']}/status",
                  {"status": {"capacity": {"storage": want}, "conditions": None}})
            log("resized", f"{m['namespace']}/{m['name']}", have, "->", want)
        for pv in pvs:
            if pv["metadata"].get("annotations", {}).get(ANN) != provisioner:
                continue
            if pv.get("status", {}).get("phase") in ("Released", "Failed"):
                call("DELETE", "/api/v1/persistentvolumes/" + pv["metadata"]["name"])
                path = pv["spec"].get("hostPath", {}).get("path", "")
                if path.startswith(data_dir.rstrip("/") + "/"):
                    shutil.rmtree(path, ignore_errors=True)
                log("deleted", pv["metadata"]["name"], path)
    except urllib.error.HTTPError as e:
        log(e, e.read()[:300])
    except Exception as e:  # the API may be starting or stopping: retry
        log(e)
    time.sleep(1)
