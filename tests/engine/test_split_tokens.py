"""A long prompt tokenized in pieces on several threads (engine.llama.split): where it may be cut, that the pieces
give llama.cpp's whole-prompt tokens on SmolLM2's real vocabulary over generated texts (forced into many small
pieces, and from many threads at once), and which vocabularies are left whole."""

from __future__ import annotations

import random
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from itertools import pairwise
from pathlib import Path

import httpx
import llama_cpp as L
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nbllm.engine import LoadSpec, SamplingParams, TokenChunk
from nbllm.engine.llama import LlamaEngine, split
from nbllm.engine.llama.batching import DecodeLoop
from nbllm.engine.llama.native import NativeModel, default_threads
from nbllm.engine.llama.split import SplitTokens, cut_points, special_clash
from nbllm.runtime import Runtime
from nbllm.server import BackgroundServer

C = L.LLAMA_TOKEN_ATTR_CONTROL
LONG = SamplingParams(temperature=0, num_predict=48)


@settings(max_examples=40)
@given(
    st.lists(
        st.sampled_from(["lighthouse ", "a", "b", " ", ". ", "\n", "\u00e9 ", "word word ", "  ", "7 "]),
        min_size=600,
        max_size=1500,
    ).map("".join),
    st.integers(min_value=1, max_value=9),
)
def test_a_prompt_is_cut_only_before_a_space_between_letters_into_pieces_big_enough(text: str, pieces: int) -> None:
    data = text.encode()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(split, "MIN_PIECE", 512)
        cuts = cut_points(data, pieces)
    assert len(cuts) <= pieces - 1 and cuts == sorted(set(cuts))
    for c in cuts:
        assert data[c : c + 1] == b" " and data[c - 1 : c].isalpha() and data[c + 1 : c + 2].isalpha()
    if len(data) > 4 * 512 and pieces > 1 and b"lighthouse a" in data:
        assert cuts, "a long text with places to cut is cut"
    if cuts:
        assert all(b - a >= 512 for a, b in pairwise([0, *cuts, len(data)]))


def test_a_prompt_without_a_place_to_cut_stays_whole() -> None:
    assert cut_points(b"x" * 50_000, 8) == []
    assert cut_points(b"a  b" * 5_000, 8) == []  # two spaces: a run of whitespace is a word of its own
    assert cut_points(b"1 2" * 5_000, 8) == []  # digits, not letters


def test_the_pieces_are_tokenized_on_other_threads_and_joined_in_order() -> None:
    threads: list[str] = []

    def raw(data: bytes, add_special: bool) -> list[int]:  # noqa: FBT001 - bytes as tokens: any cut gives the same
        threads.append(threading.current_thread().name)
        return ([-1] if add_special else []) + list(data)

    text = b" ".join(b"word%d" % i if i % 7 else b"word" for i in range(12000))
    tokens = SplitTokens(raw, lambda: 4)
    assert tokens.tokenize(text, True) == [-1, *text]  # noqa: FBT003 - BOS once, at the start
    assert tokens.tokenize(text, False) == list(text)  # noqa: FBT003
    assert tokens.split == 2 and len(threads) == 8
    assert sum(name.startswith("nbllm-tokenize") for name in threads) == 6
    assert SplitTokens(raw, lambda: 1).tokenize(text, True) == [-1, *text]  # noqa: FBT003 - no CPU free: whole
    assert tokens.split == 2


def test_a_special_token_that_could_join_the_two_sides_of_a_cut_keeps_prompts_whole() -> None:
    assert special_clash({b"<|im_end|>": C, b"<|im_start|>": C, b"<left>": C | L.LLAMA_TOKEN_ATTR_LSTRIP}) is None
    assert "letter-space-letter" in (special_clash({b"<|x|>": C, b"Hello world": C}) or "")
    assert "whitespace after it" in (special_clash({b"<mask>user": C | L.LLAMA_TOKEN_ATTR_RSTRIP}) or "")
    assert special_clash({b"<mask>": C | L.LLAMA_TOKEN_ATTR_RSTRIP}) is None  # ends with '>': no cut after it


