"""The official ``openai`` client against nbllm's ``/v1`` endpoints with the real model."""

from __future__ import annotations

import base64
import json
import struct
from collections.abc import Iterator

import jsonschema
import openai
import pytest

from nbllm.server import BackgroundServer
from tests.support.model_facts import ModelFacts

MODEL = "smollm2:135m"
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_current_weather",
        "description": "Get the current weather for a location",
        "parameters": {
            "type": "object",
            "properties": {
                "location": {"type": "string"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["location", "unit"],
        },
    },
}


@pytest.fixture
def client(live_server: BackgroundServer) -> Iterator[openai.OpenAI]:
    c = openai.OpenAI(base_url=live_server.url + "/v1", api_key="nbllm")
    yield c
    c.close()


def test_chat_completion(client: openai.OpenAI) -> None:
    resp = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Say hello to Ada."}], temperature=0, max_tokens=24
    )
    assert resp.object == "chat.completion" and resp.id.startswith("chatcmpl-")
    choice = resp.choices[0]
    assert choice.message.role == "assistant" and choice.message.content
    assert choice.finish_reason in ("stop", "length")
    assert (
        resp.usage
        and resp.usage.completion_tokens > 0
        and resp.usage.total_tokens == (resp.usage.prompt_tokens + resp.usage.completion_tokens)
    )


def test_streaming_with_usage(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Count to three."}],
        temperature=0,
        max_tokens=20,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    whole = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Count to three."}], temperature=0, max_tokens=20
    )
    assert text == whole.choices[0].message.content
    finals = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(finals) == 1 and chunks[-1].usage and chunks[-1].usage.completion_tokens == 20


def test_forced_tool_call_and_round_trip(client: openai.OpenAI) -> None:
    messages: list[dict[str, object]] = [{"role": "user", "content": "What is the weather in Paris in celsius?"}]
    resp = client.chat.completions.create(
        model=MODEL, messages=messages, tools=[WEATHER], tool_choice="required", temperature=0
    )
    choice = resp.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.tool_calls
    call = choice.message.tool_calls[0]
    assert call.type == "function" and call.function.name == "get_current_weather"
    assert json.loads(call.function.arguments) == {"location": "Paris", "unit": "celsius"}
    messages += [
        choice.message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "21 C, clear sky"},
    ]
    final = client.chat.completions.create(
        model=MODEL, messages=messages, tools=[WEATHER], temperature=0, max_tokens=40
    )
    assert final.choices[0].message.content and not final.choices[0].message.tool_calls


def test_named_tool_choice_streams_the_call(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Weather in Rome?"}],
        tools=[WEATHER],
        tool_choice={"type": "function", "function": {"name": "get_current_weather"}},
        temperature=0,
        stream=True,
    )
    calls = [tc for c in stream if c.choices for tc in (c.choices[0].delta.tool_calls or [])]
    assert len(calls) == 1 and calls[0].function and calls[0].function.name == "get_current_weather"


def test_response_format_json_schema(client: openai.OpenAI) -> None:
    schema = {
        "type": "object",
        "properties": {"name": {"type": "string"}, "legs": {"type": "integer"}},
        "required": ["name", "legs"],
    }
    resp = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Describe a spider."}],
        temperature=0,
        max_tokens=60,
        response_format={"type": "json_schema", "json_schema": {"name": "animal", "schema": schema}},
    )
    jsonschema.validate(json.loads(resp.choices[0].message.content or ""), schema)


def test_num_ctx_through_extra_body(client: openai.OpenAI, live_server: BackgroundServer) -> None:
    client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Hi"}],
        max_tokens=2,
        extra_body={"options": {"num_ctx": 1024}},
    )
    loaded = {v.name: v for v in live_server.runtime.scheduler.ps()}
    assert loaded[MODEL].context_length == 1024


def test_completions(client: openai.OpenAI) -> None:
    resp = client.completions.create(model=MODEL, prompt="The capital of France is", temperature=0, max_tokens=8)
    assert resp.object == "text_completion" and resp.choices[0].text and resp.usage
    streamed = "".join(
        c.choices[0].text
        for c in client.completions.create(
            model=MODEL, prompt="The capital of France is", temperature=0, max_tokens=8, stream=True
        )
        if c.choices
    )
    assert streamed == resp.choices[0].text


def test_embeddings(client: openai.OpenAI, smollm2_facts: ModelFacts) -> None:
    resp = client.embeddings.create(model=MODEL, input=["one", "two"])
    assert [d.index for d in resp.data] == [0, 1] and len(resp.data[0].embedding) == smollm2_facts.embedding_length
    assert resp.usage.prompt_tokens > 0
    encoded = client.embeddings.create(model=MODEL, input="one", encoding_format="base64")
    raw = base64.b64decode(encoded.data[0].embedding)  # type: ignore[arg-type]
    assert struct.unpack("<576f", raw) == pytest.approx(resp.data[0].embedding, rel=1e-5)


def test_models(client: openai.OpenAI) -> None:
    ids = [m.id for m in client.models.list()]
    assert MODEL in ids
    one = client.models.retrieve(MODEL)
    assert one.id == MODEL and one.owned_by == "library"


def test_errors_are_openai_shaped(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as missing:
        client.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "x"}])
    assert missing.value.status_code == 404 and "not found" in str(missing.value)
    with pytest.raises(openai.BadRequestError, match="too short"):
        client.chat.completions.create(model=MODEL, messages=[])
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("no-such-model")
