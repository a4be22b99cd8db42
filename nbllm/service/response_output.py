"""The answer of ``/v1/responses``: one response object, or the stream of events Ollama sends.

Output items as Ollama's ``openai/responses.go`` writes them: ``reasoning`` (the model's thinking),
then ``function_call`` items or one ``message``. Where Ollama always says ``completed``, an answer cut
at ``max_output_tokens`` is ``incomplete`` (``incomplete_details.reason: max_output_tokens``), as OpenAI
says it.

A stream's per-token events (a delta to the item being streamed) are written by the item's
``schema.lines.ResponseDeltaLines``: ``ResponseEvents`` is ``service.chat``'s line writer, so no chat
chunk, event dict or ``json.dumps`` is made for them; every other event is a dict, rendered by ``sse``.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from nbllm.engine import Pending
from nbllm.schema import ChatResponse, ToolCall
from nbllm.schema.lines import ResponseDeltaLines
from nbllm.schema.responses import ResponsesRequest

__all__ = ["ResponseEvents", "response", "sse"]


def sse(event: dict[str, Any]) -> str:
    """An event as server-sent: ``event: <type>``, ``data: <json.dumps of it>`` and a blank line."""
    return f"event: {event['type']}\ndata: {json.dumps(event)}\n\n"


def _sse_all(events: Iterable[dict[str, Any]]) -> str:
    return "".join(map(sse, events))


def _ident(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(12)}"


def _text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def _message_item(ident: str, text: str, status: str) -> dict[str, Any]:
    content = [_text_part(text)] if status == "completed" else []
    return {"id": ident, "type": "message", "status": status, "role": "assistant", "content": content}


def _reasoning_item(ident: str, thinking: str) -> dict[str, Any]:
    summary = [{"type": "summary_text", "text": thinking}]
    return {"id": ident, "type": "reasoning", "summary": summary, "encrypted_content": thinking}


def _call_item(call: ToolCall, arguments: str, status: str) -> dict[str, Any]:
    return {
        "id": _ident("fc"),
        "type": "function_call",
        "status": status,
        "call_id": call.id or _ident("call"),
        "name": call.function.name,
        "arguments": arguments,
    }


def _usage(final: ChatResponse) -> dict[str, Any]:
    prompt, generated = final.prompt_eval_count or 0, final.eval_count or 0
    return {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": final.prompt_cached_count or 0},
        "output_tokens": generated,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": prompt + generated,
    }


def _status(final: ChatResponse | None) -> tuple[str, dict[str, str] | None]:
    """``completed``, or ``incomplete`` (as OpenAI says it) when the answer stopped at max_output_tokens."""
    if final is not None and final.done_reason == "length":
        return "incomplete", {"reason": "max_output_tokens"}
    return "completed", None


def _response_object(req: ResponsesRequest, ident: str, created: int) -> dict[str, Any]:
    """The response object's fields that echo the request (the rest is set as it completes)."""
    fmt = req.text.format if req.text and req.text.format else None
    reasoning = req.reasoning
    return {
        "id": ident,
        "object": "response",
        "created_at": created,
        "completed_at": None,
        "status": "in_progress",
        "incomplete_details": None,
        "model": req.model,
        "previous_response_id": None,
        "instructions": req.instructions or None,
        "output": [],
        "error": None,
        "tools": [t.model_dump(exclude_none=True) for t in req.tools or []],
        "tool_choice": req.tool_choice or "auto",
        "truncation": req.truncation or "disabled",
        "parallel_tool_calls": True,
        "text": {"format": fmt.model_dump(exclude_none=True, by_alias=True) if fmt else {"type": "text"}},
        "top_p": 1.0 if req.top_p is None else req.top_p,
        "presence_penalty": 0,
        "frequency_penalty": 0,
        "top_logprobs": 0,
        "temperature": 1.0 if req.temperature is None else req.temperature,
        "reasoning": {"effort": reasoning.effort, "summary": reasoning.summary} if reasoning else None,
        "usage": None,
        "max_output_tokens": req.max_output_tokens,
        "max_tool_calls": None,
        "store": False,
        "background": False,
        "service_tier": "default",
        "metadata": req.metadata or {},
        "safety_identifier": None,
        "prompt_cache_key": None,
    }


