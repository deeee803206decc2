#!/usr/bin/env bash
# Real-client tests: skopeo, podman, oras (PyPI, Python API) and curl against a live berth.
#
# Starts its own berth on a free loopback port with a temporary data dir, builds test images
# as OCI layouts on disk (no network), runs the flows and prints one PASS/FAIL line per check,
# then "N passed, M failed". Exits non-zero on any failure.
#
#   tests/clients/run.sh
#
# Environment:
#   BERTH=/path/to/berth   use this binary (default: cargo build --release, target/release/berth)
#   KEEP=1                 keep the temp dir (server log, layouts) for inspection
#   SKIP_PODMAN=1          skip the podman checks (printed as SKIP, never silently)
#   SKIP_DOCKER=1          do not run tests/clients/docker.sh (docker CLI + dockerd, ctr) at the end
#                          (nor the docker checks of auth.sh)
#   SKIP_AUTH=1            do not run tests/clients/auth.sh (access control: logins, tokens, TLS)
#   SKIP_PROXY=1           do not run tests/clients/proxy.sh (the pull-through cache)
#   SKIP_GC=1              do not run tests/clients/gc.sh (GC under load, scrub)
#   SKIP_PACKAGE=1         do not run tests/clients/package.sh (container image, systemd unit,
#                          Kubernetes manifests)
#   SKIP_SCALEOUT=1        do not run tests/clients/scaleout.sh (berth on S3, Distribution import)
#   BIG_BLOB_MB=1024       size of the large blob round trip, in MiB
#
# Needs root on a fresh machine only to apt-get install missing tools.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
T0=$(date +%s)
BIG_BLOB_MB=${BIG_BLOB_MB:-1024}
# Shared helpers: apt_install need stop_berth free_port start_berth log_since log_mark pass fail
# check eq header verify_layout_blobs layout_ref layout_blob.
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# ---------------------------------------------------------------------------------------------
# Tools

need curl:curl jq:jq python3:python3 skopeo:skopeo podman:podman script:bsdutils \
    sha256sum:coreutils
if ! python3 -c 'import oras.client' 2>/dev/null; then
    python3 -m pip --version >/dev/null 2>&1 || apt_install python3-pip
    echo "installing: oras (PyPI)"
    python3 -m pip install -q oras 2>/dev/null ||
        python3 -m pip install -q --break-system-packages oras
fi

if [ -z "${BERTH:-}" ]; then
    (cd "$ROOT" && cargo build --release --quiet --bin berth)
    BERTH=${CARGO_TARGET_DIR:-$ROOT/target}/release/berth
fi
[ -x "$BERTH" ] || { echo "no berth binary at $BERTH" >&2; exit 2; }
T1=$(date +%s)
echo "setup (tools, build): $((T1 - T0))s"

# ---------------------------------------------------------------------------------------------
# Temp dir, server, cleanup

