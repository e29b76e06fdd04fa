"""websockify auth plugin: the live view's WebSocket opens only for the gateway.

The gateway sends the runtime's key (LAZYGATE_RUNTIME_KEY, which it gave the runtime) in
X-Lazygate-Runtime-Key on every request, and no Origin (it checked the person's origin
itself). A page in another browser cannot set that header on a WebSocket, nor know the key,
and always sends an Origin, so it cannot open this runtime's screen even if it reaches the
port. Loaded with `websockify --auth-plugin runtime_key_auth.RuntimeKey --auth-source KEY`.
"""

import hmac

from websockify.auth_plugins import AuthenticationError


class RuntimeKey:
    def __init__(self, src=None):
        self.key = (src or "").encode()

    def authenticate(self, headers, target_host, target_port):
        if headers.get("Origin"):
            raise AuthenticationError(response_code=403, response_msg="WebSockets from web pages are refused")
        offered = (headers.get("X-Lazygate-Runtime-Key") or "").encode()
        if not self.key or not hmac.compare_digest(offered, self.key):
            raise AuthenticationError(response_code=403, response_msg="this runtime answers only its gateway")
