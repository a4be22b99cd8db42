"""GGUF chat templates (Jinja): compiled once per template text, rendered as transformers does."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest

from nbllm.errors import TemplateError
from nbllm.prompt import jinja
from nbllm.prompt.jinja import JinjaChatTemplate, compile_template

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _unique(source: str) -> str:
    """A template text no other test compiled (the cache lives as long as the process)."""
    return f"{{# {uuid.uuid4()} #}}" + source


@pytest.fixture
def compiles(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The sources the Jinja environment compiles from now on."""
    seen: list[str] = []
    env = jinja._environment()
    real: Callable[..., Any] = env.from_string

    def spy(source: str, *args: Any, **kwargs: Any) -> Any:
        seen.append(source)
        return real(source, *args, **kwargs)

    monkeypatch.setattr(env, "from_string", spy)
    return seen


def test_a_template_text_is_compiled_once_for_many_requests(compiles: list[str]) -> None:
    source = _unique(CHATML)
    prompts = {JinjaChatTemplate(source).render([{"role": "user", "content": "Hi"}]) for _ in range(5)}
    assert compiles == [source]
    assert prompts == {"<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"}


def test_another_template_text_is_compiled_on_its_own(compiles: list[str]) -> None:
    first, second = _unique(CHATML), _unique(CHATML)
    JinjaChatTemplate(first)
    JinjaChatTemplate(second)
    JinjaChatTemplate(first)
    assert compiles == [first, second]


def test_an_invalid_template_fails_every_time(compiles: list[str]) -> None:
    source = _unique("{% for m in messages %}")
    for _ in range(2):
        with pytest.raises(TemplateError, match="chat template line 1"):
            JinjaChatTemplate(source)
    assert compiles == [source, source]  # a failure is not remembered as a template


def test_the_cache_is_bounded() -> None:
    for _ in range(jinja._COMPILED_TEMPLATES + 3):
        compile_template(_unique(CHATML))
    info = compile_template.cache_info()
    assert info.maxsize == jinja._COMPILED_TEMPLATES and info.currsize <= info.maxsize
