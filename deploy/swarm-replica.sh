#!/usr/bin/env bash
# One gateway replica of the Swarm backend: run it on each manager node that should serve
# (two managers, two replicas). A replica is a plain container, not a Swarm service: it
# joins each runtime's own overlay network (browser-net-<owner_hash>) with `network
# connect`, which Docker refuses for a Swarm task's container ("network … not found", tried
# on Docker 20.10). It answers on the attachable overlay `lazygate-front` under the alias
# `lazygate`, where the tunnel (deploy/stack.yaml) reaches every replica by that one name.
#   deploy/swarm-replica.sh      on a manager, after `docker swarm init` (or join as manager)
# The images must be on every node (no registry needed: build them on each, or push them to
# yours); the secrets must be the same on every replica (LAZYGATE_API_TOKENS,
# LAZYGATE_VIEW_SECRET), as must the scope, isolation mode and TTL.
set -euo pipefail
cd "$(dirname "$0")/.."
: "${LAZYGATE_API_TOKENS:?set the API token(s) every replica shares}"
: "${LAZYGATE_VIEW_SECRET:?set the view secret every replica shares}"
scripts/build-runtime-image.sh
scripts/build-gateway-image.sh
docker network inspect lazygate-front >/dev/null 2>&1 ||
  docker network create -d overlay --attachable lazygate-front >/dev/null
docker stop -t 30 lazygate >/dev/null 2>&1 || true
docker rm lazygate >/dev/null 2>&1 || true
docker run -d --name lazygate --restart unless-stopped --stop-timeout 30 \
  --network lazygate-front --network-alias lazygate --sysctl net.ipv4.ip_forward=0 \
  -v /var/run/docker.sock:/var/run/docker.sock -v lazygate-state:/var/lib/lazygate \
  -e LAZYGATE_BACKEND=swarm -e BROWSER_RUNTIME_NETWORK=browser-net \
  -e LAZYGATE_API_TOKENS -e LAZYGATE_VIEW_SECRET \
  lazygate:latest
echo "replica running on $(hostname) (docker logs -f lazygate); the tunnel: docker stack deploy -c deploy/stack.yaml lazygate"
