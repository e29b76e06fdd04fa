#!/usr/bin/env bash
# The Swarm backend's benchmarks, side by side in one run, rewriting bench/SWARM.md:
#   cold start, same image, one new owner at a time (SAMPLES each):
#     runtime alone      `docker run` of the image until its /health answers (curl, 10 ms polls)
#     docker backend     a first request through a gateway on the host (published ports)
#     swarm, create      a first request through a gateway replica in a container (new service)
#     swarm, from zero   the next request once that service was scaled to zero (TTL 3 s)
#   warm small GETs (wrk, DURATION, 16 connections) through replica A alone, B alone, both
#   at once; and through one replica whose held runtime's last-use label is rewritten every
#   second (TTL 4 s) against one that writes none during the run (TTL 900 s).
# Makes the engine a single-node swarm if it is not one and leaves it as it was; removes
# what it starts (scope lazygate-bench-swarm). Images are built as the tests build them.
#   bench/swarm.sh            SAMPLES=8 DURATION=10s
#   IMAGE=browser-use-browser-runtime:latest bench/swarm.sh   the reference browser runtime
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/engine.sh
ensure_engine
apt_install wrk curl iproute2
scripts/build-test-images.sh >/dev/null
scripts/build-runtime-image.sh >/dev/null
scripts/build-gateway-image.sh >/dev/null
cargo build --release --quiet -p lazygate
. scripts/swarm.sh

SAMPLES="${SAMPLES:-8}"
DURATION="${DURATION:-10s}"
IMAGE="${IMAGE:-lazygate-stub-runtime:test}"
SCOPE=lazygate-bench-swarm
TOKEN=bench-token-0123456789abcdef
SECRET=bench-view-secret-0123456789abcdef0123
AUTH="Authorization: Bearer $TOKEN"
work=$(mktemp -d)
host_pid=""

cleanup() {
  [ -n "$host_pid" ] && kill "$host_pid" 2>/dev/null && wait "$host_pid" 2>/dev/null
  docker service rm $(docker service ls -q --filter "label=lazygate.scope=$SCOPE" 2>/dev/null) >/dev/null 2>&1 || true
  docker rm -f -v $(docker ps -aq --filter "label=lazygate.scope=$SCOPE") >/dev/null 2>&1 || true
  docker rm -f -v $(docker ps -aq --filter "label=lazygate.bench-swarm=1") >/dev/null 2>&1 || true
  sleep 2
  for n in $(docker network ls -q --filter "label=lazygate.scope=$SCOPE"); do docker network rm "$n" >/dev/null 2>&1 || true; done
  docker volume rm $(docker volume ls -q --filter "label=lazygate.scope=$SCOPE") >/dev/null 2>&1 || true
  swarm_down
  rm -rf "$work"
}
trap cleanup EXIT
swarm_up

# Prints a gateway replica's published address once it answers.
replica() { # name ttl
  docker run -d --name "$1" --label "lazygate.scope=$SCOPE" --sysctl net.ipv4.ip_forward=0 \
    -v /var/run/docker.sock:/var/run/docker.sock -p 127.0.0.1::8080 -p 127.0.0.1::9180 \
    -e LAZYGATE_ADMIN_LISTEN=0.0.0.0:9180 \
    -e LAZYGATE_BACKEND=swarm -e LAZYGATE_SCOPE=$SCOPE -e BROWSER_RUNTIME_IMAGE="$IMAGE" \
    -e BROWSER_RUNTIME_NETWORK=lgbench -e BROWSER_RUNTIME_TTL_SECONDS="$2" \
    -e LAZYGATE_API_TOKENS=$TOKEN -e LAZYGATE_VIEW_SECRET=$SECRET \
    lazygate:latest >/dev/null
  local addr
  addr=$(docker port "$1" 8080/tcp | head -1)
  for _ in $(seq 300); do curl -sf "http://$addr/healthz" >/dev/null && break; sleep 0.1; done
  echo "$addr"
}
seconds() { curl -s -o /dev/null -w '%{time_total}' -H "$AUTH" -X POST -d '{}' "$1"; }
record() { echo "$1 $2" >> "$work/cold"; }

echo "cold starts: $SAMPLES each, image $IMAGE"
for i in $(seq "$SAMPLES"); do
  name="lazygate-bench-alone-$i"
  start=$(date +%s%N)
  docker run -d --name "$name" --label lazygate.bench-swarm=1 -p 127.0.0.1::8787 "$IMAGE" >/dev/null
  port=$(docker port "$name" 8787/tcp | head -1)
  until curl -sf -o /dev/null "http://$port/health"; do sleep 0.01; done
  record alone "$(awk -v a="$start" -v b="$(date +%s%N)" 'BEGIN { print (b - a) / 1e9 }')"
  docker rm -f "$name" >/dev/null
done

