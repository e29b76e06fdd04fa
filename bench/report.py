"""Turns bench/run.sh's measurements into BENCHMARKS.md and bench/plots/*.png.

Every figure is the median over the repetitions; every comparison is a ratio of medians
measured in the same run (absolute numbers on shared machines drift)."""

import json
import os
import statistics
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

results_path, cores, duration, connections, repeats, rate, rate_post = sys.argv[1:8]
rows = [json.loads(line) for line in Path(results_path).read_text().splitlines() if line.strip()]
root = Path(__file__).resolve().parent.parent
plots = root / "bench" / "plots"
plots.mkdir(parents=True, exist_ok=True)
med = statistics.median
CONTENDERS = ["direct", "lazygate", "nginx", "haproxy", "hyper-floor"]
COLORS = {"direct": "#999", "lazygate": "#2a7", "nginx": "#37c", "haproxy": "#a5c", "hyper-floor": "#db3", "seed": "#c63"}


def ms(text: str) -> float:
    """wrk latency ('812.00us', '1.23ms', '2.1s') in milliseconds."""
    for unit, factor in (("us", 0.001), ("ms", 1.0), ("s", 1000.0)):
        if text.endswith(unit):
            return float(text[: -len(unit)]) * factor
    return float(text)


def of(kind, **match):
    return [r for r in rows if r["kind"] == kind and all(r.get(k) == v for k, v in match.items())]


def mark(ok: bool) -> str:
    return "met" if ok else "**missed**"


# --- gather --------------------------------------------------------------------------------
warm = {}
for scenario in ("get", "post64k"):
    for c in CONTENDERS:
        runs = of("warm", scenario=scenario, contender=c)
        if runs:
            warm[(scenario, c)] = {
                "rps": med(r["rps"] for r in runs),
                "p50": med(ms(r["p50"]) for r in runs),
                "p99": med(ms(r["p99"]) for r in runs),
                "cpu": med(r.get("cpu_us", 0) for r in runs),
            }
paced = {}
for scenario in ("get", "post64k"):
    for c in CONTENDERS:
        runs = of("rate", scenario=scenario, contender=c)
        if runs:
            paced[(scenario, c)] = {k: med(r[k] for r in runs) for k in ("rps", "p50_ms", "p99_ms")}
paced_label = {"get": f"GET at {rate}/s", "post64k": f"64 KiB POST at {rate_post}/s"}
ws = {}
for r in of("ws"):
    ws.setdefault((r["mode"], r["result"]["size"], r["contender"]), []).append(r["result"])
ws = {k: {m: med(x[m] for x in v) for m in ("msgs_per_s", "mb_per_s", "rtt_p50_us", "rtt_p99_us")} for k, v in ws.items()}
# Proxy CPU per message relayed (throughput runs of proxies only).
ws_cpu = {}
for r in of("ws", mode="throughput"):
    if "cpu_us" in r and r["contender"] != "direct":
        ws_cpu.setdefault((r["result"]["size"], r["contender"]), []).append(r["cpu_us"])
ws_cpu = {k: med(v) for k, v in ws_cpu.items()}
sizes = sorted({k[1] for k in ws})
memory = of("memory")
mem = {k: med(r[k] for r in memory) for k in memory[0]} if memory else {}
owners = {}
for scenario in ("1", "10000"):
    runs = of("owners", scenario=scenario)
    if runs:
        owners[scenario] = {"rps": med(r["rps"] for r in runs), "rss": med(r["rss_kib"] for r in runs)}
cold = {}
for image in sorted({r["image"] for r in of("cold")}):
    runs = of("cold", image=image)
    seeds = [r["seed_ms"] for r in runs if r["seed_ms"] is not None]
    cold[image] = {
        "direct": med(r["direct_ms"] for r in runs),
        "gateway": med(r["gateway_ms"] for r in runs),
        "seed": med(seeds) if seeds else None,
    }
