"""The official ``openai`` client's ``responses.create`` against nbllm's ``/v1/responses`` with the real model."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import jsonschema
import openai
import pytest

from nbllm.server import BackgroundServer

MODEL = "smollm2:135m"
WEATHER: Any = {
    "type": "function",
    "name": "get_current_weather",
    "description": "Get the current weather for a location",
    "parameters": {
        "type": "object",
        "properties": {"location": {"type": "string"}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
        "required": ["location", "unit"],
    },
}
QUESTION = "What is the weather in Paris in celsius?"


@pytest.fixture
def client(live_server: BackgroundServer) -> Iterator[openai.OpenAI]:
    c = openai.OpenAI(base_url=live_server.url + "/v1", api_key="nbllm", max_retries=0)
    yield c
    c.close()


@pytest.fixture
def http(live_server: BackgroundServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=live_server.url, timeout=120) as c:
        yield c


def test_text_response_and_the_same_text_streamed(client: openai.OpenAI) -> None:
    ask: Any = {
        "model": MODEL,
        "instructions": "You are a friendly assistant.",
        "input": "Say hello to Ada.",
        "temperature": 0,
        "max_output_tokens": 12,
    }
    resp = client.responses.create(**ask)
    assert resp.object == "response" and resp.id.startswith("resp_") and resp.model == MODEL
    assert resp.instructions == "You are a friendly assistant." and resp.store is False
    [item] = resp.output
    assert item.type == "message" and item.role == "assistant" and resp.output_text
    usage = resp.usage
    assert usage and usage.output_tokens > 0 and usage.total_tokens == usage.input_tokens + usage.output_tokens
    if resp.status == "incomplete":  # it stopped at max_output_tokens: OpenAI's way to say so
        assert resp.incomplete_details and resp.incomplete_details.reason == "max_output_tokens"
        assert usage.output_tokens == 12
    else:
        assert resp.status == "completed" and resp.incomplete_details is None

    events = list(client.responses.create(**ask, stream=True))
    kinds = [e.type for e in events]
    assert kinds[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert kinds[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed" if resp.status == "completed" else "response.incomplete",
    ]
    assert set(kinds[4:-4]) == {"response.output_text.delta"}
    assert [e.sequence_number for e in events] == list(range(len(events)))
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    final = events[-1].response  # type: ignore[union-attr]
    assert deltas == resp.output_text == final.output_text  # greedy: the same text both ways
    assert final.usage and final.usage.output_tokens == usage.output_tokens


def test_forced_tool_call_and_function_call_output_round_trip(client: openai.OpenAI) -> None:
    resp = client.responses.create(
        model=MODEL, input=QUESTION, tools=[WEATHER], tool_choice="required", temperature=0, max_output_tokens=96
    )
    [call] = resp.output
    assert call.type == "function_call" and call.status == "completed" and call.name == "get_current_weather"
    assert json.loads(call.arguments) == {"location": "Paris", "unit": "celsius"}
    history: list[Any] = [
        {"role": "user", "content": QUESTION},
        call.model_dump(exclude_none=True),
        {"type": "function_call_output", "call_id": call.call_id, "output": "21 C, clear sky"},
    ]
    final = client.responses.create(model=MODEL, input=history, tools=[WEATHER], temperature=0, max_output_tokens=8)
    assert [item.type for item in final.output] == ["message"] and final.output_text


def test_streamed_tool_call_events(client: openai.OpenAI) -> None:
    events = list(
        client.responses.create(
            model=MODEL,
            input="Weather in Rome?",
            tools=[WEATHER],
            tool_choice={"type": "function", "name": "get_current_weather"},
            temperature=0,
            max_output_tokens=96,
            stream=True,
        )
    )
    kinds = [e.type for e in events]
    assert kinds[2:] == [
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    done = events[-1].response  # type: ignore[union-attr]
    [call] = done.output
    assert call.type == "function_call" and call.name == "get_current_weather"
    assert json.loads(call.arguments)["location"] == "Rome"
    assert call.arguments == events[4].arguments  # type: ignore[union-attr]


def test_text_format_json_schema(client: openai.OpenAI) -> None:
    schema = {
        "type": "object",
        "properties": {"name": {"type": "string"}, "legs": {"type": "integer"}},
        "required": ["name", "legs"],
    }
    resp = client.responses.create(
        model=MODEL,
        input="Describe a spider.",
        temperature=0,
        max_output_tokens=60,
        text={"format": {"type": "json_schema", "name": "animal", "schema": schema}},
    )
    jsonschema.validate(json.loads(resp.output_text), schema)
    assert resp.text.format and resp.text.format.type == "json_schema"


def test_reasoning_effort_maps_to_think(client: openai.OpenAI) -> None:
    """``none`` is think off (served); an effort asks a model that cannot think: Ollama's 400; a bad one: 400."""
    off = client.responses.create(model=MODEL, input="Hi", reasoning={"effort": "none"}, max_output_tokens=2)
    assert off.output[0].type == "message" and off.reasoning and off.reasoning.effort == "none"
    with pytest.raises(openai.BadRequestError, match="does not support thinking"):
        client.responses.create(model=MODEL, input="Hi", reasoning={"effort": "high"}, max_output_tokens=2)
    with pytest.raises(openai.BadRequestError, match="invalid reasoning value"):
        client.responses.create(model=MODEL, input="Hi", reasoning={"effort": "huge"})  # type: ignore[typeddict-item]


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        ({"previous_response_id": "resp_123"}, "previous_response_id is not supported"),
        ({"conversation": "conv_123"}, "conversation is not supported"),
        ({"background": True}, "background is not supported"),
    ],
)
def test_stored_state_is_refused(client: openai.OpenAI, extra: dict[str, Any], words: str) -> None:
    with pytest.raises(openai.BadRequestError, match=words) as refused:
        client.responses.create(model=MODEL, input="Hi", **extra)
    assert refused.value.status_code == 400
    assert isinstance(refused.value.body, dict) and refused.value.body["type"] == "invalid_request_error"


