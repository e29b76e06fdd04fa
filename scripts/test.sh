#!/usr/bin/env bash
# The test command: installs and starts what the tests need, builds the test images, then
# checks formatting and lints and runs every test against the real container engine.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/engine.sh
ensure_engine
# python3 computes the seed's owner hashes independently; chromium is the person's browser;
# prometheus scrapes a gateway in the metrics test.
apt_install curl python3 chromium prometheus iproute2 util-linux
command -v npm >/dev/null 2>&1 || apt_install nodejs npm
# playwright-core, the CDP client of the CDP test; it drives the runtime's own Chromium.
npm ci --prefix tests/cdp-client --no-audit --no-fund --silent
scripts/build-test-images.sh
scripts/build-runtime-image.sh
# The images' binaries without LTO (profile ci in Cargo.toml): the same code, built sooner.
GATEWAY_PROFILE=ci scripts/build-gateway-image.sh
# Gateways under test create the network on demand; making it first keeps their races apart.
docker network inspect lazygate-test >/dev/null 2>&1 || docker network create --label lazygate.test=1 lazygate-test >/dev/null
# The Swarm backend's tests need a swarm: make this engine one for the run (a manager that a
# second engine in a network namespace can join), and leave it as it was found.
. scripts/swarm.sh
log=$(mktemp)
trap 'rm -f "$log"; swarm_down' EXIT
swarm_up
cargo fmt --all --check
cargo clippy --all-targets --workspace --quiet -- -D warnings
status=0
cargo test --workspace "$@" 2>&1 | tee "$log" || status=$?
# The test network is shared by all tests; remove it once they are done (ignored if in use).
docker network rm lazygate-test >/dev/null 2>&1 || true
# One closing line for the whole run (cargo's last line is the doc-tests' own count).
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
exit $status
