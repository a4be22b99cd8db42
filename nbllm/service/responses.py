"""OpenAI Responses (``/v1/responses``) over the chat use case, stateless as Ollama serves it.

A request becomes one ``/api/chat`` request: ``instructions`` a system message, input items messages
(``function_call`` items the assistant's tool calls, ``function_call_output`` items tool messages),
``reasoning.effort`` the ``think`` value, ``text.format`` the ``format``. The answer comes back as
output items -- ``reasoning`` (the thinking), ``function_call`` items or one ``message`` -- in one
response object or as the stream of events Ollama's ``openai/responses.go`` sends. Nothing is stored:
``previous_response_id``, ``conversation`` and ``background`` are refused with a 400.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator, Mapping
from typing import Any

from pydantic import ValidationError

from nbllm.engine import Pending
from nbllm.errors import InvalidRequest
from nbllm.schema import ChatRequest, ChatResponse, Message, ToolCall, ToolCallFunction
from nbllm.schema.responses import (
    FunctionCallItem,
    FunctionCallOutputItem,
    InputFile,
    InputImage,
    InputMessage,
    ReasoningItem,
    ResponsesRequest,
)

__all__ = ["ResponseEvents", "chat_request", "response", "think_of"]

_EFFORTS: dict[str, bool | str] = {
    "none": False,
    "minimal": "low",
    "low": "low",
    "medium": "medium",
    "high": "high",
    "max": "max",
    "xhigh": "max",
    "ultra": "max",
}
"""``reasoning.effort`` to ``think``, as Ollama's ``thinkFromReasoningEffort`` maps it."""


def think_of(effort: str | None) -> bool | str | None:
    """The ``think`` value of a reasoning effort (None when unset); an unknown effort is a 400.

    >>> think_of("none"), think_of("minimal"), think_of("xhigh"), think_of(None)
    (False, 'low', 'max', None)
    """
    if effort is None or effort == "":
        return None
    if effort not in _EFFORTS:
        choices = ", ".join(f'"{e}"' for e in _EFFORTS)
        raise InvalidRequest(f"invalid reasoning value: {effort!r} (must be one of {choices})")
    return _EFFORTS[effort]


def _refuse_state(req: ResponsesRequest) -> None:
    """Nothing is stored between requests, so what would read or write stored state is a 400."""
    if req.previous_response_id:
        raise InvalidRequest(
            "previous_response_id is not supported: responses are not stored; send the whole conversation as input"
        )
    if req.conversation:
        raise InvalidRequest("conversation is not supported: conversations are not stored; send them as input")
    if req.background:
        raise InvalidRequest("background is not supported: responses are not stored to be fetched later")
    if req.truncation not in (None, "auto", "disabled"):
        raise InvalidRequest(f"invalid truncation {req.truncation!r}: use auto or disabled")


def _image(part: InputImage) -> str:
    url = part.image_url or ""
    if not url:
        raise InvalidRequest("input_image needs an image_url (file ids are not supported: files are not stored)")
    if not url.startswith("data:") or "," not in url:
        raise InvalidRequest("image URLs are not currently supported, please use base64 encoded data instead")
    return url.split(",", 1)[1]


def _content(content: Any) -> tuple[str, list[str]]:
    """Text and base64 images of a message's content (a string or content parts)."""
    if isinstance(content, str):
        return content, []
    texts: list[str] = []
    images: list[str] = []
    for part in content:
        if isinstance(part, InputImage):
            images.append(_image(part))
        elif isinstance(part, InputFile):
            raise InvalidRequest("file inputs are not currently supported")
        else:
            texts.append(part.text)
    return "".join(texts), images


def _arguments(call: FunctionCallItem) -> dict[str, Any]:
    try:
        parsed = json.loads(call.arguments) if call.arguments else {}
    except ValueError as exc:
        raise InvalidRequest(f"failed to parse function call arguments of {call.name!r}: {exc}") from None
    if not isinstance(parsed, dict):
        raise InvalidRequest(f"function call arguments of {call.name!r} must be a JSON object")
    return parsed


def _messages(req: ResponsesRequest) -> list[Message]:
    """The chat messages of the instructions and the input items."""
    out: list[Message] = []
    if req.instructions:
        out.append(Message(role="system", content=req.instructions))
    if isinstance(req.input, str):
        if req.input:
            out.append(Message(role="user", content=req.input))
        return out
    names: dict[str, str] = {}
    thinking: str | None = None  # a reasoning item's text, for the assistant turn that follows it
    for item in req.input:
        if isinstance(item, ReasoningItem):
            thinking = item.encrypted_content or thinking
        elif isinstance(item, InputMessage):
            text, images = _content(item.content)
            role = "system" if item.role == "developer" else item.role
            mine = thinking if role == "assistant" else None
            thinking = None if mine else thinking
            out.append(Message(role=role, content=text, images=images or None, thinking=mine))
        elif isinstance(item, FunctionCallItem):
            names[item.call_id] = item.name
            call = ToolCall(id=item.call_id, function=ToolCallFunction(name=item.name, arguments=_arguments(item)))
            if out and out[-1].role == "assistant":  # calls of one turn go into one assistant message
                last = out[-1]
                out[-1] = last.model_copy(update={"tool_calls": [*(last.tool_calls or []), call]})
            else:
                out.append(Message(role="assistant", tool_calls=[call], thinking=thinking))
                thinking = None
        elif isinstance(item, FunctionCallOutputItem):
            text, images = _content(item.output)
            out.append(
                Message(
                    role="tool",
                    content=text,
                    images=images or None,
                    tool_call_id=item.call_id,
                    tool_name=names.get(item.call_id),
                )
            )
    if thinking:
        out.append(Message(role="assistant", thinking=thinking))
    return out


