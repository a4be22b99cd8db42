"""Thinking end to end on the real engine: a SmolLM2 model whose template thinks (tests/support/thinking.py),
through the live server, with raw HTTP, the official ``ollama`` client and the official ``openai`` client.

What the model writes is checked against the same prompt generated in raw mode (no parsing): the
thinking and the answer must be exactly what sits inside and after its tags.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import ollama
import openai
import pytest

from nbllm.runtime import Runtime
from nbllm.server import BackgroundServer
from tests.support.thinking import QUESTION, install_thinker

ASK = [{"role": "user", "content": QUESTION}]


@pytest.fixture(scope="module")
def model(real_runtime: Runtime) -> str:
    return install_thinker(real_runtime)


@pytest.fixture(scope="module")
def http(live_server: BackgroundServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=live_server.url, timeout=120) as client:
        yield client


@pytest.fixture(scope="module")
def raw(http: httpx.Client, model: str) -> dict[str, Any]:
    """The model's own text for the question (rendered prompt, generated raw) and its token count."""
    rendered = http.post("/api/chat", json={"model": model, "messages": ASK, "_debug_render_only": True})
    prompt = rendered.json()["_debug_info"]["rendered_template"]
    body = {"model": model, "prompt": prompt, "raw": True, "think": False, "stream": False}  # no parsing
    out = http.post("/api/generate", json=body).json()
    text = out["response"]
    assert text.startswith("<think>") and "</think>" in text, text  # the steering holds
    thinking, _, content = text.removeprefix("<think>").partition("</think>")
    thinking, content = thinking.lstrip(), content.lstrip()  # the parser eats the space around the tags
    assert thinking.strip() and content.strip()
    return {"text": text, "thinking": thinking, "content": content, "eval_count": out["eval_count"]}


