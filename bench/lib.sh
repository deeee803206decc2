# shellcheck shell=bash
# Helpers shared by the benchmark scripts; sourced, not run. The sourcing script defines
# log/die (or takes these), and sets WORK (temp dir), REPO, LOADGEN (oha or wrk), LOAD_SECS
# and CONNS before calling load or push_blob.

log() { printf '[bench %s] %s\n' "$(date +%T)" "$*" >&2; }
die() { log "FATAL: $*"; exit 1; }

free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }

# wait_ready URL PID NAME: until URL/v2/ answers 200 (NAME's log is $WORK/NAME.log).
wait_ready() {
    for _ in $(seq 1 300); do
        kill -0 "$2" 2>/dev/null || { tail -n 20 "$WORK/$3.log" >&2; die "$3 exited during start-up"; }
        [[ $(curl -s -o /dev/null -w '%{http_code}' "$1/v2/") == 200 ]] && return 0
        sleep 0.1
    done
    die "$3 did not become ready"
}

# need_loadgen: oha (cargo install) or else wrk (apt); sets LOADGEN.
need_loadgen() {
    export PATH="$HOME/.cargo/bin:$PATH"
    LOADGEN=${LOADGEN:-oha}
    if [[ $LOADGEN == oha ]] && ! command -v oha >/dev/null; then
        log "oha missing: cargo install --locked oha"
        cargo install --locked oha >/dev/null 2>&1 || true
    fi
    if [[ $LOADGEN != oha ]] || ! command -v oha >/dev/null; then
        LOADGEN=wrk
        command -v wrk >/dev/null || { SUDO=; [[ $(id -u) -eq 0 ]] || SUDO=sudo;
            $SUDO apt-get update -qq; $SUDO apt-get install -y -qq wrk >/dev/null; }
    fi
}

# push_blob BASE FILE DIGEST -> prints "HTTP_CODE TIME_TOTAL" of the PUT (POST not timed)
push_blob() {
    local base=$1 file=$2 digest=$3 loc sep
    loc=$(curl -sS -o /dev/null -D - -X POST "$base/v2/$REPO/blobs/uploads/" |
        awk 'tolower($1)=="location:"{print $2}' | tr -d '\r')
    [[ -n $loc ]] || die "no Location from POST $base"
    [[ $loc == http* ]] || loc=$base$loc
    sep='?'; [[ $loc == *\?* ]] && sep='&'
    # -T streams the file (curl refuses --data-binary @file for files of 1 GiB and more).
    curl -sS -o /dev/null -w '%{http_code} %{time_total}' -X PUT -H 'Expect:' \
        -H 'Content-Type: application/octet-stream' -T "$file" "$loc${sep}digest=$digest" ||
        echo "curl-failed 0"
}

# push_small_image BASE: a 2 KiB layer, its config and manifest as $REPO:latest.
push_small_image() {
    local base=$1 code
    if [[ ! -f $WORK/manifest.json ]]; then
        printf '{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]},"config":{}}' \
            >"$WORK/config.json"
        head -c 2048 /dev/urandom >"$WORK/layer.bin"
        CFG_D=sha256:$(sha256sum "$WORK/config.json" | cut -d' ' -f1)
        LAY_D=sha256:$(sha256sum "$WORK/layer.bin" | cut -d' ' -f1)
        cat >"$WORK/manifest.json" <<JSON
{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"$CFG_D","size":$(stat -c %s "$WORK/config.json")},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"$LAY_D","size":2048}]}
JSON
    fi
    CFG_D=sha256:$(sha256sum "$WORK/config.json" | cut -d' ' -f1)
    LAY_D=sha256:$(sha256sum "$WORK/layer.bin" | cut -d' ' -f1)
    read -r code _ < <(push_blob "$base" "$WORK/config.json" "$CFG_D") || true; [[ $code == 201 ]] || die "$base config push: $code"
    read -r code _ < <(push_blob "$base" "$WORK/layer.bin" "$LAY_D") || true; [[ $code == 201 ]] || die "$base layer push: $code"
    code=$(curl -sS -o /dev/null -w '%{http_code}' -X PUT \
        -H 'Content-Type: application/vnd.oci.image.manifest.v1+json' \
        --data-binary @"$WORK/manifest.json" "$base/v2/$REPO/manifests/latest")
    [[ $code == 201 ]] || die "$base manifest push: $code"
}

# load URL METHOD -> sets LOAD_RPS, LOAD_P99_MS, LOAD_OK (count of 2xx)
load() {
    local url=$1 method=$2 out
    if [[ $LOADGEN == oha ]]; then
        out=$(oha -z "${LOAD_SECS}s" -c "$CONNS" --no-tui --output-format json -m "$method" \
            -H 'Accept: application/vnd.oci.image.manifest.v1+json' "$url")
        LOAD_RPS=$(jq -r '.summary.requestsPerSec' <<<"$out")
        LOAD_P99_MS=$(jq -r '.latencyPercentiles.p99 * 1000' <<<"$out")
        LOAD_OK=$(jq -r '[.statusCodeDistribution | to_entries[] |
            select(.key|startswith("2")) | .value] | add // 0' <<<"$out")
        local total
        total=$(jq -r '[.statusCodeDistribution | to_entries[] | .value] | add // 0' <<<"$out")
        [[ $LOAD_OK == "$total" && $total -gt 0 ]] ||
            log "WARNING: $url: $LOAD_OK of $total responses were 2xx ($(jq -c .statusCodeDistribution <<<"$out"))"
    elif [[ $method == HEAD ]]; then
        # wrk's response parser waits for a body after a HEAD's Content-Length: unusable.
        log "WARNING: wrk cannot load-test HEAD; install oha for this figure"
        LOAD_RPS=0; LOAD_P99_MS=0
    else
        local lua=$WORK/method.lua
        printf 'wrk.method = "%s"\nwrk.headers["Accept"] = "application/vnd.oci.image.manifest.v1+json"\n' \
            "$method" >"$lua"
        out=$(wrk -t2 -c"$CONNS" -d"${LOAD_SECS}s" --latency -s "$lua" "$url")
        LOAD_RPS=$(awk '/^Requests\/sec:/{print $2}' <<<"$out")
        LOAD_P99_MS=$(awk '$1=="99%"{v=$2; if (v ~ /us$/) {sub(/us/,"",v); v/=1000}
            else if (v ~ /ms$/) sub(/ms/,"",v); else if (v ~ /s$/) {sub(/s/,"",v); v*=1000}; print v}' <<<"$out")
        if grep -q 'Non-2xx' <<<"$out"; then log "WARNING: $url: non-2xx responses"; fi
    fi
}

vmhwm_kb() { awk '/^VmHWM:/{print $2}' "/proc/$1/status"; }
median() { sort -g | awk '{a[NR]=$1} END{print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
best() { sort -g | tail -n1; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN{ if (a+0 == 0 || b+0 == 0) print "n/a"; else printf "%.2fx", a/b }'; }
fmt() { awk -v v="$1" -v d="${2:-1}" 'BEGIN{printf "%.*f", d, v}'; }
