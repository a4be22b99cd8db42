"""``POST /api/chat``: chat requests and streamed responses."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from nbllm.schema.common import Message, Metrics, RequestModel, Tool
from nbllm.schema.generate import TokenLogprob

__all__ = ["ChatRequest", "ChatResponse"]


class ChatRequest(RequestModel):
    """Body of ``/api/chat``."""

    model: str = ""
    """Model name."""
    messages: list[Message] | None = None
    """Conversation so far; empty loads the model."""
    tools: list[Tool] | None = None
    """Tools the model may call."""
    tool_choice: str | dict[str, Any] | None = None
    """nbllm extension: ``auto``, ``none``, ``required`` or a named function (as OpenAI)."""
    format: str | dict[str, Any] | None = None
    """``"json"`` or a JSON schema the answer must follow."""
    options: dict[str, Any] | None = None
    """Model options."""
    stream: bool = True
    """Stream NDJSON chunks (default) or return one object."""
    keep_alive: str | float | None = None
    """How long the model stays loaded after this request."""
    think: bool | str | None = None
    """Thinking on/off or level, for thinking models."""
    truncate: bool | None = None
    """Drop old turns to fit the context (default true)."""
    shift: bool | None = None
    """Shift the context when generation fills it (default true)."""
    logprobs: bool | None = None
    """Return log probabilities of generated tokens."""
    top_logprobs: int | None = None
    """How many alternatives per token with ``logprobs`` (0-20)."""
    debug_render_only: bool | None = Field(default=None, alias="_debug_render_only")
    """Return the rendered prompt in ``_debug_info`` instead of generating."""


class ChatResponse(Metrics):
    """A chunk (or the whole answer) of ``/api/chat``."""

    model: str
    """Model name as requested."""
    created_at: str
    """RFC 3339 time of this chunk."""
    message: Message
    """The assistant's message (a delta when streaming)."""
    done: bool = False
    """True on the final chunk."""
    done_reason: str | None = None
    """``stop``, ``length``, ``load`` or ``unload`` (final chunk)."""
    logprobs: list[TokenLogprob] | None = None
    """Log probabilities of this chunk's tokens."""
    debug_info: dict[str, Any] | None = Field(default=None, alias="_debug_info")
    """With ``_debug_render_only``: the rendered prompt and the image count."""
