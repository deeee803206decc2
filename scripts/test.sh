#!/usr/bin/env bash
# The whole berth test suite: unit, storage-conformance, HTTP end-to-end and crash tests
# (cargo nextest), then the real-client script (skopeo, podman, oras, curl).
# Installs the system packages it needs with apt-get when they are missing.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
for pkg_cmd in skopeo:skopeo podman:podman curl:curl; do
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

cargo build --release --locked
cargo nextest run --release --locked --no-fail-fast
bash tests/clients/run.sh
