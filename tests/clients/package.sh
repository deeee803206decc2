#!/usr/bin/env bash
# Packaging checks: the container image, the systemd unit and the Kubernetes manifests.
#
# - The image: deploy/docker/rootfs.sh assembles the root filesystem from $BERTH into
#   target/docker-rootfs/, the .dockerignore keeps the rest of target/ and .git out of the
#   build context, and podman builds the Dockerfile with ROOTFS=prebuilt, with pulls
#   forbidden and RUST_IMAGE naming an image that does not exist (so the build proves that
#   the Rust stage is skipped). Its config (user, volume, port, healthcheck, entrypoint) and
#   files (ownership, modes, no shell) are checked.
# - The image runs: as the Kubernetes pod does (read-only root filesystem, no capabilities,
#   no-new-privileges, the ConfigMap's config.yaml mounted at /etc/berth, a named volume at
#   /var/lib/berth) on host networking and a free loopback port given with BERTH_ADDR; its
#   healthcheck passes, the process is uid/gid 65532, skopeo pushes an image into it and pulls
#   it back by digest, SIGTERM stops it with exit status 0, and a new container on the same
#   volume serves the image again. Then with the image's defaults alone (no network, port
#   5000 inside, anonymous volume) its healthcheck passes. Healthchecks run with `podman
#   healthcheck run` (podman's timers need systemd; the check line says if `podman exec` had
#   to stand in). Where crun cannot start containers (hybrid cgroups, rlimits above the hard
#   limits), runc is used with nofile/nproc within them; the log says which.
# - The Dockerfile's default path (stage `compiled`, no build args) with a stand-in Rust image
#   (this machine's tools and a `cargo` that copies $BERTH): the same image comes out.
# - systemd: `systemd-analyze verify` of deploy/systemd/berth.service (ExecStart pointed at
#   $BERTH) prints nothing, and `systemd-analyze security --offline` rates its exposure at
#   most MAX_EXPOSURE; berth accepts deploy/systemd/berth.yaml.
# - Kubernetes: deploy/kubernetes/validate.py (kubernetes-validate, strict, and the
#   ServiceMonitor CRD's models; cross checks), on the files and on `kubectl kustomize`'s
#   output when kubectl is there; berth accepts the ConfigMap's config.yaml.
#
# Prints one PASS/FAIL line per check, then "N passed, M failed". Exits non-zero on any
# failure.
#
#   tests/clients/package.sh
#
# Environment:
#   BERTH=/path/to/berth   use this binary (default: cargo build --release, target/release/berth)
#   KEEP=1                 keep the temp dir (podman storage, logs) for inspection
#   SKIP_PODMAN=1          skip building and running the image (printed as SKIP, never
#                          silently); the root filesystem, systemd and Kubernetes checks run
#
# Needs root (podman runs containers, apt-get and pip install what is missing).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
T0=$(date +%s)
# systemd-analyze security's overall exposure for the unit, at most (0.0 to 10.0).
MAX_EXPOSURE=1.5
IMAGE=localhost/berth:package-test
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

need curl:curl jq:jq python3:python3 skopeo:skopeo podman:podman sha256sum:coreutils \
    ldd:libc-bin chroot:coreutils flock:util-linux systemd-analyze:systemd
if ! python3 -c 'import kubernetes_validate, cloudcoil.models.prometheus_operator, yaml' 2>/dev/null; then
    python3 -m pip --version >/dev/null 2>&1 || apt_install python3-pip
    PIP_PKGS=(kubernetes-validate==1.37.0 cloudcoil.models.prometheus_operator==0.80.1.0 pyyaml)
    python3 -m pip install -q "${PIP_PKGS[@]}" 2>/dev/null ||
        python3 -m pip install -q --break-system-packages "${PIP_PKGS[@]}"
fi

if [ -z "${BERTH:-}" ]; then
    (cd "$ROOT" && cargo build --release --quiet --bin berth)
    BERTH=${CARGO_TARGET_DIR:-$ROOT/target}/release/berth
fi
[ -x "$BERTH" ] || { echo "no berth binary at $BERTH" >&2; exit 2; }
BERTH=$(cd "$(dirname "$BERTH")" && pwd)/$(basename "$BERTH")
T1=$(date +%s)
echo "setup (tools, build): $((T1 - T0))s"

# ---------------------------------------------------------------------------------------------
# Temp dir, private podman, cleanup

