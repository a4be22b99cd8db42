"""The NDJSON line of a plain streamed chunk, written without building its pydantic model.

A streamed generation sends one chunk a token. Most of them are the same few fields (the model, the
time, the text or the thinking, ``done: false``), and building a ``GenerateResponse``/``ChatResponse``
and dumping it is the largest part of the per-token Python work on the event loop. ``ChunkLines``
writes those lines from a prefix made once per request; the bytes are the ones ``model_dump_json``
writes for the same chunk (``tests/schema/test_lines.py`` compares them over many texts). Anything
else (tool calls, logprobs, the final chunk with its stats) is built and dumped as a model.
"""

from __future__ import annotations

import json

from nbllm.schema.common import now_timestamp

__all__ = ["ChunkLines"]

_string = json.JSONEncoder(ensure_ascii=False).encode
"""A JSON string as pydantic writes it: UTF-8 left as is, ``"``, ``\\`` and control characters escaped."""


class ChunkLines:
    """Per-token NDJSON lines of one ``/api/generate`` or ``/api/chat`` stream (``chat``: a message delta)."""

    __slots__ = ("_chat", "_head")

    def __init__(self, model: str, *, chat: bool) -> None:
        self._head = '{"model":' + _string(model) + ',"created_at":"'
        self._chat = chat

    def line(self, text: str, thinking: str | None = None, *, created_at: str | None = None) -> str:
        """The line (newline included) of a chunk with ``text`` (and ``thinking``), stamped now."""
        stamp = now_timestamp() if created_at is None else created_at
        more = ',"thinking":' + _string(thinking) if thinking else ""
        if self._chat:
            content = _string(text)
            return f'{self._head}{stamp}","message":{{"role":"assistant","content":{content}{more}}},"done":false}}\n'
        return f'{self._head}{stamp}","response":{_string(text)}{more},"done":false}}\n'
