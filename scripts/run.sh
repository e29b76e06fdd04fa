#!/usr/bin/env bash
# Runs the gateway on its default setup, on this host: makes sure a container engine
# answers, builds the browser runtime image locally and the gateway, then serves on
# 0.0.0.0:8080 with runtime ports published on 127.0.0.1 (the gateway is not on the runtime
# network when it runs on the host). Any setting can be overridden by its environment
# variable (see README), e.g. BROWSER_RUNTIME_TTL_SECONDS=60 scripts/run.sh
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/engine.sh
ensure_engine
scripts/build-runtime-image.sh
# The gateway image is also the helper that fences each runtime (runtime.fence_image).
scripts/build-gateway-image.sh
cargo build --release --quiet
export LAZYGATE_UPSTREAM="${LAZYGATE_UPSTREAM:-published}"
exec "${CARGO_TARGET_DIR:-target}/release/lazygate" serve --config config/lazygate.toml