# Short and lower-case: podman puts sockets under it and names images after directories.
W=/tmp/berth-pkg.$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')
mkdir -m 700 "$W"
PODMAN_DIR=$W/podman
mkdir -p "$PODMAN_DIR/tmp"
PODMAN=(podman --root "$PODMAN_DIR/root" --runroot "$PODMAN_DIR/run" --storage-driver vfs
    --events-backend file --cgroup-manager cgroupfs --tmpdir "$PODMAN_DIR/tmp")
export CONTAINERS_STORAGE_CONF=$PODMAN_DIR/storage.conf
printf '[storage]\ndriver = "vfs"\nrunroot = "%s"\ngraphroot = "%s"\n' \
    "$PODMAN_DIR/run" "$PODMAN_DIR/root" >"$CONTAINERS_STORAGE_CONF"
POLICY=$W/policy.json
echo '{"default":[{"type":"insecureAcceptAnything"}]}' >"$POLICY"
printf 'unqualified-search-registries = []\n' >"$W/registries.conf"
export CONTAINERS_REGISTRIES_CONF=$W/registries.conf
export REGISTRY_AUTH_FILE=$W/auth.json
echo '{"auths":{}}' >"$REGISTRY_AUTH_FILE"
SKOPEO=(skopeo --policy "$POLICY")

