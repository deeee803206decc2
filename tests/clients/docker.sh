#!/usr/bin/env bash
# Real-client tests: docker CLI + dockerd and containerd's ctr against a live berth.
#
# Starts its own berth on a free loopback port and a private dockerd (vfs storage, no bridge,
# no iptables, its own sockets under a short temp dir) whose containerd child also serves ctr.
# Test images are generated locally (mkimages.py) and loaded with `docker load` from a
# docker-archive written by skopeo: no network beyond loopback. Prints one PASS/FAIL line per
# check, then "N passed, M failed". Exits non-zero on any failure.
#
#   tests/clients/docker.sh
#
# Environment:
#   BERTH=/path/to/berth   use this binary (default: cargo build --release, target/release/berth)
#   KEEP=1                 keep the temp dir (berth and dockerd logs) for inspection
#
# Needs root (dockerd); apt-get installs docker.io, containerd, skopeo... when missing.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
T0=$(date +%s)
# Shared helpers: apt_install need stop_berth free_port start_berth log_since log_mark
# start_dockerd stop_dockerd dockerd_failure remove_workdir pass fail check eq.
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# ---------------------------------------------------------------------------------------------
# Tools

if [ "$(id -u)" != 0 ]; then
    echo "docker.sh runs a private dockerd: run it as root" >&2
    exit 2
fi

need curl:curl jq:jq python3:python3 skopeo:skopeo sha256sum:coreutils \
    docker:docker.io dockerd:docker.io containerd:containerd ctr:containerd

if [ -z "${BERTH:-}" ]; then
    (cd "$ROOT" && cargo build --release --quiet --bin berth)
    BERTH=${CARGO_TARGET_DIR:-$ROOT/target}/release/berth
fi
[ -x "$BERTH" ] || { echo "no berth binary at $BERTH" >&2; exit 2; }
T1=$(date +%s)
echo "setup (tools, build): $((T1 - T0))s"

# ---------------------------------------------------------------------------------------------
# Temp dir, berth, dockerd, cleanup

