"""``service.responses`` on hand-made chat chunks: the input translation and the output items and events.

The real engine drives ``/v1/responses`` in ``tests/contract/test_responses.py``; these cover what
SmolLM2 cannot produce (thinking, before a thinking model exists in the tests) and the item merging.
"""

from __future__ import annotations

from typing import Any

import pytest

from nbllm.errors import InvalidRequest
from nbllm.schema import ChatResponse, Message, ToolCall, ToolCallFunction
from nbllm.schema.responses import ResponsesRequest
from nbllm.service.response_output import ResponseEvents, response
from nbllm.service.responses import chat_request


def _chunk(content: str = "", thinking: str | None = None, *, done: bool = False, **extra: Any) -> ChatResponse:
    message = Message(role="assistant", content=content, thinking=thinking, **extra)
    stats = {"done_reason": "stop", "prompt_eval_count": 7, "eval_count": 5} if done else {}
    return ChatResponse(model="m", created_at="t", message=message, done=done, **stats)


THOUGHT = [_chunk(thinking="Let me "), _chunk(thinking="think."), _chunk("The answer"), _chunk(" is 4.", done=True)]


def test_thinking_is_a_reasoning_item_before_the_message() -> None:
    [resp] = list(response(iter(THOUGHT), ResponsesRequest(model="m", input="2+2?")))
    assert isinstance(resp, dict)
    reasoning, message = resp["output"]
    assert reasoning["type"] == "reasoning" and reasoning["summary"] == [
        {"type": "summary_text", "text": "Let me think."}
    ]
    assert message["content"][0]["text"] == "The answer is 4." and resp["status"] == "completed"
    assert resp["usage"]["input_tokens"] == 7 and resp["usage"]["total_tokens"] == 12


def test_thinking_streams_as_reasoning_summary_events_then_the_text() -> None:
    events = [e for e in ResponseEvents(ResponsesRequest(model="m", input="2+2?")).events(iter(THOUGHT))]
    assert all(isinstance(e, dict) for e in events)
    kinds = [e["type"] for e in events if isinstance(e, dict)]
    assert kinds == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.reasoning_summary_text.delta",
        "response.reasoning_summary_text.delta",
        "response.reasoning_summary_text.done",
        "response.output_item.done",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    final = events[-1]
    assert isinstance(final, dict)
    assert [item["type"] for item in final["response"]["output"]] == ["reasoning", "message"]
    assert [e["output_index"] for e in events[2:-1] if isinstance(e, dict)] == [0] * 5 + [1] * 7


def test_a_stream_cut_at_max_output_tokens_is_incomplete() -> None:
    cut = [_chunk("Once upon"), _chunk(" a", done=True).model_copy(update={"done_reason": "length"})]
    [resp] = list(response(iter(cut), ResponsesRequest(model="m", input="story")))
    assert isinstance(resp, dict)
    assert resp["status"] == "incomplete" and resp["incomplete_details"] == {"reason": "max_output_tokens"}
    events = list(ResponseEvents(ResponsesRequest(model="m", input="story")).events(iter(cut)))
    assert isinstance(events[-1], dict) and events[-1]["type"] == "response.incomplete"


def test_history_items_become_chat_messages() -> None:
    req = ResponsesRequest.model_validate(
        {
            "model": "m",
            "instructions": "Be brief.",
            "input": [
                {"role": "developer", "content": "Use metric units."},
                {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Weather?"}]},
                {"type": "reasoning", "encrypted_content": "I should call the tool."},
                {"type": "function_call", "call_id": "c1", "name": "weather", "arguments": '{"city": "Paris"}'},
                {"type": "function_call", "call_id": "c2", "name": "time", "arguments": ""},
                {"type": "function_call_output", "call_id": "c1", "output": [{"type": "input_text", "text": "21 C"}]},
                {"type": "function_call_output", "call_id": "c2", "output": "noon"},
                {"role": "assistant", "content": [{"type": "output_text", "text": "21 C at noon."}]},
            ],
            "max_output_tokens": 9,
            "top_p": 0.5,
        }
    )
    chat = chat_request(req)
    assert [m.role for m in chat.messages or []] == [
        "system",
        "system",
        "user",
        "assistant",
        "tool",
        "tool",
        "assistant",
    ]
    calls = (chat.messages or [])[3]
    assert calls.thinking == "I should call the tool."
    assert calls.tool_calls == [
        ToolCall(id="c1", function=ToolCallFunction(name="weather", arguments={"city": "Paris"})),
        ToolCall(id="c2", function=ToolCallFunction(name="time", arguments={})),
    ]
    tool = (chat.messages or [])[4]
    assert (tool.content, tool.tool_call_id, tool.tool_name) == ("21 C", "c1", "weather")
    assert chat.options == {"temperature": 1.0, "top_p": 0.5, "num_predict": 9}


def test_reasoning_effort_is_think() -> None:
    think = [
        chat_request(ResponsesRequest(model="m", input="x", reasoning={"effort": e})).think
        for e in ("none", "minimal", "high", "xhigh")
    ]  # type: ignore[arg-type]
    assert think == [False, "low", "high", "max"]
    with pytest.raises(InvalidRequest, match="invalid reasoning value"):
        chat_request(ResponsesRequest(model="m", input="x", reasoning={"effort": "lots"}))  # type: ignore[arg-type]


def test_text_format_is_the_chat_format() -> None:
    schema = {"type": "object", "properties": {"legs": {"type": "integer"}}, "required": ["legs"]}
    formats: list[Any] = [
        {"type": "json_schema", "name": "animal", "schema": schema},
        {"type": "json_object"},
        {"type": "text"},
    ]
    chats = [chat_request(ResponsesRequest.model_validate({"input": "x", "text": {"format": f}})) for f in formats]
    assert [c.format for c in chats] == [schema, "json", None]


def test_calls_not_streamed_are_function_call_items() -> None:
    call = ToolCall(id="call_1", function=ToolCallFunction(index=0, name="weather", arguments={"city": "Rome"}))
    chunks = [_chunk(tool_calls=[call]), _chunk(done=True)]
    [resp] = list(response(iter(chunks), ResponsesRequest(model="m", input="Rome?")))
    assert isinstance(resp, dict)
    assert resp["output"] == [
        {
            "id": resp["output"][0]["id"],
            "type": "function_call",
            "status": "completed",
            "call_id": "call_1",
            "name": "weather",
            "arguments": '{"city": "Rome"}',
        }
    ]
