"""A stream's chunks as one response (``stream: false``), and a stream without PENDING markers."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, TypeVar

from nbllm.engine import Pending
from nbllm.schema import ChatResponse, GenerateResponse, Message, TokenLogprob

T = TypeVar("T")

__all__ = ["collect_chat", "collect_generate", "settled"]


def settled(chunks: Iterator[T | Pending]) -> Iterator[T]:
    """A use case's chunks for a consumer that waits for them: without PENDING (which only comes inside
    an ``engine.NoWait`` block); closing this closes ``chunks``."""
    try:
        for chunk in chunks:
            if not isinstance(chunk, Pending):
                yield chunk
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()


def collect_generate(chunks: Iterator[GenerateResponse | Pending]) -> GenerateResponse:
    """One response from a stream (``stream: false``): text, thinking and logprobs concatenated, final stats kept."""
    text: list[str] = []
    thinking: list[str] = []
    logprobs: list[TokenLogprob] = []
    last: GenerateResponse | None = None
    for chunk in settled(chunks):
        text.append(chunk.response)
        thinking.append(chunk.thinking or "")
        logprobs.extend(chunk.logprobs or [])
        last = chunk
    assert last is not None
    update = {"response": "".join(text), "thinking": "".join(thinking) or None, "logprobs": logprobs or None}
    return last.model_copy(update=update)


def collect_chat(chunks: Iterator[ChatResponse | Pending]) -> ChatResponse:
    """One response from a chat stream: content, thinking, tool calls and logprobs concatenated."""
    content: list[str] = []
    thinking: list[str] = []
    calls: list[Any] = []
    logprobs: list[TokenLogprob] = []
    last: ChatResponse | None = None
    for chunk in settled(chunks):
        content.append(chunk.message.content)
        thinking.append(chunk.message.thinking or "")
        calls.extend(chunk.message.tool_calls or [])
        logprobs.extend(chunk.logprobs or [])
        last = chunk
    assert last is not None
    message = Message(
        role="assistant", content="".join(content), thinking="".join(thinking) or None, tool_calls=calls or None
    )
    return last.model_copy(update={"message": message, "logprobs": logprobs or None})
