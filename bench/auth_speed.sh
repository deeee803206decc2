#!/usr/bin/env bash
# Access control at wire speed: manifest GET by tag under wrk (64 connections) against berth
# with --auth none, basic and token, side by side in one run, as ratios to no auth. With
# BENCH_BASELINE_BIN set, a second berth binary (say, an earlier build) runs the same three modes
# in the same run, so before and after compare on one machine state.
#
#   bench/auth_speed.sh                                   # ~2 min
#   BENCH_BASELINE_BIN=/tmp/berth-before bench/auth_speed.sh    # ~4 min
#
# Prints a Markdown table on stdout (and into BENCH_OUT if set); progress on stderr.
# Servers run one at a time under load, rounds alternate between them (median reported).
#
#   BENCH_BERTH_BIN     the berth binary measured   (default target/release/berth; no build)
#   BENCH_BASELINE_BIN  a second binary, measured too (default none)
# (BERTH_* variables are dropped: berth reads them all as configuration.)
#   LOAD_SECS     wrk duration per run             (default 10)
#   CONNS         wrk connections                  (default 64)
#   ROUNDS        runs per server, median reported (default 3)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
for v in $(compgen -e | grep '^BERTH_' || true); do unset "$v"; done
BERTH_BIN=${BENCH_BERTH_BIN:-$ROOT/target/release/berth}
BASELINE_BIN=${BENCH_BASELINE_BIN:-}
LOAD_SECS=${LOAD_SECS:-10}
CONNS=${CONNS:-64}
ROUNDS=${ROUNDS:-3}
REPO=team/bench
PW=bench-Passw0rd

log() { printf '[auth-speed %s] %s\n' "$(date +%T)" "$*" >&2; }
die() { log "FATAL: $*"; exit 1; }

for pkg_cmd in wrk:wrk curl:curl jq:jq; do
    if ! command -v "${pkg_cmd%%:*}" >/dev/null; then
        log "installing ${pkg_cmd#*:}"
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${pkg_cmd#*:}" >/dev/null
    fi
done
[[ -x $BERTH_BIN ]] || die "no berth binary at $BERTH_BIN"

WORK=$(mktemp -d /tmp/berth-auth-speed.XXXXXX)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
BASIC="Basic $(printf 'alice:%s' "$PW" | base64 -w0)"

declare -A URL BIN MODE
SERVERS=()
start() { # name binary mode
    local name=$1 bin=$2 mode=$3 d=$WORK/$1 port
    mkdir -p "$d"
    printf '%s\n' "$PW" | "$bin" user add alice --password-stdin --data-dir "$d" >/dev/null
    "$bin" namespace create team --data-dir "$d" >/dev/null
    "$bin" namespace member add team alice developer --data-dir "$d" >/dev/null
    port=$(free_port)
    BERTH_LOG__LEVEL=warn "$bin" serve --auth "$mode" --addr "127.0.0.1:$port" --data-dir "$d" \
        >"$WORK/$name.log" 2>&1 &
    PIDS+=("$!")
    URL[$name]=http://127.0.0.1:$port BIN[$name]=$bin MODE[$name]=$mode
    SERVERS+=("$name")
    for _ in $(seq 1 100); do
        curl -s -o /dev/null "${URL[$name]}/v2/" && return 0
        sleep 0.1
    done
    die "$name did not start"
}

# auth NAME SCOPE -> the Authorization header value for a request to NAME
auth() {
    case ${MODE[$1]} in
        none) echo "" ;;
        basic) echo "$BASIC" ;;
        token)
            local t
            t=$(curl -sS -H "Authorization: $BASIC" "${URL[$1]}/token?service=berth&scope=$2" | jq -er .token) ||
                die "no token from $1"
            echo "Bearer $t"
            ;;
    esac
}

curl_auth() { # AUTH curl-args...
    local a=$1; shift
    if [[ -n $a ]]; then curl -sS -H "Authorization: $a" "$@"; else curl -sS "$@"; fi
}

