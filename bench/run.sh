#!/usr/bin/env bash
# berth vs. CNCF Distribution (Debian's docker-registry) benchmark, one run, same machine,
# loopback only. Prints a table of figures and berth/peer ratios and writes it as Markdown to
# bench/results.md.
#
#   bench/run.sh                 # build berth (release), run everything (~3-5 min)
#
# Environment knobs:
#   BENCH_DIR        where data dirs + temp files go      (default: mktemp -d under /tmp)
#   BLOB_DIR         where the 1 GiB source file goes     (default: /dev/shm if it fits)
#   LOAD_SECS        oha/wrk duration per load test       (default 10)
#   CONNS            connections for load tests           (default 64)
#   PUSH_RUNS        1 GiB push runs per registry         (default 3, median reported)
#   PULL_RUNS        1 GiB pull runs per registry         (default 5, best reported)
#   SMALL_PUSHES     sequential 4 KiB pushes              (default 200)
#   BENCH_BERTH_LOG_LEVEL  berth's log.level               (default warn, as the peer; passed
#                    as BERTH_LOG__LEVEL)
#   SKIP_BUILD=1     do not run cargo build
#   LOADGEN=wrk      use wrk (apt) instead of oha (cargo install --locked oha)
#   BENCH_BERTH_BIN  berth binary                         (default target/release/berth)
#   BENCH_OUT        Markdown output                      (default bench/results.md)
# Any BERTH_* variable in the environment is dropped: berth reads them all as configuration.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# log die free_port wait_ready push_blob load vmhwm_kb median best ratio fmt
. "$ROOT/bench/lib.sh"
for v in $(compgen -e | grep '^BERTH_' || true); do unset "$v"; done
BERTH_BIN=${BENCH_BERTH_BIN:-$ROOT/target/release/berth}
LOAD_SECS=${LOAD_SECS:-10}
CONNS=${CONNS:-64}
PUSH_RUNS=${PUSH_RUNS:-3}
PULL_RUNS=${PULL_RUNS:-5}
SMALL_PUSHES=${SMALL_PUSHES:-200}
BERTH_LOG_LEVEL=${BENCH_BERTH_LOG_LEVEL:-warn}
REPO=bench
ONE_GIB=1073741824


