"""OpenAI compatibility: translate ``/v1`` requests to Ollama's and Ollama's answers back.

Field mappings follow Ollama's compatibility layer (temperature and top_p default to 1.0 as in
OpenAI; ``max_tokens`` is ``num_predict``; ``finish_reason`` is ``done_reason``, or ``tool_calls``).
As an nbllm extension a request may carry Ollama ``options`` (``num_ctx`` above all, which OpenAI
clients otherwise cannot set): ``extra_body={"options": {...}}`` in the official client.
"""

from __future__ import annotations

import base64
import json
import struct
import threading
import time
from collections.abc import Iterator, Mapping
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from nbllm.engine import Pending
from nbllm.errors import InvalidRequest, ModelNotFound
from nbllm.runtime import Runtime
from nbllm.schema import (
    ChatRequest,
    ChatResponse,
    EmbedRequest,
    GenerateRequest,
    GenerateResponse,
    Message,
    ToolCall,
    ToolCallFunction,
)
from nbllm.schema.lines import ChatCompletionLines, CompletionLines
from nbllm.schema.lines import openai_id as _id
from nbllm.schema.openai import OpenAIChatRequest, OpenAICompletionRequest, OpenAIEmbeddingRequest
from nbllm.store import ModelName

__all__ = [
    "chat_completion",
    "chat_request",
    "completion",
    "completion_request",
    "embeddings",
    "model",
    "model_entry",
    "models",
    "think_of",
]

R = TypeVar("R", bound=BaseModel)

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
"""OpenAI's reasoning efforts as Ollama's ``think`` (its compatibility layer's table)."""


def _options(req: OpenAIChatRequest | OpenAICompletionRequest, extra: Mapping[str, Any] | None) -> dict[str, Any]:
    options: dict[str, Any] = dict(extra or {})
    options["temperature"] = 1.0 if req.temperature is None else req.temperature
    options["top_p"] = 1.0 if req.top_p is None else req.top_p
    limit = getattr(req, "max_completion_tokens", None) or req.max_tokens
    if limit is not None and limit < 1:  # OpenAI refuses these too (as num_predict, Ollama would never stop)
        raise InvalidRequest(f"invalid 'max_tokens': expected a value >= 1, got {limit}")
    for key, value in (
        ("num_predict", limit),
        ("seed", req.seed),
        ("frequency_penalty", req.frequency_penalty),
        ("presence_penalty", req.presence_penalty),
    ):
        if value is not None:
            options[key] = value
    if req.stop is not None:
        options["stop"] = [req.stop] if isinstance(req.stop, str) else req.stop
    return options


def _content(content: Any) -> tuple[str, list[str]]:
    """Text and base64 images of an OpenAI message content (string or list of parts)."""
    if content is None or isinstance(content, str):
        return content or "", []
    if not isinstance(content, list):
        raise InvalidRequest("invalid message content")
    texts, images = [], []
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            texts.append(str(part.get("text", "")))
        elif kind == "image_url":
            url = (part.get("image_url") or {}).get("url", "") if isinstance(part.get("image_url"), dict) else ""
            if not url.startswith("data:") or "," not in url:
                raise InvalidRequest("image URLs are not currently supported, please use base64 encoded data instead")
            images.append(url.split(",", 1)[1])
        else:
            raise InvalidRequest(f"invalid message part type {kind!r}")
    return "".join(texts), images


def think_of(effort: object) -> bool | str | None:
    """A reasoning effort as ``think`` (None when unset); an effort Ollama does not know is a 400.

    >>> think_of("none"), think_of("minimal"), think_of("xhigh"), think_of(None)
    (False, 'low', 'max', None)
    """
    if effort is None or effort == "":
        return None
    if not isinstance(effort, str) or effort not in _EFFORTS:
        choices = ", ".join(f'"{e}"' for e in _EFFORTS)
        raise InvalidRequest(f"invalid reasoning value: '{effort}' (must be one of {choices})")
    return _EFFORTS[effort]


def _think(req: OpenAIChatRequest) -> bool | str | None:
    """``reasoning.effort`` (or ``reasoning_effort``) as ``think``."""
    return think_of((req.reasoning or {}).get("effort") if req.reasoning is not None else req.reasoning_effort)


