"""Tool calls, structured output and prompt rendering with the real model, through the live server."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import jsonschema
import ollama
import pytest

from nbllm.server import BackgroundServer

MODEL = "smollm2:135m"
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_current_weather",
        "description": "Get the current weather for a location",
        "parameters": {
            "type": "object",
            "properties": {
                "location": {"type": "string", "description": "The location, e.g. San Francisco, CA"},
                "format": {"type": "string", "description": "celsius or fahrenheit", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["location", "format"],
        },
    },
}
TIME = {
    "type": "function",
    "function": {
        "name": "get_time",
        "description": "Current time in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
QUESTION = [{"role": "user", "content": "What is the weather in Paris in celsius?"}]
GREEDY = {"temperature": 0, "num_predict": 96}


@pytest.fixture
def http(live_server: BackgroundServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=live_server.url, timeout=120) as client:
        yield client


@pytest.fixture
def client(live_server: BackgroundServer) -> Iterator[ollama.Client]:
    c = ollama.Client(host=live_server.url)
    yield c
    c._client.close()


def chat(http: httpx.Client, **body: object) -> ollama.ChatResponse:
    resp = http.post("/api/chat", json={"model": MODEL, "stream": False, "options": GREEDY, **body})
    assert resp.status_code == 200, resp.text
    return ollama.ChatResponse.model_validate(resp.json())  # parses into the official client's types


@pytest.mark.parametrize("choice", ["required", {"type": "function", "function": {"name": "get_current_weather"}}])
def test_forced_tool_call_is_well_formed(http: httpx.Client, choice: object) -> None:
    resp = chat(http, messages=QUESTION, tools=[WEATHER, TIME], tool_choice=choice)
    assert resp.message.tool_calls and len(resp.message.tool_calls) >= 1
    call = resp.message.tool_calls[0].function
    assert call.name == "get_current_weather"
    assert call.arguments["location"] == "Paris" and call.arguments["format"] == "celsius"
    assert resp.message.content == "" and resp.done_reason == "stop"


def test_named_tool_choice_restricts_the_call(http: httpx.Client) -> None:
    resp = chat(http, messages=QUESTION, tools=[WEATHER, TIME], tool_choice={"function": {"name": "get_time"}})
    assert resp.message.tool_calls and resp.message.tool_calls[0].function.name == "get_time"
    assert set(resp.message.tool_calls[0].function.arguments) == {"city"}


def test_streamed_tool_call_arrives_in_a_chunk(http: httpx.Client) -> None:
    body = {"model": MODEL, "messages": QUESTION, "tools": [WEATHER], "tool_choice": "required", "options": GREEDY}
    with http.stream("POST", "/api/chat", json=body) as resp:
        chunks = [ollama.ChatResponse.model_validate(json.loads(line)) for line in resp.iter_lines() if line]
    calls = [c for chunk in chunks for c in (chunk.message.tool_calls or [])]
    assert len(calls) == 1 and calls[0].function.arguments["location"] == "Paris"
    assert chunks[-1].done and chunks[-1].eval_count == len(chunks) - 1


def test_auto_tool_choice_with_the_official_client(client: ollama.Client) -> None:
    # SmolLM2 tends to answer this in prose when free to choose; either outcome must be well-formed.
    resp = client.chat(MODEL, messages=QUESTION, tools=[WEATHER], options=GREEDY)
    if resp.message.tool_calls:
        assert resp.message.tool_calls[0].function.name == "get_current_weather"
    else:
        assert resp.message.content


def test_tool_round_trip(http: httpx.Client) -> None:
    first = chat(http, messages=QUESTION, tools=[WEATHER], tool_choice="required")
    assert first.message.tool_calls
    call = first.message.tool_calls[0]
    history = [
        *QUESTION,
        {"role": "assistant", "content": "", "tool_calls": [call.model_dump(exclude_none=True)]},
        {"role": "tool", "tool_name": "get_current_weather", "content": "22 degrees celsius and sunny"},
    ]
    rendered = http.post(
        "/api/chat", json={"model": MODEL, "messages": history, "tools": [WEATHER], "_debug_render_only": True}
    ).json()
    prompt = rendered["_debug_info"]["rendered_template"]
    assert (
        '<tool_call>\n{"name": "get_current_weather", "arguments": {"format":"celsius","location":"Paris"}}' in prompt
    )
    assert prompt.endswith(
        "<tool_response>\n22 degrees celsius and sunny\n</tool_response><|im_end|>\n<|im_start|>assistant\n"
    )
    final = chat(http, messages=history, tools=[WEATHER])
    assert not final.message.tool_calls and final.message.content.strip()


def test_tools_on_a_model_without_tool_support(http: httpx.Client, live_server: BackgroundServer) -> None:
    rt = live_server.runtime
    smol = rt.store.get(MODEL)
    assert smol.model_path is not None
    from tests.support.models import install_model

    install_model(rt.store, "plain-smol", smol.model_path, template="{{ .Prompt }}")
    resp = http.post("/api/chat", json={"model": "plain-smol", "messages": QUESTION, "tools": [WEATHER]})
    assert resp.status_code == 400
    assert resp.json() == {"error": "registry.ollama.ai/library/plain-smol:latest does not support tools"}


def test_format_json_always_parses(client: ollama.Client) -> None:
    resp = client.generate(
        MODEL,
        "Describe a cat as JSON with fields name and age.",
        format="json",
        options={"temperature": 0.7, "seed": 3, "num_predict": 80},
    )
    assert isinstance(json.loads(resp.response), dict)


def test_format_schema_output_validates(client: ollama.Client) -> None:
    schema = {
        "type": "object",
        "properties": {
            "city": {"type": "string"},
            "country": {"type": "string"},
            "population": {"type": "integer"},
            "capital": {"type": "boolean"},
        },
        "required": ["city", "country", "population", "capital"],
    }
    for seed in (1, 2):
        resp = client.chat(
            MODEL,
            messages=[{"role": "user", "content": "Tell me about Paris."}],
            format=schema,
            options={"temperature": 0.8, "seed": seed, "num_predict": 120},
        )
        jsonschema.validate(json.loads(resp.message.content), schema)


def test_bad_format_and_tool_choice_are_400(http: httpx.Client) -> None:
    bad = http.post("/api/generate", json={"model": MODEL, "prompt": "x", "format": "yaml"})
    assert bad.status_code == 400 and "invalid format" in bad.json()["error"]
    wrong = http.post(
        "/api/chat",
        json={"model": MODEL, "messages": QUESTION, "tools": [WEATHER], "tool_choice": {"function": {"name": "nope"}}},
    )
    assert wrong.status_code == 400 and "nope" in wrong.json()["error"]


def test_generate_render_only(http: httpx.Client) -> None:
    body = {"model": MODEL, "prompt": "Hello", "system": "Be brief.", "_debug_render_only": True}
    info = http.post("/api/generate", json=body).json()["_debug_info"]
    assert info == {
        "rendered_template": "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHello<|im_end|>\n"
        "<|im_start|>assistant\n",
        "image_count": 0,
    }