state=$(mktemp -d -p "$work")
LAZYGATE_LISTEN=127.0.0.1:18480 LAZYGATE_ADMIN_LISTEN=127.0.0.1:0 LAZYGATE_UPSTREAM=published \
  LAZYGATE_SCOPE=$SCOPE BROWSER_RUNTIME_IMAGE="$IMAGE" BROWSER_RUNTIME_NETWORK=lgbench-docker \
  BROWSER_RUNTIME_STATE_DIR="$state" LAZYGATE_API_TOKENS=$TOKEN LAZYGATE_VIEW_SECRET=$SECRET \
  target/release/lazygate serve 2>"$work/host.log" &
host_pid=$!
for _ in $(seq 300); do curl -sf http://127.0.0.1:18480/healthz >/dev/null && break; sleep 0.1; done
for i in $(seq "$SAMPLES"); do
  record docker "$(seconds "http://127.0.0.1:18480/rpc/bench-docker-$i/run")"
done
kill "$host_pid"; wait "$host_pid" 2>/dev/null || true; host_pid=""

a=$(replica lazygate-bench-a 3)
hashes=()
for i in $(seq "$SAMPLES"); do
  record swarm-create "$(seconds "http://$a/rpc/bench-swarm-$i/run")"
done
for i in $(seq "$SAMPLES"); do
  hash=$(python3 -c "import hashlib,sys; print(hashlib.sha256(sys.argv[1].encode()).hexdigest()[:16])" "bench-swarm-$i")
  svc="browser-use-browser-$hash"
  until [ "$(docker service inspect -f '{{.Spec.Mode.Replicated.Replicas}}' "$svc")" = 0 ] &&
        ! docker service ps "$svc" --format '{{.CurrentState}}' | grep -q '^Running'; do sleep 0.2; done
  record swarm-from-zero "$(seconds "http://$a/rpc/bench-swarm-$i/run")"
done

# The engine's side of a scale-up from zero, state by state (the profile of the gap),
# with no gateway about (A would retire what the probe scales up).
docker rm -f -v lazygate-bench-a >/dev/null
python3 bench/swarm_phases.py "browser-use-browser-$(python3 -c "import hashlib,sys; print(hashlib.sha256(sys.argv[1].encode()).hexdigest()[:16])" bench-swarm-1)" 5 > "$work/phases"

echo "warm: wrk $DURATION through the replicas"
# Replicas sharing runtimes must share the TTL (each refreshes last use every TTL/4): A's
# 3 s went before B and C (900 s) serve, and comes back alone for the label-write row.
b=$(replica lazygate-bench-b 900)
c=$(replica lazygate-bench-c 900)
owner=bench-warm
curl -s -o /dev/null -H "$AUTH" -X POST "http://$b/rpc/$owner/run"
warm() { # label addr...
  local i=0 pids=()
  for addr in "${@:2}"; do
    wrk -t1 -c16 -d"$DURATION" -H "$AUTH" --latency "http://$addr/rpc/$owner/health" > "$work/wrk-$1-$i" &
    pids+=($!); i=$((i + 1))
  done
  wait "${pids[@]}"
  python3 - "$1" "$work"/wrk-"$1"-* >> "$work/warm" <<'PY'
import re, sys
label, files = sys.argv[1], sys.argv[2:]
rps = sum(float(re.search(r"Requests/sec:\s+([\d.]+)", open(f).read()).group(1)) for f in files)
def p99(f):
    m = re.search(r"99%\s+([\d.]+)(us|ms|s)", open(f).read())
    return float(m.group(1)) * {"us": 1e-3, "ms": 1, "s": 1e3}[m.group(2)]
print(label, round(rps), round(max(p99(f) for f in files), 2))
PY
}
hash=$(python3 -c "import hashlib,sys; print(hashlib.sha256(sys.argv[1].encode()).hexdigest()[:16])" "$owner")
# Last-use label writes a replica made: its own count of record_use calls (/metrics).
writes() { # replica container
  curl -s "http://$(docker port "$1" 9180/tcp | head -1)/metrics" |
    awk '/^lazygate_engine_calls_total\{.*operation="record_use"/ { n += $NF } END { print n + 0 }'
}
before=$(writes lazygate-bench-b)
warm "replica-B-TTL-900s" "$b"
writes_b=$(( $(writes lazygate-bench-b) - before ))
warm "replica-C-TTL-900s" "$c"
warm "B-and-C-together" "$b" "$c"
docker rm -f -v lazygate-bench-b lazygate-bench-c >/dev/null
a=$(replica lazygate-bench-a2 3)
curl -s -o /dev/null -H "$AUTH" -X POST "http://$a/rpc/$owner/run"
# While A serves, the runtime it holds has its label rewritten every 0.75 s.
before=$(writes lazygate-bench-a2)
warm "replica-A-TTL-3s" "$a"
writes_a=$(( $(writes lazygate-bench-a2) - before ))

