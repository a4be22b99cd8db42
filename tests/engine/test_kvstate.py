"""Sequence state primitives on the real SmolLM2: a sequence's KV state saved, cleared and restored into another
sequence continues exactly as if it had never left; bytes from another layout are refused, never half-used."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import llama_cpp as L
import numpy as np
import pytest

from nbllm.engine import LoadSpec
from nbllm.engine.llama.kvstate import RamCache, common_prefix, restore_seq, save_seq
from nbllm.engine.llama.native import NativeModel, create_context, free_context

pytestmark = pytest.mark.model

PROMPT = "<|im_start|>user\nWrite a short poem about the sea.<|im_end|>\n<|im_start|>assistant\n"


@pytest.fixture(scope="module")
def model(smollm2_gguf: Path) -> Iterator[NativeModel]:
    native = NativeModel(LoadSpec(path=smollm2_gguf, num_ctx=256, parallel=2))
    yield native
    native.free()


@pytest.fixture
def ctx(model: NativeModel) -> Iterator[Any]:
    context = create_context(model, n_ctx=512, n_batch=256, n_seq_max=2, threads=2)
    yield context
    free_context(context)


def decode(ctx: Any, tokens: list[int], seq: int, start: int) -> int:
    """Evaluate ``tokens`` at positions ``start...`` of ``seq``; the greedy next token."""
    batch = L.llama_batch_init(len(tokens), 0, 1)
    try:
        for i, token in enumerate(tokens):
            batch.token[i], batch.pos[i], batch.n_seq_id[i] = token, start + i, 1
            batch.seq_id[i][0] = seq
            batch.logits[i] = i == len(tokens) - 1
        batch.n_tokens = len(tokens)
        assert L.llama_decode(ctx, batch) == 0
    finally:
        L.llama_batch_free(batch)
    n_vocab = L.llama_vocab_n_tokens(L.llama_model_get_vocab(L.llama_get_model(ctx)))
    row = np.ctypeslib.as_array(L.llama_get_logits_ith(ctx, -1), shape=(n_vocab,))
    return int(row.argmax())


def continue_greedy(ctx: Any, first: int, seq: int, start: int, n: int = 12) -> list[int]:
    out, token = [first], first
    for i in range(n):
        token = decode(ctx, [token], seq, start + i)
        out.append(token)
    return out


def test_saved_state_restored_into_another_sequence_continues_identically(model: NativeModel, ctx: Any) -> None:
    prompt = model.tokenize(PROMPT, add_special=True, parse_special=True)
    first = decode(ctx, prompt, 0, 0)
    data = save_seq(ctx, 0)
    assert len(data) > 0
    expected = continue_greedy(ctx, first, 0, len(prompt))

    mem = L.llama_get_memory(ctx)
    L.llama_memory_seq_rm(mem, 0, -1, -1)
    assert L.llama_memory_seq_pos_max(mem, 0) == -1  # really gone
    assert restore_seq(ctx, 1, data)
    assert L.llama_memory_seq_pos_max(mem, 1) == len(prompt) - 1
    assert continue_greedy(ctx, first, 1, len(prompt)) == expected


def test_restored_state_trimmed_to_a_prefix_evaluates_the_rest_identically(model: NativeModel, ctx: Any) -> None:
    prompt = model.tokenize(PROMPT, add_special=True, parse_special=True)
    first = decode(ctx, prompt, 0, 0)
    data = save_seq(ctx, 0)
    expected = continue_greedy(ctx, first, 0, len(prompt), n=4)
    keep = len(prompt) - 5
    assert restore_seq(ctx, 1, data)
    L.llama_memory_seq_rm(L.llama_get_memory(ctx), 1, keep, -1)
    assert decode(ctx, prompt[keep:], 1, keep) == first
    assert continue_greedy(ctx, first, 1, len(prompt), n=4) == expected


def test_foreign_or_damaged_bytes_are_refused(model: NativeModel, ctx: Any) -> None:
    prompt = model.tokenize(PROMPT, add_special=True, parse_special=True)
    decode(ctx, prompt, 0, 0)
    data = save_seq(ctx, 0)
    mem = L.llama_get_memory(ctx)
    assert not restore_seq(ctx, 1, data[: len(data) // 2])  # truncated
    assert L.llama_memory_seq_pos_max(mem, 1) == -1
    assert not restore_seq(ctx, 1, b"")
    # a cache of another type (f32 instead of f16) has other row sizes: refused
    other = create_context(model, n_ctx=512, n_batch=256, n_seq_max=2, threads=2)
    try:
        assert restore_seq(other, 0, data)  # same layout: accepted
        model_f32 = NativeModel(LoadSpec(path=model.spec.path, kv_cache_type="f32", flash_attention=False))
        try:
            ctx32 = create_context(model_f32, n_ctx=512, n_batch=256, n_seq_max=2, threads=2)
            try:
                assert not restore_seq(ctx32, 0, data)
            finally:
                free_context(ctx32)
        finally:
            model_f32.free()
    finally:
        free_context(other)


def test_ram_cache_keeps_the_longest_match_within_its_budget() -> None:
    cache = RamCache(budget=10)
    cache.put([1, 2, 3], b"abc")
    cache.put([1, 2, 3, 4], b"abcd")  # extends the first: it replaces it
    assert cache.stats().entries == 1 and cache.stats().bytes == 4
    cache.put([7, 8], b"xyz")
    assert cache.best([1, 2, 3, 9]) == (3, (1, 2, 3, 4))
    assert cache.take((1, 2, 3, 4)) == b"abcd"
    cache.put([5], b"12345")  # over budget: the least recently used ([7, 8]) goes
    assert cache.best([7, 8]) == (0, None)
    assert cache.stats().hits == 1 and cache.stats().bytes == 9
    cache.put([6], b"x" * 11)  # larger than the budget: not kept
    assert cache.best([6]) == (0, None)
    assert common_prefix([1, 2], [1, 2, 3]) == 2