def _finished(base: dict[str, Any], output: list[dict[str, Any]], final: ChatResponse) -> dict[str, Any]:
    status, details = _status(final)
    done = {"status": status, "incomplete_details": details, "completed_at": int(time.time())}
    return {**base, **done, "output": output, "usage": _usage(final)}


def response(chunks: Iterator[ChatResponse | Pending], req: ResponsesRequest) -> Iterator[dict[str, Any] | Pending]:
    """One response object for the whole answer (``stream: false``), after PENDING while it is made."""
    base = _response_object(req, _ident("resp"), int(time.time()))
    content: list[str] = []
    thinking: list[str] = []
    calls: list[ToolCall] = []
    final: ChatResponse | None = None
    for chunk in chunks:
        if isinstance(chunk, Pending):
            yield chunk
            continue
        content.append(chunk.message.content)
        thinking.append(chunk.message.thinking or "")
        calls.extend(chunk.message.tool_calls or [])
        final = chunk
    assert final is not None
    output = []
    if "".join(thinking):
        output.append(_reasoning_item(_ident("rs"), "".join(thinking)))
    if calls:  # as Ollama: an answer that calls tools is its calls
        output.extend(_call_item(c, json.dumps(c.function.arguments), "completed") for c in calls)
    else:
        output.append(_message_item(_ident("msg"), "".join(content), "completed"))
    yield _finished(base, output, final)


@dataclass(slots=True)
class _OpenItem:
    """The item being streamed (a reasoning or a message item), with its text so far."""

    kind: str
    ident: str
    index: int
    lines: ResponseDeltaLines
    """Its delta events (the per-token path: :meth:`ResponseEvents.line`)."""
    parts: list[str] = field(default_factory=list)


