#!/usr/bin/env bash
# The benchmark harness: one command, about 13 minutes on 2 cores once the images are built,
# regenerates BENCHMARKS.md and bench/plots/. Everything runs on loopback against containers
# it starts itself (labelled lazygate.bench=1 or named for it, removed at the end); every
# load is bounded in time or count.
#   bench/run.sh            full run (3 repetitions of every measurement)
#   REPEATS=1 bench/run.sh  quicker, noisier
#   SECTIONS="warm logged profile" bench/run.sh
#                           only those sections (warm metrics logged profile instructions ws
#                           memory owners cold concurrent), summary printed, BENCHMARKS.md
#                           left alone
#   BASELINE_BIN=<gateway binary> bench/run.sh
#                           the profile section times and samples that build beside this one
#   SECTIONS=heap bench/run.sh
#                           (only when named) where the heap goes per idle keep-alive
#                           connection: valgrind's DHAT on a build with glibc's malloc,
#                           2 000 held, by allocation site (target/bench-heap.txt)
#   SECTIONS=serve bench/run.sh
#                           the fronts kept up for measuring by hand (target/bench-serve.env)
# Contenders on the same upstream (one runtime container): direct (no proxy), lazygate, nginx
# as a keep-alive reverse proxy with as many workers as lazygate has worker threads, HAProxy
# with as many threads (connection reuse always), hyper-floor (bench/loadgen: hyper's server
# and client and nothing else, the same worker threads), none of them logging requests, and
# for cold starts the seed (shared/seed's browser_runtime_manager.py, copied in bench/seed/).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/engine.sh
ensure_engine
apt_install wrk nginx-light haproxy python3-matplotlib curl
scripts/build-test-images.sh >/dev/null
scripts/build-runtime-image.sh >/dev/null
cargo build --release --quiet -p lazygate -p loadgen
GATEWAY_IMAGE=lazygate:bench scripts/build-gateway-image.sh >/dev/null
# oha for fixed-rate HTTP (not packaged by Debian): built once into target/bench-tools
# (about 8 minutes on 2 cores, the first time only).
OHA=target/bench-tools/bin/oha
[ -x "$OHA" ] || cargo install --quiet --locked oha --version 1.16.0 --root target/bench-tools
LOADGEN=target/release/loadgen

