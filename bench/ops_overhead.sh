#!/usr/bin/env bash
# What operations cost: berth with metrics, the audit log and rate limiting all on (a rate
# limit high enough never to refuse, so every request is checked and counted) against berth
# with all three off, berth with metrics and rate limits but no audit log (to tell the
# audit log's share), and Distribution (Debian's docker-registry) for reference. One run,
# same machine, loopback only; the servers are up together and loaded one at a time, rounds
# alternating between them (median reported).
#
#   bench/ops_overhead.sh           # ~4 min
#
# Measurements:
#   manifest GET by tag: wrk -t2 -cCONNS for LOAD_SECS s (req/s, p99), and the server's own
#     CPU time per request (utime+stime from /proc, which does not depend on how the load
#     generator sharing the 2 CPUs is scheduled);
#   pull throughput: GET of a BLOB_MB MiB blob with curl to /dev/null (MB/s);
#   the floor under the audit log: SQLite's own CPU time per audit row (the sqlite3 shell
#     inserting 100 transactions of 2048 pull-like rows into berth's audit_log schema, WAL,
#     synchronous=FULL, as berth's writer does), with no berth code in the path.
# Prints a Markdown table on stdout (and into BENCH_OUT if set); progress on stderr.
#
#   BENCH_BERTH_BIN  berth binary                    (default target/release/berth; no build)
#   LOAD_SECS        wrk duration per run             (default 10)
#   CONNS            wrk connections                  (default 64)
#   ROUNDS           runs per server, median reported (default 3)
#   BLOB_MB          size of the pulled blob, MiB     (default 512)
# (BERTH_* variables are dropped: berth reads them all as configuration.)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
for v in $(compgen -e | grep '^BERTH_' || true); do unset "$v"; done
BERTH_BIN=${BENCH_BERTH_BIN:-$ROOT/target/release/berth}
LOAD_SECS=${LOAD_SECS:-10}
CONNS=${CONNS:-64}
ROUNDS=${ROUNDS:-3}
BLOB_MB=${BLOB_MB:-512}
REPO=team/bench

log() { printf '[ops-overhead %s] %s\n' "$(date +%T)" "$*" >&2; }
die() { log "FATAL: $*"; exit 1; }

for pkg_cmd in wrk:wrk curl:curl docker-registry:docker-registry sqlite3:sqlite3; do
    if ! command -v "${pkg_cmd%%:*}" >/dev/null; then
        log "installing ${pkg_cmd#*:}"
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${pkg_cmd#*:}" >/dev/null
    fi
done
[[ -x $BERTH_BIN ]] || die "no berth binary at $BERTH_BIN"

WORK=$(mktemp -d /tmp/berth-ops-overhead.XXXXXX)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }

declare -A URL PID
SERVERS=(on noaudit off peer)
wait_up() {
    for _ in $(seq 1 100); do
        curl -s -o /dev/null "${URL[$1]}/v2/" && return 0
        sleep 0.1
    done
    die "$1 did not start: $(tail -5 "$WORK/$1.log")"
}
start_berth() { # name config-yaml
    local name=$1 port
    port=$(free_port)
    mkdir -p "$WORK/$name"
    printf '%s\ndata_dir: %s\naddr: 127.0.0.1:%s\nlog: {level: warn}\n' "$2" "$WORK/$name" "$port" \
        >"$WORK/$name.yaml"
    "$BERTH_BIN" serve --config "$WORK/$name.yaml" >"$WORK/$name.log" 2>&1 &
    PID[$name]=$!; PIDS+=("$!")
    URL[$name]=http://127.0.0.1:$port
    wait_up "$name"
}
start_berth on 'metrics: {enabled: true}
audit: {enabled: true}
rate_limit: {pull: 1000000000/1m, other: 1000000000/1m}'
start_berth noaudit 'metrics: {enabled: true}
audit: {enabled: false}
rate_limit: {pull: 1000000000/1m, other: 1000000000/1m}'
start_berth off 'metrics: {enabled: false}
audit: {enabled: false}
rate_limit: {pull: unlimited, other: unlimited}'
PEER_PORT=$(free_port)
cat >"$WORK/peer.yml" <<EOF
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $WORK/peer-data
http:
  addr: 127.0.0.1:$PEER_PORT
EOF
docker-registry serve "$WORK/peer.yml" >"$WORK/peer.log" 2>&1 &
PID[peer]=$!; PIDS+=("$!")
URL[peer]=http://127.0.0.1:$PEER_PORT
wait_up peer

