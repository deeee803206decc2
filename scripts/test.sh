#!/usr/bin/env bash
# The whole berth test suite: unit, storage-conformance, HTTP end-to-end and crash tests
# (cargo nextest), the API suites again over S3 storage, then the real-client scripts
# (skopeo, podman, docker, ctr, oras, curl); the API, lifecycle and replica suites again with
# metadata in PostgreSQL.
# Installs what it needs when it is missing: Debian packages with apt-get (PostgreSQL too),
# cargo-nextest and
# Garage (the S3 server, cached in ~/.cargo/bin) with cargo, Azurite (the Azure Blob Storage
# emulator) with npm.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/garage.sh
. scripts/azurite.sh
. scripts/postgres.sh

need=()
for pkg_cmd in skopeo:skopeo podman:podman curl:curl openssl:openssl; do
  command -v "${pkg_cmd#*:}" >/dev/null 2>&1 || need+=("${pkg_cmd%%:*}")
done
if [ "${#need[@]}" -gt 0 ]; then
  echo "installing: ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q "${need[@]}"
fi

if ! cargo nextest --version >/dev/null 2>&1; then
  cargo install --locked cargo-nextest
fi
garage_install
azurite_install
pg_install

cargo build --release --locked

# One Garage node for every test that stores blobs in S3, Azurite for the Azure driver, and
# PostgreSQL for shared metadata.
SERVICES=$(mktemp -d /tmp/berth-services.XXXXXX)
chmod 755 "$SERVICES"
trap 'garage_stop; azurite_stop; pg_stop; rm -rf "$SERVICES"' EXIT
garage_start "$SERVICES/garage" 1
azurite_start "$SERVICES/azurite"
pg_start "$SERVICES/postgres"

cargo nextest run --release --locked --no-fail-fast
# The HTTP API suites once more with every server's blobs in S3.
TEST_STORAGE=s3 cargo nextest run --release --locked --no-fail-fast \
  -E 'binary(e2e) & test(/^(api_|immutable|quota|retention|proxy::)/)'
# The suites that read and write metadata, with it in PostgreSQL (the replica tests run in
# both passes; they always use PostgreSQL and S3).
TEST_DB=postgres cargo nextest run --release --locked --no-fail-fast \
  -E 'binary(e2e) & test(/^(api_|immutable|quota|retention|proxy::|gc::|scrub::|auth_matrix|auth_tokens|admin_api|webhooks::|restart|s3::)/) - test(/^auth_tokens::(generated_key|expired_and|tokens_for_another|wrongly_signed)|^scrub::gc_killed/)'
bash tests/clients/run.sh
