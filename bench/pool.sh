#!/usr/bin/env bash
# The warm pool's benchmark (bench/POOL.md): a new owner's first response with and without
# the pool, one at a time and in a burst larger than the pool, in one run (bench/pool.py).
#   bash bench/pool.sh                                          the reference browser runtime
#   IMAGE=lazygate-stub-runtime:test bash bench/pool.sh         the test stub
#   SAMPLES=8 POOL=2 BURST=6
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/engine.sh
ensure_engine
apt_install python3 curl iproute2
scripts/build-test-images.sh >/dev/null
scripts/build-runtime-image.sh >/dev/null
scripts/build-gateway-image.sh >/dev/null
cargo build --release --quiet -p lazygate
exec python3 bench/pool.py --image "${IMAGE:-browser-use-browser-runtime:latest}" \
  --samples "${SAMPLES:-8}" --pool "${POOL:-2}" --burst "${BURST:-6}" --out "${OUT:-bench/POOL.md}"
