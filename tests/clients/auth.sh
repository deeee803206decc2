#!/usr/bin/env bash
# Real-client access-control tests: skopeo, podman and docker log in to berth, push, pull and
# delete with passwords and CI access tokens, in `--auth basic` and `--auth token` mode over
# plain HTTP, then over TLS (a self-signed development CA, and a certificate replaced on disk
# while the server runs); finally no password or token may appear in berth's logs.
#
# Starts its own berth servers on free loopback ports, each with its own temporary data dir,
# set up with the admin CLI while they run, and a private dockerd. Test images are generated
# locally (mkimages.py): no network beyond loopback. Every client gets its own auth file
# (skopeo/podman --authfile, docker --config), so no login leaks between checks or into the
# host. Prints one PASS/FAIL line per check, then "N passed, M failed"; exits non-zero on any
# failure.
#
#   tests/clients/auth.sh
#
# Environment:
#   BERTH=/path/to/berth   use this binary (default: cargo build --release, target/release/berth)
#   KEEP=1                 keep the temp dir (server logs, auth files) for inspection
#   SKIP_PODMAN=1          skip the podman checks (printed as SKIP, never silently)
#   SKIP_DOCKER=1          skip the docker checks (no dockerd is started)
#
# Needs root for dockerd (and on a fresh machine to apt-get install missing tools).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
T0=$(date +%s)
# Shared helpers: apt_install need stop_berth free_port start_berth log_since log_mark
# launch_dockerd wait_dockerd stop_dockerd dockerd_failure remove_workdir pass fail check eq
# layout_ref.
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# ---------------------------------------------------------------------------------------------
# Tools

DOCKER=1
[ "${SKIP_DOCKER:-0}" = 1 ] && DOCKER=0
PODMAN_ON=1
[ "${SKIP_PODMAN:-0}" = 1 ] && PODMAN_ON=0

tools=(curl:curl jq:jq python3:python3 skopeo:skopeo openssl:openssl sha256sum:coreutils)
[ "$PODMAN_ON" = 1 ] && tools+=(podman:podman)
[ "$DOCKER" = 1 ] && tools+=(docker:docker.io dockerd:docker.io containerd:containerd)
need "${tools[@]}"

if [ -z "${BERTH:-}" ]; then
    (cd "$ROOT" && cargo build --release --quiet --bin berth)
    BERTH=${CARGO_TARGET_DIR:-$ROOT/target}/release/berth
fi
[ -x "$BERTH" ] || { echo "no berth binary at $BERTH" >&2; exit 2; }
T1=$(date +%s)
echo "setup (tools, build): $((T1 - T0))s"

# ---------------------------------------------------------------------------------------------
# Temp dir, servers, cleanup

# Short (dockerd puts unix sockets under it) and lower-case (podman names images after dirs).
W=/tmp/ba.$(od -An -N4 -tx1 /dev/urandom | tr -d ' \n')
mkdir -m 700 "$W"
D=$W/d # dockerd's data-root, exec-root, socket, config
DOCKERD_LOG=$W/dockerd.log

# The servers this script started: name -> pid, port.
declare -A SPID=() SPORT=()

