"""GBNF grammars for constrained decoding: JSON, JSON schemas, and well-formed tool calls.

The JSON-schema conversion is llama.cpp's (through llama-cpp-python's port), with three changes of
ours: a string's characters exclude raw control characters (which JSON forbids; llama.cpp's C++
converter excludes them too), length and item bounds are written as llama.cpp's ``x{m,n}``
repetitions instead of being spelled out one copy at a time, and every schema is checked against
the limits of :mod:`nbllm.engine.schema_limits` first and every grammar parsed by llama.cpp before
it is used, so that a bad schema is a bad request rather than a server that runs out of memory
(or stack). What is ours too is how tool calls are framed: the model's own call syntax
(``<tool_call>`` tags, bare JSON, ...) around one JSON object per call whose ``name`` is one of the
tools and whose arguments follow that tool's schema.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import llama_cpp as L
from llama_cpp.llama_grammar import (
    JSON_GBNF,
    PRIMITIVE_RULES,
    RESERVED_NAMES,
    STRING_FORMAT_RULES,
    BuiltinRule,
    SchemaConverter,
)

from nbllm.engine.json_text import json_safe, quotes_escaped
from nbllm.engine.schema_limits import REPEAT_CHUNK, SchemaBudget
from nbllm.errors import InvalidRequest

__all__ = ["MAX_GRAMMAR_BYTES", "MAX_GRAMMAR_NESTING", "ToolGrammar", "format_grammar", "tool_call_grammar"]

MAX_GRAMMAR_BYTES = 1_000_000
"""The longest grammar text a request may produce (a backstop behind the schema's own limits)."""
MAX_GRAMMAR_NESTING = 1_100
"""The deepest nesting of parentheses in a grammar: llama.cpp's parser recurses into each (and
crashes the process on a stack overflow somewhere past 10,000)."""
_LLAMA_MAX_COUNT = 2 * REPEAT_CHUNK  # llama.cpp refuses larger x{m}, and silently drops a larger n in x{m,n}
_JSON_SAFE = r'[^"\\\x7F\x00-\x1F]'
"""Any character that may stand for itself inside a JSON string: not a quote, backslash or control."""
_JSON_CHAR = _JSON_SAFE + r' | "\\" (["\\/bfnrt] | "u" [0-9a-fA-F]{4})'
_NOT_THE_LENGTH_BRANCH = frozenset(("$ref", "oneOf", "anyOf", "const", "enum"))


def _repeat(item: str, lo: int, hi: int | None) -> str:
    """GBNF for ``item`` repeated ``lo`` to ``hi`` times (``None``: no limit), each count within llama.cpp's.

    What is built must not be wrapped in a group with a repetition after it (not even ``?``): llama.cpp
    refuses to repeat a group that made more than 2000 rules, and a count of n makes n rules.
    """
    parts = []
    if lo > _LLAMA_MAX_COUNT:
        chunks, lo = divmod(lo, REPEAT_CHUNK)
        parts.append(f"({item}{{{REPEAT_CHUNK}}}){{{chunks}}}")
        hi = None if hi is None else hi - chunks * REPEAT_CHUNK
    if hi is None:
        parts.append(f"{item}{{{lo},}}")
    elif hi <= _LLAMA_MAX_COUNT:
        parts.append(f"{item}{{{lo},{hi}}}" if hi else "")
    elif hi - lo <= _LLAMA_MAX_COUNT:
        parts.append(f"{item}{{{lo}}} {item}{{0,{hi - lo}}}")
    else:
        # exactly 0..k more: fewer than `full` whole chunks and a partial one, or `full` and the rest
        full, rest = divmod(hi - lo, REPEAT_CHUNK)
        chunk = f"({item}{{{REPEAT_CHUNK}}})"
        parts.append(f"{item}{{{lo}}}" if lo else "")
        parts.append(f"({chunk}{{0,{full - 1}}} {item}{{0,{REPEAT_CHUNK - 1}}} | {chunk}{{{full}}} {item}{{0,{rest}}})")
    return " ".join(part for part in parts if part)


def _count(value: Any) -> int:
    """A bound already checked by SchemaBudget (a non-negative integer, maybe written as 3.0)."""
    return int(value)


class _Converter(SchemaConverter):
    """llama.cpp's converter with JSON-safe string characters and ``{m,n}`` repetitions."""

    def __init__(self) -> None:
        super().__init__(prop_order={}, allow_fetch=False, dotall=False, raw_pattern=False)  # type: ignore[no-untyped-call]

    def _add_primitive(self, name: str, rule: BuiltinRule) -> str:
        if name == "char":
            rule = BuiltinRule(_JSON_CHAR, [])
        return str(super()._add_primitive(name, rule))

    def _add_rule(self, name: str, rule: str) -> str:
        return str(super()._add_rule(name, rule))  # type: ignore[no-untyped-call]

    def _visit_pattern(self, pattern: str, name: str) -> str:
        """The library's rules for a pattern (raw: the value), rewritten to match the value's JSON text."""
        before = set(self._rules)
        self._raw_pattern = True
        try:
            key = str(super()._visit_pattern(quotes_escaped(pattern), name))  # type: ignore[no-untyped-call]
        finally:
            self._raw_pattern = False
        made = set(self._rules) - before
        for rule in made:
            self._rules[rule] = json_safe(self._rules[rule])
        if key in made:
            self._rules[key] = f'"\\"" {self._rules[key]} "\\"" space'
        return key

    def visit(self, schema: Mapping[str, Any], name: str) -> str:
        """The rule for ``schema``: ours for bounded strings and arrays, the library's for the rest."""
        if _NOT_THE_LENGTH_BRANCH.isdisjoint(schema) and not isinstance(schema.get("type"), list):
            rule_name = name + "-" if name in RESERVED_NAMES else name or "root"
            if self._is_bounded_string(schema):
                char = self._add_primitive("char", PRIMITIVE_RULES["char"])
                body = _repeat(char, _count(schema.get("minLength", 0)), self._max(schema, "maxLength"))
                return self._add_rule(rule_name, rf'"\"" {body} "\"" space')
            if self._is_array(schema):
                return self._add_rule(rule_name, self._array_rule(schema, name))
        return str(super().visit(schema, name))  # type: ignore[no-untyped-call]

    @staticmethod
    def _max(schema: Mapping[str, Any], key: str) -> int | None:
        return None if schema.get(key) is None else _count(schema[key])

    @staticmethod
    def _is_bounded_string(schema: Mapping[str, Any]) -> bool:
        fmt = schema.get("format") or ""
        named_format = re.match(r"^uuid[1-5]?$", fmt) or f"{fmt}-string" in STRING_FORMAT_RULES
        bounded = "minLength" in schema or "maxLength" in schema
        return schema.get("type") == "string" and bounded and "pattern" not in schema and not named_format

    @staticmethod
    def _is_array(schema: Mapping[str, Any]) -> bool:
        kind = schema.get("type")
        maybe_object = kind is None and (
            "properties" in schema
            or ("additionalProperties" in schema and schema["additionalProperties"] is not True)
            or "allOf" in schema
        )
        return kind in (None, "array") and not maybe_object and isinstance(schema.get("items"), Mapping)

    def _array_rule(self, schema: Mapping[str, Any], name: str) -> str:
        item = self.visit(schema["items"], f"{name}{'-' if name else ''}item")
        lo, hi = _count(schema.get("minItems", 0)), self._max(schema, "maxItems")
        more = _repeat(f'("," space {item})', max(lo - 1, 0), None if hi is None else hi - 1)
        body = "" if hi == 0 else f"{item} {more}" if lo else f"({item} {more} | )"  # not "?": see _repeat
        return f'"[" space {body} "]" space'


def _nesting(grammar: str) -> int:
    """How deeply parentheses nest in a grammar (outside its literals and character classes)."""
    depth = deepest = 0
    for token in re.finditer(r'"(?:\\.|[^"\\])*"|\[(?:\\.|[^\]\\])*\]|#[^\n]*|[()]', grammar):
        if token.group() == "(":
            depth += 1
            deepest = max(deepest, depth)
        elif token.group() == ")":
            depth -= 1
    return deepest


def _checked(grammar: str, where: str) -> str:
    """``grammar`` if it is small enough and llama.cpp can parse it, else a bad request."""
    if len(grammar) > MAX_GRAMMAR_BYTES:
        raise InvalidRequest(f"JSON schema too large: its grammar exceeds {MAX_GRAMMAR_BYTES} bytes ({where})")
    if _nesting(grammar) > MAX_GRAMMAR_NESTING:
        raise InvalidRequest(f"JSON schema too large: its grammar nests deeper than {MAX_GRAMMAR_NESTING} ({where})")
    sampler = L.llama_sampler_init_grammar(None, grammar.encode(), b"root")  # parsed without a vocabulary
    if not sampler:
        raise InvalidRequest(f"invalid JSON schema in {where}: llama.cpp cannot use the grammar made from it")
    L.llama_sampler_free(sampler)
    return grammar


def _schema_rules(schema: Mapping[str, Any], where: str) -> str:
    """The converter's rules for a schema already checked against the limits."""
    converter = _Converter()
    try:
        converter.visit(converter.resolve_refs(json.loads(json.dumps(schema)), "stdin"), "")
        return str(converter.format_grammar())  # type: ignore[no-untyped-call]
    except InvalidRequest as exc:  # from a pattern's rules: say where the pattern is
        raise InvalidRequest(str(exc).replace("invalid JSON schema:", f"invalid JSON schema in {where}:", 1)) from None
    except Exception as exc:  # the converter fails on bad schemas with asserts, overflows, key errors...
        raise InvalidRequest(f"invalid JSON schema in {where}: {type(exc).__name__}: {exc}") from None


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
    SchemaBudget().check(fmt, "format")
    return _checked(_schema_rules(fmt, "format"), "format")


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
    budget = SchemaBudget()
    for tool in tools:
        fn = tool.get("function") or {}
        budget.check(fn.get("parameters") or {}, f"tools.{fn.get('name', '')}.parameters")
    rules = _schema_rules(_call_schema(tools, name_key, args_key), "tools")
    rules = re.sub(r"^root ::=", "call ::=", rules, flags=re.M)
    opening = prefix.strip()
    closing = suffix.strip()
    one = f"{_literal(opening)} [ \\n]* call" if opening else "call"
    if closing:
        one += f" [ \\n]* {_literal(closing)}"
    repeat = " ([ \\n]* tool-call)*" if many else ""
    grammar = _checked(f"root ::= tool-call{repeat}\ntool-call ::= {one}\n{rules}", "tools")
    if not lazy:
        return ToolGrammar(grammar=grammar, triggers=())
    trigger = rf"[\s\S]*?({re.escape(opening)}[\s\S]*)" if opening else r"\s*(\{[\s\S]*)"
    return ToolGrammar(grammar=grammar, triggers=(trigger,))