metric_runs = {state: [r["rps"] for r in of("metrics", scenario=state)] for state in ("on", "off")}
metric_cpu = {state: [r.get("cpu_us", 0) for r in of("metrics", scenario=state)] for state in ("on", "off")}
def wrk_medians(kind, contenders):
    """Medians of a kind of wrk run, by contender, with each run's requests/s."""
    found = {}
    for c in contenders:
        runs = of(kind, contender=c)
        if runs:
            found[c] = {
                "rps": med(r["rps"] for r in runs),
                "p99": med(ms(r["p99"]) for r in runs),
                "cpu": med(r.get("cpu_us", 0) for r in runs),
                "runs": [r["rps"] for r in runs],
            }
    return found


logged = wrk_medians("logged", CONTENDERS)
builds = wrk_medians("build", ("baseline", "this", "hyper-floor"))
instructions = {r["build"]: r["result"] for r in of("instructions")}
profiles = {r["build"]: r["profile"] for r in of("profile")}
concurrent = {}
for r in of("concurrent"):
    concurrent.setdefault((r["contender"], r["owners"]), []).append(r["wall_ms"])
concurrent = {k: med(v) for k, v in concurrent.items()}

# --- targets -------------------------------------------------------------------------------
targets = []
if ("get", "nginx") in warm and ("get", "lazygate") in warm:
    g, n = warm[("get", "lazygate")], warm[("get", "nginx")]
    targets.append(("Warm small GET ≥ 1.0× nginx req/s", f"{g['rps'] / n['rps']:.2f}×", g["rps"] >= n["rps"]))
    targets.append(("Warm small GET p99 ≤ nginx", f"{g['p99']:.2f} vs {n['p99']:.2f} ms", g["p99"] <= n["p99"]))
if ("get", "haproxy") in warm and ("get", "lazygate") in warm:
    g, h = warm[("get", "lazygate")], warm[("get", "haproxy")]
    targets.append(("Warm small GET ≥ 1.0× HAProxy req/s", f"{g['rps'] / h['rps']:.2f}×", g["rps"] >= h["rps"]))
    targets.append(("Warm small GET p99 ≤ HAProxy", f"{g['p99']:.2f} vs {h['p99']:.2f} ms", g["p99"] <= h["p99"]))
    targets.append(("Warm small GET proxy CPU ≤ nginx", f"{g['cpu']:.1f} vs {warm[('get', 'nginx')]['cpu']:.1f} µs" if ("get", "nginx") in warm else "", ("get", "nginx") in warm and g["cpu"] <= warm[("get", "nginx")]["cpu"]))
if ("post64k", "nginx") in warm and ("post64k", "lazygate") in warm:
    g, n = warm[("post64k", "lazygate")], warm[("post64k", "nginx")]
    targets.append(("Warm 64 KiB POST ≥ 1.0× nginx req/s", f"{g['rps'] / n['rps']:.2f}×", g["rps"] >= n["rps"]))
    targets.append(("Warm 64 KiB POST p99 ≤ nginx", f"{g['p99']:.2f} vs {n['p99']:.2f} ms", g["p99"] <= n["p99"]))
for scenario in ("get", "post64k"):
    if (scenario, "lazygate") in paced and (scenario, "nginx") in paced:
        g, n = paced[(scenario, "lazygate")], paced[(scenario, "nginx")]
        targets.append((f"{paced_label[scenario]}: p99 ≤ nginx", f"{g['p99_ms']:.2f} vs {n['p99_ms']:.2f} ms", g["p99_ms"] <= n["p99_ms"]))
for size in sizes:
    g, n = ws.get(("throughput", size, "lazygate")), ws.get(("throughput", size, "nginx"))
    if g and n:
        targets.append(
            (f"WebSocket {size} B frames ≥ 1.0× nginx msgs/s", f"{g['msgs_per_s'] / n['msgs_per_s']:.2f}×", g["msgs_per_s"] >= n["msgs_per_s"])
        )
if sizes and (sizes[0], "lazygate") in ws_cpu and (sizes[0], "nginx") in ws_cpu:
    g, n = ws_cpu[(sizes[0], "lazygate")], ws_cpu[(sizes[0], "nginx")]
    targets.append((f"WebSocket {sizes[0]} B frames proxy CPU ≤ nginx", f"{g:.1f} vs {n:.1f} µs", g <= n))
