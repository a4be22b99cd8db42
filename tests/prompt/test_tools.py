"""Tool-call syntax learnt from templates, and the streaming tool-call parser."""

from __future__ import annotations

import pytest

from nbllm.prompt.gotemplate import GoTemplate
from nbllm.prompt.ollama_template import render_messages
from nbllm.prompt.tools import ToolCallParser, ToolCallSyntax, detect_syntax
from nbllm.store.catalog import CATALOG

TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
LLAMA32_CALLS = (
    '{{- range .Messages }}{{ if eq .Role "assistant" }}{{ range .ToolCalls }}'
    '{"name": "{{ .Function.Name }}", "parameters": {{ .Function.Arguments }}}{{ end }}{{ end }}{{ end }}'
)


def syntax_of(source: str) -> ToolCallSyntax:
    template = GoTemplate(source)
    return detect_syntax(lambda msgs: render_messages(template, msgs, tools=TOOLS))


def test_smollm2_uses_tool_call_tags() -> None:
    assert syntax_of(CATALOG[0].template()) == ToolCallSyntax("<tool_call>", "</tool_call>", "name", "arguments")


def test_bare_json_with_parameters_key() -> None:
    assert syntax_of(LLAMA32_CALLS) == ToolCallSyntax("", "", "name", "parameters")


def test_template_without_calls_falls_back_to_bare_json() -> None:
    assert syntax_of("{{ .Prompt }}") == ToolCallSyntax()


def feed_all(parser: ToolCallParser, pieces: list[str]) -> tuple[str, list[tuple[str, dict[str, object]]]]:
    content, calls = "", []
    for piece in pieces:
        text, found = parser.feed(piece)
        content += text
        calls += [(c.name, c.arguments) for c in found]
    return content + parser.finish(), calls


def test_tagged_calls_split_across_chunks_and_content_around_them() -> None:
    parser = ToolCallParser(ToolCallSyntax("<tool_call>", "</tool_call>"), ["get_weather"])
    content, calls = feed_all(
        parser,
        [
            "Let me look.\n<tool",
            '_call>\n{"name": "get_weather", ',
            '"arguments": {"city": "Paris"}}\n</tool_call>',
            "\n<tool_call>",
            '{"name": "get_weather", "arguments": {"city": "Rome"}}</tool_call>',
        ],
    )
    assert calls == [("get_weather", {"city": "Paris"}), ("get_weather", {"city": "Rome"})]
    assert content.strip() == "Let me look."


def test_bare_json_call_only_at_the_start() -> None:
    parser = ToolCallParser(ToolCallSyntax("", "", "name", "parameters"), ["f"])
    assert feed_all(parser, [' {"name": "f", ', '"parameters": {"x": 1}}']) == ("", [("f", {"x": 1})])
    later = ToolCallParser(ToolCallSyntax(), ["f"])
    assert feed_all(later, ["Use {", '"name": "f"}']) == ('Use {"name": "f"}', [])


def test_unfinished_call_is_returned_as_content() -> None:
    parser = ToolCallParser(ToolCallSyntax("<tool_call>", "</tool_call>"), ["f"])
    assert feed_all(parser, ['<tool_call>{"name": "f", "argu']) == ('<tool_call>{"name": "f", "argu', [])


@pytest.mark.parametrize("args", ['"{\\"a\\": 1}"', '{"a": 1}'])
def test_arguments_given_as_a_json_string_are_decoded(args: str) -> None:
    parser = ToolCallParser(ToolCallSyntax(), ["f"])
    assert feed_all(parser, ['{"name": "f", "arguments": ' + args + "}"])[1] == [("f", {"a": 1})]
