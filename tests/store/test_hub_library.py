"""Built-in thinking-model names: where each comes from, and templates that switch thinking as Ollama's do."""

from __future__ import annotations

import pytest

from nbllm.prompt.ollama_template import parse_template, render_messages
from nbllm.store import ModelName
from nbllm.store.catalog import find_entry
from nbllm.store.hub_library import HUB_LIBRARY, HubEntry, find_hub_entry
from nbllm.store.manifests import MEDIA_PARAMS, MEDIA_TEMPLATE

CHAT = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "hi"},
    {"role": "assistant", "content": "hello", "thinking": "a greeting"},
    {"role": "user", "content": "2+2?"},
]


def _entry(name: str) -> HubEntry:
    entry = find_hub_entry(ModelName.parse(name))
    assert entry is not None
    return entry


def test_names_resolve_to_official_gguf_repositories_and_never_clash_with_the_package_library() -> None:
    assert _entry("qwen3:0.6b").source().full == "hf.co/Qwen/Qwen3-0.6B-GGUF:Q8_0"
    assert _entry("deepseek-r1:1.5b").source().full == "hf.co/bartowski/DeepSeek-R1-Distill-Qwen-1.5B-GGUF:Q4_K_M"
    for entry in HUB_LIBRARY:
        for name in entry.names:
            parsed = ModelName.parse(name)
            assert find_hub_entry(parsed) is entry and find_entry(parsed) is None
        assert ModelName.parse(entry.source().full) == entry.source()  # a valid hf.co name
        layers = dict(entry.layers())
        assert layers[MEDIA_TEMPLATE] == entry.template() and "stop" in layers[MEDIA_PARAMS]
    assert find_hub_entry(ModelName.parse("qwen3:235b")) is None  # only the names listed


@pytest.mark.parametrize("entry", HUB_LIBRARY, ids=lambda e: e.names[0])
def test_every_template_is_a_thinking_template_by_ollamas_test(entry: HubEntry) -> None:
    names = parse_template(entry.template()).vars()
    assert {"think", "isthinkset", "thinking"} <= names  # .Think / .IsThinkSet / .Thinking, as Ollama's


def test_qwen3_thinking_switches() -> None:
    template = parse_template(_entry("qwen3:0.6b").template())
    on = render_messages(template, CHAT, think=True, is_thinking_model=True)
    assert on.endswith("<|im_start|>user\n2+2? /think<|im_end|>\n<|im_start|>assistant\n")
    assert "a greeting" not in on  # reasoning before the last user turn is dropped
    off = render_messages(template, CHAT, think=False, is_thinking_model=True)
    assert off.endswith("2+2? /no_think<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n")
    unset = render_messages(template, CHAT, think=None, is_thinking_model=False)
    assert unset.endswith("2+2?<|im_end|>\n<|im_start|>assistant\n")  # no switch when think is not set
    assert unset.startswith("<|im_start|>system\nBe brief.<|im_end|>\n")
    resumed = render_messages(template, CHAT[:3], think=True, is_thinking_model=True)
    assert resumed.endswith("<|im_start|>assistant\n<think>a greeting</think>\nhello")  # after the last user turn
    tools = [{"type": "function", "function": {"name": "add", "description": "Add", "parameters": {"type": "object"}}}]
    assert '<tools>\n{"type":"function","function":{"name":"add"' in render_messages(template, CHAT, tools=tools)


def test_deepseek_r1_thinking_switches() -> None:
    template = parse_template(_entry("deepseek-r1:1.5b").template())
    on = render_messages(template, CHAT, think=True, is_thinking_model=True)
    assert on == "Be brief.<｜User｜>hi<｜Assistant｜>hello<｜end▁of▁sentence｜><｜User｜>2+2?<｜Assistant｜>"
    off = render_messages(template, CHAT, think=False, is_thinking_model=True)
    assert off == on + "<think>\n\n</think>\n\n"
    resumed = render_messages(template, CHAT[:3], think=True, is_thinking_model=True)
    assert resumed.endswith("<｜Assistant｜><think>\na greeting\n</think>hello")
