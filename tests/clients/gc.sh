#!/usr/bin/env bash
# Real-client tests of online garbage collection: skopeo pushes, pulls and deletes images
# that share layers, four at a time, while `berth gc` runs in a loop beside the server. At the
# end every image still tagged pulls back with every layer digest intact, `berth gc --dry-run`
# predicts exactly what the next run reclaims, and the blob files on disk are exactly those
# the remaining images reference. Then `berth scrub` finds a layer altered on disk, a skopeo
# pull is refused it (404), and a skopeo push heals it. Prints one PASS/FAIL line per check, then
# "N passed, M failed". Exits non-zero on any failure.
#
#   tests/clients/gc.sh
#
# Environment:
#   BERTH=/path/to/berth   use this binary (default: cargo build --release, target/release/berth)
#   KEEP=1                 keep the temp dir (logs, layouts) for inspection
#   IMAGES=120             how many images to push
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
IMAGES=${IMAGES:-120}
GRACE=10
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

need curl:curl jq:jq python3:python3 skopeo:skopeo sha256sum:coreutils

if [ -z "${BERTH:-}" ]; then
    (cd "$ROOT" && cargo build --release --quiet --bin berth)
    BERTH=${CARGO_TARGET_DIR:-$ROOT/target}/release/berth
fi
[ -x "$BERTH" ] || { echo "no berth binary at $BERTH" >&2; exit 2; }

