"""A new owner's first response with and without the warm pool, side by side in one run.

    python3 bench/pool.py [--image IMAGE] [--samples 8] [--pool 2] [--burst 6]
                          [--backends docker,swarm] [--out bench/POOL.md]

Run by bench/pool.sh, which builds what it needs first (and makes the engine a swarm for the
Swarm rows). For each row a gateway is started on its own scope — Docker backend: the release
binary on the host with published ports; Swarm: a replica of the gateway image in a container,
as in production — and `GET /rpc/<new owner>/health` is timed from the request to the last byte:
  - sequential: one new owner at a time; with the pool, each request waits until the pool is
    full again (lazygate_pool_ready == pool), so it measures a claim; without it, a cold start;
  - burst: `burst` new owners at once (more than the pool), with and without the pool.
Everything the rows create carries the scope label and is removed after each row.
"""
import argparse
import concurrent.futures
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

TOKEN = "bench-token-0123456789abcdef"
SECRET = "bench-view-secret-0123456789abcdef0123"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def docker(*args):
    return subprocess.run(["docker", *args], capture_output=True, text=True).stdout


def clean(scope):
    label = f"label=lazygate.scope={scope}"
    services = docker("service", "ls", "-q", "--filter", label).split() if swarm_active() else []
    if services:
        docker("service", "rm", *services)
        time.sleep(3)  # their tasks' containers go, then networks and volumes can
    ids = docker("ps", "-aq", "--filter", label).split()
    if ids:
        docker("rm", "-f", "-v", *ids)
    for n in docker("network", "ls", "-q", "--filter", label).split():
        docker("network", "rm", n)
    vols = docker("volume", "ls", "-q", "--filter", label).split()
    if vols:
        docker("volume", "rm", "-f", *vols)


def swarm_active():
    return docker("info", "-f", "{{.Swarm.LocalNodeState}}").strip() == "active"


class Gateway:
    def __init__(self, scope, image, pool):
        self.port, self.admin = free_port(), free_port()
        self.state = tempfile.mkdtemp()
        env = dict(os.environ)
        for k in ["LAZYGATE_CONFIG", "BROWSER_USE_ISOLATION_MODE", "DOCKER_HOST"]:
            env.pop(k, None)
        env.update({
            "LAZYGATE_LISTEN": f"127.0.0.1:{self.port}",
            "LAZYGATE_ADMIN_LISTEN": f"127.0.0.1:{self.admin}",
            "LAZYGATE_UPSTREAM": "published",
            "LAZYGATE_SCOPE": scope,
            "LAZYGATE_WARM_POOL": str(pool),
            "LAZYGATE_API_TOKENS": TOKEN,
            "LAZYGATE_VIEW_SECRET": SECRET,
            "BROWSER_RUNTIME_IMAGE": image,
            "BROWSER_RUNTIME_NETWORK": "lgbench-pool",
            "BROWSER_RUNTIME_STATE_DIR": self.state,
            "BROWSER_RUNTIME_START_TIMEOUT": "60",
            "RUST_LOG": "info",
        })
        # The gateway's log, kept for the phases of each claim and start (LOGS=dir).
        log_dir = os.environ.get("LOGS") or self.state
        self.log = open(os.path.join(log_dir, f"{scope}.log"), "w")
        self.proc = subprocess.Popen(["target/release/lazygate", "serve"], env=env,
                                     stdout=subprocess.DEVNULL, stderr=self.log)
        self.wait_answering("the gateway did not start")

    def wait_answering(self, failure):
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                self.metrics()
                return
            except OSError:
                time.sleep(0.05)
        raise SystemExit(failure)

    def warm_up(self):
        """One request through the client before any is timed (the first urlopen of a
        process costs ~100 ms of the client's own set-up, not the gateway's)."""
        urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=5).read()

    def metrics(self):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.admin}/metrics", timeout=5) as r:
            return r.read().decode()

    def pool_ready(self):
        for line in self.metrics().splitlines():
            if line.startswith("lazygate_pool_ready "):
                return float(line.split()[1])
        return 0.0

    def wait_pool(self, size, limit=120):
        deadline = time.time() + limit
        while self.pool_ready() < size:
            if time.time() > deadline:
                raise SystemExit(f"the pool did not reach {size}")
            time.sleep(0.02)

    def first_response(self, owner):
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}/rpc/{owner}/health",
            headers={"Authorization": f"Bearer {TOKEN}"})
        started = time.perf_counter()
        with urllib.request.urlopen(request, timeout=120) as r:
            r.read()
            status = r.status
        took = (time.perf_counter() - started) * 1000
        if status != 200:
            raise SystemExit(f"{owner}: HTTP {status}")
        return took

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=30)
        self.log.close()