# What one label-only update costs the manager: 50 in a row, each at the version read
# just before (as the gateway writes them), through the engine's API.
docker rm -f -v lazygate-bench-a2 >/dev/null
python3 - "browser-use-browser-$hash" > "$work/writes" <<'PY'
import json, subprocess, sys, time
name = sys.argv[1]
def api(method, path, body=None):
    args = ["curl", "-sf", "--unix-socket", "/var/run/docker.sock", "-X", method, f"http://engine/v1.41{path}"]
    if body is not None:
        args += ["-H", "Content-Type: application/json", "-d", json.dumps(body)]
    return json.loads(subprocess.run(args, check=True, capture_output=True).stdout or b"null")
took = []
for i in range(50):
    started = time.perf_counter()
    service = api("GET", f"/services/{name}")
    spec = service["Spec"]
    spec["Labels"]["lazygate.last_used"] = f"{time.time():.3f}"
    api("POST", f"/services/{name}/update?version={service['Version']['Index']}", spec)
    took.append((time.perf_counter() - started) * 1000)
took.sort()
print(f"{took[len(took) // 2]:.1f} {took[int(len(took) * 0.9)]:.1f}")
PY
python3 - "$work/cold" "$work/warm" "$IMAGE" "$SAMPLES" "$DURATION" "$writes_a" "$writes_b" "$(cat "$work/writes")" "$work/phases" > bench/SWARM.md <<'PY'
import statistics, sys
cold, warm, image, samples, duration, writes_a, writes_b, write_cost, phases = sys.argv[1:10]
import json
rows = {}
for line in open(cold):
    k, v = line.split()
    rows.setdefault(k, []).append(float(v) * 1000)
def q(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p * (len(xs) - 1))))]
print("# Swarm backend benchmarks\n")
print(f"Made by `bench/swarm.sh` (image `{image}`, {samples} samples per row, warm loads {duration} each), one run on this machine (2 cores), single-node swarm, all contenders one after the other in the same run.\n")
print("## Cold start: a new owner's first answer\n")
print("| row | p50 ms | p90 ms | max ms |\n|---|---|---|---|")
names = {"alone": "runtime alone (docker run → /health)", "docker": "Docker backend, first request", "swarm-create": "Swarm, first request (service created)", "swarm-from-zero": "Swarm, request after scale-to-zero (scale-up)"}
for k in ["alone", "docker", "swarm-create", "swarm-from-zero"]:
    xs = rows.get(k, [])
    if xs:
        print(f"| {names[k]} | {q(xs, .5):.0f} | {q(xs, .9):.0f} | {max(xs):.0f} |")
d, z = rows.get("docker"), rows.get("swarm-from-zero")
if d and z:
    print(f"\nScale-up from zero / Docker backend cold start (p50): {statistics.median(z) / statistics.median(d):.2f}× (goal ≤ 1.5×).")
rounds = [json.loads(line) for line in open(phases) if line.strip()]
if rounds:
    states = [s for s in ["pending", "assigned", "accepted", "preparing", "ready", "starting", "running"] if any(s in r for r in rounds)]
    print("\n### Where a scale-up from zero goes: the engine alone (`bench/swarm_phases.py`)\n")
    print("The service is scaled 0 → 1 through the API as the gateway does it; ms after the update when its new task first shows each state (polled every 10 ms):\n")
    print("| state | " + " | ".join(states) + " |\n|---|" + "---|" * len(states))
    for i, r in enumerate(rounds, 1):
        print(f"| round {i} | " + " | ".join(str(r.get(s, "")) for s in states) + " |")
    print("\nThe gateway's own part of a scale-up is the rest of the row above: the update, noticing the running task and the runtime's readiness.")
print("\n## Warm small GETs through gateway replicas (wrk, 16 connections per replica)\n")
print("| through | requests/s | p99 ms |\n|---|---|---|")
for line in open(warm):
    label, rps, p99 = line.split()
    print(f"| {label} | {rps} | {p99} |")
print(f"\nLast-use label writes during the {duration} loads (each replica's own count of them on /metrics): {writes_a} by replica A (TTL 3 s: one per 0.75 s while used), {writes_b} by replica B (TTL 900 s: one per 225 s).")
p50, p90 = (float(x) for x in write_cost.split())
print(f"\n## The engine's side of a label write\n\nOne label-only update (inspect + update at its version, through the engine's API, as the gateway does it): p50 {p50:.1f} ms, p90 {p90:.1f} ms over 50 in a row on this single-node swarm. A busy runtime is written once per TTL/4: with the default 900 s TTL, 10 000 runtimes all in use make about {10000 / 225:.0f} writes/s, which at the p50 above is {10000 / 225 * p50 / 1000:.2f} s of the manager's time per second if done one after another.")
PY
cat bench/SWARM.md