W=/tmp/berth-gc.$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')
mkdir -m 700 "$W"
GC_PID=
cleanup() {
    local rc=$?
    [ -n "$GC_PID" ] && kill "$GC_PID" 2>/dev/null || true
    if [ -n "$BERTH_PID" ] && kill -0 "$BERTH_PID" 2>/dev/null; then
        stop_berth || true
    fi
    remove_workdir
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

LOG=$W/berth.log
DATA=$W/data
start_berth
REG=127.0.0.1:$PORT
URL=http://$REG
POLICY=$W/policy.json
echo '{"default":[{"type":"insecureAcceptAnything"}]}' >"$POLICY"
SKOPEO=(skopeo --policy "$POLICY")

LAYOUT=$W/layout
python3 "$HERE/mkmany.py" "$LAYOUT" "$IMAGES" >"$W/images.json"
echo "berth on $REG; $IMAGES images with shared layers in $LAYOUT"

# Blob files on disk, one digest per line, sorted.
disk_blobs() {
    find "$DATA/blobs" -type f | awk -F/ '{ print $(NF-2) ":" $NF }' | sort
}

# push_pull_delete WORKER: pushes its share of the images, pulls each back, deletes every
# third one (its manifest, by digest) right away.
push_pull_delete() {
    local w=$1 i ref digest
    for ((i = w; i < IMAGES; i += 4)); do
        ref=i$i
        "${SKOPEO[@]}" copy -q --dest-tls-verify=false "oci:$LAYOUT:$ref" \
            "docker://$REG/gc/w$w:$ref" >/dev/null
        rm -rf "$W/pull-$w"
        "${SKOPEO[@]}" copy -q --src-tls-verify=false "docker://$REG/gc/w$w:$ref" \
            "oci:$W/pull-$w:x" >/dev/null
        digest=$(jq -r --arg r "$ref" '.[$r][0]' "$W/images.json")
        [ "$(jq -r '.manifests[0].digest' "$W/pull-$w/index.json")" = "$digest" ]
        if ((i % 3 == 0)); then
            "${SKOPEO[@]}" delete --tls-verify=false "docker://$REG/gc/w$w@$digest"
            echo "deleted $ref"
        else
            echo "kept w$w $ref"
        fi
    done
}

gc_under_load() {
    (
        n=0
        while true; do
            "$BERTH" gc --grace "${GRACE}s" --data-dir "$DATA" --json >"$W/gc.last" 2>>"$W/gc.log"
            n=$((n + 1))
            echo "$n" >"$W/gc.runs"
        done
    ) &
    GC_PID=$!
    local pids=() w rc=0
    for w in 0 1 2 3; do
        push_pull_delete "$w" >"$W/worker-$w.log" 2>&1 &
        pids+=($!)
    done
    for w in "${!pids[@]}"; do
        wait "${pids[$w]}" || { echo "worker $w failed:"; tail -5 "$W/worker-$w.log"; rc=1; }
    done
    kill "$GC_PID"
    wait "$GC_PID" 2>/dev/null || true
    GC_PID=
    echo "GC ran $(cat "$W/gc.runs") times during the load"
    [ "$(cat "$W/gc.runs")" -ge 2 ]
    return "$rc"
}
check "skopeo push, pull and delete $IMAGES images (4 at a time) while berth gc loops" gc_under_load

# Every image still tagged pulls back whole.
tagged_images_pull_back() {
    local w ref digest n=0
    cat "$W"/worker-*.log | awk '/^kept/ { print $2, $3 }' >"$W/kept"
    while read -r w ref; do
        rm -rf "$W/verify"
        "${SKOPEO[@]}" copy -q --src-tls-verify=false "docker://$REG/gc/$w:$ref" \
            "oci:$W/verify:x" >/dev/null
        digest=$(jq -r --arg r "$ref" '.[$r][0]' "$W/images.json")
        eq "$(jq -r '.manifests[0].digest' "$W/verify/index.json")" "$digest" "$w:$ref"
        verify_layout_blobs "$W/verify" >/dev/null
        n=$((n + 1))
    done <"$W/kept"
    echo "$n tagged images verified"
    [ "$n" -gt 0 ]
}
check "every tagged image pulls back byte-identical after GC under load" tagged_images_pull_back

# After the grace, a dry run predicts exactly what the run reclaims, and what stays on disk
# is exactly what the tagged images reference.
after_grace() {
    sleep $((GRACE + 1))
    local plan done
    plan=$("$BERTH" gc --dry-run --grace "${GRACE}s" --data-dir "$DATA" --json)
    done=$("$BERTH" gc --grace "${GRACE}s" --data-dir "$DATA" --json)
    echo "dry run: $(jq -c '{blobs, bytes}' <<<"$plan"); run: $(jq -c '{blobs, bytes}' <<<"$done")"
    eq "$(jq .bytes <<<"$done")" "$(jq .bytes <<<"$plan")" "bytes reclaimed vs predicted"
    eq "$(jq .blobs <<<"$done")" "$(jq .blobs <<<"$plan")" "blobs removed vs predicted"
    awk '{ print $2 }' "$W/kept" | while read -r ref; do
        jq -r --arg r "$ref" '.[$r][]' "$W/images.json"
    done | sort -u >"$W/expected"
    disk_blobs >"$W/ondisk"
    diff "$W/expected" "$W/ondisk"
}
check "after the grace: dry run = reclaimed, and only referenced blobs remain on disk" after_grace

scrub_and_heal() {
    local ref digest layer path out rc=0
    ref=$(awk 'NR==1 { print $2 }' "$W/kept")
    w=$(awk 'NR==1 { print $1 }' "$W/kept")
    layer=$(jq -r --arg r "$ref" '.[$r][4]' "$W/images.json")
    path=$DATA/blobs/sha256/${layer:7:2}/${layer#sha256:}
    printf 'X' | dd of="$path" bs=1 seek=100 conv=notrunc status=none
    out=$("$BERTH" scrub --data-dir "$DATA") || rc=$?
    echo "$out"
    eq "$rc" 1 "scrub exit status"
    grep -q "corrupt $layer" <<<"$out"
    eq "$(curl -s -o /dev/null -w '%{http_code}' "$URL/v2/gc/$w/blobs/$layer")" 404 "GET quarantined"
    rm -rf "$W/heal"
    if "${SKOPEO[@]}" copy -q --src-tls-verify=false "docker://$REG/gc/$w:$ref" "oci:$W/heal:x"; then
        echo "a pull of a quarantined layer succeeded"
        return 1
    fi
    "${SKOPEO[@]}" copy -q --dest-tls-verify=false "oci:$LAYOUT:$ref" "docker://$REG/gc/$w:$ref"
    rm -rf "$W/heal"
    "${SKOPEO[@]}" copy -q --src-tls-verify=false "docker://$REG/gc/$w:$ref" "oci:$W/heal:x"
    verify_layout_blobs "$W/heal"
    "$BERTH" scrub --data-dir "$DATA"
}
check "scrub quarantines a layer altered on disk; a pull is refused it; a push heals it" scrub_and_heal

echo "$PASSED passed, $FAILED failed"
[ "$FAILED" = 0 ]