# Lower-case only: podman names an image pulled from oci:DIR after DIR.
W=/tmp/berth-clients.$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')
mkdir -m 700 "$W"
cleanup() {
    local rc=$?
    if [ -n "$BERTH_PID" ] && kill -0 "$BERTH_PID" 2>/dev/null; then
        stop_berth || true
    fi
    if [ "${KEEP:-0}" = 1 ]; then
        echo "kept $W"
    else
        rm -rf "$W"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

LOG=$W/berth.log
start_berth
REG=127.0.0.1:$PORT
URL=http://$REG
echo "berth $(jq -r 'select(.fields.message=="berth ready") | .fields.addr' "$LOG") (pid $BERTH_PID), data dir $W/data"

# Client configuration isolated from the host's.
POLICY=$W/policy.json
echo '{"default":[{"type":"insecureAcceptAnything"}]}' >"$POLICY"
printf 'unqualified-search-registries = []\n' >"$W/registries.conf"
export CONTAINERS_REGISTRIES_CONF=$W/registries.conf
export REGISTRY_AUTH_FILE=$W/auth.json
echo '{"auths":{}}' >"$REGISTRY_AUTH_FILE"
SKOPEO=(skopeo --policy "$POLICY")
SRC_TLS=--src-tls-verify=false
DST_TLS=--dest-tls-verify=false
TLS=--tls-verify=false

# ---------------------------------------------------------------------------------------------
# Test images (OCI layout, generated locally)

LAYOUT=$W/layout
python3 "$HERE/mkimages.py" "$LAYOUT" >"$W/images.json"
IMG=$(jq -r .img.manifest "$W/images.json")
IMG_SIZE=$(jq -r .img.manifest_size "$W/images.json")
IMG_CONFIG=$(jq -r .img.config "$W/images.json")
IMG_LAYERS=$(jq -c .img.layers "$W/images.json")
IMG_DIFF_IDS=$(jq -c .img.diff_ids "$W/images.json")
MULTI=$(jq -r .multi.index "$W/images.json")
MT_MANIFEST=application/vnd.oci.image.manifest.v1+json
echo "images: img=$IMG (3 layers) multi=$MULTI (linux/amd64, linux/arm64)"

# ---------------------------------------------------------------------------------------------
# skopeo

skopeo_push() {
    "${SKOPEO[@]}" copy "$DST_TLS" "oci:$LAYOUT:img" "docker://$REG/clients/img:v1"
    # No conversion was needed, so the registry must hold the layout's manifest byte-exact.
    eq "$(header "$URL/v2/clients/img/manifests/v1" docker-content-digest -H "Accept: $MT_MANIFEST")" \
        "$IMG" "pushed manifest digest"
}
check "skopeo copy oci:layout -> docker:// (push 3-layer image by tag)" skopeo_push

skopeo_inspect_tag() {
    local out
    out=$("${SKOPEO[@]}" inspect "$TLS" "docker://$REG/clients/img:v1")
    eq "$(jq -r .Digest <<<"$out")" "$IMG" Digest
    eq "$(jq -c .Layers <<<"$out")" "$IMG_LAYERS" Layers
    eq "$(jq -r '.Os + "/" + .Architecture' <<<"$out")" linux/amd64 platform
    eq "$(jq -r '.Labels["org.example.berth-test"]' <<<"$out")" amd64 label
}
check "skopeo inspect by tag" skopeo_inspect_tag

skopeo_inspect_digest() {
    local out
    out=$("${SKOPEO[@]}" inspect "$TLS" "docker://$REG/clients/img@$IMG")
    eq "$(jq -r .Digest <<<"$out")" "$IMG" Digest
    eq "$(jq -c .Layers <<<"$out")" "$IMG_LAYERS" Layers
    eq "sha256:$("${SKOPEO[@]}" inspect "$TLS" --raw "docker://$REG/clients/img@$IMG" | sha256sum | cut -d' ' -f1)" \
        "$IMG" "raw manifest digest"
    eq "sha256:$("${SKOPEO[@]}" inspect "$TLS" --config --raw "docker://$REG/clients/img@$IMG" | sha256sum | cut -d' ' -f1)" \
        "$IMG_CONFIG" "raw config digest"
}
check "skopeo inspect by digest (manifest and config byte-exact)" skopeo_inspect_digest

# skopeo_pull REF DIR: pulls docker://REF into oci:DIR:pulled and compares with the original.
skopeo_pull() {
    local dir=$2 m
    "${SKOPEO[@]}" copy "$SRC_TLS" "docker://$1" "oci:$dir:pulled"
    m=$(layout_ref "$dir" pulled)
    eq "$m" "$IMG" "pulled manifest digest"
    eq "$(layout_blob "$dir" "$m" | jq -c '[.layers[].digest]')" "$IMG_LAYERS" "layer digests"
    eq "$(layout_blob "$dir" "$m" | jq -r .config.digest)" "$IMG_CONFIG" "config digest"
    verify_layout_blobs "$dir"
}
check "skopeo copy docker:// -> oci: (pull by tag, layer digests equal)" \
    skopeo_pull "$REG/clients/img:v1" "$W/pull-tag"
check "skopeo copy docker:// -> oci: (pull by digest, layer digests equal)" \
    skopeo_pull "$REG/clients/img@$IMG" "$W/pull-digest"

skopeo_repush() {
    local mark out l short
    mark=$(log_mark)
    # skopeo only prints per-blob progress ("skipped: already exists") on a terminal: give it one.
    out=$(script -qec "stty cols 200 rows 50; ${SKOPEO[*]} copy $DST_TLS oci:$LAYOUT:img docker://$REG/clients/img:v1" \
        /dev/null </dev/null | tr '\r' '\n' | sed 's/\x1b\[[0-9;]*[A-Za-z]//g')
    echo "$out" | grep -v '^\s*$' | sort -u
    for l in $(jq -r '.[]' <<<"$IMG_LAYERS"); do
        short=${l#sha256:}
        short=${short:0:12}
        grep -q "Copying blob $short skipped: already exists" <<<"$out" ||
            { echo "no 'Copying blob $short skipped: already exists' line"; return 1; }
    done
    # And the server saw no layer bytes: no upload session was even opened for a layer.
    log_since "$mark" >"$W/repush.log"
    eq "$(jq -s '[.[] | select(.method=="PATCH")] | length' "$W/repush.log")" 0 "PATCH count"
    eq "$(jq -s '[.[] | select(.method=="PUT" and (.path|contains("/blobs/uploads/")) and .bytes_in > 100000)] | length' "$W/repush.log")" \
        0 "layer-sized upload PUTs"
}
check "skopeo re-push reports 'skipped: already exists' for every layer" skopeo_repush

skopeo_cross_repo() {
    local mark mounts
    mark=$(log_mark)
    "${SKOPEO[@]}" copy "$SRC_TLS" "$DST_TLS" \
        "docker://$REG/clients/img:v1" "docker://$REG/clients/img-copy:v1"
    eq "$("${SKOPEO[@]}" inspect "$TLS" "docker://$REG/clients/img-copy:v1" | jq -c '[.Digest, .Layers]')" \
        "$("${SKOPEO[@]}" inspect "$TLS" "docker://$REG/clients/img:v1" | jq -c '[.Digest, .Layers]')" \
        "inspect of copy vs original"
    # A POST answered 201 is a cross-repository mount (skopeo never uploads monolithically).
    mounts=$(log_since "$mark" | jq -s '[.[] | select(.method=="POST" and .path=="/v2/clients/img-copy/blobs/uploads/" and .status==201)] | length')
    echo "mount POSTs answered 201: $mounts"
    [ "$mounts" -ge 3 ] || { echo "expected the 3 layers to be mounted, saw $mounts mounts"; return 1; }
}
check "skopeo copy between repositories (layers mounted: POST ?mount= -> 201)" skopeo_cross_repo

skopeo_multiarch_push() {
    local raw
    "${SKOPEO[@]}" copy --all "$DST_TLS" "oci:$LAYOUT:multi" "docker://$REG/clients/multi:v1"
    raw=$("${SKOPEO[@]}" inspect "$TLS" --raw "docker://$REG/clients/multi:v1")
    eq "sha256:$(printf '%s' "$raw" | sha256sum | cut -d' ' -f1)" "$MULTI" "index digest"
    eq "$(jq -r .mediaType <<<"$raw")" application/vnd.oci.image.index.v1+json "index mediaType"
    eq "$(jq -c '[.manifests[].platform.architecture]' <<<"$raw")" '["amd64","arm64"]' platforms
    for arch in amd64 arm64; do
        eq "$("${SKOPEO[@]}" --override-arch "$arch" --override-os linux inspect "$TLS" "docker://$REG/clients/multi:v1" | jq -c '[.Architecture, .Layers]')" \
            "$(jq -c --arg a "$arch" '[$a, .multi[$a].layers]' "$W/images.json")" "$arch image"
    done
}
check "skopeo copy --all (push multi-arch index, both platforms resolvable)" skopeo_multiarch_push

skopeo_multiarch_pull() {
    local dir=$W/multi-pull arch m
    "${SKOPEO[@]}" copy --multi-arch all "$SRC_TLS" "docker://$REG/clients/multi:v1" "oci:$dir:pulled"
    eq "$(layout_ref "$dir" pulled)" "$MULTI" "pulled index digest"
    for arch in amd64 arm64; do
        m=$(jq -r --arg a "$arch" '.multi[$a].manifest' "$W/images.json")
        eq "$(layout_blob "$dir" "$m" | jq -c '[.layers[].digest]')" \
            "$(jq -c --arg a "$arch" '.multi[$a].layers' "$W/images.json")" "$arch layers"
    done
    verify_layout_blobs "$dir"
}
check "skopeo copy --multi-arch all (pull multi-arch index back)" skopeo_multiarch_pull

skopeo_list_tags() {
    "${SKOPEO[@]}" copy "$SRC_TLS" "$DST_TLS" "docker://$REG/clients/img:v1" "docker://$REG/clients/img:v2"
    eq "$("${SKOPEO[@]}" list-tags "$TLS" "docker://$REG/clients/img" | jq -c '[.Repository, .Tags]')" \
        "[\"$REG/clients/img\",[\"v1\",\"v2\"]]" "list-tags"
}
check "skopeo list-tags" skopeo_list_tags

skopeo_delete_tag() {
    local err
    "${SKOPEO[@]}" delete "$TLS" "docker://$REG/clients/img-copy:v1"
    if err=$("${SKOPEO[@]}" inspect "$TLS" "docker://$REG/clients/img-copy:v1" 2>&1); then
        echo "inspect still succeeds after delete"
        return 1
    fi
    grep -qi "manifest unknown" <<<"$err" || { echo "unexpected error: $err"; return 1; }
    # Other repositories holding the same manifest are untouched.
    eq "$("${SKOPEO[@]}" inspect "$TLS" "docker://$REG/clients/img:v1" | jq -r .Digest)" "$IMG" "clients/img:v1"
}
check "skopeo delete by tag, then inspect fails (other repo unaffected)" skopeo_delete_tag

skopeo_delete_digest() {
    local ref
    "${SKOPEO[@]}" delete "$TLS" "docker://$REG/clients/multi@$MULTI"
    for ref in "clients/multi@$MULTI" "clients/multi:v1"; do
        if "${SKOPEO[@]}" inspect "$TLS" --raw "docker://$REG/$ref" >/dev/null 2>&1; then
            echo "inspect $ref still succeeds after delete"
            return 1
        fi
    done
    eq "$(curl -s -o /dev/null -w '%{http_code}' "$URL/v2/clients/multi/manifests/$MULTI")" 404 "GET deleted index"
}
check "skopeo delete by digest, then inspect fails" skopeo_delete_digest

# ---------------------------------------------------------------------------------------------
# podman (root, vfs, no daemon)

PODMAN_DIR=$W/podman
PODMAN=(podman --root "$PODMAN_DIR/root" --runroot "$PODMAN_DIR/run" --storage-driver vfs
    --events-backend file --cgroup-manager cgroupfs --tmpdir "$PODMAN_DIR/tmp")
mkdir -p "$PODMAN_DIR/tmp"
export CONTAINERS_STORAGE_CONF=$PODMAN_DIR/storage.conf
printf '[storage]\ndriver = "vfs"\nrunroot = "%s"\ngraphroot = "%s"\n' \
    "$PODMAN_DIR/run" "$PODMAN_DIR/root" >"$CONTAINERS_STORAGE_CONF"
PODMAN_REF=$REG/clients/podman
IMG_ID=${IMG_CONFIG#sha256:}

podman_pull_layout() {
    "${PODMAN[@]}" pull --signature-policy "$POLICY" "oci:$LAYOUT:img"
    eq "$("${PODMAN[@]}" image inspect --format '{{.Id}}' "$IMG_ID")" "$IMG_ID" "image id"
}

podman_push() {
    local pushed
    "${PODMAN[@]}" tag "$IMG_ID" "$PODMAN_REF:v1"
    "${PODMAN[@]}" push "$TLS" --signature-policy "$POLICY" --digestfile "$W/podman.digest" "$PODMAN_REF:v1"
    pushed=$(cat "$W/podman.digest")
    echo "podman pushed $pushed"
    eq "$(header "$URL/v2/clients/podman/manifests/v1" docker-content-digest \
        -H "Accept: $MT_MANIFEST" -H 'Accept: application/vnd.docker.distribution.manifest.v2+json')" \
        "$pushed" "registry digest for the pushed tag"
    # Whatever podman recompressed, the image content (diff_ids) is the original's.
    eq "$("${SKOPEO[@]}" inspect "$TLS" --config "docker://$PODMAN_REF:v1" | jq -c .rootfs.diff_ids)" \
        "$IMG_DIFF_IDS" "diff_ids of the pushed image"
}

podman_rmi() {
    "${PODMAN[@]}" rmi -f "$IMG_ID"
    eq "$("${PODMAN[@]}" images -q)" "" "local images after rmi"
}

podman_pull_check() {
    local ref=$1 pushed out
    pushed=$(cat "$W/podman.digest")
    "${PODMAN[@]}" pull "$TLS" --signature-policy "$POLICY" "$ref"
    out=$("${PODMAN[@]}" image inspect "$ref")
    eq "$(jq -r '.[0].Id' <<<"$out")" "$IMG_ID" "image id (config digest)"
    eq "$(jq -r '.[0].Digest' <<<"$out")" "$pushed" "manifest digest"
    eq "$(jq -c '.[0].RootFS.Layers' <<<"$out")" "$IMG_DIFF_IDS" "RootFS layers"
    eq "$(jq -r '.[0].Os + "/" + .[0].Architecture' <<<"$out")" linux/amd64 platform
    jq -e --arg d "$PODMAN_REF@$pushed" '.[0].RepoDigests | index($d)' <<<"$out" >/dev/null ||
        { echo "RepoDigests lacks $PODMAN_REF@$pushed"; return 1; }
}

podman_pull_digest() {
    "${PODMAN[@]}" rmi -a -f
    podman_pull_check "$PODMAN_REF@$(cat "$W/podman.digest")"
}

if [ "${SKIP_PODMAN:-0}" = 1 ]; then
    echo "SKIP: podman checks (SKIP_PODMAN=1 given)"
elif ! "${PODMAN[@]}" info >"$W/podman-info.out" 2>&1; then
    fail "podman usable in this environment (podman info failed: reason below, not a berth issue)"
    tail -n 25 "$W/podman-info.out" | awk '{ print "      | " $0 }'
else
    check "podman pull oci:layout (load test image)" podman_pull_layout
    check "podman push to berth" podman_push
    check "podman rmi" podman_rmi
    check "podman pull by tag + image inspect" podman_pull_check "$PODMAN_REF:v1"
    check "podman pull by digest + image inspect" podman_pull_digest
fi

# ---------------------------------------------------------------------------------------------
# oras (PyPI, Python API): artifact with artifactType + subject, referrers, pull

ARTIFACT_TYPE=application/vnd.berth.test.sbom.v1+json
ARTIFACT_TYPE_Q=${ARTIFACT_TYPE//+/%2B} # '+' in a query string means a space
ARTIFACT_FILE=$W/oras/sbom.json
mkdir -p "$W/oras"
python3 -c 'import json, os; print(json.dumps({"sbom": "berth-test", "nonce": os.urandom(16).hex()}))' \
    >"$ARTIFACT_FILE"

oras_push() {
    python3 "$HERE/oras_artifact.py" push "$REG" clients/img sbom "$ARTIFACT_FILE" \
        application/vnd.berth.test.sbom.layer.v1+json "$ARTIFACT_TYPE" "$IMG" "$IMG_SIZE" \
        "$MT_MANIFEST" >"$W/oras.digest"
    echo "artifact $(cat "$W/oras.digest")"
    eq "$(curl -s "$URL/v2/clients/img/manifests/$(cat "$W/oras.digest")" -H "Accept: $MT_MANIFEST" |
        jq -c '[.artifactType, .subject.digest]')" "[\"$ARTIFACT_TYPE\",\"$IMG\"]" "stored artifact manifest"
}
check "oras push artifact with artifactType and subject" oras_push

oras_referrers() {
    local art body
    art=$(cat "$W/oras.digest")
    body=$(curl -sS -f "$URL/v2/clients/img/referrers/$IMG")
    echo "$body"
    eq "$(jq -r .mediaType <<<"$body")" application/vnd.oci.image.index.v1+json "referrers mediaType"
    eq "$(jq -c --arg d "$art" '[.manifests[] | select(.digest==$d) | [.artifactType, .mediaType]]' <<<"$body")" \
        "[[\"$ARTIFACT_TYPE\",\"$MT_MANIFEST\"]]" "referrer entry"
    eq "$(curl -sS -f "$URL/v2/clients/img/referrers/$IMG?artifactType=$ARTIFACT_TYPE_Q" | jq -c '[.manifests[].digest]')" \
        "[\"$art\"]" "filtered referrers"
    eq "$(header "$URL/v2/clients/img/referrers/$IMG?artifactType=$ARTIFACT_TYPE_Q" oci-filters-applied -X GET)" \
        artifactType "OCI-Filters-Applied"
    eq "$(curl -sS -f "$URL/v2/clients/img/referrers/$IMG?artifactType=application/x-other" | jq -c '.manifests')" \
        "[]" "referrers filtered by another type"
}
check "GET /v2/<name>/referrers/<digest> lists the artifact with its artifactType" oras_referrers

oras_pull() {
    python3 "$HERE/oras_artifact.py" pull "$REG" "clients/img@$(cat "$W/oras.digest")" "$W/oras/out"
    cmp "$ARTIFACT_FILE" "$W/oras/out/sbom.json"
}
check "oras pull artifact by digest (bytes equal)" oras_pull

# ---------------------------------------------------------------------------------------------
# Large blob round trip with curl

BIG=$W/big.bin
BIG_BYTES=$((BIG_BLOB_MB * 1024 * 1024))
big_upload() {
    local digest loc sep code
    head -c "$BIG_BYTES" /dev/urandom | tee "$BIG" | sha256sum | cut -d' ' -f1 >"$W/big.sha"
    digest=sha256:$(cat "$W/big.sha")
    loc=$(curl -sS -D - -o /dev/null -X POST "$URL/v2/clients/big/blobs/uploads/" | tr -d '\r' |
        awk -F': ' 'tolower($1)=="location" { print $2 }')
    [ -n "$loc" ] || { echo "no Location from POST"; return 1; }
    case $loc in http*) ;; *) loc=$URL$loc ;; esac
    case $loc in *\?*) sep='&' ;; *) sep='?' ;; esac
    code=$(curl -sS -o "$W/big.put" -D "$W/big.hdr" -w '%{http_code}' -H 'Expect:' \
        -H 'Content-Type: application/octet-stream' -T "$BIG" "$loc${sep}digest=$digest")
    eq "$code" 201 "PUT status"
    eq "$(tr -d '\r' <"$W/big.hdr" | awk -F': ' 'tolower($1)=="docker-content-digest" { print $2 }')" \
        "$digest" "Docker-Content-Digest"
    rm -f "$BIG"
    eq "$(header "$URL/v2/clients/big/blobs/$digest" content-length)" "$BIG_BYTES" "HEAD Content-Length"
}
check "${BIG_BLOB_MB} MiB blob upload (POST + PUT ?digest=, streamed from file)" big_upload

