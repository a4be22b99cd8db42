"""The inference engine seam. Importing this package does not import llama.cpp."""

from __future__ import annotations

from nbllm.engine.base import (
    Engine,
    EngineFactory,
    EngineInfo,
    FinalStats,
    GenerationEvent,
    LoadSpec,
    SamplingParams,
    TokenChunk,
    TokenLogprob,
)

__all__ = [
    "Engine",
    "EngineFactory",
    "EngineInfo",
    "FinalStats",
    "GenerationEvent",
    "LoadSpec",
    "SamplingParams",
    "TokenChunk",
    "TokenLogprob",
]
