#!/usr/bin/env bash
# The test command: installs and starts what the tests need, builds the test images, then
# checks formatting and lints and runs every test against the real container engine.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/engine.sh
ensure_engine
apt_install curl
scripts/build-test-images.sh
cargo fmt --all --check
cargo clippy --all-targets --workspace --quiet -- -D warnings
status=0
cargo test --workspace "$@" || status=$?
# The test network is shared by all tests; remove it once they are done (ignored if in use).
docker network rm lazygate-test >/dev/null 2>&1 || true
exit $status
