#!/usr/bin/env bash
# The gateway container of compose.yaml, with plain `docker run` (no compose, no tunnel):
# on browser-net, with the engine's socket, published on 127.0.0.1:8080; it joins each
# runtime's own network (browser-net-<owner_hash>) and never routes between them.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/build-runtime-image.sh
scripts/build-gateway-image.sh
docker network inspect browser-net >/dev/null 2>&1 || docker network create browser-net >/dev/null
# An upgrade: the old gateway drains (server.drain_seconds, 10 s by default) before it goes;
# runtimes keep running and the new one adopts them. The stop timeout leaves room for the
# drain, so the engine never has to SIGKILL it.
docker stop -t 30 lazygate >/dev/null 2>&1 || true
docker rm lazygate >/dev/null 2>&1 || true
docker run -d --name lazygate --restart unless-stopped --stop-timeout 30 \
  --network browser-net -p 127.0.0.1:8080:8080 --sysctl net.ipv4.ip_forward=0 \
  -v /var/run/docker.sock:/var/run/docker.sock -v lazygate-state:/var/lib/lazygate \
  -e LAZYGATE_UPSTREAM=network -e BROWSER_RUNTIME_NETWORK=browser-net \
  lazygate:latest
echo "lazygate is listening on http://127.0.0.1:8080 (docker logs -f lazygate)"
echo "its generated API token and view secret: docker exec lazygate cat /var/lib/lazygate/lazygate-secrets.json"
