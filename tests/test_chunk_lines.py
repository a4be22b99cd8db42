"""The line writers write the very bytes the models (NDJSON), the OpenAI translation (``/v1``) or the
``/v1/responses`` events give for the same plain streamed chunk."""

from __future__ import annotations

import itertools
import json
import random
import time
from collections.abc import Iterator

import pytest

from nbllm.schema import ChatResponse, GenerateResponse, Message, ToolCall, ToolCallFunction
from nbllm.schema import lines as chunk_lines
from nbllm.schema.common import now_timestamp
from nbllm.schema.lines import ChatCompletionLines, ChunkLines, CompletionLines, ResponseDeltaLines, openai_id
from nbllm.schema.responses import ResponsesRequest
from nbllm.service import openai, response_output
from nbllm.service.response_output import ResponseEvents, sse

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


@pytest.mark.parametrize("kind", ["generate", "chat"])
def test_a_line_s_stamp_is_now_timestamp_s_across_seconds(kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The stamp a line makes inline (its whole second kept once a second) is ``now_timestamp``'s for the same
    instant: fractions with trailing zeros, none at all, the turn of a second, a clock set back."""
    base = 1_796_000_000 * 10**9
    instants = [base + 999_999_999, base + 10**9, base + 10**9 + 120_000, base + 10**9 + 1_000, base + 2 * 10**9 + 7]
    instants += [base + 5, base + 3 * 10**9 + 999_000, base + 3 * 10**9 + 100_000_000]
    lines = ChunkLines("m", chat=kind == "chat")
    for now in instants:
        monkeypatch.setattr(time, "time_ns", lambda now=now: now)
        monkeypatch.setattr(chunk_lines, "_time_ns", lambda now=now: now)
        stamp = json.loads(lines.line("x"))["created_at"]
        assert stamp == now_timestamp()
    assert [json.loads(lines.line("x", created_at=_STAMP))["created_at"]] == [_STAMP]


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


_Delta = tuple[str, str | None]
"""A plain delta: its text and its thinking."""


def _deltas() -> list[_Delta]:
    """Every text, in runs of thinking (some with text too) and of text, so items open, stream and close."""
    out: list[_Delta] = []
    for i, text in enumerate(_TEXTS):
        run = i // 40 % 3
        out.append(("", text) if run == 0 else (text, _TEXTS[-i] or None) if run == 1 and i % 7 == 0 else (text, None))
    return out


def _chunk(text: str = "", thinking: str | None = None, **extra: object) -> ChatResponse:
    return ChatResponse(
        model="m", created_at=_STAMP, message=Message(role="assistant", content=text, thinking=thinking, **extra)
    )


_CALL = ToolCall(function=ToolCallFunction(name="get_weather", arguments={"city": 'Zürich "🦙"'}))
_FINAL = ChatResponse(
    model="m",
    created_at=_STAMP,
    message=Message(role="assistant", content=" end"),
    done=True,
    done_reason="stop",
    prompt_eval_count=3,
    eval_count=len(_TEXTS),
)


def _odd_ids(monkeypatch: pytest.MonkeyPatch) -> None:
    """Item ids that need escaping, the same sequence for every stream made after this; a fixed clock."""
    counter = itertools.count()
    monkeypatch.setattr(response_output, "_ident", lambda prefix: f'{prefix}_"odd\\ é 🦙\u2028{next(counter)}')
    monkeypatch.setattr(time, "time", lambda: 1764792000.5)


def _stream(model: str, deltas: list[_Delta], *, fast: bool, call_at: int | None = None) -> str:
    """The bytes of a stream: each delta a chat chunk through ``events`` or, with ``fast``, ``line``'s events."""
    events = ResponseEvents(ResponsesRequest(model=model, input="hi"))

    def chunks() -> Iterator[ChatResponse | str]:
        for i, (text, thinking) in enumerate(deltas):
            if i == call_at:
                yield _chunk(tool_calls=[_CALL])
            yield events.line(text, thinking) if fast else _chunk(text, thinking)
        yield _FINAL

    return "".join(e if isinstance(e, str) else sse(e) for e in events.events(chunks()))


@pytest.mark.parametrize("model", _MODELS)
@pytest.mark.parametrize("call_at", [None, 1000])
def test_response_stream_events_match_the_dicts(
    model: str, call_at: int | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A whole ``/v1/responses`` stream written by ``line`` is the bytes of the one made of chat chunks:
    the deltas (over every text), the items they open and close, a tool call, the sequence numbers."""
    written = []
    event = ResponseDeltaLines.event

    def spied(self: ResponseDeltaLines, sequence: int, delta: str) -> str:
        written.append(delta)
        return event(self, sequence, delta)

    deltas = _deltas()
    _odd_ids(monkeypatch)
    expected = _stream(model, deltas, fast=False, call_at=call_at)
    monkeypatch.setattr(ResponseDeltaLines, "event", spied)
    _odd_ids(monkeypatch)
    assert _stream(model, deltas, fast=True, call_at=call_at) == expected
    assert len(written) > len(deltas) // 3  # (the writer did write most deltas)
    blocks = expected.split("\n\n")
    assert blocks[-1] == ""
    for number, block in enumerate(blocks[:-1]):
        kind, data = block.split("\n", 1)
        item = json.loads(data.removeprefix("data: "))
        assert kind == f"event: {item['type']}" and item["sequence_number"] == number


@pytest.mark.parametrize("kind", ["message", "reasoning"])
def test_response_delta_events_match_the_dicts(kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """One item's delta event, for every text, is ``sse`` of the event dict ``ResponseEvents`` makes of it."""
    _odd_ids(monkeypatch)
    for i, text in enumerate(t for t in _TEXTS if t):
        events = ResponseEvents(ResponsesRequest(model="m", input="hi"))
        events._sequence, events._output = i * 9973, [{}] * (i % 5)  # (any sequence number and output index)
        *_, made = events._text(kind, text)
        opened = events._open
        assert opened is not None and made["output_index"] == i % 5
        lines = ResponseDeltaLines(opened.ident, opened.index, reasoning=kind == "reasoning")
        assert lines.event(made["sequence_number"], text) == sse(made)
