"""Native sampler chains, in llama.cpp's default order, with optional (lazy) grammars."""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
from collections.abc import Sequence
from typing import Any

import llama_cpp as L
import numpy as np

from nbllm.engine.base import SamplingParams
from nbllm.errors import EngineError

__all__ = [
    "Logits",
    "Shaper",
    "free_sampler",
    "make_sampler",
    "plain_greedy",
    "request_seed",
    "sample",
    "shapes_without_history",
]


def _grammar(vocab: Any, grammar: str, triggers: tuple[str, ...]) -> Any:
    if not triggers:
        return L.llama_sampler_init_grammar(vocab, grammar.encode(), b"root")
    patterns = (ctypes.c_char_p * len(triggers))(*(t.encode() for t in triggers))
    no_tokens = (L.llama_token * 1)()
    return L.llama_sampler_init_grammar_lazy_patterns(
        vocab, grammar.encode(), b"root", patterns, len(triggers), no_tokens, 0
    )


def _penalties(p: SamplingParams) -> bool:
    changed = p.repeat_penalty != 1.0 or p.presence_penalty != 0.0 or p.frequency_penalty != 0.0
    return changed and p.repeat_last_n != 0


def plain_greedy(p: SamplingParams) -> bool:
    """Greedy with nothing that reshapes the logits (no grammar, no penalties): the argmax is the sampler."""
    return p.temperature <= 0 and not p.grammar and not _penalties(p)


def shapes_without_history(p: SamplingParams) -> bool:
    """Sampled, and each step's distribution depends on that step's logits alone (no grammar, no penalties).

    Such a request's distribution at a draft position can be computed before the tokens in front of it are
    accepted, which speculative sampling needs; a grammar's or the penalties' state would have to advance
    through the draft first.
    """
    return p.temperature > 0 and not p.grammar and not _penalties(p)


def _add_shaping(add: Any, p: SamplingParams) -> None:
    """top-k, typical, top-p, min-p and temperature (a sampled request's stages between penalties and the draw)."""
    if p.top_k > 0:
        add(L.llama_sampler_init_top_k(p.top_k))
    if 0 < p.typical_p < 1:
        add(L.llama_sampler_init_typical(p.typical_p, 1))
    if 0 < p.top_p < 1:
        add(L.llama_sampler_init_top_p(p.top_p, 1))
    if p.min_p > 0:
        add(L.llama_sampler_init_min_p(p.min_p, 1))
    add(L.llama_sampler_init_temp(p.temperature))


_TOKEN_DATA = np.dtype([("id", "<i4"), ("logit", "<f4"), ("p", "<f4")])
"""llama_token_data, as numpy sees it."""


class Shaper:
    """A sampled request's distribution over the vocabulary at one position: the native chain's stages before
    its draw (top-k, typical, top-p, min-p, temperature), applied to a row of logits, then the softmax.

    The chain's own draw picks from exactly this distribution, so a token drawn from it here is distributed
    as the chain's would be. Only for requests that :func:`shapes_without_history`.
    """

    def __init__(self, p: SamplingParams, n_vocab: int) -> None:
        self._chain = L.llama_sampler_chain_init(L.llama_sampler_chain_default_params())
        _add_shaping(functools.partial(L.llama_sampler_chain_add, self._chain), p)
        self._ids = np.arange(n_vocab, dtype=np.int32)
        self._data = np.empty(n_vocab, dtype=_TOKEN_DATA)

    def distribution(self, row: np.ndarray[Any, Any]) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
        """(token ids, their probabilities) of the tokens the stages keep, for a row of logits."""
        data = self._data
        data["id"] = self._ids
        data["logit"] = row
        data["p"] = 0.0
        cur = L.llama_token_data_array(
            data=ctypes.cast(data.ctypes.data, L.llama_token_data_p), size=len(data), selected=-1, sorted=False
        )
        L.llama_sampler_apply(self._chain, ctypes.byref(cur))
        address = ctypes.cast(cur.data, ctypes.c_void_p).value or 0
        raw = (ctypes.c_char * (cur.size * _TOKEN_DATA.itemsize)).from_address(address)
        kept = np.frombuffer(memoryview(raw), dtype=_TOKEN_DATA)
        logits = kept["logit"].astype(np.float64)
        finite = np.isfinite(logits)
        ids, logits = kept["id"][finite].copy(), logits[finite]
        weights = np.exp(logits - logits.max())
        return ids, weights / weights.sum()

    def close(self) -> None:
        """Release the native chain."""
        if self._chain is not None:
            L.llama_sampler_free(self._chain)
            self._chain = None