def _messages(raw: list[dict[str, Any]]) -> list[Message]:
    names: dict[str, str] = {}
    out = []
    for msg in raw:
        role = str(msg.get("role", "")).lower()
        role = "system" if role == "developer" else role
        text, images = _content(msg.get("content"))
        calls = []
        for call in msg.get("tool_calls") or []:
            fn = call.get("function", {})
            args = fn.get("arguments") or "{}"
            try:
                parsed = json.loads(args) if isinstance(args, str) else args
            except ValueError:
                raise InvalidRequest(f"tool call arguments are not JSON: {args!r}") from None
            names[str(call.get("id", ""))] = str(fn.get("name", ""))
            calls.append(
                ToolCall(id=call.get("id"), function=ToolCallFunction(name=fn.get("name", ""), arguments=parsed))
            )
        tool_name = names.get(str(msg.get("tool_call_id", ""))) if role == "tool" else None
        out.append(
            Message(
                role=role,
                content=text,
                thinking=msg.get("reasoning") if isinstance(msg.get("reasoning"), str) else None,
                images=images or None,
                tool_calls=calls or None,
                tool_name=tool_name,
                tool_call_id=msg.get("tool_call_id"),
            )
        )
    return out


def _response_format(fmt: Mapping[str, Any] | None) -> str | dict[str, Any] | None:
    if not fmt or fmt.get("type") in (None, "text"):
        return None
    if fmt.get("type") == "json_object":
        return "json"
    if fmt.get("type") == "json_schema":
        schema = (fmt.get("json_schema") or {}).get("schema")
        if not isinstance(schema, dict):
            raise InvalidRequest("response_format json_schema needs a schema")
        return schema
    raise InvalidRequest(f"invalid response_format type {fmt.get('type')!r}")


def _translated(cls: type[R], data: dict[str, Any]) -> R:
    """The Ollama request for translated OpenAI fields; a value Ollama's schema refuses is a 400."""
    try:
        return cls.model_validate(data, strict=False)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise InvalidRequest(f"invalid value for field {where!r}: {first['msg']}") from None


def chat_request(req: OpenAIChatRequest, extra_options: Mapping[str, Any] | None = None) -> ChatRequest:
    """The Ollama chat request for an OpenAI one."""
    if not req.messages:
        raise InvalidRequest("[] is too short - 'messages'")
    return _translated(
        ChatRequest,
        {
            "model": req.model,
            "messages": [m.model_dump(exclude_none=True) for m in _messages(req.messages)],
            "tools": req.tools,
            "tool_choice": req.tool_choice,
            "format": _response_format(req.response_format),
            "options": _options(req, extra_options),
            "logprobs": req.logprobs,
            "top_logprobs": req.top_logprobs,
            "think": _think(req),
            "stream": True,
        },
    )


def _openai_calls(calls: list[ToolCall] | None) -> list[dict[str, Any]] | None:
    if not calls:
        return None
    return [
        {
            "id": c.id or _id("call"),
            "index": c.function.index or 0,
            "type": "function",
            "function": {"name": c.function.name, "arguments": json.dumps(c.function.arguments)},
        }
        for c in calls
    ]


def _logprobs(items: Any) -> dict[str, Any] | None:
    if not items:
        return None
    return {"content": [lp.model_dump(exclude_none=True) for lp in items]}


def _usage(final: ChatResponse | GenerateResponse) -> dict[str, Any]:
    """OpenAI's usage: the whole prompt, and of it the tokens reused from the cache (``cached_tokens``)."""
    prompt, completion_tokens = final.prompt_eval_count or 0, final.eval_count or 0
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": final.prompt_cached_count or 0},
    }


