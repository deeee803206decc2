#!/usr/bin/env bash
# Real-client tests of berth on shared storage, and of switching to it:
#  - a Distribution registry (Debian's docker-registry) filled by skopeo (an OCI image, a
#    multi-arch index, a Docker schema 2 image) is imported with `berth import-distribution`
#    into berth storing its blobs in Garage (S3); skopeo pulls every tag back byte-exact, and
#    a second import copies nothing;
#  - skopeo and podman push to and pull from berth on S3, and blob downloads may be
#    redirected to presigned URLs, which skopeo follows;
#  - on three Garage nodes with replication 3, one node killed, pushes and pulls continue;
#  - two berth replicas on one PostgreSQL database and one bucket, behind a TCP round-robin
#    load balancer (lb.py): skopeo, podman and docker push and pull through it, each
#    replica serves what the other took, and with one replica killed the other carries on.
# Prints one PASS/FAIL line per check, then "N passed, M failed". Exits non-zero on any failure.
#
#   tests/clients/scaleout.sh
#
# Environment:
#   BERTH=/path/to/berth   use this binary (default: cargo build --release, target/release/berth)
#   KEEP=1                 keep the temp dir (logs) for inspection
#   SKIP_PODMAN=1          skip the podman check (printed as SKIP)
#   TEST_S3_*        an S3 server to use (scripts/test.sh starts Garage and sets them);
#                          without them this script starts its own Garage node
#   TEST_PG_URL            a PostgreSQL server to use (scripts/test.sh starts one); without
#                          it this script starts its own
#   SKIP_DOCKER=1          skip the docker check (printed as SKIP)
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
. "$HERE/lib.sh"
. "$ROOT/scripts/garage.sh"
. "$ROOT/scripts/postgres.sh"

need curl:curl jq:jq python3:python3 skopeo:skopeo podman:podman sha256sum:coreutils \
    docker-registry:docker-registry openssl:openssl

if [ -z "${BERTH:-}" ]; then
    (cd "$ROOT" && cargo build --release --quiet --bin berth)
    BERTH=${CARGO_TARGET_DIR:-$ROOT/target}/release/berth
fi
[ -x "$BERTH" ] || { echo "no berth binary at $BERTH" >&2; exit 2; }

W=/tmp/berth-so.$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')
mkdir -m 700 "$W"
UP_PID=
LB_PID=
REPLICA_PIDS=()
D=$W/d # dockerd's data-root, exec-root, socket, config
DOCKERD_PID=
CONTAINERD_PID=
DOCKERD_LOG=$W/dockerd.log
cleanup() {
    local rc=$?
    if [ -n "$BERTH_PID" ] && kill -0 "$BERTH_PID" 2>/dev/null; then
        stop_berth || true
    fi
    [ -n "$UP_PID" ] && kill "$UP_PID" 2>/dev/null || true
    [ -n "$LB_PID" ] && kill "$LB_PID" 2>/dev/null || true
    local p
    # Every replica ever started, those started inside a check (a subshell) too.
    if [ -f "$W/replica.pids" ]; then
        while read -r p; do kill -KILL "$p" 2>/dev/null || true; done <"$W/replica.pids"
    fi
    [ -n "$DOCKERD_PID" ] && { stop_dockerd || true; }
    pg_stop
    garage_stop
    remove_workdir
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [ -z "${TEST_S3_ENDPOINT:-}" ]; then
    garage_install
    garage_start "$W/garage" 1
fi
PREFIX=so-$(od -An -N4 -tx1 /dev/urandom | tr -d ' \n')

POLICY=$W/policy.json
echo '{"default":[{"type":"insecureAcceptAnything"}]}' >"$POLICY"
SKOPEO=(skopeo --policy "$POLICY")
printf 'unqualified-search-registries = []\n' >"$W/registries.conf"
export CONTAINERS_REGISTRIES_CONF=$W/registries.conf
export REGISTRY_AUTH_FILE=$W/auth.json
echo '{"auths":{}}' >"$REGISTRY_AUTH_FILE"
ACCEPT=(-H "Accept: application/vnd.oci.image.manifest.v1+json"
    -H "Accept: application/vnd.oci.image.index.v1+json"
    -H "Accept: application/vnd.docker.distribution.manifest.v2+json"
    -H "Accept: application/vnd.docker.distribution.manifest.list.v2+json")

# berth's configuration: blobs in the S3 bucket under $PREFIX, metadata in the data dir.
write_config() { # REDIRECT
    cat >"$W/berth.yaml" <<EOF
storage:
  driver: s3
  s3:
    bucket: $TEST_S3_BUCKET
    prefix: $PREFIX
    region: garage
    endpoint: $TEST_S3_ENDPOINT
    path_style: true
    access_key_id: $TEST_S3_KEY_ID
    secret_access_key_file: $W/s3.secret
    redirect: $1
EOF
}
printf '%s\n' "$TEST_S3_SECRET" >"$W/s3.secret"
write_config false
LOG=$W/berth.log
DATA_DIR=$W/data

LAYOUT=$W/layout
python3 "$HERE/mkimages.py" "$LAYOUT" >"$W/images.json"

# ---------------------------------------------------------------------------------------------
# A Distribution registry to import from

UP=127.0.0.1:$(free_port)
cat >"$W/upstream.yml" <<EOF
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $W/distribution
http:
  addr: $UP
EOF
env $(compgen -e | grep '^REGISTRY_' | sed 's/^/-u /') \
    docker-registry serve "$W/upstream.yml" >"$W/upstream.log" 2>&1 &
UP_PID=$!
for _ in $(seq 1 100); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "http://$UP/v2/")" = 200 ] && break
    sleep 0.1
