"""Use cases: ``/api/embed`` (normalised, batched) and the legacy ``/api/embeddings``."""

from __future__ import annotations

import math
import threading
import time
from typing import Any

from nbllm.errors import ContextLengthExceeded, EngineError, InvalidRequest
from nbllm.runtime import Runtime
from nbllm.schema import EmbeddingsRequest, EmbeddingsResponse, EmbedRequest, EmbedResponse
from nbllm.service.common import keep_alive_of, load_spec, model_options, resolve_model

__all__ = ["embed", "embeddings"]


def _inputs(value: Any) -> list[str]:
    """The texts to embed; as in Ollama, an empty string is no input (the model loads, nothing is embedded)."""
    if value is None:
        return []
    if isinstance(value, str):
        return [value] if value else []
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    raise InvalidRequest("invalid input type")


def _normalise(vector: list[float], dimensions: int | None) -> list[float]:
    if dimensions is not None:
        vector = vector[:dimensions]
    if any(math.isnan(v) or math.isinf(v) for v in vector):
        raise EngineError("the model produced an invalid embedding (NaN or Inf)")
    norm = math.sqrt(sum(v * v for v in vector))
    return [v / norm for v in vector] if norm > 0 else vector


def embed(rt: Runtime, req: EmbedRequest, *, cancel: threading.Event | None = None) -> EmbedResponse:
    """Embed each input: truncated to the context unless ``truncate`` is false, L2-normalised.

    No input (``""``, ``[]``, none) loads the model and answers with no embeddings, as Ollama does."""
    started = time.perf_counter_ns()
    model = resolve_model(rt, req.model)
    texts = _inputs(req.input)
    if req.dimensions is not None and req.dimensions < 1:
        raise InvalidRequest("dimensions must be greater than 0")
    keep_alive = keep_alive_of(req.keep_alive)
    info = rt.store.gguf(model)
    spec = load_spec(rt, model, info, model_options(model, req.options))
    with rt.scheduler.acquire(model.name.display, model, spec, keep_alive, cancel=cancel) as runner:
        load_ns = time.perf_counter_ns() - started
        if not texts:  # (Ollama's answer has no stats either)
            return EmbedResponse(model=req.model, embeddings=[])
        engine = runner.engine
        batches = []
        for text in texts:
            tokens = engine.tokenize(text)
            if len(tokens) > spec.num_ctx:
                if req.truncate is False:
                    raise InvalidRequest("the input length exceeds the context length")
                tokens = tokens[: spec.num_ctx]
            batches.append(tokens)
        try:
            vectors = engine.embed(batches)
        except ContextLengthExceeded:
            raise InvalidRequest("the input length exceeds the context length") from None
    return EmbedResponse(
        model=req.model,
        embeddings=[_normalise(v, req.dimensions) for v in vectors],
        total_duration=time.perf_counter_ns() - started,
        load_duration=load_ns or None,
        prompt_eval_count=sum(len(b) for b in batches) or None,
    )


def embeddings(rt: Runtime, req: EmbeddingsRequest) -> EmbeddingsResponse:
    """The legacy endpoint: one prompt, the raw (not normalised) pooled vector."""
    model = resolve_model(rt, req.model)
    info = rt.store.gguf(model)
    spec = load_spec(rt, model, info, model_options(model, req.options))
    with rt.scheduler.acquire(model.name.display, model, spec, keep_alive_of(req.keep_alive)) as runner:
        if not req.prompt:
            return EmbeddingsResponse(embedding=[])
        tokens = runner.engine.tokenize(req.prompt)[: spec.num_ctx]
        return EmbeddingsResponse(embedding=runner.engine.embed([tokens])[0])