def chat_completion(
    chunks: Iterator[ChatResponse | str | Pending],
    model: str,
    *,
    stream: bool,
    include_usage: bool = False,
    lines: ChatCompletionLines | None = None,
) -> Iterator[dict[str, Any] | str | Pending]:
    """OpenAI chat objects: one ``chat.completion`` or a series of ``chat.completion.chunk`` (a chunk that
    ``lines`` wrote, the stream's per-token path, as its event: ``lines.ident``, ``lines.created``)."""
    ident, created = (lines.ident, lines.created) if lines is not None else (_id("chatcmpl"), int(time.time()))
    base = {"id": ident, "created": created, "model": model, "system_fingerprint": "fp_ollama"}
    content: list[str] = []
    reasoning: list[str] = []
    calls: list[ToolCall] = []
    logprobs: list[Any] = []
    for chunk in chunks:
        if isinstance(chunk, (Pending, str)):
            yield chunk
            continue
        content.append(chunk.message.content)
        reasoning.append(chunk.message.thinking or "")
        calls.extend(chunk.message.tool_calls or [])
        logprobs.extend(chunk.logprobs or [])
        if not stream:
            final = chunk
            continue
        finish = None
        if chunk.done:
            finish = "tool_calls" if calls else (chunk.done_reason or "stop")
        delta: dict[str, Any] = {"role": "assistant", "content": chunk.message.content}
        if chunk.message.thinking:
            delta["reasoning"] = chunk.message.thinking
        if chunk.message.tool_calls:
            delta["tool_calls"] = _openai_calls(chunk.message.tool_calls)
        choice = {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": _logprobs(chunk.logprobs)}
        yield {**base, "object": "chat.completion.chunk", "choices": [choice]}
        if chunk.done and include_usage:
            yield {**base, "object": "chat.completion.chunk", "choices": [], "usage": _usage(chunk)}
    if stream:
        return
    message: dict[str, Any] = {"role": "assistant", "content": "".join(content)}
    if any(reasoning):
        message["reasoning"] = "".join(reasoning)
    if calls:
        message["tool_calls"] = _openai_calls(calls)
    finish = "tool_calls" if calls else (final.done_reason or "stop")
    choice = {"index": 0, "message": message, "finish_reason": finish, "logprobs": _logprobs(logprobs)}
    yield {**base, "object": "chat.completion", "choices": [choice], "usage": _usage(final)}


def completion_request(req: OpenAICompletionRequest, extra_options: Mapping[str, Any] | None = None) -> GenerateRequest:
    """The Ollama generate request for an OpenAI completion."""
    if not isinstance(req.prompt, str):
        raise InvalidRequest("invalid type for 'prompt' field: only a string is supported")
    return _translated(
        GenerateRequest,
        {
            "model": req.model,
            "prompt": req.prompt,
            "suffix": req.suffix,
            "options": _options(req, extra_options),
            "logprobs": bool(req.logprobs) or None,
            "top_logprobs": req.logprobs or None,
            "stream": True,
        },
    )


def completion(
    chunks: Iterator[GenerateResponse | str | Pending],
    model: str,
    *,
    stream: bool,
    include_usage: bool = False,
    lines: CompletionLines | None = None,
) -> Iterator[dict[str, Any] | str | Pending]:
    """OpenAI ``text_completion`` objects (one, or one per chunk when streaming; ``lines``: as ``chat_completion``)."""
    ident, created = (lines.ident, lines.created) if lines is not None else (_id("cmpl"), int(time.time()))
    base = {
        "id": ident,
        "object": "text_completion",
        "created": created,
        "model": model,
        "system_fingerprint": "fp_ollama",
    }
    text: list[str] = []
    for chunk in chunks:
        if isinstance(chunk, (Pending, str)):
            yield chunk
            continue
        text.append(chunk.response)
        if stream:
            finish = (chunk.done_reason or "stop") if chunk.done else None
            yield {**base, "choices": [{"text": chunk.response, "index": 0, "finish_reason": finish}]}
            if chunk.done and include_usage:
                yield {**base, "choices": [], "usage": _usage(chunk)}
        final = chunk
    if not stream:
        choice = {"text": "".join(text), "index": 0, "finish_reason": final.done_reason or "stop"}
        yield {**base, "choices": [choice], "usage": _usage(final)}


def embeddings(
    rt: Runtime,
    req: OpenAIEmbeddingRequest,
    extra_options: Mapping[str, Any] | None = None,
    *,
    cancel: threading.Event | None = None,
) -> dict[str, Any]:
    """``/v1/embeddings`` through ``/api/embed``."""
    from nbllm.service.embed import embed

    inputs = req.input
    if not (isinstance(inputs, str) or (isinstance(inputs, list) and all(isinstance(i, str) for i in inputs))):
        raise InvalidRequest("invalid input")
    if not inputs:  # as Ollama translates them: "" is one empty text, [] no input at all (a 400)
        if isinstance(inputs, list):
            raise InvalidRequest("invalid input")
        inputs = [""]
    if req.encoding_format not in (None, "float", "base64"):
        raise InvalidRequest(f"invalid encoding format: {req.encoding_format}")
    resp = embed(
        rt,
        EmbedRequest(
            model=req.model, input=inputs, dimensions=req.dimensions, options=dict(extra_options or {}) or None
        ),
        cancel=cancel,
    )
    data = []
    for i, vector in enumerate(resp.embeddings):
        value: Any = vector
        if req.encoding_format == "base64":
            value = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
        data.append({"object": "embedding", "embedding": value, "index": i})
    tokens = resp.prompt_eval_count or 0
    return {
        "object": "list",
        "data": data,
        "model": req.model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


def model_entry(name: ModelName, created: int) -> dict[str, Any]:
    """One model as ``/v1/models`` lists it."""
    return {"id": name.display, "object": "model", "created": created, "owned_by": name.namespace}


def models(rt: Runtime) -> dict[str, Any]:
    """``/v1/models``."""
    data = [model_entry(m.name, int(m.modified_at.timestamp())) for m in rt.store.models()]
    return {"object": "list", "data": data}


def model(rt: Runtime, name: str) -> dict[str, Any]:
    """``/v1/models/{model}``."""
    found = rt.store.find(name) if ModelName.is_valid(name) else None
    if found is None:
        raise ModelNotFound(name)
    return model_entry(found.name, int(found.modified_at.timestamp()))
