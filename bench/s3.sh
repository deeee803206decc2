#!/usr/bin/env bash
# berth with blobs in S3 (Garage), with metadata in SQLite or in PostgreSQL (Debian's), against
# berth on the embedded default and against Distribution 2.8 (Debian's docker-registry) with
# its s3 driver on the same Garage bucket:
# 256 MiB push and pull throughput, manifest GET req/s and p99. One run, same machine,
# loopback only; prints a Markdown table with ratios.
#
#   bench/s3.sh
#
# Environment: LOAD_SECS (10), CONNS (64), RUNS (3; each push uses new content, median
# reported), SKIP_BUILD=1, LOADGEN=wrk.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
for v in $(compgen -e | grep '^BERTH_' || true); do unset "$v"; done
. "$ROOT/bench/lib.sh"
. "$ROOT/scripts/garage.sh"
. "$ROOT/scripts/postgres.sh"
LOAD_SECS=${LOAD_SECS:-10}
CONNS=${CONNS:-64}
RUNS=${RUNS:-3}
REPO=bench
SIZE=$((256 << 20))
BERTH_BIN=$ROOT/target/release/berth

command -v docker-registry >/dev/null || { apt-get update -qq; apt-get install -y -qq docker-registry >/dev/null; }
need_loadgen
garage_install
pg_install
if [[ ${SKIP_BUILD:-0} != 1 ]]; then (cd "$ROOT" && cargo build --release --quiet); fi

WORK=$(mktemp -d /tmp/berth-s3bench.XXXXXX)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    garage_stop
    pg_stop
    rm -rf "$WORK"
}
trap cleanup EXIT
garage_start "$WORK/garage" 1
chmod 755 "$WORK"
pg_start "$WORK/pg"
psql "$TEST_PG_URL" -qAtc "CREATE DATABASE berth_bench"

declare -A BASE
start_berth() { # NAME CONFIG
    local port
    port=$(free_port)
    BERTH_LOG__LEVEL=warn "$BERTH_BIN" serve --addr "127.0.0.1:$port" --data-dir "$WORK/$1-data" \
        --config "$2" >"$WORK/$1.log" 2>&1 &
    PIDS+=($!)
    BASE[$1]=http://127.0.0.1:$port
    wait_ready "${BASE[$1]}" "$!" "$1"
}
echo "{}" >"$WORK/fs.yaml"
cat >"$WORK/s3.yaml" <<YAML
storage:
  driver: s3
  s3:
    bucket: $TEST_S3_BUCKET
    prefix: berth-bench
    region: garage
    endpoint: $TEST_S3_ENDPOINT
    path_style: true
    access_key_id: $TEST_S3_KEY_ID
    secret_access_key: $TEST_S3_SECRET
YAML
sed -e 's/prefix: berth-bench/prefix: berth-bench-pg/' "$WORK/s3.yaml" >"$WORK/pg.yaml"
echo "database: ${TEST_PG_URL%/*}/berth_bench" >>"$WORK/pg.yaml"
start_berth fs "$WORK/fs.yaml"
start_berth s3 "$WORK/s3.yaml"
start_berth pg "$WORK/pg.yaml"
PEER_PORT=$(free_port)
cat >"$WORK/peer.yml" <<YAML
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  s3:
    accesskey: $TEST_S3_KEY_ID
    secretkey: $TEST_S3_SECRET
    region: garage
    regionendpoint: $TEST_S3_ENDPOINT
    bucket: $TEST_S3_BUCKET
    rootdirectory: /peer-bench
    secure: false
    v4auth: true
  redirect:
    disable: true
http:
  addr: 127.0.0.1:$PEER_PORT
YAML
env -u AWS_CA_BUNDLE $(compgen -e | grep "^REGISTRY_" | sed "s/^/-u /") \
    docker-registry serve "$WORK/peer.yml" >"$WORK/peer.log" 2>&1 &
PIDS+=($!)
BASE[peer]=http://127.0.0.1:$PEER_PORT
wait_ready "${BASE[peer]}" "$!" peer
WHO=(fs s3 pg peer)
log "berth fs ${BASE[fs]}, berth s3 ${BASE[s3]}, berth s3+pg ${BASE[pg]}, peer (s3 driver) ${BASE[peer]}"

declare -A PUSH PULL R
for i in $(seq 1 "$RUNS"); do
    for who in "${WHO[@]}"; do
        f=$WORK/blob-$who-$i
        head -c "$SIZE" /dev/urandom >"$f"
        d=sha256:$(sha256sum "$f" | cut -d' ' -f1)
        sync; sleep 1
        read -r code t < <(push_blob "${BASE[$who]}" "$f" "$d") || true
        [[ $code == 201 ]] || die "$who push returned $code"
        v=$(awk -v t="$t" -v n="$SIZE" 'BEGIN{printf "%.1f", n/t/1e6}')
        PUSH[$who]+="$v "
        s=$(curl -sS -o /dev/null -w '%{speed_download}' "${BASE[$who]}/v2/$REPO/blobs/$d")
        w=$(awk -v s="$s" 'BEGIN{printf "%.1f", s/1e6}')
        PULL[$who]+="$w "
        rm -f "$f"
        log "$who run $i: push $v MB/s, pull $w MB/s"
    done
done
for who in "${WHO[@]}"; do
    R[push.$who]=$(tr ' ' '\n' <<<"${PUSH[$who]}" | grep . | median)
    R[pull.$who]=$(tr ' ' '\n' <<<"${PULL[$who]}" | grep . | median)
    push_small_image "${BASE[$who]}"
done
for who in "${WHO[@]}"; do
    sleep 1
    load "${BASE[$who]}/v2/$REPO/manifests/latest" GET
    R[mget.$who]=$LOAD_RPS; R[mgetp99.$who]=$LOAD_P99_MS
    log "$who manifest GET: $LOAD_RPS req/s, p99 $LOAD_P99_MS ms"
done

echo
echo "## berth on S3 (Garage $(garage --version 2>/dev/null | awk '{print $2}')), with SQLite or PostgreSQL $(psql --version | awk '{print $3}'), vs. the embedded default vs. Distribution $(docker-registry --version | awk '{print $NF}') on the same bucket"
echo
echo "$(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) CPUs, one Garage node on loopback, $RUNS runs of 256 MiB (new content each run, median), \`$LOADGEN\` $LOAD_SECS s x $CONNS connections."
echo
echo "| Measurement | berth S3 + PostgreSQL | berth S3 + SQLite | berth embedded | Distribution S3 | S3+PG/embedded | S3+PG/Distribution S3 | S3+SQLite/Distribution S3 |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|"
for m in push pull mget mgetp99; do
    case $m in
        push) name="256 MiB push, MB/s" ;; pull) name="256 MiB pull, MB/s" ;;
        mget) name="Manifest GET by tag, req/s" ;; mgetp99) name="Manifest GET p99, ms" ;;
    esac
    echo "| $name | $(fmt "${R[$m.pg]}") | $(fmt "${R[$m.s3]}") | $(fmt "${R[$m.fs]}") | $(fmt "${R[$m.peer]}") | $(ratio "${R[$m.pg]}" "${R[$m.fs]}") | $(ratio "${R[$m.pg]}" "${R[$m.peer]}") | $(ratio "${R[$m.s3]}" "${R[$m.peer]}") |"
done
