"""RPC server of the reference browser runtime (port BROWSER_USE_RPC_PORT, 8787).

GET  /health  200 when the browser's CDP answers and, with the UI enabled, the VNC server and
              websockify answer too; otherwise 503 with what is missing.
POST /run     runs a small JSON action set in the browser through CDP. The body is one action
              or {"actions": [action, ...]}; the answer is {"ok": true, "results": [...]}, one
              result per action, or {"ok": false, "error": "..."} with status 400/500.

When the runtime was given a key (LAZYGATE_RUNTIME_KEY, set by the gateway), every request but
/health must carry it in X-Lazygate-Runtime-Key (403 otherwise): only the gateway drives the
browser, even if something else reaches this port.

Actions:
  {"action": "open", "url": "https://..."}       navigate and wait for load -> {"url", "title"}
  {"action": "title"}                              -> {"title"}
  {"action": "evaluate", "expression": "1+1"}      -> {"value"} (a promise is awaited)
  {"action": "screenshot"}                         -> {"png_base64"}
"""

from __future__ import annotations

import asyncio
import hmac
import json
import os
import socket
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import websockets

CDP = "http://127.0.0.1:9223"
UI_ENABLED = os.environ.get("BROWSER_ENABLE_UI", "true").strip().lower() in {"1", "true", "yes", "on"}
ACTION_TIMEOUT = 30.0
RUNTIME_KEY = os.environ.get("LAZYGATE_RUNTIME_KEY", "")


def _get(url: str, timeout: float = 1.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.read()


def _tcp_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def health() -> dict[str, bool]:
    checks = {}
    try:
        _get(f"{CDP}/json/version")
        checks["cdp"] = True
    except Exception:
        checks["cdp"] = False
    if UI_ENABLED:
        checks["vnc"] = _tcp_open(5900)
        try:
            _get("http://127.0.0.1:6080/vnc.html")
            checks["websockify"] = True
        except Exception:
            checks["websockify"] = False
    return checks


def _page_ws_url() -> str:
    targets = json.loads(_get(f"{CDP}/json/list", timeout=5))
    for target in targets:
        if target.get("type") == "page":
            return target["webSocketDebuggerUrl"]
    request = urllib.request.Request(f"{CDP}/json/new?about:blank", method="PUT")
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.loads(response.read())["webSocketDebuggerUrl"]


class Page:
    """One CDP session on the browser's first page."""

    def __init__(self, ws):
        self.ws = ws
        self.next_id = 0
        self.events: list[dict] = []

    async def call(self, method: str, **params):
        self.next_id += 1
        call_id = self.next_id
        await self.ws.send(json.dumps({"id": call_id, "method": method, "params": params}))
        while True:
            message = json.loads(await self.ws.recv())
            if message.get("id") == call_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error'].get('message')}")
                return message.get("result", {})
            self.events.append(message)

    async def wait_event(self, method: str):
        for index, event in enumerate(self.events):
            if event.get("method") == method:
                return self.events.pop(index)
        while True:
            message = json.loads(await self.ws.recv())
            if message.get("method") == method:
                return message
            self.events.append(message)

    async def title(self) -> str:
        result = await self.call("Runtime.evaluate", expression="document.title", returnByValue=True)
        return result.get("result", {}).get("value", "")

    async def run(self, action: dict) -> dict:
        kind = action.get("action")
        if kind == "open":
            url = action.get("url")
            if not isinstance(url, str) or not url:
                raise ValueError("open needs a non-empty string 'url'")
            await self.call("Page.enable")
            self.events.clear()
            navigated = await self.call("Page.navigate", url=url)
            if navigated.get("errorText"):
                raise RuntimeError(f"navigation to {url} failed: {navigated['errorText']}")
            await self.wait_event("Page.loadEventFired")
            location = await self.call("Runtime.evaluate", expression="location.href", returnByValue=True)
            return {"url": location.get("result", {}).get("value", url), "title": await self.title()}
        if kind == "title":
            return {"title": await self.title()}
        if kind == "evaluate":
            expression = action.get("expression")
            if not isinstance(expression, str):
                raise ValueError("evaluate needs a string 'expression'")
            result = await self.call(
                "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
            )
            return {"value": result.get("result", {}).get("value")}
        if kind == "screenshot":
            result = await self.call("Page.captureScreenshot", format="png")
            return {"png_base64": result["data"]}
        raise ValueError(f"unknown action {kind!r}; expected open, title, evaluate or screenshot")


async def run_actions(actions: list[dict]) -> list[dict]:
    async with websockets.connect(_page_ws_url(), max_size=64 * 1024 * 1024) as ws:
        page = Page(ws)
        results = []
        for action in actions:
            results.append(await asyncio.wait_for(page.run(action), ACTION_TIMEOUT))
        return results


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _answer(self, status: int, payload: dict) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):  # noqa: N802 (http.server's naming)
        if self.path == "/health":
            checks = health()
            self._answer(200 if all(checks.values()) else 503, {"ok": all(checks.values()), "checks": checks})
        elif self._key_ok():
            self._answer(404, {"ok": False, "error": f"no route for GET {self.path}"})

    def _key_ok(self) -> bool:
        if not RUNTIME_KEY:
            return True
        offered = self.headers.get("X-Lazygate-Runtime-Key", "")
        if hmac.compare_digest(offered.encode(), RUNTIME_KEY.encode()):
            return True
        self._answer(403, {"ok": False, "error": "this runtime answers only its gateway"})
        return False

    def do_POST(self):  # noqa: N802
        if not self._key_ok():
            return
        if self.path != "/run":
            self._answer(404, {"ok": False, "error": f"no route for POST {self.path}"})
            return
        length = int(self.headers.get("Content-Length") or 0)
        try:
            request = json.loads(self.rfile.read(length) or b"{}")
            actions = request.get("actions", [request]) if isinstance(request, dict) else None
            if not isinstance(actions, list) or not all(isinstance(a, dict) for a in actions):
                raise ValueError("expected an action object or {\"actions\": [...]}")
        except ValueError as error:
            self._answer(400, {"ok": False, "error": str(error)})
            return
        try:
            results = asyncio.run(run_actions(actions))
        except ValueError as error:
            self._answer(400, {"ok": False, "error": str(error)})
        except Exception as error:  # the browser failed: report it, keep serving
            self._answer(500, {"ok": False, "error": f"{type(error).__name__}: {error}"})
        else:
            self._answer(200, {"ok": True, "results": results})

    def log_message(self, format, *args):  # noqa: A002 (http.server's signature)
        pass


def main() -> None:
    host = os.environ.get("BROWSER_USE_RPC_HOST", "0.0.0.0")
    port = int(os.environ.get("BROWSER_USE_RPC_PORT", "8787"))
    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    server.serve_forever()


if __name__ == "__main__":
    main()