REPEATS="${REPEATS:-3}"
SECTIONS="${SECTIONS:-all}"
wanted() { [ "$SECTIONS" = all ] || [[ " $SECTIONS " == *" $1 "* ]]; }
DURATION="${DURATION:-4s}"
CONNECTIONS="${CONNECTIONS:-64}"
RATE="${RATE:-5000}"            # small GETs per second, paced
RATE_POST="${RATE_POST:-1000}"  # 64 KiB POSTs per second, paced
CORES=$(nproc)
ulimit -n "$(ulimit -Hn)"  # 10 000 held connections need more than the usual 1024
work=$(mktemp -d)
results="$work/results.jsonl"
gateway_pid=""
nginx_pid=""
haproxy_pid=""
hold_pid=""
floor_pid=""
REF=browser-use-browser-runtime:latest
STUB=lazygate-stub-runtime:test
NET=lazygate-bench
# The seed's runtimes carry no label of ours: the owners it was given are listed in this file.
seed_owners_file=$(mktemp)
remove_seed_runtimes() {
  while read -r owner; do
    [ -n "$owner" ] || continue
    h=$(hash_of "$owner")
    docker rm -f -v "browser-use-browser-$h" >/dev/null 2>&1 || true
    docker volume rm -f "browser-use-profile-$h" >/dev/null 2>&1 || true
  done < "$seed_owners_file"
  : > "$seed_owners_file"
}
remove_bench_containers() {
  ids=$(docker ps -aq --filter label=lazygate.bench=1; docker ps -aq --filter label=lazygate.scope=bench)
  [ -n "$ids" ] && docker rm -f -v $ids >/dev/null 2>&1 || true
}
cleanup() {
  for pid in "$gateway_pid" "$nginx_pid" "$haproxy_pid" "$hold_pid" "$floor_pid"; do [ -n "$pid" ] && kill "$pid" 2>/dev/null || true; done
  remove_bench_containers
  vols=$(docker volume ls -q --filter label=lazygate.scope=bench)
  [ -n "$vols" ] && docker volume rm -f $vols >/dev/null 2>&1 || true
  remove_seed_runtimes
  rm -f "$seed_owners_file"
  # Each runtime's own network (the gateway makes one per runtime).
  nets=$(docker network ls -q --filter label=lazygate.scope=bench)
  [ -n "$nets" ] && docker network rm $nets >/dev/null 2>&1 || true
  docker network rm $NET >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
remove_bench_containers  # leftovers of an interrupted run
docker network inspect $NET >/dev/null 2>&1 || docker network create --label lazygate.bench=1 $NET >/dev/null

record() { echo "$1" >> "$results"; }
free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
hash_of() { python3 -c 'import hashlib,sys;print(hashlib.sha256(sys.argv[1].encode()).hexdigest()[:16])' "$1"; }
rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
wait_healthy() { for _ in $(seq 1 200); do curl -sf "http://127.0.0.1:$1/healthz" >/dev/null && return 0; sleep 0.05; done; return 1; }
remove_bench_runtimes() {
  ids=$(docker ps -aq --filter label=lazygate.scope=bench --filter name=browser-use-browser)
  [ -n "$ids" ] && docker rm -f -v $ids >/dev/null 2>&1 || true
}

# --- the gateway (published upstreams, its own scope and state) ---------------------------
TOKEN=bench-api-token-0123456789
SECRET=bench-view-secret-0123456789-0123456789
AUTH="Authorization: Bearer $TOKEN"
GW_PORT=$(free_port)
gateway_env() { # image
  echo LAZYGATE_LISTEN=127.0.0.1:$GW_PORT LAZYGATE_ADMIN_LISTEN=127.0.0.1:0 LAZYGATE_UPSTREAM=published LAZYGATE_SCOPE=bench LAZYGATE_FENCE_IMAGE=lazygate:bench \
    BROWSER_RUNTIME_IMAGE=$1 BROWSER_RUNTIME_NETWORK=$NET BROWSER_RUNTIME_STATE_DIR=$work/state \
    LAZYGATE_API_TOKENS=$TOKEN LAZYGATE_VIEW_SECRET=$SECRET LAZYGATE_MAX_RUNTIMES=100 \
    LAZYGATE_MAX_CONCURRENT_STARTS=16 LAZYGATE_MAX_CONNECTIONS=30000 RUST_LOG=warn
}
start_gateway() { # image command...
  local image=$1; shift
  [ -n "$gateway_pid" ] && { kill "$gateway_pid" 2>/dev/null || true; wait "$gateway_pid" 2>/dev/null || true; }
  env $(gateway_env "$image") "$@" >>"$work/gateway.log" 2>&1 &
  gateway_pid=$!
  wait_healthy "$GW_PORT"
}
# For cold starts the gateway runs as in production: a container that joins each runtime's
# own network and dials it there, with no published ports, the engine's socket mounted, its
# own port published for curl.
start_gateway_container() { # image
  [ -n "$gateway_pid" ] && { kill "$gateway_pid" 2>/dev/null || true; wait "$gateway_pid" 2>/dev/null || true; gateway_pid=""; }
  docker rm -f -v lazygate-bench-gateway >/dev/null 2>&1 || true
  docker run -d --name lazygate-bench-gateway --label lazygate.bench=1 --network $NET --sysctl net.ipv4.ip_forward=0 \
    -p 127.0.0.1:$GW_PORT:8080 -v /var/run/docker.sock:/var/run/docker.sock \
    -e LAZYGATE_UPSTREAM=network -e LAZYGATE_SCOPE=bench -e BROWSER_RUNTIME_IMAGE=$1 \
    -e BROWSER_RUNTIME_NETWORK=$NET -e LAZYGATE_API_TOKENS=$TOKEN -e LAZYGATE_VIEW_SECRET=$SECRET \
    -e LAZYGATE_MAX_RUNTIMES=100 -e LAZYGATE_MAX_CONCURRENT_STARTS=16 -e RUST_LOG=warn \
    lazygate:bench >/dev/null
  wait_healthy "$GW_PORT"
}
start_gateway $STUB target/release/lazygate serve

OWNER=bench
HASH=$(hash_of $OWNER)
curl -sf -H "$AUTH" -X POST "http://127.0.0.1:$GW_PORT/rpc/$OWNER" >/dev/null
RT_PORT=$(docker port "browser-use-browser-$HASH" 8787/tcp | head -1 | cut -d: -f2)
VIEW_PORT=$(docker port "browser-use-browser-$HASH" 6080/tcp | head -1 | cut -d: -f2)
VIEW_TOKEN=$(env $(gateway_env $STUB) target/release/lazygate view-url $OWNER 2>/dev/null | sed 's/.*token=//')

NG_PORT=$(free_port)
NG_LOG_PORT=$(free_port)
mkdir -p "$work/nginx/logs"
# The runs route, the same for the unlogged and the logged server.
cat > "$work/nginx/rpc.conf" <<NGINX
proxy_pass http://rpc/;
proxy_http_version 1.1;
proxy_set_header Connection "";
proxy_buffering off;
proxy_request_buffering off;
client_max_body_size 16m;
NGINX
cat > "$work/nginx/nginx.conf" <<NGINX
worker_processes $CORES;
error_log $work/nginx/logs/error.log warn;
pid $work/nginx/nginx.pid;
events { worker_connections 16384; }
http {
  access_log off;
  upstream rpc { server 127.0.0.1:$RT_PORT; keepalive 128; }
  upstream view { server 127.0.0.1:$VIEW_PORT; keepalive 16; }
  map \$http_upgrade \$connection_upgrade { default upgrade; '' ''; }
  server {
    listen 127.0.0.1:$NG_PORT;
    location /rpc/$OWNER/ { include $work/nginx/rpc.conf; }
    location /view/$HASH/ {
      proxy_pass http://view/;
      proxy_http_version 1.1;
      proxy_set_header Upgrade \$http_upgrade;
      proxy_set_header Connection \$connection_upgrade;
      proxy_read_timeout 1h;
    }
  }
  # The same route with every request logged (the "every request logged" rows).
  server {
    listen 127.0.0.1:$NG_LOG_PORT;
    access_log $work/nginx/logs/access.log;
    location /rpc/$OWNER/ { include $work/nginx/rpc.conf; }
  }
}
NGINX
nginx -p "$work/nginx" -c "$work/nginx/nginx.conf" -g 'daemon off;' &
nginx_pid=$!
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$NG_PORT/rpc/$OWNER/health" >/dev/null && break; sleep 0.05; done

# HAProxy: the same two routes, no request log (no `log` line), kept-alive server
# connections shared between clients (`http-reuse always`), WebSockets tunnelled.
HA_PORT=$(free_port)
HA_LOG_PORT=$(free_port)
mkdir -p "$work/haproxy"
cat > "$work/haproxy/haproxy.cfg" <<HAPROXY
global
  nbthread $CORES
  maxconn 4096
defaults
  mode http
  timeout connect 5s
  timeout client 1h
  timeout server 1h
  timeout tunnel 1h
  option http-keep-alive
  http-reuse always
frontend front
  bind 127.0.0.1:$HA_PORT
  use_backend view if { path_beg /view/$HASH/ }
  default_backend rpc
# The same route with every request logged, to a file (the "every request logged" rows).
frontend front_logged
  bind 127.0.0.1:$HA_LOG_PORT
  log stdout format raw local0
  option httplog
  default_backend rpc
backend rpc
  http-request replace-path ^/rpc/$OWNER/(.*) /\1
  server runtime 127.0.0.1:$RT_PORT
backend view
  http-request replace-path ^/view/$HASH/(.*) /\1
  server runtime 127.0.0.1:$VIEW_PORT
HAPROXY
haproxy -db -f "$work/haproxy/haproxy.cfg" > "$work/haproxy/access.log" 2>&1 &
haproxy_pid=$!
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$HA_PORT/rpc/$OWNER/health" >/dev/null && break; sleep 0.05; done
curl -sf "http://127.0.0.1:$HA_PORT/rpc/$OWNER/health" >/dev/null || { echo "haproxy did not start: $(cat "$work/haproxy/access.log")" >&2; exit 1; }

# SECTIONS=serve: keep the three fronts up on the one runtime for measurements by hand (the
# URLs go to target/bench-serve.env); stops when the script is stopped.
if [[ " $SECTIONS " == *" serve "* ]]; then
  mkdir -p target
  cat > target/bench-serve.env <<SERVE
AUTH="$AUTH"
GATEWAY_PID=$gateway_pid
NGINX_PID=$nginx_pid
HAPROXY_PID=$haproxy_pid
LAZYGATE=http://127.0.0.1:$GW_PORT/rpc/$OWNER
NGINX=http://127.0.0.1:$NG_PORT/rpc/$OWNER
HAPROXY=http://127.0.0.1:$HA_PORT/rpc/$OWNER
DIRECT=http://127.0.0.1:$RT_PORT
LAZYGATE_WS="ws://127.0.0.1:$GW_PORT/view/$HASH/websockify?token=$VIEW_TOKEN"
NGINX_WS=ws://127.0.0.1:$NG_PORT/view/$HASH/websockify
HAPROXY_WS=ws://127.0.0.1:$HA_PORT/view/$HASH/websockify
DIRECT_WS=ws://127.0.0.1:$VIEW_PORT/websockify
SERVE
  cat target/bench-serve.env
  while :; do sleep 3600; done
fi

# --- 1. warm HTTP: one upstream, three fronts ----------------------------------------------
cat > "$work/post64k.lua" <<'LUA'
wrk.method = "POST"
wrk.body = string.rep("x", 65536)
wrk.headers["Content-Type"] = "application/octet-stream"
LUA
# hyper-floor (bench/loadgen): the least reverse proxy on hyper, a contender in the warm
# section and what the profile section measures lazygate's pipeline against.
start_floor() {
  FLOOR_PORT=$(free_port)
  $LOADGEN hyper-floor --listen "127.0.0.1:$FLOOR_PORT" --upstream "127.0.0.1:$RT_PORT" >/dev/null 2>&1 &
  floor_pid=$!
  for _ in $(seq 1 200); do curl -sf "http://127.0.0.1:$FLOOR_PORT/health" >/dev/null && return 0; sleep 0.05; done
  return 1
}
stop_floor() { kill "$floor_pid" 2>/dev/null || true; wait "$floor_pid" 2>/dev/null || true; floor_pid=""; }
url_of() { # contender path
  case $1 in
    direct) echo "http://127.0.0.1:$RT_PORT/$2" ;;
    hyper-floor) echo "http://127.0.0.1:$FLOOR_PORT/$2" ;;
    lazygate) echo "http://127.0.0.1:$GW_PORT/rpc/$OWNER/$2" ;;
    nginx) echo "http://127.0.0.1:$NG_PORT/rpc/$OWNER/$2" ;;
    haproxy) echo "http://127.0.0.1:$HA_PORT/rpc/$OWNER/$2" ;;
  esac
}
cpu_ticks() { # pids... -> user+system clock ticks used so far
  for pid in "$@"; do awk '{print $14 + $15}' "/proc/$pid/stat"; done | awk '{t += $1} END {print t + 0}'
}
proxy_pids() { # contender -> the processes doing its work
  case $1 in
    lazygate | this | baseline) echo "$gateway_pid" ;;
    hyper-floor) echo "$floor_pid" ;;
    nginx) pgrep -P "$nginx_pid" | tr '\n' ' ' ;;
    haproxy) echo "$haproxy_pid" ;;
    *) echo "" ;;
  esac
}
run_wrk() { # kind contender scenario url [extra wrk args...]
  local kind=$1 contender=$2 scenario=$3 url=$4; shift 4
  local pids before after
  pids=$(proxy_pids "$contender")
  before=$(cpu_ticks $pids)
  out=$(wrk -t2 -c"$CONNECTIONS" -d"$DURATION" --latency "$@" "$url")
  after=$(cpu_ticks $pids)
  rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
  requests=$(echo "$out" | awk '/requests in/ {print $1}')
  p50=$(echo "$out" | awk '$1=="50%" {print $2}')
  p99=$(echo "$out" | awk '$1=="99%" {print $2}')
  # CPU the proxy spent per request (user + system), in microseconds: steadier than req/s
  # on a machine where the load generator and the upstream compete for the same cores.
  cpu_us=$(awk -v t=$((after - before)) -v n="$requests" -v hz="$(getconf CLK_TCK)" 'BEGIN {printf "%.1f", t * 1e6 / hz / n}')
  record "{\"kind\":\"$kind\",\"scenario\":\"$scenario\",\"contender\":\"$contender\",\"rps\":$rps,\"p50\":\"$p50\",\"p99\":\"$p99\",\"cpu_us\":$cpu_us}"
}
head -c 65536 /dev/zero | tr '\0' x > "$work/body64k"
run_oha() { # contender scenario rate url [extra oha args...]
  local contender=$1 scenario=$2 rate=$3 url=$4; shift 4
  "$OHA" --no-tui --output-format json -z 3s -q "$rate" --latency-correction -c 16 "$@" "$url" |
    python3 -c "
import json,sys; d=json.load(sys.stdin); s=d['summary']; p=d['latencyPercentiles']
print(json.dumps({'kind':'rate','scenario':'$scenario','contender':'$contender','rps':s['requestsPerSec'],'p50_ms':p['p50']*1000,'p99_ms':p['p99']*1000,'ok':s['successRate']}))" >> "$results"
}
echo "warm HTTP (wrk -t2 -c$CONNECTIONS -d$DURATION; oha at $RATE and $RATE_POST req/s; x$REPEATS)"
if wanted warm; then
start_floor
for r in $(seq 1 "$REPEATS"); do
  for contender in direct lazygate nginx haproxy hyper-floor; do
    hdr=(); [ $contender = lazygate ] && hdr=(-H "$AUTH")
    run_wrk warm "$contender" get "$(url_of $contender health)" "${hdr[@]}"
    run_wrk warm "$contender" post64k "$(url_of $contender echo)" "${hdr[@]}" -s "$work/post64k.lua"
    # Fixed rate: latency when nobody is saturated (oha paces the requests).
    run_oha "$contender" get "$RATE" "$(url_of $contender health)" "${hdr[@]}"
    run_oha "$contender" post64k "$RATE_POST" "$(url_of $contender echo)" "${hdr[@]}" \
      -m POST -D "$work/body64k" -T application/octet-stream
  done
