"""A Hugging Face Hub look-alike on loopback: the endpoints huggingface_hub calls to list and download.

``GET /api/models/<repo>[/revision/<rev>]`` answers as the Hub does (``sha`` and ``siblings`` with
sizes and LFS sha256 when ``blobs=true``); ``HEAD``/``GET /<repo>/resolve/<rev>/<file>`` sends the
file with ``X-Repo-Commit``, ``ETag``/``X-Linked-Etag``, ``X-Linked-Size`` and HTTP ranges.
Private repositories want ``Authorization: Bearer <token>``. Every request is recorded.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlparse


@dataclass
class HubRepo:
    files: dict[str, Path]
    token: str | None = None
    commit: str = ""
    sha256: dict[str, str] = field(default_factory=dict)


class HubServer:
    """Serve repositories of local files as the Hub would."""

    def __init__(self) -> None:
        self.repos: dict[str, HubRepo] = {}
        self.requests: list[tuple[str, str, str | None]] = []
        self.rate: float | None = None
        """Bytes per second for file downloads (None: as fast as possible)."""
        self.cut_after: int | None = None
        """Close the connection after this many bytes of the next file download."""
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def add_repo(self, repo_id: str, files: dict[str, Path], *, token: str | None = None) -> HubRepo:
        sums = {name: hashlib.sha256(path.read_bytes()).hexdigest() for name, path in files.items()}
        commit = hashlib.sha1(json.dumps(sorted(sums.items())).encode()).hexdigest()
        repo = HubRepo(files=files, token=token, commit=commit, sha256=sums)
        self.repos[repo_id] = repo
        return repo

    def downloads(self, filename: str | None = None) -> list[tuple[str, str, str | None]]:
        """GET requests for files (of one name, if given)."""
        return [
            r for r in self.requests
            if r[0] == "GET" and "/resolve/" in r[1] and (filename is None or r[1].endswith("/" + filename))
        ]  # fmt: skip

    def start(self) -> HubServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
                self.send_response(status)
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def _repo(self, repo_id: str) -> HubRepo | None:
                repo = hub.repos.get(repo_id)
                if repo is None or (repo.token and self.headers.get("Authorization") != f"Bearer {repo.token}"):
                    status = 401 if repo is not None else 404
                    body = json.dumps({"error": "Repository Not Found"}).encode()
                    self._send(status, body, {"X-Error-Code": "RepoNotFound", "Content-Type": "application/json"})
                    return None
                return repo

            def do_GET(self) -> None:
                hub.requests.append((self.command, self.path, self.headers.get("Range")))
                path = unquote(urlparse(self.path).path)
                api = re.fullmatch(r"/api/models/([^/]+/[^/]+)(?:/revision/([^/]+))?", path)
                resolve = re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path)
                if api:
                    self._info(api.group(1), blobs="blobs=true" in self.path)
                elif resolve:
                    self._file(resolve.group(1), resolve.group(3))
                else:
                    self._send(404, b'{"error":"not found"}')

            do_HEAD = do_GET

            def _info(self, repo_id: str, *, blobs: bool) -> None:
                repo = self._repo(repo_id)
                if repo is None:
                    return
                siblings = []
                for name, file in sorted(repo.files.items()):
                    entry: dict[str, object] = {"rfilename": name}
                    if blobs:
                        size = file.stat().st_size
                        entry.update(size=size, blobId=repo.sha256[name][:40])
                        if name.endswith(".gguf"):
                            entry["lfs"] = {"sha256": repo.sha256[name], "size": size, "pointerSize": 134}
                    siblings.append(entry)
                body = {"_id": repo.commit[:24], "id": repo_id, "modelId": repo_id, "sha": repo.commit,
                        "private": bool(repo.token), "siblings": siblings}  # fmt: skip
                self._send(200, json.dumps(body).encode(), {"Content-Type": "application/json"})

            def _file(self, repo_id: str, name: str) -> None:
                repo = self._repo(repo_id)
                if repo is None:
                    return
                file = repo.files.get(name)
                if file is None:
                    self._send(404, b'{"error":"Entry not found"}', {"X-Error-Code": "EntryNotFound"})
                    return
                size = file.stat().st_size
                etag = f'"{repo.sha256[name]}"'
                headers = {"X-Repo-Commit": repo.commit, "ETag": etag, "X-Linked-Etag": etag,
                           "X-Linked-Size": str(size), "Accept-Ranges": "bytes"}  # fmt: skip
                start = 0
                m = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", ""))
                if m and self.command == "GET":
                    start = int(m.group(1))
                    if start >= size:
                        self._send(416, b"", {"Content-Range": f"bytes */{size}"})
                        return
                    self.send_response(206)
                    headers["Content-Range"] = f"bytes {start}-{size - 1}/{size}"
                else:
                    self.send_response(200)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(size - start))
                self.end_headers()
                if self.command == "GET":
                    self._stream(file, start)

            def _stream(self, file: Path, start: int) -> None:
                cut, hub.cut_after = hub.cut_after, None
                sent = 0
                began = time.monotonic()
                with file.open("rb") as fh:
                    fh.seek(start)
                    while chunk := fh.read(64 << 10):
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
                        if hub.rate and (ahead := sent / hub.rate - (time.monotonic() - began)) > 0:
                            time.sleep(ahead)

        return Handler
