# Sourced by the scripts: makes sure a container engine answers, installing and starting
# Debian's docker.io when none does. Needs root (as on the build and CI machines).

apt_updated=""
apt_install() {
  local missing=()
  for pkg in "$@"; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ -z "$apt_updated" ]; then apt-get update -qq; apt_updated=1; fi
  echo "installing: ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}

ensure_engine() {
  if docker info >/dev/null 2>&1; then return 0; fi
  command -v dockerd >/dev/null 2>&1 || apt_install docker.io
  command -v docker >/dev/null 2>&1 || apt_install docker.io
  if ! pgrep -x dockerd >/dev/null 2>&1; then
    echo "starting dockerd (log: /tmp/lazygate-dockerd.log)"
    setsid dockerd >/tmp/lazygate-dockerd.log 2>&1 < /dev/null &
  fi
  for _ in $(seq 1 120); do
    docker info >/dev/null 2>&1 && return 0
    sleep 0.5
  done
  echo "the container engine did not answer; see /tmp/lazygate-dockerd.log" >&2
  return 1
}
