#!/usr/bin/env bash
# The benchmark harness: one command, a few minutes on 2 cores, regenerates BENCHMARKS.md and
# the plots in bench/plots/. Everything runs on loopback against containers it starts itself
# (labelled lazygate.bench=1, removed at the end); every load is bounded in time.
#   bench/run.sh            full run (3 repetitions of every measurement)
#   REPEATS=1 bench/run.sh  quicker, noisier
# Contenders on the same upstream (one runtime container): direct (no proxy), lazygate, and
# nginx as a keep-alive reverse proxy with as many workers as lazygate has cores.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/engine.sh
ensure_engine
apt_install wrk nginx-light python3-matplotlib curl
scripts/build-test-images.sh >/dev/null
scripts/build-runtime-image.sh >/dev/null
cargo build --release --quiet --bin lazygate

REPEATS="${REPEATS:-3}"
DURATION="${DURATION:-8s}"
CONNECTIONS="${CONNECTIONS:-64}"
CORES=$(nproc)
work=$(mktemp -d)
results="$work/results.jsonl"
gateway_pid=""
nginx_pid=""
cleanup() {
  [ -n "$gateway_pid" ] && kill "$gateway_pid" 2>/dev/null || true
  [ -n "$nginx_pid" ] && kill "$nginx_pid" 2>/dev/null || true
  ids=$(docker ps -aq --filter label=lazygate.bench=1 --filter label=lazygate.scope=bench)
  [ -n "$ids" ] && docker rm -f -v $ids >/dev/null 2>&1 || true
  vols=$(docker volume ls -q --filter label=lazygate.scope=bench)
  [ -n "$vols" ] && docker volume rm -f $vols >/dev/null 2>&1 || true
  docker network rm lazygate-bench >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
cleanup_leftovers() {
  ids=$(docker ps -aq --filter label=lazygate.scope=bench; docker ps -aq --filter label=lazygate.bench=1)
  [ -n "$ids" ] && docker rm -f -v $ids >/dev/null 2>&1 || true
}
cleanup_leftovers
docker network inspect lazygate-bench >/dev/null 2>&1 || docker network create --label lazygate.bench=1 lazygate-bench >/dev/null

record() { echo "$1" >> "$results"; }
free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }

# --- the gateway (published upstreams, stub runtime, its own scope and state) -------------
TOKEN=bench-api-token-0123456789
GW_PORT=$(free_port)
LAZYGATE_LISTEN=127.0.0.1:$GW_PORT LAZYGATE_UPSTREAM=published LAZYGATE_SCOPE=bench \
  BROWSER_RUNTIME_IMAGE=lazygate-stub-runtime:test BROWSER_RUNTIME_NETWORK=lazygate-bench \
  BROWSER_RUNTIME_STATE_DIR="$work/state" LAZYGATE_API_TOKENS=$TOKEN \
  LAZYGATE_VIEW_SECRET=bench-view-secret-0123456789-0123456789 LAZYGATE_MAX_RUNTIMES=100 \
  LAZYGATE_MAX_CONCURRENT_STARTS=16 RUST_LOG=warn \
  target/release/lazygate serve >"$work/gateway.log" 2>&1 &
gateway_pid=$!
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$GW_PORT/healthz" >/dev/null && break; sleep 0.05; done
AUTH="Authorization: Bearer $TOKEN"

# --- warm HTTP: one upstream, three fronts -----------------------------------------------
curl -sf -H "$AUTH" -X POST "http://127.0.0.1:$GW_PORT/rpc/bench" >/dev/null
RT_PORT=$(docker port browser-use-browser-$(python3 -c 'import hashlib;print(hashlib.sha256(b"bench").hexdigest()[:16])') 8787/tcp | head -1 | cut -d: -f2)
NG_PORT=$(free_port)
mkdir -p "$work/nginx/logs"
cat > "$work/nginx/nginx.conf" <<NGINX
worker_processes $CORES;
error_log $work/nginx/logs/error.log warn;
pid $work/nginx/nginx.pid;
events { worker_connections 8192; }
http {
  access_log off;
  upstream runtime { server 127.0.0.1:$RT_PORT; keepalive 128; }
  map \$http_upgrade \$connection_upgrade { default upgrade; '' ''; }
  server {
    listen 127.0.0.1:$NG_PORT;
    location /rpc/bench/ {
      proxy_pass http://runtime/;
      proxy_http_version 1.1;
      proxy_set_header Connection \$connection_upgrade;
      proxy_set_header Upgrade \$http_upgrade;
      proxy_buffering off;
      proxy_request_buffering off;
      client_max_body_size 16m;
    }
  }
}
NGINX
nginx -p "$work/nginx" -c "$work/nginx/nginx.conf" -g 'daemon off;' &
nginx_pid=$!
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$NG_PORT/rpc/bench/health" >/dev/null && break; sleep 0.05; done

cat > "$work/post64k.lua" <<'LUA'
wrk.method = "POST"
wrk.body = string.rep("x", 65536)
wrk.headers["Content-Type"] = "application/octet-stream"
LUA

