"""The line of a plain streamed chunk (NDJSON, or ``/v1``'s server-sent event), written without models.

A streamed generation sends one chunk a token. Most of them are the same few fields (the model, the
time, the text or the thinking, ``done: false``), and building a ``GenerateResponse``/``ChatResponse``
and dumping it is the largest part of the per-token Python work on the event loop. ``ChunkLines``
writes those lines from a prefix made once per request; the bytes are the ones ``model_dump_json``
writes for the same chunk (``tests/test_chunk_lines.py`` compares them over many texts). Anything
else (tool calls, logprobs, the final chunk with its stats) is built and dumped as a model.

``/v1`` streams (``ChatCompletionLines``, ``CompletionLines``) write the ``data:`` event that
``json.dumps`` of the OpenAI chunk would give, the same way; ``ResponseDeltaLines`` writes a
``/v1/responses`` text or reasoning delta event (``event:`` and ``data:``) of one streamed item.
"""

from __future__ import annotations

import secrets
import time
from json.encoder import encode_basestring, encode_basestring_ascii
from typing import Protocol

from nbllm.schema.common import whole_second

__all__ = ["ChatCompletionLines", "ChunkLines", "CompletionLines", "LineWriter", "ResponseDeltaLines", "openai_id"]

_string = encode_basestring
"""A JSON string as pydantic writes it: UTF-8 left as is, ``"``, ``\\`` and control characters escaped (what
``json.JSONEncoder(ensure_ascii=False).encode`` gives for a string, without its Python frame)."""
_ascii = encode_basestring_ascii
"""A JSON string as ``json.dumps`` writes it (non-ASCII escaped)."""
_time_ns = time.time_ns


class LineWriter(Protocol):
    """What a streamed route gives the use case to write its plain chunks with."""

    def line(self, text: str, thinking: str | None = None) -> str:
        """The whole line of a chunk with ``text`` (and ``thinking``)."""
        ...


class ChunkLines:
    """Per-token NDJSON lines of one ``/api/generate`` or ``/api/chat`` stream (``chat``: a message delta)."""

    __slots__ = ("_chat", "_dated", "_head")

    ANY_THREAD = True
    """``line`` may be called from any thread (the engine's decode thread: ``server.feed``): its one cache
    is set whole."""

    def __init__(self, model: str, *, chat: bool) -> None:
        self._head = '{"model":' + _string(model) + ',"created_at":"'
        self._chat = chat
        self._dated = (-1, "")
        """A whole second and ``_head`` with its stamp, made once a second (one tuple: a call on another thread
        never sees a second with the stamp of another)."""

    def line(self, text: str, thinking: str | None = None, *, created_at: str | None = None) -> str:
        """The line (newline included) of a chunk with ``text`` (and ``thinking``), stamped now (the stamp
        ``schema.common.now_timestamp`` writes; inline, as this runs for every token on the event loop)."""
        if created_at is None:
            now = _time_ns()
            second = now // 1_000_000_000
            cached, dated = self._dated
            if second != cached:
                dated = self._head + whole_second(second)
                self._dated = (second, dated)
            micros = now // 1000 % 1_000_000
            head = (f"{dated}.{micros:06d}".rstrip("0") if micros else dated) + "Z"
        else:
            head = self._head + created_at
        more = ',"thinking":' + _string(thinking) if thinking else ""
        if self._chat:
            content = _string(text)
            return f'{head}","message":{{"role":"assistant","content":{content}{more}}},"done":false}}\n'
        return f'{head}","response":{_string(text)}{more},"done":false}}\n'


def openai_id(prefix: str) -> str:
    """A new OpenAI object id: ``chatcmpl-…``, ``cmpl-…`` (as Ollama's compatibility layer makes them)."""
    return f"{prefix}-{secrets.randbelow(10**9)}"


class ChatCompletionLines:
    """``/v1/chat/completions`` stream events of plain deltas (``reasoning``: the thinking)."""

    __slots__ = ("_head", "created", "ident")

    ANY_THREAD = True
    """``line`` keeps no state: any thread may call it."""

    def __init__(self, ident: str, created: int, model: str) -> None:
        self.ident, self.created = ident, created
        self._head = (
            f'data: {{"id": {_ascii(ident)}, "created": {created}, "model": {_ascii(model)}, '
            '"system_fingerprint": "fp_ollama", "object": "chat.completion.chunk", '
            '"choices": [{"index": 0, "delta": {"role": "assistant", "content": '
        )

    def line(self, text: str, thinking: str | None = None) -> str:
        """The event (blank line included) of a delta with ``text`` (and ``thinking``)."""
        more = ', "reasoning": ' + _ascii(thinking) if thinking else ""
        return f'{self._head}{_ascii(text)}{more}}}, "finish_reason": null, "logprobs": null}}]}}\n\n'


class CompletionLines:
    """``/v1/completions`` stream events of plain text chunks (thinking is not part of them)."""

    __slots__ = ("_head", "created", "ident")

    ANY_THREAD = True
    """``line`` keeps no state: any thread may call it."""

    def __init__(self, ident: str, created: int, model: str) -> None:
        self.ident, self.created = ident, created
        self._head = (
            f'data: {{"id": {_ascii(ident)}, "object": "text_completion", "created": {created}, '
            f'"model": {_ascii(model)}, "system_fingerprint": "fp_ollama", "choices": [{{"text": '
        )

    def line(self, text: str, thinking: str | None = None) -> str:
        """The event (blank line included) of a chunk with ``text``."""
        return f'{self._head}{_ascii(text)}, "index": 0, "finish_reason": null}}]}}\n\n'


class ResponseDeltaLines:
    """``/v1/responses`` delta events of one streamed item: a message's text, or a reasoning item's summary.

    The bytes of ``event: <type>``, ``data: `` and ``json.dumps`` of the event dict
    ``service.response_output`` builds (type, sequence number, item id, output index, the part's
    index, the delta, then a message's ``"logprobs": []``), with everything but the sequence number
    and the delta written once per item.
    """

    __slots__ = ("_head", "_middle", "_tail")

    def __init__(self, item_id: str, output_index: int, *, reasoning: bool) -> None:
        kind = "response.reasoning_summary_text.delta" if reasoning else "response.output_text.delta"
        self._head = f'event: {kind}\ndata: {{"type": {_ascii(kind)}, "sequence_number": '
        part = '"summary_index": 0' if reasoning else '"content_index": 0'
        self._middle = f', "item_id": {_ascii(item_id)}, "output_index": {output_index}, {part}, "delta": '
        self._tail = "}\n\n" if reasoning else ', "logprobs": []}\n\n'

    def event(self, sequence: int, delta: str) -> str:
        """The event (blank line included) of ``delta``, numbered ``sequence`` in the stream."""
        return f"{self._head}{sequence}{self._middle}{_ascii(delta)}{self._tail}"
