"""Sums a `perf report --sort dso,symbol` of the gateway by component, so that a profile reads
as "where the time goes" rather than as a thousand symbols.

    python3 bench/profile.py target/bench-profile.txt

A symbol goes to the first component whose pattern it matches (kernel samples by their dso);
the ten heaviest symbols are listed after the table."""

import re
import sys
from collections import defaultdict
from pathlib import Path

COMPONENTS = [
    ("kernel: network and syscalls", lambda dso, sym: dso.startswith("[kernel")),
    ("lazygate: request pipeline", lambda dso, sym: sym.startswith("lazygate::")),
    ("hyper: HTTP/1 codec and dispatch", lambda dso, sym: re.search(r"hyper::proto|hyper::server|hyper::body", sym)),
    ("hyper: client (conn, dispatch channel)", lambda dso, sym: re.search(r"hyper::client|hyper_util::client|want::", sym)),
    ("hyper-util: server glue (auto, rt)", lambda dso, sym: re.search(r"hyper_util::", sym)),
    ("http: header maps, URIs", lambda dso, sym: re.search(r"^http::|<http::", sym)),
    ("tracing", lambda dso, sym: re.search(r"tracing", sym)),
    ("tokio: scheduler, I/O driver, timers", lambda dso, sym: re.search(r"tokio::", sym)),
    ("allocator", lambda dso, sym: re.search(r"mi_|mimalloc|malloc|free|realloc", sym)),
    ("memory copies", lambda dso, sym: re.search(r"memcpy|memmove|memset|memcmp", sym)),
    ("libc", lambda dso, sym: "libc" in dso),
]

LINE = re.compile(r"^\s*([\d.]+)%\s+(\S+)\s+\[[.k]\]\s+(.*)$")


def main(path: str) -> None:
    totals: dict[str, float] = defaultdict(float)
    symbols: list[tuple[float, str, str]] = []
    for line in Path(path).read_text().splitlines():
        m = LINE.match(line)
        if not m:
            continue
        share, dso, sym = float(m.group(1)), m.group(2), m.group(3).strip()
        symbols.append((share, dso, sym))
        name = next((n for n, test in COMPONENTS if test(dso, sym)), "other")
        totals[name] += share
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
