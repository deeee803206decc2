#!/usr/bin/env bash
# Garbage collection at scale, berth against Distribution (Debian's docker-registry 2.8) in
# one run. Both registries get the same content through the HTTP API: IMAGES images of a
# config and LAYERS layers each (all distinct: IMAGES * (LAYERS + 2) blobs with the
# manifests), then half the manifests are deleted. Then:
#
# - berth: `berth gc --dry-run` (its prediction), then `berth gc` beside the running server:
#   wall time, blobs and bytes removed, bytes freed on disk against the prediction; then a
#   quarter more deleted, and push and pull latency (p50, p99) of one client in PROBE_ROUNDS
#   alternating rounds: idle, beside a CPU burner at GC's priority (the control), and with
#   GC running back to back;
# - the peer: `docker-registry garbage-collect` (it needs the registry stopped or read-only):
#   wall time and bytes freed on disk.
#
#   bench/gc.sh            # IMAGES=10000 LAYERS=8: 100k blobs, 10k manifests; ~10 min
#
# Prints a Markdown table on stdout; progress on stderr.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
for v in $(compgen -e | grep '^BERTH_' || true); do unset "$v"; done
BERTH_BIN=${BENCH_BERTH_BIN:-$ROOT/target/release/berth}
IMAGES=${IMAGES:-10000}
LAYERS=${LAYERS:-8}
SIZE=${SIZE:-512}
PROBE_SECS=${PROBE_SECS:-10}
PROBE_ROUNDS=${PROBE_ROUNDS:-3}
LOAD=$ROOT/bench/gc_load.py

