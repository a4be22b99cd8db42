"""bench.pertoken's connections: one kept-alive connection per server, or a new one per request."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
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
    # the warm-up, then a stream and a TTFT prompt a round: five responses, one client port
    assert len(row["client_ports"]) == 5
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