cleanup() {
    local rc=$? name
    stop_dockerd || true
    for name in "${!SPID[@]}"; do
        BERTH_PID=${SPID[$name]}
        if [ -n "$BERTH_PID" ] && kill -0 "$BERTH_PID" 2>/dev/null; then
            stop_berth || true
        fi
    done
    remove_workdir
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The script logs in with wrong passwords and revoked tokens on purpose, all from 127.0.0.1,
# with berth's default throttle: a user's failures block only that user from this address,
# never the other users and tokens the following checks log in with.

# start_server NAME [SERVE FLAGS...]: starts berth with data dir $W/NAME and log $W/NAME.log.
start_server() {
    local name=$1
    shift
    DATA_DIR=$W/$name
    LOG=$W/$name.log
    start_berth "$@"
    SPID[$name]=$BERTH_PID
    SPORT[$name]=$PORT
    echo "berth $name: 127.0.0.1:$PORT (pid $BERTH_PID) $*"
}

# use_server NAME: points the helpers (log_since, stop_berth) and the checks at that server.
use_server() {
    M=$1
    BERTH_PID=${SPID[$M]}
    PORT=${SPORT[$M]}
    LOG=$W/$M.log
    DATA=$W/$M
    REG=127.0.0.1:$PORT
}

# finish_server NAME: stops it (in this shell: only the parent can `wait`) and checks that it
# stayed up through every flow and exits 0 on SIGTERM.
finish_server() {
    local rc=0
    use_server "$1"
    if ! kill -0 "$BERTH_PID" 2>/dev/null; then
        fail "[$M] berth up after all flows (it died; log tail below)"
        tail -n 10 "$LOG" | awk '{ print "      | " $0 }'
        return 0
    fi
    stop_berth || rc=$?
    SPID[$M]=
    if [ "$rc" = 0 ]; then
        pass "[$M] berth up after all flows, exits 0 on SIGTERM"
    else
        fail "[$M] berth up after all flows, exits 0 on SIGTERM (exit status $rc)"
        tail -n 5 "$LOG" | awk '{ print "      | " $0 }'
    fi
}

# ---------------------------------------------------------------------------------------------
# Client configuration, isolated from the host's and per client

POLICY=$W/policy.json
echo '{"default":[{"type":"insecureAcceptAnything"}]}' >"$POLICY"
printf 'unqualified-search-registries = []\n' >"$W/registries.conf"
export CONTAINERS_REGISTRIES_CONF=$W/registries.conf
mkdir "$W/auth" "$W/docker" "$W/secrets"
# The default for any client call without its own auth file: empty, i.e. anonymous.
export REGISTRY_AUTH_FILE=$W/auth/anonymous.json
echo '{"auths":{}}' >"$REGISTRY_AUTH_FILE"
export DOCKER_CONFIG=$W/docker/anonymous
mkdir "$DOCKER_CONFIG"
echo '{}' >"$DOCKER_CONFIG/config.json"
SKOPEO=(skopeo --policy "$POLICY")

# authfile NAME: a containers-auth.json of its own for one client in one check (created empty).
authfile() {
    local f=$W/auth/$M-$1.json
    [ -e "$f" ] || echo '{"auths":{}}' >"$f"
    echo "$f"
}
# dockercfg NAME: a DOCKER_CONFIG directory of its own (created empty).
dockercfg() {
    local d=$W/docker/$M-$1
    [ -d "$d" ] || { mkdir "$d"; echo '{}' >"$d/config.json"; }
    echo "$d"
}
# has_auth FILE: whether the auth file (containers or docker format) holds credentials for $REG.
has_auth() { jq -e --arg r "$REG" '.auths[$r] // empty' "$1" >/dev/null; }

rand() { od -An -N12 -tx1 /dev/urandom | tr -d ' \n'; }

# Every password and token secret is kept in a file $W/secrets/SERVER-NAME (checks run in
# subshells), and all of them are looked for in the logs at the end.

# What a refusal must mention, what a failed login must say, what an untrusted server yields.
REFUSED='denied|403|unauthorized|forbidden'
BADLOGIN='unauthorized|401|invalid username/password'
UNTRUSTED='x509|unknown authority'

# must_fail PATTERN CMD...: CMD must exit non-zero with output matching PATTERN (grep -Ei).
must_fail() {
    local pat=$1 out=$W/must_fail.out
    shift
    if "$@" >"$out" 2>&1; then
        cat "$out"
        echo "unexpectedly succeeded: $1 $2"
        return 1
    fi
    cat "$out"
    grep -Eiq "$pat" "$out" || { echo "failed, but the output does not match /$pat/"; return 1; }
}

# no_success_under PREFIX MARK: no request to a path under PREFIX got a 2xx since log line MARK.
no_success_under() {
    local n
    n=$(log_since "$2" | jq -s --arg p "$1" '[.[] | select((.path|startswith($p)) and .status < 300)] | length')
    eq "$n" 0 "2xx answers to requests under $1"
}

# ---------------------------------------------------------------------------------------------
# Test images

LAYOUT=$W/layout
python3 "$HERE/mkimages.py" "$LAYOUT" >"$W/images.json"
IMG=$(jq -r .img.manifest "$W/images.json")
IMG_CONFIG=$(jq -r .img.config "$W/images.json")
IMG_ID=${IMG_CONFIG#sha256:}
echo "image: $IMG (3 layers)"

# ---------------------------------------------------------------------------------------------
# Servers: basic and token over plain HTTP now (dockerd is told both addresses), TLS ones later

start_server basic --auth basic
start_server token --auth token

if [ "$DOCKER" = 1 ] && [ "$(id -u)" != 0 ]; then
    fail "docker checks need root for a private dockerd (SKIP_DOCKER=1 skips them)"
    DOCKER=0
fi
DOCKER_STATE=off
if [ "$DOCKER" = 1 ]; then
    mkdir "$D"
    export DOCKER_HOST=unix://$D/docker.sock
    # Started now, waited for before the first docker check: it boots while skopeo runs.
    launch_dockerd --insecure-registry "127.0.0.1:${SPORT[basic]}" \
        --insecure-registry "127.0.0.1:${SPORT[token]}"
    DOCKER_STATE=starting
    "${SKOPEO[@]}" copy -q "oci:$LAYOUT:img" "docker-archive:$W/img.tar:berth-test/img:v1"
fi

# ---------------------------------------------------------------------------------------------
# Access setup with the admin CLI, while the server runs

# admin ARGS...: berth's admin CLI on the current server's data dir.
admin() { "$BERTH" "$@" --data-dir "$DATA"; }

# Users: alice developer in team-a, bob developer in team-b, gina guest in team-a, root admin.
# Namespaces team-a and team-b private, public public. CI tokens in team-a: ci-rw
# (read-write), ci-rwd (read-write-delete), ci-docker (read-write, for docker).
setup_access() {
    local u t out
    for u in alice bob gina root; do
        rand >"$W/secrets/$M-$u"
        if [ "$u" = root ]; then
            admin user add "$u" --password-stdin --admin <"$W/secrets/$M-$u"
        else
            admin user add "$u" --password-stdin <"$W/secrets/$M-$u"
        fi
    done
    echo "wrong-$(rand)" >"$W/secrets/$M-wrong"
    admin namespace create team-a
    admin namespace create team-b
    admin namespace create public --public
    admin namespace member add team-a alice developer
    admin namespace member add team-b bob developer
    admin namespace member add team-a gina guest
    for t in ci-rw:read-write ci-rwd:read-write-delete ci-docker:read-write; do
        out=$(admin token create --name "${t%%:*}" --namespace team-a --access "${t#*:}" --expires 1d)
        # Not echoed: the output of checks is shown on failure.
        tail -n 1 <<<"$out" >"$W/secrets/$M-${t%%:*}"
        grep -Eq '^[^ ]{20,}$' "$W/secrets/$M-${t%%:*}" ||
            { echo "token create ${t%%:*}: no secret alone on the last line"; return 1; }
    done
    admin namespace list
    admin token list
}

# ---------------------------------------------------------------------------------------------
# skopeo

# skopeo_login WHO FILE [SKOPEO LOGIN FLAGS...]: logs WHO in with its secret.
skopeo_login() {
    local who=$1 file=$2
    shift 2
    "${SKOPEO[@]}" login --authfile "$file" "$@" -u "$who" --password-stdin "$REG" \
        <"$W/secrets/$M-$who"
}

sk_login_good() {
    local f
    f=$(authfile skopeo-alice)
    skopeo_login alice "$f" --tls-verify=false
    has_auth "$f" || { echo "no credentials stored for $REG"; return 1; }
}

sk_login_bad() {
    local f
    f=$(authfile skopeo-wrong)
    must_fail "$BADLOGIN" "${SKOPEO[@]}" login --authfile "$f" --tls-verify=false -u alice \
        --password-stdin "$REG" <"$W/secrets/$M-wrong"
    ! has_auth "$f" || { echo "credentials stored despite the failed login"; return 1; }
}

# pulled_digest FILE REF [COPY FLAGS...]: copies docker://$REG/REF to a fresh OCI layout and
# prints the manifest digest it got.
pulled_digest() {
    local f=$1 ref=$2 dir
    shift 2
    dir=$W/pull.$(rand)
    "${SKOPEO[@]}" copy -q --src-authfile "$f" "$@" "docker://$REG/$ref" "oci:$dir:pulled" >&2 ||
        return 1
    layout_ref "$dir" pulled
    rm -rf "$dir"
}

sk_push_own() {
    local f
    f=$(authfile skopeo-alice)
    "${SKOPEO[@]}" copy -q --dest-authfile "$f" --dest-tls-verify=false \
        "oci:$LAYOUT:img" "docker://$REG/team-a/app:v1"
    eq "$(pulled_digest "$f" team-a/app:v1 --src-tls-verify=false)" "$IMG" "manifest pulled by tag"
    eq "$(pulled_digest "$f" "team-a/app@$IMG" --src-tls-verify=false)" "$IMG" "manifest pulled by digest"
}

sk_push_other() {
    local f mark
    f=$(authfile skopeo-alice)
    mark=$(log_mark)
    must_fail "$REFUSED" "${SKOPEO[@]}" copy -q --dest-authfile "$f" --dest-tls-verify=false \
        "oci:$LAYOUT:img" "docker://$REG/team-b/app:v1"
    no_success_under /v2/team-b/ "$mark"
}

sk_guest() {
    local f mark
    f=$(authfile skopeo-gina)
    skopeo_login gina "$f" --tls-verify=false
    mark=$(log_mark)
    must_fail "$REFUSED" "${SKOPEO[@]}" copy -q --dest-authfile "$f" --dest-tls-verify=false \
        "oci:$LAYOUT:img" "docker://$REG/team-a/gina:v1"
    no_success_under /v2/team-a/gina/ "$mark"
    eq "$(pulled_digest "$f" team-a/app:v1 --src-tls-verify=false)" "$IMG" "manifest pulled by the guest"
}

sk_admin_public() {
    local f
    f=$(authfile skopeo-root)
    skopeo_login root "$f" --tls-verify=false
    "${SKOPEO[@]}" copy -q --dest-authfile "$f" --dest-tls-verify=false \
        "oci:$LAYOUT:img" "docker://$REG/public/app:v1"
}

# show_log MARK PREFIX: the access-log lines for paths under PREFIX since MARK (context for a
# failure).
show_log() {
    echo "berth access log, $2*:"
    log_since "$1" | jq -c --arg p "$2" 'select(.path|startswith($p)) | [.method, .path, .status]'
}

sk_anonymous() {
    local f mark
    f=$(authfile skopeo-loggedout)
    skopeo_login alice "$f" --tls-verify=false
    "${SKOPEO[@]}" logout --authfile "$f" "$REG"
    ! has_auth "$f" || { echo "credentials still stored after logout"; return 1; }
    mark=$(log_mark)
    eq "$(pulled_digest "$f" public/app:v1 --src-tls-verify=false)" "$IMG" "anonymous pull from public" ||
        { show_log "$mark" /v2/public/; return 1; }
    must_fail "$REFUSED" "${SKOPEO[@]}" copy -q --src-authfile "$f" --src-tls-verify=false \
        "docker://$REG/team-a/app:v1" "oci:$W/anon.$M:pulled"
}

# What a client sends when it has no credentials, by hand (basic mode).
curl_anonymous() {
    local accept=(-H "Accept: application/vnd.oci.image.manifest.v1+json")
    eq "$(curl -sS -o /dev/null -w '%{http_code}' "${accept[@]}" "http://$REG/v2/public/app/manifests/v1")" \
        200 "GET public/app:v1"
    curl -sS -D "$W/anon.hdr" -o /dev/null "${accept[@]}" "http://$REG/v2/team-a/app/manifests/v1"
    cat "$W/anon.hdr"
    grep -q '^HTTP/[0-9.]* 401' "$W/anon.hdr"
    grep -qi '^www-authenticate: Basic ' "$W/anon.hdr"
}

# ---------------------------------------------------------------------------------------------
# podman (root, vfs, no daemon; its image store is shared by every server)

PODMAN_DIR=$W/podman
PODMAN=(podman --root "$PODMAN_DIR/root" --runroot "$PODMAN_DIR/run" --storage-driver vfs
    --events-backend file --cgroup-manager cgroupfs --tmpdir "$PODMAN_DIR/tmp")
mkdir -p "$PODMAN_DIR/tmp"
export CONTAINERS_STORAGE_CONF=$PODMAN_DIR/storage.conf
printf '[storage]\ndriver = "vfs"\nrunroot = "%s"\ngraphroot = "%s"\n' \
    "$PODMAN_DIR/run" "$PODMAN_DIR/root" >"$CONTAINERS_STORAGE_CONF"

podman_load() {
    "${PODMAN[@]}" pull -q --signature-policy "$POLICY" "oci:$LAYOUT:img"
    eq "$("${PODMAN[@]}" image inspect --format '{{.Id}}' "$IMG_ID")" "$IMG_ID" "image id"
}

# podman_login WHO FILE [PODMAN LOGIN FLAGS...]
podman_login() {
    local who=$1 file=$2
    shift 2
    "${PODMAN[@]}" login --authfile "$file" "$@" -u "$who" --password-stdin "$REG" \
        <"$W/secrets/$M-$who"
}

# podman_push FILE REPO:TAG [PUSH FLAGS...]: tags the test image and pushes it; checks that
# the registry serves the digest podman reports.
podman_push() {
    local f=$1 ref=$REG/$2 digest
    shift 2
    "${PODMAN[@]}" tag "$IMG_ID" "$ref"
    "${PODMAN[@]}" push -q --authfile "$f" --signature-policy "$POLICY" \
        --digestfile "$W/podman.digest" "$@" "$ref"
    digest=$(cat "$W/podman.digest")
    echo "podman pushed $digest"
    eq "$("${SKOPEO[@]}" inspect --authfile "$f" "$@" "docker://$ref" | jq -r .Digest)" \
        "$digest" "digest the registry serves"
}

pm_login_good() {
    local f
    f=$(authfile podman-alice)
    podman_login alice "$f" --tls-verify=false
    has_auth "$f" || { echo "no credentials stored for $REG"; return 1; }
}

pm_login_bad() {
    local f
    f=$(authfile podman-wrong)
    must_fail "$BADLOGIN" "${PODMAN[@]}" login --authfile "$f" --tls-verify=false -u alice \
        --password-stdin "$REG" <"$W/secrets/$M-wrong"
    ! has_auth "$f" || { echo "credentials stored despite the failed login"; return 1; }
}

pm_push_own() { podman_push "$(authfile podman-alice)" team-a/podman:v1 --tls-verify=false; }

pm_push_other() {
    local f mark
    f=$(authfile podman-alice)
    "${PODMAN[@]}" tag "$IMG_ID" "$REG/team-b/podman:v1"
    mark=$(log_mark)
    must_fail "$REFUSED" "${PODMAN[@]}" push -q --authfile "$f" --tls-verify=false \
        --signature-policy "$POLICY" "$REG/team-b/podman:v1"
    no_success_under /v2/team-b/ "$mark"
}

pm_pull() {
    local f
    f=$(authfile podman-alice)
    "${PODMAN[@]}" pull -q --authfile "$f" --tls-verify=false --signature-policy "$POLICY" \
        "$REG/team-a/app:v1"
    eq "$("${PODMAN[@]}" image inspect --format '{{.Digest}}' "$REG/team-a/app:v1")" "$IMG" "pulled digest"
    # And the same pull logged out is refused.
    must_fail "$REFUSED" "${PODMAN[@]}" pull -q --authfile "$(authfile podman-none)" \
        --tls-verify=false --signature-policy "$POLICY" "$REG/team-a/app@$IMG"
}

pm_anonymous() {
    local f mark
    f=$(authfile podman-loggedout)
    podman_login alice "$f" --tls-verify=false
    "${PODMAN[@]}" logout --authfile "$f" "$REG"
    ! has_auth "$f" || { echo "credentials still stored after logout"; return 1; }
    mark=$(log_mark)
    "${PODMAN[@]}" pull -q --authfile "$f" --tls-verify=false --signature-policy "$POLICY" \
        "$REG/public/app:v1" || { show_log "$mark" /v2/public/; return 1; }
    eq "$("${PODMAN[@]}" image inspect --format '{{.Digest}}' "$REG/public/app:v1")" "$IMG" "pulled digest"
}

# ---------------------------------------------------------------------------------------------
# CI access tokens

ci_skopeo_push() {
    local f
    f=$(authfile skopeo-ci-rw)
    skopeo_login ci-rw "$f" --tls-verify=false
    "${SKOPEO[@]}" copy -q --dest-authfile "$f" --dest-tls-verify=false \
        "oci:$LAYOUT:img" "docker://$REG/team-a/ci:v1"
    eq "$(pulled_digest "$f" team-a/ci:v1 --src-tls-verify=false)" "$IMG" "manifest pulled with the token"
}

ci_podman_push() {
    local f
    f=$(authfile podman-ci-rw)
    podman_login ci-rw "$f" --tls-verify=false
    podman_push "$f" team-a/ci-podman:v1 --tls-verify=false
}

ci_other_ns() {
    local f mark
    f=$(authfile skopeo-ci-rw)
    mark=$(log_mark)
    must_fail "$REFUSED" "${SKOPEO[@]}" copy -q --dest-authfile "$f" --dest-tls-verify=false \
        "oci:$LAYOUT:img" "docker://$REG/team-b/ci:v1"
    no_success_under /v2/team-b/ "$mark"
}

ci_delete_refused() {
    local f
    f=$(authfile skopeo-ci-rw)
    must_fail "$REFUSED" "${SKOPEO[@]}" delete --authfile "$f" --tls-verify=false \
        "docker://$REG/team-a/ci:v1"
    eq "$("${SKOPEO[@]}" inspect --authfile "$f" --tls-verify=false "docker://$REG/team-a/ci:v1" |
        jq -r .Digest)" "$IMG" "team-a/ci:v1 still there"
}

ci_delete_allowed() {
    local f
    f=$(authfile skopeo-ci-rwd)
    skopeo_login ci-rwd "$f" --tls-verify=false
    "${SKOPEO[@]}" delete --authfile "$f" --tls-verify=false "docker://$REG/team-a/ci:v1"
    must_fail 'manifest unknown|not found' "${SKOPEO[@]}" inspect --authfile "$f" \
        --tls-verify=false "docker://$REG/team-a/ci:v1"
}

ci_token_list() {
    local out used
    out=$(admin token list)
    echo "$out"
    local t
    for t in ci-rw ci-rwd; do
        # The LAST USED column: the last field of the token's row.
        used=$(awk -v n="$t" '$1=="team-a" && $2==n { print $NF }' <<<"$out")
        echo "$t last used: $used"
        grep -Eq '^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:]{8}' <<<"$used" ||
            { echo "no last-used time for $t"; return 1; }
    done
    # Not used yet (docker comes later).
    eq "$(awk '$1=="team-a" && $2=="ci-docker" { print $NF }' <<<"$out")" never \
        "last use of the unused ci-docker token"
}

ci_revoked() {
    local f mark
    admin token revoke --name ci-rw --namespace team-a
    # A change made by the CLI (another process) applies to the running server within 1 s.
    sleep 1
    must_fail "$BADLOGIN" "${SKOPEO[@]}" login --authfile "$(authfile skopeo-ci-rw-again)" \
        --tls-verify=false -u ci-rw --password-stdin "$REG" <"$W/secrets/$M-ci-rw"
    # The auth file from before the revocation still holds the secret: it must stop working.
    f=$(authfile skopeo-ci-rw)
    mark=$(log_mark)
    must_fail "$REFUSED|$BADLOGIN" "${SKOPEO[@]}" copy -q --dest-authfile "$f" \
        --dest-tls-verify=false "oci:$LAYOUT:img" "docker://$REG/team-a/ci-revoked:v1"
    no_success_under /v2/team-a/ci-revoked/ "$mark"
}

ci_revoked_podman() {
    must_fail "$BADLOGIN" "${PODMAN[@]}" login --authfile "$(authfile podman-ci-rw-again)" \
        --tls-verify=false -u ci-rw --password-stdin "$REG" <"$W/secrets/$M-ci-rw"
    "${PODMAN[@]}" tag "$IMG_ID" "$REG/team-a/ci-revoked:v2"
    must_fail "$REFUSED|$BADLOGIN" "${PODMAN[@]}" push -q --authfile "$(authfile podman-ci-rw)" \
        --tls-verify=false --signature-policy "$POLICY" "$REG/team-a/ci-revoked:v2"
}

# ---------------------------------------------------------------------------------------------
# docker (a private dockerd; `docker --config DIR` keeps each login apart)

docker_load() {
    docker load -q -i "$W/img.tar"
    eq "$(docker image inspect --format '{{.Id}}' berth-test/img:v1)" "$IMG_CONFIG" "image ID after load"
}

# docker_login WHO CONFIG-DIR
docker_login() {
    docker --config "$2" login -u "$1" --password-stdin "$REG" <"$W/secrets/$M-$1"
}

# docker_push CONFIG-DIR REPO:TAG: tags and pushes the test image; the registry must serve the
# digest docker reports.
docker_push() {
    local cfg=$1 ref=$REG/$2 out digest
    docker tag berth-test/img:v1 "$ref"
    out=$(docker --config "$cfg" push "$ref")
    echo "$out"
    digest=$(sed -n 's/^.*: digest: \(sha256:[0-9a-f]\{64\}\) size: [0-9]*$/\1/p' <<<"$out")
    [ -n "$digest" ] || { echo "no 'TAG: digest: sha256:... size: N' line"; return 1; }
    eq "$("${SKOPEO[@]}" inspect --authfile "$(authfile skopeo-alice)" --tls-verify=false \
        "docker://$ref" | jq -r .Digest)" "$digest" "digest the registry serves"
}

dk_login_good() {
    local cfg
    cfg=$(dockercfg alice)
    docker_login alice "$cfg"
    has_auth "$cfg/config.json" || { echo "no credentials stored for $REG"; return 1; }
}

dk_login_bad() {
    local cfg
    cfg=$(dockercfg wrong)
    must_fail "$BADLOGIN" docker --config "$cfg" login -u alice --password-stdin "$REG" \
        <"$W/secrets/$M-wrong"
    ! has_auth "$cfg/config.json" || { echo "credentials stored despite the failed login"; return 1; }
}

dk_push_own() { docker_push "$(dockercfg alice)" team-a/docker:v1; }

dk_push_other() {
    local mark
    docker tag berth-test/img:v1 "$REG/team-b/docker:v1"
    mark=$(log_mark)
    must_fail "$REFUSED" docker --config "$(dockercfg alice)" push "$REG/team-b/docker:v1"
    no_success_under /v2/team-b/ "$mark"
}

dk_anonymous() {
    local cfg out
    cfg=$(dockercfg loggedout)
    docker_login alice "$cfg"
    docker --config "$cfg" logout "$REG"
    ! has_auth "$cfg/config.json" || { echo "credentials still stored after logout"; return 1; }
    out=$(docker --config "$cfg" pull "$REG/public/app:v1")
    echo "$out"
    grep -qx "Digest: $IMG" <<<"$out" || { echo "no 'Digest: $IMG' line"; return 1; }
    must_fail "$REFUSED" docker --config "$cfg" pull "$REG/team-a/app:v1"
}

dk_ci_token() {
    local cfg
    cfg=$(dockercfg ci-docker)
    docker_login ci-docker "$cfg"
    docker_push "$cfg" team-a/docker-ci:v1
    # A read-write token of team-a cannot push elsewhere.
    docker tag berth-test/img:v1 "$REG/team-b/docker-ci:v1"
    must_fail "$REFUSED" docker --config "$cfg" push "$REG/team-b/docker-ci:v1"
}

# Waits for the dockerd launched at the start and loads the test image, once.
docker_ready() {
    local t
    case $DOCKER_STATE in
    ready) return 0 ;;
    off | broken) return 1 ;;
    esac
    t=$(date +%s)
    if wait_dockerd; then
        pass "dockerd starts ($(dockerd --version | cut -d, -f1), waited $(($(date +%s) - t))s)"
        DOCKER_STATE=ready
        check "docker load (docker-archive from skopeo)" docker_load
        return 0
    fi
    fail "dockerd starts ($(dockerd_failure); environment problem, not berth: dockerd log tail below)"
    tail -n 30 "$DOCKERD_LOG" | awk '{ print "      | " $0 }'
    DOCKER_STATE=broken
    return 1
}

