# shellcheck shell=bash
# Garage, the S3 server the tests and benchmarks store blobs in; sourced, not run.
#
#   garage_install                  installs garage with cargo when it is missing (cached in
#                                   ~/.cargo/bin between runs)
#   garage_start DIR [NODES]        starts NODES (default 1) nodes under DIR, replication =
#                                   NODES, creates bucket "berth" and a key, and exports
#                                   TEST_S3_ENDPOINT (node 1's S3 API),
#                                   TEST_S3_ENDPOINTS (all nodes', space separated),
#                                   TEST_S3_BUCKET, TEST_S3_KEY_ID,
#                                   TEST_S3_SECRET and GARAGE_PIDS
#   garage_stop                     stops every node started

GARAGE_PIDS=()

garage_install() {
    command -v garage >/dev/null 2>&1 && return 0
    echo "installing garage with cargo (about 11 minutes, cached afterwards)"
    cargo install garage --locked
}

_free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

garage_start() {
    local dir=$1 nodes=${2:-1} secret token i rpc s3 admin ids=() endpoints=()
    secret=$(openssl rand -hex 32)
    token=$(openssl rand -hex 16)
    mkdir -p "$dir"
    for i in $(seq 1 "$nodes"); do
        rpc=$(_free_port); s3=$(_free_port); admin=$(_free_port)
        mkdir -p "$dir/n$i"
        cat > "$dir/n$i/garage.toml" <<TOML
metadata_dir = "$dir/n$i/meta"
data_dir = "$dir/n$i/data"
db_engine = "sqlite"
replication_factor = $nodes
rpc_bind_addr = "127.0.0.1:$rpc"
rpc_public_addr = "127.0.0.1:$rpc"
rpc_secret = "$secret"

[s3_api]
s3_region = "garage"
api_bind_addr = "127.0.0.1:$s3"

[admin]
api_bind_addr = "127.0.0.1:$admin"
admin_token = "$token"
TOML
        garage -c "$dir/n$i/garage.toml" server > "$dir/n$i/log" 2>&1 &
        GARAGE_PIDS+=($!)
        endpoints+=("http://127.0.0.1:$s3")
        echo "$rpc" > "$dir/n$i/rpc_port"
    done
    local cfg="$dir/n1/garage.toml"
    for _ in $(seq 1 100); do
        garage -c "$cfg" status >/dev/null 2>&1 && break
        sleep 0.2
    done
    for i in $(seq 1 "$nodes"); do
        for _ in $(seq 1 100); do
            ids[i]=$(garage -c "$dir/n$i/garage.toml" node id -q 2>/dev/null | cut -d@ -f1) && [ -n "${ids[i]}" ] && break
            sleep 0.2
        done
        if [ "$i" -gt 1 ]; then
            garage -c "$cfg" node connect "${ids[i]}@127.0.0.1:$(cat "$dir/n$i/rpc_port")" >/dev/null
        fi
        garage -c "$cfg" layout assign -z "dc$i" -c 1G "${ids[i]}" >/dev/null
    done
    garage -c "$cfg" layout apply --version 1 >/dev/null
    garage -c "$cfg" key create berth-test >/dev/null
    garage -c "$cfg" bucket create berth >/dev/null
    garage -c "$cfg" bucket allow --read --write --owner berth --key berth-test >/dev/null
    for _ in $(seq 1 100); do
        garage -c "$cfg" health -q >/dev/null 2>&1 && break
        sleep 0.2
    done
    export TEST_S3_ENDPOINT=${endpoints[0]}
    export TEST_S3_ENDPOINTS="${endpoints[*]}"
    export TEST_S3_BUCKET=berth
    TEST_S3_KEY_ID=$(garage -c "$cfg" key info berth-test | awk '/Key ID:/ {print $3}')
    TEST_S3_SECRET=$(garage -c "$cfg" key info --show-secret berth-test | awk '/Secret key:/ {print $3}')
    export TEST_S3_KEY_ID TEST_S3_SECRET
    export GARAGE_CONFIG=$cfg
}

garage_stop() {
    local p
    for p in "${GARAGE_PIDS[@]}"; do
        kill "$p" 2>/dev/null || true
    done
    for p in "${GARAGE_PIDS[@]}"; do
        wait "$p" 2>/dev/null || true
    done
    GARAGE_PIDS=()
}
