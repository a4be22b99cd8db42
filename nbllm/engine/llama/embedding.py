"""Embeddings: a context of its own (pooled output), created on first use."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import llama_cpp as L

from nbllm.engine.llama.native import NativeModel, create_context, free_context
from nbllm.errors import ContextLengthExceeded, EngineError, InvalidRequest

__all__ = ["Embedder"]


class Embedder:
    """Pools a model's last hidden states into one vector per input (mean pooling for LLMs)."""

    def __init__(self, model: NativeModel, *, n_ctx: int, threads: int, native_pooling: bool) -> None:
        self._model = model
        self._n_ctx = n_ctx
        self._threads = threads
        # embedding models say how to pool; generative models are mean-pooled
        self._pooling = None if native_pooling else L.LLAMA_POOLING_TYPE_MEAN
        self._ctx: Any = None
        self._lock = threading.Lock()

    def embed(self, inputs: Sequence[Sequence[int]]) -> list[list[float]]:
        """One vector per tokenized input (not normalised)."""
        with self._lock:
            if self._ctx is None:
                self._ctx = create_context(
                    self._model,
                    n_ctx=self._n_ctx,
                    n_batch=self._n_ctx,
                    n_seq_max=1,
                    threads=self._threads,
                    embeddings=True,
                    pooling=self._pooling,
                )
            return [self._one(list(tokens)) for tokens in inputs]

    def _one(self, tokens: list[int]) -> list[float]:
        if not tokens:
            raise InvalidRequest("cannot embed an empty input")  # the request's own value: a 400
        if len(tokens) > self._n_ctx:
            raise ContextLengthExceeded(len(tokens), self._n_ctx)
        L.llama_memory_clear(L.llama_get_memory(self._ctx), True)  # noqa: FBT003 - C API
        batch = L.llama_batch_init(len(tokens), 0, 1)
        try:
            for i, token in enumerate(tokens):
                batch.token[i] = token
                batch.pos[i] = i
                batch.n_seq_id[i] = 1
                batch.seq_id[i][0] = 0
                batch.logits[i] = True
            batch.n_tokens = len(tokens)
            if L.llama_decode(self._ctx, batch) != 0:
                raise EngineError("llama_decode failed while embedding")
            ptr = L.llama_get_embeddings_seq(self._ctx, 0)
            if not ptr:
                raise EngineError("the model produced no pooled embedding")
            width = int(L.llama_model_n_embd(self._model.ptr))
            return [float(v) for v in ptr[:width]]
        finally:
            L.llama_batch_free(batch)

    def close(self) -> None:
        """Release the embedding context."""
        with self._lock:
            if self._ctx is not None:
                free_context(self._ctx)
                self._ctx = None