def _stream(http: httpx.Client, path: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    with http.stream("POST", path, json=body) as resp:
        assert resp.status_code == 200
        return [json.loads(line) for line in resp.iter_lines() if line]


def test_capability_in_show_and_tags(http: httpx.Client, model: str) -> None:
    assert "thinking" in http.post("/api/show", json={"model": model}).json()["capabilities"]
    listed = {m["name"]: m for m in http.get("/api/tags").json()["models"]}
    assert "thinking" in listed[model]["capabilities"]
    assert "thinking" not in listed["smollm2:135m"]["capabilities"]


@pytest.mark.parametrize("path", ["/api/chat", "/api/generate"])
def test_streamed_thinking_then_answer(http: httpx.Client, model: str, raw: dict[str, Any], path: str) -> None:
    body = {"messages": ASK} if path == "/api/chat" else {"prompt": QUESTION}
    chunks = _stream(http, path, {"model": model, "think": True, **body})
    parts = [c["message"] if path == "/api/chat" else c for c in chunks]
    key = "content" if path == "/api/chat" else "response"
    thinking = [p.get("thinking", "") for p in parts]
    content = [p[key] for p in parts]
    assert ("".join(thinking), "".join(content)) == (raw["thinking"], raw["content"])
    assert max(i for i, t in enumerate(thinking) if t) < min(i for i, c in enumerate(content) if c)
    final = chunks[-1]
    assert final["done"] and final["done_reason"] == "stop"
    assert final["eval_count"] == raw["eval_count"]  # the thinking tokens are counted, as Ollama counts them


@pytest.mark.parametrize("path", ["/api/chat", "/api/generate"])
def test_unstreamed_answer_carries_both(http: httpx.Client, model: str, raw: dict[str, Any], path: str) -> None:
    body = {"messages": ASK} if path == "/api/chat" else {"prompt": QUESTION}
    out = http.post(path, json={"model": model, "stream": False, **body}).json()  # think omitted: on
    part = out["message"] if path == "/api/chat" else out
    assert part["thinking"] == raw["thinking"]
    assert part["content" if path == "/api/chat" else "response"] == raw["content"]


def test_think_false_answers_without_thinking(http: httpx.Client, model: str) -> None:
    out = http.post("/api/chat", json={"model": model, "messages": ASK, "think": False, "stream": False}).json()
    assert "thinking" not in out["message"] and "<think>" not in out["message"]["content"]
    assert out["message"]["content"].strip()


def test_ollama_client(live_server: BackgroundServer, model: str, raw: dict[str, Any]) -> None:
    client = ollama.Client(host=live_server.url)
    try:
        chat = client.chat(model=model, messages=ASK, think=True)
        assert (chat.message.thinking, chat.message.content) == (raw["thinking"], raw["content"])
        streamed = list(client.generate(model=model, prompt=QUESTION, think=True, stream=True))
        assert "".join(c.thinking or "" for c in streamed) == raw["thinking"]
        assert "".join(c.response for c in streamed) == raw["content"]
        with pytest.raises(ollama.ResponseError, match="does not support thinking") as info:
            client.chat(model="smollm2:135m", messages=ASK, think=True)
        assert info.value.status_code == 400
    finally:
        client._client.close()


def test_openai_client(live_server: BackgroundServer, model: str, raw: dict[str, Any]) -> None:
    # (/v1 samples at OpenAI's default temperature 1 unless told: greedy, as the raw answer was)
    client = openai.OpenAI(base_url=live_server.url + "/v1", api_key="nbllm", max_retries=0)
    greedy: Any = {"temperature": 0}
    try:
        resp = client.chat.completions.create(model=model, messages=ASK, reasoning_effort="high", **greedy)  # type: ignore[arg-type]
        message = resp.choices[0].message
        assert (getattr(message, "reasoning", None), message.content) == (raw["thinking"], raw["content"])
        stream = client.chat.completions.create(model=model, messages=ASK, stream=True, **greedy)  # type: ignore[arg-type]
        deltas = [c.choices[0].delta for c in stream if c.choices]
        assert "".join(getattr(d, "reasoning", None) or "" for d in deltas) == raw["thinking"]
        assert "".join(d.content or "" for d in deltas) == raw["content"]
        off = client.chat.completions.create(model=model, messages=ASK, reasoning_effort="none", **greedy)  # type: ignore[arg-type]
        assert getattr(off.choices[0].message, "reasoning", None) is None
        with pytest.raises(openai.BadRequestError, match="invalid reasoning value"):
            client.chat.completions.create(model=model, messages=ASK, extra_body={"reasoning_effort": "extreme"})  # type: ignore[arg-type]
    finally:
        client.close()


def test_openai_responses_reasoning_item(live_server: BackgroundServer, model: str, raw: dict[str, Any]) -> None:
    """/v1/responses: the thinking is a reasoning item before the message, streamed as its own events."""
    client = openai.OpenAI(base_url=live_server.url + "/v1", api_key="nbllm", max_retries=0)
    try:
        resp = client.responses.create(model=model, input=QUESTION, reasoning={"effort": "high"}, temperature=0)
        kinds = [item.type for item in resp.output]
        assert kinds == ["reasoning", "message"], kinds
        reasoning: Any = resp.output[0]
        summary = "".join(part.text for part in (reasoning.summary or []))
        content = getattr(reasoning, "content", None) or []
        said = summary or "".join(getattr(part, "text", "") for part in content)
        assert said == raw["thinking"]
        assert resp.output_text == raw["content"]
        events = list(client.responses.create(model=model, input=QUESTION, temperature=0, stream=True))
        thought = "".join(getattr(e, "delta", "") for e in events if "reasoning" in e.type and e.type.endswith("delta"))
        answer = "".join(e.delta for e in events if e.type == "response.output_text.delta")
        assert (thought, answer) == (raw["thinking"], raw["content"])
        off = client.responses.create(model=model, input=QUESTION, reasoning={"effort": "none"}, temperature=0)
        assert [item.type for item in off.output] == ["message"]
    finally:
        client.close()