big_download() {
    local want
    want=$(cat "$W/big.sha")
    eq "$(curl -sS -f "$URL/v2/clients/big/blobs/sha256:$want" | sha256sum | cut -d' ' -f1)" "$want" \
        "sha256 of downloaded bytes"
}
check "${BIG_BLOB_MB} MiB blob download (sha256 of the bytes matches)" big_download
rm -f "$BIG"

# ---------------------------------------------------------------------------------------------

# In this shell, not a check's subshell: only the parent can `wait` for berth's status.
if kill -0 "$BERTH_PID" 2>/dev/null; then
    STOP_RC=0
    stop_berth || STOP_RC=$?
    if [ "$STOP_RC" = 0 ] && grep -q 'shutting down' "$LOG"; then
        pass "berth up after all flows, exits 0 on SIGTERM"
    else
        fail "berth up after all flows, exits 0 on SIGTERM (exit status $STOP_RC)"
        tail -n 5 "$LOG" | awk '{ print "      | " $0 }'
    fi
else
    fail "berth up after all flows (it died; log tail below)"
    tail -n 10 "$LOG" | awk '{ print "      | " $0 }'
fi
echo
echo "elapsed: $(($(date +%s) - T1))s of checks, $(($(date +%s) - T0))s in all"
for f in ${FAILURES[@]+"${FAILURES[@]}"}; do
    echo "  failed: $f"