done

fill_distribution() {
    "${SKOPEO[@]}" copy --dest-tls-verify=false "oci:$LAYOUT:img" "docker://$UP/team/app:1.0"
    "${SKOPEO[@]}" copy --dest-tls-verify=false "oci:$LAYOUT:img" "docker://$UP/team/app:latest"
    "${SKOPEO[@]}" copy --dest-tls-verify=false --all "oci:$LAYOUT:multi" "docker://$UP/library/alpine:multi"
    "${SKOPEO[@]}" copy --dest-tls-verify=false --format v2s2 "oci:$LAYOUT:img" "docker://$UP/library/busybox:1"
    local ref
    for ref in team/app:1.0 team/app:latest library/alpine:multi library/busybox:1; do
        curl -sS -f "${ACCEPT[@]}" "http://$UP/v2/${ref%%:*}/manifests/${ref#*:}" >"$W/want-${ref//[\/:]/_}"
    done
}
check "skopeo fills a Distribution 2.8 registry (OCI image, multi-arch index, Docker v2 image)" fill_distribution
kill "$UP_PID"
wait "$UP_PID" 2>/dev/null || true
UP_PID=

import_it() {
    "$BERTH" import-distribution "$W/distribution" --config "$W/berth.yaml" \
        --data-dir "$DATA_DIR" --json >"$W/import.json"
    cat "$W/import.json"
    eq "$(jq -r .repositories "$W/import.json")" 3 repositories
    eq "$(jq -r .tags "$W/import.json")" 4 tags
    eq "$(jq -r '.skipped | length' "$W/import.json")" 0 skipped
    [ "$(jq -r .blobs_copied "$W/import.json")" -gt 3 ]
}
check "berth import-distribution copies every repository into S3 storage" import_it

start_berth --config "$W/berth.yaml"
REG=127.0.0.1:$PORT
echo "berth $REG, blobs in $TEST_S3_ENDPOINT bucket $TEST_S3_BUCKET prefix $PREFIX"