for size in sizes:
    g, h = ws.get(("throughput", size, "lazygate")), ws.get(("throughput", size, "haproxy"))
    if g and h:
        targets.append(
            (f"WebSocket {size} B frames ≥ 1.0× HAProxy msgs/s", f"{g['msgs_per_s'] / h['msgs_per_s']:.2f}×", g["msgs_per_s"] >= h["msgs_per_s"])
        )
if sizes and ("latency", sizes[0], "lazygate") in ws:
    added = ws[("latency", sizes[0], "lazygate")]["rtt_p50_us"] - ws[("latency", sizes[0], "direct")]["rtt_p50_us"]
    targets.append((f"WebSocket added round trip p50 ({sizes[0]} B) ≤ 100 µs", f"{added:+.0f} µs", added <= 100))
for image, c in cold.items():
    over = c["gateway"] - c["direct"]
    targets.append((f"Cold-start overhead ≤ 50 ms ({image.split(':')[0]})", f"{over:+.0f} ms", over <= 50))
    if c["seed"]:
        targets.append((f"Cold start ≥ 1.5× faster than the seed ({image.split(':')[0]})", f"{c['seed'] / c['gateway']:.2f}×", c["seed"] >= 1.5 * c["gateway"]))
if ("lazygate", 8) in concurrent and ("lazygate", 1) in concurrent:
    ratio = concurrent[("lazygate", 8)] / concurrent[("lazygate", 1)]
    targets.append(("8 concurrent cold starts ≤ 2× one", f"{ratio:.2f}×", ratio <= 2))
if "1" in owners and "10000" in owners:
    cost = 1 - owners["10000"]["rps"] / owners["1"]["rps"]
    targets.append(("10 000 owners cost ≤ 5% warm throughput", f"{cost * 100:+.1f}%", cost <= 0.05))
if metric_runs["on"] and metric_runs["off"]:
    on, off = med(metric_runs["on"]), med(metric_runs["off"])
    # The run's noise: the widest spread between repeats of either state, relative to its median.
    noise = max((max(v) - min(v)) / med(v) for v in metric_runs.values())
    cost = 1 - on / off
    targets.append(
        ("Metrics cost within the run's noise (warm GET req/s)", f"{cost * 100:+.1f}% (noise ±{noise * 100:.1f}%)", abs(cost) <= noise)
    )
if mem:
    targets.append(("RSS idle ≤ 30 MB", f"{mem['idle_kib'] / 1024:.1f} MiB", mem["idle_kib"] <= 30 * 1024))
    per_ws = (mem["ws_kib"] - mem["before_ws_kib"]) / max(mem["ws_n"], 1)
    targets.append(("RSS ≤ 16 KiB per idle WebSocket", f"{per_ws:.1f} KiB", per_ws <= 16))

# --- BENCHMARKS.md -------------------------------------------------------------------------
out = ["# Benchmarks", ""]
out.append(
    f"Made by `bench/run.sh` on {cores} cores: every figure is the median of {repeats} runs, and every "
    "ratio compares medians of the same run. Proxies, load generators and runtimes share the machine. "
    "Regenerate with `bench/run.sh` (`REPEATS=1` for a quick look)."
)
out += ["", "## Targets", "", "| target | measured | |", "|---|---|---|"]
out += [f"| {name} | {value} | {mark(ok)} |" for name, value, ok in targets]

