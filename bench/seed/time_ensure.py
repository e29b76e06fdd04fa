"""Times the seed's ensure_browser_runtime for the owners given, all at once (one thread
each, as concurrent API runs would call it), up to each runtime's first /health answer.

Runs inside a container on the runtime network, because the seed reaches runtimes by
container name. Prints {"wall_ms": ..., "each_ms": [...]} on one line."""

import json
import sys
import threading
import time
from urllib import request

sys.path.insert(0, "/seed")
import browser_runtime_manager as seed  # noqa: E402

owners = sys.argv[1:]
each = [0.0] * len(owners)
errors = []


def ensure(i: int, owner: str) -> None:
    began = time.monotonic()
    try:
        runtime = seed.ensure_browser_runtime(metadata={"user_id": owner})
        health = runtime["rpc_url"].rsplit("/", 1)[0] + "/health"
        with request.urlopen(health, timeout=5) as answer:
            answer.read()
    except Exception as error:  # reported, and the harness fails on it
        errors.append(f"{owner}: {error}")
    each[i] = (time.monotonic() - began) * 1000


started = time.monotonic()
threads = [threading.Thread(target=ensure, args=(i, o)) for i, o in enumerate(owners)]
for t in threads:
    t.start()
for t in threads:
    t.join()
if errors:
    sys.exit("seed failed: " + "; ".join(errors))
print(json.dumps({"wall_ms": (time.monotonic() - started) * 1000, "each_ms": each}))
