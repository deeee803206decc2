#!/usr/bin/env bash
# What access control costs: berth with --auth none|basic|token against CNCF Distribution
# (Debian's docker-registry) without auth and with htpasswd auth. One run, same machine,
# loopback only, all five servers up for the whole run, one loaded at a time.
#
#   BENCH_BERTH_BIN=/tmp/berth-bench-bin bench/auth.sh   # ~3.6 min, plus up to QUIET_BUDGET s
#
# Prints a Markdown table (figure, berth, peer, berth/peer) on stdout; progress on stderr.
#
# Servers (each with its own data directory):
#   berth none, berth basic, berth token   users alice (developer of namespace "team") and
#                                          root (server admin); repository team/bench
#   peer none, peer htpasswd               htpasswd entry for alice, bcrypt cost PEER_BCRYPT_COST
#                                          (default 10, the cost berth hashes with)
# Measurements (oha, LOAD_SECS s, CONNS connections, as bench/run.sh):
#   manifest GET by tag and HEAD blob, per server (manifest GET also over 1 connection, one
#   request at a time, for latency without queueing); in basic mode every request carries
#   Basic credentials, in token mode a Bearer token fetched once from berth's /token;
#   GET /token (Basic credentials, scope repository:team/bench:pull) on berth token;
#   SMALL_PUSHES sequential 4 KiB pushes (bench/small_pushes.py) with credentials.
# For each load test the server's own CPU time (utime+stime from /proc) is divided by the
# number of responses: CPU per request does not depend on how the load generator, which
# shares the 2 CPUs, is scheduled.
#
# Environment knobs:
#   BENCH_BERTH_BIN   berth binary                       (default target/release/berth; no build)
#   LOAD_SECS         oha duration per load test          (default 10)
#   CONNS             connections for load tests          (default 64)
#   SMALL_PUSHES      sequential 4 KiB pushes             (default 200)
#   PUSH_ROUNDS       rounds of them, median reported     (default 3; the peer with htpasswd: 1)
#   PEER_BCRYPT_COST  bcrypt cost of the peer's htpasswd  (default 10)
#   ADMIN_ROWS=0      skip the manifest GET runs as server admin (saves 2 x LOAD_SECS)
#   QUIET_BUDGET      seconds the whole run may spend waiting, before a test, for foreign
#                     processes to use < 10% of a CPU (default 120; 0 = never wait). Load
#                     tests that still ran beside > 15% foreign CPU are logged as WARNINGs.
#   BENCH_DIR         data dirs + temp files             (default: mktemp -d under /tmp, removed)
#   BENCH_OUT         also write the Markdown table to this file
# Any BERTH_* variable in the environment is dropped: berth reads them all as configuration.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
for v in $(compgen -e | grep '^BERTH_' || true); do unset "$v"; done
BERTH_BIN=${BENCH_BERTH_BIN:-$ROOT/target/release/berth}
LOAD_SECS=${LOAD_SECS:-10}
CONNS=${CONNS:-64}
SMALL_PUSHES=${SMALL_PUSHES:-200}
PUSH_ROUNDS=${PUSH_ROUNDS:-3}
PEER_BCRYPT_COST=${PEER_BCRYPT_COST:-10}
ADMIN_ROWS=${ADMIN_ROWS:-1}
QUIET_BUDGET=${QUIET_BUDGET:-120}
REPO=team/bench
SMALL_REPO=team/bench-small
PW=bench-Passw0rd
CLK_TCK=$(getconf CLK_TCK)

log() { printf '[auth-bench %s] %s\n' "$(date +%T)" "$*" >&2; }
die() { log "FATAL: $*"; exit 1; }