def test_unknown_model_is_openai_404(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError, match="not found"):
        client.responses.create(model="no-such-model", input="Hi")


HOSTILE: list[tuple[Any, str]] = [
    ({"input": [{"type": "computer_call"}]}, "unknown input item type"),
    ({"input": [{"foo": 1}]}, "unknown input item type"),
    ({"input": [1, 2]}, "unknown input item type"),
    ({"input": 42}, "expected a string or an array of input items"),
    ({"input": [{"role": "user", "content": {"text": "x"}}]}, "input[0].content"),
    ({"input": [{"role": "user", "content": [{"type": "audio"}]}]}, "unknown content type"),
    ({"input": [{"role": "user", "content": [{"type": "input_text"}]}]}, "input[0].content[0].text"),
    ({"input": [{"role": "tool", "content": "x"}]}, "input[0].role"),
    ({"input": [{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}]}, "file inputs"),
    ({"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "http://x/a.png"}]}]}, "image URLs"),
    ({"input": [{"role": "user", "content": [{"type": "input_image", "file_id": "f"}]}]}, "image_url"),
    ({"input": [{"type": "function_call", "call_id": "c", "name": "f", "arguments": "{"}]}, "arguments"),
    ({"input": [{"type": "function_call", "call_id": "c", "name": "f", "arguments": "[1]"}]}, "JSON object"),
    ({"input": [{"type": "function_call_output", "call_id": "c"}]}, "input[0].output"),
    ({"input": "x", "tools": [{"type": "web_search"}]}, "only function tools"),
    ({"input": "x", "tools": [3]}, "tools[0]"),
    ({"input": "x", "text": {"format": {"type": "yaml"}}}, "text.format"),
    ({"input": "x", "text": {"format": {"type": "json_schema"}}}, "needs a schema"),
    ({"input": "x", "max_output_tokens": 0}, "max_output_tokens"),
    ({"input": "x", "max_output_tokens": "lots"}, "max_output_tokens"),
    ({"input": "x", "temperature": "hot"}, "temperature"),
    ({"input": "x", "truncation": "sometimes"}, "truncation"),
    ({"input": "x", "tool_choice": {"type": "function", "name": "missing"}, "tools": [WEATHER]}, "not in tools"),
    ({"input": "x", "options": {"num_ctx": "big"}}, "num_ctx"),
    ({"input": ""}, "input is required"),
    ({"instructions": "only this"}, "input is required"),
]


@pytest.mark.parametrize(("body", "words"), HOSTILE)
def test_hostile_bodies_are_openai_400s(http: httpx.Client, body: dict[str, Any], words: str) -> None:
    resp = http.post("/v1/responses", json={"model": MODEL, **body})
    assert resp.status_code == 400, resp.text
    error = resp.json()["error"]
    assert error["type"] == "invalid_request_error" and words in error["message"], error


@pytest.mark.parametrize(
    "raw",
    [b"", b"[1]", b'"input"', b"{not json", b'{"input": ["x"', b'{"model": "smollm2:135m", "input": "\\ud800"}'],
)
def test_malformed_json_is_an_openai_400(http: httpx.Client, raw: bytes) -> None:
    resp = http.post("/v1/responses", content=raw, headers={"Content-Type": "application/json"})
    assert resp.status_code == 400 and resp.json()["error"]["type"] == "invalid_request_error", resp.text


def test_huge_input_is_refused_not_a_500(http: httpx.Client) -> None:
    """Inputs far over the context with ``truncation: disabled``: a 400 (by default old turns are dropped)."""
    huge = "lorem ipsum " * 40_000  # ~80k tokens, over smollm2's context
    refused = http.post("/v1/responses", json={"model": MODEL, "input": huge, "truncation": "disabled"})
    assert refused.status_code == 400 and "context" in refused.json()["error"]["message"], refused.text
    many: list[Any] = [{"role": "user", "content": "hello"}] * 2_000
    items = http.post("/v1/responses", json={"model": MODEL, "input": many, "truncation": "disabled"})
    assert items.status_code == 400 and "context" in items.json()["error"]["message"], items.text
    still = http.post("/v1/responses", json={"model": MODEL, "input": "Hi", "max_output_tokens": 1})
    assert still.status_code == 200 and still.json()["usage"]["output_tokens"] == 1, still.text
