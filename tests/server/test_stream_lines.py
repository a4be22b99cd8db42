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