# ---------------------------------------------------------------------------------------------
# The flows, in basic and in token mode

if [ "$PODMAN_ON" = 0 ]; then
    echo "SKIP: podman checks (SKIP_PODMAN=1 given)"
elif ! "${PODMAN[@]}" info >"$W/podman-info.out" 2>&1; then
    fail "podman usable in this environment (podman info failed: reason below, not a berth issue)"
    tail -n 25 "$W/podman-info.out" | awk '{ print "      | " $0 }'
    PODMAN_ON=0
else
    check "podman: load the test image from the OCI layout" podman_load
fi

for mode in basic token; do
    use_server "$mode"
    echo
    echo "== --auth $mode, plain HTTP, $REG"
    check "[$M] admin CLI while the server runs: users, namespaces, members, CI tokens" setup_access
    check "[$M] skopeo login with the right password" sk_login_good
    check "[$M] skopeo login with a wrong password fails (unauthorized)" sk_login_bad
    check "[$M] skopeo push to own namespace as developer; pull by tag and by digest give its digest" sk_push_own
    check "[$M] skopeo push to another namespace is refused" sk_push_other
    check "[$M] skopeo as guest: push refused, pull works" sk_guest
    check "[$M] skopeo push to the public namespace as admin" sk_admin_public
    check "[$M] skopeo logged out: pull from public works, from private refused" sk_anonymous
    if [ "$M" = basic ]; then
        check "[$M] curl without credentials: public manifest 200, private 401 with a Basic challenge" \
            curl_anonymous
    fi
    if [ "$PODMAN_ON" = 1 ]; then
        check "[$M] podman login with the right password" pm_login_good
        check "[$M] podman login with a wrong password fails (unauthorized)" pm_login_bad
        check "[$M] podman push to own namespace" pm_push_own
        check "[$M] podman push to another namespace is refused" pm_push_other
        check "[$M] podman pull (refused when logged out)" pm_pull
        check "[$M] podman logged out: pull from the public namespace works" pm_anonymous
    fi
    check "[$M] CI token (read-write): skopeo login + push to its namespace" ci_skopeo_push
    if [ "$PODMAN_ON" = 1 ]; then
        check "[$M] CI token (read-write): podman login + push to its namespace" ci_podman_push
    fi
    check "[$M] CI token (read-write): push to another namespace is refused" ci_other_ns
    check "[$M] CI token (read-write): skopeo delete is refused (no delete access)" ci_delete_refused
    check "[$M] CI token (read-write-delete): skopeo delete works" ci_delete_allowed
    check "[$M] berth token list shows a last-used time for the used tokens" ci_token_list
    check "[$M] revoked CI token: skopeo login and push with it fail" ci_revoked
    if [ "$PODMAN_ON" = 1 ]; then
        check "[$M] revoked CI token: podman login and push with it fail" ci_revoked_podman
    fi
    if [ "$DOCKER" = 1 ] && docker_ready; then
        check "[$M] docker login with the right password" dk_login_good
        check "[$M] docker login with a wrong password fails (unauthorized)" dk_login_bad
        check "[$M] docker push to own namespace" dk_push_own
        check "[$M] docker push to another namespace is refused" dk_push_other
        check "[$M] docker login with a CI token + push (and refused in another namespace)" dk_ci_token
        # Token mode only: after a Basic challenge, docker never sends a request without
        # credentials ("no basic auth credentials"), so it cannot pull anonymously in basic mode.
        if [ "$M" = token ]; then
            check "[$M] docker logged out: pull from public works, from private refused" dk_anonymous
        fi
    fi
