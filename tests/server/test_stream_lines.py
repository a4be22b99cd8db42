"""On a real server: every streamed NDJSON line is the bytes its pydantic model dumps (per-token lines are
written without building the model: ``nbllm.schema.lines``), and the stream adds up to the whole answer."""

from __future__ import annotations

import json

import httpx
import pytest

from nbllm.runtime import Runtime
from nbllm.schema import ChatResponse, GenerateResponse
from nbllm.server import BackgroundServer

_OPTIONS = {"temperature": 0, "num_predict": 24, "num_ctx": 512}


def _lines(http: httpx.Client, path: str, body: dict[str, object]) -> list[str]:
    with http.stream("POST", path, json=body) as resp:
        assert resp.status_code == 200
        raw = resp.read().decode()
    assert raw.endswith("\n")
    return raw.splitlines()


@pytest.mark.parametrize("extra", [{}, {"logprobs": True, "top_logprobs": 2}])
def test_streamed_lines_are_the_models_bytes(real_runtime: Runtime, extra: dict[str, object]) -> None:
    generate = {"model": "smollm2:135m", "prompt": "Name three fruits, with a café émoji 🍓.", "options": _OPTIONS}
    chat = {"model": "smollm2:135m", "messages": [{"role": "user", "content": "Say hello in French."}]}
    with BackgroundServer(real_runtime) as server, httpx.Client(base_url=server.url, timeout=120) as http:
        for path, body, model in (
            ("/api/generate", {**generate, **extra}, GenerateResponse),
            ("/api/chat", {**chat, "options": _OPTIONS, **extra}, ChatResponse),
        ):
            whole = http.post(path, json={**body, "stream": False}).json()
            lines = _lines(http, path, body)
            chunks = [model.model_validate_json(line) for line in lines]
            for line, chunk in zip(lines, chunks, strict=True):
                assert line == chunk.model_dump_json(exclude_none=True, by_alias=True)
            assert chunks[-1].done and not any(c.done for c in chunks[:-1])
            if isinstance(chunks[0], GenerateResponse):
                assert "".join(c.response for c in chunks if isinstance(c, GenerateResponse)) == whole["response"]
            else:
                text = "".join(c.message.content for c in chunks if isinstance(c, ChatResponse))
                assert text == whole["message"]["content"]
            assert len(chunks) > 5
            assert all(c.logprobs for c in chunks[:-1]) == bool(extra)


def test_v1_stream_events_are_the_translations_bytes(real_runtime: Runtime) -> None:
    """``/v1`` streams: each event is ``json.dumps`` of its OpenAI chunk, one id and time for all of them."""
    chat = {"model": "smollm2:135m", "messages": [{"role": "user", "content": "Say hello in French."}]}
    completion = {"model": "smollm2:135m", "prompt": "Name three fruits, with a café émoji 🍓."}
    common = {"temperature": 0, "max_tokens": 24, "stream": True}
    with BackgroundServer(real_runtime) as server, httpx.Client(base_url=server.url, timeout=120) as http:
        for path, body in (("/v1/chat/completions", chat), ("/v1/completions", completion)):
            with http.stream("POST", path, json={**body, **common}) as resp:
                assert resp.status_code == 200
                raw = resp.read().decode()
            events = raw.split("\n\n")
            assert events[-2:] == ["data: [DONE]", ""]
            items = [json.loads(e.removeprefix("data: ")) for e in events[:-2]]
            for event, item in zip(events, items, strict=False):
                assert event == f"data: {json.dumps(item)}"
            assert len(items) > 5 and len({(i["id"], i["created"]) for i in items}) == 1
            assert items[-1]["choices"][0]["finish_reason"] in ("stop", "length")
            assert all(i["choices"][0]["finish_reason"] is None for i in items[:-1])
            whole = http.post(path, json={**body, **common, "stream": False}).json()
            if "messages" in body:
                text = "".join(i["choices"][0]["delta"]["content"] for i in items)
                assert text == whole["choices"][0]["message"]["content"]
            else:
                assert "".join(i["choices"][0]["text"] for i in items) == whole["choices"][0]["text"]


def test_responses_stream_events_are_the_dicts_bytes(real_runtime: Runtime) -> None:
    """``/v1/responses``: each event is ``event: <type>`` and ``json.dumps`` of its object (the deltas are
    written by ``ResponseDeltaLines``), numbered in order, and the deltas add up to the final text."""
    body = {
        "model": "smollm2:135m",
        "input": "Name three fruits, with a café émoji 🍓.",
        "temperature": 0,
        "max_output_tokens": 24,
    }
    with BackgroundServer(real_runtime) as server, httpx.Client(base_url=server.url, timeout=120) as http:
        with http.stream("POST", "/v1/responses", json={**body, "stream": True}) as resp:
            assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/event-stream")
            raw = resp.read().decode()
        whole = http.post("/v1/responses", json=body).json()
    blocks = raw.split("\n\n")
    assert blocks[-1] == ""
    events = []
    for block in blocks[:-1]:
        event = json.loads(block.split("\ndata: ", 1)[1])
        assert block == f"event: {event['type']}\ndata: {json.dumps(event)}"
        events.append(event)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    deltas = [e for e in events if e["type"] == "response.output_text.delta"]
    assert len(deltas) > 5 and len({(d["item_id"], d["output_index"]) for d in deltas}) == 1
    keys = ["type", "sequence_number", "item_id", "output_index", "content_index", "delta", "logprobs"]
    assert all(list(d) == keys and d["content_index"] == 0 and d["logprobs"] == [] for d in deltas)
    final = events[-1]["response"]
    assert events[-1]["type"] in ("response.completed", "response.incomplete")
    [message] = final["output"]
    text = message["content"][0]["text"]
    assert "".join(d["delta"] for d in deltas) == text == whole["output"][0]["content"][0]["text"]
    done = next(e for e in events if e["type"] == "response.output_text.done")
    assert done["text"] == text and message["id"] == deltas[0]["item_id"]
