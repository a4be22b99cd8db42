"""The decode loop's batch in ascending sequence ids, and new requests placed next to the running ones.

nbllm gives every slot its own KV stream (llama.cpp's ``kv_unified`` off: one sequence's step attends over its
own cells only). Over such streams llama.cpp computes a batch one run of consecutive sequence ids at a time, in
batch order: the same four one-token sequences took 29 ms a step in the order 0, 1, 2, 3 and 48 ms in the order
3, 2, 1, 0, and slots 0, 2, 4, 6 took 50 ms (docs/batching.md). These tests run the real engine on SmolLM2 and
look at the batches it hands to ``llama_decode``.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from nbllm import service
from nbllm.config import Settings
from nbllm.engine import FinalStats, LoadSpec, SamplingParams, TokenChunk
from nbllm.engine.llama import LlamaEngine, batching
from nbllm.engine.llama.batching import _runs_added
from nbllm.runtime import Runtime
from nbllm.schema import PullRequest
from nbllm.server import BackgroundServer
from tests.support.index_server import IndexServer

TOPICS = ["rivers", "volcanoes", "honey bees", "lighthouses"]


def chatml(text: str) -> str:
    return f"<|im_start|>user\n{text}<|im_end|>\n<|im_start|>assistant\n"


def long_prompt(topic: str) -> str:
    """A prompt well over the 32 tokens that make a slot's prefix worth reusing, starting with its own words."""
    return chatml(
        f"{topic.capitalize()} are the subject. Write four short sentences about {topic} for a children's "
        f"encyclopedia, each one about a different fact, and keep every sentence under fifteen words."
    )


