"""Thinking through the API over the fake engine: think values, capability, chunks, tools after thinking."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from nbllm.engine.fake import FakeEngineFactory
from nbllm.runtime import Runtime
from tests.support.models import install_model
from tests.support.tiny_gguf import write_tiny_gguf

# ChatML with thinking: earlier turns' thinking between <think> tags; think:false pre-fills an empty block
THINKER = """{{- range .Messages }}<|im_start|>{{ .Role }}
{{ if .Thinking }}<think>{{ .Thinking }}</think>{{ end }}{{ .Content }}<|im_end|>
{{ end }}<|im_start|>assistant
{{ if and .IsThinkSet (not .Think) }}<think></think>{{ end }}"""
# a template whose prompt already opens the thinking, as DeepSeek-R1's does
OPENER = """{{- range .Messages }}<|im_start|>{{ .Role }}
{{ if .Thinking }}<think>{{ .Thinking }}</think>{{ end }}{{ .Content }}<|im_end|>
{{ end }}<|im_start|>assistant
{{ if .Think }}<think>
{{ end }}"""
TOOLS = """{{- if .Tools }}<|im_start|>system
{{ range .Tools }}{{ . }}{{ end }}<|im_end|>
{{ end }}{{- range .Messages }}<|im_start|>{{ .Role }}
{{ if .Thinking }}<think>{{ .Thinking }}</think>{{ end }}{{ .Content }}
{{- range .ToolCalls }}<tool_call>
{"name": "{{ .Function.Name }}", "arguments": {{ .Function.Arguments }}}
</tool_call>{{ end }}<|im_end|>
{{ end }}<|im_start|>assistant
"""
REPLY = "<think>I add 4 and 4.</think>\n\nThe answer is 8."
ASK = [{"role": "user", "content": "What is 4+4?"}]
WEATHER = {"type": "function", "function": {"name": "weather", "parameters": {"type": "object", "properties": {}}}}


@pytest.fixture
def api(fake_runtime: Runtime, tmp_path: Path) -> Iterator[TestClient]:
    gguf = write_tiny_gguf(tmp_path / "thinker.gguf")
    for name, template in (("thinker", THINKER), ("opener", OPENER), ("tooler", TOOLS)):
        install_model(fake_runtime.store, name, gguf, template=template, params={"stop": ["<|im_end|>"]})
    from nbllm.server import create_app

    with TestClient(create_app(fake_runtime)) as client:
        yield client


def _lines(resp: Any) -> list[dict[str, Any]]:
    assert resp.status_code == 200, resp.text
    return [json.loads(line) for line in resp.text.splitlines() if line.strip()]


def _rendered(api: TestClient, **body: Any) -> str:
    resp = api.post("/api/chat", json={"model": "thinker", "messages": ASK, "_debug_render_only": True, **body})
    assert resp.status_code == 200, resp.text
    text: str = resp.json()["_debug_info"]["rendered_template"]
    return text


def test_thinking_capability_comes_from_the_template(api: TestClient) -> None:
    assert "thinking" in api.post("/api/show", json={"model": "thinker"}).json()["capabilities"]
    assert "thinking" not in api.post("/api/show", json={"model": "tiny"}).json()["capabilities"]
    tags = {m["name"]: m.get("capabilities", []) for m in api.get("/api/tags").json()["models"]}
    assert "thinking" in tags["thinker:latest"] and "thinking" not in tags["tiny:latest"]


@pytest.mark.parametrize("path", ["/api/chat", "/api/generate"])
def test_streamed_thinking_comes_first_in_its_own_chunks(
    api: TestClient, fake_factory: FakeEngineFactory, path: str
) -> None:
    fake_factory.replies.append(REPLY)
    body = {"messages": ASK} if path == "/api/chat" else {"prompt": "What is 4+4?"}
    chunks = _lines(api.post(path, json={"model": "thinker", "think": True, **body}))
    parts = [(c["message"] if path == "/api/chat" else c) for c in chunks]
    text_key = "content" if path == "/api/chat" else "response"
    thinking = [p.get("thinking", "") for p in parts]
    content = [p[text_key] for p in parts]
    assert "".join(thinking) == "I add 4 and 4." and "".join(content) == "The answer is 8."
    last_thinking = max(i for i, t in enumerate(thinking) if t)
    first_content = min(i for i, c in enumerate(content) if c)
    assert last_thinking < first_content
    assert not any(thinking[i] and content[i] for i in range(len(parts)))  # never both in one chunk
    assert chunks[-1]["done"] and chunks[-1]["eval_count"] == len(REPLY)  # thinking tokens counted


@pytest.mark.parametrize("path", ["/api/chat", "/api/generate"])
def test_unstreamed_answer_carries_both(api: TestClient, fake_factory: FakeEngineFactory, path: str) -> None:
    fake_factory.replies.append(REPLY)
    body = {"messages": ASK} if path == "/api/chat" else {"prompt": "What is 4+4?"}
    out = api.post(path, json={"model": "thinker", "stream": False, **body}).json()  # think omitted: on
    part = out["message"] if path == "/api/chat" else out
    assert part["thinking"] == "I add 4 and 4."
    assert part["content" if path == "/api/chat" else "response"] == "The answer is 8."


def test_think_false_renders_the_no_thinking_block_and_parses_nothing(
    api: TestClient, fake_factory: FakeEngineFactory
) -> None:
    assert _rendered(api, think=False).endswith("<|im_start|>assistant\n<think></think>")
    assert _rendered(api).endswith("<|im_start|>assistant\n")  # omitted: a thinking model thinks
    fake_factory.replies.append(REPLY)
    out = api.post("/api/chat", json={"model": "thinker", "messages": ASK, "think": False, "stream": False}).json()
    assert "thinking" not in out["message"] and out["message"]["content"] == REPLY


def test_levels_reach_the_template(api: TestClient) -> None:
    level = "{{ range .Messages }}{{ .Content }}{{ end }}[{{ .Think }} {{ .ThinkLevel }} {{ .IsThinkSet }}]"
    cases = {"high": "[true high true]", True: "[true medium true]", False: "[false  true]"}
    for think, expected in cases.items():
        resp = api.post(
            "/api/generate",
            json={"model": "thinker", "prompt": "x", "template": level, "think": think, "_debug_render_only": True},
        )
        assert resp.json()["_debug_info"]["rendered_template"].endswith(expected), think


def test_earlier_thinking_goes_back_into_the_template(api: TestClient) -> None:
    history = [*ASK, {"role": "assistant", "content": "8", "thinking": "I add."}, {"role": "user", "content": "Why?"}]
    text = _rendered(api, messages=history)
    assert "<|im_start|>assistant\n<think>I add.</think>8<|im_end|>" in text


@pytest.mark.parametrize("think", ["loud", "none", ""])
def test_other_think_values_are_400(api: TestClient, think: str) -> None:
    resp = api.post("/api/chat", json={"model": "thinker", "messages": ASK, "think": think})
    assert resp.status_code == 400 and resp.json() == {
        "error": f'invalid think value: "{think}" (must be "high", "medium", "low", "max", true, or false)'
    }
    assert api.post("/api/generate", json={"model": "thinker", "prompt": "x", "think": 1}).status_code == 400


def test_think_on_a_model_that_cannot_is_400_but_false_is_fine(api: TestClient) -> None:
    resp = api.post("/api/chat", json={"model": "tiny", "messages": ASK, "think": "high", "stream": False})
    assert resp.status_code == 400 and resp.json() == {"error": '"tiny" does not support thinking'}
    ok = api.post("/api/chat", json={"model": "tiny", "messages": ASK, "think": False, "stream": False})
    assert ok.status_code == 200 and "thinking" not in ok.json()["message"]


def test_a_prompt_that_opens_the_thinking(api: TestClient, fake_factory: FakeEngineFactory) -> None:
    fake_factory.replies.append("Half of it.</think>Done.")
    out = api.post("/api/chat", json={"model": "opener", "messages": ASK, "stream": False}).json()
    assert (out["message"]["thinking"], out["message"]["content"]) == ("Half of it.", "Done.")


def test_unclosed_thinking_at_num_predict_stays_thinking(api: TestClient, fake_factory: FakeEngineFactory) -> None:
    fake_factory.replies.append(REPLY)
    body = {"model": "thinker", "prompt": "x", "stream": False, "options": {"num_predict": 24}}
    out = api.post("/api/generate", json=body).json()
    assert out["done_reason"] == "length" and out["thinking"] == "I add 4 and 4.</t" and out["response"] == ""


def test_tool_call_after_thinking_is_parsed(api: TestClient, fake_factory: FakeEngineFactory) -> None:
    assert "thinking" in api.post("/api/show", json={"model": "tooler"}).json()["capabilities"]
    fake_factory.replies.append(
        '<think>I need the weather.</think>\n<tool_call>\n{"name": "weather", "arguments": {}}\n</tool_call>'
    )
    body = {"model": "tooler", "messages": ASK, "tools": [WEATHER]}
    chunks = _lines(api.post("/api/chat", json=body))
    thinking = "".join(c["message"].get("thinking", "") for c in chunks)
    calls = [call for c in chunks for call in c["message"].get("tool_calls", [])]
    assert thinking == "I need the weather."
    assert [c["function"]["name"] for c in calls] == ["weather"]
    assert "".join(c["message"]["content"] for c in chunks).strip() == ""


def _v1(api: TestClient, **body: Any) -> Any:
    return api.post("/v1/chat/completions", json={"model": "thinker", "messages": ASK, **body})


@pytest.mark.parametrize(
    ("body", "thinks"),
    [
        ({}, True),
        ({"reasoning_effort": "high"}, True),
        ({"reasoning": {"effort": "minimal"}}, True),
        ({"reasoning_effort": "none"}, False),
        ({"reasoning_effort": "high", "reasoning": {"effort": "none"}}, False),  # reasoning.effort wins
    ],
)
def test_v1_reasoning_effort_maps_to_think(
    api: TestClient, fake_factory: FakeEngineFactory, body: dict[str, Any], *, thinks: bool
) -> None:
    fake_factory.replies.append(REPLY)
    resp = _v1(api, **body)
    assert resp.status_code == 200, resp.text
    message = resp.json()["choices"][0]["message"]
    if thinks:
        assert (message["reasoning"], message["content"]) == ("I add 4 and 4.", "The answer is 8.")
    else:  # think false: the template's empty block, the model's text as it came
        assert "reasoning" not in message and message["content"] == REPLY
        assert fake_factory.loads[-1].prompts[-1].endswith("<think></think>")


@pytest.mark.parametrize("body", [{"reasoning_effort": "extreme"}, {"reasoning": {"effort": "loud"}}])
def test_v1_unknown_effort_is_400_in_openai_shape(api: TestClient, body: dict[str, Any]) -> None:
    resp = _v1(api, **body)
    assert resp.status_code == 400
    error = resp.json()["error"]
    assert error["type"] == "invalid_request_error" and error["message"].startswith("invalid reasoning value")


def test_v1_streams_reasoning_in_deltas_and_takes_it_back(api: TestClient, fake_factory: FakeEngineFactory) -> None:
    fake_factory.replies.append(REPLY)
    resp = _v1(api, stream=True)
    events = [json.loads(line[6:]) for line in resp.text.splitlines() if line.startswith("data: {")]
    deltas = [e["choices"][0]["delta"] for e in events if e["choices"]]
    assert "".join(d.get("reasoning", "") for d in deltas) == "I add 4 and 4."
    assert "".join(d["content"] for d in deltas) == "The answer is 8."
    history = [*ASK, {"role": "assistant", "content": "8", "reasoning": "I add."}, {"role": "user", "content": "Why?"}]
    fake_factory.replies.append("Because.")
    assert _v1(api, messages=history).status_code == 200
    assert "<think>I add.</think>8<|im_end|>" in fake_factory.loads[-1].prompts[-1]


QWEN3_JINJA = """{%- for m in messages %}<|im_start|>{{ m.role }}
{% if m.role == 'assistant' and m.reasoning_content %}<think>{{ m.reasoning_content }}</think>{% endif %}
{{- m.content }}<|im_end|>
{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant
{% if enable_thinking is defined and enable_thinking is false %}<think>

</think>

{% endif %}{% endif %}"""


def test_gguf_jinja_templates_get_the_thinking_switch_and_the_earlier_thinking() -> None:
    from nbllm.prompt.jinja import JinjaChatTemplate
    from nbllm.service.prompts import ModelTemplate

    template = ModelTemplate(go=None, jinja=JinjaChatTemplate(QWEN3_JINJA))
    assert template.supports_thinking and template.thinking_tags == ("<think>", "</think>")
    history = [*ASK, {"role": "assistant", "content": "8", "thinking": "I add."}, {"role": "user", "content": "Why?"}]
    assert "<think>I add.</think>8" in template.chat(history, None)
    assert template.chat(ASK, None, think=False).endswith("<think>\n\n</think>\n\n")
    assert template.chat(ASK, None, think="high").endswith("<|im_start|>assistant\n")
    assert not ModelTemplate(go=None, jinja=JinjaChatTemplate("{{ messages[0].content }}")).supports_thinking