cleanup() {
    local rc=$?
    if [ -d "$PODMAN_DIR/root" ]; then
        "${PODMAN[@]}" rm -a -f -t 0 -v >/dev/null 2>&1 || true
        "${PODMAN[@]}" volume rm -a -f >/dev/null 2>&1 || true
        # Images stay in $W; podman's layer mounts (none with vfs) are unmounted below.
    fi
    remove_workdir
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The build context is the repository; target/docker-rootfs/ is shared with anyone else
# building the image from this tree, so assemble and build under a lock.
mkdir -p "$ROOT/target"
exec 9>"$ROOT/target/.docker-rootfs.lock"
flock 9
RFS=$ROOT/target/docker-rootfs

# ---------------------------------------------------------------------------------------------
# The root filesystem

rootfs_assemble() {
    local f owner
    bash "$ROOT/deploy/docker/rootfs.sh" "$BERTH" "$RFS"
    for f in usr/local/bin/berth etc/passwd etc/group etc/nsswitch.conf etc/berth/config.yaml \
        etc/ssl/certs/ca-certificates.crt lib64/ld-linux-x86-64.so.2; do
        [ -e "$RFS/$f" ] || { echo "missing /$f"; return 1; }
    done
    cmp "$RFS/usr/local/bin/berth" "$BERTH"
    cmp "$RFS/etc/ssl/certs/ca-certificates.crt" /etc/ssl/certs/ca-certificates.crt
    # Every library ldd names on the host is there (libc, libm, libgcc_s, the loader...),
    # and the NSS modules.
    for f in $(ldd "$BERTH" | awk '{ for (i = 1; i <= NF; i++) if ($i ~ /^\//) print $i }') \
        "$(dirname "$(ldd "$BERTH" | awk '$1 ~ /^libc\.so/ { print $3 }')")"/libnss_{files,dns}.so.2; do
        [ -e "$RFS$f" ] || { echo "missing $f"; return 1; }
        echo "lib $f"
    done
    grep -qx 'berth:x:65532:65532:berth:/var/lib/berth:/sbin/nologin' "$RFS/etc/passwd"
    grep -qx 'berth:x:65532:' "$RFS/etc/group"
    grep -qx 'hosts: files dns' "$RFS/etc/nsswitch.conf"
    owner=$(stat -c '%u:%g %a' "$RFS/var/lib/berth")
    eq "$owner" "65532:65532 750" "data dir owner and mode"
    eq "$(stat -c '%a' "$RFS/tmp")" 1777 "/tmp mode"
    [ ! -e "$RFS/bin/sh" ] || { echo "the rootfs has a shell"; return 1; }
    # The binary runs with nothing but the rootfs, and finds its configuration there.
    chroot "$RFS" /usr/local/bin/berth --version
    chroot "$RFS" /usr/local/bin/berth config check --config /etc/berth/config.yaml >"$W/rootfs-config.out"
    grep -q '^addr: 0.0.0.0:5000' "$W/rootfs-config.out"
    grep -q '^data_dir: /var/lib/berth' "$W/rootfs-config.out"
}
check "deploy/docker/rootfs.sh assembles the image root (binary, ldd's libraries, NSS, CA bundle, passwd/group, data dir 65532, /tmp 1777)" rootfs_assemble

# ---------------------------------------------------------------------------------------------
# The image

if [ "${SKIP_PODMAN:-0}" = 1 ]; then
    echo "SKIP: image build and container checks (SKIP_PODMAN=1 given)"
    PODMAN_OK=0
elif ! "${PODMAN[@]}" info >"$W/podman-info.out" 2>&1; then
    fail "podman usable in this environment (podman info failed: reason below, not a berth issue)"
    tail -n 25 "$W/podman-info.out" | awk '{ print "      | " $0 }'
    PODMAN_OK=0
else
    PODMAN_OK=1
fi

# What the .dockerignore lets into the build context: a probe image that copies it all.
context_probe() {
    local m n size
    printf 'FROM scratch\nCOPY . /ctx/\n' >"$W/probe.Dockerfile"
    "${PODMAN[@]}" build -q --pull=never -f "$W/probe.Dockerfile" -t localhost/context-probe "$ROOT"
    m=$("${PODMAN[@]}" image mount localhost/context-probe)
    n=$(find "$m/ctx" | wc -l)
    size=$(du -sm "$m/ctx" | cut -f1)
    echo "context: $n entries, ${size} MiB (target/ on disk: $(du -sm "$ROOT/target" | cut -f1) MiB)"
    for f in Cargo.toml Cargo.lock src/main.rs migrations deploy/docker/rootfs.sh Dockerfile \
        target/docker-rootfs/usr/local/bin/berth target/docker-rootfs/etc/passwd; do
        [ -e "$m/ctx/$f" ] || { echo "context lacks $f"; return 1; }
    done
    for f in .git target/release target/debug target/.docker-rootfs.lock; do
        [ ! -e "$m/ctx/$f" ] || { echo "context has $f"; return 1; }
    done
    eq "$(find "$m/ctx/target" -mindepth 1 -maxdepth 1 | sed "s|^$m/ctx/||")" target/docker-rootfs \
        "target/ entries in the context"
    "${PODMAN[@]}" image unmount localhost/context-probe >/dev/null
    "${PODMAN[@]}" rmi localhost/context-probe >/dev/null
}

image_build() {
    # Pulls are forbidden and the Rust image does not exist: the build passes only if the
    # `compiled` stage is skipped.
    "${PODMAN[@]}" build --pull=never --format docker \
        --build-arg ROOTFS=prebuilt --build-arg RUST_IMAGE=localhost/berth-test/no-such-rust-image \
        -f "$ROOT/Dockerfile" -t "$IMAGE" "$ROOT" >"$W/build.out" 2>&1 ||
        { tail -n 20 "$W/build.out"; return 1; }
    grep -E '^\[[0-9]+/[0-9]+\] STEP 1/' "$W/build.out"
    ! grep -qi 'no-such-rust-image' "$W/build.out" || { echo "the Rust image was looked up"; return 1; }
}

image_config() {
    local j m
    j=$("${PODMAN[@]}" image inspect "$IMAGE" | jq '.[0]')
    jq -c '{User: .Config.User, Volumes: .Config.Volumes, ExposedPorts: .Config.ExposedPorts,
        Entrypoint: .Config.Entrypoint, Cmd: .Config.Cmd, Healthcheck: .Healthcheck.Test}' <<<"$j"
    eq "$(jq -r .Config.User <<<"$j")" 65532:65532 User
    eq "$(jq -c '.Config.Volumes | keys' <<<"$j")" '["/var/lib/berth"]' Volumes
    eq "$(jq -c '.Config.ExposedPorts | keys' <<<"$j")" '["5000/tcp"]' ExposedPorts
    eq "$(jq -c .Config.Entrypoint <<<"$j")" '["/usr/local/bin/berth"]' Entrypoint
    eq "$(jq -c .Config.Cmd <<<"$j")" '["serve","--config","/etc/berth/config.yaml"]' Cmd
    eq "$(jq -c .Healthcheck.Test <<<"$j")" \
        '["CMD","/usr/local/bin/berth","health","--config","/etc/berth/config.yaml"]' Healthcheck
    eq "$(jq -r '.Config.StopSignal' <<<"$j")" SIGTERM StopSignal
    # The files as the image holds them (not as the context did).
    m=$("${PODMAN[@]}" image mount "$IMAGE")
    eq "$(stat -c '%u:%g %a' "$m/var/lib/berth")" "65532:65532 750" "data dir in the image"
    eq "$(stat -c '%a' "$m/tmp")" 1777 "/tmp in the image"
    eq "$(stat -c '%u:%g' "$m/usr/local/bin/berth")" 0:0 "binary owner"
    if [ -e "$m/bin/sh" ] || [ -e "$m/usr/bin/sh" ]; then echo "the image has a shell"; return 1; fi
    echo "image files: $(find "$m" -type f | wc -l), $(du -sm "$m" | cut -f1) MiB"
    "${PODMAN[@]}" image unmount "$IMAGE" >/dev/null
}