done
[ "$DOCKER" = 1 ] || echo "SKIP: docker checks (SKIP_DOCKER=1 given or not root)"
stop_dockerd
finish_server basic
finish_server token

# ---------------------------------------------------------------------------------------------
# TLS with the self-signed development CA (token mode)

start_server tls --auth token --tls-self-signed
use_server tls
echo
echo "== --auth token --tls-self-signed, $REG"
CERTS=$W/certs-tls  # the CA alone
NO_CERTS=$W/certs-none # nothing: the system roots only
mkdir "$CERTS" "$NO_CERTS"

tls_files() {
    local ready
    ready=$(jq -c 'select(.fields.message=="berth ready") | .fields | [.addr, .auth, .tls]' "$LOG")
    eq "$ready" "[\"$REG\",\"Token\",true]" "berth ready addr, auth, tls"
    ls -l "$DATA/tls" "$DATA/tls/certs.d/$REG"
    for f in ca.crt server.crt server.key; do
        [ -s "$DATA/tls/$f" ] || { echo "no $DATA/tls/$f"; return 1; }
    done
    cmp "$DATA/tls/ca.crt" "$DATA/tls/certs.d/$REG/ca.crt"
    openssl verify -CAfile "$DATA/tls/ca.crt" "$DATA/tls/server.crt"
    jq -r 'select(.level=="WARN") | .fields.message' "$LOG" | grep -F "certs.d/$REG/ca.crt" ||
        { echo "no WARN line saying where to put the CA"; return 1; }
    cp "$DATA/tls/ca.crt" "$CERTS/ca.crt"
}

