"""KV snapshots and the RAM prompt cache in the real engine (SmolLM2): a conversation resumed from a snapshot
file, or from RAM after its slot went to another request, continues exactly as if its slot had never been
lost, without evaluating its history again; damaged, truncated or foreign snapshot files are refused and the
prompt is evaluated instead, with the same answer as a fresh engine.

Each comparison is against an engine that evaluated the same tokens in the same steps: llama.cpp's results
depend slightly on how many tokens a batch held, so "the same" means the same sequence of decodes.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from nbllm.engine import FinalStats, LoadSpec, SamplingParams, TokenChunk
from nbllm.engine.llama import LlamaEngine
from nbllm.store.snapshots import SnapshotError, SnapshotStore

pytestmark = pytest.mark.model

GREEDY = SamplingParams(temperature=0, num_predict=24, draft=0)
SYSTEM = "You are a careful assistant. " * 20
TURN1 = f"<|im_start|>system\n{SYSTEM}<|im_end|>\n<|im_start|>user\nName three rivers in Europe.<|im_end|>\n"
LONGER = (  # more tokens than TURN1's conversation, and no prefix worth reusing in common with it
    f"<|im_start|>system\n{'You are a terse assistant. ' * 45}<|im_end|>\n"
    "<|im_start|>user\nName a hill.<|im_end|>\n<|im_start|>assistant\n"
)


def chat(engine: LlamaEngine, text: str) -> tuple[list[int], FinalStats]:
    tokens: list[int] = []
    final = None
    for event in engine.generate(engine.tokenize(text), GREEDY):
        if isinstance(event, TokenChunk):
            tokens.append(event.token)
        elif isinstance(event, FinalStats):
            final = event
    assert final is not None
    return tokens, final


def turn2(engine: LlamaEngine, answer: list[int]) -> str:
    return (
        TURN1
        + "<|im_start|>assistant\n"
        + engine.detokenize(answer)
        + "<|im_end|>\n<|im_start|>user\nWhich is the longest?<|im_end|>\n<|im_start|>assistant\n"
    )


@pytest.fixture(scope="module")
def model_path(smollm2_gguf: Path) -> Path:
    return smollm2_gguf


def load(
    path: Path, tmp: Path | None = None, *, ram: int = 0, parallel: int = 1, num_ctx: int = 1024, threads: int = 0
) -> LlamaEngine:
    store = SnapshotStore(tmp, 1 << 30) if tmp is not None else None
    spec = LoadSpec(path=path, num_ctx=num_ctx, parallel=parallel, ram_cache=ram, snapshots=store, num_thread=threads)
    return LlamaEngine(spec)


@pytest.fixture(scope="module")
def reference(model_path: Path) -> Iterator[tuple[list[int], list[int], list[int]]]:
    """Turn 1, then turn 2 in the same slot; and turn 2 evaluated from an empty cache."""
    engine = load(model_path)
    try:
        first, _ = chat(engine, TURN1 + "<|im_start|>assistant\n")
        kept, _ = chat(engine, turn2(engine, first))
    finally:
        engine.close()
    fresh_engine = load(model_path)
    try:
        fresh, _ = chat(fresh_engine, turn2(fresh_engine, first))
    finally:
        fresh_engine.close()
    yield first, kept, fresh


@pytest.fixture(scope="module")
def snapshot_dir(model_path: Path, tmp_path_factory: pytest.TempPathFactory, reference: tuple) -> Path:  # type: ignore[type-arg]
    """A snapshot store holding turn 1 (its engine closed, as a server that stopped)."""
    root = tmp_path_factory.mktemp("kvstate")
    engine = load(model_path, root)
    try:
        first, _ = chat(engine, TURN1 + "<|im_start|>assistant\n")
        assert first == reference[0]
    finally:
        engine.close()
    return root


def only_file(root: Path) -> Path:
    files = list(root.glob("*/*.kv"))
    assert len(files) == 1, files
    return files[0]


def test_a_new_engine_resumes_from_the_snapshot(model_path: Path, snapshot_dir: Path, reference: tuple) -> None:  # type: ignore[type-arg]
    first, kept, _ = reference
    engine = load(model_path, snapshot_dir)
    try:
        prompt = turn2(engine, first)
        n_prompt = len(engine.tokenize(prompt))
        tokens, final = chat(engine, prompt)
        stats = engine.info.cache_stats() if engine.info.cache_stats else {}
    finally:
        engine.close()
    assert tokens == kept  # the same as the engine that never lost its slot
    assert final.cached_tokens >= n_prompt - 24 and final.prompt_eval_count == n_prompt - final.cached_tokens
    assert stats["snapshot_hits"] == 1 and stats["snapshot_refused"] == 0


def damage_flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-100] ^= 0xFF
    path.write_bytes(bytes(data))


def damage_truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-1000])


@pytest.mark.parametrize(
    ("damage", "message"),
    [(damage_flip, "damaged"), (damage_truncate, "truncated"), (None, "n_ctx differ"), ("model", "model differ")],
)
def test_an_unusable_snapshot_is_refused_and_the_prompt_evaluated(
    model_path: Path,
    snapshot_dir: Path,
    reference: tuple,  # type: ignore[type-arg]
    tmp_path: Path,
    damage: object,
    message: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    first, _, fresh = reference
    source = only_file(snapshot_dir)
    store = SnapshotStore(tmp_path, 1 << 30)
    probe = load(model_path, tmp_path)  # the directory of this engine's layout
    probe.close()
    layout = probe._states._layout  # type: ignore[union-attr]
    target = store.directory(layout) / source.name
    target.parent.mkdir(parents=True, exist_ok=True)
    state = SnapshotStore(snapshot_dir, 1 << 30).load(source, layout)
    tokens = SnapshotStore(snapshot_dir, 1 << 30).index(layout)[0].tokens
    if damage == "model":  # a file made for another model's digest, in this model's directory
        store.save({**layout, "model": "sha256-" + "0" * 64 + ":1"}, tokens, state).path.rename(target)
    elif damage is None:  # made for another num_ctx
        store.save({**layout, "n_ctx": 2048}, tokens, state).path.rename(target)
    else:
        store.save(layout, tokens, state)
        assert callable(damage)
        damage(target)
    with pytest.raises(SnapshotError, match=message):
        store.load(target, layout)

    caplog.set_level(logging.WARNING, logger="nbllm")
    engine = load(model_path, tmp_path)
    try:
        got, final = chat(engine, turn2(engine, first))
        stats = engine.info.cache_stats() if engine.info.cache_stats else {}
    finally:
        engine.close()
    assert got == fresh  # the same as evaluating the prompt from an empty cache
    assert final.cached_tokens == 0
    refused = stats["snapshot_refused"] == 1 or (stats["snapshots"] == 0 and "ignoring KV snapshot" in caplog.text)
    assert refused and message in caplog.text


def test_the_ram_cache_gives_a_conversation_its_prefix_back(model_path: Path, reference: tuple) -> None:  # type: ignore[type-arg]
    first, kept, _ = reference
    engine = load(model_path, ram=64 << 20)
    try:
        assert chat(engine, TURN1 + "<|im_start|>assistant\n")[0] == first
        chat(
            engine,
            "<|im_start|>user\nSay hello in French, please, and nothing else.<|im_end|>\n<|im_start|>assistant\n",
        )
        prompt = turn2(engine, first)
        n_prompt = len(engine.tokenize(prompt))
        tokens, final = chat(engine, prompt)
        stats = engine.info.cache_stats() if engine.info.cache_stats else {}
    finally:
        engine.close()
    assert tokens == kept
    assert final.cached_tokens >= n_prompt - 24
    assert stats["hits"] == 1 and stats["entries"] >= 1 and stats["bytes"] > 0


def test_a_new_prompt_takes_an_empty_slot_and_keeping_a_slot_s_state_is_not_prompt_evaluation(
    model_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import time

    from nbllm.engine.llama import resume

    saved = resume.save_seq

    def slow_save(*args, **kwargs):  # type: ignore[no-untyped-def]
        time.sleep(0.4)
        return saved(*args, **kwargs)

    monkeypatch.setattr(resume, "save_seq", slow_save)
    monkeypatch.setattr(resume.SlotStates, "IDLE_AFTER", 600.0)  # never idle long enough: the copy comes at admission
    engine = load(model_path, ram=64 << 20, parallel=2)
    other = "<|im_start|>user\nSay hello in French, please, and nothing else.<|im_end|>\n<|im_start|>assistant\n"
    third = "<|im_start|>user\nCount from one to five.<|im_end|>\n<|im_start|>assistant\n"
    try:
        chat(engine, TURN1 + "<|im_start|>assistant\n")
        chat(engine, other)  # the second slot is empty: nothing of the first answer is stashed
        entries = engine.info.cache_stats()["entries"] if engine.info.cache_stats else None
        started = time.perf_counter()
        _, final = chat(engine, third)  # both slots hold something: one is stashed (0.4 s here)
        took = time.perf_counter() - started
        after = engine.info.cache_stats()["entries"] if engine.info.cache_stats else None
    finally:
        engine.close()
    assert entries == 0 and after == 1
    assert took >= 0.4 and final.prompt_eval_duration < 0.3e9  # the stash is not counted as evaluating the prompt


def test_an_idle_loop_keeps_the_slot_a_new_prompt_takes_so_that_prompt_waits_for_no_copy(
    model_path: Path,
    reference: tuple,  # type: ignore[type-arg]
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import time

    from nbllm.engine.llama import resume

    first, kept, _ = reference
    saved = resume.save_seq
    saves: list[tuple[float, float]] = []

    def slow_save(*args, **kwargs):  # type: ignore[no-untyped-def]
        started = time.perf_counter()
        time.sleep(0.3)
        out = saved(*args, **kwargs)
        saves.append((started, time.perf_counter()))
        return out

    def stats() -> dict[str, int]:
        return engine.info.cache_stats() if engine.info.cache_stats else {}

    monkeypatch.setattr(resume, "save_seq", slow_save)
    engine = load(model_path, ram=64 << 20, parallel=2)
    third = "<|im_start|>user\nCount from one to five.<|im_end|>\n<|im_start|>assistant\n"
    try:
        assert chat(engine, TURN1 + "<|im_start|>assistant\n")[0] == first  # one slot
        chat(engine, LONGER)  # the other slot: TURN1's holds less, a new prompt takes it
        deadline = time.monotonic() + 30
        while stats()["entries"] < 2:  # both slots kept by the idle loop, in the background of this thread
            assert time.monotonic() < deadline, f"the idle loop kept {stats()['entries']} slots in RAM"
            time.sleep(0.01)
        kept_while_idle = len(saves)
        sent = time.perf_counter()
        got_first = 0.0
        for event in engine.generate(engine.tokenize(third), GREEDY):  # takes TURN1's slot
            if isinstance(event, TokenChunk) and not got_first:
                got_first = time.perf_counter()
        prompt = turn2(engine, first)
        n_prompt = len(engine.tokenize(prompt))
        tokens, final = chat(engine, prompt)  # TURN1's conversation again: its prefix back from RAM
        after = stats()
    finally:
        engine.close()
    assert kept_while_idle == 2
    assert got_first > sent
    assert [s for s in saves if s[1] > sent and s[0] < got_first] == []  # no copy while `third` waited
    assert tokens == kept  # the state kept while idle continues as the slot itself would have
    assert final.cached_tokens >= n_prompt - 24
    assert after["hits"] == 1


def _counted_copies(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, float, float]]:
    """Every copy of a slot's state to RAM from now on: ("idle" or "admission", start, end)."""
    import threading
    import time

    from nbllm.engine.llama import resume

    saved, ahead = resume.save_seq, resume.SlotStates.stash_ahead
    idle = threading.local()
    copies: list[tuple[str, float, float]] = []

    def idle_ahead(self, slots, busy=None):  # type: ignore[no-untyped-def]
        idle.on = True
        try:
            return ahead(self, slots, busy)
        finally:
            idle.on = False

    def counted_save(*args, **kwargs):  # type: ignore[no-untyped-def]
        started = time.perf_counter()
        out = saved(*args, **kwargs)
        copies.append(("idle" if getattr(idle, "on", False) else "admission", started, time.perf_counter()))
        return out

    monkeypatch.setattr(resume, "save_seq", counted_save)
    monkeypatch.setattr(resume.SlotStates, "stash_ahead", idle_ahead)
    return copies