class Logits:
    """The last decode's logits as one numpy array over llama.cpp's own memory (no copy): a row per output,
    in batch order.

    A plain greedy token is the row's argmax: what llama.cpp's greedy sampler picks (the first maximum),
    without the n_vocab-entry candidate array ``llama_sampler_sample`` builds on every call (262k entries
    for Gemma 3: ~0.3 ms a token against ~0.03). The array over an address is remembered, because right
    after a decode (caches cold) making it costs more than the argmax itself.
    """

    def __init__(self, ctx: Any, n_vocab: int) -> None:
        self._ctx = ctx
        self._n_vocab = n_vocab
        self._row = ctypes.c_float * n_vocab
        self._tables: dict[tuple[int, int], np.ndarray[Any, Any]] = {}
        # llama_get_logits as a function object of our own that returns the address as an int: the
        # binding's returns a float pointer object, which takes a second foreign call (a cast) to read.
        self._get_logits = L.llama_cpp._lib["llama_get_logits"]
        self._get_logits.argtypes = [ctypes.c_void_p]
        self._get_logits.restype = ctypes.c_void_p

    def table(self, n_outputs: int) -> np.ndarray[Any, Any]:
        """The ``n_outputs`` x n_vocab logits of the last decode (valid until the next one)."""
        address = self._get_logits(self._ctx) or 0
        table = self._tables.get((address, n_outputs))
        if table is None:
            if len(self._tables) > 64:  # llama.cpp moved its output buffer: forget the old addresses
                self._tables.clear()
            rows = (self._row * n_outputs).from_address(address)
            table = np.frombuffer(memoryview(rows), dtype=np.float32).reshape(n_outputs, self._n_vocab)
            self._tables[address, n_outputs] = table
        return table


def request_seed(p: SamplingParams) -> int:
    """The request's seed, or a fresh random one (-1), as a 32-bit value."""
    return (p.seed if p.seed >= 0 else int.from_bytes(os.urandom(4), "little")) & 0xFFFFFFFF


def make_sampler(vocab: Any, p: SamplingParams, prompt: Sequence[int]) -> Any:
    """A sampler chain: grammar, penalties, top-k, typical, top-p, min-p, temperature, then a draw."""
    chain = L.llama_sampler_chain_init(L.llama_sampler_chain_default_params())
    add = functools.partial(L.llama_sampler_chain_add, chain)
    if p.grammar:
        grammar = _grammar(vocab, p.grammar, p.grammar_triggers)
        if not grammar:
            L.llama_sampler_free(chain)
            raise EngineError("invalid grammar")
        add(grammar)
    penalties = _penalties(p)
    if penalties:
        last_n = p.repeat_last_n if p.repeat_last_n > 0 else len(prompt) + 4096
        n_vocab = L.llama_vocab_n_tokens(vocab)
        add(L.llama_sampler_init_penalties(n_vocab, last_n, p.repeat_penalty, p.frequency_penalty, p.presence_penalty))
    if p.temperature <= 0:
        add(L.llama_sampler_init_greedy())
    else:
        _add_shaping(add, p)
        add(L.llama_sampler_init_dist(request_seed(p)))
    if penalties and not p.grammar:
        # Penalties look back over the prompt too, as llama-server does.
        with contextlib.suppress(Exception):
            for token in prompt[-(p.repeat_last_n if p.repeat_last_n > 0 else len(prompt)) :]:
                L.llama_sampler_accept(chain, token)
    return chain


def sample(chain: Any, ctx: Any, index: int) -> int:
    """Sample (and accept) the next token from the logits at batch position ``index``."""
    return int(L.llama_sampler_sample(chain, ctx, index))


def free_sampler(chain: Any) -> None:
    """Release a chain."""
    L.llama_sampler_free(chain)
