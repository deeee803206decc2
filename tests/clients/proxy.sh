#!/usr/bin/env bash
# Real-client tests of the pull-through cache: skopeo, podman, containerd's ctr (hosts.toml
# mirrors, with ?ns= and with override_path) and the docker CLI with a private dockerd whose
# registry-mirrors points at berth.
#
# The upstream standing in for Docker Hub is Debian's docker-registry (Distribution 2.8) on
# loopback, holding library/alpine, library/nginx and library/busybox built locally
# (mkimages.py). berth mirrors it as upstream "hub" (hosts: docker.io) and as its
# default_upstream. Prints one PASS/FAIL line per check, then "N passed, M failed". Exits
# non-zero on any failure.
#
#   tests/clients/proxy.sh
#
# Environment:
#   BERTH=/path/to/berth   use this binary (default: cargo build --release, target/release/berth)
#   KEEP=1                 keep the temp dir (logs) for inspection
#   SKIP_DOCKER=1          skip the dockerd and ctr checks (printed as SKIP)
#   SKIP_PODMAN=1          skip the podman check (printed as SKIP)
#
# Needs root for dockerd; apt-get installs docker-registry, docker.io, skopeo... when missing.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
T0=$(date +%s)
# Shared helpers: apt_install need stop_berth free_port start_berth log_since log_mark
# start_dockerd stop_dockerd dockerd_failure remove_workdir pass fail check eq header
# verify_layout_blobs layout_ref layout_blob.
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

need curl:curl jq:jq python3:python3 skopeo:skopeo podman:podman sha256sum:coreutils \
    docker-registry:docker-registry
if [ "${SKIP_DOCKER:-0}" != 1 ]; then
    need docker:docker.io dockerd:docker.io containerd:containerd ctr:containerd
fi

if [ -z "${BERTH:-}" ]; then
    (cd "$ROOT" && cargo build --release --quiet --bin berth)
    BERTH=${CARGO_TARGET_DIR:-$ROOT/target}/release/berth
fi
[ -x "$BERTH" ] || { echo "no berth binary at $BERTH" >&2; exit 2; }

# ---------------------------------------------------------------------------------------------
# Temp dir, upstream, berth, cleanup