tls_curl() {
    local hdr
    hdr=$(curl -sS --cacert "$CERTS/ca.crt" -o /dev/null -D - "https://$REG/v2/" | tr -d '\r')
    echo "$hdr"
    grep -q '^HTTP/[0-9.]* 401' <<<"$hdr"
    grep -qi "^www-authenticate: Bearer realm=\"https://$REG/token\"" <<<"$hdr" ||
        { echo "the challenge does not name https://$REG/token"; return 1; }
}

tls_skopeo() {
    local f
    f=$(authfile skopeo-alice)
    skopeo_login alice "$f" --cert-dir "$CERTS"
    "${SKOPEO[@]}" copy -q --dest-authfile "$f" --dest-cert-dir "$CERTS" \
        "oci:$LAYOUT:img" "docker://$REG/team-a/app:v1"
    eq "$(pulled_digest "$f" team-a/app:v1 --src-cert-dir "$CERTS")" "$IMG" "manifest pulled by tag"
    eq "$(pulled_digest "$f" "team-a/app@$IMG" --src-cert-dir "$CERTS")" "$IMG" "manifest pulled by digest"
}

tls_podman() {
    local f
    f=$(authfile podman-alice)
    podman_login alice "$f" --cert-dir "$CERTS"
    "${PODMAN[@]}" tag "$IMG_ID" "$REG/team-a/podman:v1"
    "${PODMAN[@]}" push -q --authfile "$f" --cert-dir "$CERTS" --signature-policy "$POLICY" \
        --digestfile "$W/podman.digest" "$REG/team-a/podman:v1"
    eq "$("${SKOPEO[@]}" inspect --authfile "$f" --cert-dir "$CERTS" \
        "docker://$REG/team-a/podman:v1" | jq -r .Digest)" "$(cat "$W/podman.digest")" "digest the registry serves"
    "${PODMAN[@]}" pull -q --authfile "$f" --cert-dir "$CERTS" --signature-policy "$POLICY" \
        "$REG/team-a/app:v1"
}

