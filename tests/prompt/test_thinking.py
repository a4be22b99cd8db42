"""The thinking parser on streams split at every position, the tags inferred from templates, ``think`` values."""

from __future__ import annotations

import itertools

import pytest

from nbllm.errors import InvalidRequest
from nbllm.prompt.gotemplate import GoTemplate
from nbllm.prompt.thinking import ThinkingParser, ThinkValue, check_think, infer_tags, jinja_tags, think_level, think_on

OPEN, CLOSE = "<think>", "</think>"

# (model output, thinking, content): what the whole output splits into, however it is streamed
CASES = [
    ("<think>I add 4 and 4.</think>8", "I add 4 and 4.", "8"),
    ("  <think>\n\nhm, two plus two</think>\n\nFour.", "hm, two plus two", "Four."),
    ("No thinking here.", "", "No thinking here."),
    ("  plain, whitespace kept", "", "  plain, whitespace kept"),
    ("<think>unclosed when num_predict ran out</th", "unclosed when num_predict ran out</th", ""),
    ("<think>unclosed", "unclosed", ""),
    ("<thi", "", "<thi"),  # a tag that never finished is text
    ("<", "", "<"),
    ("<think></think>", "", ""),
    ("<think>a</think>b</think>c", "a", "b</think>c"),  # one thinking: a later closing tag is content
    ("<think>a < b </ c </thin k</think>ok", "a < b </ c </thin k", "ok"),
    ("<think>é😀 ü</think>\n ünïcode ✓", "é😀 ü", "ünïcode ✓"),
    ("<think> x </think> <think>y</think>", " x ".lstrip(), "<think>y</think>"),
    ('<think>call it</think><tool_call>{"name": "f"}</tool_call>', "call it", '<tool_call>{"name": "f"}</tool_call>'),
]


def _run(pieces: list[str], *, primed: bool = False) -> tuple[str, str, list[tuple[str, str]]]:
    parser = ThinkingParser(OPEN, CLOSE)
    if primed:
        assert parser.feed(OPEN) == ("", "")
    out = [parser.feed(p) for p in pieces] + [parser.finish()]
    return "".join(t for t, _ in out), "".join(c for _, c in out), out


def _splits(text: str, cuts: int) -> list[list[str]]:
    """Every way to cut ``text`` into ``cuts + 1`` pieces (empty pieces included)."""
    return [
        [text[a:b] for a, b in itertools.pairwise((0, *points, len(text)))]
        for points in itertools.combinations_with_replacement(range(len(text) + 1), cuts)
    ]


@pytest.mark.parametrize(("text", "thinking", "content"), CASES)
def test_every_split_gives_the_same_answer(text: str, thinking: str, content: str) -> None:
    ways = [[text], list(text), *_splits(text, 1), *(_splits(text, 2) if len(text) <= 40 else [])]
    for pieces in ways:
        got_thinking, got_content, _ = _run(pieces)
        assert (got_thinking, got_content) == (thinking, content), pieces


@pytest.mark.parametrize(("text", "thinking", "content"), CASES)
def test_thinking_streams_before_any_content(text: str, thinking: str, content: str) -> None:
    for pieces in [list(text), *_splits(text, 1)]:
        _, _, out = _run(pieces)
        seen_content = False
        for think, answer in out:
            assert not (think and seen_content), f"thinking after content: {pieces}"
            seen_content = seen_content or bool(answer)


def test_thinking_is_released_as_soon_as_it_is_certain() -> None:
    parser = ThinkingParser(OPEN, CLOSE)
    assert parser.feed("<think>Step one") == ("Step one", "")
    assert parser.feed(", step two </") == (", step two ", "")  # "</" may begin the closing tag: held
    assert parser.feed("b>") == ("</b>", "")
    assert parser.feed("</think>Answer") == ("", "Answer")
    assert parser.feed(" more") == ("", " more")


def test_a_prompt_that_opens_the_thinking_primes_the_parser() -> None:
    # templates that end with "<think>" (DeepSeek-R1's): the model writes only the rest
    for pieces in [list("I reason.</think>\n\nDone."), ["I reason.</think>", "\n\n", "Done."]]:
        thinking, content, _ = _run(pieces, primed=True)
        assert (thinking, content) == ("I reason.", "Done.")


QWEN3_LIKE = """{{- range $i, $_ := .Messages }}
{{- if eq .Role "user" }}<|im_start|>user
{{ .Content }}<|im_end|>
{{ else if eq .Role "assistant" }}<|im_start|>assistant
{{ if .Thinking -}}
<think>{{ .Thinking }}</think>
{{ end -}}
{{ .Content }}<|im_end|>
{{ end }}
{{- end }}<|im_start|>assistant
{{ if and .IsThinkSet (not .Think) }}<think>

</think>

{{ end }}"""


@pytest.mark.parametrize(
    ("source", "tags"),
    [
        (QWEN3_LIKE, (OPEN, CLOSE)),
        ("{{ range .Messages }}{{ if .Thinking }}[T]{{ .Thinking }}[/T]{{ end }}{{ end }}", ("[T]", "[/T]")),
        # .Thinking outside a range over .Messages, or not between text: not a thinking template
        ("{{ if .Thinking }}<think>{{ .Thinking }}</think>{{ end }}", ("", "")),
        ("{{ range .Tools }}{{ if .Thinking }}<think>{{ .Thinking }}</think>{{ end }}{{ end }}", ("", "")),
        ("{{ range .Messages }}{{ .Thinking }}{{ end }}", ("", "")),
        ("{{ if .Think }}think hard{{ end }}{{ .Prompt }}", ("", "")),
        ("{{ .Prompt }}", ("", "")),
    ],
)
def test_tags_are_inferred_as_ollama_does(source: str, tags: tuple[str, str]) -> None:
    assert infer_tags(GoTemplate(source)) == tags


def test_jinja_tags_need_both_tags() -> None:
    assert jinja_tags("{{ m.content.split('</think>')[-1] }}{% if add_generation_prompt %}<think>\n{% endif %}") == (
        OPEN,
        CLOSE,
    )
    assert jinja_tags("{% for m in messages %}{{ m.content }}{% endfor %}") == ("", "")


@pytest.mark.parametrize("value", [True, False, None, "high", "medium", "low", "max"])
def test_think_values_ollama_takes(value: ThinkValue) -> None:
    assert check_think(value) == value


@pytest.mark.parametrize(
    ("value", "message"), [("loud", 'invalid think value: "loud"'), (1, "think must be a boolean")]
)
def test_other_think_values_are_refused(value: object, message: str) -> None:
    with pytest.raises(InvalidRequest, match=message):
        check_think(value)


def test_think_on_and_level_as_ollama_reads_them() -> None:
    assert [think_on(v) for v in (True, "low", False, None)] == [True, True, False, False]
    assert [think_level(v) for v in (True, "high", False, None)] == ["medium", "high", "", ""]