# Short: dockerd and containerd put unix sockets under it (sun_path is limited to 108 bytes).
W=/tmp/bp.$(od -An -N4 -tx1 /dev/urandom | tr -d ' \n')
mkdir -m 700 "$W"
D=$W/d
mkdir "$D"
UP_PID=
cleanup() {
    local rc=$?
    stop_dockerd || true
    if [ -n "$BERTH_PID" ] && kill -0 "$BERTH_PID" 2>/dev/null; then
        stop_berth || true
    fi
    stop_upstream
    remove_workdir
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The upstream: Distribution 2.8 on a free port. Its access log (one combined-format line per
# request) is how checks count what berth asked of it.
UP_PORT=$(free_port)
UP=127.0.0.1:$UP_PORT
UP_ACCESS=$W/upstream.access
cat >"$W/upstream.yml" <<EOF
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $W/upstream-data
http:
  addr: $UP
EOF
start_upstream() {
    # Distribution reads REGISTRY_* variables as configuration (REGISTRY_AUTH_FILE, which
    # skopeo and podman use, would become auth.file): none reach it.
    env $(compgen -e | grep '^REGISTRY_' | sed 's/^/-u /') \
        docker-registry serve "$W/upstream.yml" >>"$UP_ACCESS" 2>>"$W/upstream.log" &
    UP_PID=$!
    for _ in $(seq 1 100); do
        [ "$(curl -s -o /dev/null -w '%{http_code}' "http://$UP/v2/")" = 200 ] && return 0
        sleep 0.1
    done
    echo "docker-registry did not start:" >&2
    cat "$W/upstream.log" >&2
    exit 1
}
stop_upstream() {
    [ -n "$UP_PID" ] || return 0
    kill -TERM "$UP_PID" 2>/dev/null || true
    wait "$UP_PID" 2>/dev/null || true
    UP_PID=
}
# Upstream requests logged after line $1 of its access log, as "METHOD PATH STATUS".
up_mark() { wc -l <"$UP_ACCESS"; }
up_since() { tail -n +"$(($1 + 1))" "$UP_ACCESS" | awk '$6 ~ /^"(GET|HEAD)/ { print substr($6, 2), $7, $9 }'; }
start_upstream

CONFIG=$W/berth.yaml
write_config() { # TAG_TTL
    cat >"$CONFIG" <<EOF
proxy:
  upstreams:
    - name: hub
      url: http://$UP
      hosts: [docker.io, registry-1.docker.io, index.docker.io]
      tag_ttl: $1
  default_upstream: hub
EOF
}
write_config 1h
LOG=$W/berth.log
start_berth --config "$CONFIG"
REG=127.0.0.1:$PORT
URL=http://$REG
echo "berth $REG (pid $BERTH_PID), upstream docker-registry $UP ($(docker-registry --version | awk '{print $NF}'))"

POLICY=$W/policy.json
echo '{"default":[{"type":"insecureAcceptAnything"}]}' >"$POLICY"
printf 'unqualified-search-registries = []\n' >"$W/registries.conf"
export CONTAINERS_REGISTRIES_CONF=$W/registries.conf
export REGISTRY_AUTH_FILE=$W/auth.json
echo '{"auths":{}}' >"$REGISTRY_AUTH_FILE"
export DOCKER_CONFIG=$W/docker-config
mkdir "$DOCKER_CONFIG"
echo '{}' >"$DOCKER_CONFIG/config.json"
SKOPEO=(skopeo --policy "$POLICY")
MT_OCI=application/vnd.oci.image.manifest.v1+json
ACCEPT=(-H "Accept: $MT_OCI" -H "Accept: application/vnd.oci.image.index.v1+json"
    -H "Accept: application/vnd.docker.distribution.manifest.v2+json")

# Access-log lines of berth after mark $1 whose path contains $2, as "METHOD PATH?QUERY STATUS CACHE".
berth_requests() {
    log_since "$1" | jq -r --arg p "$2" \
        'select(.path | contains($p)) | "\(.method) \(.path)?\(.query) \(.status) \(.cache)"'
}

# ---------------------------------------------------------------------------------------------
# The upstream's images

LAYOUT=$W/layout
python3 "$HERE/mkimages.py" "$LAYOUT" >"$W/images.json"
IMG=$(jq -r .img.manifest "$W/images.json")
IMG_LAYERS=$(jq -c .img.layers "$W/images.json")
IMG_CONFIG=$(jq -r .img.config "$W/images.json")
IMG_DIFF_IDS=$(jq -c .img.diff_ids "$W/images.json")
MULTI=$(jq -r .multi.index "$W/images.json")

prep_upstream() {
    local raw
    "${SKOPEO[@]}" copy --dest-tls-verify=false "oci:$LAYOUT:img" "docker://$UP/library/alpine:3.20"
    "${SKOPEO[@]}" copy --dest-tls-verify=false --all "oci:$LAYOUT:multi" "docker://$UP/library/alpine:multi"
    "${SKOPEO[@]}" copy --dest-tls-verify=false "oci:$LAYOUT:img" "docker://$UP/library/nginx:1"
    # A Docker schema 2 manifest: served byte-exact, never converted.
    "${SKOPEO[@]}" copy --dest-tls-verify=false --format v2s2 "oci:$LAYOUT:img" "docker://$UP/library/busybox:1"
    raw=$(curl -sS -f "${ACCEPT[@]}" "http://$UP/v2/library/busybox/manifests/1")
    echo "sha256:$(printf '%s' "$raw" | sha256sum | cut -d' ' -f1)" >"$W/busybox.digest"
    eq "$(jq -r .mediaType <<<"$raw")" application/vnd.docker.distribution.manifest.v2+json "busybox mediaType"
}
check "skopeo: the upstream (docker-registry) holds library/alpine, nginx and busybox" prep_upstream
BUSYBOX=$(cat "$W/busybox.digest")

# ---------------------------------------------------------------------------------------------
# skopeo and podman through the prefix

skopeo_prefix_pull() {
    local dir=$W/pull-prefix m mark up
    mark=$(log_mark)
    up=$(up_mark)
    "${SKOPEO[@]}" copy --src-tls-verify=false "docker://$REG/hub/library/alpine:3.20" "oci:$dir:pulled"
    m=$(layout_ref "$dir" pulled)
    eq "$m" "$IMG" "pulled manifest digest"
    eq "$(layout_blob "$dir" "$m" | jq -c '[.layers[].digest]')" "$IMG_LAYERS" "layer digests"
    verify_layout_blobs "$dir"
    berth_requests "$mark" /manifests/
    berth_requests "$mark" /manifests/3.20 | grep -q ' 200 miss$' || { echo "no manifest miss"; return 1; }
    up_since "$up"
    # A tag miss costs one HEAD (resolve) and one GET by digest upstream, nothing else twice.
    eq "$(up_since "$up" | grep -c '^HEAD /v2/library/alpine/manifests/3.20 ')" 1 "upstream tag HEADs"
    eq "$(up_since "$up" | grep -c '^GET /v2/library/alpine/manifests/3.20 ')" 0 "upstream tag GETs"
    eq "$(up_since "$up" | grep -c "^GET /v2/library/alpine/manifests/$IMG ")" 1 "upstream GETs by digest"
    eq "$(up_since "$up" | grep '^GET /v2/library/alpine/blobs/' | sort | uniq -d)" "" "blobs fetched twice"
}
check "skopeo copy through the prefix /v2/hub/library/alpine (cold: byte-exact, fetched once)" skopeo_prefix_pull

# The three ways in and Docker Hub's library/ normalization land on one cache key.
same_key() {
    local mark up dir=$W/pull-short
    mark=$(log_mark)
    up=$(up_mark)
    "${SKOPEO[@]}" copy --src-tls-verify=false "docker://$REG/hub/alpine:3.20" "oci:$dir:pulled"
    eq "$(layout_ref "$dir" pulled)" "$IMG" "hub/alpine:3.20 digest"
    for path in "hub/alpine/manifests/3.20" "alpine/manifests/3.20?ns=docker.io" \
        "library/alpine/manifests/3.20?ns=registry-1.docker.io" "alpine/manifests/3.20"; do
        eq "$(header "$URL/v2/$path" docker-content-digest "${ACCEPT[@]}")" "$IMG" "digest of $path"
        eq "$(header "$URL/v2/$path" x-berth-cache "${ACCEPT[@]}")" hit "X-Berth-Cache of $path"
    done
    eq "$(header "$URL/v2/alpine/manifests/3.20?ns=docker.io" content-length "${ACCEPT[@]}")" \
        "$(jq -r .img.manifest_size "$W/images.json")" "Content-Length of a HEAD"
    berth_requests "$mark" /v2/ | sort | uniq -c
    eq "$(berth_requests "$mark" /v2/ | grep -v '^GET /v2/? ' | grep -vc ' hit$' || true)" 0 \
        "requests that were not hits"
    eq "$(up_since "$up")" "" "upstream requests"
}
check "hub/alpine, ?ns=docker.io and the default upstream are all hits on library/alpine" same_key

# podman pulls one platform of an index: only that platform's blobs come from upstream.
podman_one_platform() {
    local out up arch
    up=$(up_mark)
    PODMAN=(podman --root "$W/podman/root" --runroot "$W/podman/run" --storage-driver vfs
        --events-backend file --cgroup-manager cgroupfs --tmpdir "$W/podman/tmp")
    mkdir -p "$W/podman/tmp"
    export CONTAINERS_STORAGE_CONF=$W/podman/storage.conf
    printf '[storage]\ndriver = "vfs"\nrunroot = "%s"\ngraphroot = "%s"\n' \
        "$W/podman/run" "$W/podman/root" >"$CONTAINERS_STORAGE_CONF"
    "${PODMAN[@]}" pull --tls-verify=false --signature-policy "$POLICY" --arch amd64 --os linux \
        "$REG/hub/library/alpine:multi"
    out=$("${PODMAN[@]}" image inspect "$REG/hub/library/alpine:multi")
    eq "$(jq -r '.[0].Digest' <<<"$out")" "$MULTI" "index digest"
    eq "$(jq -r '.[0].Architecture' <<<"$out")" amd64 Architecture
    eq "$(jq -c '.[0].RootFS.Layers' <<<"$out")" "$(jq -c '.multi.amd64.diff_ids' "$W/images.json")" "RootFS.Layers"
    up_since "$up"
    for l in $(jq -r '.multi.arm64.layers[]' "$W/images.json"); do
        if up_since "$up" | grep -q "$l"; then
            echo "the arm64 layer $l was fetched from upstream"
            return 1
        fi
    done
    for l in $(jq -r '.multi.amd64.layers[]' "$W/images.json"); do
        eq "$(up_since "$up" | grep -c "^GET /v2/library/alpine/blobs/$l ")" 1 "upstream GETs of $l"
    done
    # The index is kept whole: byte-exact, both platforms listed.
    eq "$(curl -sS "${ACCEPT[@]}" "$URL/v2/hub/library/alpine/manifests/multi" | sha256sum | cut -d' ' -f1)" \
        "${MULTI#sha256:}" "cached index bytes"
}
if [ "${SKIP_PODMAN:-0}" = 1 ]; then
    echo "SKIP: podman check (SKIP_PODMAN=1 given)"
else
    check "podman pull of one platform through the prefix (index whole, other platform never fetched)" \
        podman_one_platform
fi

# ---------------------------------------------------------------------------------------------
# Pushes stay local

push_refused() {
    local err
    if err=$("${SKOPEO[@]}" copy --dest-tls-verify=false "oci:$LAYOUT:img" \
        "docker://$REG/hub/library/alpine:evil" 2>&1); then
        echo "push to the mirror succeeded"
        return 1
    fi
    echo "$err"
    grep -q 'denied' <<<"$err" || { echo "no 'denied' in the error"; return 1; }
    eq "$(curl -sS -X POST "$URL/v2/hub/library/alpine/blobs/uploads/" | jq -r '.errors[0].code')" \
        DENIED "code of a POST to the mirror"
    curl -sS -X POST "$URL/v2/hub/library/alpine/blobs/uploads/" | jq -r '.errors[0].message' | grep -q hub
    eq "$(curl -s -o /dev/null -w '%{http_code}' "$URL/v2/hub/library/alpine/manifests/evil" "${ACCEPT[@]}")" \
        404 "the refused tag"
    "${SKOPEO[@]}" copy --dest-tls-verify=false "oci:$LAYOUT:img" "docker://$REG/team/app:v1"
    eq "$(header "$URL/v2/team/app/manifests/v1" docker-content-digest "${ACCEPT[@]}")" "$IMG" "hosted push"
    eq "$(header "$URL/v2/team/app/manifests/v1" x-berth-cache "${ACCEPT[@]}")" "" "X-Berth-Cache on a hosted repository"
}
check "skopeo push into the mirror is refused (DENIED naming hub); a hosted push works" push_refused

# /metrics after those pulls, parsed by the Prometheus client library's OpenMetrics parser.
if ! python3 -c 'import prometheus_client' 2>/dev/null; then
    echo "installing: prometheus_client (PyPI)"
    python3 -m pip install -q prometheus_client 2>/dev/null ||
        python3 -m pip install -q --break-system-packages prometheus_client
fi
metrics_parsed() {
    python3 "$HERE/metrics_check.py" "$URL" "$ROOT/deploy" hub
}
check "/metrics parses as OpenMetrics: cache hits and misses of hub, pulls, storage, process; every name deploy/ uses is exported" metrics_parsed

# ---------------------------------------------------------------------------------------------
# containerd (ctr) and docker (registry-mirrors)

CTR_SOCK=$D/exec/containerd/containerd.sock
CTR=(ctr -a "$CTR_SOCK" -n proxy)
ctr_image_digest() { "${CTR[@]}" images ls | awk -v r="$1" '$1==r { print $3 }'; }

# hosts.toml for docker.io pointing at berth; the server entry is Docker Hub, out of reach
# here, so a pull that works came from berth.
write_hosts() { # DIR HOST-URL [EXTRA LINE]
    mkdir -p "$1/docker.io"
    printf 'server = "https://registry-1.docker.io"\n\n[host."%s"]\n  capabilities = ["pull", "resolve"]\n%s\n' \
        "$2" "${3:-}" >"$1/docker.io/hosts.toml"
}

ctr_ns() {
    local mark
    write_hosts "$W/hosts-ns" "$URL"
    mark=$(log_mark)
    "${CTR[@]}" images pull --hosts-dir "$W/hosts-ns" --snapshotter native docker.io/library/nginx:1
    eq "$(ctr_image_digest docker.io/library/nginx:1)" "$IMG" "ctr images ls digest"
    berth_requests "$mark" /v2/
    berth_requests "$mark" /v2/library/nginx/manifests/1 | grep -q 'ns=docker.io 200 miss$' ||
        { echo "no manifest miss with ns=docker.io"; return 1; }
    eq "$(berth_requests "$mark" /v2/ | grep -vc 'ns=docker.io' || true)" 0 "requests without ns=docker.io"
    eq "$(berth_requests "$mark" /blobs/ | grep -vc ' 200 ' || true)" 0 "blob requests not answered 200"
}

ctr_override_path() {
    local mark
    write_hosts "$W/hosts-path" "$URL/v2/hub" "  override_path = true"
    mark=$(log_mark)
    "${CTR[@]}" images pull --hosts-dir "$W/hosts-path" --snapshotter native docker.io/library/busybox:1
    eq "$(ctr_image_digest docker.io/library/busybox:1)" "$BUSYBOX" "ctr images ls digest (Docker schema 2, unconverted)"
    berth_requests "$mark" /v2/
    berth_requests "$mark" /v2/hub/library/busybox/manifests/1 | grep -q ' 200 miss$' ||
        { echo "no manifest miss under /v2/hub"; return 1; }
    eq "$(berth_requests "$mark" /v2/ | grep -vc '^[A-Z]* /v2/hub/library/busybox/' || true)" 0 \
        "requests outside /v2/hub/library/busybox"
}

docker_mirror() {
    local out mark up
    mark=$(log_mark)
    up=$(up_mark)
    out=$(docker pull alpine:3.20)
    echo "$out"
    grep -qx "Digest: $IMG" <<<"$out" || { echo "no 'Digest: $IMG' line"; return 1; }
    out=$(docker image inspect alpine:3.20)
    eq "$(jq -r '.[0].Id' <<<"$out")" "$IMG_CONFIG" "image Id"
    eq "$(jq -c '.[0].RootFS.Layers' <<<"$out")" "$IMG_DIFF_IDS" "RootFS.Layers"
    berth_requests "$mark" /v2/
    berth_requests "$mark" /v2/library/alpine/manifests/ | grep -q '^GET .* 200 hit$' ||
        { echo "no manifest hit at the root path"; return 1; }
    # Cached by the skopeo pull: docker's pull cost the upstream nothing.
    eq "$(up_since "$up")" "" "upstream requests"
    eq "$(grep -c 'registry-1.docker.io' "$DOCKERD_LOG" || true)" 0 "dockerd log lines naming Docker Hub"
}

if [ "${SKIP_DOCKER:-0}" = 1 ]; then
    echo "SKIP: ctr and docker checks (SKIP_DOCKER=1 given)"
elif [ "$(id -u)" != 0 ]; then
    fail "ctr and docker checks need root (a private dockerd)"
else
    DOCKERD_LOG=$W/dockerd.log
    export DOCKER_HOST=unix://$D/docker.sock
    if start_dockerd --insecure-registry "$REG" --registry-mirror "$URL"; then
        check "ctr pull docker.io/library/nginx through a hosts.toml mirror (?ns=docker.io)" ctr_ns
        check "ctr pull docker.io/library/busybox through a hosts.toml mirror with override_path" \
            ctr_override_path
        check "docker pull alpine:3.20 through registry-mirrors (a hit, no Docker Hub traffic)" docker_mirror
    else
        fail "dockerd starts ($(dockerd_failure); environment problem, not berth: log tail below)"
        tail -n 30 "$DOCKERD_LOG" | awk '{ print "      | " $0 }'
    fi
fi

# ---------------------------------------------------------------------------------------------
# The upstream goes away; berth restarts without it

upstream_down() {
    local dir=$W/pull-down
    "${SKOPEO[@]}" copy --src-tls-verify=false "docker://$REG/hub/library/alpine:3.20" "oci:$dir:pulled"
    eq "$(layout_ref "$dir" pulled)" "$IMG" "digest with the upstream down"
}

# Restarted with a 1 s tag TTL: the tag is due for revalidation, the upstream is unreachable,
# the cached copy is served and marked stale.
restarted_stale() {
    local dir=$W/pull-restarted
    "${SKOPEO[@]}" copy --src-tls-verify=false "docker://$REG/hub/library/alpine:3.20" "oci:$dir:pulled"
    eq "$(layout_ref "$dir" pulled)" "$IMG" "digest after a restart with the upstream down"
    eq "$(curl -sS -o /dev/null -D - "${ACCEPT[@]}" "$URL/v2/alpine/manifests/3.20" | tr -d '\r' |
        awk -F': ' 'tolower($1)=="x-berth-cache" { print $2 }')" stale "X-Berth-Cache of a GET"
    # Nothing cached and the upstream down: a clear error, not a hang.
    eq "$(curl -sS -m 30 "${ACCEPT[@]}" "$URL/v2/hub/library/redis/manifests/7" | jq -r '.errors[0].code')" \
        UNAVAILABLE "code for an uncached image"
    "$BERTH" cache stats --config "$CONFIG" --data-dir "$W/data" | tee "$W/stats.out"
    grep -q '^hub ' "$W/stats.out"
}

# In this shell, not a check's subshell: only the parent can stop and start its children.
stop_upstream
check "upstream stopped: a cached pull still works" upstream_down
stop_berth
write_config 1s
start_berth --config "$CONFIG"
REG=127.0.0.1:$PORT
URL=http://$REG
sleep 1.1
check "berth restarted with the upstream down: cached pulls work (stale), uncached get 503" restarted_stale

# ---------------------------------------------------------------------------------------------

if kill -0 "$BERTH_PID" 2>/dev/null; then
    STOP_RC=0
    stop_berth || STOP_RC=$?
    if [ "$STOP_RC" = 0 ]; then
        pass "berth up after all flows, exits 0 on SIGTERM"
    else
        fail "berth up after all flows, exits 0 on SIGTERM (exit status $STOP_RC)"
    fi
else
    fail "berth up after all flows (it died; log tail below)"
    tail -n 10 "$LOG" | awk '{ print "      | " $0 }'
fi
echo "elapsed: $(($(date +%s) - T0))s"
for f in ${FAILURES[@]+"${FAILURES[@]}"}; do
    echo "  failed: $f"
done
echo "$PASSED passed, $FAILED failed"
[ "$FAILED" = 0 ]