class Recorder:
    """Stands in for the ``llama_cpp`` module in ``batching``: records each decoded batch's sequence ids."""

    def __init__(self, real: Any) -> None:
        self._real = real
        self.batches: list[list[int]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def llama_decode(self, ctx: Any, batch: Any) -> int:
        self.batches.append([batch.seq_id[i][0] for i in range(batch.n_tokens)])
        return int(self._real.llama_decode(ctx, batch))


@pytest.fixture
def engine(smollm2_gguf: Path) -> Iterator[LlamaEngine]:
    eng = LlamaEngine(LoadSpec(path=smollm2_gguf, num_ctx=512, parallel=4))
    yield eng
    eng.close()


@pytest.fixture
def recorder(monkeypatch: pytest.MonkeyPatch) -> Recorder:
    rec = Recorder(batching.L)
    monkeypatch.setattr(batching, "L", rec)
    return rec


def generate(engine: LlamaEngine, prompt: str, params: SamplingParams) -> str:
    text = []
    for event in engine.generate(engine.tokenize(prompt, add_special=False), params):
        text.append(event.text if isinstance(event, TokenChunk | FinalStats) else "")
    return "".join(text)


def runs(seqs: list[int]) -> int:
    """Runs of consecutive ascending sequence ids in batch order (what llama.cpp computes one at a time)."""
    distinct = [s for i, s in enumerate(seqs) if i == 0 or s != seqs[i - 1]]
    return 1 + sum(1 for a, b in itertools.pairwise(distinct) if b != a + 1)


def test_requests_admitted_in_descending_slots_are_decoded_in_one_run_with_their_solo_answers(
    engine: LlamaEngine, recorder: Recorder
) -> None:
    params = SamplingParams(temperature=0, num_predict=64, draft=0)
    prompts = [long_prompt(t) for t in TOPICS]
    solo = []
    slot_of: list[int] = []
    for p in prompts:  # each prompt takes a slot of its own (an empty one, the lowest first)
        recorder.batches.clear()
        solo.append(generate(engine, p, params))
        slot_of.append(recorder.batches[0][0])
    assert sorted(slot_of) == [0, 1, 2, 3]
    recorder.batches.clear()
    together: dict[int, str] = {}

    def one(i: int) -> None:
        together[i] = generate(engine, prompts[i], params)

    order = sorted(range(4), key=lambda i: -slot_of[i])  # the highest slot first: admitted 3, 2, 1, 0
    threads = []
    for i in order:
        threads.append(threading.Thread(target=one, args=(i,)))
        threads[-1].start()
        deadline = time.monotonic() + 30  # the next one only once this one is decoding, back in its own slot
        while not any(slot_of[i] in b for b in recorder.batches) and time.monotonic() < deadline:
            time.sleep(0.005)
    for t in threads:
        t.join(60)
    assert [together[i] for i in range(4)] == solo  # the order of the batch changes no answer
    first_seen: list[int] = []
    for batch in recorder.batches:
        first_seen += [s for s in dict.fromkeys(batch) if s not in first_seen]
    assert first_seen == [3, 2, 1, 0]  # (the case set up: without the ordering, each batch went 3, 2, 1, 0)
    full = [b for b in recorder.batches if len(set(b)) == 4]
    assert len(full) >= 16  # the four shared many steps
    assert all(b == sorted(b) for b in recorder.batches)
    assert all(runs(b) == 1 for b in full)


def test_turns_that_come_back_in_descending_slots_over_http_are_batched_in_one_run(
    tmp_path: Path, package_index: IndexServer, recorder: Recorder
) -> None:
    """The same through ``nbllm serve``'s API (streamed ``/api/generate``, a client thread each), as four
    conversations' next turns reach a server in whatever order."""
    settings = Settings(
        home=tmp_path / "home", models=tmp_path / "models", package_index=(package_index.url,), num_parallel=4
    )
    runtime = Runtime.from_settings(settings)
    for _ in service.pull(runtime, PullRequest(model="smollm2:135m")):
        pass
    server = BackgroundServer(runtime, port=0).start()
    options = {"temperature": 0, "num_predict": 64, "num_ctx": 512, "draft_num_predict": 0}

    def ask(prompt: str) -> str:
        body = {"model": "smollm2:135m", "prompt": prompt, "raw": True, "options": options}
        text = []
        with httpx.stream("POST", server.url + "/api/generate", json=body, timeout=120) as resp:
            assert resp.status_code == 200
            text = [line for line in resp.iter_lines() if line.strip()]
        return "".join(json.loads(line).get("response", "") for line in text)

    try:
        prompts = [long_prompt(t) for t in TOPICS]
        solo, slot_of = [], []
        for p in prompts:
            recorder.batches.clear()
            solo.append(ask(p))
            slot_of.append(recorder.batches[0][0])
        assert sorted(slot_of) == [0, 1, 2, 3]
        recorder.batches.clear()
        together: dict[int, str] = {}
        threads = []
        for i in sorted(range(4), key=lambda i: -slot_of[i]):
            threads.append(threading.Thread(target=lambda i=i: together.__setitem__(i, ask(prompts[i]))))
            threads[-1].start()
            deadline = time.monotonic() + 30
            while not any(slot_of[i] in b for b in recorder.batches) and time.monotonic() < deadline:
                time.sleep(0.005)
        for t in threads:
            t.join(60)
    finally:
        server.stop()
        runtime.close()
    assert [together.get(i) for i in range(4)] == solo
    assert sum(1 for b in recorder.batches if len(set(b)) == 4) >= 16
    assert all(b == sorted(b) for b in recorder.batches)


def test_a_new_prompt_takes_a_free_slot_next_to_the_running_one(engine: LlamaEngine, recorder: Recorder) -> None:
    short = SamplingParams(temperature=0, num_predict=2, draft=0)
    generate(engine, chatml("Hi"), short)  # slot 0: the least to lose
    for topic in TOPICS[:3]:  # slots 1, 2, 3: more
        generate(engine, long_prompt(topic), SamplingParams(temperature=0, num_predict=24, draft=0))
    recorder.batches.clear()
    running = threading.Thread(
        target=generate, args=(engine, long_prompt(TOPICS[1]), SamplingParams(temperature=0, num_predict=160, draft=0))
    )
    running.start()
    deadline = time.monotonic() + 30
    while not any(2 in b for b in recorder.batches) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert any(2 in b for b in recorder.batches)  # TOPICS[1]'s prompt is back in slot 2, generating
    seen = len(recorder.batches)
    generate(engine, chatml("Name three colours of the rainbow, please."), short)
    running.join(60)
    new = {s for b in recorder.batches[seen:] for s in b} - {2}
    assert new in ({1}, {3})  # next to slot 2; slot 0 (holding least) would have made the batch two runs


def test_runs_added_counts_the_runs_a_sequence_makes_or_joins() -> None:
    assert _runs_added(5, set()) == 1
    assert _runs_added(5, {1, 2}) == 1
    assert _runs_added(3, {1, 2}) == 0
    assert _runs_added(0, {1, 2}) == 0
    assert _runs_added(3, {2, 4}) == -1