out += ["", "## 1. Warm HTTP through `/rpc/<owner>/…`", ""]
out.append(
    f"One stub runtime behind all of them. Fixed concurrency: wrk, 2 threads, {connections} connections, "
    f"{duration} per run. Fixed rate: oha over 16 connections for 3 s, latency corrected for coordinated omission. "
    "`hyper-floor` (bench/loadgen) is hyper's HTTP/1.1 server and client with nothing else, on worker threads "
    "as lazygate's: the least a proxy on hyper costs, measured in the same run as the peers."
)
out.append(
    "Proxy CPU is the user + system time the proxy's processes used per request during the run "
    "(from /proc): steadier than requests/s when everything shares two cores."
)
out += ["", "| request | contender | requests/s | p50 ms | p99 ms | vs nginx | vs HAProxy | proxy CPU µs/request |", "|---|---|---|---|---|---|---|---|"]
for scenario, label in (("get", "small GET"), ("post64k", "64 KiB POST, echoed")):
    for c in CONTENDERS:
        if (scenario, c) in warm:
            w = warm[(scenario, c)]
            n, h = warm.get((scenario, "nginx")), warm.get((scenario, "haproxy"))
            ratio = f"{w['rps'] / n['rps']:.2f}×" if n else ""
            vs_ha = f"{w['rps'] / h['rps']:.2f}×" if h else ""
            cpu = f"{w['cpu']:.1f}" if c != "direct" else ""
            out.append(f"| {label} | {c} | {w['rps']:.0f} | {w['p50']:.2f} | {w['p99']:.2f} | {ratio} | {vs_ha} | {cpu} |")
for (scenario, c), p in paced.items():
    out.append(f"| {paced_label[scenario]} | {c} | {p['rps']:.0f} | {p['p50_ms']:.2f} | {p['p99_ms']:.2f} | | | |")

if metric_runs["on"] and metric_runs["off"]:
    out += ["", "### The cost of metrics", ""]
    out.append(
        "The same warm GET with per-request metrics on (the default) and off (`LAZYGATE_ADMIN_LISTEN` "
        "empty: nobody could read them, so none are kept), alternating within each repeat."
    )
    out += ["", "| metrics | requests/s (median) | each run | proxy CPU µs/request |", "|---|---|---|---|"]
    for state in ("on", "off"):
        runs = ", ".join(f"{v:.0f}" for v in metric_runs[state])
        out.append(f"| {state} | {med(metric_runs[state]):.0f} | {runs} | {med(metric_cpu[state]):.1f} |")

if logged:
    out += ["", "### Every request logged", ""]
    out.append(
        "The same warm GET when each front writes one access-log line per request to a file: "
        "lazygate's request line (`RUST_LOG=info`), nginx's `access_log`, HAProxy's `option httplog` "
        "(`log stdout`, redirected to a file)."
    )
    out += ["", "| contender | requests/s | p99 ms | vs nginx | vs HAProxy | proxy CPU µs/request |", "|---|---|---|---|---|---|"]
    for c, v in logged.items():
        n, h = logged.get("nginx"), logged.get("haproxy")
        out.append(
            f"| {c} | {v['rps']:.0f} | {v['p99']:.2f} | {v['rps'] / n['rps']:.2f}× | {v['rps'] / h['rps']:.2f}× | {v['cpu']:.1f} |"
            if n and h
            else f"| {c} | {v['rps']:.0f} | {v['p99']:.2f} | | | {v['cpu']:.1f} |"
        )

if builds or profiles or instructions:
    out += ["", "### Where lazygate's time goes", ""]
    out.append(
        "The warm GET again, through this build, (with `BASELINE_BIN`) an earlier one, and `hyper-floor` "
        "(bench/loadgen: the least reverse proxy on hyper and tokio — the same worker model, hyper's "
        "HTTP/1.1 server and client, each client connection pinned to one upstream connection, no routing, "
        "authorisation, header rewriting, log or metrics: what lazygate's own work is measured against), "
        "alternating on the same upstream and load; then, in the first repeat, `perf record -F 1999 -g` on each "
        f"for {duration} of the same load (user and kernel samples; the gateway is slower while sampled), "
        "summed by component with `bench/profile.py`. On this virtual machine perf samples on a timer, so "
        "kernel time shows up at the points where interrupts are enabled again "
        "(`finish_task_switch`, `_raw_spin_unlock_irqrestore`)."
    )
    if builds:
        out += ["", "| build | requests/s | runs | p99 ms | proxy CPU µs/request |", "|---|---|---|---|---|"]
        for label, v in builds.items():
            runs = ", ".join(f"{x:.0f}" for x in v["runs"])
            out.append(f"| {label} | {v['rps']:.0f} | {runs} | {v['p99']:.2f} | {v['cpu']:.1f} |")
    if profiles:
        labels = list(profiles)
        # Sorted by this build's shares, whose heaviest symbols are listed.
        last = "this" if "this" in profiles else labels[-1]
        names = sorted({n for p in profiles.values() for n in p["components"]}, key=lambda n: -profiles[last]["components"].get(n, 0))
        out += ["", "| component | " + " | ".join(f"{label}: share of samples (of CPU µs/request)" for label in labels) + " |", "|---|" + "---|" * len(labels)]
        def cell(label, name):
            share = profiles[label]["components"].get(name, 0)
            cpu = builds.get(label, {}).get("cpu")
            # The share of the build's CPU per request, in µs (from its timed runs).
            return f"{share:.1f}% ({share * cpu / 100:.1f} µs)" if cpu else f"{share:.1f}%"

        for name in names:
            out.append(f"| {name} | " + " | ".join(cell(label, name) for label in labels) + " |")
        out += ["", f"Heaviest symbols ({last}):", "", "| symbol | share |", "|---|---|"]
        out += [f"| `{t['symbol']}` | {t['share']:.1f}% |" for t in profiles[last]["top"]]