done
stop_floor
fi

# --- 1b. the cost of metrics: the warm GET with per-request metrics on and off ------------
# Off means the admin listener is off (LAZYGATE_ADMIN_LISTEN empty): nobody could read them,
# so none are kept. Same upstream, load and logging; the two alternate within each repeat.
echo "metrics on vs off (warm GET, x$REPEATS)"
if wanted metrics; then
for r in $(seq 1 "$REPEATS"); do
  for state in on off; do
    if [ $state = off ]; then
      start_gateway $STUB env LAZYGATE_ADMIN_LISTEN= target/release/lazygate serve
    else
      start_gateway $STUB target/release/lazygate serve
    fi
    run_wrk metrics lazygate "$state" "$(url_of lazygate health)" -H "$AUTH"
  done
done
fi

# --- 1c. every request logged: the warm GET when each front writes an access log line ------
# lazygate's request line (RUST_LOG=info, to a file), nginx's access_log, HAProxy's httplog
# (to a file through stdout); same upstream and load.
echo "every request logged (warm GET, x$REPEATS)"
if wanted logged; then
for r in $(seq 1 "$REPEATS"); do
  start_gateway $STUB env RUST_LOG=info target/release/lazygate serve
  run_wrk logged lazygate get "$(url_of lazygate health)" -H "$AUTH"
  run_wrk logged nginx get "http://127.0.0.1:$NG_LOG_PORT/rpc/$OWNER/health"
  run_wrk logged haproxy get "http://127.0.0.1:$HA_LOG_PORT/rpc/$OWNER/health"
