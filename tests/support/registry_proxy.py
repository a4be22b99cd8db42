"""An HTTP proxy in front of a registry (an nbllm server's ``/v2/``), for tests of pulls and pushes.

It records every request (method, path, Range header), counts blob downloads in flight, and can
slow responses down, cut a download short, corrupt a blob, or demand a Bearer token obtained from
its own ``/token`` endpoint (Docker token auth).
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlparse

_HOP = {"connection", "keep-alive", "transfer-encoding", "proxy-connection", "upgrade"}


class RegistryProxy:
    """Forward to ``upstream`` (``http://host:port``) from a free loopback port."""

    def __init__(self, upstream: str) -> None:
        parsed = urlparse(upstream)
        self.upstream = (parsed.hostname or "127.0.0.1", parsed.port or 80)
        self.requests: list[tuple[str, str, str | None]] = []
        self.rate: float | None = None
        """Bytes per second for response bodies (None: as fast as possible)."""
        self.cut_after: int | None = None
        """Close the connection after this many body bytes of the next blob GET."""
        self.corrupt = False
        """Flip one byte of every blob sent."""
        self.token: str | None = None
        """When set, every /v2 request needs ``Authorization: Bearer <token>`` (401 + challenge otherwise)."""
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)

    @property
    def host(self) -> str:
        """``127.0.0.1:<port>``: the registry host to put in model names."""
        return f"127.0.0.1:{self.httpd.server_address[1]}"

    def start(self) -> RegistryProxy:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def blob_gets(self) -> list[tuple[str, str, str | None]]:
        """GET requests for blobs, in order."""
        return [r for r in self.requests if r[0] == "GET" and "/blobs/sha256:" in r[1]]

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                self._forward()

            do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_GET

            def _reply(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
                self.send_response(status)
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def _forward(self) -> None:
                proxy.requests.append((self.command, self.path, self.headers.get("Range")))
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                if self.path.startswith("/token"):
                    self._reply(200, json.dumps({"token": proxy.token}).encode(), {"Content-Type": "application/json"})
                    return
                if proxy.token and self.headers.get("Authorization") != f"Bearer {proxy.token}":
                    realm = f"http://{proxy.host}/token"
                    challenge = f'Bearer realm="{realm}",service="test",scope="repository:x:pull"'
                    self._reply(401, b'{"errors":[{"code":"UNAUTHORIZED"}]}', {"WWW-Authenticate": challenge})
                    return
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP | {"host"}}
                conn = http.client.HTTPConnection(*proxy.upstream, timeout=60)
                conn.request(self.command, self.path, body=body, headers=headers)
                resp = conn.getresponse()
                blob = self.command == "GET" and "/blobs/sha256:" in self.path and resp.status in (200, 206)
                self.send_response(resp.status)
                for k, v in resp.getheaders():
                    if k.lower() not in _HOP:
                        self.send_header(k, v)
                self.end_headers()
                if self.command == "HEAD":
                    conn.close()
                    return
                with proxy._lock:
                    proxy.in_flight += blob
                    proxy.max_in_flight = max(proxy.max_in_flight, proxy.in_flight)
                try:
                    self._relay(resp, blob=blob)
                finally:
                    with proxy._lock:
                        proxy.in_flight -= blob
                    conn.close()

            def _relay(self, resp: http.client.HTTPResponse, *, blob: bool) -> None:
                cut = proxy.cut_after if blob else None
                if cut is not None and int(resp.getheader("Content-Length") or 0) > cut:
                    proxy.cut_after = None  # this response is long enough to be cut: cut it
                else:
                    cut = None
                sent = 0
                started = time.monotonic()
                first = True
                while chunk := resp.read(64 << 10):
                    if blob and proxy.corrupt and first:
                        chunk = bytes([chunk[0] ^ 0xFF]) + chunk[1:]
                    first = False
                    if cut is not None and sent + len(chunk) >= cut:
                        self.wfile.write(chunk[: cut - sent])
                        self.wfile.flush()
                        self.close_connection = True
                        self.connection.shutdown(2)
                        return
                    try:
                        self.wfile.write(chunk)
                    except (BrokenPipeError, ConnectionResetError):
                        self.close_connection = True
                        return
                    sent += len(chunk)
                    if proxy.rate:
                        ahead = sent / proxy.rate - (time.monotonic() - started)
                        if ahead > 0:
                            time.sleep(ahead)

        return Handler