WORDS = [
    "the",
    "lighthouse",
    "keeper",
    "it's",
    "don't",
    "they'll",
    "I'm",
    "CamelCase",
    "snake_case",
    "x",
    "é",
    "naïve",
    "日本語",
    "русский",
    "🙂",
    "3",
    "42",
    "12345",
    "3.14",
    ",",
    ".",
    "!",
    "?",
    "'",
    '"',
    "(",
    ")",
    "-",
    "--",
    "...",
    "<|im_start|>",
    "<|im_end|>",
    "<|endoftext|>",
    "<|im_",
    "end|>",
    "<",
    "|",
    "\n",
    "\n\n",
    "\t",
    "    ",
    "def",
    "return",
    "http://a.b/c?d=e",
]
SEPARATORS = [" ", " ", " ", " ", "", "  ", "\n", " \n ", "\t"]


def _text(rng: random.Random, n: int) -> str:
    return "".join(rng.choice(WORDS) + rng.choice(SEPARATORS) for _ in range(n))


@pytest.fixture(scope="module")
def smollm2(smollm2_gguf: Path) -> NativeModel:
    model = NativeModel(LoadSpec(path=smollm2_gguf, num_ctx=512))
    model._history_thread.join()
    yield model
    model.free()


@pytest.mark.model
def test_smollm2_s_long_prompts_are_split_and_give_llama_cpp_s_own_tokens(smollm2: NativeModel) -> None:
    assert smollm2._split is not None, "SmolLM2's GPT-2-style vocabulary passes the checks"
    text = ("The keeper wrote in his log that the sea was calm. " * 400).encode()  # ~20 KB
    before = smollm2._split.split
    for add in (True, False):
        assert smollm2.tokenize(text.decode(), add_special=add, parse_special=True) == smollm2._tokenize_whole(
            text, add, parse_special=True
        )
    assert smollm2._split.split == before + (2 if smollm2._tokenize_threads() > 1 else 0)  # (one CPU: whole)


@pytest.mark.model
def test_pieces_as_small_as_a_few_bytes_give_the_whole_prompt_s_tokens(
    smollm2: NativeModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(split, "MIN_PIECE", 4)  # many cuts: every allowed one is tried somewhere
    pieces = SplitTokens(smollm2._tokenize_whole, lambda: 8)
    rng = random.Random(11)
    cut = 0
    for _ in range(400):
        data = _text(rng, rng.randint(1, 120)).encode()
        cut += len(cut_points(data, 8))
        for add in (True, False):
            assert pieces.tokenize(data, add) == smollm2._tokenize_whole(data, add), (data, add)
    assert cut > 500


@pytest.mark.model
@settings(max_examples=150, deadline=None)
@given(data=st.text(max_size=400))
def test_any_text_cut_anywhere_allowed_gives_the_whole_prompt_s_tokens(smollm2_gguf: Path, data: str) -> None:
    model = _shared_model(smollm2_gguf)
    raw = data.encode()
    cuts = [m.start() for m in re.finditer(rb"(?<=[A-Za-z]) (?=[A-Za-z])", raw)]
    bounds = [0, *cuts, len(raw)]
    pieces = [t for i, (a, b) in enumerate(pairwise(bounds)) for t in model._tokenize_whole(raw[a:b], i == 0)]
    assert pieces == model._tokenize_whole(raw, True)  # noqa: FBT003


_MODELS: dict[Path, NativeModel] = {}


def _shared_model(path: Path) -> NativeModel:
    if path not in _MODELS:
        _MODELS[path] = NativeModel(LoadSpec(path=path, num_ctx=512))
    return _MODELS[path]


@pytest.fixture(scope="module", autouse=True)
def _free_shared_models() -> None:
    yield
    for model in _MODELS.values():
        model.free()
    _MODELS.clear()


@pytest.mark.model
def test_many_long_prompts_at_once_each_get_their_own_tokens(smollm2: NativeModel) -> None:
    rng = random.Random(5)
    texts = [_text(rng, 4000).encode() for _ in range(16)]
    expected = [smollm2._tokenize_whole(t, True) for t in texts]  # noqa: FBT003
    assert smollm2._split is not None
    before = smollm2._split.split
    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(lambda t: smollm2._tokenize_bytes(t, True), texts))  # noqa: FBT003
    assert got == expected
    assert smollm2._split.split - before >= (8 if smollm2._tokenize_threads() > 1 else 0)  # (a race may lose a count)


