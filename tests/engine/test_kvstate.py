"""Sequence state primitives on the real SmolLM2: a sequence's KV state saved, cleared and restored into another
sequence continues exactly as if it had never left; bytes from another layout are refused, never half-used."""

from __future__ import annotations

import ctypes
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import llama_cpp as L
import numpy as np
import pytest

from nbllm.engine import LoadSpec
from nbllm.engine.llama import held
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


def test_a_copy_of_a_slot_still_in_use_takes_only_free_room_and_goes_first() -> None:
    cache = RamCache(budget=10)
    cache.put([1], b"aaa")  # a slot given away
    cache.put([2], b"bbb", first_out=True)  # slots still in use, copied in case they are given away
    cache.put([3], b"ccc", first_out=True)
    assert cache.room() == 1
    cache.put([4], b"dd", first_out=True)  # no room: not kept, and nothing else dropped for it
    assert not cache.holds([4]) and all(cache.holds([k]) for k in (1, 2, 3))
    assert cache.keep([3]) and not cache.keep([4])  # [3]'s slot is given away: kept as most recently used
    cache.put([5], b"eeee")  # a slot given away: the copies of slots still in use ([2]) go first
    assert [k for k in (1, 2, 3, 5) if cache.holds([k])] == [1, 3, 5]
    cache.put([6], b"ffff")  # then by use: [1], then [3] (given away after [1] was kept)
    assert [k for k in (1, 3, 5, 6) if cache.holds([k])] == [5, 6]
    assert not cache.holds([1, 1]) and not cache.holds([])  # a length no entry has: no tuple made, no match
    small = RamCache(budget=4)
    small.put([1, 2], b"ab")
    small.put([3], b"cdef")  # [1, 2] goes: no count of 2-token entries is left behind
    assert set(small._lengths) == {1} and small.holds([3]) and not small.holds([1, 2])
    cache.put([5, 7], b"g" * 3, first_out=True)  # it would replace [5] (a prefix of it), but does not fit
    assert cache.holds([5]) and not cache.holds([5, 7])


@pytest.mark.parametrize("shared", [0, 1, 63, 64, 65, 127, 128, 129, 500, 1000])
@pytest.mark.parametrize("kinds", [(list, list), (tuple, list), (list, tuple), (tuple, tuple)])
def test_the_shared_prefix_is_the_one_a_token_by_token_walk_finds(shared: int, kinds: tuple[type, type]) -> None:
    rng = random.Random(shared)
    base = [rng.randrange(50_000) for _ in range(shared)]
    for tail_a, tail_b in (([1, 2], [3]), ([], [4]), ([5], []), ([], [])):
        a, b = kinds[0](base + tail_a), kinds[1](base + tail_b)
        walk = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))
        assert common_prefix(a, b) == walk
        assert common_prefix(b, a) == walk


def test_a_state_is_saved_into_a_recycled_buffer_and_restored_from_it_in_place(model: NativeModel, ctx: Any) -> None:
    prompt = model.tokenize(PROMPT, add_special=True, parse_special=True)
    first = decode(ctx, prompt, 0, 0)
    fresh = save_seq(ctx, 0)
    assert isinstance(fresh, memoryview) and not fresh.readonly  # a view of its buffer: no second copy
    spare = bytearray(b"\xff" * (len(fresh) + 100))
    asked: list[int] = []

    def offer(size: int) -> bytearray:
        asked.append(size)
        return spare

    data = save_seq(ctx, 0, offer)
    assert asked == [len(fresh)] and isinstance(data, memoryview) and data.obj is spare
    assert bytes(data) == bytes(fresh)  # the recycled buffer's old contents are gone
    expected = continue_greedy(ctx, first, 0, len(prompt))
    assert restore_seq(ctx, 1, data)
    assert continue_greedy(ctx, first, 1, len(prompt)) == expected
    small = bytearray(len(data) - 1)
    again = save_seq(ctx, 1, lambda size: small)  # too small an offer: a new buffer
    assert isinstance(again, memoryview) and again.obj is not small and len(again) > len(data)


def test_ram_cache_hands_dropped_buffers_to_the_next_save() -> None:
    def state(n: int) -> memoryview:
        return memoryview(bytearray(n))[: n - 1]  # a view of a buffer, as save_seq returns

    cache = RamCache(budget=100, ahead=False)
    a, b = state(40), state(40)
    cache.put([1], a)
    cache.put([2], b)
    assert cache.stats().bytes == 80  # an entry counts its whole buffer
    assert cache.spare(30) is None  # nothing dropped yet
    cache.put([3], state(40))  # over budget: [1] goes and its buffer is kept for reuse
    assert cache.best([1]) == (0, None) and cache.stats().bytes == 80
    assert cache.spare(50) is None  # too small
    assert cache.spare(15) is None  # would waste more than the state itself
    assert cache.spare(30) is a.obj
    assert cache.spare(30) is None  # handed out once
    cache.put([2, 5], state(40))  # extends [2]: [2]'s buffer is recycled
    assert cache.spare(40) is b.obj
    for n in range(6):  # the pool keeps a few buffers only
        cache.put([10 + n], state(60))
    assert len(cache._pool) <= RamCache.POOL
    big = state(150)
    cache.put([99], big)  # larger than the whole budget: neither an entry nor a spare buffer
    assert cache.best([99]) == (0, None) and all(b is not big.obj for b in cache._pool)