if [ "$PODMAN_OK" = 1 ]; then
    check ".dockerignore: the build context has target/docker-rootfs but not the rest of target/ nor .git" context_probe
    check "podman build --build-arg ROOTFS=prebuilt (no pull; the Rust stage is skipped)" image_build
    check "image config: user 65532, volume /var/lib/berth, port 5000, HEALTHCHECK berth health, files" image_config
fi
flock -u 9
exec 9>&-

# ---------------------------------------------------------------------------------------------
# Running it, as the Kubernetes pod does

# The ConfigMap's config.yaml, as the pod mounts it at /etc/berth.
mkdir -p "$W/k8s-config"
python3 -c 'import sys, yaml; print(yaml.safe_load(open(sys.argv[1]))["data"]["config.yaml"], end="")' \
    "$ROOT/deploy/kubernetes/configmap.yaml" >"$W/k8s-config/config.yaml"

# How containers can run here. podman's defaults first; where those cannot start a container
# (crun refuses hybrid cgroup v1/v2 hosts, and the runtime may not raise rlimits past this
# machine's hard limits), runc with the nofile and nproc limits set within them. The image
# and its settings are the same either way; the line printed says which was used.
RUN_EXTRA=()
runtime_probe() {
    local how=$1
    shift
    if "${PODMAN[@]}" "$@" run --rm --network none "${RUN_EXTRA[@]}" --entrypoint /usr/local/bin/berth \
        "$IMAGE" --version >"$W/probe.out" 2>&1; then
        echo "containers run with: $how"
        return 0
    fi
    echo "containers do not run with $how: $(grep -v 'level=error' "$W/probe.out" | tail -n 1)"
    return 1
}
RUN_OK=0
if [ "$PODMAN_OK" = 1 ] && "${PODMAN[@]}" image exists "$IMAGE"; then
    if runtime_probe "podman's defaults"; then
        RUN_OK=1
    else
        need runc:runc
        RUN_EXTRA=(--ulimit "nofile=$(ulimit -Hn):$(ulimit -Hn)" --ulimit nproc=4096:4096)
        if runtime_probe "runc, --ulimit nofile=$(ulimit -Hn) nproc=4096" --runtime runc; then
            PODMAN+=(--runtime runc)
            RUN_OK=1
        else
            fail "podman can run containers in this environment (reason above, not a berth issue)"
        fi
    fi
fi

PORT=$(free_port)
REG=127.0.0.1:$PORT
URL=http://$REG
RUN_POD=(run -d --network host "${RUN_EXTRA[@]}" --read-only --cap-drop ALL
    --security-opt no-new-privileges -v "$W/k8s-config:/etc/berth:ro"
    -v berth-data:/var/lib/berth -e "BERTH_ADDR=$REG")
# The container the checks look at (checks run in subshells: names, not ids, are shared).
CTR=berth-pod

running() { [ "$("${PODMAN[@]}" container inspect -f '{{.State.Running}}' "$1" 2>/dev/null)" = true ]; }

# wait_ready URL: waits up to 30 s for URL/readyz to answer 200 while $CTR runs.
wait_ready() {
    for _ in $(seq 1 300); do
        [ "$(curl -s -o /dev/null -w '%{http_code}' "$1/readyz")" = 200 ] && return 0
        running "$CTR" || break
        sleep 0.1
    done
    echo "no 200 from $1/readyz ($CTR $("${PODMAN[@]}" container inspect -f '{{.State.Status}}, exit status {{.State.ExitCode}}' "$CTR")); its log:"
    "${PODMAN[@]}" logs "$CTR" 2>&1 | tail -n 20
    return 1
}