@pytest.mark.model
def test_gemma_s_spm_vocabulary_is_tokenized_whole(gemma3_gguf: Path) -> None:
    model = NativeModel(LoadSpec(path=gemma3_gguf, num_ctx=512))
    try:
        model._history_thread.join()
        assert model._split is None
        assert model.meta("tokenizer.ggml.model") == "llama"
        specials = {b"<x>": C}
        why = split.why_not_split(model.vocab, specials, model._tokenize_whole, "llama")
        assert why is not None and "not a GPT-2-style BPE vocabulary" in why
    finally:
        model.free()


@pytest.mark.model
def test_a_prompt_is_split_only_while_llama_cpp_leaves_the_cpus_free(smollm2_gguf: Path) -> None:
    engine = LlamaEngine(LoadSpec(path=smollm2_gguf, num_ctx=512, parallel=2))
    model = engine._model
    try:
        model._history_thread.join()
        assert model._split is not None and model.compute_threads == default_threads()  # on the CPU: all of them
        text = "The keeper wrote in his log that the sea was calm. " * 400  # ~20 KB
        time.sleep(2 * DecodeLoop.SPIN_S)
        assert not model.computing()
        before = model._split.split
        idle = engine.tokenize(text)
        assert model._split.split == before + (1 if default_threads() > 1 else 0)
        stream = engine.generate(engine.tokenize("<|im_start|>user\nTell a story.<|im_end|>\n"), LONG)
        assert isinstance(next(stream), TokenChunk)
        assert model.computing() and model._tokenize_threads() == 1  # llama.cpp computes with every CPU
        before = model._split.split
        busy = engine.tokenize(text)  # every CPU is llama.cpp's: tokenized whole on this thread
        assert model._split.split == before and busy == idle
        for _ in stream:
            pass
    finally:
        engine.close()


@pytest.mark.model
def test_through_the_server_a_long_prompt_is_split_counted_exactly_and_the_server_serves_on(
    live_server: BackgroundServer, real_runtime: Runtime
) -> None:
    opts = {"num_ctx": 512, "num_predict": 2, "temperature": 0}
    hi = {"model": "smollm2:135m", "prompt": "Hi", "options": opts}
    with httpx.Client(base_url=live_server.url, timeout=180) as http:
        assert http.post("/api/generate", json=hi).status_code == 200
        engine = next(r.engine for r in real_runtime.scheduler._runners.values() if r.engine is not None)
        model = engine._model
        model._history_thread.join()
        assert model._split is not None
        text = "The keeper wrote in his log that the sea was calm tonight. " * 350  # ~21 KB, ~4,200 tokens
        time.sleep(2 * DecodeLoop.SPIN_S)  # the loop idle: llama.cpp leaves the CPUs free
        before = model._split.split
        body = {**hi, "prompt": text, "raw": True, "stream": False, "truncate": False}
        r = http.post("/api/generate", json=body)
        assert r.status_code == 400  # longer than the context, and truncation refused: tokenized, then refused
        n = len(model._tokenize_whole(text.encode(), True))  # noqa: FBT003 - llama.cpp on the whole prompt
        assert f"the input length ({n} tokens)" in r.json()["error"]
        assert model._split.split == before + (1 if default_threads() > 1 else 0)
        assert http.post("/api/generate", json=hi).status_code == 200
