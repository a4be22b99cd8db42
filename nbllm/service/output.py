"""What a model writes, split as the API returns it: thinking, content and tool calls.

Thinking comes first (Ollama runs its thinking parser before its tool parser), so a tool call made
after the thinking is parsed from the content, and a call-like text inside the thinking is not one.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from nbllm.prompt.thinking import ThinkingParser, ThinkValue, think_on
from nbllm.prompt.tools import ToolCallParser
from nbllm.schema import ToolCall
from nbllm.service.constraints import to_tool_calls

__all__ = ["OutputSplitter", "Piece", "thinking_parser"]


@dataclass(slots=True)
class Piece:
    """One stretch of output: thinking, content and the tool calls it completed."""

    thinking: str = ""
    content: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        """Nothing to show yet (the parsers hold text back until it is decided)."""
        return not (self.thinking or self.content or self.tool_calls)


def thinking_parser(think: ThinkValue, tags: tuple[str, str], prompt: str) -> ThinkingParser | None:
    """The parser for a request that thinks with a template that has tags (else none, as Ollama).

    A prompt that already opens the thinking (templates that end with ``<think>``) primes the parser.
    """
    opening, closing = tags
    if not (think_on(think) and opening and closing):
        return None
    parser = ThinkingParser(opening, closing)
    if prompt.strip().endswith(opening):
        parser.feed(opening)
    return parser


class OutputSplitter:
    """Splits the streamed text of one response into pieces."""

    def __init__(self, thinking: ThinkingParser | None, tools: ToolCallParser | None) -> None:
        self.thinking = thinking
        self.tools = tools
        self.n_calls = 0

    def take(self, text: str, *, final: bool) -> Piece:
        """The piece ``text`` completes; ``final`` flushes what the parsers hold back."""
        thinking, content = self.thinking.feed(text) if self.thinking is not None else ("", text)
        if final and self.thinking is not None:
            more_thinking, more_content = self.thinking.finish()
            thinking, content = thinking + more_thinking, content + more_content
        if self.tools is None:
            return Piece(thinking, content)
        content, calls = self.tools.feed(content)
        if final:
            content += self.tools.finish()
        tool_calls = to_tool_calls(calls, self.n_calls)
        self.n_calls += len(calls)
        return Piece(thinking, content, tool_calls)