# ---------------------------------------------------------------- prerequisites
export PATH="$HOME/.cargo/bin:$PATH"
need_apt=()
command -v docker-registry >/dev/null || need_apt+=(docker-registry)
command -v curl >/dev/null || need_apt+=(curl)
command -v python3 >/dev/null || need_apt+=(python3)
command -v jq >/dev/null || need_apt+=(jq)
command -v htpasswd >/dev/null || python3 -c 'import bcrypt' 2>/dev/null || need_apt+=(apache2-utils)
if ((${#need_apt[@]})); then
    log "installing ${need_apt[*]}"
    SUDO=; [[ $(id -u) -eq 0 ]] || SUDO=sudo
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
if ! command -v oha >/dev/null; then
    log "oha missing: cargo install --locked oha"
    cargo install --locked oha >/dev/null 2>&1 || die "cannot install oha"
fi
PEER_BIN=$(command -v docker-registry)
[[ -x $BERTH_BIN ]] || die "no berth binary at $BERTH_BIN (build it, or set BENCH_BERTH_BIN)"

# ---------------------------------------------------------------- temp space + cleanup
WORK=${BENCH_DIR:-$(mktemp -d /tmp/berth-auth-bench.XXXXXX)}
mkdir -p "$WORK"
PIDS=()
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    if [[ -z ${BENCH_DIR:-} ]]; then rm -rf "$WORK"; fi
    exit "$rc"
}
trap cleanup EXIT INT TERM

free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
b64() { printf '%s' "$1" | base64 -w0; }
BASIC_ALICE="Basic $(b64 "alice:$PW")"
BASIC_ROOT="Basic $(b64 "root:$PW")"

wait_ready() { # url pid name
    local code
    for _ in $(seq 1 300); do
        kill -0 "$2" 2>/dev/null || { tail -n 20 "$WORK/$3.log" >&2; die "$3 exited during start-up"; }
        code=$(curl -s -o /dev/null -w '%{http_code}' "$1/v2/" || true)
        [[ $code == 200 || $code == 401 ]] && return 0
        sleep 0.1
    done
    die "$3 did not become ready"
}

declare -A URL PID  # per server: base URL, process id

# ---------------------------------------------------------------- berth servers
start_berth() { # name mode
    local name=$1 mode=$2 d=$WORK/$1 port
    mkdir -p "$d"
    printf '%s\n' "$PW" | "$BERTH_BIN" user add alice --password-stdin --data-dir "$d" >/dev/null
    printf '%s\n' "$PW" | "$BERTH_BIN" user add root --password-stdin --admin --data-dir "$d" >/dev/null
    "$BERTH_BIN" namespace create team --data-dir "$d" >/dev/null
    "$BERTH_BIN" namespace member add team alice developer --data-dir "$d" >/dev/null
    port=$(free_port)
    BERTH_LOG__LEVEL=warn "$BERTH_BIN" serve --auth "$mode" --addr "127.0.0.1:$port" \
        --data-dir "$d" >"$WORK/$name.log" 2>&1 &
    PID[$name]=$!; PIDS+=("$!")
    URL[$name]=http://127.0.0.1:$port
}
start_berth bnone none
start_berth bbasic basic
start_berth btoken token

# ---------------------------------------------------------------- peer servers
if command -v htpasswd >/dev/null; then
    printf '%s\n' "$PW" | htpasswd -inB -C "$PEER_BCRYPT_COST" alice >"$WORK/htpasswd" 2>/dev/null
else
    PW=$PW COST=$PEER_BCRYPT_COST python3 -c 'import bcrypt,os
print("alice:" + bcrypt.hashpw(os.environ["PW"].encode(), bcrypt.gensalt(int(os.environ["COST"]))).decode())' \
        >"$WORK/htpasswd"
fi
grep -q '^alice:\$2[aby]\$' "$WORK/htpasswd" || die "htpasswd entry is not bcrypt"
start_peer() { # name with-auth
    local name=$1 port
    port=$(free_port)
    mkdir -p "$WORK/$name-data"
    {
        cat <<EOF
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $WORK/$name-data
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$port
EOF
        if [[ $2 == 1 ]]; then
            printf 'auth:\n  htpasswd:\n    realm: basic-realm\n    path: %s\n' "$WORK/htpasswd"
        fi
    } >"$WORK/$name.yml"
    "$PEER_BIN" serve "$WORK/$name.yml" >"$WORK/$name.log" 2>&1 &
    PID[$name]=$!; PIDS+=("$!")
    URL[$name]=http://127.0.0.1:$port
}
start_peer pnone 0
start_peer pauth 1

for s in bnone bbasic btoken pnone pauth; do wait_ready "${URL[$s]}" "${PID[$s]}" "$s"; done
log "servers up: $(for s in bnone bbasic btoken pnone pauth; do printf '%s=%s ' "$s" "${URL[$s]##*:}"; done)(data in $WORK)"

# ---------------------------------------------------------------- helpers
# get_token SERVER BASIC_HEADER SCOPE -> prints the token
get_token() {
    local out
    out=$(curl -sS -H "Authorization: $2" "${URL[$1]}/token?service=berth&scope=$3") ||
        die "GET /token on $1 failed"
    jq -er '.token' <<<"$out" || die "no token in /token answer: $out"
}

# auth_for SERVER [USER] -> the Authorization header value a pull client sends ("" for none)
auth_for() {
    local basic=$BASIC_ALICE
    [[ ${2:-alice} == root ]] && basic=$BASIC_ROOT
    case $1 in
        bnone | pnone) echo "" ;;
        bbasic | pauth) echo "$basic" ;;
        btoken) echo "Bearer $(get_token btoken "$basic" "repository:$REPO:pull")" ;;
    esac
}

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# Foreign load is measured in user time only: the machine's (user+nice, all CPUs) minus our
# servers' and oha's. System time would count the kernel's loopback work, which runs partly in
# kernel threads (softirq) that belong to no process and grows with the request rate.
sys_ticks() { awk '/^cpu /{print $2 + $3}' /proc/stat; }
user_ticks() { awk '{print $14}' "/proc/$1/stat"; }
# User-time ticks of this shell's finished children (oha among them), into CHILD_TICKS. Not
# called as $(...): `times` in a subshell reports that subshell's children.
child_ticks() {
    times >"$WORK/times"
    CHILD_TICKS=$(awk -v hz="$CLK_TCK" 'NR==2{ split($1,a,"m"); sub("s","",a[2]); printf "%d", (a[1]*60+a[2])*hz }' "$WORK/times")
}
OTHER_MAX=0
OTHER_NOTES=

