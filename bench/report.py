"""Turns bench/run.sh's measurements into BENCHMARKS.md and bench/plots/*.png.

Every figure is the median over the repetitions; every comparison is a ratio of medians
measured in the same run (absolute numbers on shared machines drift)."""

import json
import statistics
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

results_path, cores, duration, connections, repeats = sys.argv[1:6]
rows = [json.loads(line) for line in Path(results_path).read_text().splitlines() if line.strip()]
root = Path(__file__).resolve().parent.parent
plots = root / "bench" / "plots"
plots.mkdir(parents=True, exist_ok=True)


def ms(text: str) -> float:
    """wrk latency ('812.00us', '1.23ms', '2.1s') in milliseconds."""
    for unit, factor in (("us", 0.001), ("ms", 1.0), ("s", 1000.0)):
        if text.endswith(unit):
            return float(text[: -len(unit)]) * factor
    return float(text)


med = statistics.median
contenders = ["direct", "lazygate", "nginx"]
warm = {}
for scenario in ("get", "post64k"):
    for c in contenders:
        runs = [r for r in rows if r["kind"] == "warm" and r["scenario"] == scenario and r["contender"] == c]
        if runs:
            warm[(scenario, c)] = {
                "rps": med(r["rps"] for r in runs),
                "p50": med(ms(r["p50"]) for r in runs),
                "p99": med(ms(r["p99"]) for r in runs),
            }

cold = {}
for image in sorted({r["image"] for r in rows if r["kind"] == "cold"}):
    runs = [r for r in rows if r["kind"] == "cold" and r["image"] == image]
    cold[image] = {
        "direct": med(r["direct_ms"] for r in runs),
        "gateway": med(r["gateway_ms"] for r in runs),
    }
concurrent = {}
for n in sorted({r["owners"] for r in rows if r["kind"] == "concurrent"}):
    concurrent[n] = med(r["wall_ms"] for r in rows if r["kind"] == "concurrent" and r["owners"] == n)

out = ["# Benchmarks", ""]
out.append(
    f"Made by `bench/run.sh` on {cores} cores: medians of {repeats} runs, wrk with 2 threads and "
    f"{connections} connections for {duration} per run; proxies and load generator share the machine."
)
out.append("Ratios compare medians of the same run. Regenerate with `bench/run.sh`.")
out += ["", "## Warm HTTP through `/rpc/<owner>/…` (one upstream runtime for all)", ""]
out.append("| request | contender | requests/s | p50 ms | p99 ms | vs nginx (req/s) |")
out.append("|---|---|---|---|---|---|")
for scenario, label in (("get", "small GET"), ("post64k", "64 KiB POST, echoed")):
    for c in contenders:
        if (scenario, c) not in warm:
            continue
        w = warm[(scenario, c)]
        ratio = w["rps"] / warm[(scenario, "nginx")]["rps"] if (scenario, "nginx") in warm else float("nan")
        out.append(f"| {label} | {c} | {w['rps']:.0f} | {w['p50']:.2f} | {w['p99']:.2f} | {ratio:.2f}× |")
out += ["", "## Cold start: first response for a new owner", ""]
out.append("| runtime image | runtime alone (`docker run` → `/health` 200) ms | through lazygate ms | overhead ms |")
out.append("|---|---|---|---|")
for image, c in cold.items():
    out.append(f"| {image} | {c['direct']:.0f} | {c['gateway']:.0f} | {c['gateway'] - c['direct']:+.0f} |")
out += [
    "",
    "The runtime alone is timed from outside: `docker run` by the CLI, then curl every 5 ms (a",
    "process per probe). lazygate creates through the engine API and probes in-process with a",
    "5 → 50 ms backoff, so a negative overhead means it saw readiness sooner than that poll did.",
]
out += ["", "## Concurrent cold starts (reference runtime): wall time to serve N new owners at once", ""]
out.append("| owners | wall ms | vs one |")
out.append("|---|---|---|")
for n, wall in concurrent.items():
    out.append(f"| {n} | {wall:.0f} | {wall / concurrent[min(concurrent)]:.2f}× |")
out += [
    "",
    "Not measured yet: the WebSocket relay, the seed's own `ensure_browser_runtime` (it reaches",
    "runtimes by container name, so it must run inside the runtime network), 10 000 registered",
    "owners, and memory per idle connection and per WebSocket.",
    "",
    "![warm HTTP](bench/plots/warm_http.png)",
    "",
    "![cold start](bench/plots/cold_start.png)",
    "",
]
(root / "BENCHMARKS.md").write_text("\n".join(out))

fig, axes = plt.subplots(1, 2, figsize=(10, 4))
for ax, (scenario, label) in zip(axes, (("get", "small GET"), ("post64k", "64 KiB POST"))):
    names = [c for c in contenders if (scenario, c) in warm]
    ax.bar(names, [warm[(scenario, c)]["rps"] for c in names], color=["#888", "#2a7", "#37c"][: len(names)])
    ax.set_title(f"{label}: requests/s (median)")
fig.tight_layout()
fig.savefig(plots / "warm_http.png", dpi=80)

fig, ax = plt.subplots(figsize=(7, 4))
labels = [image.split(":")[0].replace("browser-use-", "") for image in cold]
x = range(len(labels))
ax.bar([i - 0.2 for i in x], [c["direct"] for c in cold.values()], width=0.4, label="runtime alone", color="#888")
ax.bar([i + 0.2 for i in x], [c["gateway"] for c in cold.values()], width=0.4, label="through lazygate", color="#2a7")
ax.set_xticks(list(x), labels)
ax.set_ylabel("ms to first response (median)")
ax.legend()
fig.tight_layout()
fig.savefig(plots / "cold_start.png", dpi=80)
print("\n".join(out))
