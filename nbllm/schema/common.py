"""Shared wire types of Ollama's API: messages, tools, model details, timing metrics."""

from __future__ import annotations

import functools
import re
import time
from datetime import datetime, timezone
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = [
    "ErrorResponse",
    "Message",
    "Metrics",
    "ModelDetails",
    "RequestModel",
    "ResponseModel",
    "Tool",
    "ToolCall",
    "ToolCallFunction",
    "ToolFunction",
    "UnicodeChecked",
    "find_lone_surrogate",
    "format_timestamp",
    "now_timestamp",
]


_SURROGATE = re.compile("[\ud800-\udfff]")


def find_lone_surrogate(value: Any, where: str = "") -> str | None:
    """Where in a parsed JSON value a string (or key) holds a lone surrogate, which no UTF-8 can encode.

    JSON's ``"\\ud800"`` escape (or the bytes ``ED A0 80``) parses to one in Python; the prompt or an
    error message that quotes it then cannot be encoded. None when every string is valid Unicode.

    >>> find_lone_surrogate({"messages": [{"role": "user", "content": "hi \\ud800"}]})
    'messages.0.content'
    >>> find_lone_surrogate({"prompt": "fine: \N{SNOWMAN}"}) is None
    True
    """
    if isinstance(value, str):
        return None if value.isascii() or not _SURROGATE.search(value) else where or "body"
    if isinstance(value, dict):
        for key, item in value.items():
            path = f"{where}.{key}" if where else str(key)
            if isinstance(key, str) and not key.isascii() and _SURROGATE.search(key):
                return path
            found = find_lone_surrogate(item, path)
            if found is not None:
                return found
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found = find_lone_surrogate(item, f"{where}.{index}" if where else str(index))
            if found is not None:
                return found
    return None


class UnicodeChecked(BaseModel):
    """Base of request bodies: every string in the body, however deep, must be valid Unicode text."""

    @model_validator(mode="before")
    @classmethod
    def _valid_unicode(cls, data: Any) -> Any:
        where = find_lone_surrogate(data)
        if where is not None:
            raise ValueError(f"invalid value for field {where!r}: not valid Unicode (a lone surrogate code point)")
        return data


class RequestModel(UnicodeChecked):
    """Base of request bodies: unknown fields ignored (newer clients), JSON types checked strictly."""

    model_config = ConfigDict(extra="ignore", strict=True, populate_by_name=True)


class ResponseModel(BaseModel):
    """Base of response bodies: written with ``exclude_none``; tolerant when parsing."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    def to_json(self) -> str:
        """Serialise as Ollama does: fields that are unset (None) are omitted."""
        return self.model_dump_json(exclude_none=True, by_alias=True)


def format_timestamp(moment: datetime) -> str:
    """RFC 3339 with nanosecond precision, as Go marshals ``time.Time``.

    >>> format_timestamp(datetime(2024, 9, 26, 3, 1, 58, 114384, tzinfo=timezone.utc))
    '2024-09-26T03:01:58.114384Z'
    """
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    text = moment.isoformat(timespec="microseconds")
    base, _, frac_tz = text.partition(".")
    frac, tz = frac_tz[:6], frac_tz[6:]
    frac = frac.rstrip("0")
    tz = "Z" if tz in ("+00:00", "") else tz
    return f"{base}.{frac}{tz}" if frac else f"{base}{tz}"


@functools.lru_cache(maxsize=4)
def whole_second(seconds: int) -> str:
    """``created_at`` up to its whole second (UTC, no fraction, no zone) for a time in seconds."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))


def now_timestamp() -> str:
    """Current UTC time in Ollama's ``created_at`` format (as ``format_timestamp`` writes it).

    Every streamed token carries one, so the date part is formatted once a second.
    """
    seconds, nanos = divmod(time.time_ns(), 1_000_000_000)
    frac = f"{nanos // 1000:06d}".rstrip("0")
    return f"{whole_second(seconds)}.{frac}Z" if frac else f"{whole_second(seconds)}Z"