# settle: wait (up to 15 s) until every server uses < 2% CPU, so work left over from the
# previous test (the peer keeps hashing bcrypt for requests in its queue) is done; then, while
# QUIET_BUDGET lasts (seconds, for the whole run), until the rest of the machine uses < 10% of
# a CPU: the 2 CPUs are shared, and a compile job next door halves any figure.
QUIET_LEFT=$QUIET_BUDGET
settle() {
    local a u b p busy mine all0 all1 i=0
    while :; do
        a=(); u=(); for p in "${PIDS[@]}"; do a+=("$(cpu_ticks "$p")"); u+=("$(user_ticks "$p")"); done
        all0=$(sys_ticks)
        sleep 0.5
        all1=$(sys_ticks)
        busy=0; b=0; mine=0
        for p in "${PIDS[@]}"; do
            (($(cpu_ticks "$p") - a[b] > CLK_TCK / 100)) && busy=1
            mine=$((mine + $(user_ticks "$p") - u[b])); b=$((b + 1))
        done
        i=$((i + 1))
        if ((busy)); then
            ((i < 30)) && continue
            log "WARNING: a server is still busy"; return 0
        fi
        # Foreign load: all busy ticks minus ours (0.5 s = CLK_TCK/2 ticks per CPU).
        ((all1 - all0 - mine <= CLK_TCK / 20)) && return 0
        if ((QUIET_LEFT <= 0)); then return 0; fi
        ((QUIET_LEFT == QUIET_BUDGET)) && log "waiting for other processes to quiet down (budget ${QUIET_BUDGET}s)"
        QUIET_LEFT=$((QUIET_LEFT - 1)); sleep 0.5
    done
}

