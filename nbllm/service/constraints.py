"""What a request constrains: structured output (``format``) and tool calls (``tools``, ``tool_choice``).

Tool calls are parsed in the model's own syntax (learnt from its template). Once the model opens a
call, a lazy grammar built from the tools' JSON schemas takes over, so every call it makes is
well-formed and names a real tool; ``tool_choice`` ``required`` or a named function forces a call
from the first token (an nbllm extension on ``/api/chat``, OpenAI's field on ``/v1``).
"""

from __future__ import annotations

import functools
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from nbllm.errors import InvalidRequest
from nbllm.prompt.tools import ParsedCall, ToolCallParser, ToolCallSyntax, detect_syntax
from nbllm.schema import ToolCall, ToolCallFunction
from nbllm.service.prompts import ModelTemplate

__all__ = ["Constraints", "chat_constraints", "format_only", "to_tool_calls"]


@dataclass(frozen=True)
class Constraints:
    """Grammar for the engine, and the parser for tool calls (if tools are in play)."""

    grammar: str | None = None
    triggers: tuple[str, ...] = ()
    syntax: ToolCallSyntax | None = None
    tool_names: tuple[str, ...] = ()

    def parser(self) -> ToolCallParser | None:
        """A fresh parser for one response."""
        return ToolCallParser(self.syntax, self.tool_names) if self.syntax is not None else None


def format_only(fmt: str | Mapping[str, Any] | None) -> Constraints:
    """Constraints of a request's ``format`` (none when absent)."""
    if fmt is None or fmt == "":
        return Constraints()
    from nbllm.engine.grammar import format_grammar  # llama.cpp's schema converter, loaded on use

    return Constraints(grammar=format_grammar(fmt))


def _forced_tools(
    tools: Sequence[Mapping[str, Any]], choice: str | Mapping[str, Any] | None
) -> tuple[Sequence[Mapping[str, Any]], bool]:
    """The tools a call may name, and whether a call is forced."""
    if choice in (None, "auto"):
        return tools, False
    if choice == "required":
        return tools, True
    if isinstance(choice, Mapping):
        name = (choice.get("function") or {}).get("name") or choice.get("name")
        chosen = [t for t in tools if t.get("function", {}).get("name") == name]
        if not chosen:
            raise InvalidRequest(f"tool_choice names a function that is not in tools: {name!r}")
        return chosen, True
    raise InvalidRequest(f"invalid tool_choice {choice!r}: use auto, none, required or a function")


@functools.lru_cache(maxsize=32)
def _syntax_for(template: ModelTemplate, tools_key: str) -> ToolCallSyntax:
    import json

    tools = json.loads(tools_key)
    return detect_syntax(lambda messages: template.chat(messages, tools))


def chat_constraints(
    template: ModelTemplate,
    tools: Sequence[Mapping[str, Any]] | None,
    tool_choice: str | Mapping[str, Any] | None,
    fmt: str | Mapping[str, Any] | None,
) -> Constraints:
    """Grammar and parser for a chat request."""
    if not tools or tool_choice == "none":
        return format_only(fmt)
    import json

    from nbllm.engine.grammar import tool_call_grammar

    allowed, forced = _forced_tools(tools, tool_choice)
    syntax = _syntax_for(template, json.dumps(list(tools), sort_keys=True))
    names = tuple(str(t.get("function", {}).get("name", "")) for t in allowed)
    if fmt is not None and fmt != "" and not forced:
        # structured output wins over an optional call; calls are still recognised if made
        return Constraints(grammar=format_only(fmt).grammar, syntax=syntax, tool_names=names)
    tg = tool_call_grammar(
        allowed,
        prefix=syntax.prefix,
        suffix=syntax.suffix,
        name_key=syntax.name_key,
        args_key=syntax.args_key,
        lazy=not forced,
        # a forced call is exactly one call: once it is complete the grammar only allows the end of
        # generation (a repeatable grammar let the model start a second call it could not finish)
        many=not forced,
    )
    return Constraints(grammar=tg.grammar, triggers=tg.triggers, syntax=syntax, tool_names=names)


def to_tool_calls(calls: Sequence[ParsedCall], start: int) -> list[ToolCall]:
    """Parsed calls as the API's ``tool_calls`` (with ids and running indexes)."""
    return [
        ToolCall(
            id=f"call_{secrets.token_hex(4)}",
            function=ToolCallFunction(index=start + i, name=c.name, arguments=c.arguments),
        )
        for i, c in enumerate(calls)
    ]
