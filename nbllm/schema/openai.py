"""OpenAI-compatible request shapes (``/v1/chat/completions``, ``/v1/completions``, ``/v1/embeddings``).

Requests are kept loose (OpenAI clients send many optional fields); responses are built as plain
dicts in the service, with the field mappings of Ollama's compatibility layer.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from nbllm.schema.common import UnicodeChecked

__all__ = ["OpenAIChatRequest", "OpenAICompletionRequest", "OpenAIEmbeddingRequest", "StreamOptions"]


class _Loose(UnicodeChecked, BaseModel):  # (BaseModel named: linters see a pydantic model)
    model_config = ConfigDict(extra="ignore")


class StreamOptions(_Loose):
    """``stream_options``."""

    include_usage: bool = False
    """Send a last chunk with token usage."""


class OpenAIChatRequest(_Loose):
    """Body of ``/v1/chat/completions``."""

    model: str = ""
    messages: list[dict[str, Any]] = []
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None
    stop: str | list[str] | None = None
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    response_format: dict[str, Any] | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = None
    reasoning_effort: str | None = None
    """How hard a reasoning model thinks (``none`` turns thinking off); maps to Ollama's ``think``."""
    reasoning: dict[str, Any] | None = None
    """``{"effort": ...}``, the newer spelling of ``reasoning_effort`` (it wins over it)."""


class OpenAICompletionRequest(_Loose):
    """Body of ``/v1/completions``."""

    model: str = ""
    prompt: Any = ""
    suffix: str | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None
    stop: str | list[str] | None = None
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    logprobs: int | None = None


class OpenAIEmbeddingRequest(_Loose):
    """Body of ``/v1/embeddings``."""

    model: str = ""
    input: Any = None
    dimensions: int | None = None
    encoding_format: str | None = None
