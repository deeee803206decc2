# shellcheck shell=bash
# PostgreSQL from Debian's packages, the database the tests and benchmarks keep shared
# metadata in; sourced, not run.
#
#   pg_install          installs the `postgresql` package when initdb is missing
#   pg_start DIR        initialises a cluster under DIR, starts it on a free loopback port and
#                       exports TEST_PG_URL (a superuser URL to the `postgres` database;
#                       tests create a database of their own from it). The server also takes
#                       TLS, with a certificate for 127.0.0.1 from a CA made here, whose
#                       certificate is exported as TEST_PG_CA
#   pg_stop             stops it

PG_DIR=

_pg_bin() {
    local d
    for d in /usr/lib/postgresql/*/bin; do
        [ -x "$d/initdb" ] && { echo "$d"; return 0; }
    done
    return 1
}

pg_install() {
    _pg_bin >/dev/null && command -v psql >/dev/null && return 0
    echo "installing postgresql with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q postgresql postgresql-client
}

# Runs a PostgreSQL server binary as the `postgres` user when we are root (PostgreSQL
# refuses to run as root).
_pg_run() {
    if [ "$(id -u)" = 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

# A CA (DIR/ca.crt) and the server's certificate for 127.0.0.1 and localhost, signed by it.
_pg_tls() {
    local dir=$1
    openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=berth test PostgreSQL CA" \
        -keyout "$dir/ca.key" -out "$dir/ca.crt" >/dev/null 2>&1
    openssl req -newkey rsa:2048 -nodes -subj "/CN=127.0.0.1" \
        -keyout "$dir/data/server.key" -out "$dir/server.csr" >/dev/null 2>&1
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' >"$dir/san.ext"
    openssl x509 -req -in "$dir/server.csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" \
        -CAcreateserial -days 2 -extfile "$dir/san.ext" -out "$dir/data/server.crt" >/dev/null 2>&1
    chmod 600 "$dir/data/server.key"
    [ "$(id -u)" = 0 ] && chown postgres: "$dir/data/server.key" "$dir/data/server.crt"
    export TEST_PG_CA="$dir/ca.crt"
}

pg_start() {
    local dir=$1 bin port
    bin=$(_pg_bin)
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    mkdir -p "$dir"
    [ "$(id -u)" = 0 ] && chown postgres: "$dir"
    _pg_run "$bin/initdb" -D "$dir/data" -U postgres --auth=trust --encoding=UTF8 >"$dir/initdb.log" 2>&1
    _pg_tls "$dir"
    _pg_run "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
        -o "-c listen_addresses=127.0.0.1 -c port=$port -c unix_socket_directories=$dir -c max_connections=300 -c ssl=on -c ssl_cert_file=$dir/data/server.crt -c ssl_key_file=$dir/data/server.key" \
        start >/dev/null
    PG_DIR=$dir
    export TEST_PG_URL="postgres://postgres@127.0.0.1:$port/postgres"
}

pg_stop() {
    [ -n "$PG_DIR" ] || return 0
    _pg_run "$(_pg_bin)/pg_ctl" -D "$PG_DIR/data" -m fast -w stop >/dev/null 2>&1 || true
    PG_DIR=
}