pull_imported() {
    local ref got
    for ref in team/app:1.0 team/app:latest library/alpine:multi library/busybox:1; do
        got=$(curl -sS -f "${ACCEPT[@]}" "http://$REG/v2/${ref%%:*}/manifests/${ref#*:}")
        eq "$(printf '%s' "$got" | sha256sum)" "$(sha256sum <"$W/want-${ref//[\/:]/_}")" "$ref manifest bytes"
    done
    rm -rf "$W/pull"
    "${SKOPEO[@]}" copy --src-tls-verify=false --all "docker://$REG/library/alpine:multi" "oci:$W/pull:multi"
    "${SKOPEO[@]}" copy --src-tls-verify=false "docker://$REG/library/busybox:1" "oci:$W/pull:busybox"
    "${SKOPEO[@]}" copy --src-tls-verify=false "docker://$REG/team/app:1.0" "oci:$W/pull:app"
    verify_layout_blobs "$W/pull"
}
check "skopeo pulls every imported tag back from berth on S3, manifests byte-exact" pull_imported

reimport() {
    "$BERTH" import-distribution "$W/distribution" --config "$W/berth.yaml" \
        --data-dir "$DATA_DIR" --json >"$W/import2.json"
    eq "$(jq -r .blobs_copied "$W/import2.json")" 0 "blobs copied again"
    eq "$(jq -r .tags "$W/import2.json")" 4 tags
}
check "a second import beside the running server copies nothing" reimport

push_pull_s3() {
    "${SKOPEO[@]}" copy --dest-tls-verify=false "oci:$LAYOUT:img" "docker://$REG/s3/img:v1"
    rm -rf "$W/pull2"
    "${SKOPEO[@]}" copy --src-tls-verify=false "docker://$REG/s3/img:v1" "oci:$W/pull2:v1"
    verify_layout_blobs "$W/pull2"
    eq "$(layout_ref "$W/pull2" v1)" "$(jq -r .img.manifest "$W/images.json")" "manifest digest"
    [ ! -d "$DATA_DIR/blobs" ] || [ -z "$(find "$DATA_DIR/blobs" -type f)" ]
}
check "skopeo pushes to and pulls from berth on S3; no blob in the data dir" push_pull_s3

# podman_roundtrip REF DIR: podman (storage under DIR) pushes the test image to REF, removes
# it, pulls it back and checks its id and layers.
podman_roundtrip() {
    local ref=$1 dir=$2 id out
    mkdir -p "$dir/tmp"
    export CONTAINERS_STORAGE_CONF=$dir/storage.conf
    printf '[storage]\ndriver = "vfs"\nrunroot = "%s"\ngraphroot = "%s"\n' \
        "$dir/run" "$dir/root" >"$CONTAINERS_STORAGE_CONF"
    local P=(podman --root "$dir/root" --runroot "$dir/run" --storage-driver vfs
        --events-backend file --cgroup-manager cgroupfs --tmpdir "$dir/tmp")
    id=$(jq -r .img.config "$W/images.json" | cut -d: -f2)
    "${P[@]}" pull --signature-policy "$POLICY" "oci:$LAYOUT:img"
    "${P[@]}" tag "$id" "$ref"
    "${P[@]}" push --tls-verify=false --signature-policy "$POLICY" "$ref"
    "${P[@]}" rmi -f "$id"
    "${P[@]}" pull --tls-verify=false --signature-policy "$POLICY" "$ref"
    out=$("${P[@]}" image inspect "$ref")
    eq "$(jq -r '.[0].Id' <<<"$out")" "$id" "image id (config digest)"
    eq "$(jq -c '.[0].RootFS.Layers' <<<"$out")" "$(jq -c .img.diff_ids "$W/images.json")" "RootFS layers"
}
podman_s3() { podman_roundtrip "$REG/s3/podman:v1" "$W/podman"; }
if [ "${SKIP_PODMAN:-0}" = 1 ]; then
    echo "SKIP: podman on S3 (SKIP_PODMAN=1 given)"
else
    check "podman pushes to and pulls from berth on S3" podman_s3
fi

stop_berth
write_config true
start_berth --config "$W/berth.yaml"
REG=127.0.0.1:$PORT

redirected_pull() {
    local layer code
    layer=$(jq -r '.img.layers[0]' "$W/images.json")
    code=$(curl -s -o /dev/null -w '%{http_code} %{redirect_url}' "http://$REG/v2/s3/img/blobs/$layer")
    echo "$code"
    [ "${code%% *}" = 307 ]
    case "$code" in *X-Amz-Signature*) ;; *) echo "not a presigned URL"; return 1 ;; esac
    rm -rf "$W/pull3"
    "${SKOPEO[@]}" copy --src-tls-verify=false "docker://$REG/s3/img:v1" "oci:$W/pull3:v1"
    verify_layout_blobs "$W/pull3"
}
check "with redirect: true, blob GETs answer 307 to a presigned URL and skopeo follows it" redirected_pull

stop_berth

# ---------------------------------------------------------------------------------------------
# Three Garage nodes, replication 3: one killed, berth keeps taking pushes and serving pulls.