# ---------------------------------------------------------------- prerequisites
need_apt=()
command -v docker-registry >/dev/null || need_apt+=(docker-registry)
command -v iperf3 >/dev/null || need_apt+=(iperf3)
command -v curl >/dev/null || need_apt+=(curl)
command -v python3 >/dev/null || need_apt+=(python3)
command -v jq >/dev/null || need_apt+=(jq)
if ((${#need_apt[@]})); then
    log "installing ${need_apt[*]}"
    SUDO=; [[ $(id -u) -eq 0 ]] || SUDO=sudo
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
PEER_BIN=$(command -v docker-registry)
need_loadgen

if [[ ${SKIP_BUILD:-0} != 1 ]]; then
    log "cargo build --release"
    (cd "$ROOT" && cargo build --release --quiet)
fi
[[ -x $BERTH_BIN ]] || die "no berth binary at $BERTH_BIN"

# ---------------------------------------------------------------- temp space + cleanup
WORK=${BENCH_DIR:-$(mktemp -d /tmp/berth-bench.XXXXXX)}
mkdir -p "$WORK"
if [[ -z ${BLOB_DIR:-} ]]; then
    avail_kb=$(df -Pk /dev/shm 2>/dev/null | awk 'NR==2{print $4}')
    if [[ -n $avail_kb && $avail_kb -gt 3145728 ]]; then BLOB_DIR=$(mktemp -d /dev/shm/berth-bench.XXXXXX)
    else BLOB_DIR=$WORK; fi
fi
BIGFILE=$BLOB_DIR/blob-1g.bin
PIDS=()
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    rm -f "$BIGFILE"
    if [[ $BLOB_DIR == /dev/shm/berth-bench.* ]]; then rm -rf "$BLOB_DIR"; fi
    if [[ -z ${BENCH_DIR:-} ]]; then rm -rf "$WORK"; fi
    exit "$rc"
}
trap cleanup EXIT INT TERM



# ---------------------------------------------------------------- start both servers
BERTH_PORT=$(free_port); PEER_PORT=$(free_port)
BERTH=http://127.0.0.1:$BERTH_PORT
PEER=http://127.0.0.1:$PEER_PORT
mkdir -p "$WORK/berth-data" "$WORK/peer-data"

BERTH_LOG__LEVEL=$BERTH_LOG_LEVEL "$BERTH_BIN" serve --addr "127.0.0.1:$BERTH_PORT" --data-dir "$WORK/berth-data" \
    >"$WORK/berth.log" 2>&1 &
BERTH_PID=$!; PIDS+=("$BERTH_PID")

cat >"$WORK/peer.yml" <<EOF
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $WORK/peer-data
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$PEER_PORT
EOF
"$PEER_BIN" serve "$WORK/peer.yml" >"$WORK/peer.log" 2>&1 &
PEER_PID=$!; PIDS+=("$PEER_PID")

wait_ready "$BERTH" "$BERTH_PID" berth
wait_ready "$PEER" "$PEER_PID" peer
log "berth pid $BERTH_PID on $BERTH_PORT, peer pid $PEER_PID on $PEER_PORT, data in $WORK"

declare -A R   # results: R[metric.berth], R[metric.peer]

# ---------------------------------------------------------------- helpers



# Each 1 GiB run alternates berth, peer, berth, peer... so slow drifts in background load (this
# host may be shared) hit both alike; push reports the median, pull the best run.

# ---------------------------------------------------------------- 2. 1 GiB push
log "generating 1 GiB of random data in $BLOB_DIR"
head -c "$ONE_GIB" /dev/urandom >"$BIGFILE"
BIG_DIGEST=sha256:$(sha256sum "$BIGFILE" | cut -d' ' -f1)
declare -A SPEEDS=([berth]="" [peer]="")
for i in $(seq 1 "$PUSH_RUNS"); do
    for who in berth peer; do
        base=$BERTH; [[ $who == peer ]] && base=$PEER
        sync; sleep 1
        code=; t=; read -r code t < <(push_blob "$base" "$BIGFILE" "$BIG_DIGEST") || true
        [[ $code == 201 ]] || die "$who 1 GiB push returned $code"
        v=$(awk -v t="$t" -v n=$ONE_GIB 'BEGIN{printf "%.1f", n/t/1e6}')
        SPEEDS[$who]+="$v "
        log "$who push run $i: ${t}s = $v MB/s"
    done
done
for who in berth peer; do R[push.$who]=$(tr ' ' '\n' <<<"${SPEEDS[$who]}" | grep . | median); done

# ---------------------------------------------------------------- 1. loopback bandwidth
# One 5 s iperf3 run right before the pulls and one right after; the reference is the higher
# (loopback on a shared host swings a lot, and the higher figure is the stricter target).
iperf_gbs() {
    local port pid v
    port=$(free_port)
    timeout 20 iperf3 -s -1 -p "$port" -B 127.0.0.1 >/dev/null 2>&1 &
    pid=$!
    sleep 0.5
    v=$(iperf3 -c 127.0.0.1 -p "$port" -t 5 -J | jq -r '.end.sum_received.bits_per_second / 8 / 1e9')
    wait "$pid" 2>/dev/null || true
    echo "$v"
}
sync; sleep 1
LOOP_BEFORE=$(iperf_gbs)
log "loopback before pulls: $LOOP_BEFORE GB/s"

# ---------------------------------------------------------------- 3. 1 GiB pull
SPEEDS=([berth]="" [peer]="")
for i in $(seq 1 "$PULL_RUNS"); do
    for who in berth peer; do
        base=$BERTH; [[ $who == peer ]] && base=$PEER
        s=$(curl -sS -o /dev/null -w '%{speed_download}' "$base/v2/$REPO/blobs/$BIG_DIGEST")
        v=$(awk -v s="$s" 'BEGIN{printf "%.1f", s/1e6}')
        SPEEDS[$who]+="$v "
        log "$who pull run $i: $v MB/s"
    done
done
for who in berth peer; do R[pull.$who]=$(tr ' ' '\n' <<<"${SPEEDS[$who]}" | grep . | best); done
rm -f "$BIGFILE"
LOOP_AFTER=$(iperf_gbs)
log "loopback after pulls: $LOOP_AFTER GB/s"
LOOP_GBS=$(printf '%s\n' "$LOOP_BEFORE" "$LOOP_AFTER" | best)

# ---------------------------------------------------------------- 4+5. small image, load tests
printf '{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]},"config":{}}' \
    >"$WORK/config.json"
head -c 2048 /dev/urandom >"$WORK/layer.bin"
CFG_D=sha256:$(sha256sum "$WORK/config.json" | cut -d' ' -f1)
CFG_S=$(stat -c %s "$WORK/config.json")
LAY_D=sha256:$(sha256sum "$WORK/layer.bin" | cut -d' ' -f1)
LAY_S=$(stat -c %s "$WORK/layer.bin")
cat >"$WORK/manifest.json" <<EOF
{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"$CFG_D","size":$CFG_S},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"$LAY_D","size":$LAY_S}]}
EOF
for who in berth peer; do
    base=$BERTH; [[ $who == peer ]] && base=$PEER
    read -r code _ < <(push_blob "$base" "$WORK/config.json" "$CFG_D") || true; [[ $code == 201 ]] || die "$who config push: $code"
    read -r code _ < <(push_blob "$base" "$WORK/layer.bin" "$LAY_D") || true; [[ $code == 201 ]] || die "$who layer push: $code"
    code=$(curl -sS -o /dev/null -w '%{http_code}' -X PUT \
        -H 'Content-Type: application/vnd.oci.image.manifest.v1+json' \
        --data-binary @"$WORK/manifest.json" "$base/v2/$REPO/manifests/latest")
    [[ $code == 201 ]] || die "$who manifest push: $code"
