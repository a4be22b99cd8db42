"""Bookkeeping of the several-client benches: who goes when, what is primed, which ratios are taken (stand-ins for
the requests here; the measurements themselves run against llama-server, which CI does not build)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, cast

import pytest

from bench import paired_clients, servers, speculative


class Side:
    def __init__(self, name: str, speed: float) -> None:
        self.name, self.speed, self.url, self.model = name, speed, f"http://{name}", "m"


def test_rounds_rotate_the_order_and_prime_each_server_right_before_its_timed_run(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[tuple[str, int, int]] = []

    def concurrent(server: Side, texts: list[str], n: int, *, ctx: int) -> tuple[float, list[Any]]:
        calls.append((server.name, len(texts), n))
        return 1.0 / server.speed, [type("T", (), {"tokens": n})() for _ in texts]

    monkeypatch.setattr(paired_clients, "concurrent", concurrent)
    monkeypatch.setattr(paired_clients, "stream", lambda *a, **k: None)
    sides = cast(list[servers.Server], [Side("new", 3.0), Side("old", 2.0), Side("peer", 1.5)])
    out = paired_clients.compare(sides, k=4, rounds=3, n=128, ctx=2048, cached=True)
    timed = [name for name, _, n in calls if n == 128]
    assert timed == ["new", "old", "peer", "old", "peer", "new", "peer", "new", "old"]
    assert calls[0::2] == [(name, 4, 1) for name in timed]  # each timed run right after its own priming
    assert out["rates"]["new"] == [4 * 128 * 3.0] * 3
    assert out["new / old"]["ratios"] == [1.5] * 3
    assert out["new / peer"]["median"] == 2.0
    calls.clear()
    paired_clients.compare(sides, k=2, rounds=2, n=16, ctx=2048, cached=False)
    assert [n for _, _, n in calls] == [16] * 6  # fresh prompts: nothing sent before the timed runs


def test_checkout_runs_servers_from_another_tree_and_puts_everything_back(tmp_path: Path) -> None:
    here, saved = Path.cwd(), os.environ.get("PYTHONPATH")
    with pytest.raises(RuntimeError), servers.checkout(tmp_path):
        assert os.environ["PYTHONPATH"] == str(tmp_path)
        assert Path.cwd() == tmp_path
        raise RuntimeError("a server that would not start")
    assert Path.cwd() == here
    assert os.environ.get("PYTHONPATH") == saved
    with servers.checkout(None):
        assert Path.cwd() == here


def test_open_ended_rounds_send_their_prompts_once_before_either_side_is_timed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[tuple[int, int, int]] = []

    def aggregate(url: str, texts: list[str], n: int, draft: int, seeds: list[int] | None) -> float:
        calls.append((len(texts), n, draft))
        return 100.0 if draft else 80.0

    monkeypatch.setattr(speculative, "_aggregate", aggregate)
    ours = cast(servers.Server, Side("nbllm", 1.0))
    out = speculative.open_ended(ours, clients=[4], rounds=2, n=64, sampled=False)
    assert calls == [(4, 1, 0), (4, 64, -1), (4, 64, 0), (4, 1, 0), (4, 64, 0), (4, 64, -1)]
    assert out["4"]["ratios"] == [1.25, 1.25]
