"""The backend seam: a place that answers chat/generate requests and streams tokens.

A backend turns a :class:`GenRequest` into an async stream of :class:`Token` events, each stamped
with its arrival time (``time.perf_counter()`` when the line or event was parsed), and one closing
:class:`StreamEnd` with whatever the server counted and timed itself. Callers measure TTFT and
inter-token intervals from the arrival times; :class:`ServerTimings` is what the server reported,
kept apart so results can say which figures were measured where.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from nbllm.errors import NbllmError

__all__ = ["Backend", "BackendError", "GenRequest", "ServerTimings", "StreamEnd", "StreamEvent", "Token"]


class BackendError(NbllmError):
    """A backend answered with an error status, an error in the stream, or a stream cut short."""


@dataclass(frozen=True)
class GenRequest:
    """One request: a prompt for ``generate`` (``/api/generate``, ``/v1/completions``) or a chat turn."""

    model: str
    prompt: str
    system: str | None = None
    """A system prompt (chat) or a prefix joined before the prompt (generate)."""
    chat: bool = False
    """Use the chat endpoint (``/api/chat``, ``/v1/chat/completions``)."""
    max_tokens: int | None = None
    """Most tokens to generate (``num_predict`` / ``max_tokens``)."""
    options: Mapping[str, Any] = field(default_factory=dict)
    """Sampling options: Ollama ``options`` / extra OpenAI body fields."""
    messages: tuple[Mapping[str, Any], ...] = ()
    """A whole chat conversation in the API's own message format; when given, ``system`` and ``prompt`` are unused."""


@dataclass(frozen=True)
class Token:
    """A streamed piece of output (one chunk or event) and when it arrived (``time.perf_counter()`` seconds)."""

    text: str
    """The answer's text in this piece."""
    arrival: float
    thinking: str = ""
    """The model's reasoning in this piece (Ollama's ``thinking``, OpenAI's ``reasoning``/``reasoning_content``)."""


@dataclass(frozen=True)
class ServerTimings:
    """Timings the server reported itself, in seconds (None where it reported nothing)."""

    source: str
    """Where they came from, e.g. ``"ollama final chunk"`` or ``"llama-server timings"``."""
    ttft_s: float | None = None
    """Request received to first token, as the server saw it (queue, load and prompt evaluation)."""
    prompt_eval_s: float | None = None
    """Prompt evaluation alone."""
    decode_s: float | None = None
    """First token to last token."""
    decode_tokens: int | None = None
    """Tokens generated in ``decode_s`` (including the first)."""
    load_s: float | None = None
    """Model load time (Ollama's ``load_duration``)."""

    @property
    def tpot_s(self) -> float | None:
        """Server-side time per output token after the first: ``decode_s / (decode_tokens - 1)``."""
        if self.decode_s is None or not self.decode_tokens or self.decode_tokens < 2:
            return None
        return self.decode_s / (self.decode_tokens - 1)


@dataclass(frozen=True)
class StreamEnd:
    """The end of a stream: token counts and server timings where the server sent them."""

    arrival: float
    input_tokens: int | None = None
    output_tokens: int | None = None
    cached_tokens: int | None = None
    done_reason: str | None = None
    server: ServerTimings | None = None
    tool_calls: tuple[Mapping[str, Any], ...] = ()
    """Tool calls the answer made: ``{"id", "name", "arguments"}`` (arguments as the JSON text the server sent)."""


StreamEvent = Token | StreamEnd
"""What :meth:`Backend.stream` yields: tokens, then one :class:`StreamEnd`."""


class Backend(Protocol):
    """A server (or this process's engine) that answers generate/chat requests with a token stream."""

    kind: Literal["ollama", "openai", "local"]
    url: str
    """Base URL (never carries a key); ``local`` for this process."""

    def stream(self, req: GenRequest) -> AsyncGenerator[StreamEvent, None]:
        """Send ``req`` and yield its tokens as they arrive, then a :class:`StreamEnd`; errors raise BackendError."""
        ...

    async def count_tokens(self, model: str, text: str) -> int | None:
        """Prompt tokens the server counts for ``text`` sent raw (None if it does not say)."""
        ...

    async def aclose(self) -> None:
        """Close the connection pool."""
        ...