done

for who in berth peer; do
    base=$BERTH; [[ $who == peer ]] && base=$PEER
    sleep 1
    load "$base/v2/$REPO/manifests/latest" GET
    R[mget.$who]=$LOAD_RPS; R[mgetp99.$who]=$LOAD_P99_MS
    log "$who manifest GET: $LOAD_RPS req/s, p99 $LOAD_P99_MS ms"
done
for who in berth peer; do
    base=$BERTH; [[ $who == peer ]] && base=$PEER
    sleep 1
    load "$base/v2/$REPO/blobs/$LAY_D" HEAD
    R[head.$who]=$LOAD_RPS; R[headp99.$who]=$LOAD_P99_MS
    log "$who HEAD blob: $LOAD_RPS req/s, p99 $LOAD_P99_MS ms"
done

# ---------------------------------------------------------------- 6. small sequential pushes
for who in berth peer; do
    port=$BERTH_PORT; [[ $who == peer ]] && port=$PEER_PORT
    sync; sleep 1
    secs=; read -r n secs < <(python3 "$ROOT/bench/small_pushes.py" 127.0.0.1 "$port" "$SMALL_PUSHES" 4096) || true
    [[ -n ${secs:-} ]] || die "$who small pushes failed"
    R[small.$who]=$secs
    R[smallps.$who]=$(awk -v n="$n" -v s="$secs" 'BEGIN{printf "%.1f", n/s}')
    log "$who $n small pushes: ${secs}s (${R[smallps.$who]}/s)"
done

# ---------------------------------------------------------------- 7. peak RSS
R[rss.berth]=$(awk -v k="$(vmhwm_kb "$BERTH_PID")" 'BEGIN{printf "%.1f", k/1024}')
R[rss.peer]=$(awk -v k="$(vmhwm_kb "$PEER_PID")" 'BEGIN{printf "%.1f", k/1024}')
kill -TERM "$BERTH_PID" "$PEER_PID" 2>/dev/null || true
wait "$BERTH_PID" 2>/dev/null || true
wait "$PEER_PID" 2>/dev/null || true
PIDS=()

# ---------------------------------------------------------------- report
mark() { case $1 in 1) echo PASS ;; 0) echo "**MISS**" ;; *) echo "n/a" ;; esac; }
ge() { [[ $1 == n/a* || -z $1 ]] && { echo na; return; }; awk -v a="${1%x}" -v b="$2" 'BEGIN{ print (a+0 >= b+0) ? 1 : 0 }'; }
le() { [[ $1 == n/a* || -z $1 ]] && { echo na; return; }; awk -v a="${1%x}" -v b="$2" 'BEGIN{ print (a+0 <= b+0) ? 1 : 0 }'; }

pull_ratio=$(ratio "${R[pull.berth]}" "${R[pull.peer]}")
pull_loop=$(awk -v p="${R[pull.berth]}" -v l="$LOOP_GBS" 'BEGIN{printf "%.0f", p/1e3/l*100}')
peer_loop=$(awk -v p="${R[pull.peer]}" -v l="$LOOP_GBS" 'BEGIN{printf "%.0f", p/1e3/l*100}')
push_ratio=$(ratio "${R[push.berth]}" "${R[push.peer]}")
mget_ratio=$(ratio "${R[mget.berth]}" "${R[mget.peer]}")
head_ratio=$(ratio "${R[head.berth]}" "${R[head.peer]}")
small_ratio=$(ratio "${R[smallps.berth]}" "${R[smallps.peer]}")
rss_ratio=$(ratio "${R[rss.berth]}" "${R[rss.peer]}")


