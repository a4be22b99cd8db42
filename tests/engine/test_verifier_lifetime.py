"""A sampled request's speculative verifier holds a native sampler chain: it is freed when the request ends."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from nbllm.engine import FinalStats, LoadSpec, SamplingParams
from nbllm.engine.llama import LlamaEngine, batching
from nbllm.engine.llama.speculate import SampledVerifier
from tests.engine.test_speculative import REPEAT

pytestmark = pytest.mark.model


def test_the_verifier_is_closed_when_its_request_ends(smollm2_gguf: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Not at the slot's next admission, nor by the garbage collector: when the request is released."""
    made: list[SampledVerifier] = []
    closed: list[SampledVerifier] = []

    class Recorded(SampledVerifier):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            made.append(self)

        def close(self) -> None:
            if self not in closed:
                closed.append(self)
            super().close()

    monkeypatch.setattr(batching, "SampledVerifier", Recorded)
    engine = LlamaEngine(LoadSpec(path=smollm2_gguf, num_ctx=1024, parallel=1))
    try:
        prompt = "<|im_start|>user\n" + REPEAT + "<|im_end|>\n<|im_start|>assistant\n"
        params = SamplingParams(temperature=0.8, top_k=40, top_p=0.95, seed=7, num_predict=24, draft=6)
        events = list(engine.generate(engine.tokenize(prompt), params))
        assert isinstance(events[-1], FinalStats) and events[-1].draft_count > 0, events[-1]
        assert len(made) == 1, made
        deadline = time.monotonic() + 5  # the decode thread releases the slot just after the last event
        while not closed and time.monotonic() < deadline:
            time.sleep(0.01)
        assert closed == made  # held by no slot while the engine stays loaded and idle
    finally:
        engine.close()