log() { printf '[gc %s] %s\n' "$(date +%T)" "$*" >&2; }
die() { log "FATAL: $*"; exit 1; }
for pkg_cmd in docker-registry:docker-registry curl:curl jq:jq; do
    if ! command -v "${pkg_cmd%%:*}" >/dev/null; then
        log "installing ${pkg_cmd#*:}"
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${pkg_cmd#*:}" >/dev/null
    fi
done
[[ -x $BERTH_BIN ]] || die "no berth binary at $BERTH_BIN"

WORK=$(mktemp -d /tmp/berth-gc-bench.XXXXXX)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    [ "${KEEP:-0}" = 1 ] && echo "kept $WORK" >&2 || rm -rf "$WORK"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
wait_up() { for _ in $(seq 1 100); do curl -fs "http://127.0.0.1:$1/v2/" >/dev/null && return 0; sleep 0.1; done; die "port $1 not up"; }
# Apparent bytes of every file under a directory.
bytes_in() { find "$1" -type f -printf '%s\n' | awk '{ s += $1 } END { print s + 0 }'; }
now() { date +%s.%N; }
secs() { echo "$2 - $1" | bc -l | xargs printf '%.2f'; }

B_PORT=$(free_port)
"$BERTH_BIN" serve --addr "127.0.0.1:$B_PORT" --data-dir "$WORK/berth" 2>"$WORK/berth.log" &
PIDS+=($!)
P_PORT=$(free_port)
cat >"$WORK/peer.yml" <<YML
version: 0.1
log: {level: error}
storage:
  filesystem: {rootdirectory: $WORK/peer}
  delete: {enabled: true}
http: {addr: 127.0.0.1:$P_PORT}
YML
env $(compgen -e | grep '^REGISTRY_' | sed 's/^/-u /') \
    docker-registry serve "$WORK/peer.yml" >"$WORK/peer.log" 2>&1 &
PEER_PID=$!
PIDS+=($PEER_PID)
wait_up "$B_PORT"
wait_up "$P_PORT"

for who in berth:$B_PORT peer:$P_PORT; do
    name=${who%%:*} port=${who#*:}
    log "$name: pushing $IMAGES images x $((LAYERS + 1)) blobs"
    t0=$(now)
    python3 "$LOAD" fill 127.0.0.1 "$port" "$IMAGES" "$LAYERS" "$SIZE" "$WORK/$name.json"
    log "$name: filled in $(secs "$t0" "$(now)") s; deleting half the manifests"
    python3 "$LOAD" delete 127.0.0.1 "$port" "$WORK/$name.json" 0 $((IMAGES / 2))
done
BLOBS_TOTAL=$(find "$WORK/berth/blobs" -type f | wc -l)

log "berth: dry run"
t0=$(now)
"$BERTH_BIN" gc --dry-run --grace 0s --data-dir "$WORK/berth" --json >"$WORK/plan.json"
DRY_SECS=$(secs "$t0" "$(now)")
BEFORE=$(bytes_in "$WORK/berth/blobs")
log "berth: GC (the server idle)"
t0=$(now)
"$BERTH_BIN" gc --grace 0s --data-dir "$WORK/berth" --json >"$WORK/gc.json"
GC_SECS=$(secs "$t0" "$(now)")
AFTER=$(bytes_in "$WORK/berth/blobs")
log "berth: GC again, nothing left to remove"
t0=$(now)
"$BERTH_BIN" gc --grace 0s --data-dir "$WORK/berth" --json >/dev/null
SCAN_SECS=$(secs "$t0" "$(now)")

# Latency, in PROBE_ROUNDS alternating rounds. Each round deletes its share of a quarter more
# of the images, then probes one client for PROBE_SECS three ways:
#   idle:    nothing else runs;
#   control: a shell loop burns one CPU at nice 10 (the priority `berth gc` takes), so
#            what any process using a CPU does to the tail on this machine shows apart;
#   gc:      `berth gc` runs back to back (the round's first run removes its share).
# Each way's CPU use is measured too: the control loop's and GC's, in CPUs busy.
cpu_of() { # seconds-of-wall command...: runs it, prints "user+sys CPU seconds"
    local TIMEFORMAT='%U %S'
    { time "$@" >/dev/null; } 2>&1 | awk '{printf "%.2f", $1 + $2}'
}
burn() { timeout "$1" nice -n 10 sh -c 'while :; do :; done' || true; }
gc_loop() {
    local end=$(($(date +%s) + $1))
    "$BERTH_BIN" gc --grace 1s --data-dir "$WORK/berth" --json >"$WORK/gc2-$2.json"
    while (($(date +%s) < end)); do
        "$BERTH_BIN" gc --grace 1s --data-dir "$WORK/berth" --json >/dev/null
    done
}
PER_ROUND=$((IMAGES / 4 / PROBE_ROUNDS))
declare -A CPU
for r in $(seq 1 "$PROBE_ROUNDS"); do
    from=$((IMAGES / 2 + (r - 1) * PER_ROUND))
    python3 "$LOAD" delete 127.0.0.1 "$B_PORT" "$WORK/berth.json" "$from" $((from + PER_ROUND))
    log "berth: round $r: probing idle, beside a CPU burner, beside GC (${PROBE_SECS}s each)"
    python3 "$LOAD" probe 127.0.0.1 "$B_PORT" "$PROBE_SECS" >"$WORK/probe-idle-$r.json"
    python3 "$LOAD" probe 127.0.0.1 "$B_PORT" "$PROBE_SECS" >"$WORK/probe-control-$r.json" &
    PROBE=$!
    CPU[control]+="$(cpu_of burn "$PROBE_SECS") "
    wait "$PROBE"
    python3 "$LOAD" probe 127.0.0.1 "$B_PORT" "$PROBE_SECS" >"$WORK/probe-gc-$r.json" &
    PROBE=$!
    CPU[gc]+="$(cpu_of gc_loop "$PROBE_SECS" "$r") "
    wait "$PROBE"
done

log "peer: garbage-collect (registry stopped, as it requires)"
kill "$PEER_PID"; wait "$PEER_PID" 2>/dev/null || true
P_BEFORE=$(bytes_in "$WORK/peer/docker/registry/v2/blobs")
t0=$(now)
env $(compgen -e | grep '^REGISTRY_' | sed 's/^/-u /') \
    docker-registry garbage-collect "$WORK/peer.yml" >"$WORK/peer-gc.log" 2>&1
P_SECS=$(secs "$t0" "$(now)")
P_AFTER=$(bytes_in "$WORK/peer/docker/registry/v2/blobs")

j() { jq -r "$1" "$2"; }
# "median (min-max)" of a field over the rounds' probe files of one way.
over_rounds() { # way jq-path
    local v
    v=$(for r in $(seq 1 "$PROBE_ROUNDS"); do j "$2" "$WORK/probe-$1-$r.json"; done | sort -g)
    awk -v n="$PROBE_ROUNDS" '{a[NR]=$1} END{m=(n%2 ? a[(n+1)/2] : (a[n/2]+a[n/2+1])/2);
        printf "%.2f (%.2f-%.2f)", m, a[1], a[n]}' <<<"$v"
}
cpus() { awk -v s="$PROBE_SECS" '{t=0; for (i=1;i<=NF;i++) t+=$i; printf "%.2f", t / NF / s}' <<<"$1"; }
cat <<MD
| measure | berth | docker-registry 2.8 |
| --- | --- | --- |
| content | $BLOBS_TOTAL blob files, $IMAGES manifests, half deleted | same pushes and deletes |
| GC wall time | $GC_SECS s (online; dry run $DRY_SECS s; a run with nothing to remove $SCAN_SECS s) | $P_SECS s (offline: registry stopped) |
| blobs removed | $(j .blobs "$WORK/gc.json") ($(j .manifests "$WORK/gc.json") manifests) | $(grep -c 'Deleting blob' "$WORK/peer-gc.log" || true) blob deletions logged |
| bytes predicted by the dry run | $(j .bytes "$WORK/plan.json") ($(j .blobs "$WORK/plan.json") blobs) | - |
| bytes freed on disk | $((BEFORE - AFTER)) | $((P_BEFORE - P_AFTER)) |
MD
cat <<MD

Latency of one client (push: POST and PUT of a 4 KiB blob; pull: a manifest and a blob GET),
ms, median of $PROBE_ROUNDS alternating rounds of ${PROBE_SECS} s each (min-max). Each GC round's
first run removed $(for r in $(seq 1 "$PROBE_ROUNDS"); do j .blobs "$WORK/gc2-$r.json"; done | paste -sd/) blobs.

| | idle | control: one CPU burnt at nice 10 | GC back to back (nice 10) |
| --- | --- | --- | --- |
| CPUs busy beside the server | 0 | $(cpus "${CPU[control]}") | $(cpus "${CPU[gc]}") |
| push p50 | $(over_rounds idle .push.p50) | $(over_rounds control .push.p50) | $(over_rounds gc .push.p50) |
| push p99 | $(over_rounds idle .push.p99) | $(over_rounds control .push.p99) | $(over_rounds gc .push.p99) |
| pull p50 | $(over_rounds idle .pull.p50) | $(over_rounds control .pull.p50) | $(over_rounds gc .pull.p50) |
| pull p99 | $(over_rounds idle .pull.p99) | $(over_rounds control .pull.p99) | $(over_rounds gc .pull.p99) |
MD