done
echo "$PASSED passed, $FAILED failed"

# Errors answered before the request body is read, with curl, python-requests and a client
# that writes everything before reading: a separate script with its own berths.
EARLY_RC=0
echo
echo "== tests/clients/early_errors.py"
python3 "$HERE/early_errors.py" "$BERTH" || EARLY_RC=$?

# docker CLI + dockerd and containerd ctr: a separate script with its own berth and dockerd.
DOCKER_RC=0
if [ "${SKIP_DOCKER:-0}" = 1 ]; then
    echo "SKIP: docker/ctr checks (SKIP_DOCKER=1 given)"
else
    echo
    echo "== tests/clients/docker.sh"
    BERTH=$BERTH KEEP=${KEEP:-0} bash "$HERE/docker.sh" || DOCKER_RC=$?
fi

# Access control (basic and token auth, CI tokens, TLS): a separate script with its own berths.
AUTH_RC=0
if [ "${SKIP_AUTH:-0}" = 1 ]; then
    echo "SKIP: access-control checks (SKIP_AUTH=1 given)"
else
    echo
    echo "== tests/clients/auth.sh"
    BERTH=$BERTH KEEP=${KEEP:-0} SKIP_DOCKER=${SKIP_DOCKER:-0} SKIP_PODMAN=${SKIP_PODMAN:-0} \
        bash "$HERE/auth.sh" || AUTH_RC=$?