# curl_auth METHOD URL AUTH [curl args...] -> prints the status code
curl_auth() {
    local m=$1 url=$2 auth=$3; shift 3
    local h=(); [[ -n $auth ]] && h=(-H "Authorization: $auth")
    curl -sS -o /dev/null -w '%{http_code}' -X "$m" "${h[@]}" "$@" "$url"
}

# load SERVER PATH METHOD AUTH -> sets LOAD_RPS, LOAD_P99_MS, LOAD_N, LOAD_CPU_US
load() {
    local s=$1 url=${URL[$1]}$2 method=$3 auth=$4 out total c0 c1 u0 u1 s0 s1 k0 k1 code
    local h=(-H 'Accept: application/vnd.oci.image.manifest.v1+json')
    [[ -n $auth ]] && h+=(-H "Authorization: $auth")
    # One request first: checks the credentials work and warms berth's password cache.
    if [[ $method == HEAD ]]; then
        code=$(curl -sS -o /dev/null -w '%{http_code}' -I "${h[@]}" "$url")
    else
        code=$(curl -sS -o /dev/null -w '%{http_code}' -X "$method" "${h[@]}" "$url")
    fi
    [[ $code == 200 ]] || die "$s $method $2: warm-up request returned $code"
    settle
    c0=$(cpu_ticks "${PID[$s]}"); u0=$(user_ticks "${PID[$s]}"); s0=$(sys_ticks); child_ticks; k0=$CHILD_TICKS
    # -w: requests in flight at the deadline complete and count (the peer with htpasswd
    # answers ~30 req/s, so 64 requests cut off at the deadline would skew its figure);
    # req/s is 2xx responses over the whole time including that tail.
    out=$(oha -z "${LOAD_SECS}s" -w -c "$CONNS" --no-tui --output-format json -m "$method" "${h[@]}" "$url")
    c1=$(cpu_ticks "${PID[$s]}"); u1=$(user_ticks "${PID[$s]}"); s1=$(sys_ticks); child_ticks; k1=$CHILD_TICKS
    # User time of whatever else ran meanwhile (the other servers are idle, so foreign
    # processes), in % of one CPU: the machine is shared, and figures taken under foreign load
    # do not compare.
    local secs other
    secs=$(jq -r '.summary.total' <<<"$out")
    other=$(awk -v d=$((s1 - s0 - (u1 - u0) - (k1 - k0))) -v hz="$CLK_TCK" -v t="$secs" \
        'BEGIN{ v = d / hz / t * 100; printf "%.0f", (v < 0 ? 0 : v) }')
    ((other > OTHER_MAX)) && OTHER_MAX=$other
    if ((other > 15)); then
        log "WARNING: other processes used $other% of a CPU (user time) during $s $method $2"
        local what=${2%%\?*}; what=${what#/v2/$REPO/}; what=${what%%/*}
        OTHER_NOTES+="${OTHER_NOTES:+, }$s $method $what $other%"
    fi
    local ok
    ok=$(jq -r '[.statusCodeDistribution | to_entries[] | select(.key|startswith("2")) | .value] | add // 0' <<<"$out")
    total=$(jq -r '[.statusCodeDistribution | to_entries[] | .value] | add // 0' <<<"$out")
    [[ $ok == "$total" && $total -gt 0 ]] ||
        log "WARNING: $s $method $2: $ok of $total responses were 2xx ($(jq -c .statusCodeDistribution <<<"$out")), errors $(jq -c .errorDistribution <<<"$out")"
    LOAD_RPS=$(jq -r --argjson ok "$ok" '$ok / .summary.total' <<<"$out")
    LOAD_P99_MS=$(jq -r '(.latencyPercentiles.p99 // 0) * 1000' <<<"$out")
    LOAD_N=$total
    # Server CPU (whole process, until oha returned) per completed response.
    LOAD_CPU_US=$(awk -v d=$((c1 - c0)) -v hz="$CLK_TCK" -v n="$total" \
        'BEGIN{ if (n > 0) printf "%.1f", d / hz * 1e6 / n; else print 0 }')
}

declare -A R
run_load() { # key server path method auth label
    load "$2" "$3" "$4" "$5"
    R[$1.rps]=$LOAD_RPS; R[$1.p99]=$LOAD_P99_MS; R[$1.cpu]=$LOAD_CPU_US; R[$1.n]=$LOAD_N
    log "$6: $(printf '%.0f' "$LOAD_RPS") req/s, p99 $(printf '%.2f' "$LOAD_P99_MS") ms, $LOAD_N responses, server CPU $LOAD_CPU_US us/req"
}

# push_blob SERVER FILE DIGEST AUTH REPO -> dies unless 201
push_blob() {
    local base=${URL[$1]} file=$2 digest=$3 auth=$4 repo=$5 loc sep code
    local h=(); [[ -n $auth ]] && h=(-H "Authorization: $auth")
    loc=$(curl -sS -o /dev/null -D - -X POST "${h[@]}" "$base/v2/$repo/blobs/uploads/" |
        awk 'tolower($1)=="location:"{print $2}' | tr -d '\r')
    [[ -n $loc ]] || die "no Location from POST on $1"
    [[ $loc == http* ]] || loc=$base$loc
    sep='?'; [[ $loc == *\?* ]] && sep='&'
    code=$(curl -sS -o /dev/null -w '%{http_code}' -X PUT "${h[@]}" -H 'Expect:' \
        -H 'Content-Type: application/octet-stream' --data-binary @"$file" "$loc${sep}digest=$digest")
    [[ $code == 201 ]] || die "$1 blob push returned $code"
}

push_auth() { # SERVER -> Authorization value for pushes to team/* ("" for none)
    case $1 in
        bnone | pnone) echo "" ;;
        bbasic | pauth) echo "$BASIC_ALICE" ;;
        btoken) echo "Bearer $(get_token btoken "$BASIC_ALICE" "repository:$2:pull,push")" ;;
    esac
}