tls_untrusted() {
    must_fail "$UNTRUSTED" "${SKOPEO[@]}" login --authfile "$(authfile skopeo-untrusted)" \
        --cert-dir "$NO_CERTS" -u alice --password-stdin "$REG" <"$W/secrets/$M-alice"
    must_fail "$UNTRUSTED" "${SKOPEO[@]}" copy -q --dest-authfile "$(authfile skopeo-alice)" \
        --dest-cert-dir "$NO_CERTS" "oci:$LAYOUT:img" "docker://$REG/team-a/untrusted:v1"
    if [ "$PODMAN_ON" = 1 ]; then
        must_fail "$UNTRUSTED" "${PODMAN[@]}" login --authfile "$(authfile podman-untrusted)" \
            --cert-dir "$NO_CERTS" -u alice --password-stdin "$REG" <"$W/secrets/$M-alice"
    fi
}

check "[tls] berth ready says tls; CA, certificate, key and certs.d copy written; WARN says where to put the CA" tls_files
check "[tls] admin CLI while the server runs: users, namespaces, members, CI tokens" setup_access
check "[tls] curl --cacert: 401 with a Bearer challenge naming the https realm" tls_curl
check "[tls] skopeo login, push, pull by tag and digest with --cert-dir (CA only)" tls_skopeo
if [ "$PODMAN_ON" = 1 ]; then
    check "[tls] podman login, push, pull with --cert-dir (CA only)" tls_podman