# The image: a config, a 2 KiB layer and a BLOB_MB MiB layer.
printf '{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}' >"$WORK/config"
head -c 2048 /dev/urandom >"$WORK/small"
head -c $((BLOB_MB << 20)) /dev/urandom >"$WORK/big"
digest() { echo "sha256:$(sha256sum "$1" | cut -d' ' -f1)"; }
BIG=$(digest "$WORK/big")
cat >"$WORK/manifest" <<EOF
{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"$(digest "$WORK/config")","size":$(stat -c %s "$WORK/config")},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"$(digest "$WORK/small")","size":2048},{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"$BIG","size":$((BLOB_MB << 20))}]}
EOF
seed() {
    local base=${URL[$1]} f loc
    for f in config small big; do
        loc=$(curl -sS -o /dev/null -D - -X POST "$base/v2/$REPO/blobs/uploads/" |
            awk 'tolower($1)=="location:"{print $2}' | tr -d '\r')
        [[ $loc == http* ]] || loc=$base$loc
        [[ $loc == *\?* ]] && sep='&' || sep='?'
        [[ $(curl -sS -o /dev/null -w '%{http_code}' -X PUT -H 'Expect:' \
            -H 'Content-Type: application/octet-stream' \
            --data-binary @"$WORK/$f" "$loc${sep}digest=$(digest "$WORK/$f")") == 201 ]] || die "$1: blob push"
    done
    [[ $(curl -sS -o /dev/null -w '%{http_code}' -X PUT \
        -H 'Content-Type: application/vnd.oci.image.manifest.v1+json' \
        --data-binary @"$WORK/manifest" "$base/v2/$REPO/manifests/latest") == 201 ]] || die "$1: manifest push"
}
for s in "${SERVERS[@]}"; do seed "$s"; done
log "servers up and seeded: ${SERVERS[*]}"

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
declare -A RPS P99 CPU MBS
for round in $(seq 1 "$ROUNDS"); do
    for s in "${SERVERS[@]}"; do
        t0=$(cpu_ticks "${PID[$s]}")
        out=$(wrk -t2 -c"$CONNS" -d"${LOAD_SECS}s" --latency \
            -H 'Accept: application/vnd.oci.image.manifest.v1+json' "${URL[$s]}/v2/$REPO/manifests/latest")
        t1=$(cpu_ticks "${PID[$s]}")
        grep -q 'Non-2xx' <<<"$out" && die "$s: errors under load: $(grep Non-2xx <<<"$out")"
        rps=$(awk '/^Requests\/sec/{print $2}' <<<"$out")
        reqs=$(awk '/requests in/{print $1}' <<<"$out")
        p99=$(awk '$1=="99%"{v=$2; if (v ~ /us$/) {sub(/us/,"",v); v/=1000} else if (v ~ /ms$/) sub(/ms/,"",v); else if (v ~ /s$/) {sub(/s/,"",v); v*=1000}; print v}' <<<"$out")
        cpu=$(awk -v t=$((t1 - t0)) -v n="$reqs" -v hz="$(getconf CLK_TCK)" 'BEGIN{printf "%.2f", t / hz / n * 1e6}')
        mbs=$(curl -sS -o /dev/null -w '%{speed_download}' "${URL[$s]}/v2/$REPO/blobs/$BIG" |
            awk '{printf "%.0f", $1 / 1e6}')
        RPS[$s]+="$rps "; P99[$s]+="$p99 "; CPU[$s]+="$cpu "; MBS[$s]+="$mbs "
        log "round $round $s: $rps req/s, p99 $p99 ms, $cpu us CPU/req; blob $mbs MB/s"
    done
done
sleep 1
audit_rows=$("$BERTH_BIN" audit --data-dir "$WORK/on" --action pull --limit 5 --json | grep -c '"action": "pull"' || true)
log "audit entries visible on 'on': $audit_rows of the last 5 asked"

# SQLite's own cost of an audit row: the same table and indexes, berth's batch size.
floor_us() {
    local db=$WORK/floor-$1.db
    sqlite3 "$db" 'PRAGMA journal_mode=WAL;' >/dev/null
    sqlite3 "$db" <"$ROOT/migrations/sqlite/0008_audit.sql"
    {
        echo 'PRAGMA synchronous=FULL; PRAGMA cache_size=-16000;'
        for t in $(seq 0 99); do
            echo "BEGIN IMMEDIATE; INSERT INTO audit_log (id, time_ms, action, target, actor, addr,
                repo, reference, digest, success, status, detail, request_id)
              SELECT printf('%08x-1111-4222-8333-%012x', value, value), 1764700000000 + value / 50,
                'pull', 'manifest', 'anonymous', '127.0.0.1', '$REPO', 'latest',
                printf('sha256:%064x', value), 1, 200, '', printf('%032x', value)
              FROM generate_series($((t * 2048)), $((t * 2048 + 2047))); COMMIT;"
        done
    } >"$WORK/floor.sql"
    local TIMEFORMAT='%U %S'
    { time sqlite3 "$db" <"$WORK/floor.sql" >/dev/null; } 2>&1 |
        awk '{printf "%.2f", ($1 + $2) / 204800 * 1e6}'
}
FLOOR=""
for round in $(seq 1 "$ROUNDS"); do
    f=$(floor_us "$round"); FLOOR+="$f "
    log "round $round: SQLite alone, $f us CPU per audit row"
done

median() { tr ' ' '\n' | grep . | sort -g | awk '{a[NR]=$1} END{print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.3f", a / b}'; }
{
    echo "$(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) CPUs, wrk -t2 -c$CONNS -d${LOAD_SECS}s manifest GET by tag; ${BLOB_MB} MiB blob GET with curl; median of $ROUNDS alternating rounds."
    echo "on = metrics + audit log + rate limits (checked, never refusing); off = all three off."
    echo
    echo "| figure | on | off | on/off | metrics + rate limits only | that/off | peer |"
    echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"
    for f in RPS P99 CPU MBS; do
        declare -n M=$f
        case $f in
            RPS) name="manifest GET req/s" ;;
            P99) name="manifest GET p99 ms" ;;
            CPU) name="server CPU µs per manifest GET" ;;
            MBS) name="blob pull MB/s" ;;
        esac
        on=$(median <<<"${M[on]}"); off=$(median <<<"${M[off]}"); peer=$(median <<<"${M[peer]}")
        na=$(median <<<"${M[noaudit]}")
        echo "| $name | $on | $off | $(ratio "$on" "$off") | $na | $(ratio "$na" "$off") | $peer |"
    done
    echo
    echo "SQLite alone, CPU µs per audit row (the sqlite3 shell, 2048 rows a transaction, median of $ROUNDS): $(median <<<"$FLOOR")"
} >"$WORK/table.md"
[[ -n ${BENCH_OUT:-} ]] && cp "$WORK/table.md" "$BENCH_OUT"
cat "$WORK/table.md"
