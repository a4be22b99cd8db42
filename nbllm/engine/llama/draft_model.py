"""Speculative decoding with a draft model: a second, smaller model with the same vocabulary guesses ahead.

A model created with a ``DRAFT`` (Ollama's ``draft_files``) loads its draft GGUF next to it, in a
context of its own with one KV sequence per request slot. Each decoding step, the draft model brings
its copy of the sequence up to date (the tokens the target accepted since its last guess; what the
target rejected is removed from the draft's KV cache first), then proposes ``k`` tokens greedily, one
``llama_decode`` each. The decode loop verifies them exactly as it verifies prompt-lookup drafts, so
greedy output stays token-for-token what the target alone produces.

The draft model sits behind the same seam as :class:`~nbllm.engine.llama.lookup.PromptLookup`: a
:class:`Proposer` per sequence, told each generated token (``push``) and asked for up to ``k`` tokens
(``draft``). A failure inside the draft model never fails a request: the draft is dropped and the
sequence's draft cache reset.

The vocabularies must be the same: drafts are token ids, so a token id must mean the same text in
both models. :func:`vocabulary_mismatch` compares every token's text and attributes and the special
tokens, and a load with a mismatched draft is refused naming the first difference.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace
from typing import Any, Protocol

import llama_cpp as L

from nbllm.engine.base import LoadSpec
from nbllm.engine.llama.held import memory_seq_rm
from nbllm.engine.llama.native import NativeModel, create_context, free_context
from nbllm.engine.llama.sampling import Logits
from nbllm.errors import ModelLoadError

__all__ = ["DRAFT_MODEL_TOKENS", "DraftModel", "DraftProposer", "Proposer", "vocabulary_mismatch"]

log = logging.getLogger("nbllm.engine.llama")

DRAFT_MODEL_TOKENS = 4
"""Draft tokens a step with a draft model (Ollama's ``draft_num_predict`` default when a draft model is set)."""


class Proposer(Protocol):
    """Draft tokens for one sequence: told each token it generates, asked for a guess at what follows."""

    def push(self, token: int) -> None:
        """Append a generated token to the sequence."""

    def draft(self, k: int) -> list[int]:
        """Up to ``k`` tokens that may follow the sequence (an empty list: no guess this step)."""


def _text(vocab: Any, token: int) -> bytes:
    raw = L.llama_vocab_get_text(vocab, token)
    return bytes(raw) if raw else b""


def vocabulary_mismatch(target: NativeModel, draft: NativeModel) -> str | None:
    """How the draft's vocabulary differs from the target's (None: the same token ids mean the same tokens).

    Every token's text and attributes are compared (a few ms per thousand tokens), then the sizes, the
    tokenizer type and the BOS/EOS tokens.
    """
    a, b = target.vocab, draft.vocab
    n_a, n_b = target.n_vocab, draft.n_vocab
    for token in range(min(n_a, n_b)):
        text_a, text_b = _text(a, token), _text(b, token)
        if text_a != text_b or L.llama_vocab_get_attr(a, token) != L.llama_vocab_get_attr(b, token):
            size = f" (and the model has {n_a} tokens, the draft {n_b})" if n_a != n_b else ""
            shown_a, shown_b = text_a.decode(errors="replace"), text_b.decode(errors="replace")
            return f"token {token} is {shown_a!r} in the model and {shown_b!r} in the draft{size}"
    if n_a != n_b:
        return f"the model has {n_a} tokens and the draft {n_b} (the first {min(n_a, n_b)} agree)"
    if L.llama_vocab_type(a) != L.llama_vocab_type(b):
        return f"the tokenizer types differ ({L.llama_vocab_type(a)} and {L.llama_vocab_type(b)})"
    for name, get in (("BOS", L.llama_vocab_bos), ("EOS", L.llama_vocab_eos)):
        if get(a) != get(b):
            return f"the {name} token is {get(a)} in the model and {get(b)} in the draft"
    for name, get in (("BOS", L.llama_vocab_get_add_bos), ("EOS", L.llama_vocab_get_add_eos)):
        if bool(get(a)) != bool(get(b)):
            return f"the model {'adds' if get(a) else 'does not add'} a {name} token and the draft does not"
    return None


class DraftModel:
    """A draft model loaded next to a target model: weights, a context, the tokens in each sequence's KV cache."""

    def __init__(
        self, target: NativeModel, path_spec: LoadSpec, *, n_ctx: int, n_batch: int, n_seq_max: int, threads: int
    ) -> None:
        self.model = NativeModel(path_spec)
        self._ctx: Any = None
        try:
            problem = vocabulary_mismatch(target, self.model)
            if problem is not None:
                raise ModelLoadError(
                    f"the draft model's vocabulary differs from the model's: {problem}. A draft model must use "
                    "the same tokenizer (a smaller model of the same family)"
                )
            if self.model.is_recurrent():
                raise ModelLoadError(
                    "a recurrent model cannot be a draft model (its cache cannot drop rejected tokens)"
                )
            self._ctx = create_context(self.model, n_ctx=n_ctx, n_batch=n_batch, n_seq_max=n_seq_max, threads=threads)
        except BaseException:
            self.model.free()
            raise
        self._mem = L.llama_get_memory(self._ctx)
        self.n_ctx = int(L.llama_n_ctx_seq(self._ctx))
        self._n_ctx_all = n_ctx
        self._n_batch = n_batch
        self._batch = L.llama_batch_init(n_batch, 0, 1)
        self._logits = Logits(self._ctx, self.model.n_vocab)
        self._cache: dict[int, list[int]] = {}
        """Per sequence id: the tokens whose keys and values are in the draft's KV cache, in position order."""

    @classmethod
    def load(cls, target: NativeModel, spec: LoadSpec, *, threads: int) -> DraftModel:
        """The draft model of ``spec`` (``spec.draft``), sized as the target's context, on the same devices."""
        assert spec.draft is not None
        draft_spec = replace(spec, path=spec.draft, draft=None, adapters=(), offload=None)
        return cls(
            target,
            draft_spec,
            n_ctx=spec.num_ctx * spec.parallel,
            n_batch=spec.num_batch,
            n_seq_max=spec.parallel,
            threads=threads,
        )

    def memory_bytes(self, kv_type: str) -> int:
        """Bytes the draft model takes: weights and KV cache."""
        return self.model.dims()["weights"] + self.model.kv_bytes(self._n_ctx_all, kv_type)

    def follow(self, seq_id: int, prompt: Sequence[int]) -> DraftProposer:
        """A proposer for the request starting in sequence ``seq_id`` with ``prompt``."""
        return DraftProposer(self, seq_id, prompt)

    def propose(self, seq_id: int, tokens: list[int], k: int) -> list[int]:
        """Up to ``k`` tokens the draft model predicts (greedily) after ``tokens``; empty when it cannot."""
        if k <= 0 or not tokens or len(tokens) + k > self.n_ctx:
            return []
        cache = self._cache.setdefault(seq_id, [])
        try:
            self._sync(seq_id, cache, tokens)
            out: list[int] = []
            while True:
                token = int(self._logits.table(1)[0].argmax())
                out.append(token)
                if len(out) >= k or self.model.is_eog(token):  # (drafting past the end is wasted work)
                    return out
                self._decode(seq_id, cache, [token])
        except Exception:  # a draft is only a guess: drop it, never the request
            log.exception("the draft model failed; dropping its cache for sequence %d", seq_id)
            memory_seq_rm(self._mem, seq_id, -1, -1)
            cache.clear()
            return []

    def _sync(self, seq_id: int, cache: list[int], tokens: list[int]) -> None:
        """Make the sequence's draft cache hold ``tokens``, with the last one's logits computed."""
        keep = 0
        n = min(len(cache), len(tokens) - 1)  # the last token is always decoded again (its logits are needed)
        while keep < n and cache[keep] == tokens[keep]:
            keep += 1
        if keep < len(cache) and not memory_seq_rm(self._mem, seq_id, keep, -1):
            memory_seq_rm(self._mem, seq_id, -1, -1)
            keep = 0
        del cache[keep:]
        self._decode(seq_id, cache, tokens[keep:])

    def _decode(self, seq_id: int, cache: list[int], tokens: list[int]) -> None:
        """Append ``tokens`` to the sequence in the draft's KV cache (batch by batch); logits for the last."""
        b = self._batch
        for start in range(0, len(tokens), self._n_batch):
            chunk = tokens[start : start + self._n_batch]
            for i, token in enumerate(chunk):
                b.token[i] = token
                b.pos[i] = len(cache)
                b.n_seq_id[i] = 1
                b.seq_id[i][0] = seq_id
                b.logits[i] = False
                cache.append(token)
            b.logits[len(chunk) - 1] = start + len(chunk) == len(tokens)
            b.n_tokens = len(chunk)
            rc = L.llama_decode(self._ctx, b)
            if rc != 0:
                raise RuntimeError(f"llama_decode failed with status {rc}")

    def close(self) -> None:
        """Free the draft's context and weights."""
        if self._ctx is not None:
            L.llama_batch_free(self._batch)
            free_context(self._ctx)
            self._ctx = None
        self.model.free()


class DraftProposer:
    """One request's sequence, drafted for by a :class:`DraftModel` (the :class:`Proposer` seam)."""

    def __init__(self, model: DraftModel, seq_id: int, prompt: Sequence[int]) -> None:
        self._model = model
        self._seq_id = seq_id
        self._tokens = list(prompt)

    def push(self, token: int) -> None:
        """Append a generated token."""
        self._tokens.append(token)

    def draft(self, k: int) -> list[int]:
        """Up to ``k`` tokens from the draft model."""
        return self._model.propose(self._seq_id, self._tokens, k)
