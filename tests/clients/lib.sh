# shellcheck shell=bash
# Helpers shared by the real-client scripts (run.sh, docker.sh, auth.sh, proxy.sh); sourced,
# not run.
#
# The sourcing script sets, before calling them:
#   W       its private temp dir (check output goes to $W/check.out, berth's data to $W/data)
#   LOG     berth's JSON log file
#   BERTH   the berth binary
# and reads back PORT and BERTH_PID (start_berth), PASSED, FAILED and FAILURES (pass, fail).
# The dockerd helpers also read D (dockerd's directory) and DOCKERD_LOG, and set DOCKERD_PID
# and CONTAINERD_PID.

# ---------------------------------------------------------------------------------------------
# Tools

APT_UPDATED=0
apt_install() {
    if [ "$(id -u)" != 0 ]; then
        echo "missing packages ($*) and not root: install them first" >&2
        exit 2
    fi
    if [ "$APT_UPDATED" = 0 ]; then
        apt-get update -qq
        APT_UPDATED=1
    fi
    echo "installing: $*"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

# need CMD:PACKAGE...: installs the packages whose command is missing, in one apt-get call
# (each package once, even when several of its commands are missing).
need() {
    local missing=() packages=() pair
    for pair in "$@"; do
        command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair#*:}")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        mapfile -t packages < <(printf '%s\n' "${missing[@]}" | awk '!seen[$0]++')
        apt_install "${packages[@]}"
    fi
}

# ---------------------------------------------------------------------------------------------
# berth

BERTH_PID=

# SIGTERM, then SIGKILL if berth is still draining after 20 s; returns berth's exit status.
stop_berth() {
    local rc=0
    kill -TERM "$BERTH_PID" 2>/dev/null || true
    for _ in $(seq 1 200); do
        kill -0 "$BERTH_PID" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$BERTH_PID" 2>/dev/null; then
        echo "berth still running 20s after SIGTERM: SIGKILL" >&2
        kill -KILL "$BERTH_PID" 2>/dev/null || true
    fi
    wait "$BERTH_PID" 2>/dev/null || rc=$?
    BERTH_PID=
    return "$rc"
}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# start_berth [SERVE FLAGS...]: starts berth on a free loopback port (sets PORT and BERTH_PID)
# with data dir ${DATA_DIR:-$W/data}, passing any extra `berth serve` flags (e.g. --auth
# token), and waits for "berth ready"; retries with another port twice, then exits.
# shellcheck disable=SC2120 # the flags are optional
start_berth() {
    local attempt
    for attempt in 1 2 3; do
        PORT=$(free_port)
        "$BERTH" serve --addr "127.0.0.1:$PORT" --data-dir "${DATA_DIR:-$W/data}" \
            --log-format json "$@" 2>"$LOG" &
        BERTH_PID=$!
        for _ in $(seq 1 300); do
            if grep -qs 'berth ready' "$LOG"; then
                return 0
            fi
            if ! kill -0 "$BERTH_PID" 2>/dev/null; then
                break
            fi
            sleep 0.1
        done
        echo "berth did not start (attempt $attempt):" >&2
        cat "$LOG" >&2
        kill "$BERTH_PID" 2>/dev/null || true
        wait "$BERTH_PID" 2>/dev/null || true
        BERTH_PID=
    done
    exit 1
}

# Access-log lines (JSON) written after line $1.
log_since() { tail -n +"$(($1 + 1))" "$LOG" | jq -c 'select(.target=="berth::access") | .fields'; }
log_mark() { wc -l <"$LOG"; }

# ---------------------------------------------------------------------------------------------
# A private dockerd (vfs storage, no bridge, no iptables), everything under $D, which must be
# short: dockerd and containerd put unix sockets under it (sun_path is limited to 108 bytes).
# The caller exports DOCKER_HOST=unix://$D/docker.sock.

DOCKERD_PID=
CONTAINERD_PID=

# launch_dockerd [DOCKERD FLAGS...]: starts dockerd in the background (e.g. with
# --insecure-registry HOST:PORT) without waiting for it; wait_dockerd waits.
launch_dockerd() {
    printf '{"deprecated-key-path": "%s/key.json"}\n' "$D" >"$D/daemon.json"
    dockerd --data-root "$D/root" --exec-root "$D/exec" -H "unix://$D/docker.sock" \
        --pidfile "$D/docker.pid" --iptables=false --ip6tables=false --bridge=none \
        --storage-driver=vfs --config-file "$D/daemon.json" "$@" \
        >"$DOCKERD_LOG" 2>&1 &
    DOCKERD_PID=$!
}

# Waits up to 30 s for the dockerd launch_dockerd started to answer `docker info` (sets
# CONTAINERD_PID); returns 1 if it does not.
wait_dockerd() {
    for _ in $(seq 1 300); do
        if docker info >/dev/null 2>&1; then
            CONTAINERD_PID=$(cat "$D/exec/containerd/containerd.pid" 2>/dev/null ||
                pgrep -P "$DOCKERD_PID" -x containerd || true)
            return 0
        fi
        kill -0 "$DOCKERD_PID" 2>/dev/null || break
        sleep 0.1
    done
    return 1
}

# start_dockerd [DOCKERD FLAGS...]: launch_dockerd, then wait_dockerd.
start_dockerd() {
    launch_dockerd "$@"
    wait_dockerd
}

# Why dockerd is not answering, for a failure message.
dockerd_failure() {
    if kill -0 "$DOCKERD_PID" 2>/dev/null; then
        echo "no answer to 'docker info' in 30s"
    else
        echo "dockerd exited"
    fi
}

# SIGTERM to dockerd (it stops its containerd child itself), SIGKILL to both after 20 s.
stop_dockerd() {
    [ -n "$DOCKERD_PID" ] || return 0
    kill -TERM "$DOCKERD_PID" 2>/dev/null || true
    for _ in $(seq 1 200); do
        kill -0 "$DOCKERD_PID" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$DOCKERD_PID" 2>/dev/null; then
        echo "dockerd still running 20s after SIGTERM: SIGKILL" >&2
        kill -KILL "$DOCKERD_PID" 2>/dev/null || true
    fi
    wait "$DOCKERD_PID" 2>/dev/null || true
    DOCKERD_PID=
    if [ -n "$CONTAINERD_PID" ]; then
        for _ in $(seq 1 50); do
            kill -0 "$CONTAINERD_PID" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$CONTAINERD_PID" 2>/dev/null || true
        CONTAINERD_PID=
    fi
}

# remove_workdir: removes $W (unless KEEP=1), first lazily unmounting anything left mounted
# under it; nothing should be (vfs, native snapshotter, no containers run), but a leftover
# mount must never turn rm -rf into a walk through someone else's files.
remove_workdir() {
    local m
    # shellcheck disable=SC2013 # mount points under $W have no blanks
    for m in $(awk -v w="$W/" 'index($2, w) == 1 { print $2 }' /proc/mounts | sort -r); do
        umount -l "$m" 2>/dev/null || true
    done
    if [ "${KEEP:-0}" = 1 ]; then
        echo "kept $W"
    elif awk -v w="$W/" 'index($2, w) == 1 { f = 1 } END { exit !f }' /proc/mounts; then
        echo "mounts left under $W: not removing it" >&2
    else
        rm -rf "$W"
    fi
}

# ---------------------------------------------------------------------------------------------
# HTTP and OCI layouts

# header URL NAME [CURL ARGS...]: a response header of a HEAD request (lower-case name).
header() {
    local url=$1 name=$2
    shift 2
    curl -sS -I "$@" "$url" | tr -d '\r' |
        awk -F': ' -v k="$name" 'tolower($1)==k { sub(/^[^:]*: /, ""); print }'
}

# Verifies every blob in an OCI layout is named by its sha256.
verify_layout_blobs() {
    local f n=0
    for f in "$1"/blobs/sha256/*; do
        eq "$(sha256sum "$f" | cut -d' ' -f1)" "$(basename "$f")" "blob $f"
        n=$((n + 1))
    done
    echo "$n blobs verified in $1"
}

# The manifest digest a layout's index.json names for ref $2.
layout_ref() {
    jq -r --arg r "$2" \
        '.manifests[] | select(.annotations["org.opencontainers.image.ref.name"]==$r) | .digest' \
        "$1/index.json"
}
layout_blob() { cat "$1/blobs/sha256/${2#sha256:}"; }

# ---------------------------------------------------------------------------------------------
# Reporting

PASSED=0
FAILED=0
FAILURES=()
pass() {
    PASSED=$((PASSED + 1))
    echo "PASS: $1"
}
fail() {
    FAILED=$((FAILED + 1))
    FAILURES+=("$1")
    echo "FAIL: $1"
}

# check NAME FUNCTION [ARGS...]: runs the function in a subshell with `set -e` in force (so
# any failing command fails the check), its output captured and shown only on failure.
check() {
    local name=$1 rc t
    shift
    t=$(date +%s)
    set +e
    (
        set -e
        "$@"
    ) >"$W/check.out" 2>&1
    rc=$?
    set -e
    t=$(($(date +%s) - t))
    if [ "$rc" = 0 ]; then
        pass "$name (${t}s)"
    else
        fail "$name (${t}s)"
        tail -n 25 "$W/check.out" | awk '{ print "      | " $0 }'
    fi
}

# eq ACTUAL EXPECTED [WHAT]
eq() {
    if [ "$1" != "$2" ]; then
        echo "mismatch${3:+ in $3}:"
        echo "  expected: $2"
        echo "  actual:   $1"
        return 1
    fi
}