done
fi
start_gateway $STUB target/release/lazygate serve

# --- 1d. where lazygate's time goes: the warm GET, timed and sampled ---------------------
# The same small GET through this build and, with BASELINE_BIN=<an earlier build of the
# gateway>, through that one too, and through hyper-floor (bench/loadgen: the least reverse
# proxy on hyper, what lazygate's pipeline is measured against), alternating on the same
# upstream; in the first repeat perf samples each (user and kernel) and bench/profile.py sums
# the samples by component.
if wanted profile; then
  echo "profile (warm GET, x$REPEATS)"
  apt_install linux-perf
  builds=("this=target/release/lazygate" "hyper-floor=")
  [ -n "${BASELINE_BIN:-}" ] && builds=("baseline=$BASELINE_BIN" "${builds[@]}")
  for r in $(seq 1 "$REPEATS"); do
    for entry in "${builds[@]}"; do
      label=${entry%%=*}
      if [ "$label" = hyper-floor ]; then
        start_floor
        url="http://127.0.0.1:$FLOOR_PORT/health"
        pid=$floor_pid
      else
        start_gateway $STUB "${entry#*=}" serve
        url=$(url_of lazygate health)
        pid=$gateway_pid
      fi
      run_wrk build "$label" get "$url" -H "$AUTH"
      if [ "$r" = 1 ]; then
        perf record -q -F 1999 -g -o "$work/perf-$label.data" -p "$pid" -- sleep "${DURATION%s}" 2>/dev/null &
        perf_pid=$!
        wrk -t2 -c"$CONNECTIONS" -d"$DURATION" -H "$AUTH" "$url" >/dev/null
        wait "$perf_pid"
        perf report -q -i "$work/perf-$label.data" --stdio --no-children --sort dso,symbol -g none --percent-limit 0 2>/dev/null > "$work/profile-$label.txt"
        mkdir -p target && cp "$work/profile-$label.txt" "target/bench-profile-$label.txt"
        record "{\"kind\":\"profile\",\"build\":\"$label\",\"profile\":$(/usr/bin/python3 bench/profile.py "$work/profile-$label.txt" --json)}"
      fi
      [ "$label" = hyper-floor ] && stop_floor
    done
  done
  start_gateway $STUB target/release/lazygate serve
