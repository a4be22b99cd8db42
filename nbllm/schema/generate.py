"""``POST /api/generate``: completion requests and streamed responses."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from nbllm.schema.common import Metrics, RequestModel, ResponseModel

__all__ = ["GenerateRequest", "GenerateResponse", "Logprob", "TokenLogprob"]


class GenerateRequest(RequestModel):
    """Body of ``/api/generate``."""

    model: str = ""
    """Model name."""
    prompt: str = ""
    """Prompt; empty loads the model (or unloads it with ``keep_alive: 0``)."""
    suffix: str | None = None
    """Text after the insertion point (fill in the middle)."""
    system: str | None = None
    """System prompt, overriding the model's."""
    template: str | None = None
    """Prompt template, overriding the model's."""
    context: list[int] | None = None
    """Tokens returned by an earlier call (deprecated conversational memory)."""
    stream: bool = True
    """Stream NDJSON chunks (default) or return one object."""
    raw: bool = False
    """Send the prompt without templating."""
    format: str | dict[str, Any] | None = None
    """``"json"`` or a JSON schema the output must follow."""
    keep_alive: str | float | None = None
    """How long the model stays loaded after this request."""
    images: list[str] | None = None
    """Base64 images for vision models."""
    options: dict[str, Any] | None = None
    """Model options (``num_ctx``, ``temperature``, ...)."""
    think: bool | str | None = None
    """Thinking on/off or level, for thinking models."""
    truncate: bool | None = None
    """Truncate the prompt to fit the context (default true)."""
    shift: bool | None = None
    """Shift the context when generation fills it (default true)."""
    logprobs: bool | None = None
    """Return log probabilities of generated tokens."""
    top_logprobs: int | None = None
    """How many alternatives per token with ``logprobs`` (0-20)."""
    debug_render_only: bool | None = Field(default=None, alias="_debug_render_only")
    """Return the rendered prompt in ``_debug_info`` instead of generating."""


class Logprob(ResponseModel):
    """Log probability of one token."""

    token: str
    """The token text."""
    logprob: float
    """Natural-log probability."""
    bytes: list[int] | None = None
    """UTF-8 bytes of the token."""


class TokenLogprob(Logprob):
    """Log probability of a generated token with its top alternatives."""

    top_logprobs: list[Logprob] | None = None
    """The most likely alternatives at this position."""


class GenerateResponse(Metrics):
    """A chunk (or the whole answer) of ``/api/generate``."""

    model: str
    """Model name as requested."""
    created_at: str
    """RFC 3339 time of this chunk."""
    response: str = ""
    """Text of this chunk."""
    thinking: str | None = None
    """Thinking text of this chunk."""
    done: bool = False
    """True on the final chunk."""
    done_reason: str | None = None
    """``stop``, ``length``, ``load`` or ``unload`` (final chunk)."""
    context: list[int] | None = None
    """Tokens to pass back as ``context`` (final chunk, not in raw mode)."""
    logprobs: list[TokenLogprob] | None = None
    """Log probabilities of this chunk's tokens."""
    tool_calls: list[Any] | None = Field(default=None)
    """Tool calls parsed from the output (models with built-in parsers)."""
    debug_info: dict[str, Any] | None = Field(default=None, alias="_debug_info")
    """With ``_debug_render_only``: the rendered prompt and the image count."""
