"""The llama.cpp engine on the real SmolLM2 model: streaming, stops, limits, prefix cache, batching, cancel."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from nbllm.engine import FinalStats, LoadSpec, SamplingParams, TokenChunk
from nbllm.engine.llama import LlamaEngine, batching
from nbllm.engine.llama.sampling import plain_greedy
from nbllm.errors import Cancelled, ContextLengthExceeded, EngineError, ModelLoadError
from nbllm.runtime import Runtime

GREEDY = SamplingParams(temperature=0, num_predict=24)


def chatml(text: str) -> str:
    return f"<|im_start|>user\n{text}<|im_end|>\n<|im_start|>assistant\n"


@pytest.fixture(scope="module")
def engine(real_runtime: Runtime) -> Iterator[LlamaEngine]:
    path = real_runtime.store.get("smollm2:135m").model_path
    assert path is not None
    eng = LlamaEngine(LoadSpec(path=path, num_ctx=512, parallel=4))
    yield eng
    eng.close()


def run(engine: LlamaEngine, prompt: str, params: SamplingParams = GREEDY) -> tuple[str, FinalStats, int]:
    chunks = 0
    text = []
    final = None
    for event in engine.generate(engine.tokenize(chatml(prompt)), params):
        if isinstance(event, TokenChunk):
            chunks += 1
            text.append(event.text)
        else:
            final = event
    assert final is not None
    return "".join(text) + final.text, final, chunks


def test_generates_text_with_stats(engine: LlamaEngine) -> None:
    text, final, chunks = run(engine, "What is the capital of France?")
    assert "Paris" in text
    assert final.eval_count == chunks > 0
    assert final.prompt_eval_count > 0 and final.prompt_eval_duration > 0 and final.eval_duration > 0
    assert final.done_reason in ("stop", "length")


def test_num_predict_limits_and_reports_length(engine: LlamaEngine) -> None:
    _, final, chunks = run(engine, "Count from one to one hundred.", SamplingParams(temperature=0, num_predict=5))
    assert final.done_reason == "length" and final.eval_count == chunks == 5


def test_stop_string_ends_generation(engine: LlamaEngine) -> None:
    prompt = "Describe a sunny day at the beach."
    free, _, _ = run(engine, prompt, SamplingParams(temperature=0, num_predict=40))
    words = free.split()
    assert len(words) > 4
    stop = " " + words[3]  # a stop string in the middle of what the model says anyway
    cut, final, _ = run(engine, prompt, SamplingParams(temperature=0, num_predict=40, stop=(stop,)))
    assert final.done_reason == "stop"
    assert cut == free[: free.index(stop)]


def test_greedy_is_deterministic_and_the_prefix_cache_is_used(engine: LlamaEngine) -> None:
    prompt = "Tell me a fact about owls."
    first, stats1, _ = run(engine, prompt)
    second, stats2, _ = run(engine, prompt)
    assert first == second
    assert stats2.cached_tokens >= stats1.prompt_eval_count - 1
    assert stats2.prompt_eval_count == 1


def test_concurrent_requests_all_complete(engine: LlamaEngine) -> None:
    prompts = [f"Tell me about the number {i}." for i in range(6)]
    results: dict[int, tuple[str, FinalStats, int]] = {}

    def worker(i: int) -> None:
        results[i] = run(engine, prompts[i])

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(results) == list(range(6))
    for _text, final, chunks in results.values():
        assert final.eval_count == chunks > 0


def test_greedy_sequences_decoded_together_equal_their_solo_runs(
    engine: LlamaEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """All plain greedy: one argmax call over the step's rows picks every sequence's token (in batch order)."""
    prompts = ["Name a red fruit.", "What do bees make?", "Say hello in French.", "Why is snow white?"]
    params = SamplingParams(temperature=0, num_predict=32)
    alone = [run(engine, p, params)[0] for p in prompts]
    batched_rows: list[int] = []
    table = batching.Logits.table

    def counted(self: batching.Logits, n_outputs: int) -> np.ndarray[Any, Any]:
        batched_rows.append(n_outputs)
        return table(self, n_outputs)

    monkeypatch.setattr(batching.Logits, "table", counted)
    together: dict[int, str] = {}
    threads = [
        threading.Thread(target=lambda i=i: together.__setitem__(i, run(engine, prompts[i], params)[0]))
        for i in range(len(prompts))
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert [together[i] for i in range(len(prompts))] == alone
    assert max(batched_rows) > 1  # the sequences really shared steps


def test_cancel_frees_the_slot(engine: LlamaEngine) -> None:
    cancel = threading.Event()
    stream = engine.generate(
        engine.tokenize(chatml("Write a long story.")), SamplingParams(temperature=0), cancel=cancel
    )
    assert isinstance(next(stream), TokenChunk)
    cancel.set()
    with pytest.raises(Cancelled):
        for _ in stream:
            pass
    assert engine.load_state() == (0, 0)
    assert run(engine, "Hi")[1].eval_count > 0


def test_prompt_longer_than_context_is_refused(engine: LlamaEngine) -> None:
    with pytest.raises(ContextLengthExceeded):
        engine.generate(list(range(100, 700)), GREEDY)


def test_corrupt_file_is_a_clear_load_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF" + b"\x03\x00\x00\x00" + b"\xff" * 64)
    with pytest.raises(ModelLoadError, match="unable to load model"):
        LlamaEngine(LoadSpec(path=bad, num_ctx=128))


def test_penalties_and_sampling_options_work(engine: LlamaEngine) -> None:
    params = SamplingParams(
        temperature=0.7,
        top_k=20,
        top_p=0.8,
        min_p=0.05,
        typical_p=0.9,
        seed=7,
        num_predict=30,
        repeat_penalty=1.3,
        presence_penalty=0.5,
        frequency_penalty=0.5,
        repeat_last_n=32,
    )
    first, stats, chunks = run(engine, "List some animals.", params)
    assert stats.eval_count == chunks > 0
    assert run(engine, "List some animals.", params)[0] == first  # a fixed seed repeats itself


def test_a_bad_grammar_fails_only_its_request(engine: LlamaEngine) -> None:
    with pytest.raises(EngineError, match="grammar"):
        run(engine, "Hi", SamplingParams(temperature=0, num_predict=4, grammar="root ::= ("))
    assert run(engine, "Hi")[1].eval_count > 0  # the decode thread is still serving


def test_a_stalled_load_times_out(real_runtime: Runtime) -> None:
    path = real_runtime.store.get("smollm2:135m").model_path
    assert path is not None
    with pytest.raises(ModelLoadError, match="timed out waiting for the model to load"):
        LlamaEngine(LoadSpec(path=path, num_ctx=256, load_timeout=0.0))


def test_default_threads_respects_a_cgroup_cpu_quota(tmp_path: Path) -> None:
    """A quota of 1.5 CPUs gives at most 2 threads; 'max' (no quota) or no file leaves the core count."""
    from nbllm.engine.llama.native import default_threads

    cores = default_threads(tmp_path / "absent")
    quota = tmp_path / "cpu.max"
    quota.write_text("150000 100000\n")
    assert default_threads(quota) == min(cores, 2)
    quota.write_text("50000 100000\n")
    assert default_threads(quota) == 1
    quota.write_text("max 100000\n")
    assert default_threads(quota) == cores


@pytest.mark.parametrize("prompt", ["Name three rivers in Europe.", "Write a haiku about the sea."])
def test_plain_greedy_takes_the_argmax_and_matches_llama_cpps_greedy_sampler(
    engine: LlamaEngine, monkeypatch: pytest.MonkeyPatch, prompt: str
) -> None:
    params = SamplingParams(temperature=0, num_predict=48)
    assert plain_greedy(params)
    fast_text, fast, _ = run(engine, prompt, params)
    monkeypatch.setattr(batching, "plain_greedy", lambda p: False)  # every token through the native chain
    chain_text, chained, _ = run(engine, prompt, params)
    assert fast_text == chain_text and fast.tokens == chained.tokens and fast.eval_count == chained.eval_count > 0


def test_only_plain_greedy_skips_the_sampler_chain() -> None:
    assert plain_greedy(SamplingParams(temperature=0, repeat_penalty=1.3, repeat_last_n=0))  # penalties switched off
    assert not plain_greedy(SamplingParams(temperature=0.7))
    assert not plain_greedy(SamplingParams(temperature=0, repeat_penalty=1.3))
    assert not plain_greedy(SamplingParams(temperature=0, presence_penalty=0.5))
    assert not plain_greedy(SamplingParams(temperature=0, grammar='root ::= "yes" | "no"'))