# ---------------------------------------------------------------- seed: one small image
printf '{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]},"config":{}}' \
    >"$WORK/config.json"
head -c 2048 /dev/urandom >"$WORK/layer.bin"
CFG_D=sha256:$(sha256sum "$WORK/config.json" | cut -d' ' -f1)
CFG_S=$(stat -c %s "$WORK/config.json")
LAY_D=sha256:$(sha256sum "$WORK/layer.bin" | cut -d' ' -f1)
LAY_S=$(stat -c %s "$WORK/layer.bin")
cat >"$WORK/manifest.json" <<EOF
{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"$CFG_D","size":$CFG_S},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"$LAY_D","size":$LAY_S}]}
EOF
for s in bnone bbasic btoken pnone pauth; do
    a=$(push_auth "$s" "$REPO")
    push_blob "$s" "$WORK/config.json" "$CFG_D" "$a" "$REPO"
    push_blob "$s" "$WORK/layer.bin" "$LAY_D" "$a" "$REPO"
    code=$(curl_auth PUT "${URL[$s]}/v2/$REPO/manifests/latest" "$a" \
        -H 'Content-Type: application/vnd.oci.image.manifest.v1+json' --data-binary @"$WORK/manifest.json")
    [[ $code == 201 ]] || die "$s manifest push: $code"
    # Credentials are required where they should be.
    if [[ $s != bnone && $s != pnone ]]; then
        code=$(curl_auth GET "${URL[$s]}/v2/$REPO/manifests/latest" "")
        [[ $code == 401 ]] || die "$s answers $code to a manifest GET without credentials"
    fi