# healthcheck CONTAINER: runs the image's healthcheck in it, as $HEALTH_HOW says (set once
# berth-pod is up: `podman healthcheck run` if it works here, else the same command with
# `podman exec`).
healthcheck() {
    if [ "$HEALTH_HOW" = "podman healthcheck run" ]; then
        "${PODMAN[@]}" healthcheck run "$1"
        eq "$("${PODMAN[@]}" inspect -f '{{.State.Health.Status}}' "$1")" healthy "health status"
    else
        "${PODMAN[@]}" exec "$1" /usr/local/bin/berth health --config /etc/berth/config.yaml
    fi
}

container_start() {
    "${PODMAN[@]}" "${RUN_POD[@]}" --name "$CTR" "$IMAGE"
    wait_ready "$URL"
    "${PODMAN[@]}" logs "$CTR" >"$W/pod.log" 2>&1
    grep -q '"berth ready"' "$W/pod.log" ||
        { echo "no 'berth ready' log line (json, from the ConfigMap's log.format)"; return 1; }
    eq "$(curl -s -o /dev/null -w '%{http_code}' "$URL/healthz")" 200 "/healthz"
    curl -sS -f "$URL/readyz" | jq -e . >/dev/null
    curl -sS -f "$URL/metrics" >"$W/metrics.txt"
    grep -q '^registry_http_requests_total' "$W/metrics.txt" ||
        { echo "/metrics lacks registry_http_requests_total"; return 1; }
    eq "$(curl -s -o /dev/null -w '%{http_code}' "$URL/v2/")" 200 "/v2/"
}

container_health() {
    healthcheck "$CTR"
    # A host name resolved in the container (getaddrinfo, nsswitch.conf, /etc/hosts).
    "${PODMAN[@]}" exec "$CTR" /usr/local/bin/berth health --url "http://localhost:$PORT/readyz"
    # The CLI in the container as README shows it: on PATH, the image's user, the same file.
    "${PODMAN[@]}" exec "$CTR" berth namespace list --config /etc/berth/config.yaml
}

container_user() {
    local pid
    pid=$("${PODMAN[@]}" inspect -f '{{.State.Pid}}' "$CTR")
    eq "$(cat "/proc/$pid/comm")" berth "process name"
    eq "$(awk '/^Uid:/ { print $2, $3, $4, $5 }' "/proc/$pid/status")" "65532 65532 65532 65532" Uid
    eq "$(awk '/^Gid:/ { print $2, $3, $4, $5 }' "/proc/$pid/status")" "65532 65532 65532 65532" Gid
    eq "$(awk '/^CapEff:/ { print $2 }' "/proc/$pid/status")" 0000000000000000 "effective capabilities"
    eq "$(awk '/^NoNewPrivs:/ { print $2 }' "/proc/$pid/status")" 1 NoNewPrivs
}

LAYOUT=$W/layout
python3 "$HERE/mkimages.py" "$LAYOUT" >"$W/images.json"
IMG=$(jq -r .img.manifest "$W/images.json")

push_pull() {
    "${SKOPEO[@]}" copy --dest-tls-verify=false "oci:$LAYOUT:img" "docker://$REG/pkg/img:v1"
    eq "$("${SKOPEO[@]}" inspect --tls-verify=false "docker://$REG/pkg/img:v1" | jq -r .Digest)" \
        "$IMG" "digest of the pushed image"
    pull_back pull1
}

# pull_back DIR: pulls pkg/img by digest into an OCI layout and checks it is the original.
pull_back() {
    "${SKOPEO[@]}" copy --src-tls-verify=false "docker://$REG/pkg/img@$IMG" "oci:$W/$1:pulled"
    eq "$(layout_ref "$W/$1" pulled)" "$IMG" "pulled manifest digest"
    eq "$(layout_blob "$W/$1" "$IMG" | jq -c '[.layers[].digest]')" \
        "$(jq -c .img.layers "$W/images.json")" "pulled layers"
    verify_layout_blobs "$W/$1"
}

volume_owner() {
    local mp
    mp=$("${PODMAN[@]}" volume inspect -f '{{.Mountpoint}}' berth-data)
    ls -lna "$mp"
    [ -e "$mp/berth.db" ] || { echo "no berth.db in the volume"; return 1; }
    eq "$(find "$mp" ! -uid 65532)" "" "files in the volume not owned by 65532"
}

