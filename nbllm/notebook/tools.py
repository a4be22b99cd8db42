"""Python functions as tools: signature and docstring → a tool schema; calls validated, run and timed.

The schema follows what ollama-python's ``convert_function_to_tool`` sends (a JSON schema of the
arguments, descriptions from a Google-style ``Args:`` section), built with pydantic so that
annotations such as ``Literal``, ``list[int]`` or a pydantic model become the right schema, and the
model's arguments are validated (and coerced) before the function runs.
"""

from __future__ import annotations

import inspect
import json
import re
import time
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from nbllm.errors import InvalidRequest
from nbllm.schema import Tool, ToolFunction

__all__ = ["ToolBox", "ToolCallRecord", "function_to_tool", "parse_docstring"]

_SECTION = re.compile(r"^\s*(Args|Arguments|Parameters|Returns|Return|Raises|Yields|Examples?|Notes?):\s*$")
_ARG = re.compile(r"^\s*\*{0,2}([A-Za-z_][A-Za-z0-9_]*)\s*(?:\(([^)]*)\))?\s*:\s*(.*)$")


def parse_docstring(doc: str | None) -> tuple[str, dict[str, str]]:
    """The description and the per-argument texts of a Google-style docstring.

    >>> parse_docstring('''Add two numbers.
    ...
    ... Args:
    ...     a (int): The first number.
    ...     b: The second
    ...         number.
    ...
    ... Returns:
    ...     int: The sum.
    ... ''')
    ('Add two numbers.', {'a': 'The first number.', 'b': 'The second number.'})
    """
    lines = inspect.cleandoc(doc or "").splitlines()
    description: list[str] = []
    args: dict[str, str] = {}
    section: str | None = None
    current: str | None = None
    for line in lines:
        header = _SECTION.match(line)
        if header:
            section, current = header.group(1), None
            continue
        if section is None:
            description.append(line)
        elif section in ("Args", "Arguments", "Parameters") and line.strip():
            match = _ARG.match(line)
            if match and len(line) - len(line.lstrip()) <= 4:
                current = match.group(1)
                args[current] = match.group(3).strip()
            elif current is not None:
                args[current] = f"{args[current]} {line.strip()}".strip()
    return "\n".join(description).strip(), args


