"""The line writers write the very bytes the models (NDJSON) or the OpenAI translation (``/v1``) give
for the same plain streamed chunk."""

from __future__ import annotations

import json
import random

import pytest

from nbllm.schema import ChatResponse, GenerateResponse, Message
from nbllm.schema.lines import ChatCompletionLines, ChunkLines, CompletionLines, openai_id
from nbllm.service import openai

_SAMPLES = [
    "",
    " the",
    "Hello, world!",
    'quote " and backslash \\ and slash /',
    "new\nline\ttab\rreturn\bback\fform",
    "\x00\x01\x1f\x7f\x80\x9f",
    "\u2028\u2029 line separators",
    "é ü ß 中文 日本語 한국어",
    "emoji 🦙🎉 and a flag 🇫🇷",
    "\N{REPLACEMENT CHARACTER} replacement",
    "<think>tags</think>",
    '{"name": "get_weather", "arguments": {"city": "Paris"}}',
    "   ",
]


def _random_texts(n: int) -> list[str]:
    """Texts over all of Unicode (but lone surrogates, which no UTF-8 stream carries), ASCII-heavy."""
    rng = random.Random(19)
    pools = [range(0x00, 0x80), range(0x80, 0x800), range(0x800, 0xD800), range(0xE000, 0x110000)]
    out = []
    for _ in range(n):
        chars = []
        for _ in range(rng.randrange(0, 12)):
            pool = pools[0] if rng.random() < 0.6 else rng.choice(pools)
            chars.append(chr(rng.choice(pool)))
        out.append("".join(chars))
    return out


_TEXTS = _SAMPLES + _random_texts(2000)
_MODELS = ["smollm2:135m", "hf.co/org/repo:Q4_K_M", 'odd "name"\\ é 🦙', ""]
_STAMP = "2026-12-03T20:10:01.5803Z"


def _dump(chunk: GenerateResponse | ChatResponse) -> str:
    return chunk.model_dump_json(exclude_none=True, by_alias=True) + "\n"


@pytest.mark.parametrize("model", _MODELS)
def test_generate_lines_match_the_model(model: str) -> None:
    lines = ChunkLines(model, chat=False)
    for i, text in enumerate(_TEXTS):
        thinking = _TEXTS[-i] if i % 3 == 0 else None
        expected = _dump(GenerateResponse(model=model, created_at=_STAMP, response=text, thinking=thinking or None))
        assert lines.line(text, thinking, created_at=_STAMP) == expected


@pytest.mark.parametrize("model", _MODELS)
def test_chat_lines_match_the_model(model: str) -> None:
    lines = ChunkLines(model, chat=True)
    for i, text in enumerate(_TEXTS):
        thinking = _TEXTS[-i] if i % 3 == 0 else None
        message = Message(role="assistant", content=text, thinking=thinking or None)
        expected = _dump(ChatResponse(model=model, created_at=_STAMP, message=message))
        assert lines.line(text, thinking, created_at=_STAMP) == expected


def test_a_line_is_stamped_now_and_parses_back() -> None:
    line = ChunkLines("m", chat=True).line("hi", "hmm")
    chunk = ChatResponse.model_validate_json(line)
    assert chunk.message.content == "hi" and chunk.message.thinking == "hmm" and chunk.done is False
    assert chunk.created_at.endswith("Z") and chunk.created_at[:4].isdigit()


def _event(item: object) -> str:
    return f"data: {json.dumps(item)}\n\n"


@pytest.mark.parametrize("model", _MODELS)
def test_chat_completion_events_match_the_translation(model: str) -> None:
    lines = ChatCompletionLines(openai_id("chatcmpl"), 1764792000, model)
    for i, text in enumerate(_TEXTS):
        thinking = _TEXTS[-i] if i % 3 == 0 else None
        message = Message(role="assistant", content=text, thinking=thinking or None)
        chunk = ChatResponse(model=model, created_at=_STAMP, message=message)
        (item,) = openai.chat_completion(iter([chunk]), model, stream=True, lines=lines)
        assert lines.line(text, thinking) == _event(item)


@pytest.mark.parametrize("model", _MODELS)
def test_completion_events_match_the_translation(model: str) -> None:
    lines = CompletionLines(openai_id("cmpl"), 1764792000, model)
    for i, text in enumerate(_TEXTS):
        thinking = _TEXTS[-i] if i % 3 == 0 else None
        chunk = GenerateResponse(model=model, created_at=_STAMP, response=text, thinking=thinking or None)
        (item,) = openai.completion(iter([chunk]), model, stream=True, lines=lines)
        assert lines.line(text, thinking) == _event(item)
