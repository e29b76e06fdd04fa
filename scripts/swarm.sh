#!/usr/bin/env bash
# The swarm the Swarm backend's tests run on (sourced by scripts/test.sh):
#   swarm_up    makes this engine a single-node swarm manager, advertised on a veth pair
#               whose other end is in a network namespace, where tests/swarm_nodes.rs starts
#               a second engine and joins it as a worker; does nothing if the engine is in a
#               swarm already (then the two-node test says it cannot run).
#   swarm_down  leaves the swarm and removes the veth, the namespace and docker_gwbridge,
#               only if swarm_up made them: the machine is left as it was found.
# The addresses are exported for the tests (LAZYGATE_TEST_NODE2_*).
SWARM_NETNS=lazygate-node2
SWARM_HOST_ADDR=10.215.0.1
SWARM_NODE2_ADDR=10.215.0.2

swarm_up() {
  if [ "$(docker info -f '{{.Swarm.LocalNodeState}}')" != inactive ]; then
    echo "the engine is in a swarm already: using it; the two-node test will say it cannot run" >&2
    return 0
  fi
  # Leftovers of a run that was killed before it could clean up (these names are ours).
  ip link del lgnode2-host 2>/dev/null || true
  ip netns del "$SWARM_NETNS" 2>/dev/null || true
  ip netns add "$SWARM_NETNS"
  ip link add lgnode2-host type veth peer name lgnode2
  ip link set lgnode2 netns "$SWARM_NETNS"
  ip addr add "$SWARM_HOST_ADDR/24" dev lgnode2-host
  ip link set lgnode2-host up
  ip -n "$SWARM_NETNS" addr add "$SWARM_NODE2_ADDR/24" dev lgnode2
  ip -n "$SWARM_NETNS" link set lgnode2 up
  ip -n "$SWARM_NETNS" link set lo up
  docker swarm init --advertise-addr "$SWARM_HOST_ADDR" --listen-addr "$SWARM_HOST_ADDR:2377" \
    --default-addr-pool 10.214.0.0/16 >/dev/null
  SWARM_MADE=1
  export LAZYGATE_TEST_NODE2_NETNS="$SWARM_NETNS" LAZYGATE_TEST_NODE2_ADDR="$SWARM_NODE2_ADDR" \
    LAZYGATE_TEST_MANAGER_ADDR="$SWARM_HOST_ADDR"
}

swarm_down() {
  [ -n "${SWARM_MADE:-}" ] || return 0
  docker swarm leave --force >/dev/null 2>&1 || true
  docker network rm docker_gwbridge >/dev/null 2>&1 || true
  ip link del lgnode2-host 2>/dev/null || true
  ip netns del "$SWARM_NETNS" 2>/dev/null || true
}