class ResponseEvents:
    """The stream of a response as server-sent events, each a dict with its ``type`` and ``sequence_number``.

    ``response.created`` and ``response.in_progress`` come with the first chunk (so an error found up
    front still gets its status code); thinking streams as a ``reasoning`` item, text as one ``message``
    item, each tool call as a ``function_call`` item; the last event is ``response.completed`` (or
    ``response.incomplete`` at max_output_tokens, or ``response.failed`` from :meth:`failed`).
    A plain delta that ``service.chat`` hands to :meth:`line` comes as its events' text instead.
    """

    def __init__(self, req: ResponsesRequest) -> None:
        self._base = _response_object(req, _ident("resp"), int(time.time()))
        self._sequence = 0
        self._output: list[dict[str, Any]] = []
        """Items done, in output order."""
        self._open: _OpenItem | None = None
        self._started = False
        """``response.created`` and ``response.in_progress`` were sent."""
        self._calls_sent = False
        self._answered = False
        """A message item was opened."""

    def _event(self, kind: str, **data: Any) -> dict[str, Any]:
        event = {"type": kind, "sequence_number": self._sequence, **data}
        self._sequence += 1
        return event

    def events(self, chunks: Iterator[ChatResponse | str | Pending]) -> Iterator[dict[str, Any] | str | Pending]:
        """The events of a chat stream (PENDING and the events :meth:`line` wrote passed through)."""
        for chunk in chunks:
            if isinstance(chunk, (str, Pending)):
                yield chunk
                continue
            yield from self._start()
            yield from self._chunk(chunk)
            if chunk.done:
                yield from self._complete(chunk)

    def line(self, text: str, thinking: str | None = None) -> str:
        """The events of a plain delta, as server-sent events (``service.chat``'s line writer).

        The same events :meth:`events` makes of a chunk with ``text`` and ``thinking``: a delta to the
        item being streamed is written by its ``ResponseDeltaLines``; the first events, and those that
        open or close an item, are made as dicts and rendered.
        """
        out = "" if self._started else _sse_all(self._start())
        if thinking:
            out += self._delta("reasoning", thinking)
        if text and not self._calls_sent:
            out += self._delta("message", text)
        return out

    def _delta(self, kind: str, delta: str) -> str:
        opened = self._open
        if opened is None or opened.kind != kind:
            return _sse_all(self._text(kind, delta))
        opened.parts.append(delta)
        sequence, self._sequence = self._sequence, self._sequence + 1
        return opened.lines.event(sequence, delta)

    def _start(self) -> Iterator[dict[str, Any]]:
        if not self._started:
            self._started = True
            yield self._event("response.created", response=self._base)
            yield self._event("response.in_progress", response=self._base)

    def _chunk(self, chunk: ChatResponse) -> Iterator[dict[str, Any]]:
        message = chunk.message
        if message.thinking:
            yield from self._text("reasoning", message.thinking)
        if message.tool_calls:
            yield from self._close()
            self._calls_sent = True
            for call in message.tool_calls:
                yield from self._call(call)
        if message.content and not self._calls_sent:
            yield from self._text("message", message.content)

    def _text(self, kind: str, delta: str) -> Iterator[dict[str, Any]]:
        """A piece of thinking or answer: opens its item (closing the other kind) on the first one."""
        if self._open is not None and self._open.kind != kind:
            yield from self._close()
        index = len(self._output)
        if self._open is None:
            ident = _ident("rs" if kind == "reasoning" else "msg")
            self._open = _OpenItem(kind, ident, index, ResponseDeltaLines(ident, index, reasoning=kind == "reasoning"))
            if kind == "reasoning":
                item = {"id": ident, "type": "reasoning", "summary": []}
                yield self._event("response.output_item.added", output_index=index, item=item)
            else:
                self._answered = True
                item = _message_item(ident, "", "in_progress")
                yield self._event("response.output_item.added", output_index=index, item=item)
                part = _text_part("")
                yield self._event(
                    "response.content_part.added", item_id=ident, output_index=index, content_index=0, part=part
                )
        if not delta:
            return
        self._open.parts.append(delta)
        where = {"item_id": self._open.ident, "output_index": index}
        if kind == "reasoning":
            yield self._event("response.reasoning_summary_text.delta", **where, summary_index=0, delta=delta)
        else:
            yield self._event("response.output_text.delta", **where, content_index=0, delta=delta, logprobs=[])

    def _close(self) -> Iterator[dict[str, Any]]:
        """Finish the open reasoning or message item."""
        opened, self._open = self._open, None
        if opened is None:
            return
        index, ident, text = opened.index, opened.ident, "".join(opened.parts)
        where = {"item_id": ident, "output_index": index}
        if opened.kind == "reasoning":
            item = _reasoning_item(ident, text)
            yield self._event("response.reasoning_summary_text.done", **where, summary_index=0, text=text)
        else:
            item = _message_item(ident, text, "completed")
            yield self._event("response.output_text.done", **where, content_index=0, text=text, logprobs=[])
            yield self._event("response.content_part.done", **where, content_index=0, part=_text_part(text))
        self._output.append(item)
        yield self._event("response.output_item.done", output_index=index, item=item)

    def _call(self, call: ToolCall) -> Iterator[dict[str, Any]]:
        arguments = json.dumps(call.function.arguments)
        item = _call_item(call, arguments, "completed")
        index, where = len(self._output), {"item_id": item["id"], "output_index": len(self._output)}
        added = {**item, "status": "in_progress", "arguments": ""}
        yield self._event("response.output_item.added", output_index=index, item=added)
        yield self._event("response.function_call_arguments.delta", **where, delta=arguments)
        yield self._event("response.function_call_arguments.done", **where, arguments=arguments)
        self._output.append(item)
        yield self._event("response.output_item.done", output_index=index, item=item)

    def _complete(self, final: ChatResponse) -> Iterator[dict[str, Any]]:
        if not self._calls_sent and not self._answered:
            yield from self._text("message", "")  # an empty answer is an empty message, as when not streamed
        yield from self._close()
        done = _finished(self._base, self._output, final)
        kind = "response.completed" if done["status"] == "completed" else "response.incomplete"
        yield self._event(kind, response=done)

    def failed(self, error: Mapping[str, Any]) -> dict[str, Any]:
        """The last event of a stream that failed after it started: ``response.failed`` with the error."""
        code = "server_error" if error.get("type") == "api_error" else str(error.get("type") or "server_error")
        failed = {
            **self._base,
            "status": "failed",
            "output": self._output,
            "error": {"code": code, "message": error.get("message")},
        }
        return self._event("response.failed", response=failed)
