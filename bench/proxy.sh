#!/usr/bin/env bash
# The pull-through cache side by side with its peers, in one run on one machine:
#   - a cold pull of a 256 MiB image (4 layers of 64 MiB, incompressible) through berth,
#     against the same pull straight from the upstream, and through Distribution's `proxy:`
#     mode (Debian's docker-registry) as the peer mirror;
#   - a warm pull through berth, against a pull of the same image hosted in berth;
#   - 50 concurrent cold pulls of one 64 MiB blob: how many times the upstream was asked for
#     it, and the wall time against a single cold pull, for berth and for the peer mirror.
# The upstream is docker-registry on loopback. A pull is what a client does: the manifest by
# tag, then the config and layers, three at a time (curl --parallel), bytes discarded.
# Every cold pull runs against a mirror started on an empty data dir.
#
# Both on loopback (the mirror's own cost laid bare: the upstream is as fast as the disk) and
# through a WAN-like link (bench/wan_relay.py: a shared bandwidth, a connect delay), which is
# what a mirror stands in front of.
#
#   bench/proxy.sh           # ~6 min
#
# Prints a Markdown table on stdout (and into BENCH_OUT if set); progress on stderr.
#   BENCH_BERTH_BIN   the berth binary measured (default target/release/berth; no build)
#   ROUNDS            repetitions of each pull, median reported (default 5)
#   CONCURRENT        clients in the concurrent cold pull (default 50)
#   WAN_MBPS          the WAN scenario's link, MiB/s shared by all connections (default 100)
#   WAN_CONNECT_MS    the WAN scenario's delay per new connection (default 20)
#   WAN_ROUNDS        repetitions of the WAN cold pulls (default 3)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
for v in $(compgen -e | grep '^BERTH_' || true); do unset "$v"; done
BERTH_BIN=${BENCH_BERTH_BIN:-$ROOT/target/release/berth}
ROUNDS=${ROUNDS:-5}
CONCURRENT=${CONCURRENT:-50}
WAN_MBPS=${WAN_MBPS:-100}
WAN_CONNECT_MS=${WAN_CONNECT_MS:-20}
WAN_ROUNDS=${WAN_ROUNDS:-3}
LAYER_MB=64
LAYERS=4

log() { printf '[proxy-bench %s] %s\n' "$(date +%T)" "$*" >&2; }
die() { log "FATAL: $*"; exit 1; }

