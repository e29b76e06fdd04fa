"""Where a Swarm scale-up from zero spends its time, on the engine's side alone: scales a
service (argv[1]) from 0 to 1 through the engine's API, as the gateway does (a forced new
task at the version read), and notes when its new task first shows each state (polled every
10 ms); then scales it back to 0. Prints one JSON object per round (ms since the update)."""

import json
import subprocess
import sys
import time
import urllib.parse


def api(method, path, body=None):
    args = ["curl", "-sf", "--unix-socket", "/var/run/docker.sock", "-X", method, f"http://engine/v1.41{path}"]
    if body is not None:
        args += ["-H", "Content-Type: application/json", "-d", json.dumps(body)]
    return json.loads(subprocess.run(args, check=True, capture_output=True).stdout or b"null")


def scale(service, replicas, force=False):
    current = api("GET", f"/services/{service}")
    spec = current["Spec"]
    spec["Mode"]["Replicated"]["Replicas"] = replicas
    if force:
        spec["TaskTemplate"]["ForceUpdate"] = spec["TaskTemplate"].get("ForceUpdate", 0) + 1
    api("POST", f"/services/{service}/update?version={current['Version']['Index']}", spec)


service, rounds = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 3
tasks = "/tasks?filters=" + urllib.parse.quote(json.dumps({"service": [service]}))
for _ in range(rounds):
    scale(service, 0)
    while any(t["Status"]["State"] == "running" for t in api("GET", tasks)):
        time.sleep(0.05)
    before = {t["ID"] for t in api("GET", tasks)}
    started = time.perf_counter()
    scale(service, 1, force=True)
    seen = {}
    while "running" not in seen and time.perf_counter() - started < 30:
        for task in api("GET", tasks):
            state = task["Status"]["State"]
            if task["ID"] not in before and state not in seen:
                seen[state] = round((time.perf_counter() - started) * 1000)
        time.sleep(0.01)
    print(json.dumps(seen))
scale(service, 0)
