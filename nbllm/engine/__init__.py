"""The inference engine seam. Importing this package does not import llama.cpp."""

from __future__ import annotations

from nbllm.engine.base import (
    PENDING,
    Engine,
    EngineFactory,
    EngineInfo,
    FinalStats,
    GenerationEvent,
    LoadSpec,
    NoWait,
    Pending,
    SamplingParams,
    TokenChunk,
    TokenLogprob,
    TokenSource,
    no_wait_handle,
)

__all__ = [
    "PENDING",
    "Engine",
    "EngineFactory",
    "EngineInfo",
    "FinalStats",
    "GenerationEvent",
    "LoadSpec",
    "NoWait",
    "Pending",
    "SamplingParams",
    "TokenChunk",
    "TokenLogprob",
    "TokenSource",
    "no_wait_handle",
]