if instructions:
    out += ["", "### Instructions per request", ""]
    out.append(
        "Time per request moves by ±15 % between runs here; the instructions a request costs do not. Each "
        "build runs under valgrind's callgrind, counting while "
        f"{of('instructions')[0]['requests']} keep-alive GETs go through "
        "(oha, 8 connections, after 500 to warm up); counts are inclusive (a stage counts what it calls), "
        "from `bench/instructions.py`. Valgrind's CPU has no SHA instructions, so SHA-256 runs in software "
        "there (about 3 400 instructions a hash, two a request: the owner's hash and the API token's) "
        "where this machine's CPU uses SHA-NI. nginx runs as one process (no master, one worker) with "
        "its route and upstream from the rows above. Only user space is counted, for every column: the "
        "kernel's share (most of a request's CPU here, and about the same for each) is not."
    )
    labels = list(instructions)
    names = []
    for v in instructions.values():
        names += [n for n in v["stages"] if n not in names]
    out += ["", "| | " + " | ".join(labels) + " |", "|---|" + "---|" * len(labels)]
    out.append("| **instructions per request** | " + " | ".join(f"**{instructions[l]['per_request']:,}**" for l in labels) + " |")
    for name in names:
        out.append(f"| {name} | " + " | ".join(
            f"{instructions[l]['stages'][name]:,}" if name in instructions[l]["stages"] else "" for l in labels) + " |")

out += ["", "## 2. WebSocket relay through `/view/<hash>/websockify`", ""]
out.append(
    "`loadgen ws-relay` (bench/loadgen, Rust + tokio-tungstenite) sends binary frames that the runtime "
    "echoes: 16 connections for 2 s for throughput (a message each way per round trip), 1 connection for "
    "1 s for the round-trip latency. Proxy CPU is the user + system time the proxy's processes used "
    "during the throughput run per message relayed (two a round trip), from /proc."
)
out += ["", "| frame | contender | messages/s | MB/s | vs nginx | vs HAProxy | RTT p50 µs | RTT p99 µs | added p50 µs | proxy CPU µs/message |", "|---|---|---|---|---|---|---|---|---|---|"]
for size in sizes:
    for c in CONTENDERS:
        t, lat = ws.get(("throughput", size, c)), ws.get(("latency", size, c))
        if not t or not lat:
            continue
        n, h = ws.get(("throughput", size, "nginx")), ws.get(("throughput", size, "haproxy"))
        base = ws.get(("latency", size, "direct"))
        ratio = f"{t['msgs_per_s'] / n['msgs_per_s']:.2f}×" if n else ""
        vs_ha = f"{t['msgs_per_s'] / h['msgs_per_s']:.2f}×" if h else ""
        added = f"{lat['rtt_p50_us'] - base['rtt_p50_us']:+.0f}" if base and c != "direct" else ""
        cpu = f"{ws_cpu[(size, c)]:.1f}" if (size, c) in ws_cpu else ""
        out.append(
            f"| {size} B | {c} | {t['msgs_per_s']:.0f} | {t['mb_per_s']:.1f} | {ratio} | {vs_ha} | {lat['rtt_p50_us']:.0f} | {lat['rtt_p99_us']:.0f} | {added} | {cpu} |"
        )

