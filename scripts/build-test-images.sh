#!/usr/bin/env bash
# Builds the images the integration tests use, locally (no registry): the stub runtime is
# one static binary in a FROM-scratch image. Docker's build cache keeps rebuilds instant
# when the binary has not changed.
set -euo pipefail
cd "$(dirname "$0")/.."
target=$(rustc -vV | sed -n 's/^host: //p')
RUSTFLAGS="-C target-feature=+crt-static" cargo build --quiet --profile ci -p stub-runtime --target "$target"
context=$(mktemp -d)
trap 'rm -rf "$context"' EXIT
cp "${CARGO_TARGET_DIR:-target}/$target/ci/stub-runtime" tests/stub-runtime/Dockerfile "$context/"
docker build --quiet -t lazygate-stub-runtime:test "$context" >/dev/null
echo "built lazygate-stub-runtime:test"