fi

# --- 1e. instructions per request: the warm GET under callgrind ----------------------------
# Time per request moves by ±15 % from run to run on this machine; the instructions a request
# costs do not (two runs of one build agree within 1 %). Each build (this, BASELINE_BIN,
# hyper-floor) runs under valgrind's callgrind, counting only while $CALLGRIND_REQUESTS
# keep-alive GETs go through (oha, 8 connections, after 500 to warm up); bench/instructions.py
# divides by the requests and splits lazygate's count by stage. Valgrind's CPU has no SHA
# instructions: SHA-256 runs in software there (about 3 400 instructions a hash, two per
# request: the owner's hash and the API token's), where this machine's CPU uses SHA-NI.
# nginx runs the same way, as one process (no master, one worker: callgrind follows one
# process), with the same route and upstream as its rows above: the user-space work the
# target is set against.
CALLGRIND_REQUESTS=${CALLGRIND_REQUESTS:-3000}
if wanted instructions; then
  echo "instructions (callgrind, $CALLGRIND_REQUESTS warm GETs each)"
  apt_install valgrind
  builds=("this=target/release/lazygate" "hyper-floor=$LOADGEN" "nginx=nginx")
  [ -n "${BASELINE_BIN:-}" ] && builds=("baseline=$BASELINE_BIN" "${builds[@]}")
  for entry in "${builds[@]}"; do
    label=${entry%%=*}
    out="$work/callgrind-$label.out"
    grind=(valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$out")
    if [ "$label" = hyper-floor ]; then
      FLOOR_PORT=$(free_port)
      "${grind[@]}" "$LOADGEN" hyper-floor --listen "127.0.0.1:$FLOOR_PORT" --upstream "127.0.0.1:$RT_PORT" >/dev/null 2>&1 &
      floor_pid=$!
      pid=$floor_pid
      url="http://127.0.0.1:$FLOOR_PORT/health"
    elif [ "$label" = nginx ]; then
      NG_GRIND_PORT=$(free_port)
      cat > "$work/nginx/grind.conf" <<NGINX
worker_processes 1;
master_process off;
error_log $work/nginx/logs/grind-error.log warn;
pid $work/nginx/grind.pid;
events { worker_connections 16384; }
http {
  access_log off;
  upstream rpc { server 127.0.0.1:$RT_PORT; keepalive 128; }
  server {
    listen 127.0.0.1:$NG_GRIND_PORT;
    location /rpc/$OWNER/ { include $work/nginx/rpc.conf; }
  }
}
NGINX
      "${grind[@]}" nginx -p "$work/nginx" -c "$work/nginx/grind.conf" -g 'daemon off;' >/dev/null 2>&1 &
      floor_pid=$!
      pid=$floor_pid
      url="http://127.0.0.1:$NG_GRIND_PORT/rpc/$OWNER/health"
    else
      [ -n "$gateway_pid" ] && { kill "$gateway_pid" 2>/dev/null || true; wait "$gateway_pid" 2>/dev/null || true; }
      env $(gateway_env $STUB) "${grind[@]}" "${entry#*=}" serve >>"$work/gateway.log" 2>&1 &
      gateway_pid=$!
      pid=$gateway_pid
      url=$(url_of lazygate health)
    fi
    for _ in $(seq 1 600); do curl -sf -H "$AUTH" "$url" >/dev/null && break; sleep 0.1; done
    $OHA -n 500 -c 8 --no-tui -H "$AUTH" "$url" >/dev/null
    callgrind_control -i on "$pid" >/dev/null
    $OHA -n "$CALLGRIND_REQUESTS" -c 8 --no-tui -H "$AUTH" "$url" >/dev/null
    callgrind_control -i off "$pid" >/dev/null
    kill "$pid"; wait "$pid" 2>/dev/null || true
    case $label in hyper-floor | nginx) floor_pid="" ;; *) gateway_pid="" ;; esac
    callgrind_annotate --inclusive=yes --threshold=100 "$out" 2>/dev/null > "$work/callgrind-$label.txt"
    mkdir -p target && cp "$work/callgrind-$label.txt" "target/bench-callgrind-$label.txt" && cp "$out" "target/bench-callgrind-$label.out"
    record "{\"kind\":\"instructions\",\"build\":\"$label\",\"requests\":$CALLGRIND_REQUESTS,\"result\":$(/usr/bin/python3 bench/instructions.py "$work/callgrind-$label.txt" "$CALLGRIND_REQUESTS")}"
  done
  start_gateway $STUB target/release/lazygate serve