fi
check "[tls] without the CA, skopeo (and podman) refuse the server (unknown authority)" tls_untrusted
finish_server tls

# ---------------------------------------------------------------------------------------------
# TLS certificate replaced on disk while the server runs

RT=$W/reload-tls
mkdir "$RT"

# make_ca NAME: a CA and a server certificate for 127.0.0.1 signed by it, under $RT/NAME.*
make_ca() {
    local n=$1
    openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=berth test $n" \
        -keyout "$RT/$n.ca.key" -out "$RT/$n.ca.crt" 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -subj "/CN=127.0.0.1" \
        -keyout "$RT/$n.server.key" -out "$RT/$n.server.csr" 2>/dev/null
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' \
        >"$RT/$n.ext"
    openssl x509 -req -in "$RT/$n.server.csr" -CA "$RT/$n.ca.crt" -CAkey "$RT/$n.ca.key" \
        -CAcreateserial -days 2 -extfile "$RT/$n.ext" -out "$RT/$n.server.crt" 2>/dev/null
}
make_ca ca1
make_ca ca2
cp "$RT/ca1.server.crt" "$RT/server.crt"
cp "$RT/ca1.server.key" "$RT/server.key"
chmod 600 "$RT/server.key"

start_server reload --auth token --tls-cert "$RT/server.crt" --tls-key "$RT/server.key"
use_server reload
RELOAD_PID=$BERTH_PID
echo
echo "== --auth token --tls-cert/--tls-key, $REG"