garage_start "$W/garage3" 3
PREFIX=so3-$(od -An -N4 -tx1 /dev/urandom | tr -d ' \n')
printf '%s\n' "$TEST_S3_SECRET" >"$W/s3.secret"
write_config false
DATA_DIR=$W/data3
start_berth --config "$W/berth.yaml"
REG=127.0.0.1:$PORT
node_down() {
    "${SKOPEO[@]}" copy --dest-tls-verify=false "oci:$LAYOUT:img" "docker://$REG/ha/img:before"
    local node=${GARAGE_PIDS[-1]}
    kill -KILL "$node"
    # Gone, or a zombie its parent (this script's shell) has not reaped yet. The shell may
    # reap it between the two looks, so a status that vanished counts as gone.
    gone() {
        [ ! -e "/proc/$1" ] || grep -qs '^State:.*Z' "/proc/$1/status" || [ ! -e "/proc/$1" ]
    }
    for _ in $(seq 1 50); do
        gone "$node" && break
        sleep 0.1
    done
    gone "$node"
    "${SKOPEO[@]}" copy --dest-tls-verify=false --all "oci:$LAYOUT:multi" "docker://$REG/ha/multi:after"
    rm -rf "$W/pull4"
    "${SKOPEO[@]}" copy --src-tls-verify=false "docker://$REG/ha/img:before" "oci:$W/pull4:before"
    "${SKOPEO[@]}" copy --src-tls-verify=false --all "docker://$REG/ha/multi:after" "oci:$W/pull4:after"
    verify_layout_blobs "$W/pull4"
    eq "$(layout_ref "$W/pull4" before)" "$(jq -r .img.manifest "$W/images.json")" "manifest digest"
    eq "$(layout_ref "$W/pull4" after)" "$(jq -r .multi.index "$W/images.json")" "index digest"
    eq "$(curl -s -o /dev/null -w '%{http_code}' "http://$REG/readyz")" 200 "readiness"
}
check "three Garage nodes, one killed: skopeo pushes and pulls continue, berth stays ready" node_down
stop_berth

# ---------------------------------------------------------------------------------------------
# Two replicas on one PostgreSQL database and one bucket, behind a round-robin load balancer.

garage_stop
garage_start "$W/garage-r" 1
printf '%s\n' "$TEST_S3_SECRET" >"$W/s3.secret"
if [ -z "${TEST_PG_URL:-}" ]; then
    pg_install
    mkdir -p "$W/pg" && chmod 755 "$W" "$W/pg"
    pg_start "$W/pg"
fi
DB=so_$(od -An -N4 -tx1 /dev/urandom | tr -d ' \n')
psql "$TEST_PG_URL" -qAtc "CREATE DATABASE $DB"
PREFIX=rep-$(od -An -N4 -tx1 /dev/urandom | tr -d ' \n')
write_config false
echo "database: ${TEST_PG_URL%/*}/$DB" >>"$W/berth.yaml"

# start_replica N: berth serve on a free port with data dir $W/replica-N (sets RPORT[N]).
declare -A RPORT
start_replica() {
    local n=$1 port
    port=$(free_port)
    "$BERTH" serve --config "$W/berth.yaml" --addr "127.0.0.1:$port" \
        --data-dir "$W/replica-$n" --log-format json 2>"$W/replica-$n.log" &
    REPLICA_PIDS[n]=$!
    echo "$!" >>"$W/replica.pids"
    RPORT[$n]=$port
    for _ in $(seq 1 300); do
        grep -qs 'berth ready' "$W/replica-$n.log" && return 0
        kill -0 "${REPLICA_PIDS[n]}" 2>/dev/null || break
        sleep 0.1
    done
    cat "$W/replica-$n.log" >&2
    return 1
}
start_replica 1
start_replica 2
LB=127.0.0.1:$(free_port)
python3 "$HERE/lb.py" "${LB#*:}" "${RPORT[1]}" "${RPORT[2]}" >"$W/lb.log" 2>&1 &
LB_PID=$!
for _ in $(seq 1 100); do grep -qs 'lb ready' "$W/lb.log" && break; sleep 0.1; done
echo "replicas 127.0.0.1:${RPORT[1]} and 127.0.0.1:${RPORT[2]} behind $LB, database $DB"

