"""Tool calls in model output: learn a model's call syntax from its template, then parse streams.

The syntax is read off the template itself: render an assistant turn holding a sentinel call, and
what surrounds the sentinel's JSON object (``<tool_call>`` ... ``</tool_call>``, or nothing for
models that answer with bare JSON) is the model's framing; the object's keys say whether arguments
are called ``arguments`` or ``parameters``. The parser then splits streamed text into content and
complete calls, holding back anything that may still become a call.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["ParsedCall", "ToolCallParser", "ToolCallSyntax", "detect_syntax"]

_SENTINEL = "nbllm_sentinel_fn"
_SENTINEL_ARGS = {"nbllm_sentinel_arg": "nbllm_sentinel_value"}


@dataclass(frozen=True)
class ToolCallSyntax:
    """How a model frames its tool calls."""

    prefix: str = ""
    """Text before each call's JSON object (stripped, e.g. ``<tool_call>``); empty for bare JSON."""
    suffix: str = ""
    """Text after each call's JSON object (stripped, e.g. ``</tool_call>``)."""
    name_key: str = "name"
    args_key: str = "arguments"


def detect_syntax(render: Callable[[list[dict[str, Any]]], str]) -> ToolCallSyntax:
    """Find the call framing by rendering a conversation whose assistant turn makes a sentinel call.

    ``render(messages)`` renders messages with the template (tools included). Falls back to bare
    JSON with ``arguments`` when the template does not show calls at all.
    """
    call = {"function": {"name": _SENTINEL, "arguments": _SENTINEL_ARGS}}
    user = {"role": "user", "content": "nbllm_sentinel_question"}
    try:
        text = render([user, {"role": "assistant", "content": "", "tool_calls": [call]}])
    except Exception:  # a template that chokes on the sentinel: assume bare JSON
        return ToolCallSyntax()
    at = text.find(_SENTINEL)
    if at == -1:
        return ToolCallSyntax()
    start = text.rfind("{", 0, at)
    obj, end = _json_object_at(text, start)
    if obj is None:
        return ToolCallSyntax()
    args_key = next((k for k, v in obj.items() if v == _SENTINEL_ARGS), "arguments")
    name_key = next((k for k, v in obj.items() if v == _SENTINEL), "name")
    question = text.find("nbllm_sentinel_question")
    before = text[question:start]
    prefix = _last_line_tag(before)
    after = text[end:]
    suffix = _first_tag(after)
    return ToolCallSyntax(prefix=prefix, suffix=suffix, name_key=name_key, args_key=args_key)


def _no_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


_STRICT_JSON = json.JSONDecoder(parse_constant=_no_constant)
"""JSON as the standard has it: Python's decoder takes NaN and Infinity, which no client could read back."""


def _json_object_at(text: str, start: int) -> tuple[dict[str, Any] | None, int]:
    if start < 0:
        return None, start
    try:
        obj, end = _STRICT_JSON.raw_decode(text, start)
    except ValueError:
        return None, start
    return (obj if isinstance(obj, dict) else None), end


def _last_line_tag(before: str) -> str:
    """The framing right before the JSON: the last non-empty line, if it is a tag-like token."""
    lines = [line.strip() for line in before.splitlines() if line.strip()]
    if not lines:
        return ""
    last = lines[-1]
    # a header like "<|im_start|>assistant" belongs to the turn, not to the call
    if last.startswith(("<|", "[INST", "ASSISTANT", "assistant")) or last.endswith(("assistant", "|>")):
        return ""
    return last if len(last) <= 40 and " " not in last else ""


def _first_tag(after: str) -> str:
    lines = [line.strip() for line in after.splitlines() if line.strip()]
    if not lines:
        return ""
    first = lines[0]
    if first.startswith(("</", "[/")) and len(first) <= 40:
        return first.split("<|")[0] if "<|" in first and not first.startswith("<|") else first
    return ""


@dataclass
class ParsedCall:
    """A complete tool call found in the output."""

    name: str
    arguments: dict[str, Any]


@dataclass
class ToolCallParser:
    """Splits streamed model output into visible content and tool calls."""

    syntax: ToolCallSyntax
    tool_names: Sequence[str]
    _buffer: str = ""
    _in_call: bool = False
    _seen_content: bool = False
    calls: list[ParsedCall] = field(default_factory=list)

    def feed(self, text: str) -> tuple[str, list[ParsedCall]]:
        """Add generated text; return (content to show now, calls completed by it)."""
        self._buffer += text
        out: list[str] = []
        found: list[ParsedCall] = []
        while self._buffer:
            if self._in_call:
                call = self._take_call()
                if call is None:
                    break
                found.append(call)
                continue
            emitted = self._scan_content()
            if emitted is None:
                break
            out.append(emitted)
        content = "".join(out)
        if content.strip():
            self._seen_content = True
        self.calls.extend(found)
        return content, found

    def _scan_content(self) -> str | None:
        """Release content up to a call opening; None when waiting for more text."""
        opening = self.syntax.prefix or "{"
        buf = self._buffer
        if not self.syntax.prefix and self._seen_content:
            self._buffer = ""
            return buf  # bare-JSON models only call at the very start of an answer
        if not self.syntax.prefix:
            stripped = buf.lstrip()
            if not stripped:
                return None
            if stripped.startswith("{"):
                self._in_call = True
                self._buffer = stripped
                return ""
            self._seen_content = True
            self._buffer = ""
            return buf
        index = buf.find(opening)
        if index != -1:
            self._in_call = True
            self._buffer = buf[index + len(opening) :]
            return buf[:index]
        keep = max((n for n in range(1, len(opening)) if buf.endswith(opening[:n])), default=0)
        self._buffer = buf[len(buf) - keep :] if keep else ""
        released = buf[: len(buf) - keep] if keep else buf
        return released if released or not keep else None

    def _take_call(self) -> ParsedCall | None:
        buf = self._buffer.lstrip()
        start = buf.find("{")
        if start == -1:
            return None
        obj, end = _json_object_at(buf, start)
        if obj is None:
            return None
        rest = buf[end:]
        closing = self.syntax.suffix
        if closing:
            stripped = rest.lstrip()
            if len(stripped) < len(closing) and closing.startswith(stripped):
                return None  # the closing tag is still arriving
            if stripped.startswith(closing):
                rest = stripped[len(closing) :]
        self._buffer = rest
        self._in_call = False
        name = obj.get(self.syntax.name_key) or obj.get("name") or ""
        args = obj.get(self.syntax.args_key, obj.get("arguments", obj.get("parameters", {})))
        if isinstance(args, str):
            try:
                args = _STRICT_JSON.decode(args)
            except ValueError:
                args = {"value": args}
        return ParsedCall(name=str(name), arguments=args if isinstance(args, dict) else {"value": args})

    def finish(self) -> str:
        """End of output: whatever is held that never became a call is content after all."""
        rest = self._buffer
        self._buffer = ""
        if self._in_call:
            self._in_call = False
            return (self.syntax.prefix + rest) if self.syntax.prefix else rest
        return rest


def tool_names(tools: Sequence[Mapping[str, Any]]) -> list[str]:
    """Names of the functions among ``tools``."""
    return [str(t.get("function", {}).get("name", "")) for t in tools]