class SwarmGateway(Gateway):
    """A gateway replica in a container (the Swarm backend dials runtimes on overlays)."""

    def __init__(self, scope, image, pool):
        self.state = tempfile.mkdtemp()
        self.name = f"{scope}-gw"
        self.log_path = os.path.join(os.environ.get("LOGS") or self.state, f"{scope}.log")
        docker("rm", "-f", "-v", self.name)
        out = subprocess.run([
            "docker", "run", "-d", "--name", self.name, "--label", f"lazygate.scope={scope}",
            "--sysctl", "net.ipv4.ip_forward=0", "-v", "/var/run/docker.sock:/var/run/docker.sock",
            "-p", "127.0.0.1::8080", "-p", "127.0.0.1::9180",
            "-e", "LAZYGATE_ADMIN_LISTEN=0.0.0.0:9180", "-e", "LAZYGATE_BACKEND=swarm",
            "-e", f"LAZYGATE_SCOPE={scope}", "-e", f"LAZYGATE_WARM_POOL={pool}",
            "-e", f"LAZYGATE_API_TOKENS={TOKEN}", "-e", f"LAZYGATE_VIEW_SECRET={SECRET}",
            "-e", f"BROWSER_RUNTIME_IMAGE={image}", "-e", "BROWSER_RUNTIME_NETWORK=lgbench-pool",
            "-e", "BROWSER_RUNTIME_START_TIMEOUT=60", "-e", "RUST_LOG=info",
            "lazygate:latest"], capture_output=True, text=True)
        if out.returncode != 0:
            raise SystemExit(f"the replica did not start: {out.stderr}")
        port = lambda p: docker("port", self.name, p).splitlines()[0].strip().rsplit(":", 1)[1]
        self.port, self.admin = int(port("8080/tcp")), int(port("9180/tcp"))
        self.wait_answering("the replica did not answer")

    def stop(self):
        with open(self.log_path, "w") as log:
            subprocess.run(["docker", "logs", self.name], stdout=log, stderr=log)
        docker("rm", "-f", "-v", self.name)


def percentile(values, p):
    values = sorted(values)
    k = (len(values) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


def row(name, values):
    return (f"| {name} | {len(values)} | {percentile(values, 50):.0f} | {percentile(values, 90):.0f} | "
            f"{percentile(values, 99):.0f} | {max(values):.0f} |")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--image", default="browser-use-browser-runtime:latest")
    ap.add_argument("--samples", type=int, default=8)
    ap.add_argument("--pool", type=int, default=2)
    ap.add_argument("--burst", type=int, default=6)
    ap.add_argument("--out", default="bench/POOL.md")
    ap.add_argument("--only", choices=["seq", "burst"], help="one kind of row only")
    ap.add_argument("--backends", default="docker", help="comma-separated: docker, swarm")
    args = ap.parse_args()
    run = f"{int(time.time())}"
    results = []

    for backend in args.backends.split(","):
        make = SwarmGateway if backend == "swarm" else Gateway
        for pool in (0, args.pool) if args.only != "burst" else ():
            scope = f"lgbench-pool-{backend}-seq-{pool}"
            clean(scope)
            gw = make(scope, args.image, pool)
            try:
                gw.warm_up()
                times = []
                for i in range(args.samples):
                    if pool:
                        gw.wait_pool(pool)
                    times.append(gw.first_response(f"bench-{run}-{backend}-seq{pool}-{i}"))
                results.append((f"{backend}: one new owner at a time, pool {pool}", times))
                print(results[-1], file=sys.stderr)
            finally:
                gw.stop()
                clean(scope)

        for pool in (0, args.pool) if args.only != "seq" else ():
            scope = f"lgbench-pool-{backend}-burst-{pool}"
            clean(scope)
            gw = make(scope, args.image, pool)
            try:
                gw.warm_up()
                if pool:
                    gw.wait_pool(pool)
                owners = [f"bench-{run}-{backend}-burst{pool}-{i}" for i in range(args.burst)]
                with concurrent.futures.ThreadPoolExecutor(len(owners)) as ex:
                    times = list(ex.map(gw.first_response, owners))
                results.append((f"{backend}: burst of {args.burst} new owners at once, pool {pool}", times))
                print(results[-1], file=sys.stderr)
            finally:
                gw.stop()
                clean(scope)

    cores = os.cpu_count()
    lines = [
        "# Warm pool: a new owner's first response",
        "",
        f"Made by `bash bench/pool.sh` (image `{args.image}`, pool {args.pool}, "
        f"{args.samples} sequential samples, burst {args.burst}) on {cores} cores, "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}. Docker backend: the gateway on the "
        "host with published ports; Swarm: a gateway replica in a container on a single-node swarm "
        "(the ports it publishes); `GET /rpc/<new owner>/health` timed from the request to the "
        "last byte. With the pool, each sequential request waits until the pool is full again "
        "(`lazygate_pool_ready`), so it shows a claim; without it, a cold start.",
        "",
        "| new owners | n | p50 ms | p90 ms | p99 ms | max ms |",
        "|---|---|---|---|---|---|",
    ]
    lines += [row(name, values) for name, values in results]
    lines.append("")
    lines.append("Raw samples (ms): " + json.dumps({n: [round(v) for v in vs] for n, vs in results}))
    lines.append("")
    with open(args.out, "w") as f:
        f.write("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