def test_ram_cache_makes_the_next_buffer_ready_in_the_background() -> None:
    import time

    cache = RamCache(budget=1000)
    try:
        assert cache.spare(100) is None  # nothing ready: this save allocates
        cache.put([1], memoryview(bytearray(100)))  # once kept, a buffer for the next save is made ready
        deadline = time.monotonic() + 5
        while not cache._pool and time.monotonic() < deadline:
            time.sleep(0.01)
        buf = cache.spare(120)
        assert buf is not None and len(buf) == 150  # half as large again as the save before
        cache.put([2], memoryview(buf)[:120])
        cache.put([3], b"x" * 2000)  # beyond the budget: not kept, nothing made ready for it
    finally:
        cache.close()
    assert cache._filler is not None and not cache._filler.is_alive()
    assert [len(b) for b in cache._pool] == [180]  # the one made ready after the 120-byte save


def test_a_slot_is_chosen_by_a_prefix_worth_reusing_then_by_what_it_would_lose() -> None:
    from nbllm.engine.llama.batching import _slot_rank

    template = [1, 2, 3]  # a chat template's first tokens, shared by every conversation
    long_chat, prompt = template + [9] * 100, template + [7] * 50
    assert _slot_rank(long_chat, prompt) < _slot_rank([], prompt)  # the empty slot: nothing to overwrite
    assert _slot_rank(template + [8] * 5, prompt) > _slot_rank(long_chat, prompt)  # of two, the one holding less
    short = list(range(13))
    assert _slot_rank([*short, 5, 6], short) > _slot_rank([], short)  # a short prompt's whole prefix still counts
    assert _slot_rank(prompt[:40] + [0] * 9, prompt) > _slot_rank([], prompt)  # 40 shared tokens win
    fresh = [5] * 60  # a prompt sharing nothing with any slot
    a, b = [6] * 500, [7] * 480
    assert _slot_rank(a, fresh, held=True) > _slot_rank(b, fresh)  # kept in RAM already: giving it away costs no copy
    assert _slot_rank(b, fresh, held=True) > _slot_rank(a, fresh, held=True)  # of two kept, the one holding less
    assert _slot_rank([8] * 200, fresh) > _slot_rank(a, fresh, held=True)  # a copy of 200 costs less than 500 back
    assert _slot_rank([], fresh) > _slot_rank(a, fresh, held=True)  # an empty slot still first
    assert _slot_rank(prompt[:40] + [0] * 9, prompt) > _slot_rank(a, prompt, held=True)  # a prefix worth reusing first


def test_the_cache_bookkeeping_keeps_the_gil_and_does_what_llama_cpps_own_binding_does(
    model: NativeModel, ctx: Any
) -> None:
    """``held``: ``llama_memory_seq_rm``/``_add`` bound through ``ctypes.PyDLL`` (CPython keeps the GIL through
    such a call: no other thread takes it in between, so the decode thread never waits to get it back)."""
    for func in (held.memory_seq_rm, held.memory_seq_add):
        assert func._flags_ & ctypes._FUNCFLAG_PYTHONAPI  # type: ignore[attr-defined]
        assert not L.llama_memory_seq_rm._flags_ & ctypes._FUNCFLAG_PYTHONAPI  # (llama-cpp-python's own lets go)
    prompt = model.tokenize(PROMPT, add_special=True, parse_special=True)
    first = decode(ctx, prompt, 0, 0)
    mem = L.llama_get_memory(ctx)
    assert held.memory_seq_rm(mem, 0, 5, -1) is True
    assert L.llama_memory_seq_pos_max(mem, 0) == 4
    assert decode(ctx, prompt[5:], 0, 5) == first  # the rest evaluated again: the same next token
    held.memory_seq_add(mem, 0, 0, -1, 3)
    assert L.llama_memory_seq_pos_max(mem, 0) == len(prompt) - 1 + 3


def test_fresh_memory_is_faulted_in_without_holding_the_gil() -> None:
    """A RAM-cache buffer's pages are faulted in by the kernel while other threads run Python: the event loop and
    the decode thread are not stopped for as long as that takes (Python's ``mmap`` with ``MAP_POPULATE``, and a
    ``bytearray``, hold the GIL throughout). Its memory reads back as zeros and takes writes."""
    import itertools
    import mmap
    import threading
    import time

    from nbllm.engine.llama.kvstate import fresh_buffer

    ticks: list[float] = []
    stop = threading.Event()

    def tick() -> None:
        while not stop.is_set():
            ticks.append(time.perf_counter())
            time.sleep(0.001)

    thread = threading.Thread(target=tick)
    thread.start()
    try:
        time.sleep(0.05)
        started = time.perf_counter()
        buf = fresh_buffer(512 << 20)
        took = time.perf_counter() - started
        time.sleep(0.02)
    finally:
        stop.set()
        thread.join()
    during = [b - a for a, b in itertools.pairwise(ticks) if started <= b and a <= started + took]
    assert isinstance(buf, mmap.mmap) and len(buf) == 512 << 20
    assert buf[: 1 << 20] == bytes(1 << 20) and buf[-1] == 0
    buf[123] = 7
    assert buf[123] == 7
    assert len(during) >= 3, f"the other thread ran {len(during)} times in {took * 1e3:.0f} ms"
    assert max(during) < took / 2, f"the other thread waited {max(during) * 1e3:.0f} ms of {took * 1e3:.0f}"