fi

# --- 2. WebSocket relay: echoed frames through /view/<hash>/websockify --------------------
ws_url_of() {
  case $1 in
    direct) echo "ws://127.0.0.1:$VIEW_PORT/websockify" ;;
    lazygate) echo "ws://127.0.0.1:$GW_PORT/view/$HASH/websockify?token=$VIEW_TOKEN" ;;
    nginx) echo "ws://127.0.0.1:$NG_PORT/view/$HASH/websockify" ;;
    haproxy) echo "ws://127.0.0.1:$HA_PORT/view/$HASH/websockify" ;;
  esac
}
echo "WebSocket relay"
if wanted ws; then
for r in $(seq 1 "$REPEATS"); do
  for size in 100 4096 65536; do
    for contender in direct lazygate nginx haproxy; do
      pids=$(proxy_pids "$contender")
      before=$(cpu_ticks $pids)
      out=$($LOADGEN ws-relay --url "$(ws_url_of $contender)" --size $size --connections 16 --seconds 2)
      after=$(cpu_ticks $pids)
      # CPU the proxy spent per message relayed (two a round trip), as for HTTP requests.
      cpu_us=$(python3 -c 'import json,sys; d=json.loads(sys.argv[1]); print(round(int(sys.argv[2]) * 1e6 / int(sys.argv[3]) / (2 * d["round_trips"]), 2))' "$out" $((after - before)) "$(getconf CLK_TCK)")
      record "{\"kind\":\"ws\",\"mode\":\"throughput\",\"contender\":\"$contender\",\"cpu_us\":$cpu_us,\"result\":$out}"
      out=$($LOADGEN ws-relay --url "$(ws_url_of $contender)" --size $size --connections 1 --seconds 1)
      record "{\"kind\":\"ws\",\"mode\":\"latency\",\"contender\":\"$contender\",\"result\":$out}"
    done
  done
done
fi