# Short: dockerd and containerd put unix sockets under it (sun_path is limited to 108 bytes).
W=/tmp/bd.$(od -An -N4 -tx1 /dev/urandom | tr -d ' \n')
mkdir -m 700 "$W"
D=$W/d # dockerd's data-root, exec-root, socket, config
mkdir "$D"
cleanup() {
    local rc=$?
    stop_dockerd || true
    if [ -n "$BERTH_PID" ] && kill -0 "$BERTH_PID" 2>/dev/null; then
        stop_berth || true
    fi
    remove_workdir
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

LOG=$W/berth.log
start_berth
REG=127.0.0.1:$PORT
URL=http://$REG
echo "berth $REG (pid $BERTH_PID), data dir $W/data"

# Client configuration isolated from the host's.
POLICY=$W/policy.json
echo '{"default":[{"type":"insecureAcceptAnything"}]}' >"$POLICY"
export REGISTRY_AUTH_FILE=$W/auth.json
echo '{"auths":{}}' >"$REGISTRY_AUTH_FILE"
export DOCKER_CONFIG=$W/docker-config # no credential helpers, no host auths
mkdir "$DOCKER_CONFIG"
echo '{}' >"$DOCKER_CONFIG/config.json"
SKOPEO=(skopeo --policy "$POLICY")
TLS=--tls-verify=false

export DOCKER_HOST=unix://$D/docker.sock
DOCKERD_LOG=$W/dockerd.log
CTR_SOCK=$D/exec/containerd/containerd.sock
CTR=(ctr -a "$CTR_SOCK" -n berth)

MT_OCI_MANIFEST=application/vnd.oci.image.manifest.v1+json
MT_OCI_INDEX=application/vnd.oci.image.index.v1+json
MT_DOCKER_MANIFEST=application/vnd.docker.distribution.manifest.v2+json
MT_DOCKER_LIST=application/vnd.docker.distribution.manifest.list.v2+json
ACCEPT_ALL=(-H "Accept: $MT_OCI_MANIFEST" -H "Accept: $MT_OCI_INDEX"
    -H "Accept: $MT_DOCKER_MANIFEST" -H "Accept: $MT_DOCKER_LIST")

# reg_manifest REPO REF: GETs the manifest; checks that Docker-Content-Digest is the sha256 of
# the body and prints "DIGEST MEDIA-TYPE".
reg_manifest() {
    local body=$W/manifest.body hdr=$W/manifest.hdr digest
    curl -sS -f -D "$hdr" -o "$body" "${ACCEPT_ALL[@]}" "$URL/v2/$1/manifests/$2"
    digest=$(tr -d '\r' <"$hdr" | awk -F': ' 'tolower($1)=="docker-content-digest" { print $2 }')
    eq "sha256:$(sha256sum "$body" | cut -d' ' -f1)" "$digest" "sha256 of GET $1:$2 body"
    echo "$digest $(jq -r .mediaType "$body")"
}

# ---------------------------------------------------------------------------------------------
# Test images (OCI layout, generated locally)

LAYOUT=$W/layout
python3 "$HERE/mkimages.py" "$LAYOUT" >"$W/images.json"
IMG=$(jq -r .img.manifest "$W/images.json")
IMG_CONFIG=$(jq -r .img.config "$W/images.json")
IMG_DIFF_IDS=$(jq -c .img.diff_ids "$W/images.json")
MULTI=$(jq -r .multi.index "$W/images.json")
echo "images: img=$IMG (3 layers) multi=$MULTI (linux/amd64, linux/arm64)"

# ---------------------------------------------------------------------------------------------
# Preparation with skopeo: the multi-arch index and the OCI image in berth, a docker-archive

prep_skopeo() {
    "${SKOPEO[@]}" copy --all --dest-tls-verify=false "oci:$LAYOUT:multi" "docker://$REG/dtest/multi:v1"
    eq "$(reg_manifest dtest/multi v1)" "$MULTI $MT_OCI_INDEX" "dtest/multi:v1"
    "${SKOPEO[@]}" copy --dest-tls-verify=false "oci:$LAYOUT:img" "docker://$REG/dtest/oci:v1"
    eq "$(reg_manifest dtest/oci v1)" "$IMG $MT_OCI_MANIFEST" "dtest/oci:v1"
    "${SKOPEO[@]}" copy "oci:$LAYOUT:img" "docker-archive:$W/img.tar:berth-test/img:v1"
    ls -l "$W/img.tar"
}
check "skopeo: push multi-arch index and OCI image to berth, write docker-archive" prep_skopeo

# ---------------------------------------------------------------------------------------------
# dockerd

T_DOCKERD=$(date +%s)
if start_dockerd --insecure-registry "$REG"; then
    pass "dockerd starts ($(dockerd --version | cut -d, -f1), client $(docker version --format '{{.Client.Version}}'), $(($(date +%s) - T_DOCKERD))s)"
    DOCKER_OK=1
else
    fail "dockerd starts ($(dockerd_failure); environment problem, not berth: dockerd log tail below)"
    tail -n 30 "$DOCKERD_LOG" | awk '{ print "      | " $0 }'
    DOCKER_OK=0
fi

# ---------------------------------------------------------------------------------------------
# docker

APP=$REG/dtest/app
IMG_ID=$IMG_CONFIG # docker's image ID is the config digest

docker_load() {
    docker load -i "$W/img.tar"
    eq "$(docker image inspect --format '{{.Id}}' berth-test/img:v1)" "$IMG_ID" "image ID after load"
    eq "$(docker image inspect --format '{{json .RootFS.Layers}}' berth-test/img:v1)" "$IMG_DIFF_IDS" "RootFS.Layers"
}

docker_push() {
    local out digest
    docker tag berth-test/img:v1 "$APP:v1"
    out=$(docker push "$APP:v1")
    echo "$out"
    digest=$(sed -n 's/^v1: digest: \(sha256:[0-9a-f]\{64\}\) size: [0-9]*$/\1/p' <<<"$out")
    [ -n "$digest" ] || { echo "no 'v1: digest: sha256:... size: N' line"; return 1; }
    eq "$(grep -c ': Pushed$' <<<"$out")" 3 "layers reported 'Pushed'"
    echo "$digest" >"$W/app.digest"
    eq "$(reg_manifest dtest/app v1)" "$digest $MT_DOCKER_MANIFEST" "registry manifest for dtest/app:v1"
    # Recompressed by dockerd, so layer digests differ from the layout's; content is equal.
    eq "$("${SKOPEO[@]}" inspect "$TLS" --config "docker://$APP:v1" | jq -c .rootfs.diff_ids)" \
        "$IMG_DIFF_IDS" "diff_ids of the pushed image"
    eq "$(jq -r .config.digest "$W/manifest.body")" "$IMG_CONFIG" "config digest in pushed manifest"
}

docker_repush() {
    local out mark
    mark=$(log_mark)
    out=$(docker push "$APP:v1")
    echo "$out"
    eq "$(grep -c ': Layer already exists$' <<<"$out")" 3 "layers reported 'Layer already exists'"
    grep -qx "v1: digest: $(cat "$W/app.digest") size: [0-9]*" <<<"$out" ||
        { echo "digest line missing or changed"; return 1; }
    log_since "$mark" >"$W/repush.log"
    eq "$(jq -s '[.[] | select(.method=="PATCH" or .method=="POST")] | length' "$W/repush.log")" 0 \
        "upload requests (POST/PATCH) during re-push"
}

docker_push_tag2() {
    local out
    docker tag berth-test/img:v1 "$APP:v2"
    out=$(docker push "$APP:v2")
    echo "$out"
    eq "$(grep -c ': Layer already exists$' <<<"$out")" 3 "layers reported 'Layer already exists'"
    grep -qx "v2: digest: $(cat "$W/app.digest") size: [0-9]*" <<<"$out" ||
        { echo "no 'v2: digest: $(cat "$W/app.digest")' line"; return 1; }
    eq "$(reg_manifest dtest/app v2 | cut -d' ' -f1)" "$(cat "$W/app.digest")" "dtest/app:v2 digest"
    eq "$(curl -sS -f "$URL/v2/dtest/app/tags/list" | jq -c .)" '{"name":"dtest/app","tags":["v1","v2"]}' "tags list"
}

docker_rmi() {
    docker rmi "$APP:v1" "$APP:v2" berth-test/img:v1
    if docker image inspect "$IMG_ID" >/dev/null 2>&1; then
        echo "image $IMG_ID still present after rmi"
        return 1
    fi
}

# docker_pull_check REF REPO DIGEST: pulls REF, checks the "Digest:" line and image inspect.
docker_pull_check() {
    local ref=$1 repo=$2 digest=$3 out
    out=$(docker pull "$ref")
    echo "$out"
    grep -qx "Digest: $digest" <<<"$out" || { echo "no 'Digest: $digest' line"; return 1; }
    out=$(docker image inspect "$ref")
    eq "$(jq -r '.[0].Id' <<<"$out")" "$IMG_ID" "Id"
    eq "$(jq -c '.[0].RootFS.Layers' <<<"$out")" "$IMG_DIFF_IDS" "RootFS.Layers"
    eq "$(jq -r '.[0].Os + "/" + .[0].Architecture' <<<"$out")" linux/amd64 platform
    jq -e --arg d "$repo@$digest" '.[0].RepoDigests | index($d)' <<<"$out" >/dev/null ||
        { echo "RepoDigests $(jq -c '.[0].RepoDigests' <<<"$out") lacks $repo@$digest"; return 1; }
}

docker_pull_tag() { docker_pull_check "$APP:v1" "$APP" "$(cat "$W/app.digest")"; }

docker_pull_digest() {
    local digest
    digest=$(cat "$W/app.digest")
    docker rmi "$APP:v1"
    docker image inspect "$IMG_ID" >/dev/null 2>&1 && { echo "image still present after rmi"; return 1; }
    docker_pull_check "$APP@$digest" "$APP" "$digest"
}

docker_pull_oci() {
    docker rmi -f "$IMG_ID"
    docker_pull_check "$REG/dtest/oci:v1" "$REG/dtest/oci" "$IMG"
}

# docker_pull_multi ARCH: pulls the multi-arch index for one platform.
docker_pull_multi() {
    local arch=$1 want out
    want=$(jq -c --arg a "$arch" '.multi[$a].diff_ids // empty' "$W/images.json")
    out=$(docker pull --platform "linux/$arch" "$REG/dtest/multi:v1")
    echo "$out"
    grep -qx "Digest: $MULTI" <<<"$out" || { echo "no 'Digest: $MULTI' line"; return 1; }
    out=$(docker image inspect "$REG/dtest/multi:v1")
    eq "$(jq -r '.[0].Architecture' <<<"$out")" "$arch" Architecture
    eq "$(jq -r '.[0].Id' <<<"$out")" "$(jq -r --arg a "$arch" '.multi[$a].config' "$W/images.json")" "Id (config of $arch)"
    eq "$(jq -c '.[0].RootFS.Layers' <<<"$out")" "$want" "RootFS.Layers"
    docker rmi "$REG/dtest/multi:v1"
}

docker_manifest_inspect() {
    local out
    out=$(docker manifest inspect --insecure "$APP:v1")
    echo "$out"
    eq "$(jq -r .mediaType <<<"$out")" "$MT_DOCKER_MANIFEST" mediaType
    eq "$(jq -r .config.digest <<<"$out")" "$IMG_CONFIG" "config digest"
    out=$(docker manifest inspect --insecure "$REG/dtest/multi:v1")
    echo "$out"
    eq "$(jq -c '[.manifests[].platform.architecture]' <<<"$out")" '["amd64","arm64"]' "index platforms"
}

if [ "$DOCKER_OK" = 1 ]; then
    check "docker load (docker-archive from skopeo)" docker_load
    check "docker tag + push (digest line, 3 layers Pushed, registry manifest equal)" docker_push
    check "docker re-push: every layer 'Layer already exists', no upload requests" docker_repush
    check "docker push of a second tag of the same image" docker_push_tag2
    check "docker rmi" docker_rmi
    check "docker pull by tag + image inspect (Id, RepoDigests)" docker_pull_tag
    check "docker pull by digest + image inspect (Id, RepoDigests)" docker_pull_digest
    check "docker pull of an OCI manifest pushed by skopeo" docker_pull_oci
    check "docker pull --platform linux/amd64 of the multi-arch index" docker_pull_multi amd64
    check "docker pull --platform linux/arm64 of the multi-arch index" docker_pull_multi arm64
    check "docker manifest inspect --insecure (image and index)" docker_manifest_inspect
else
    echo "docker and ctr checks not run: dockerd did not start"
fi

# ---------------------------------------------------------------------------------------------
# containerd ctr (the containerd dockerd started; namespace "berth", native snapshotter)

# ctr_image_digest REF: the target digest `ctr images ls` shows for REF.
ctr_image_digest() { "${CTR[@]}" images ls | awk -v r="$1" '$1==r { print $3 }'; }

ctr_pull() {
    local digest
    digest=$(cat "$W/app.digest")
    "${CTR[@]}" images pull --plain-http --snapshotter native "$APP:v1"
    "${CTR[@]}" images ls
    eq "$(ctr_image_digest "$APP:v1")" "$digest" "ctr images ls digest"
    "${CTR[@]}" images check | grep -F "$APP:v1"
}

ctr_pull_digest() {
    local digest
    digest=$(cat "$W/app.digest")
    "${CTR[@]}" images pull --plain-http --snapshotter native "$APP@$digest"
    eq "$(ctr_image_digest "$APP@$digest")" "$digest" "ctr images ls digest"
}

ctr_push() {
    local digest
    digest=$(cat "$W/app.digest")
    "${CTR[@]}" images push --plain-http "$REG/dtest/ctr-copy:v1" "$APP:v1"
    eq "$(reg_manifest dtest/ctr-copy v1)" "$digest $MT_DOCKER_MANIFEST" "GET /v2/dtest/ctr-copy/manifests/v1"
    eq "$("${SKOPEO[@]}" inspect "$TLS" --config "docker://$REG/dtest/ctr-copy:v1" | jq -c .rootfs.diff_ids)" \
        "$IMG_DIFF_IDS" "diff_ids"
}

ctr_pull_all_platforms() {
    local arch d
    "${CTR[@]}" images pull --plain-http --snapshotter native --all-platforms "$REG/dtest/multi:v1"
    "${CTR[@]}" images ls
    eq "$(ctr_image_digest "$REG/dtest/multi:v1")" "$MULTI" "ctr images ls digest"
    # Every blob of both platforms is in the content store, with the right bytes.
    for arch in amd64 arm64; do
        for d in $(jq -r --arg a "$arch" '.multi[$a] | .manifest, .config, .layers[]' "$W/images.json"); do
            eq "sha256:$("${CTR[@]}" content get "$d" | sha256sum | cut -d' ' -f1)" "$d" "$arch content $d"
        done
    done
}

ctr_push_index() {
    "${CTR[@]}" images push --plain-http "$REG/dtest/ctr-multi:v1" "$REG/dtest/multi:v1"
    eq "$(reg_manifest dtest/ctr-multi v1)" "$MULTI $MT_OCI_INDEX" "GET /v2/dtest/ctr-multi/manifests/v1"
    for arch in amd64 arm64; do
        eq "$("${SKOPEO[@]}" --override-arch "$arch" --override-os linux inspect "$TLS" "docker://$REG/dtest/ctr-multi:v1" | jq -c .Layers)" \
            "$(jq -c --arg a "$arch" '.multi[$a].layers' "$W/images.json")" "$arch layers"
    done
}

if [ "$DOCKER_OK" = 1 ] && [ -S "$CTR_SOCK" ]; then
    echo "ctr: $(ctr --version), socket $CTR_SOCK"
    check "ctr images pull --plain-http by tag, images ls shows the pushed digest" ctr_pull
    check "ctr images pull --plain-http by digest" ctr_pull_digest
    check "ctr images push to another repository (same manifest digest via GET)" ctr_push
    check "ctr images pull --all-platforms of the multi-arch index (all blobs fetched)" ctr_pull_all_platforms
    check "ctr images push of the multi-arch index (same index digest)" ctr_push_index
elif [ "$DOCKER_OK" = 1 ]; then
    fail "containerd socket of dockerd at $CTR_SOCK (not found: ctr checks not run)"
fi

# ---------------------------------------------------------------------------------------------

stop_dockerd
if kill -0 "$BERTH_PID" 2>/dev/null; then
    STOP_RC=0
    stop_berth || STOP_RC=$?
    if [ "$STOP_RC" = 0 ]; then
        pass "berth up after all flows, exits 0 on SIGTERM"
    else
        fail "berth up after all flows, exits 0 on SIGTERM (exit status $STOP_RC)"
        tail -n 5 "$LOG" | awk '{ print "      | " $0 }'
    fi
else
    fail "berth up after all flows (it died; log tail below)"
    tail -n 10 "$LOG" | awk '{ print "      | " $0 }'
fi
if jq -e 'select(.level=="ERROR")' "$LOG" >/dev/null 2>&1; then
    echo "berth logged errors:"
    jq -c 'select(.level=="ERROR")' "$LOG" | tail -n 10 | awk '{ print "      | " $0 }'
fi
echo
echo "elapsed: $(($(date +%s) - T1))s of checks, $(($(date +%s) - T0))s in all"
for f in ${FAILURES[@]+"${FAILURES[@]}"}; do
    echo "  failed: $f"
done
echo "$PASSED passed, $FAILED failed"
[ "$FAILED" = 0 ]