# container_stop: podman stop (SIGTERM), then berth's exit status must be 0.
container_stop() {
    local t rc
    t=$(date +%s)
    "${PODMAN[@]}" stop -t 40 "$CTR" >/dev/null
    rc=$("${PODMAN[@]}" inspect -f '{{.State.ExitCode}}' "$CTR")
    echo "stopped in $(($(date +%s) - t))s, exit status $rc"
    eq "$rc" 0 "exit status after SIGTERM"
    "${PODMAN[@]}" logs "$CTR" >"$W/stop.log" 2>&1
    grep -q 'shutting down' "$W/stop.log" || { echo "no 'shutting down' log line"; return 1; }
    "${PODMAN[@]}" rm "$CTR" >/dev/null
}

restart_pull() {
    CTR=berth-pod2
    "${PODMAN[@]}" "${RUN_POD[@]}" --name "$CTR" "$IMAGE"
    wait_ready "$URL"
    eq "$("${SKOPEO[@]}" list-tags --tls-verify=false "docker://$REG/pkg/img" | jq -c .Tags)" '["v1"]' tags
    pull_back pull2
    healthcheck "$CTR"
    container_stop
}

# The image alone: no configuration given, no network; the healthcheck asks port 5000 inside.
defaults() {
    local ok=0 deadline=$(($(date +%s) + 20))
    CTR=berth-defaults
    "${PODMAN[@]}" run -d --network none "${RUN_EXTRA[@]}" --name "$CTR" "$IMAGE"
    while [ "$(date +%s)" -lt "$deadline" ]; do
        if healthcheck "$CTR" >"$W/defaults-health.out" 2>&1; then
            ok=1
            break
        fi
        sleep 0.2
    done
    cat "$W/defaults-health.out"
    [ "$ok" = 1 ] || { "${PODMAN[@]}" logs "$CTR" 2>&1 | tail -n 20; return 1; }
    "${PODMAN[@]}" logs "$CTR" >"$W/defaults.log" 2>&1
    grep -q 'berth ready.*0\.0\.0\.0:5000' "$W/defaults.log" ||
        { echo "berth did not log ready on 0.0.0.0:5000"; tail "$W/defaults.log"; return 1; }
    eq "$("${PODMAN[@]}" inspect "$CTR" | jq -r '.[0].Mounts[] | select(.Destination=="/var/lib/berth") | .Type')" \
        volume "/var/lib/berth mount"
    container_stop
}

if [ "$RUN_OK" = 1 ]; then
    check "container starts as the pod does (read-only root, no capabilities, ConfigMap config, BERTH_ADDR): /healthz, /readyz, /metrics, /v2/" container_start
    if running "$CTR"; then
        # How the healthcheck can be run here: podman runs it on a systemd timer, which needs
        # systemd; `podman healthcheck run` runs it once without one.
        if "${PODMAN[@]}" healthcheck run "$CTR" >"$W/hc.out" 2>&1 || grep -q unhealthy "$W/hc.out"; then
            HEALTH_HOW="podman healthcheck run"
        else
            HEALTH_HOW="podman exec"
            echo "podman healthcheck run does not work here ($(head -c 200 "$W/hc.out")): running the healthcheck command with podman exec"
        fi
        check "container healthcheck passes (by $HEALTH_HOW); berth resolves localhost; the CLI runs by exec" container_health
        check "container process is berth as uid/gid 65532, no effective capabilities, no_new_privs" container_user
        check "skopeo push into the container, pull back by digest (layers verified)" push_pull
        check "data in the volume, owned by 65532" volume_owner
        check "podman stop: SIGTERM, berth exits 0" container_stop
        check "new container on the same volume serves the image again (tags, pull by digest, healthcheck)" restart_pull
        check "image defaults (no config, no network): listens on 0.0.0.0:5000, healthcheck passes, anonymous volume" defaults
    fi
elif [ "$PODMAN_OK" = 1 ] && ! "${PODMAN[@]}" image exists "$IMAGE"; then
    fail "container checks (no image was built)"
fi

# ---------------------------------------------------------------------------------------------
# The Dockerfile's default path (stage `compiled`), with a stand-in for the Rust image: there
# is no registry to pull it from here. The stand-in is this machine's bash, coreutils, ldd and
# the libraries, and a `cargo` that puts $BERTH where `cargo build --release` would. So this
# checks the stages and deploy/docker/rootfs.sh inside a build, not the compiling.

