"""GBNF grammars for constrained decoding: JSON, JSON schemas, and well-formed tool calls.

The JSON-schema conversion is llama.cpp's (through llama-cpp-python's port); what is ours is how
tool calls are framed: the model's own call syntax (``<tool_call>`` tags, bare JSON, ...) around one
JSON object per call whose ``name`` is one of the tools and whose arguments follow that tool's schema.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from llama_cpp.llama_grammar import JSON_GBNF, json_schema_to_gbnf

from nbllm.errors import InvalidRequest

__all__ = ["ToolGrammar", "format_grammar", "tool_call_grammar"]


def _schema_rules(schema: Mapping[str, Any]) -> str:
    try:
        return str(json_schema_to_gbnf(json.dumps(schema)))
    except Exception as exc:  # the converter fails on bad schemas with asserts, overflows, key errors...
        raise InvalidRequest(f"invalid JSON schema in format: {type(exc).__name__}: {exc}") from None


def format_grammar(fmt: str | Mapping[str, Any]) -> str:
    """The grammar for a request's ``format``: ``"json"`` (any JSON object) or a JSON schema."""
    if isinstance(fmt, str):
        if fmt.strip() in ("", "json"):
            return str(JSON_GBNF)
        try:
            parsed = json.loads(fmt)
        except ValueError:
            raise InvalidRequest(f'invalid format: "{fmt}" (use "json" or a JSON schema)') from None
        if not isinstance(parsed, dict):
            raise InvalidRequest("invalid format: a JSON schema must be an object")
        fmt = parsed
    return _schema_rules(fmt)


@dataclass(frozen=True)
class ToolGrammar:
    """A tool-call grammar and, for lazy use, the patterns that switch it on."""

    grammar: str
    triggers: tuple[str, ...]
    """Regexes over the generated text: when one matches, the grammar constrains from its first group on."""


def _call_schema(tools: Sequence[Mapping[str, Any]], name_key: str, args_key: str) -> dict[str, Any]:
    alternatives = []
    for tool in tools:
        fn = tool.get("function", {})
        params = fn.get("parameters") or {"type": "object"}
        if not params.get("type"):
            params = {**params, "type": "object"}
        alternatives.append(
            {
                "type": "object",
                "properties": {name_key: {"const": fn.get("name", "")}, args_key: params},
                "required": [name_key, args_key],
            }
        )
    return alternatives[0] if len(alternatives) == 1 else {"oneOf": alternatives}


def _literal(text: str) -> str:
    return json.dumps(text)  # a GBNF string literal is a JSON string literal


def tool_call_grammar(
    tools: Sequence[Mapping[str, Any]],
    *,
    prefix: str,
    suffix: str,
    name_key: str = "name",
    args_key: str = "arguments",
    lazy: bool,
    many: bool = True,
) -> ToolGrammar:
    """One or more calls, each ``prefix {"name": ..., "arguments": {...}} suffix``.

    With ``lazy`` the grammar only starts constraining once the model writes the call's opening
    (the prefix, or a ``{`` at the very start when the model's calls are bare JSON).
    """
    if not tools:
        raise InvalidRequest("tool calls need at least one tool")
    rules = _schema_rules(_call_schema(tools, name_key, args_key))
    rules = re.sub(r"^root ::=", "call ::=", rules, flags=re.M)
    opening = prefix.strip()
    closing = suffix.strip()
    one = f"{_literal(opening)} [ \\n]* call" if opening else "call"
    if closing:
        one += f" [ \\n]* {_literal(closing)}"
    repeat = " ([ \\n]* tool-call)*" if many else ""
    grammar = f"root ::= tool-call{repeat}\ntool-call ::= {one}\n{rules}"
    if not lazy:
        return ToolGrammar(grammar=grammar, triggers=())
    trigger = rf"[\s\S]*?({re.escape(opening)}[\s\S]*)" if opening else r"\s*(\{[\s\S]*)"
    return ToolGrammar(grammar=grammar, triggers=(trigger,))