done
log "seeded $REPO:latest on all servers"

# ---------------------------------------------------------------- 1. manifest GET by tag
MPATH=/v2/$REPO/manifests/latest
run_load mget.bnone bnone "$MPATH" GET "" "berth none   manifest GET"
run_load mget.bbasic bbasic "$MPATH" GET "$(auth_for bbasic)" "berth basic  manifest GET"
if [[ $ADMIN_ROWS == 1 ]]; then
    run_load mget.bbasic_admin bbasic "$MPATH" GET "$(auth_for bbasic root)" "berth basic  manifest GET (admin)"
fi
run_load mget.btoken btoken "$MPATH" GET "$(auth_for btoken)" "berth token  manifest GET"
if [[ $ADMIN_ROWS == 1 ]]; then
    run_load mget.btoken_admin btoken "$MPATH" GET "$(auth_for btoken root)" "berth token  manifest GET (admin)"
fi
run_load mget.pnone pnone "$MPATH" GET "" "peer none    manifest GET"
run_load mget.pauth pauth "$MPATH" GET "$(auth_for pauth)" "peer htpasswd manifest GET"

# Single connection, one request at a time: the latency auth adds without queueing (the
# peer with htpasswd gets 20 requests: each costs it ~75 ms of bcrypt).
for s in bnone bbasic btoken pnone pauth; do
    n=2000; [[ $s == pauth ]] && n=20
    a=$(auth_for "$s"); h=(-H 'Accept: application/vnd.oci.image.manifest.v1+json')
    [[ -n $a ]] && h+=(-H "Authorization: $a")
    settle
    out=$(oha -n "$n" -c 1 --no-tui --output-format json "${h[@]}" "${URL[$s]}$MPATH")
    [[ $(jq -r '.statusCodeDistribution["200"] // 0' <<<"$out") == "$n" ]] || die "$s single-connection GETs failed"
    R[lat.$s]=$(jq -r '.latencyPercentiles.p50 * 1e6' <<<"$out")
    log "$s manifest GET, 1 connection: median $(printf '%.0f' "${R[lat.$s]}") us"
done

# ---------------------------------------------------------------- 2. HEAD blob
BPATH=/v2/$REPO/blobs/$LAY_D
run_load head.bnone bnone "$BPATH" HEAD "" "berth none   HEAD blob"
run_load head.bbasic bbasic "$BPATH" HEAD "$(auth_for bbasic)" "berth basic  HEAD blob"
run_load head.btoken btoken "$BPATH" HEAD "$(auth_for btoken)" "berth token  HEAD blob"
run_load head.pnone pnone "$BPATH" HEAD "" "peer none    HEAD blob"
run_load head.pauth pauth "$BPATH" HEAD "$(auth_for pauth)" "peer htpasswd HEAD blob"

# ---------------------------------------------------------------- 3. GET /token
run_load token.btoken btoken "/token?service=berth&scope=repository:$REPO:pull" GET "$BASIC_ALICE" \
    "berth GET /token"

# ---------------------------------------------------------------- 4. small sequential pushes
# PUSH_ROUNDS rounds alternating the servers (median reported): single runs of 200 fsync-bound
# pushes move by 50% here. The peer with htpasswd spends ~0.12 s of bcrypt per request
# (~45 s per run), so it runs once.
declare -A PS
for round in $(seq 1 "$PUSH_ROUNDS"); do
    for s in bnone bbasic btoken pnone pauth; do
        [[ $s == pauth && $round -gt 1 ]] && continue
        sync; settle
        a=$(push_auth "$s" "$SMALL_REPO")
        out=$(BENCH_AUTHORIZATION=$a python3 "$ROOT/bench/small_pushes.py" 127.0.0.1 "${URL[$s]##*:}" \
            "$SMALL_PUSHES" 4096 "$SMALL_REPO") || die "$s small pushes failed"
        read -r n secs <<<"$out"
        v=$(awk -v n="$n" -v s="$secs" 'BEGIN{printf "%.1f", n/s}')
        PS[$s]+="$v "
        log "$s $n small pushes, round $round: ${secs}s ($v/s)"
    done