OUT=${BENCH_OUT:-$ROOT/bench/results.md}
{
    echo "## berth vs. CNCF Distribution $("$PEER_BIN" --version 2>/dev/null | awk '{print $NF}')"
    echo
    echo "$(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) CPUs ($(awk -F': ' '/model name/{print $2; exit}' /proc/cpuinfo)), kernel $(uname -r), load generator \`$LOADGEN\` ($LOAD_SECS s, $CONNS connections). Loopback (iperf3, 1 stream, 5 s, the higher of a run just before and just after the pulls: $(fmt "$LOOP_BEFORE" 2) / $(fmt "$LOOP_AFTER" 2)): **$(fmt "$LOOP_GBS" 2) GB/s**. MB = 10^6 bytes. Both servers run for the whole run; each measurement loads one server at a time."
    echo
    echo "| Measurement | berth | peer | berth/peer | Target | |"
    echo "|---|---:|---:|---:|---|---|"
    echo "| 1 GiB blob push, MB/s (median of $PUSH_RUNS) | $(fmt "${R[push.berth]}") | $(fmt "${R[push.peer]}") | ${push_ratio} | >= 1.0x | $(mark "$(ge "$push_ratio" 1.0)") |"
    echo "| 1 GiB blob pull, MB/s (best of $PULL_RUNS) | $(fmt "${R[pull.berth]}") | $(fmt "${R[pull.peer]}") | ${pull_ratio} | >= 1.0x | $(mark "$(ge "$pull_ratio" 1.0)") |"
    echo "| 1 GiB blob pull, % of loopback | ${pull_loop}% | ${peer_loop}% | | >= 85% | $(mark "$(ge "$pull_loop" 85)") |"
    echo "| Manifest GET by tag, req/s | $(fmt "${R[mget.berth]}" 0) | $(fmt "${R[mget.peer]}" 0) | ${mget_ratio} | >= 10x | $(mark "$(ge "$mget_ratio" 10)") |"
    echo "| Manifest GET by tag, p99 ms | $(fmt "${R[mgetp99.berth]}" 2) | $(fmt "${R[mgetp99.peer]}" 2) | $(ratio "${R[mgetp99.berth]}" "${R[mgetp99.peer]}") | <= 5 ms | $(mark "$(le "${R[mgetp99.berth]}" 5)") |"
    echo "| HEAD blob, req/s | $(fmt "${R[head.berth]}" 0) | $(fmt "${R[head.peer]}" 0) | ${head_ratio} | >= 5x | $(mark "$(ge "$head_ratio" 5)") |"
    echo "| HEAD blob, p99 ms | $(fmt "${R[headp99.berth]}" 2) | $(fmt "${R[headp99.peer]}" 2) | $(ratio "${R[headp99.berth]}" "${R[headp99.peer]}") | | |"
    echo "| $SMALL_PUSHES sequential 4 KiB pushes, s | $(fmt "${R[small.berth]}" 2) | $(fmt "${R[small.peer]}" 2) | $(ratio "${R[small.berth]}" "${R[small.peer]}") | | |"
    echo "| $SMALL_PUSHES sequential 4 KiB pushes, pushes/s | $(fmt "${R[smallps.berth]}") | $(fmt "${R[smallps.peer]}") | ${small_ratio} | >= 2x | $(mark "$(ge "$small_ratio" 2)") |"
    echo "| Peak RSS (VmHWM), MiB | $(fmt "${R[rss.berth]}") | $(fmt "${R[rss.peer]}") | ${rss_ratio} | <= 0.5x | $(mark "$(le "$rss_ratio" 0.5)") |"
    echo
    echo "Notes: berth fsyncs blob data, the rename and its SQLite commit before answering 201; the peer fsyncs nothing. Pushes are POST + monolithic PUT (\`curl -T\`, PUT timed) for 1 GiB, and POST + PUT over one keep-alive connection (\`bench/small_pushes.py\`) for 4 KiB. Repeated 1 GiB pushes carry the same content (both registries take their \"already exists\" path at commit). Pulls come from the page cache. 1 GiB push and pull runs alternate berth/peer. The peer runs with \`log.level: warn\` and its access log disabled; berth with \`log.level: $BERTH_LOG_LEVEL\` (no access log below info)."
} >"$OUT"
echo
cat "$OUT"
log "wrote $OUT"
