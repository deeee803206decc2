#!/usr/bin/env bash
# Checks deploy/ with promtool (Debian's `prometheus` package): the alert rules parse and
# their unit tests pass, and every PromQL expression of the Grafana dashboard parses.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
if ! command -v promtool >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi
promtool check rules "$HERE/prometheus/berth-rules.yml"
(cd "$HERE/prometheus" && promtool test rules berth-rules.test.yml)
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
# The dashboard's expressions as recording rules, with Grafana's variables given values.
python3 - "$HERE/grafana/berth-dashboard.json" >"$W/dashboard-rules.yml" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
exprs = [t["expr"] for p in d["panels"] for t in p.get("targets", [])]
assert len(exprs) >= 20, f"only {len(exprs)} expressions"
print("groups:\n  - name: dashboard\n    rules:")
for i, e in enumerate(exprs):
    e = (e.replace("$__rate_interval", "5m").replace('"$instance"', '".*"')
          .replace('"$job"', '"berth"'))
    assert "$" not in e, e
    print(f"      - record: berth:dashboard:{i}\n        expr: {json.dumps(e)}")
PY
promtool check rules "$W/dashboard-rules.yml"
echo "deploy/: rules, rule tests and dashboard expressions pass promtool"