def _strip_titles(schema: Any) -> Any:
    """Drop pydantic's generated titles and collapse ``X | None`` into ``X`` (simpler for small models)."""
    if isinstance(schema, list):
        return [_strip_titles(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key == "title" and isinstance(value, str):
            continue
        if key in ("properties", "$defs") and isinstance(value, dict):
            out[key] = {name: _strip_titles(sub) for name, sub in value.items()}
        else:
            out[key] = _strip_titles(value)
    options = out.get("anyOf")
    if isinstance(options, list):
        real = [o for o in options if o != {"type": "null"}]
        if len(real) == 1 and len(real) < len(options):
            del out["anyOf"]
            out = {**real[0], **out}
    return out


def _arguments_model(fn: Callable[..., Any], docs: Mapping[str, str]) -> type[BaseModel]:
    """A pydantic model of ``fn``'s parameters (unannotated ones are strings)."""
    try:
        hints = typing.get_type_hints(fn)
    except Exception:  # one unresolvable forward reference: resolve the others one by one
        hints = {}
    fields: dict[str, Any] = {}
    for name, param in inspect.signature(fn).parameters.items():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        annotation = hints.get(name, param.annotation)
        if isinstance(annotation, str):
            annotation = _resolve(annotation, fn)
        if annotation is inspect.Parameter.empty:
            annotation = str
        default = ... if param.default is inspect.Parameter.empty else param.default
        fields[name] = (annotation, Field(default, description=docs.get(name)))
    config = ConfigDict(arbitrary_types_allowed=True, extra="forbid")
    return create_model(getattr(fn, "__name__", "tool"), __config__=config, **fields)


def _resolve(annotation: str, fn: Callable[..., Any]) -> Any:
    """A string annotation evaluated in the function's module; unresolvable ones count as strings."""
    try:
        return eval(annotation, getattr(fn, "__globals__", {}), {})
    except Exception:
        return str


def function_to_tool(fn: Callable[..., Any]) -> Tool:
    """The tool definition of a Python function (name, docstring description, argument schema).

    >>> function_to_tool(lambda city: city).function.parameters["properties"]
    {'city': {'type': 'string'}}
    """
    description, docs = parse_docstring(fn.__doc__)
    schema = _strip_titles(_arguments_model(fn, docs).model_json_schema())
    schema.setdefault("properties", {})
    schema.setdefault("required", [])
    name = getattr(fn, "__name__", "tool")
    return Tool(type="function", function=ToolFunction(name=name, description=description or None, parameters=schema))


@dataclass
class ToolCallRecord:
    """One executed tool call: what the model asked for, what came back, and how long it took."""

    name: str
    arguments: dict[str, Any]
    result: Any = None
    error: str | None = None
    duration_s: float = 0.0
    call_id: str | None = None
    reruns: int = 0

    @property
    def content(self) -> str:
        """The text sent back to the model in the ``tool`` message."""
        if self.error is not None:
            return f"error: {self.error}"
        if isinstance(self.result, str):
            return self.result
        try:
            return json.dumps(self.result, default=str, ensure_ascii=False)
        except (TypeError, ValueError):
            return str(self.result)

    def summary(self) -> str:
        """``name(a=1) → 'result' (0.4 ms)``."""
        args = ", ".join(f"{k}={v!r}" for k, v in self.arguments.items())
        outcome = f"error: {self.error}" if self.error is not None else _short(self.content)
        return f"{self.name}({args}) → {outcome} ({self.duration_s * 1000:.1f} ms)"


def _short(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


@dataclass
class ToolBox:
    """The functions a conversation may call, by name."""

    functions: dict[str, Callable[..., Any]] = field(default_factory=dict)

    @classmethod
    def of(cls, functions: Iterable[Callable[..., Any]]) -> ToolBox:
        """A toolbox of callables (named by ``__name__``)."""
        box = cls()
        for fn in functions:
            if not callable(fn):
                raise InvalidRequest(f"{fn!r} is not callable")
            box.functions[getattr(fn, "__name__", repr(fn))] = fn
        return box

    def tools(self) -> list[Tool]:
        """The tool definitions to send with a chat request."""
        return [function_to_tool(fn) for fn in self.functions.values()]

    def call(self, name: str, arguments: Mapping[str, Any], *, call_id: str | None = None) -> ToolCallRecord:
        """Validate the arguments and run the function; errors are recorded, never raised."""
        record = ToolCallRecord(name=name, arguments=dict(arguments), call_id=call_id)
        self.run(record)
        return record

    def run(self, record: ToolCallRecord) -> ToolCallRecord:
        """(Re-)run a recorded call with its current arguments, updating result, error and duration."""
        record.result, record.error = None, None
        fn = self.functions.get(record.name)
        started = time.perf_counter()
        try:
            if fn is None:
                raise LookupError(f"no tool named {record.name!r} (tools: {', '.join(self.functions) or 'none'})")
            args = _arguments_model(fn, {}).model_validate(record.arguments)
            record.result = _invoke(fn, {name: getattr(args, name) for name in type(args).model_fields})
        except ValidationError as exc:
            record.error = f"invalid arguments: {_validation_text(exc)}"
        except Exception as exc:
            record.error = f"{type(exc).__name__}: {exc}"
        record.duration_s = time.perf_counter() - started
        return record


def _invoke(fn: Callable[..., Any], values: dict[str, Any]) -> Any:
    positional = []
    for name, param in inspect.signature(fn).parameters.items():
        if param.kind is param.POSITIONAL_ONLY and name in values:
            positional.append(values.pop(name))
    return fn(*positional, **values)


def _validation_text(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err.get("loc", ()))
        parts.append(f"{where}: {err.get('msg')}" if where else str(err.get("msg")))
    return "; ".join(parts)
