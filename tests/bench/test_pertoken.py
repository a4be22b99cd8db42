"""bench.pertoken's connections: one kept-alive connection per server, or a new one per request."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, cast

import pytest

from bench import pertoken, servers
from nbllm.runtime import Runtime
from nbllm.server import BackgroundServer


@pytest.fixture
def side(fake_runtime: Runtime) -> Iterator[servers.Server]:
    """A bench ``Server`` over a live nbllm server on the fake engine (its CPU read from this process)."""
    live = BackgroundServer(fake_runtime, port=0).start()
    this = cast("subprocess.Popen[bytes]", type("ThisProcess", (), {"pid": os.getpid()})())
    yield servers.Server(name="nbllm", kind="ollama", url=live.url, proc=this, started=0.0, model="tiny")
    live.stop()


def _measure(side: servers.Server, connection: str) -> dict[str, Any]:
    return cast("dict[str, Any]", pertoken.measure([side], rounds=2, n=4, ctx=256, connection=connection)["nbllm"])


def test_keep_alive_sends_every_request_over_one_connection(side: servers.Server) -> None:
    row = _measure(side, "keep-alive")
    # the warm-up, then a stream and a TTFT prompt a round, each after a GET: ten responses, one client port
    assert len(row["client_ports"]) == 10
    assert len(set(row["client_ports"])) == 1
    assert row["ttft_reused"]["values"] == [1.0, 1.0]
    assert len(row["ttft_ms"]["values"]) == 2
    assert "ttft_new_ms" not in row


def test_new_measures_the_old_way_and_both_measures_each(side: servers.Server) -> None:
    old = _measure(side, "new")
    assert "client_ports" not in old and "ttft_reused" not in old
    assert len(old["ttft_ms"]["values"]) == 2
    both = _measure(side, "both")
    assert len(both["ttft_ms"]["values"]) == len(both["ttft_new_ms"]["values"]) == 2
    assert len(set(both["client_ports"])) == 1  # the new-connection prompts go around the kept-alive client


def test_ratios_pair_the_new_connection_series_too() -> None:
    def row(ttft: float) -> dict[str, Any]:
        keys = ("cpu_us", "cpu_us_ns", "ttft_ms", "ttft_new_ms")
        return {k: {"values": [ttft, 2 * ttft]} for k in keys}

    out = pertoken.ratios({"a": row(6.0), "b": row(3.0)})["a / b"]
    assert out["ttft_new_ms"]["values"] == [2.0, 2.0]
    with pytest.raises(ValueError, match="connection must be one of"):
        pertoken.measure([], rounds=1, n=1, ctx=1, connection="pooled")


class _ClosesAfterStreams(BaseHTTPRequestHandler):
    """llama-server's way with connections: plain responses keep the connection, a streamed ``/completion``
    closes it after its last event, without saying so (and a moment later, so a request sent at once is lost)."""

    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""

    def do_GET(self) -> None:
        """``/health``."""
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def do_POST(self) -> None:
        """A streamed completion of ``n_predict`` events and a final one with the prefill time."""
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        events: list[dict[str, Any]] = [{"content": "x"}] * (body["n_predict"] - 1)
        events.append({"content": "x", "stop": True, "timings": {"prompt_n": 9, "prompt_ms": 0.5}})
        for event in events:
            data = f"data: {json.dumps(event)}\n\n".encode()
            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()
        time.sleep(0.05)
        self.close_connection = True


def test_a_server_that_closes_streamed_connections_is_measured_over_an_open_one() -> None:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _ClosesAfterStreams)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    this = cast("subprocess.Popen[bytes]", type("ThisProcess", (), {"pid": os.getpid()})())
    url = f"http://127.0.0.1:{httpd.server_address[1]}"
    side = servers.Server(name="llama", kind="llama", url=url, proc=this, started=0.0)
    try:
        row = pertoken.measure([side], rounds=2, n=4, ctx=256, connection="keep-alive")["llama"]
    finally:
        httpd.shutdown()
        httpd.server_close()
    ports = row["client_ports"]
    assert row["ttft_reused"]["values"] == [1.0, 1.0]  # each TTFT prompt went over the GET's connection
    assert all(ports[i] == ports[i + 1] for i in range(0, 10, 2))  # a GET and its request share one
    assert len(set(ports)) == 5  # and every stream closed its connection


def test_without_llama_server_it_needs_another_nbllm_to_compare_with(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as stopped:
        pertoken.main(["--out", str(tmp_path / "x.json")])  # no --llama-bin, --baseline or --thread-handoff
    assert stopped.value.code == 2
    assert "nothing to compare nbllm with" in capsys.readouterr().err
    assert not (tmp_path / "x.json").exists()