# --- 5. scale of state: memory, and 10 000 registered owners ------------------------------
echo "memory"
rss_sum() { for pid in "$@"; do rss_kib "$pid"; done | awk '{t += $1} END {print t + 0}'; }
hold() { # url connections [header]  -> RSS of the gateway while held, in KiB
  local url=$1 n=$2; shift 2
  hold_rss "$url" "$n" "$gateway_pid" "$@"
}
hold_rss() { # url connections "pids" [header]  -> RSS of those processes while held, in KiB
  local url=$1 n=$2 pids=$3; shift 3
  echo "  $n idle connections to $url" >&2
  $LOADGEN hold --url "$url" --connections "$n" "$@" > "$work/hold.out" &
  hold_pid=$!
  # Its one line, whole (it ends with a newline).
  for _ in $(seq 1 1200); do grep -q '}$' "$work/hold.out" && break; sleep 0.1; done
  # Idle for a moment, as held connections are, on every contender alike: lazygate parks a
  # connection idle for 100 ms (nginx frees its buffers at once).
  sleep 2
  local rss; rss=$(rss_sum $pids)
  local ready; ready=$(python3 -c 'import json,sys;print(json.load(open(sys.argv[1]))["ready"])' "$work/hold.out") || ready=""
  kill "$hold_pid"; wait "$hold_pid" 2>/dev/null || true; hold_pid=""
  [ -n "$ready" ] || { echo "loadgen hold reported nothing for $url: $(cat "$work/hold.out")" >&2; exit 1; }
  echo "$rss $ready"
}
if wanted memory; then
for r in $(seq 1 "$REPEATS"); do
  start_gateway $STUB target/release/lazygate serve
  idle=$(rss_kib "$gateway_pid")
  curl -sf -H "$AUTH" "http://127.0.0.1:$GW_PORT/rpc/$OWNER/health" >/dev/null
  warm_rss=$(rss_kib "$gateway_pid")
  read -r ka ka_n < <(hold "http://127.0.0.1:$GW_PORT/rpc/$OWNER/health" 10000 --header "$AUTH")
  start_gateway $STUB target/release/lazygate serve
  curl -sf -H "$AUTH" "http://127.0.0.1:$GW_PORT/rpc/$OWNER/health" >/dev/null
  before_ws=$(rss_kib "$gateway_pid")
  read -r ws ws_n < <(hold "$(ws_url_of lazygate)" 1000)
  record "{\"kind\":\"memory\",\"idle_kib\":$idle,\"warm_kib\":$warm_rss,\"keepalive_kib\":$ka,\"keepalive_n\":$ka_n,\"before_ws_kib\":$before_ws,\"ws_kib\":$ws,\"ws_n\":$ws_n}"
  # 2 000 idle keep-alive connections held on each contender, and on the runtime's own
  # server (direct: a plain hyper HTTP/1.1 server), each warmed by one request first; the
  # RSS of its processes (nginx's master and workers) before and while held. 2 000, as the
  # connections closed before still hold the client's ports for a minute.
  for contender in lazygate nginx haproxy direct; do
    case $contender in
      lazygate) pids=$gateway_pid ;;
      nginx) pids="$nginx_pid $(pgrep -P "$nginx_pid" | tr '\n' ' ')" ;;
      haproxy) pids=$haproxy_pid ;;
      direct) pids=$(docker inspect -f '{{.State.Pid}}' "browser-use-browser-$HASH") ;;
    esac
    url=$(url_of $contender health)
    curl -sf -H "$AUTH" "$url" >/dev/null
    before=$(rss_sum $pids)
    # A row missing rather than the whole run lost (a full run once got no answer here).
    if read -r held held_n < <(hold_rss "$url" 2000 "$pids" --header "$AUTH"); then
      record "{\"kind\":\"memory_peer\",\"contender\":\"$contender\",\"before_kib\":$before,\"held_kib\":$held,\"n\":$held_n}"
    else
      echo "  no memory row for $contender" >&2
    fi
  done
done
fi
# --- 5b. the heap per idle keep-alive connection, by allocation site (only when named) ------
# RSS says how much; this says whose. valgrind's DHAT sees only malloc, so the gateway is
# built with glibc's (the system-allocator feature) and line tables, in a target directory
# of its own; bench/heap.py sums its live blocks at the heap's peak by allocation site.
if [[ " $SECTIONS " == *" heap "* ]]; then
  echo "heap (valgrind's DHAT, 2 000 idle keep-alive connections)"
  apt_install valgrind
  CARGO_TARGET_DIR=target/heap CARGO_PROFILE_RELEASE_DEBUG=line-tables-only \
    cargo build --release --quiet --bin lazygate --features system-allocator
  [ -n "$gateway_pid" ] && { kill "$gateway_pid" 2>/dev/null || true; wait "$gateway_pid" 2>/dev/null || true; }
  env $(gateway_env $STUB) valgrind --tool=dhat --dhat-out-file="$work/dhat.out" target/heap/release/lazygate serve >>"$work/gateway.log" 2>&1 &
  gateway_pid=$!
  url=$(url_of lazygate health)
  for _ in $(seq 1 600); do curl -sf -H "$AUTH" "$url" >/dev/null && break; sleep 0.1; done
  read -r _ held_n < <(hold "$url" 2000 --header "$AUTH")
  # DHAT writes its file as the gateway exits.
  kill "$gateway_pid"; wait "$gateway_pid" 2>/dev/null || true; gateway_pid=""
  mkdir -p target && /usr/bin/python3 bench/heap.py "$work/dhat.out" "$held_n" | tee target/bench-heap.txt
  start_gateway $STUB target/release/lazygate serve
fi

echo "10 000 registered owners"
if wanted owners; then
for r in $(seq 1 "$REPEATS"); do
  for owners in 1 10000; do
    start_gateway $STUB $LOADGEN many-owners --owners $owners --owner $OWNER
    curl -sf -H "$AUTH" "http://127.0.0.1:$GW_PORT/rpc/$OWNER/health" >/dev/null
    rss=$(rss_kib "$gateway_pid")
    run_wrk owners "lazygate" "$owners" "$(url_of lazygate health)" -H "$AUTH"
    sed -i "\$s/}\$/,\"rss_kib\":$rss}/" "$results"
  done
done
fi

