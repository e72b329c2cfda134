"""A reverse proxy with HTTP basic authentication in front of a Ray dashboard, for tests.

What a shared cluster often puts in front of the Jobs API: it answers 401 without the right
credentials, and forwards everything else to the dashboard without them (the Ray token travels in
``X-Ray-Authorization``, which Ray reads when a proxy uses ``Authorization``). Loopback only.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

# Headers that describe one connection, not the request: never forwarded.
HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "proxy-authorization",
}


@contextlib.contextmanager
def basic_auth_proxy(upstream: str, user: str, password: str) -> Iterator[tuple[str, list[str]]]:
    """(the proxy's URL, the paths it refused) while the block runs."""
    target = urlsplit(upstream)
    expected = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
    refused: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:  # quiet: the test reads what it needs
            pass

        def _forward(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if self.headers.get("Authorization") != expected:
                refused.append(self.path)
                self.send_response(401)
                self.send_header("WWW-Authenticate", 'Basic realm="ray"')
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            skip = HOP_BY_HOP | {"authorization", "host", "content-length"}
            headers = {k: v for k, v in self.headers.items() if k.lower() not in skip}
            connection = http.client.HTTPConnection(target.hostname, target.port, timeout=120)
            try:
                connection.request(self.command, self.path, body=body or None, headers=headers)
                response = connection.getresponse()
                payload = response.read()
            finally:
                connection.close()
            self.send_response(response.status)
            for key, value in response.getheaders():
                if key.lower() not in HOP_BY_HOP | {"content-length"}:
                    self.send_header(key, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = _forward

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, name="auth-proxy", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", refused
    finally:
        server.shutdown()
        server.server_close()