fi
# The pull-through cache (skopeo, podman, ctr hosts.toml mirrors, dockerd registry-mirrors,
# docker-registry as the upstream): a separate script with its own berth and upstream.
PROXY_RC=0
if [ "${SKIP_PROXY:-0}" = 1 ]; then
    echo "SKIP: pull-through cache checks (SKIP_PROXY=1 given)"
else
    echo
    echo "== tests/clients/proxy.sh"
    BERTH=$BERTH KEEP=${KEEP:-0} SKIP_DOCKER=${SKIP_DOCKER:-0} SKIP_PODMAN=${SKIP_PODMAN:-0} \
        bash "$HERE/proxy.sh" || PROXY_RC=$?
fi
# Garbage collection under load with skopeo, and scrub: a separate script with its own berth.
GC_RC=0
if [ "${SKIP_GC:-0}" = 1 ]; then
    echo "SKIP: garbage-collection checks (SKIP_GC=1 given)"
else
    echo
    echo "== tests/clients/gc.sh"
    BERTH=$BERTH KEEP=${KEEP:-0} bash "$HERE/gc.sh" || GC_RC=$?
fi
# Packaging (the container image built and run with podman, the systemd unit, the Kubernetes
# manifests): a separate script with its own podman storage and containers.
PACKAGE_RC=0
if [ "${SKIP_PACKAGE:-0}" = 1 ]; then
    echo "SKIP: packaging checks (SKIP_PACKAGE=1 given)"
