"""Instructions per request from a callgrind profile (`callgrind_annotate --inclusive=yes`),
split by stage, for bench/report.py.

    python3 bench/instructions.py target/bench-callgrind-this.txt 3000

Prints one JSON object: the total per request, and the inclusive count per request of each
stage found in the profile (a stage's count includes what it calls). The profile must list
every function (`--threshold=100`)."""

import json
import re
import sys
from pathlib import Path

# Stage -> the function whose inclusive count it is. Closures are named after the function
# that holds them: lazygate's request pipeline is `Gateway::handle`'s future (it includes
# sending to the upstream connection's task, not that task's own work).
STAGES = [
    ("server connection task (hyper's server and what it calls)", r"tokio_util::task::task_tracker::TrackedFuture<F> as core::future::future::Future>::poll$|loadgen::floor::work::\{\{closure\}\}::\{\{closure\}\}$"),
    ("lazygate's request pipeline (Gateway::handle)", r"lazygate::service::Gateway::handle::\{\{closure\}\}$"),
    ("… of which SHA-256 (software under valgrind)", r"sha2::sha256::compress256$"),
    ("… of which sending to the upstream (Upstream::send)", r"lazygate::proxy::upstream::Upstream::send::\{\{closure\}\}$"),
]

# `1,234 (5.6%)  ???:symbol [object]`, or with a source file (`./path/file.S:symbol`).
LINE = re.compile(r"^\s*([\d,]+)\s+(?:\([^)]*\)\s+)?(?:\?\?\?:|[./][^:\s]*:)?(.+?)\s+\[[^\]]*\]\s*$")


def main(path: str, requests: int) -> None:
    text = Path(path).read_text()
    total = re.search(r"^\s*([\d,]+)\s.*PROGRAM TOTALS", text, re.M)
    counts: dict[str, int] = {}
    for line in text.splitlines():
        m = LINE.match(line)
        if not m:
            continue
        count, symbol = int(m.group(1).replace(",", "")), m.group(2)
        for name, pattern in STAGES:
            if re.search(pattern, symbol) and count > counts.get(name, 0):
                counts[name] = count
    per_request = int(total.group(1).replace(",", "")) // requests if total else 0
    stages = {name: counts[name] // requests for name, _ in STAGES if name in counts}
    server = stages.get(STAGES[0][0])
    if server is not None:
        # The upstream connection's task (hyper's client) and the event loop itself; a task
        # spawned with a bare future is inlined into tokio's and has no symbol of its own.
        stages["rest: upstream connection task (hyper's client), event loop"] = per_request - server
    result = {"per_request": per_request, "stages": stages}
    print(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