# https_status CA: the status of GET /v2/ trusting only CA; fails if the handshake does.
https_status() {
    curl -sS --cacert "$RT/$1.ca.crt" -o /dev/null -w '%{http_code}' "https://$REG/v2/"
}

reload_before() {
    eq "$(https_status ca1)" 401 "GET /v2/ trusting CA1"
    must_fail 'certificate|SSL' https_status ca2
}

reload_swap() {
    local i ok=0 t
    # Atomic replacement: write beside, then rename over (key first, then the certificate).
    cp "$RT/ca2.server.key" "$RT/server.key.tmp"
    chmod 600 "$RT/server.key.tmp"
    cp "$RT/ca2.server.crt" "$RT/server.crt.tmp"
    mv "$RT/server.key.tmp" "$RT/server.key"
    mv "$RT/server.crt.tmp" "$RT/server.crt"
    t=$(date +%s%N)
    for i in $(seq 1 50); do
        if [ "$(https_status ca2 2>/dev/null)" = 401 ]; then
            ok=1
            break
        fi
        sleep 0.2
    done
    [ "$ok" = 1 ] || { echo "still not serving the CA2 certificate 10 s after the swap"; https_status ca2 || true; return 1; }
    echo "CA2 certificate served $((($(date +%s%N) - t) / 1000000)) ms after the swap ($i polls)"
    must_fail 'certificate|SSL' https_status ca1
    kill -0 "$RELOAD_PID" || { echo "server $RELOAD_PID is gone"; return 1; }
    eq "$(grep -c '"berth ready"' "$LOG")" 1 "'berth ready' lines (no restart)"
    jq -c 'select(.fields.message | test("TLS"))' "$LOG"
}

check "[reload] curl --cacert CA1 works, CA2 refused" reload_before
check "[reload] cert/key replaced by CA2's (mv): within 10 s CA2 works, CA1 refused, same PID" reload_swap
finish_server reload

# ---------------------------------------------------------------------------------------------
# No secrets in the logs

no_secrets_in_logs() {
    local logs=("$W"/basic.log "$W"/token.log "$W"/tls.log "$W"/reload.log) s f n=0 bad=0
    wc -l "${logs[@]}"
    for f in "$W"/secrets/*; do
        s=$(cat "$f")
        [ -n "$s" ] || continue
        n=$((n + 1))
        if grep -lF -- "$s" "${logs[@]}"; then
            echo "the secret $(basename "$f") appears in the logs above"
            bad=1
        fi
    done
    echo "$n secrets looked for"
    [ "$n" -ge 20 ] || { echo "expected more secrets"; return 1; }
    # Credentials headers, and JWTs (base64 of '{"' begins every one of them).
    for s in Authorization 'Basic ' 'Bearer ' eyJ; do
        if grep -F -- "$s" "${logs[@]}"; then
            echo "'$s' appears in the logs"
            bad=1
        fi
    done
    [ "$bad" = 0 ]
}
check "no password, token secret, Authorization header or JWT in any berth log" no_secrets_in_logs

# ---------------------------------------------------------------------------------------------

for f in "$W"/basic.log "$W"/token.log "$W"/tls.log "$W"/reload.log; do
    if jq -e 'select(.level=="ERROR")' "$f" >/dev/null 2>&1; then
        echo "berth logged errors in $(basename "$f"):"
        jq -c 'select(.level=="ERROR")' "$f" | tail -n 10 | awk '{ print "      | " $0 }'
    fi
done
echo
echo "elapsed: $(($(date +%s) - T1))s of checks, $(($(date +%s) - T0))s in all"
for f in ${FAILURES[@]+"${FAILURES[@]}"}; do
    echo "  failed: $f"
done
echo "$PASSED passed, $FAILED failed"
[ "$FAILED" = 0 ]
