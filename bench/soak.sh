#!/usr/bin/env bash
# The soak: mixed use of one gateway for a bounded time (SOAK_MINUTES, default 20, at most
# 30), then the leak count; writes SOAK.md and bench/plots/soak_*.png.
#   bench/soak.sh                 the full soak
#   SOAK_MINUTES=3 bench/soak.sh  a short one
# The gateway (release build, on the host) runs per task with a 20 s TTL, so owners churn
# through it; the load and the faults are bench/loadgen's `soak` (see its doc). Everything
# runs on loopback against the stub runtimes it starts (scope `soak`), removed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/engine.sh
ensure_engine
apt_install python3-matplotlib curl
scripts/build-test-images.sh >/dev/null
cargo build --release --quiet -p lazygate -p loadgen

MINUTES="${SOAK_MINUTES:-20}"
if [ "$(echo "$MINUTES > 30" | bc 2>/dev/null || echo 0)" = 1 ]; then MINUTES=30; fi
SCOPE=soak
NET=lazygate-soak
TOKEN=soak-api-token-0123456789
SECRET=soak-view-secret-0123456789-0123456789
TTL=20
work=$(mktemp -d)
gateway_pid=""
cleanup() {
  [ -n "$gateway_pid" ] && kill "$gateway_pid" 2>/dev/null || true
  ids=$(docker ps -aq --filter "label=lazygate.scope=$SCOPE")
  [ -n "$ids" ] && docker rm -f -v $ids >/dev/null 2>&1 || true
  vols=$(docker volume ls -q --filter "label=lazygate.scope=$SCOPE")
  [ -n "$vols" ] && docker volume rm -f $vols >/dev/null 2>&1 || true
  nets=$(docker network ls -q --filter "label=lazygate.scope=$SCOPE")
  [ -n "$nets" ] && docker network rm $nets >/dev/null 2>&1 || true
  docker network rm "$NET" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
cleanup_start() { ids=$(docker ps -aq --filter "label=lazygate.scope=$SCOPE"); [ -n "$ids" ] && docker rm -f -v $ids >/dev/null 2>&1 || true; }
cleanup_start
docker network inspect "$NET" >/dev/null 2>&1 || docker network create --label lazygate.bench=1 "$NET" >/dev/null

# The gateway, as an operator runs it beside a tunnel (per task, short TTL, views pinged).
port_file="$work/gateway.log"
env -i PATH="$PATH" HOME="$HOME" \
  LAZYGATE_LISTEN=127.0.0.1:0 LAZYGATE_ADMIN_LISTEN=127.0.0.1:0 LAZYGATE_UPSTREAM=published \
  BROWSER_RUNTIME_IMAGE=lazygate-stub-runtime:test BROWSER_RUNTIME_NETWORK="$NET" \
  BROWSER_USE_ISOLATION_MODE=docker-per-task BROWSER_RUNTIME_TTL_SECONDS="$TTL" \
  BROWSER_RUNTIME_STATE_DIR="$work/state" LAZYGATE_SCOPE="$SCOPE" \
  LAZYGATE_API_TOKENS="$TOKEN" LAZYGATE_VIEW_SECRET="$SECRET" BROWSER_VIEW_BASE_URL=http://soak.invalid \
  LAZYGATE_WS_PING_SECONDS=5 LAZYGATE_WS_PONG_TIMEOUT_SECONDS=5 LAZYGATE_MAX_RUNTIMES=16 \
  target/release/lazygate serve 2>"$port_file" &
gateway_pid=$!
for _ in $(seq 1 100); do grep -q '"listening"\| listening ' "$port_file" && break; sleep 0.1; done
addr=$(grep ' listening ' "$port_file" | sed -n 's/.* addr=\([0-9.:]*\).*/\1/p' | head -1)
admin=$(grep 'admin listener ready' "$port_file" | sed -n 's/.* addr=\([0-9.:]*\).*/\1/p' | head -1)
[ -n "$addr" ] && [ -n "$admin" ] || { echo "the gateway did not start:"; cat "$port_file"; exit 1; }
echo "soaking the gateway at $addr (admin $admin, pid $gateway_pid) for $MINUTES minutes"

summary=$(target/release/loadgen soak --gateway "$addr" --admin "$admin" --pid "$gateway_pid" \
  --minutes "$MINUTES" --token "$TOKEN" --view-secret "$SECRET" --scope "$SCOPE" --out "$work/soak.csv")
echo "$summary"

# Everything left to expire: then nothing of the soak may be left but the gateway.
deadline=$((SECONDS + TTL * 3 + 30))
left() {
  docker ps -aq --filter "label=lazygate.scope=$SCOPE"
  docker volume ls -q --filter "label=lazygate.scope=$SCOPE"
  docker network ls -q --filter "label=lazygate.scope=$SCOPE"
}
while [ $SECONDS -lt $deadline ]; do
  [ -z "$(left)" ] && break
  sleep 1
done
leaked_containers=$(docker ps -aq --filter "label=lazygate.scope=$SCOPE" | wc -l)
leaked_volumes=$(docker volume ls -q --filter "label=lazygate.scope=$SCOPE" | wc -l)
leaked_networks=$(docker network ls -q --filter "label=lazygate.scope=$SCOPE" | wc -l)
kill -TERM "$gateway_pid"
wait "$gateway_pid" && exit_status=0 || exit_status=$?
gateway_pid=""
# The gateway's own account of every failed request, for the report.
grep -E 'request failed|WARN' "$port_file" | tail -50 > "$work/warnings.txt" || true
/usr/bin/python3 bench/soak_report.py "$work/soak.csv" "$MINUTES" "$summary" \
  "$leaked_containers" "$leaked_volumes" "$leaked_networks" "$exit_status" "$work/warnings.txt"
echo "wrote SOAK.md and bench/plots/soak_*.png"