for pkg_cmd in docker-registry:docker-registry curl:curl jq:jq; do
    if ! command -v "${pkg_cmd%%:*}" >/dev/null; then
        log "installing ${pkg_cmd#*:}"
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${pkg_cmd#*:}" >/dev/null
    fi
done
[[ -x $BERTH_BIN ]] || die "no berth binary at $BERTH_BIN"

WORK=$(mktemp -d /tmp/berth-proxy-bench.XXXXXX)
cleanup() {
    pkill -TERM -f "$WORK/" 2>/dev/null || true
    sleep 0.5
    rm -rf "$WORK"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
now() { date +%s.%N; }
median() { sort -g | awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2fx", a / b }'; }
wait_ready() { # URL PID LOG
    for _ in $(seq 1 300); do
        kill -0 "$2" 2>/dev/null || { tail -n 20 "$3" >&2; die "$3: server exited during start-up"; }
        [[ $(curl -s -o /dev/null -w '%{http_code}' "$1/v2/") == 200 ]] && return 0
        sleep 0.1
    done
    die "$3: server did not become ready"
}

# registry NAME PORT [PROXY-URL]: starts docker-registry (as a proxy of PROXY-URL if given) on
# a fresh storage dir; its access log is $WORK/NAME.access. Prints its PID.
registry() {
    local name=$1 port=$2 remote=${3:-}
    rm -rf "$WORK/$name-data"
    {
        printf 'version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: %s\n' "$WORK/$name-data"
        printf 'http:\n  addr: 127.0.0.1:%s\n' "$port"
        [[ -n $remote ]] && printf 'proxy:\n  remoteurl: %s\n' "$remote"
    } >"$WORK/$name.yml"
    # Distribution reads REGISTRY_* variables as configuration: none reach it.
    env $(compgen -e | grep '^REGISTRY_' | sed 's/^/-u /') \
        docker-registry serve "$WORK/$name.yml" >>"$WORK/$name.access" 2>>"$WORK/$name.log" &
    echo $!
}

# berth_mirror NAME PORT: starts berth mirroring the upstream (prefix "hub", default upstream)
# on a fresh data dir. Prints its PID.
berth_mirror() {
    local name=$1 port=$2
    rm -rf "$WORK/$name-data"
    printf 'proxy:\n  upstreams:\n    - name: hub\n      url: %s\n      hosts: [docker.io]\n  default_upstream: hub\n' \
        "$UPSTREAM" >"$WORK/$name.yaml"
    BERTH_LOG__LEVEL=warn "$BERTH_BIN" serve --addr "127.0.0.1:$port" --data-dir "$WORK/$name-data" \
        --config "$WORK/$name.yaml" >>"$WORK/$name.log" 2>&1 &
    echo $!
}

# Servers started in $(...) are not this shell's children: stop polls until the PID is gone.
stop() {
    kill -TERM "$1" 2>/dev/null || true
    for _ in $(seq 1 200); do kill -0 "$1" 2>/dev/null || return 0; sleep 0.05; done
    kill -KILL "$1" 2>/dev/null || true
}

# ---------------------------------------------------------------- the upstream and its image
UP_PORT=$(free_port)
UPSTREAM=http://127.0.0.1:$UP_PORT
UP_PID=$(registry upstream "$UP_PORT")
wait_ready "$UPSTREAM" "$UP_PID" "$WORK/upstream.log"

# push BASE REPO: pushes the image (blobs in $WORK/img) monolithically, then the manifest as tag v1.
push() {
    local base=$1 repo=$2 f d loc
    for f in "$WORK"/img/sha256-*; do
        d=sha256:${f##*/sha256-}
        loc=$(curl -sS -D - -o /dev/null -X POST "$base/v2/$repo/blobs/uploads/" | tr -d '\r' |
            awk -F': ' 'tolower($1)=="location" { print $2 }')
        [[ $loc == http* ]] || loc=$base$loc
        [[ $loc == *\?* ]] && loc="$loc&digest=$d" || loc="$loc?digest=$d"
        [[ $(curl -sS -o /dev/null -w '%{http_code}' -H 'Expect:' -H 'Content-Type: application/octet-stream' \
            -T "$f" "$loc") == 201 ]] || die "blob push to $base/$repo failed"
    done
    [[ $(curl -sS -o /dev/null -w '%{http_code}' -X PUT -H "Content-Type: application/vnd.oci.image.manifest.v1+json" \
        --data-binary @"$WORK/img/manifest.json" "$base/v2/$repo/manifests/v1") == 201 ]] ||
        die "manifest push to $base/$repo failed"
}

mkdir "$WORK/img"
log "writing a $((LAYERS * LAYER_MB)) MiB image ($LAYERS layers of $LAYER_MB MiB)"
python3 - "$WORK/img" "$LAYERS" "$LAYER_MB" <<'EOF'
import hashlib, json, os, sys
out, n, mb = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
def put(b):
    d = hashlib.sha256(b).hexdigest()
    open(os.path.join(out, "sha256-" + d), "wb").write(b)
    return {"digest": "sha256:" + d, "size": len(b)}
layers = []
for _ in range(n):
    l = put(os.urandom(mb << 20))
    l["mediaType"] = "application/vnd.oci.image.layer.v1.tar+gzip"
    layers.append(l)
cfg = put(json.dumps({"architecture": "amd64", "os": "linux",
                      "rootfs": {"type": "layers", "diff_ids": [l["digest"] for l in layers]}}).encode())
cfg["mediaType"] = "application/vnd.oci.image.config.v1+json"
m = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
     "config": cfg, "layers": layers}
open(os.path.join(out, "manifest.json"), "w").write(json.dumps(m))
EOF
push "$UPSTREAM" library/big
# A second image with one more 64 MiB layer for the concurrent cold pulls.
ONE=$WORK/one
mkdir "$ONE"
head -c $((LAYER_MB << 20)) /dev/urandom >"$ONE/blob"
ONE_DIGEST=sha256:$(sha256sum "$ONE/blob" | cut -d' ' -f1)
mv "$ONE/blob" "$WORK/img/sha256-${ONE_DIGEST#sha256:}"
push "$UPSTREAM" library/one
rm -f "$WORK"/img/sha256-*

ACCEPT='Accept: application/vnd.oci.image.manifest.v1+json'
# pull BASE REPO: manifest by tag, then the blobs three at a time; prints the wall time in s.
pull() {
    local base=$1 repo=$2 t0 args=() d
    t0=$(now)
    curl -sS -f -H "$ACCEPT" -o "$WORK/pulled.json" "$base/v2/$repo/manifests/v1"
    for d in $(jq -r '.config.digest, .layers[].digest' "$WORK/pulled.json"); do
        args+=(-o /dev/null "$base/v2/$repo/blobs/$d")
    done
    curl -sS -f --no-progress-meter --parallel --parallel-max 3 "${args[@]}"
    awk -v a="$t0" -v b="$(now)" 'BEGIN { printf "%.3f\n", b - a }'
}

MIRROR_PORT=$(free_port)
MIRROR=http://127.0.0.1:$MIRROR_PORT
# mirror KIND: a fresh mirror (berth or peer) of $UPSTREAM; prints its PID.
mirror() {
    local pid
    if [[ $1 == berth ]]; then pid=$(berth_mirror berth-mirror "$MIRROR_PORT")
    else pid=$(registry peer-mirror "$MIRROR_PORT" "$UPSTREAM"); fi
    wait_ready "$MIRROR" "$pid" "$WORK/$1.log"
    echo "$pid"
}
prefix() { [[ $1 == berth ]] && echo hub/ || true; }

# cold S KIND: a fresh mirror, one cold pull of library/big through it (into $WORK/S.t.cold.KIND).
cold() {
    local pid
    pid=$(mirror "$2")
    pull "$MIRROR" "$(prefix "$2")library/big" >>"$WORK/$1.t.cold.$2"
    stop "$pid"
}

# concurrent KIND N: a fresh mirror, N clients GET the one blob at once; prints
# "WALL UPSTREAM-GETS OK-CLIENTS WARM-WALL" (the last: the same N clients again, cached).
concurrent() {
    local kind=$1 n=$2 pid mark t0 i ok=0 clients=() wall warm
    pid=$(mirror "$kind")
    mark=$(wc -l <"$WORK/upstream.access")
    t0=$(now)
    for i in $(seq 1 "$n"); do
        curl -sS -o "$WORK/c.$i" "$MIRROR/v2/$(prefix "$kind")library/one/blobs/$ONE_DIGEST" 2>/dev/null &
        clients+=($!)
    done
    wait "${clients[@]}" 2>/dev/null || true
    wall=$(awk -v a="$t0" -v b="$(now)" 'BEGIN { printf "%.3f", b - a }')
    for i in $(seq 1 "$n"); do
        [[ $(sha256sum "$WORK/c.$i" | cut -d' ' -f1) == "${ONE_DIGEST#sha256:}" ]] && ok=$((ok + 1))
        rm -f "$WORK/c.$i"
    done
    # The same burst again, now cached: what fanning the blob out costs on its own.
    t0=$(now)
    clients=()
    for i in $(seq 1 "$n"); do
        curl -sS -o "$WORK/c.$i" "$MIRROR/v2/$(prefix "$kind")library/one/blobs/$ONE_DIGEST" 2>/dev/null &
        clients+=($!)
    done
    wait "${clients[@]}" 2>/dev/null || true
    warm=$(awk -v a="$t0" -v b="$(now)" 'BEGIN { printf "%.3f", b - a }')
    rm -f "$WORK"/c.*
    stop "$pid"
    echo "$wall $(tail -n +"$((mark + 1))" "$WORK/upstream.access" | grep -c "\"GET /v2/library/one/blobs/$ONE_DIGEST ") $ok $warm"
}

# scenario S ROUNDS CONCURRENT-ROUNDS: cold pulls direct / through berth / through the peer,
# alternating, then 1 and $CONCURRENT concurrent cold pulls of one blob through each mirror.
scenario() {
    local s=$1 rounds=$2 crounds=$3 r kind w g o ww
    log "[$s] cold pulls: direct, through berth, through the peer mirror ($rounds rounds)"
    for r in $(seq 1 "$rounds"); do
        pull "$UPSTREAM" library/big >>"$WORK/$s.t.cold.direct"
        cold "$s" berth
        cold "$s" peer
        log "[$s] round $r: direct $(tail -1 "$WORK/$s.t.cold.direct") s, berth $(tail -1 "$WORK/$s.t.cold.berth") s, peer $(tail -1 "$WORK/$s.t.cold.peer") s"
    done
    log "[$s] concurrent cold pulls of one $LAYER_MB MiB blob: 1 and $CONCURRENT clients ($crounds rounds)"
    for r in $(seq 1 "$crounds"); do
        for kind in berth peer; do
            read -r w g o ww < <(concurrent "$kind" 1)
            echo "$w" >>"$WORK/$s.t.one.$kind"
            read -r w g o ww < <(concurrent "$kind" "$CONCURRENT")
            echo "$w" >>"$WORK/$s.t.many.$kind"
            echo "$ww" >>"$WORK/$s.t.warm.$kind"
            echo "$g" >>"$WORK/$s.g.many.$kind"
            echo "$o" >>"$WORK/$s.o.many.$kind"
            log "[$s] round $r $kind: 1 client $(tail -1 "$WORK/$s.t.one.$kind") s; $CONCURRENT clients $w s, $g upstream GETs, $o/$CONCURRENT byte-identical; again cached $ww s"
        done
    done
}

DIRECT=$UPSTREAM
pull "$UPSTREAM" library/big >/dev/null # the upstream's files in the page cache for everyone
scenario loopback "$ROUNDS" 3

log "warm pulls: berth's cache against an image hosted in berth"
pid=$(mirror berth)
pull "$MIRROR" hub/library/big >/dev/null
mkdir -p "$WORK/img"
for d in $(jq -r '.config.digest, .layers[].digest' "$WORK/pulled.json"); do
    curl -sS -f -o "$WORK/img/sha256-${d#sha256:}" "$UPSTREAM/v2/library/big/blobs/$d"
done
cp "$WORK/pulled.json" "$WORK/img/manifest.json"
push "$MIRROR" team/big
rm -f "$WORK"/img/sha256-*
for r in $(seq 1 "$ROUNDS"); do
    pull "$MIRROR" hub/library/big >>"$WORK/t.warm.berth"
    pull "$MIRROR" team/big >>"$WORK/t.warm.hosted"
done
stop "$pid"

# The same through a link like a site's to Docker Hub: WAN_MBPS shared by every connection,
# WAN_CONNECT_MS per new connection (bench/wan_relay.py in front of the upstream).
RELAY_PORT=$(free_port)
python3 "$ROOT/bench/wan_relay.py" "$RELAY_PORT" "$UP_PORT" "$WAN_MBPS" "$WAN_CONNECT_MS" &
RELAY_PID=$!
UPSTREAM=http://127.0.0.1:$RELAY_PORT
wait_ready "$UPSTREAM" "$RELAY_PID" "$WORK/relay.log"
scenario wan "$WAN_ROUNDS" 2
stop "$RELAY_PID"
UPSTREAM=$DIRECT

med() { median <"$WORK/$1"; }
range() { sort -g "$WORK/$1" | awk 'NR==1 { lo = $1 } { hi = $1 } END { printf "%s-%s", lo, hi }'; }
cell() { echo "$(med "$1") ($(range "$1"))"; }
MB=$((LAYERS * LAYER_MB))
table() { # S LABEL
    local s=$1
    echo "| $2: cold $MB MiB image, straight from the upstream | $(cell "$s.t.cold.direct") | | |"
    echo "| $2: cold $MB MiB image through berth | $(cell "$s.t.cold.berth") | direct | $(ratio "$(med "$s.t.cold.berth")" "$(med "$s.t.cold.direct")") |"
    echo "| $2: cold $MB MiB image through the peer mirror | $(cell "$s.t.cold.peer") | direct | $(ratio "$(med "$s.t.cold.peer")" "$(med "$s.t.cold.direct")") |"
    echo "| $2: 1 cold pull of a $LAYER_MB MiB blob, berth | $(cell "$s.t.one.berth") | | |"
    echo "| $2: $CONCURRENT concurrent cold pulls of it, berth | $(cell "$s.t.many.berth") | 1 pull | $(ratio "$(med "$s.t.many.berth")" "$(med "$s.t.one.berth")") |"
    echo "| $2: the same $CONCURRENT pulls again, cached in berth | $(cell "$s.t.warm.berth") | cold ÷ cached | $(ratio "$(med "$s.t.many.berth")" "$(med "$s.t.warm.berth")") |"
    echo "| $2: 1 cold pull of a $LAYER_MB MiB blob, peer mirror | $(cell "$s.t.one.peer") | | |"
    echo "| $2: $CONCURRENT concurrent cold pulls of it, peer mirror | $(cell "$s.t.many.peer") | 1 pull | $(ratio "$(med "$s.t.many.peer")" "$(med "$s.t.one.peer")") |"
    echo "| $2: the same $CONCURRENT pulls again, cached in the peer | $(cell "$s.t.warm.peer") | cold ÷ cached | $(ratio "$(med "$s.t.many.peer")" "$(med "$s.t.warm.peer")") |"
}
{
    echo "$(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) CPUs, berth $("$BERTH_BIN" --version | awk '{print $NF}'), docker-registry $(docker-registry --version | awk '{print $NF}') as upstream and as the peer mirror (\`proxy: remoteurl\`). Seconds of wall time: median (range). Loopback: $ROUNDS rounds, 3 of the concurrent pulls. WAN: the upstream behind bench/wan_relay.py, $WAN_MBPS MiB/s shared, $WAN_CONNECT_MS ms per new connection; $WAN_ROUNDS rounds, 2 of the concurrent pulls."
    echo
    echo "| Pull | Time (s) | Against | Ratio |"
    echo "|---|---|---|---|"
    table loopback loopback
    echo "| loopback: warm $MB MiB image from berth's cache | $(cell t.warm.berth) | hosted in berth | $(ratio "$(med t.warm.berth)" "$(med t.warm.hosted)") |"
    echo "| loopback: the same image hosted in berth | $(cell t.warm.hosted) | | |"
    table wan WAN
    echo
    for s in loopback wan; do
        echo "Upstream GETs of the blob per $CONCURRENT concurrent cold pulls ($s): berth $(paste -sd, "$WORK/$s.g.many.berth"), peer mirror $(paste -sd, "$WORK/$s.g.many.peer"). Clients that received the exact bytes: berth $(paste -sd, "$WORK/$s.o.many.berth"), peer mirror $(paste -sd, "$WORK/$s.o.many.peer") of $CONCURRENT."
        echo
    done
} | tee "${BENCH_OUT:-/dev/null}"