seed() { # name: pushes a one-layer image as team/bench:latest
    local a base=${URL[$1]} f d loc
    a=$(auth "$1" "repository:$REPO:pull,push")
    for f in config layer; do
        d=sha256:$(sha256sum "$WORK/$f" | cut -d' ' -f1)
        loc=$(curl_auth "$a" -o /dev/null -D - -X POST "$base/v2/$REPO/blobs/uploads/" |
            awk 'tolower($1)=="location:"{print $2}' | tr -d '\r')
        [[ -n $loc ]] || die "$1: no upload location"
        [[ $(curl_auth "$a" -o /dev/null -w '%{http_code}' -X PUT -H 'Expect:' \
            --data-binary @"$WORK/$f" "$base$loc?digest=$d") == 201 ]] || die "$1: blob push"
    done
    [[ $(curl_auth "$a" -o /dev/null -w '%{http_code}' -X PUT \
        -H 'Content-Type: application/vnd.oci.image.manifest.v1+json' \
        --data-binary @"$WORK/manifest" "$base/v2/$REPO/manifests/latest") == 201 ]] ||
        die "$1: manifest push"
}

printf '{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}' >"$WORK/config"
head -c 2048 /dev/urandom >"$WORK/layer"
cat >"$WORK/manifest" <<EOF
{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:$(sha256sum "$WORK/config" | cut -d' ' -f1)","size":$(stat -c %s "$WORK/config")},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:$(sha256sum "$WORK/layer" | cut -d' ' -f1)","size":2048}]}
EOF

LABELS=(berth)
[[ -n $BASELINE_BIN ]] && LABELS=(baseline berth)
for label in "${LABELS[@]}"; do
    bin=$BERTH_BIN
    [[ $label == baseline ]] && bin=$BASELINE_BIN
    for mode in none basic token; do
        start "$label-$mode" "$bin" "$mode"
        seed "$label-$mode"
    done
done
log "servers up: ${SERVERS[*]}"

declare -A RPS P99
for round in $(seq 1 "$ROUNDS"); do
    for s in "${SERVERS[@]}"; do
        a=$(auth "$s" "repository:$REPO:pull")
        h=(-H 'Accept: application/vnd.oci.image.manifest.v1+json')
        [[ -n $a ]] && h+=(-H "Authorization: $a")
        out=$(wrk -t2 -c"$CONNS" -d"${LOAD_SECS}s" --latency "${h[@]}" "${URL[$s]}/v2/$REPO/manifests/latest")
        if grep -q 'Non-2xx' <<<"$out"; then die "$s: errors under load: $(grep Non-2xx <<<"$out")"; fi
        rps=$(awk '/^Requests\/sec/{print $2}' <<<"$out")
        p99=$(awk '$1=="99%"{v=$2; if (v ~ /us$/) {sub(/us/,"",v); v/=1000} else if (v ~ /ms$/) sub(/ms/,"",v); else if (v ~ /s$/) {sub(/s/,"",v); v*=1000}; print v}' <<<"$out")
        RPS[$s]+="$rps "; P99[$s]+="$p99 "
        log "round $round $s: $rps req/s, p99 $p99 ms"
    done
done

median() { tr ' ' '\n' | grep . | sort -g | awk '{a[NR]=$1} END{print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
{
    echo "$(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) CPUs, wrk -t2 -c$CONNS -d${LOAD_SECS}s, manifest GET by tag (user alice, developer of namespace team), median of $ROUNDS rounds."
    echo
    echo "| binary | auth mode | req/s | ratio to no auth | p99 ms |"
    echo "| --- | --- | ---: | ---: | ---: |"
    for label in "${LABELS[@]}"; do
        base=$(median <<<"${RPS[$label-none]}")
        for mode in none basic token; do
            s=$label-$mode
            r=$(median <<<"${RPS[$s]}")
            printf '| %s | %s | %.0f | %.2fx | %.2f |\n' "$label" "$mode" "$r" \
                "$(awk -v a="$r" -v b="$base" 'BEGIN{print a/b}')" "$(median <<<"${P99[$s]}")"
        done
    done
} >"$WORK/table.md"
[[ -n ${BENCH_OUT:-} ]] && cp "$WORK/table.md" "$BENCH_OUT"
cat "$WORK/table.md"