done
median() { tr ' ' '\n' | grep . | sort -g | awk '{a[NR]=$1} END{print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
for s in bnone bbasic btoken pnone pauth; do R[smallps.$s]=$(median <<<"${PS[$s]}"); done

kill -TERM "${PIDS[@]}" 2>/dev/null || true
for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
PIDS=()

# ---------------------------------------------------------------- report
fmt() { awk -v v="$1" -v d="${2:-0}" 'BEGIN{ if (v == "") print "-"; else printf "%.*f", d, v }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN{ if (a == "" || b == "" || a+0 == 0 || b+0 == 0) print "";
    else if (a/b < 0.1) printf "%.2gx", a/b; else printf "%.2fx", a/b }'; }
row() { printf '| %s | %s | %s | %s |\n' "$1" "$2" "$3" "$4"; }

{
    echo "$(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) CPUs ($(awk -F': ' '/model name/{print $2; exit}' /proc/cpuinfo)), berth $("$BERTH_BIN" --version | awk '{print $NF}'), docker-registry $("$PEER_BIN" --version | awk '{print $NF}'), \`oha\` $LOAD_SECS s x $CONNS connections, peer htpasswd bcrypt cost $PEER_BCRYPT_COST. Repository \`$REPO\`; Basic and Bearer requests are user alice, developer of namespace \`team\`, unless marked admin. User CPU of other processes during the load tests: at most $OTHER_MAX% of one CPU${OTHER_NOTES:+ (over 15%: $OTHER_NOTES)}."
    echo
    echo "| Figure | berth | peer | berth/peer |"
    echo "|---|---:|---:|---:|"
    for m in mget head; do
        [[ $m == mget ]] && what="Manifest GET by tag" || what="HEAD blob"
        row "$what, no auth, req/s" "$(fmt "${R[$m.bnone.rps]}")" "$(fmt "${R[$m.pnone.rps]}")" "$(ratio "${R[$m.bnone.rps]}" "${R[$m.pnone.rps]}")"
        row "$what, berth Basic / peer htpasswd, req/s" "$(fmt "${R[$m.bbasic.rps]}")" "$(fmt "${R[$m.pauth.rps]}")" "$(ratio "${R[$m.bbasic.rps]}" "${R[$m.pauth.rps]}")"
        if [[ -n ${R[$m.bbasic_admin.rps]:-} ]]; then
            row "$what, berth Basic as server admin, req/s" "$(fmt "${R[$m.bbasic_admin.rps]}")" "" ""
        fi
        row "$what, berth Bearer token, req/s" "$(fmt "${R[$m.btoken.rps]}")" "" ""
        if [[ -n ${R[$m.btoken_admin.rps]:-} ]]; then
            row "$what, berth Bearer as server admin, req/s" "$(fmt "${R[$m.btoken_admin.rps]}")" "" ""
        fi
        row "$what, with auth / no auth, req/s (berth Basic; peer htpasswd)" "$(ratio "${R[$m.bbasic.rps]}" "${R[$m.bnone.rps]}")" "$(ratio "${R[$m.pauth.rps]}" "${R[$m.pnone.rps]}")" ""
        row "$what, berth Bearer / no auth, req/s" "$(ratio "${R[$m.btoken.rps]}" "${R[$m.bnone.rps]}")" "" ""
        row "$what, no auth, p99 ms" "$(fmt "${R[$m.bnone.p99]}" 2)" "$(fmt "${R[$m.pnone.p99]}" 2)" "$(ratio "${R[$m.bnone.p99]}" "${R[$m.pnone.p99]}")"
        row "$what, berth Basic / peer htpasswd, p99 ms" "$(fmt "${R[$m.bbasic.p99]}" 2)" "$(fmt "${R[$m.pauth.p99]}" 2)" "$(ratio "${R[$m.bbasic.p99]}" "${R[$m.pauth.p99]}")"
        row "$what, berth Bearer token, p99 ms" "$(fmt "${R[$m.btoken.p99]}" 2)" "" ""
        row "$what, server CPU per request, no auth, us" "$(fmt "${R[$m.bnone.cpu]}" 1)" "$(fmt "${R[$m.pnone.cpu]}" 1)" "$(ratio "${R[$m.bnone.cpu]}" "${R[$m.pnone.cpu]}")"
        row "$what, server CPU per request, berth Basic / peer htpasswd, us" "$(fmt "${R[$m.bbasic.cpu]}" 1)" "$(fmt "${R[$m.pauth.cpu]}" 1)" "$(ratio "${R[$m.bbasic.cpu]}" "${R[$m.pauth.cpu]}")"
        row "$what, server CPU per request, berth Bearer, us" "$(fmt "${R[$m.btoken.cpu]}" 1)" "" ""
        if [[ $m == mget ]]; then
            row "$what, 1 connection, median latency, no auth, us" "$(fmt "${R[lat.bnone]}")" "$(fmt "${R[lat.pnone]}")" "$(ratio "${R[lat.bnone]}" "${R[lat.pnone]}")"
            row "$what, 1 connection, median latency, berth Basic / peer htpasswd, us" "$(fmt "${R[lat.bbasic]}")" "$(fmt "${R[lat.pauth]}")" "$(ratio "${R[lat.bbasic]}" "${R[lat.pauth]}")"
            row "$what, 1 connection, median latency, berth Bearer, us" "$(fmt "${R[lat.btoken]}")" "" ""
        fi
    done
    row "GET /token (Basic, cached password, pull scope), req/s" "$(fmt "${R[token.btoken.rps]}")" "" ""
    row "GET /token, p99 ms" "$(fmt "${R[token.btoken.p99]}" 2)" "" ""
    row "GET /token, server CPU per request, us" "$(fmt "${R[token.btoken.cpu]}" 1)" "" ""
    row "$SMALL_PUSHES sequential 4 KiB pushes, no auth, pushes/s (median of $PUSH_ROUNDS)" "$(fmt "${R[smallps.bnone]}" 1)" "$(fmt "${R[smallps.pnone]}" 1)" "$(ratio "${R[smallps.bnone]}" "${R[smallps.pnone]}")"
    row "$SMALL_PUSHES sequential 4 KiB pushes, berth Basic (median of $PUSH_ROUNDS) / peer htpasswd (1 run), pushes/s" "$(fmt "${R[smallps.bbasic]}" 1)" "$(fmt "${R[smallps.pauth]}" 1)" "$(ratio "${R[smallps.bbasic]}" "${R[smallps.pauth]}")"
    row "$SMALL_PUSHES sequential 4 KiB pushes, berth Bearer (pull,push token), pushes/s (median of $PUSH_ROUNDS)" "$(fmt "${R[smallps.btoken]}" 1)" "" ""
    row "$SMALL_PUSHES sequential 4 KiB pushes, with auth / no auth (berth Basic; peer htpasswd)" "$(ratio "${R[smallps.bbasic]}" "${R[smallps.bnone]}")" "$(ratio "${R[smallps.pauth]}" "${R[smallps.pnone]}")" ""
    row "$SMALL_PUSHES sequential 4 KiB pushes, berth Bearer / no auth" "$(ratio "${R[smallps.btoken]}" "${R[smallps.bnone]}")" "" ""
} >"$WORK/auth-results.md"
if [[ -n ${BENCH_OUT:-} ]]; then cp "$WORK/auth-results.md" "$BENCH_OUT"; fi
cat "$WORK/auth-results.md"