class ToolCallFunction(BaseModel):
    """The function a model wants to call."""

    model_config = ConfigDict(extra="ignore")
    index: int | None = None
    """Position of this call among the calls of one response."""
    name: str
    """Name of the function to call."""
    arguments: dict[str, Any] = Field(default_factory=dict)
    """Arguments as a JSON object (not a string, unlike OpenAI)."""


class ToolCall(BaseModel):
    """One tool call in an assistant message."""

    model_config = ConfigDict(extra="ignore")
    id: str | None = None
    """Call id, echoed back in the tool result's ``tool_call_id``."""
    function: ToolCallFunction
    """The function and its arguments."""


class ToolFunction(BaseModel):
    """A function the model may call, described by a JSON schema of its parameters."""

    model_config = ConfigDict(extra="allow")
    name: str
    """Function name."""
    description: str | None = None
    """What the function does."""
    parameters: dict[str, Any] = Field(default_factory=dict)
    """JSON schema of the arguments object."""


class Tool(BaseModel):
    """A tool definition passed in ``tools``."""

    model_config = ConfigDict(extra="allow")
    type: str = "function"
    """Always ``function``."""
    function: ToolFunction
    """The function."""


class Message(BaseModel):
    """A chat message."""

    model_config = ConfigDict(extra="ignore")
    role: str
    """``system``, ``user``, ``assistant`` or ``tool`` (lower-cased on input)."""
    content: str = ""
    """Text of the message."""
    thinking: str | None = None
    """The model's thinking, for thinking models."""
    images: list[str] | None = None
    """Base64-encoded images, for vision models."""
    tool_calls: list[ToolCall] | None = None
    """Tool calls made by the assistant."""
    tool_name: str | None = None
    """For ``tool`` messages: the name of the tool whose result this is."""
    tool_call_id: str | None = None
    """For ``tool`` messages: the id of the call this answers."""

    @field_validator("role", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value


class ModelDetails(BaseModel):
    """Summary of a model's format, family, size and quantization."""

    model_config = ConfigDict(extra="ignore")
    parent_model: str = ""
    """Model this one was derived from."""
    format: str = "gguf"
    """File format of the weights."""
    family: str = ""
    """Architecture family (``llama``, ``gemma3``, ...)."""
    families: list[str] | None = None
    """All families (base and projector)."""
    parameter_size: str = ""
    """Human parameter count (``135M``, ``1.2B``)."""
    quantization_level: str = ""
    """Quantization (``Q4_K_M``, ``Q8_0``, ...)."""


class Metrics(ResponseModel):
    """Timing stats of a finished request, in nanoseconds."""

    total_duration: int | None = None
    """Whole request: queue wait, load, prompt evaluation and generation."""
    load_duration: int | None = None
    """Time to get the model ready (including waiting in the scheduler queue)."""
    prompt_eval_count: int | None = None
    """Prompt tokens, the whole prompt as Ollama counts it (a prefix reused from the cache included)."""
    prompt_cached_count: int | None = None
    """nbllm extra (Ollama's clients ignore it): of ``prompt_eval_count``, the tokens reused from the KV cache."""
    prompt_eval_duration: int | None = None
    """Time spent evaluating the prompt (the part not reused from the cache)."""
    eval_count: int | None = None
    """Tokens generated."""
    eval_duration: int | None = None
    """Time spent generating."""
    draft_count: int | None = None
    """nbllm extra: draft tokens proposed by speculative decoding (prompt lookup); absent when none were."""
    draft_accepted_count: int | None = None
    """nbllm extra: of ``draft_count``, the tokens the model accepted."""


class ErrorResponse(ResponseModel):
    """The error body of every failed request (and the last line of a failed stream)."""

    error: str
    """What went wrong."""


DoneReason = Literal["stop", "length", "load", "unload"]
