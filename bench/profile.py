"""Sums a `perf report --sort dso,symbol` of the gateway by component, so that a profile reads
as "where the time goes" rather than as a thousand symbols.

    python3 bench/profile.py target/bench-profile.txt          # markdown tables
    python3 bench/profile.py target/bench-profile.txt --json   # for bench/report.py

A symbol goes to the first component whose pattern it matches (kernel samples by their dso);
the ten heaviest symbols are listed after the table."""

import json
import re
import sys
from collections import defaultdict
from pathlib import Path

COMPONENTS = [
    ("kernel: network, syscalls, scheduling", lambda dso, sym: dso.startswith("[kernel")),
    ("lazygate: request pipeline", lambda dso, sym: sym.startswith("lazygate::")),
    ("hyper: HTTP/1 codec and dispatch", lambda dso, sym: re.search(r"hyper::proto|hyper::server|hyper::body", sym)),
    ("hyper: client (conn, dispatch channel)", lambda dso, sym: re.search(r"hyper::client|hyper_util::client|want::", sym)),
    ("hyper-util: server glue (auto, rt)", lambda dso, sym: re.search(r"hyper_util::", sym)),
    ("http: header maps, URIs; httparse", lambda dso, sym: re.search(r"^http::|<http::|httparse", sym)),
    ("tracing", lambda dso, sym: re.search(r"tracing", sym)),
    ("tokio: scheduler, I/O driver, timers, sync", lambda dso, sym: re.search(r"tokio|mio::", sym)),
    ("allocator", lambda dso, sym: re.search(r"mi_|mimalloc|malloc|free|realloc", sym)),
    ("bytes: buffer refcounts", lambda dso, sym: re.search(r"bytes::", sym)),
    ("memory copies", lambda dso, sym: re.search(r"memcpy|memmove|memset|memcmp", sym)),
    ("clock reads", lambda dso, sym: re.search(r"clock_gettime|Timespec", sym)),
    ("libc, vdso (syscall stubs)", lambda dso, sym: "libc" in dso or "vdso" in dso),
    ("futures glue (poll_fn, Map, Pin)", lambda dso, sym: re.search(r"futures_util|core::future|core::pin", sym)),
]

LINE = re.compile(r"^\s*([\d.]+)%\s+(\S+)\s+\[[.k]\]\s+(.*)$")


def summarise(path: str) -> tuple[dict[str, float], list[tuple[float, str, str]]]:
    """Shares by component, and every symbol with its share."""
    totals: dict[str, float] = defaultdict(float)
    symbols: list[tuple[float, str, str]] = []
    for line in Path(path).read_text().splitlines():
        m = LINE.match(line)
        if not m:
            continue
        share, dso, sym = float(m.group(1)), m.group(2), re.sub(r"\s{2,}.*$", "", m.group(3)).strip()
        symbols.append((share, dso, sym))
        name = next((n for n, test in COMPONENTS if test(dso, sym)), "other")
        totals[name] += share
    return dict(totals), symbols


def main(path: str) -> None:
    if len(sys.argv) > 2 and sys.argv[2] == "--json":
        totals, symbols = summarise(path)
        top = [{"symbol": sym[:110], "share": share} for share, _, sym in sorted(symbols, reverse=True)[:10]]
        print(json.dumps({"components": totals, "top": top}))
        return
    totals, symbols = summarise(path)
    print("| component | share of samples |")
    print("|---|---|")
    for name, share in sorted(totals.items(), key=lambda kv: -kv[1]):
        print(f"| {name} | {share:.1f}% |")
    print()
    print("| heaviest symbols | |")
    print("|---|---|")
    for share, dso, sym in sorted(symbols, reverse=True)[:10]:
        print(f"| `{sym[:110]}` | {share:.1f}% |")


if __name__ == "__main__":
    main(sys.argv[1])
