"""Scrapes berth's /metrics and parses it with the Prometheus client library's OpenMetrics
parser (prometheus_client, PyPI), then checks that the pull-through cache and pull counters
moved and that every metric the shipped alert rules and dashboard use is exported.

    python3 metrics_check.py http://127.0.0.1:PORT DEPLOY_DIR UPSTREAM
"""
import json
import re
import sys
import urllib.request

from prometheus_client.openmetrics.parser import text_string_to_metric_families

url, deploy, upstream = sys.argv[1], sys.argv[2], sys.argv[3]
with urllib.request.urlopen(url + "/metrics") as r:
    ctype = r.headers["content-type"]
    text = r.read().decode()
assert ctype.startswith("application/openmetrics-text"), ctype

families = {f.name: f for f in text_string_to_metric_families(text)}
samples = {}
for f in families.values():
    for s in f.samples:
        key = s.name + json.dumps(dict(sorted(s.labels.items())), separators=(",", ":"))
        samples[key] = s.value


def value(name, **labels):
    return samples.get(name + json.dumps(dict(sorted(labels.items())), separators=(",", ":")), 0)


problems = []
for name, labels, minimum in [
    ("registry_proxy_cache_hits_total", {"upstream": upstream}, 1),
    ("registry_proxy_cache_misses_total", {"upstream": upstream}, 1),
    ("container_registry_pulls_total", {"status": "success"}, 1),
    ("registry_blobs", {}, 1),
    ("registry_storage_bytes", {}, 1),
    ("process_resident_memory_bytes", {}, 1),
]:
    if value(name, **labels) < minimum:
        problems.append(f"{name}{labels} = {value(name, **labels)}, expected >= {minimum}")
if families["registry_request_duration_seconds"].type != "histogram":
    problems.append("registry_request_duration_seconds is not a histogram")

# Every metric name in the rules and the dashboard must be one berth exports.
exported = set(families)
used = set()
sources = [open(f"{deploy}/prometheus/berth-rules.yml").read()]
dash = json.load(open(f"{deploy}/grafana/berth-dashboard.json"))
sources += [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
for src in sources:
    used |= set(re.findall(r"\b((?:registry|container_registry|upstream|process)_[a-z_]+)", src))
for name in sorted(used):
    base = re.sub(r"_(total|bucket|count|sum)$", "", name)
    if base not in exported and name not in exported:
        problems.append(f"{name} is used by deploy/ but not exported")

if problems:
    print("\n".join(problems))
    sys.exit(1)
print(f"{len(families)} metric families parsed; {len(used)} names used by deploy/ all exported")
