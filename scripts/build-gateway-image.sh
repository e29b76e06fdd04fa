#!/usr/bin/env bash
# Builds the gateway image (lazygate:latest) without any registry: a release build of the
# binary on this host, on the Debian base made by build-runtime-image.sh.
#   GATEWAY_IMAGE=name:tag   image to build (default lazygate:latest)
#   GATEWAY_BASE=image       base image (default lazygate-debian:bookworm)
#   GATEWAY_PROFILE=name     cargo profile of the binary (default release, the shipped one;
#                            the test command uses ci: the same optimisation without LTO)
set -euo pipefail
cd "$(dirname "$0")/.."
image="${GATEWAY_IMAGE:-lazygate:latest}"
base="${GATEWAY_BASE:-lazygate-debian:bookworm}"
profile="${GATEWAY_PROFILE:-release}"
if ! docker image inspect "$base" >/dev/null 2>&1; then
  scripts/build-runtime-image.sh   # makes the Debian base on the way
fi
cargo build --profile "$profile" --quiet --bin lazygate
context=$(mktemp -d)
trap 'rm -rf "$context"' EXIT
cp Dockerfile "${CARGO_TARGET_DIR:-target}/$profile/lazygate" "$context/"
cp config/lazygate.toml "$context/lazygate.toml"
docker build --quiet --build-arg "BASE=$base" -t "$image" "$context" >/dev/null
echo "built $image"