def _format(req: ResponsesRequest) -> str | dict[str, Any] | None:
    fmt = req.text.format if req.text else None
    if fmt is None or fmt.type == "text":
        return None
    if fmt.type == "json_object":
        return "json"
    if fmt.type == "json_schema":
        if not isinstance(fmt.schema_, dict):
            raise InvalidRequest("text.format json_schema needs a schema")
        return fmt.schema_
    raise InvalidRequest(f"invalid text.format type {fmt.type!r}: use text, json_object or json_schema")


def _tools(req: ResponsesRequest) -> list[dict[str, Any]] | None:
    tools = []
    for tool in req.tools or []:
        if tool.type != "function":
            raise InvalidRequest(f"tool type {tool.type!r} is not supported: only function tools are")
        if not tool.name:
            raise InvalidRequest("a function tool needs a name")
        function = {"name": tool.name, "description": tool.description, "parameters": tool.parameters or {}}
        tools.append({"type": "function", "function": {k: v for k, v in function.items() if v is not None}})
    return tools or None


def _options(req: ResponsesRequest) -> dict[str, Any]:
    options: dict[str, Any] = dict(req.options or {})
    options["temperature"] = 1.0 if req.temperature is None else req.temperature
    if req.top_p is not None:  # (Ollama leaves the model's default here, unlike chat completions)
        options["top_p"] = req.top_p
    if req.max_output_tokens is not None:
        if req.max_output_tokens < 1:
            raise InvalidRequest(f"invalid 'max_output_tokens': expected a value >= 1, got {req.max_output_tokens}")
        options["num_predict"] = req.max_output_tokens
    return options


def chat_request(req: ResponsesRequest) -> ChatRequest:
    """The Ollama chat request for a Responses request (a 400 for what cannot be served)."""
    _refuse_state(req)
    messages = _messages(req)
    if not any(m.role != "system" for m in messages):
        raise InvalidRequest("input is required: a string or a list of input items")
    data = {
        "model": req.model,
        "messages": [m.model_dump(exclude_none=True) for m in messages],
        "tools": _tools(req),
        "tool_choice": req.tool_choice,
        "format": _format(req),
        "options": _options(req),
        "think": think_of(req.reasoning.effort if req.reasoning else None),
        "truncate": None if req.truncation is None else req.truncation == "auto",
        "stream": True,
    }
    try:
        return ChatRequest.model_validate(data, strict=False)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise InvalidRequest(f"invalid value for field {where!r}: {first['msg']}") from None


# ── the answer ──────────────────────────────────────────────────────────────────────────────────


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


class ResponseEvents:
    """The stream of a response as server-sent events, each a dict with its ``type`` and ``sequence_number``.

    ``response.created`` and ``response.in_progress`` come with the first chunk (so an error found up
    front still gets its status code); thinking streams as a ``reasoning`` item, text as one ``message``
    item, each tool call as a ``function_call`` item; the last event is ``response.completed`` (or
    ``response.incomplete`` at max_output_tokens, or ``response.failed`` from :meth:`failed`).
    """

    def __init__(self, req: ResponsesRequest) -> None:
        self._base = _response_object(req, _ident("resp"), int(time.time()))
        self._sequence = 0
        self._output: list[dict[str, Any]] = []
        """Items done, in output order."""
        self._open: dict[str, Any] | None = None
        """The item being streamed (a reasoning or a message item), with its text so far."""
        self._calls_sent = False
        self._answered = False
        """A message item was opened."""

    def _event(self, kind: str, **data: Any) -> dict[str, Any]:
        event = {"type": kind, "sequence_number": self._sequence, **data}
        self._sequence += 1
        return event

    def events(self, chunks: Iterator[ChatResponse | Pending]) -> Iterator[dict[str, Any] | Pending]:
        """The events of a chat stream (PENDING passed through)."""
        started = False
        for chunk in chunks:
            if isinstance(chunk, Pending):
                yield chunk
                continue
            if not started:
                started = True
                yield self._event("response.created", response=self._base)
                yield self._event("response.in_progress", response=self._base)
            yield from self._chunk(chunk)
            if chunk.done:
                yield from self._complete(chunk)

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
        if self._open is not None and self._open["type"] != kind:
            yield from self._close()
        index = len(self._output)
        if self._open is None:
            ident = _ident("rs" if kind == "reasoning" else "msg")
            self._open = {"type": kind, "id": ident, "text": ""}
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
        self._open["text"] += delta
        where = {"item_id": self._open["id"], "output_index": index}
        if kind == "reasoning":
            yield self._event("response.reasoning_summary_text.delta", **where, summary_index=0, delta=delta)
        else:
            yield self._event("response.output_text.delta", **where, content_index=0, delta=delta, logprobs=[])

    def _close(self) -> Iterator[dict[str, Any]]:
        """Finish the open reasoning or message item."""
        opened, self._open = self._open, None
        if opened is None:
            return
        index, ident, text = len(self._output), opened["id"], opened["text"]
        where = {"item_id": ident, "output_index": index}
        if opened["type"] == "reasoning":
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
