#!/usr/bin/env python3
"""Checks berth's Kubernetes manifests against the API schemas, offline.

Usage: validate.py [--rendered FILE] [DIR]

DIR (default: this file's directory) holds kustomization.yaml and the resources it lists.
Every resource listed must exist and every YAML file beside it must be listed. Then:

- built-in kinds are validated with kubernetes-validate (PyPI; it bundles the Kubernetes
  OpenAPI schemas) in strict mode (unknown fields are errors), against the oldest and the
  newest Kubernetes versions in KUBERNETES_VERSIONS;
- ServiceMonitor (monitoring.coreos.com/v1) is validated with the models generated from the
  prometheus-operator CRD's openAPIV3Schema (PyPI: cloudcoil.models.prometheus_operator),
  with unknown fields made errors too, as the API server's strict field validation does;
- the resources are checked against each other: the Service selects the pods, the
  ServiceMonitor selects the Service and names one of its ports, probes and targetPort name
  container ports, every volumeMount has a volume or claim template, the ConfigMap the pod
  mounts exists and holds the file the container's --config names, and the pod keeps the
  non-root, read-only, no-capability settings.

--rendered FILE validates a multi-document stream instead (e.g. `kubectl kustomize DIR`),
with the same schema and cross checks.

Prints one line per problem and exits 1 if there is any.
"""

import argparse
import inspect
import os
import sys

import yaml

KUBERNETES_VERSIONS = ["1.29.0", None]  # None: the newest kubernetes-validate bundles
CRD_KINDS = {("monitoring.coreos.com/v1", "ServiceMonitor")}

errors = []


def error(where, msg):
    errors.append(f"{where}: {msg}")


def name_of(doc):
    return f"{doc.get('kind')}/{(doc.get('metadata') or {}).get('name')}"


def load_dir(d):
    kpath = os.path.join(d, "kustomization.yaml")
    with open(kpath) as f:
        kust = yaml.safe_load(f)
    if kust.get("kind") != "Kustomization":
        error(kpath, "kind is not Kustomization")
    listed = kust.get("resources") or []
    present = sorted(
        f for f in os.listdir(d)
        if f.endswith((".yaml", ".yml")) and f != "kustomization.yaml"
    )
    for f in present:
        if f not in listed:
            error(kpath, f"{f} is not listed in resources")
    docs = []
    for f in listed:
        path = os.path.join(d, f)
        if not os.path.isfile(path):
            error(kpath, f"resource {f} does not exist")
            continue
        with open(path) as fh:
            for doc in yaml.safe_load_all(fh):
                if doc is not None:
                    docs.append((f, doc))
    return docs


def servicemonitor_model():
    """The ServiceMonitor model with unknown fields forbidden at every level."""
    import pydantic
    from cloudcoil import apimachinery
    from cloudcoil.models.prometheus_operator import v1

    classes = [
        c for mod in (v1, apimachinery) for c in vars(mod).values()
        if inspect.isclass(c) and issubclass(c, pydantic.BaseModel)
        and c.__module__ == mod.__name__
    ]
    for c in classes:
        c.model_config["extra"] = "forbid"
    for c in classes:
        c.model_rebuild(force=True)
    return v1.ServiceMonitor


def validate_schemas(docs):
    import kubernetes_validate

    versions = [v or kubernetes_validate.utils.latest_version() for v in KUBERNETES_VERSIONS]
    sm_model = None
    for src, doc in docs:
        where = f"{src} {name_of(doc)}"
        key = (doc.get("apiVersion"), doc.get("kind"))
        if key in CRD_KINDS:
            if sm_model is None:
                sm_model = servicemonitor_model()
            try:
                sm_model.model_validate(doc)
            except Exception as e:  # pydantic.ValidationError
                for line in str(e).splitlines()[1:]:
                    if not line.strip().startswith("For further information"):
                        error(where, line.strip())
            continue
        for v in versions:
            try:
                kubernetes_validate.validate(doc, v, strict=True)
            except kubernetes_validate.ValidationError as e:
                path = "/".join(str(p) for p in e.path)
                error(where, f"Kubernetes {v}: {path}: {e.message}")
            except kubernetes_validate.SchemaNotFoundError as e:
                error(where, f"Kubernetes {v}: no schema: {e}")
    print(f"schemas: {len(docs)} resources checked against Kubernetes "
          f"{', '.join(versions)} (strict) and the ServiceMonitor CRD models")


