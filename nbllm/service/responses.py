"""OpenAI Responses (``/v1/responses``) requests as chat requests, stateless as Ollama serves them.

A request becomes one ``/api/chat`` request: ``instructions`` a system message, input items messages
(``function_call`` items the assistant's tool calls, ``function_call_output`` items tool messages),
``reasoning.effort`` the ``think`` value, ``text.format`` the ``format``. Nothing is stored:
``previous_response_id``, ``conversation`` and ``background`` are refused with a 400. The answer's
shapes are in ``service.response_output``.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import ValidationError

from nbllm.errors import InvalidRequest
from nbllm.schema import ChatRequest, Message, ToolCall, ToolCallFunction
from nbllm.schema.responses import (
    FunctionCallItem,
    FunctionCallOutputItem,
    InputFile,
    InputImage,
    InputMessage,
    ReasoningItem,
    ResponsesRequest,
)
from nbllm.service.openai import think_of

__all__ = ["chat_request", "think_of"]


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