# --- 3. cold start: first response for a new owner -----------------------------------------
echo "cold starts"
seed() { # owners... : the seed's ensure_browser_runtime for each owner at once, in a container
  # on the runtime network (it reaches runtimes by name) with the host's docker CLI.
  printf '%s\n' "$@" >> "$seed_owners_file"
  docker run --rm --network $NET --label lazygate.bench=1 --entrypoint python3 \
    -v /var/run/docker.sock:/var/run/docker.sock -v "$(command -v docker)":/usr/bin/docker:ro \
    -v "$PWD/bench/seed":/seed:ro -e BROWSER_USE_ISOLATION_MODE=docker-per-principal \
    -e BROWSER_RUNTIME_IMAGE=${BENCH_SEED_IMAGE:-$REF} -e BROWSER_RUNTIME_NETWORK=$NET -e BROWSER_VIEW_BASE_URL=http://localhost \
    -e BROWSER_RUNTIME_STATE_DIR=/tmp/seed-state \
    $REF /seed/time_ensure.py "$@"
}
if wanted cold; then
for image in $STUB $REF; do
  start_gateway_container $image
  for r in $(seq 1 "$REPEATS"); do
    # The same container the gateway creates: on the runtime network, a profile volume at
    # /data, 2 GiB of shared memory.
    volume=lazygate-bench-cold-$r-$RANDOM
    out=$($LOADGEN ready --network $NET -- --label lazygate.bench=1 --shm-size 2g -v "$volume:/data" $image)
    direct_ms=$(echo "$out" | python3 -c 'import json,sys;print(json.load(sys.stdin)["ready_ms"])')
    docker rm -f -v "$(echo "$out" | python3 -c 'import json,sys;print(json.load(sys.stdin)["container"])')" >/dev/null
    docker volume rm -f "$volume" >/dev/null
    owner="cold-$r-$RANDOM$RANDOM"
    gw_ms=$(curl -s -o /dev/null -w '%{time_total}' -H "$AUTH" "http://127.0.0.1:$GW_PORT/rpc/$owner/health" | awk '{printf "%.1f", $1*1000}')
    # Each start with no other runtime up: a browser still starting (or idling) beside it
    # takes CPU from the next one on these 2 cores.
    remove_bench_runtimes
    seed_ms=$(BENCH_SEED_IMAGE=$image seed "seed-cold-$r-$RANDOM$RANDOM" | python3 -c 'import json,sys;print(json.load(sys.stdin)["wall_ms"])')
    remove_seed_runtimes
    record "{\"kind\":\"cold\",\"image\":\"$image\",\"direct_ms\":$direct_ms,\"gateway_ms\":$gw_ms,\"seed_ms\":$seed_ms}"
  done
  remove_bench_runtimes
done
fi

# --- 4. concurrent cold starts (reference runtime): wall time to serve N new owners -------
echo "concurrent cold starts"
if wanted concurrent; then
for r in $(seq 1 "$REPEATS"); do
  for n in 1 4 8 16; do
    start=$(date +%s%N)
    seq 1 "$n" | xargs -P "$n" -I{} curl -s -o /dev/null -H "$AUTH" "http://127.0.0.1:$GW_PORT/rpc/conc-$n-$r-{}-$RANDOM/health"
    wall_ms=$(( ($(date +%s%N) - start) / 1000000 ))
    record "{\"kind\":\"concurrent\",\"contender\":\"lazygate\",\"owners\":$n,\"wall_ms\":$wall_ms}"
    remove_bench_runtimes
  done
  # The engine's own limit: the same containers started by hand, all at once.
  for n in 1 8; do
    start=$(date +%s%N)
    pids=()
    for i in $(seq 1 "$n"); do
      $LOADGEN ready --network $NET -- --label lazygate.bench=1 --shm-size 2g $REF > "$work/ready-$i.out" &
      pids+=($!)
    done
    wait "${pids[@]}"
    wall_ms=$(( ($(date +%s%N) - start) / 1000000 ))
    record "{\"kind\":\"concurrent\",\"contender\":\"direct\",\"owners\":$n,\"wall_ms\":$wall_ms}"
    ids=$(docker ps -aq --filter label=lazygate.bench=1 --filter ancestor=$REF)
    [ -n "$ids" ] && docker rm -f -v $ids >/dev/null 2>&1 || true
  done
  for n in 1 4 8; do
    owners=$(seq 1 "$n" | sed "s/^/seed-conc-$n-$r-$RANDOM-/")
    wall_ms=$(seed $owners | python3 -c 'import json,sys;print(json.load(sys.stdin)["wall_ms"])')
    record "{\"kind\":\"concurrent\",\"contender\":\"seed\",\"owners\":$n,\"wall_ms\":$wall_ms}"
    remove_seed_runtimes
  done
done
fi

# Kept for a look afterwards (target/ is not committed); Debian's python3 has matplotlib.
touch "$results"
mkdir -p target && cp "$results" target/bench-results.jsonl
[ "$SECTIONS" = all ] || export REPORT_PARTIAL=1
/usr/bin/python3 bench/report.py "$results" "$CORES" "$DURATION" "$CONNECTIONS" "$REPEATS" "$RATE" "$RATE_POST"
