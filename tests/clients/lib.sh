# Helpers shared by the real-client scripts (run.sh, docker.sh); sourced, not run.
#
# The sourcing script sets, before calling them:
#   W       its private temp dir (check output goes to $W/check.out, berth's data to $W/data)
#   LOG     berth's JSON log file
#   BERTH   the berth binary
# and reads back PORT and BERTH_PID (start_berth), PASSED, FAILED and FAILURES (pass, fail).

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
    local i rc=0
    kill -TERM "$BERTH_PID" 2>/dev/null || true
    for i in $(seq 1 200); do
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

# Starts berth on a free loopback port (sets PORT and BERTH_PID) and waits for "berth ready";
# retries with another port twice, then exits.
start_berth() {
    local attempt i
    for attempt in 1 2 3; do
        PORT=$(free_port)
        "$BERTH" serve --addr "127.0.0.1:$PORT" --data-dir "$W/data" --log-format json \
            2>"$LOG" &
        BERTH_PID=$!
        for i in $(seq 1 300); do
            if grep -q 'berth ready' "$LOG"; then
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