# copy_with_links PATH ROOT: copies PATH into ROOT as it is here: each symbolic link on the
# way to the file as a link, then the file.
copy_with_links() {
    local p=$1 t
    while [ -L "$p" ]; do
        [ -L "$2$p" ] || cp -P --parents "$p" "$2"
        t=$(readlink "$p")
        case $t in
        /*) p=$t ;;
        *) p=$(dirname "$p")/$t ;;
        esac
    done
    [ -e "$2$p" ] || cp --parents "$p" "$2"
}

stand_in_rust() {
    local r=$W/stand-in/root b f
    mkdir -p "$r/usr/bin" "$r/usr/sbin" "$r/usr/lib" "$r/usr/lib64" "$r/usr/local/bin" \
        "$r/etc/ssl/certs" "$r/tmp"
    chmod 1777 "$r/tmp"
    for f in bin sbin lib lib64; do
        if [ -L "/$f" ]; then ln -s "$(readlink "/$f")" "$r/$f"; fi
    done
    # The tools rootfs.sh and the RUN line use, the libraries they and berth load, NSS.
    for b in bash sh ldd sed awk grep sort readlink realpath install cp mkdir dirname rm ls \
        touch chmod chown cat head du find id chroot cut tr wc ln env; do
        b=$(command -v "$b")
        for f in "$b" $(ldd "$b" 2>/dev/null | awk '{ for (i = 1; i <= NF; i++) if ($i ~ /^\//) print $i }'); do
            copy_with_links "$f" "$r"
        done
    done
    for f in $(ldd "$BERTH" | awk '{ for (i = 1; i <= NF; i++) if ($i ~ /^\//) print $i }') \
        "$(dirname "$(readlink -f "$(ldd "$BERTH" | awk '$1 ~ /^libc\.so/ { print $3 }')")")"/libnss_{files,dns}.so.2; do
        copy_with_links "$f" "$r"
    done
    cp /etc/ssl/certs/ca-certificates.crt "$r/etc/ssl/certs/"
    cp "$BERTH" "$r/usr/local/share-berth"
    printf '%s\n' '#!/bin/bash' \
        '# Stand-in for cargo (tests/clients/package.sh): "builds" by copying the binary under test.' \
        'echo "stand-in cargo $*"' \
        'mkdir -p target/release && cp /usr/local/share-berth target/release/berth' \
        >"$r/usr/local/bin/cargo"
    chmod 755 "$r/usr/local/bin/cargo"
    printf 'FROM scratch\nCOPY root/ /\nENV PATH=/usr/local/bin:/usr/bin:/usr/sbin:/bin:/sbin\n' \
        >"$W/stand-in/Dockerfile"
    "${PODMAN[@]}" build -q --pull=never -t localhost/stand-in-rust:1 "$W/stand-in"
}

# image_files IMAGE: every path in the image with its type, owner, mode and size.
image_files() {
    local m
    m=$("${PODMAN[@]}" image mount "$1")
    (cd "$m" && find . -printf '%p %y %U:%G %m %s\n' | sort)
    "${PODMAN[@]}" image unmount "$1" >/dev/null
}

compiled_stage() {
    stand_in_rust
    # The context holds target/docker-rootfs/: not while another run replaces it (this check
    # runs in a subshell, which lets go of the lock when it ends).
    exec 8>"$ROOT/target/.docker-rootfs.lock"
    flock 8
    # No --build-arg ROOTFS: the default path, as `docker build .` takes it.
    "${PODMAN[@]}" build --pull=never --format docker "${RUN_EXTRA[@]}" \
        --build-arg RUST_IMAGE=localhost/stand-in-rust:1 \
        -f "$ROOT/Dockerfile" -t localhost/berth:compiled-test "$ROOT" >"$W/build-compiled.out" 2>&1 ||
        { tail -n 20 "$W/build-compiled.out"; return 1; }
    grep -E '^\[[0-9]+/[0-9]+\] STEP 1/|^stand-in cargo' "$W/build-compiled.out"
    grep -q '^stand-in cargo build --release --locked' "$W/build-compiled.out" ||
        { echo "the compiled stage did not run cargo build --release --locked"; return 1; }
    # The same image as the prebuilt path: config and files.
    eq "$("${PODMAN[@]}" image inspect localhost/berth:compiled-test | jq -c '.[0] | [.Config, .Healthcheck]')" \
        "$("${PODMAN[@]}" image inspect "$IMAGE" | jq -c '.[0] | [.Config, .Healthcheck]')" "image config"
    image_files localhost/berth:compiled-test >"$W/files-compiled"
    image_files "$IMAGE" >"$W/files-prebuilt"
    diff "$W/files-prebuilt" "$W/files-compiled"
    echo "$(wc -l <"$W/files-compiled") paths, the same in both images"
    "${PODMAN[@]}" rmi localhost/berth:compiled-test localhost/stand-in-rust:1 >/dev/null
}

if [ "$RUN_OK" = 1 ]; then
    check "Dockerfile default path (stage compiled, stand-in Rust image): same image as the prebuilt one" compiled_stage
fi

# ---------------------------------------------------------------------------------------------
# systemd

UNIT=$ROOT/deploy/systemd/berth.service
mkdir -p "$W/systemd"

unit_verify() {
    local out
    grep -q '^ExecStart=/usr/local/bin/berth serve --config /etc/berth/config.yaml$' "$UNIT"
    # verify wants ExecStart's binary to exist: point it at $BERTH.
    sed "s|^ExecStart=/usr/local/bin/berth |ExecStart=$BERTH |" "$UNIT" >"$W/systemd/berth.service"
    # It exits 0 on unknown keys and bad values, printing them: any output is a failure.
    out=$(systemd-analyze verify "$W/systemd/berth.service" 2>&1)
    echo "$out"
    eq "$out" "" "systemd-analyze verify output"
}

unit_security() {
    local out level
    # --threshold is in tenths.
    out=$(systemd-analyze security --offline=yes --threshold="$(awk -v m="$MAX_EXPOSURE" 'BEGIN { print int(m * 10 + 0.5) }')" \
        "$W/systemd/berth.service" 2>&1) || { echo "$out"; echo "exposure over $MAX_EXPOSURE"; return 1; }
    grep '✗' <<<"$out" || true
    level=$(grep -o 'Overall exposure level for berth.service: [0-9.]*' <<<"$out")
    [ -n "$level" ] || { echo "$out"; return 1; }
    echo "$level (at most $MAX_EXPOSURE)"
    # What berth's shutdown and load need, besides the sandbox systemd-analyze rates.
    for kv in Type=simple Restart=on-failure TimeoutStopSec=40 LimitNOFILE=65536 \
        DynamicUser=yes StateDirectory=berth CapabilityBoundingSet= NoNewPrivileges=yes \
        ProtectSystem=strict MemoryDenyWriteExecute=yes SystemCallFilter=@system-service \
        'RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX'; do
        grep -qx "$kv" "$UNIT" || { echo "$UNIT lacks $kv"; return 1; }
    done
}

unit_config() {
    "$BERTH" config check --config "$ROOT/deploy/systemd/berth.yaml" >"$W/systemd/config.out"
    grep -q '^data_dir: /var/lib/berth' "$W/systemd/config.out"
    grep -q '^addr: 0.0.0.0:5000' "$W/systemd/config.out"
}

check "systemd-analyze verify deploy/systemd/berth.service (no warnings)" unit_verify
check "systemd-analyze security --offline: exposure at most $MAX_EXPOSURE" unit_security
check "berth config check accepts deploy/systemd/berth.yaml (the unit's /etc/berth/config.yaml)" unit_config

# ---------------------------------------------------------------------------------------------
# Kubernetes

k8s_schemas() {
    python3 "$ROOT/deploy/kubernetes/validate.py" "$ROOT/deploy/kubernetes"
}

k8s_kustomize() {
    kubectl kustomize "$ROOT/deploy/kubernetes" >"$W/rendered.yaml"
    python3 "$ROOT/deploy/kubernetes/validate.py" --rendered "$W/rendered.yaml"
}

k8s_config() {
    "$BERTH" config check --config "$W/k8s-config/config.yaml" >"$W/k8s-config.out"
    grep -q '^data_dir: /var/lib/berth' "$W/k8s-config.out"
}

check "deploy/kubernetes: schemas (kubernetes-validate --strict; ServiceMonitor CRD models) and cross checks" k8s_schemas
if command -v kubectl >/dev/null; then
    check "deploy/kubernetes: kubectl kustomize renders, and the output validates" k8s_kustomize
else
    echo "SKIP: kubectl kustomize (no kubectl on this machine; the files were validated directly)"
fi
check "berth config check accepts the ConfigMap's config.yaml" k8s_config

# ---------------------------------------------------------------------------------------------

echo
echo "elapsed: $(($(date +%s) - T1))s of checks, $(($(date +%s) - T0))s in all"
for f in ${FAILURES[@]+"${FAILURES[@]}"}; do
    echo "  failed: $f"
done
echo "$PASSED passed, $FAILED failed"
[ "$FAILED" = 0 ]