out += ["", "## 3. Cold start: first response for a new owner", ""]
out.append(
    "All three on the runtime network, as in production. The runtime alone: `loadgen ready` runs "
    "`docker run -d` for the same container the gateway creates (profile volume, 2 GiB shm) and polls "
    "its `/health` every 2 ms. Through lazygate: the gateway container (`LAZYGATE_UPSTREAM=network`), "
    "curl's total time for a new owner's first `GET /rpc/<owner>/health`. The seed: its "
    "`ensure_browser_runtime` plus one `/health` request, run in a container on the runtime network "
    "(it reaches runtimes by name). Each start is measured with no other runtime up. A start through "
    "lazygate also makes the runtime's own network and fences it (its `Server-Timing` names the "
    "phases: `network`, and `fence` beside `ready`), which neither a start by hand nor the seed does."
)
out += ["", "| runtime image | runtime alone ms | lazygate ms | overhead ms | seed ms | seed ÷ lazygate |", "|---|---|---|---|---|---|"]
for image, c in cold.items():
    seed = f"{c['seed']:.0f}" if c["seed"] else "—"
    ratio = f"{c['seed'] / c['gateway']:.2f}×" if c["seed"] else "—"
    out.append(f"| {image} | {c['direct']:.0f} | {c['gateway']:.0f} | {c['gateway'] - c['direct']:+.0f} | {seed} | {ratio} |")

out += ["", "## 4. Concurrent cold starts (reference runtime): wall time to serve N new owners at once", ""]
out.append(
    "`direct` is the engine's own limit: the same containers started by hand with `docker run`, all at "
    "once, each timed to its first `/health` 200."
)
out += ["", "| owners | lazygate ms | vs one | direct (`docker run`) ms | vs one | seed ms | vs one |", "|---|---|---|---|---|---|---|"]
for n in sorted({k[1] for k in concurrent}):
    cells = []
    for contender in ("lazygate", "direct", "seed"):
        v, one = concurrent.get((contender, n)), concurrent.get((contender, 1))
        cells += [f"{v:.0f}" if v else "—", f"{v / one:.2f}×" if v and one else "—"]
    out.append(f"| {n} | " + " | ".join(cells) + " |")

out += ["", "## 5. Scale of state", ""]
if mem:
    per_ka = (mem["keepalive_kib"] - mem["warm_kib"]) / max(mem["keepalive_n"], 1)
    per_ws = (mem["ws_kib"] - mem["before_ws_kib"]) / max(mem["ws_n"], 1)
    out += ["| gateway state | RSS MiB | per connection KiB |", "|---|---|---|"]
    out.append(f"| idle, just started | {mem['idle_kib'] / 1024:.1f} | |")
    out.append(f"| one warm owner | {mem['warm_kib'] / 1024:.1f} | |")
    out.append(f"| {mem['keepalive_n']:.0f} idle keep-alive connections | {mem['keepalive_kib'] / 1024:.1f} | {per_ka:.1f} |")
    out.append(f"| {mem['ws_n']:.0f} open WebSockets | {mem['ws_kib'] / 1024:.1f} | {per_ws:.1f} |")
peers_memory = of("memory_peer")
if peers_memory:
    out += [
        "",
        "Idle keep-alive connections (each warmed by one request) held on each contender and on the "
        "runtime's own server (direct: a plain hyper HTTP/1.1 server, in its container): the resident "
        "memory each connection adds.",
        "",
        "| contender | connections | RSS before MiB | RSS held MiB | per connection KiB |",
        "|---|---|---|---|---|",
    ]
    for contender in ("lazygate", "nginx", "haproxy", "direct"):
        rows = [r for r in peers_memory if r["contender"] == contender]
        if not rows:
            continue
        before, held, n = (med(r[k] for r in rows) for k in ("before_kib", "held_kib", "n"))
        out.append(f"| {contender} | {n:.0f} | {before / 1024:.1f} | {held / 1024:.1f} | {(held - before) / max(n, 1):.1f} |")