through_lb() {
    "${SKOPEO[@]}" copy --dest-tls-verify=false "oci:$LAYOUT:img" "docker://$LB/rep/img:v1"
    "${SKOPEO[@]}" copy --dest-tls-verify=false --all "oci:$LAYOUT:multi" "docker://$LB/rep/multi:v1"
    rm -rf "$W/pull5"
    "${SKOPEO[@]}" copy --src-tls-verify=false "docker://$LB/rep/img:v1" "oci:$W/pull5:img"
    "${SKOPEO[@]}" copy --src-tls-verify=false --all "docker://$LB/rep/multi:v1" "oci:$W/pull5:multi"
    verify_layout_blobs "$W/pull5"
    eq "$(layout_ref "$W/pull5" img)" "$(jq -r .img.manifest "$W/images.json")" "manifest digest"
    eq "$(layout_ref "$W/pull5" multi)" "$(jq -r .multi.index "$W/images.json")" "index digest"
    # Each replica answers every tag the pushes left, with the same bytes.
    local n a b
    for n in 1 2; do
        a=$(curl -sS -f "${ACCEPT[@]}" "http://127.0.0.1:${RPORT[$n]}/v2/rep/img/manifests/v1" | sha256sum)
        b=$(curl -sS -f "${ACCEPT[@]}" "http://127.0.0.1:${RPORT[$n]}/v2/rep/multi/manifests/v1" | sha256sum)
        eq "sha256:${a%% *}" "$(jq -r .img.manifest "$W/images.json")" "replica $n image"
        eq "sha256:${b%% *}" "$(jq -r .multi.index "$W/images.json")" "replica $n index"
    done
    eq "$(curl -s "http://$LB/v2/_catalog" | jq -c .repositories)" '["rep/img","rep/multi"]' catalog
}
check "two replicas on PostgreSQL + S3 behind a load balancer: skopeo pushes and pulls, both replicas serve everything" through_lb

podman_lb() { podman_roundtrip "$LB/rep/podman:v1" "$W/podman2"; }
if [ "${SKIP_PODMAN:-0}" = 1 ]; then
    echo "SKIP: podman through the load balancer (SKIP_PODMAN=1 given)"
else
    check "podman pushes and pulls through the load balancer" podman_lb
fi

docker_lb() {
    mkdir -p "$D"
    DOCKERD_LOG=$W/dockerd.log
    export DOCKER_HOST=unix://$D/docker.sock
    start_dockerd --insecure-registry "$LB" || { dockerd_failure; return 1; }
    "${SKOPEO[@]}" copy "oci:$LAYOUT:img" "docker-archive:$W/img.tar:berth-test/img:v1"
    docker load -i "$W/img.tar"
    docker tag berth-test/img:v1 "$LB/rep/docker:v1"
    docker push "$LB/rep/docker:v1"
    docker rmi "$LB/rep/docker:v1" berth-test/img:v1
    docker pull "$LB/rep/docker:v1"
    eq "$(docker image inspect --format '{{.Id}}' "$LB/rep/docker:v1")" "$(jq -r .img.config "$W/images.json")" "image ID"
    stop_dockerd
    DOCKERD_PID=
}
if [ "${SKIP_DOCKER:-0}" = 1 ] || ! command -v dockerd >/dev/null 2>&1; then
    echo "SKIP: docker through the load balancer (no dockerd, or SKIP_DOCKER=1 given)"
else
    check "docker pushes and pulls through the load balancer" docker_lb
fi

replica_killed() {
    kill -KILL "${REPLICA_PIDS[1]}"
    wait "${REPLICA_PIDS[1]}" 2>/dev/null || true
    "${SKOPEO[@]}" copy --dest-tls-verify=false "oci:$LAYOUT:img" "docker://$LB/rep/after:v1"
    rm -rf "$W/pull6"
    "${SKOPEO[@]}" copy --src-tls-verify=false "docker://$LB/rep/img:v1" "oci:$W/pull6:img"
    "${SKOPEO[@]}" copy --src-tls-verify=false "docker://$LB/rep/after:v1" "oci:$W/pull6:after"
    verify_layout_blobs "$W/pull6"
    eq "$(layout_ref "$W/pull6" after)" "$(jq -r .img.manifest "$W/images.json")" "manifest digest"
    # Replica 1 back with its data dir wiped: it lost nothing, since it kept nothing.
    rm -rf "$W/replica-1"
    start_replica 1
    a=$(curl -sS -f "${ACCEPT[@]}" "http://127.0.0.1:${RPORT[1]}/v2/rep/after/manifests/v1" | sha256sum)
    eq "sha256:${a%% *}" "$(jq -r .img.manifest "$W/images.json")" "wiped replica serves it"
}
check "one replica killed: pushes and pulls continue on the other; wiped and restarted, it serves everything" replica_killed

echo
echo "$PASSED passed, $FAILED failed"
[ "$FAILED" = 0 ]
