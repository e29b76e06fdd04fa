"""Runs the seed's own module (bench/seed/browser_runtime_manager.py) for the tests.

    python3 tests/seed/harness.py ensure|cleanup '{"task_id": ..., "metadata": ..., "thread_id": ...}'

prints what `ensure_browser_runtime` returns (or `null` for `cleanup_browser_runtime`) as JSON.
The seed is configured by its own environment variables (BROWSER_USE_ISOLATION_MODE,
BROWSER_RUNTIME_IMAGE, BROWSER_RUNTIME_NETWORK, BROWSER_RUNTIME_STATE_DIR, ...).

Two shims, both about where the test runs, neither about what the seed does:
- the seed polls `http://<container name>:8787/health`, a name only its own network
  resolves; the tests run on the host, so the name is swapped for the container's address;
- the tests' gateways carry a scope label (LAZYGATE_SCOPE) so that tests running side by
  side never adopt each other's runtimes; HARNESS_SCOPE adds the same label to what the
  seed creates (`docker run`, `docker volume create`).
"""
import json
import os
import subprocess
import sys
from urllib import request

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(here, "..", "..", "bench", "seed"))
import browser_runtime_manager as seed  # noqa: E402

_urlopen = request.urlopen


def _address_of(name):
    out = subprocess.run(
        ["docker", "inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}", name],
        capture_output=True,
        text=True,
    ).stdout.split()
    return out[0] if out else name


def _urlopen_by_address(url, *args, **kwargs):
    host = url.split("//", 1)[1].split(":", 1)[0].split("/", 1)[0]
    if host.startswith("browser-use-browser-"):
        url = url.replace(host, _address_of(host), 1)
    return _urlopen(url, *args, **kwargs)


request.urlopen = _urlopen_by_address

_run_docker = seed._run_docker
scope = os.environ.get("HARNESS_SCOPE", "")


def _run_docker_scoped(args, check=True):
    if scope and args[:1] == ["run"]:
        args = ["run", "--label", f"lazygate.scope={scope}", *args[1:]]
    if scope and args[:2] == ["volume", "create"]:
        args = ["volume", "create", "--label", f"lazygate.scope={scope}", *args[2:]]
    return _run_docker(args, check=check)


seed._run_docker = _run_docker_scoped

command, arguments = sys.argv[1], json.loads(sys.argv[2])
if command == "ensure":
    print(json.dumps(seed.ensure_browser_runtime(**arguments)))
elif command == "cleanup":
    print(json.dumps(seed.cleanup_browser_runtime(**arguments)))
else:
    sys.exit(f"unknown command {command!r}")