if owners:
    out += ["", "| registered owners | small GET requests/s | RSS MiB |", "|---|---|---|"]
    for k, v in owners.items():
        out.append(f"| {int(k):,} | {v['rps']:.0f} | {v['rss'] / 1024:.1f} |")
    out += [
        "",
        "10 000 owners: `loadgen many-owners` runs the gateway (`lazygate::run`, the Docker backend) with "
        "9 999 more runtimes in the engine's listing, all answering at the one real runtime's address; "
        "the gateway adopts them at start like running containers after a restart, so its owner table "
        "holds 10 000 entries while wrk drives one owner. The 1-owner row runs the same program.",
    ]
out += [
    "",
    "![warm HTTP](bench/plots/warm_http.png)",
    "",
    "![WebSocket relay](bench/plots/ws_relay.png)",
    "",
    "![cold starts](bench/plots/cold_start.png)",
    "",
]
if os.environ.get("REPORT_PARTIAL"):
    # Some sections only (bench/run.sh with SECTIONS): the tables on stdout, nothing written.
    print("\n".join(out))
    sys.exit(0)
(root / "BENCHMARKS.md").write_text("\n".join(out))

# --- plots ---------------------------------------------------------------------------------
fig, axes = plt.subplots(1, 2, figsize=(10, 4))
for ax, (scenario, label) in zip(axes, (("get", "small GET"), ("post64k", "64 KiB POST"))):
    names = [c for c in CONTENDERS if (scenario, c) in warm]
    ax.bar(names, [warm[(scenario, c)]["rps"] for c in names], color=[COLORS[c] for c in names])
    ax.set_title(f"{label}: requests/s")
fig.tight_layout()
fig.savefig(plots / "warm_http.png", dpi=80)

if sizes:
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    relayed = [c for c in CONTENDERS if any(("throughput", s, c) in ws for s in sizes)]
    width = 0.8 / len(relayed)
    for i, c in enumerate(relayed):
        xs = [j + (i - (len(relayed) - 1) / 2) * width for j in range(len(sizes))]
        axes[0].bar(xs, [ws.get(("throughput", s, c), {}).get("mb_per_s", 0) for s in sizes], width, label=c, color=COLORS[c])
        axes[1].bar(xs, [ws.get(("latency", s, c), {}).get("rtt_p50_us", 0) for s in sizes], width, label=c, color=COLORS[c])
    for ax, title in zip(axes, ("MB/s, 16 connections", "round trip p50 µs, 1 connection")):
        ax.set_xticks(range(len(sizes)), [f"{s} B" for s in sizes])
        ax.set_title(title)
        ax.legend()
    fig.tight_layout()
    fig.savefig(plots / "ws_relay.png", dpi=80)

fig, axes = plt.subplots(1, 2, figsize=(10, 4))
labels = [image.split(":")[0].replace("browser-use-", "") for image in cold]
for i, (key, name) in enumerate((("direct", "runtime alone"), ("gateway", "lazygate"), ("seed", "seed"))):
    axes[0].bar(
        [j + (i - 1) * 0.27 for j in range(len(labels))],
        [c[key] or 0 for c in cold.values()],
        0.27,
        label=name,
        color=COLORS[{"direct": "direct", "gateway": "lazygate", "seed": "seed"}[key]],
    )
axes[0].set_xticks(range(len(labels)), labels)
axes[0].set_ylabel("ms to first response")
axes[0].set_title("cold start")
axes[0].legend()
for contender in ("lazygate", "direct", "seed"):
    ns = sorted(n for c, n in concurrent if c == contender)
    axes[1].plot(ns, [concurrent[(contender, n)] / 1000 for n in ns], "o-", label=contender, color=COLORS[contender])
axes[1].set_xlabel("new owners at once")
axes[1].set_ylabel("s until all served")
axes[1].set_title("concurrent cold starts (reference runtime)")
axes[1].legend()
fig.tight_layout()
fig.savefig(plots / "cold_start.png", dpi=80)
print("\n".join(out))
