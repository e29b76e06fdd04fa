#!/usr/bin/env bash
# Builds the reference browser runtime image (browser-use-browser-runtime:latest) without
# any image registry: the Debian base is made once with debootstrap from this machine's own
# apt mirror and imported; packages come from Debian inside the build. Docker's build cache
# makes a rebuild with unchanged inputs take a second.
#   RUNTIME_IMAGE=name:tag   image to build (default browser-use-browser-runtime:latest)
#   RUNTIME_BASE=image       base image to build from (e.g. debian:bookworm-slim with a registry)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/engine.sh
image="${RUNTIME_IMAGE:-browser-use-browser-runtime:latest}"
base="${RUNTIME_BASE:-lazygate-debian:bookworm}"

# The apt mirror this machine uses: from deb822 sources, else from sources.list.
mirror() {
  local uri=""
  if [ -f /etc/apt/sources.list.d/debian.sources ]; then
    uri=$(awk '/^URIs:/ { print $2; exit }' /etc/apt/sources.list.d/debian.sources)
  fi
  if [ -z "$uri" ] && [ -f /etc/apt/sources.list ]; then
    uri=$(awk '/^deb / && $2 !~ /security/ { print $2; exit }' /etc/apt/sources.list)
  fi
  echo "$uri"
}

if [ "$base" = "lazygate-debian:bookworm" ] && ! docker image inspect "$base" >/dev/null 2>&1; then
  apt_install debootstrap
  rootfs=$(mktemp -d)
  trap 'rm -rf "$rootfs"' EXIT
  echo "making the Debian base image $base with debootstrap"
  debootstrap --variant=minbase bookworm "$rootfs" "$(mirror)" >/dev/null
  if [ -f /etc/apt/sources.list.d/debian.sources ]; then
    cp /etc/apt/sources.list.d/debian.sources "$rootfs/etc/apt/sources.list.d/"
    rm -f "$rootfs/etc/apt/sources.list"
  fi
  tar -C "$rootfs" -c . | docker import - "$base" >/dev/null
fi
docker build --quiet --build-arg "BASE=$base" -t "$image" runtime >/dev/null
echo "built $image"