else
    echo
    echo "== tests/clients/package.sh"
    BERTH=$BERTH KEEP=${KEEP:-0} SKIP_PODMAN=${SKIP_PODMAN:-0} bash "$HERE/package.sh" ||
        PACKAGE_RC=$?
fi
# Shared storage: berth on S3 (Garage), and a Distribution registry imported into it.
SCALEOUT_RC=0
if [ "${SKIP_SCALEOUT:-0}" = 1 ]; then
    echo "SKIP: shared-storage checks (SKIP_SCALEOUT=1 given)"
else
    echo
    echo "== tests/clients/scaleout.sh"
    BERTH=$BERTH KEEP=${KEEP:-0} SKIP_PODMAN=${SKIP_PODMAN:-0} bash "$HERE/scaleout.sh" ||
        SCALEOUT_RC=$?
fi
echo
echo "== deploy/check.sh (promtool: alert rules, their unit tests, dashboard expressions)"
DEPLOY_RC=0
bash "$ROOT/deploy/check.sh" || DEPLOY_RC=$?
[ "$FAILED" = 0 ] && [ "$EARLY_RC" = 0 ] && [ "$DOCKER_RC" = 0 ] && [ "$AUTH_RC" = 0 ] &&
    [ "$PROXY_RC" = 0 ] && [ "$GC_RC" = 0 ] && [ "$PACKAGE_RC" = 0 ] && [ "$DEPLOY_RC" = 0 ] &&
    [ "$SCALEOUT_RC" = 0 ]