def _ready(engine: LlamaEngine) -> LlamaEngine:
    engine._model._history_thread.join()  # the history's tokens are kept from here on
    return engine


def _spare_cpus(monkeypatch: pytest.MonkeyPatch) -> None:
    """As on a GPU host: CPUs free beside llama.cpp's threads, so a new prompt's copy is made as it is tokenized."""
    from nbllm.engine.llama import engine as module

    monkeypatch.setattr(module, "default_threads", lambda: 16)


def test_the_copy_is_made_beside_the_tokenizer_only_where_cpus_are_free(monkeypatch: pytest.MonkeyPatch) -> None:
    from nbllm.engine.llama import engine as module

    monkeypatch.setattr(module, "default_threads", lambda: 2)
    assert not module.copies_while_tokenizing(2)  # this project's machine: llama.cpp on both cores
    assert not module.copies_while_tokenizing(1)  # one core left: the copy would take the tokenizer's
    monkeypatch.setattr(module, "default_threads", lambda: 16)
    assert module.copies_while_tokenizing(1)  # a GPU host: llama.cpp computes on one CPU
    assert not module.copies_while_tokenizing(15)


def test_a_request_that_follows_another_closely_meets_no_idle_copy(
    model_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from nbllm.engine.llama import batching, resume

    copies = _counted_copies(monkeypatch)
    expected = batching.DecodeLoop.expect
    announced: list[int] = []

    def counted_expect(self):  # type: ignore[no-untyped-def]
        announced.append(len(copies))
        return expected(self)

    monkeypatch.setattr(batching.DecodeLoop, "expect", counted_expect)
    monkeypatch.setattr(resume.SlotStates, "IDLE_AFTER", 1.0)
    _spare_cpus(monkeypatch)
    engine = _ready(load(model_path, ram=64 << 20, parallel=2, threads=2))
    third = "<|im_start|>user\nCount from one to five.<|im_end|>\n<|im_start|>assistant\n"
    try:
        first, _ = chat(engine, TURN1 + "<|im_start|>assistant\n")
        chat(engine, LONGER)  # both slots hold something; TURN1's, holding less, is the one a new prompt takes
        announced.clear()
        chat(engine, turn2(engine, first))  # at once, as a script or an agent would: TURN1's next turn
        next_turn = list(copies)
        chat(engine, third)  # at once again, but a new conversation: it takes a slot, whose state is kept
    finally:
        engine.close()
    assert announced == [0]  # TURN1's next turn was not announced (it keeps its slot); `third` was
    assert next_turn == []  # no copy for the next turn: the loop was idle for far less than 1 s
    assert [kind for kind, _, _ in copies] in (["idle"], ["admission"])  # one, made as `third` was tokenized or
    # admitted, whichever came first


@pytest.mark.parametrize("cpus", [16, 2])
def test_a_new_prompt_s_slot_is_copied_while_the_prompt_is_tokenized_where_cpus_are_free(
    model_path: Path, monkeypatch: pytest.MonkeyPatch, cpus: int
) -> None:
    import time

    import llama_cpp

    from nbllm.engine.llama import resume

    copies = _counted_copies(monkeypatch)
    monkeypatch.setattr(resume.SlotStates, "IDLE_AFTER", 600.0)  # never by idleness alone
    tokenizer = llama_cpp.llama_tokenize
    slow: list[float] = []

    def slow_tokenize(*args, **kwargs):  # type: ignore[no-untyped-def]
        if slow and len(slow) == 1:  # a long prompt's tokenization, once
            time.sleep(0.5)
            slow.append(time.perf_counter())
        return tokenizer(*args, **kwargs)

    from nbllm.engine.llama import engine as module

    monkeypatch.setattr(module, "default_threads", lambda: cpus)  # a GPU host's, or this machine's
    engine = _ready(load(model_path, ram=64 << 20, parallel=2, threads=2))
    third = "<|im_start|>user\nCount from one to five.<|im_end|>\n<|im_start|>assistant\n"
    try:
        chat(engine, TURN1 + "<|im_start|>assistant\n")
        chat(engine, LONGER)  # both slots hold something
        assert copies == []
        monkeypatch.setattr(llama_cpp, "llama_tokenize", slow_tokenize)
        slow.append(time.perf_counter())
        tokens = engine.tokenize(third)
        tokenized = time.perf_counter()
        monkeypatch.setattr(llama_cpp, "llama_tokenize", tokenizer)
        for _ in engine.generate(tokens, GREEDY):
            pass
        entries = engine.info.cache_stats()["entries"] if engine.info.cache_stats else None
    finally:
        engine.close()
    assert len(slow) == 2  # the slow tokenization happened
    assert entries == 1
    (_, begun, ended) = copies[0]
    if cpus == 2:  # llama.cpp holds every CPU: the copy waits for the admission
        assert [kind for kind, _, _ in copies] == ["admission"]
        assert begun > tokenized
        return
    assert [kind for kind, _, _ in copies] == ["idle"]  # one copy, by the idle loop; none at admission
    assert slow[0] < begun and ended < tokenized  # made while the prompt was being tokenized


def test_after_a_pause_every_slot_is_kept_so_new_prompts_back_to_back_wait_for_no_copy(
    model_path: Path,
    reference: tuple,  # type: ignore[type-arg]
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The idle loop keeps every slot, not only the one the next new prompt takes: a second new prompt sent right
    after the first (a script, an agent, a benchmark's back-to-back rounds) used to copy the slot it took while it
    waited for its first token. And the states kept ahead are real ones: a conversation whose slot went comes back."""
    import time

    first, kept, _ = reference
    copies = _counted_copies(monkeypatch)
    engine = _ready(load(model_path, ram=64 << 20, parallel=3, threads=2))
    third = "<|im_start|>user\nCount from one to five, slowly and with care.<|im_end|>\n<|im_start|>assistant\n"

    def fresh(i: int) -> str:  # longer than TURN1's conversation, sharing nothing worth reusing with any slot
        ask = "Describe the weather of a spring morning in detail. " * 12
        return f"<|im_start|>user\nRequest {i}: {ask}<|im_end|>\n<|im_start|>assistant\n"

    def entries() -> int:
        return engine.info.cache_stats()["entries"] if engine.info.cache_stats else 0

    try:
        assert chat(engine, TURN1 + "<|im_start|>assistant\n")[0] == first
        chat(engine, LONGER)
        chat(engine, third)  # every slot holds something
        deadline = time.monotonic() + 30
        while entries() < 3:  # the pause: the idle loop keeps all three, in the background of this thread
            assert time.monotonic() < deadline, f"the idle loop kept {entries()} of 3 slots in RAM"
            time.sleep(0.01)
        assert [kind for kind, _, _ in copies] == ["idle"] * 3
        copies.clear()
        chat(engine, fresh(1))  # back to back: takes `third`'s slot (holding least), kept already
        chat(engine, fresh(2))  # takes TURN1's, kept, rather than copy fresh(1)'s, which holds more
        at_admission = [kind for kind, _, _ in copies if kind == "admission"]
        prompt = turn2(engine, first)
        n_prompt = len(engine.tokenize(prompt))
        tokens, final = chat(engine, prompt)  # TURN1's conversation again: its prefix back from RAM
        stats = engine.info.cache_stats() if engine.info.cache_stats else {}
    finally:
        engine.close()
    assert at_admission == []
    assert tokens == kept  # as if its slot had never been given away
    assert final.cached_tokens >= n_prompt - 24
    assert stats["hits"] == 1