def matches(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def cross_check(docs):
    by_kind = {}
    for _, doc in docs:
        by_kind.setdefault(doc["kind"], []).append(doc)
    missing = False
    for kind in ("ConfigMap", "Service", "StatefulSet", "ServiceMonitor"):
        if len(by_kind.get(kind, [])) != 1:
            error("resources", f"expected one {kind}, found {len(by_kind.get(kind, []))}")
            missing = True
    if missing:
        return
    cm = by_kind["ConfigMap"][0]
    svc = by_kind["Service"][0]
    sts = by_kind["StatefulSet"][0]
    sm = by_kind["ServiceMonitor"][0]
    pod = sts["spec"]["template"]
    podspec = pod["spec"]
    where = name_of(sts)

    if not matches(sts["spec"]["selector"].get("matchLabels"), pod["metadata"]["labels"]):
        error(where, "selector does not match the pod template's labels")
    if sts["spec"].get("serviceName") != svc["metadata"]["name"]:
        error(where, f"serviceName is not the Service {svc['metadata']['name']}")
    if sts["spec"].get("replicas") != 1:
        error(where, "berth's data (SQLite, blobs) is served by one process: replicas must be 1")
    if not matches(svc["spec"].get("selector"), pod["metadata"]["labels"]):
        error(name_of(svc), "selector does not select the StatefulSet's pods")
    if not matches(sm["spec"]["selector"].get("matchLabels"), svc["metadata"].get("labels", {})):
        error(name_of(sm), "selector does not select the Service")

    containers = podspec["containers"]
    if len(containers) != 1:
        error(where, "expected one container")
        return
    c = containers[0]
    cports = {p.get("name"): p["containerPort"] for p in c.get("ports", [])}
    if cports.get("http") != 5000:
        error(where, "container port http is not 5000")
    svc_ports = {p.get("name"): p for p in svc["spec"]["ports"]}
    for p in svc_ports.values():
        if p.get("targetPort") not in cports and p.get("targetPort") not in cports.values():
            error(name_of(svc), f"targetPort {p.get('targetPort')} is no container port")
    if svc_ports.get("http", {}).get("port") != 5000:
        error(name_of(svc), "port http is not 5000")
    for ep in sm["spec"]["endpoints"]:
        if ep.get("port") not in svc_ports:
            error(name_of(sm), f"endpoint port {ep.get('port')} is not a Service port name")
        if ep.get("path") != "/metrics":
            error(name_of(sm), "endpoint path is not /metrics")

    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz"),
                        ("startupProbe", "/healthz")):
        get = (c.get(probe) or {}).get("httpGet")
        if not get:
            error(where, f"no {probe} httpGet")
            continue
        if get.get("path") != path:
            error(where, f"{probe} path is {get.get('path')}, not {path}")
        if get.get("port") not in cports and get.get("port") not in cports.values():
            error(where, f"{probe} port {get.get('port')} is no container port")

    volumes = {v["name"]: v for v in podspec.get("volumes", [])}
    claims = {t["metadata"]["name"] for t in sts["spec"].get("volumeClaimTemplates", [])}
    mounts = {m["mountPath"]: m for m in c.get("volumeMounts", [])}
    for m in mounts.values():
        if m["name"] not in volumes and m["name"] not in claims:
            error(where, f"volumeMount {m['name']} has no volume or claim template")
    data = mounts.get("/var/lib/berth")
    if not data or data["name"] not in claims:
        error(where, "/var/lib/berth is not mounted from a volumeClaimTemplate")

    # The file --config names is in the mounted ConfigMap, and says data_dir is the volume.
    args = c.get("args", [])
    if "--config" not in args:
        error(where, "the container's args have no --config")
        return
    config_path = args[args.index("--config") + 1]
    cfg_dir, cfg_file = os.path.split(config_path)
    cfg_mount = mounts.get(cfg_dir)
    cm_name = (volumes.get(cfg_mount["name"], {}).get("configMap") or {}).get("name") if cfg_mount else None
    if cm_name != cm["metadata"]["name"]:
        error(where, f"{cfg_dir} is not mounted from the ConfigMap {cm['metadata']['name']}")
    elif cfg_file not in cm.get("data", {}):
        error(name_of(cm), f"has no key {cfg_file}")
    else:
        cfg = yaml.safe_load(cm["data"][cfg_file])
        if cfg.get("data_dir") != "/var/lib/berth":
            error(name_of(cm), "data_dir is not /var/lib/berth (the volume)")
        if not str(cfg.get("addr", "0.0.0.0:5000")).endswith(":5000"):
            error(name_of(cm), "addr is not on port 5000 (the container port)")

    # The hardening this deployment promises.
    psc = podspec.get("securityContext", {})
    csc = c.get("securityContext", {})
    want = [
        (psc.get("runAsNonRoot") is True, "pod runAsNonRoot"),
        (psc.get("runAsUser") == 65532, "pod runAsUser 65532"),
        ((psc.get("seccompProfile") or {}).get("type") == "RuntimeDefault", "pod seccompProfile RuntimeDefault"),
        (csc.get("readOnlyRootFilesystem") is True, "container readOnlyRootFilesystem"),
        (csc.get("allowPrivilegeEscalation") is False, "container allowPrivilegeEscalation false"),
        ((csc.get("capabilities") or {}).get("drop") == ["ALL"], "container capabilities drop [ALL]"),
        (not (csc.get("capabilities") or {}).get("add"), "container adds no capability"),
        (podspec.get("terminationGracePeriodSeconds", 30) >= 35, "terminationGracePeriodSeconds covers the 30 s drain"),
    ]
    for ok, what in want:
        if not ok:
            error(where, f"missing: {what}")
    print("cross checks: selectors, ports, probes, volumes, config file, security context")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir", nargs="?", default=os.path.dirname(os.path.abspath(__file__)))
    ap.add_argument("--rendered", help="a multi-document YAML stream to check instead")
    a = ap.parse_args()
    if a.rendered:
        with open(a.rendered) as f:
            docs = [(a.rendered, d) for d in yaml.safe_load_all(f) if d is not None]
    else:
        docs = load_dir(a.dir)
    validate_schemas(docs)
    cross_check(docs)
    for e in errors:
        print("ERROR:", e)
    if errors:
        print(f"{len(errors)} problems")
        sys.exit(1)
    print(f"{len(docs)} resources valid")


if __name__ == "__main__":
    main()
