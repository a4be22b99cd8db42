"""Dropping the oldest turns of a conversation that does not fit: the fewest turns, found in few renders."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, cast

import pytest

from nbllm.engine import Engine
from nbllm.errors import ContextLengthExceeded
from nbllm.service.context import chat_tokens
from nbllm.service.prompts import ModelTemplate


@dataclass
class _Info:
    n_ctx: int
    bos_text: str = ""


@dataclass
class _Engine:
    """One token per character: lengths are exact and easy to reason about."""

    info: _Info

    def tokenize(self, text: str, *, add_special: bool, parse_special: bool) -> list[int]:
        return [ord(c) for c in text]


@dataclass
class _Template:
    renders: list[int] = field(default_factory=list)

    def chat(self, messages: list[dict[str, Any]], tools: Any, *, think: Any) -> str:
        self.renders.append(len(messages))
        return "".join(f"[{m['role']}:{m['content']}]" for m in messages)


def _history(turns: int) -> list[dict[str, Any]]:
    messages = [{"role": "system", "content": "S" * 20}]
    for i in range(turns):
        messages += [{"role": "user", "content": f"u{i:05d}" * 3}, {"role": "assistant", "content": "a" * 30}]
    return [*messages, {"role": "user", "content": "last"}]


def _one_by_one(messages: list[dict[str, Any]], n_ctx: int) -> str:
    """The rule written the slow way: drop the oldest droppable turn until the prompt fits."""
    current = list(messages)
    while True:
        text = "".join(f"[{m['role']}:{m['content']}]" for m in current)
        droppable = [i for i, m in enumerate(current[:-1]) if m["role"] != "system"]
        if len(text) < n_ctx or not droppable:
            return text
        del current[droppable[0]]


def _run(messages: list[dict[str, Any]], n_ctx: int, *, truncate: bool | None = None) -> tuple[str, _Template]:
    template = _Template()
    engine = cast(Engine, _Engine(_Info(n_ctx)))
    text, tokens = chat_tokens(engine, cast(ModelTemplate, template), messages, None, think=None, truncate=truncate)
    assert len(tokens) == len(text)
    return text, template


@pytest.mark.parametrize("n_ctx", [60, 200, 777, 5_000, 100_000])
def test_the_same_turns_are_dropped_as_one_by_one(n_ctx: int) -> None:
    messages = _history(300)
    text, _ = _run(messages, n_ctx)
    assert text == _one_by_one(messages, n_ctx)
    assert text.startswith("[system:") and text.endswith("[user:last]")


def test_thousands_of_turns_take_a_logarithmic_number_of_renders() -> None:
    messages = _history(4_000)  # 8,002 messages
    _, template = _run(messages, 2_000)
    assert len(template.renders) <= 2 + 14  # whole, all dropped, then bisection over 8,000 turns


def test_a_prompt_that_fits_is_rendered_once() -> None:
    _, template = _run(_history(3), 100_000)
    assert template.renders == [8]


def test_truncate_false_refuses_instead_of_dropping() -> None:
    with pytest.raises(ContextLengthExceeded):
        _run(_history(50), 500, truncate=False)
