#!/usr/bin/env bash
# The warm pool's benchmark (bench/POOL.md): a new owner's first response with and without
# the pool, one at a time and in a burst larger than the pool, on both backends, in one run
# (bench/pool.py). Makes the engine a single-node swarm for the Swarm rows if it is not one,
# and leaves it as it was.
#   bash bench/pool.sh                                          the reference browser runtime
#   IMAGE=lazygate-stub-runtime:test bash bench/pool.sh         the test stub
#   SAMPLES=8 POOL=2 BURST=6 BACKENDS=docker,swarm LOGS=dir (the gateways' logs)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/engine.sh
ensure_engine
apt_install python3 curl iproute2
scripts/build-test-images.sh >/dev/null
scripts/build-runtime-image.sh >/dev/null
scripts/build-gateway-image.sh >/dev/null
cargo build --release --quiet -p lazygate
BACKENDS="${BACKENDS:-docker,swarm}"
if [[ "$BACKENDS" == *swarm* ]] && [ "$(docker info -f '{{.Swarm.LocalNodeState}}')" != active ]; then
  . scripts/swarm.sh
  trap swarm_down EXIT
  swarm_up
fi
python3 bench/pool.py --image "${IMAGE:-browser-use-browser-runtime:latest}" --backends "$BACKENDS" \
  --samples "${SAMPLES:-8}" --pool "${POOL:-2}" --burst "${BURST:-6}" --out "${OUT:-bench/POOL.md}"
