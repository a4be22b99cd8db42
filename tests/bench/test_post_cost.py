"""bench.post_cost: the decode thread's hand-off of each event, timed and written where the bench reads it."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from bench import post_cost
from nbllm.engine import FinalStats, SamplingParams, TokenChunk
from nbllm.engine.llama.request import Request


def test_the_totals_are_written_before_each_request_s_last_event(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(Request, "post", Request.post)  # (restored afterwards)
    out = tmp_path / "post"
    assert post_cost.read(out) == (0, 0)  # (nothing yet)
    post_cost.install(out)
    req = Request([1], SamplingParams(), threading.Event())
    for i in range(5):
        req.post(TokenChunk(text=f"t{i}", token=i))
    assert post_cost.read(out) == (0, 0)  # (written at a request's end only)
    stats = FinalStats(done_reason="stop", prompt_eval_count=1, prompt_eval_duration=1, eval_count=5, eval_duration=1)
    req.post(stats)
    ns, count = post_cost.read(out)
    assert count == 5 and ns > 0  # (the five tokens; the last event's own post comes after the write)
    assert [req.out.get_nowait() for _ in range(6)][-1] is stats  # the events still reach the consumer
    out.write_text("garbled")
    assert post_cost.read(out) == (0, 0)