run_wrk() { # contender scenario url [extra wrk args...]
  local contender=$1 scenario=$2 url=$3; shift 3
  for r in $(seq 1 "$REPEATS"); do
    out=$(wrk -t2 -c"$CONNECTIONS" -d"$DURATION" --latency "$@" "$url")
    rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
    p50=$(echo "$out" | awk '$1=="50%" {print $2}')
    p99=$(echo "$out" | awk '$1=="99%" {print $2}')
    record "{\"kind\":\"warm\",\"scenario\":\"$scenario\",\"contender\":\"$contender\",\"rps\":$rps,\"p50\":\"$p50\",\"p99\":\"$p99\"}"
  done
}
echo "warm HTTP (wrk -t2 -c$CONNECTIONS -d$DURATION, x$REPEATS)"
for scenario in get post64k; do
  if [ $scenario = get ]; then path=health; extra=(); else path=echo; extra=(-s "$work/post64k.lua"); fi
  run_wrk direct "$scenario" "http://127.0.0.1:$RT_PORT/$path" "${extra[@]}"
  run_wrk lazygate "$scenario" "http://127.0.0.1:$GW_PORT/rpc/bench/$path" -H "$AUTH" "${extra[@]}"
  run_wrk nginx "$scenario" "http://127.0.0.1:$NG_PORT/rpc/bench/$path" "${extra[@]}"
done

# --- cold start: first response through the gateway vs the runtime's own readiness -------
echo "cold starts"
for image in lazygate-stub-runtime:test browser-use-browser-runtime:latest; do
  for r in $(seq 1 "$REPEATS"); do
    # The runtime alone: docker run, then /health polled every 5 ms from outside.
    start=$(date +%s%N)
    cid=$(docker run -d --label lazygate.bench=1 --network lazygate-bench --shm-size 2g -p 127.0.0.1::8787 "$image")
    port=$(docker port "$cid" 8787/tcp | head -1 | cut -d: -f2)
    until curl -sf "http://127.0.0.1:$port/health" >/dev/null 2>&1; do sleep 0.005; done
    direct_ms=$(( ($(date +%s%N) - start) / 1000000 ))
    docker rm -f "$cid" >/dev/null
    # Through lazygate: a new owner's first request.
    owner="cold-$r-$RANDOM-$(date +%s%N)"
    if [ "$image" = browser-use-browser-runtime:latest ]; then
      kill "$gateway_pid"; wait "$gateway_pid" 2>/dev/null || true
      LAZYGATE_LISTEN=127.0.0.1:$GW_PORT LAZYGATE_UPSTREAM=published LAZYGATE_SCOPE=bench \
        BROWSER_RUNTIME_IMAGE=$image BROWSER_RUNTIME_NETWORK=lazygate-bench \
        BROWSER_RUNTIME_STATE_DIR="$work/state" LAZYGATE_API_TOKENS=$TOKEN \
        LAZYGATE_VIEW_SECRET=bench-view-secret-0123456789-0123456789 LAZYGATE_MAX_RUNTIMES=100 \
        LAZYGATE_MAX_CONCURRENT_STARTS=16 RUST_LOG=warn \
        target/release/lazygate serve >>"$work/gateway.log" 2>&1 &
      gateway_pid=$!
      for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$GW_PORT/healthz" >/dev/null && break; sleep 0.05; done
    fi
    gw_ms=$(curl -s -o /dev/null -w '%{time_total}' -H "$AUTH" "http://127.0.0.1:$GW_PORT/rpc/$owner/health" | awk '{printf "%d", $1*1000}')
    record "{\"kind\":\"cold\",\"image\":\"$image\",\"direct_ms\":$direct_ms,\"gateway_ms\":$gw_ms}"
  done
done

# --- concurrent cold starts (reference runtime): wall time to serve N new owners ---------
echo "concurrent cold starts"
for n in 1 4 8; do
  for r in $(seq 1 "$REPEATS"); do
    start=$(date +%s%N)
    seq 1 "$n" | xargs -P "$n" -I{} curl -s -o /dev/null -H "$AUTH" "http://127.0.0.1:$GW_PORT/rpc/conc-$n-$r-{}-$RANDOM/health"
    wall_ms=$(( ($(date +%s%N) - start) / 1000000 ))
    record "{\"kind\":\"concurrent\",\"owners\":$n,\"wall_ms\":$wall_ms}"
    ids=$(docker ps -aq --filter label=lazygate.scope=bench --filter name=browser-use-browser)
    [ -n "$ids" ] && docker rm -f -v $ids >/dev/null 2>&1 || true
  done
done

# Kept for a look afterwards (target/ is not committed); Debian's python3 has matplotlib.
mkdir -p target && cp "$results" target/bench-results.jsonl
/usr/bin/python3 bench/report.py "$results" "$CORES" "$DURATION" "$CONNECTIONS" "$REPEATS"
