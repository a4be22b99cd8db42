"""The values Ollama hands a chat template: ``.Messages``, ``.Tools``, tool calls, ``.Think`` and friends.

Ported from Ollama's ``template/template.go`` (the template-side types that print as JSON, and how
``/api/chat`` and ``/api/generate`` derive ``.Think``/``.ThinkLevel``/``.IsThinkSet``).  The rendering
that feeds them to a template is in :mod:`nbllm.prompt.ollama_template`.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping, Sequence
from typing import Any, Final

from nbllm.errors import InvalidRequest
from nbllm.prompt.gotemplate import GoMap, GoSlice, GoStruct, go_json, go_sprint

__all__ = [
    "PropertyType",
    "TemplateArgs",
    "TemplateMessage",
    "TemplateProperties",
    "TemplateTool",
    "TemplateToolCall",
    "TemplateToolCallFunction",
    "TemplateToolFunction",
    "TemplateToolParameters",
    "TemplateTools",
    "ToolPropertiesMap",
    "ToolProperty",
    "think_values",
    "to_template_messages",
    "to_template_tools",
]

_THINK_LEVELS: Final = ("high", "medium", "low", "max")
_OMIT_EMPTY: Final = "empty"
_OMIT_NIL: Final = "nil"


# ---------------------------------------------------------------- the values templates see


class TemplateArgs(GoMap):
    """Tool-call arguments (Ollama's ``templateArgs``): a map whose ``String()`` is its JSON."""

    go_type = "template.templateArgs"

    def go_string(self) -> str:
        """JSON with sorted keys; ``{}`` when nil."""
        return "{}" if self.nil else go_json(self)


class TemplateProperties(GoMap):
    """A tool's top-level parameter properties (Ollama's ``templateProperties``), printed as JSON."""

    go_type = "template.templateProperties"

    def go_string(self) -> str:
        """JSON with sorted keys; ``{}`` when nil."""
        return "{}" if self.nil else go_json(self)


class TemplateTools(GoSlice):
    """The request's tools (Ollama's ``templateTools``), printed as a JSON array."""

    go_type = "template.templateTools"

    def go_string(self) -> str:
        """JSON array; ``null`` when no tools were sent."""
        return go_json(self)


class PropertyType(GoSlice):
    """A JSON-schema ``type``: one name or several (Ollama's ``api.PropertyType``)."""

    go_type = "api.PropertyType"

    def go_string(self) -> str:
        """The single type, or ``[a b]`` for several."""
        return "" if not self else str(self[0]) if len(self) == 1 else go_sprint(list(self))

    def go_json(self) -> str:
        """A string for one type, else an array."""
        return go_json(self[0]) if len(self) == 1 else go_json(list(self)) if self else "null"


class ToolPropertiesMap(GoStruct):
    """Nested schema properties (a pointer to Ollama's ordered ``api.ToolPropertiesMap``)."""

    go_type = "*api.ToolPropertiesMap"

    def __init__(self, entries: Mapping[str, ToolProperty]) -> None:
        super().__init__()
        self.entries = dict(entries)

    def go_json(self) -> str:
        """JSON object in insertion order."""
        return "{" + ",".join(f"{go_json(k)}:{go_json(v)}" for k, v in self.entries.items()) + "}"


class ToolProperty(GoStruct):
    """One JSON-schema property of a tool parameter (Ollama's ``api.ToolProperty``)."""

    go_type = "api.ToolProperty"
    json_tags = (
        ("AnyOf", "anyOf", _OMIT_EMPTY),
        ("Type", "type", _OMIT_EMPTY),
        ("Items", "items", _OMIT_NIL),
        ("Description", "description", _OMIT_EMPTY),
        ("Enum", "enum", _OMIT_EMPTY),
        ("Properties", "properties", _OMIT_EMPTY),
        ("Required", "required", _OMIT_EMPTY),
    )

    def go_typescript_type(self) -> str:
        """Ollama's ``ToTypeScriptType``: ``string``, ``number``, ``a | b``, ..."""
        any_of = self.fields["AnyOf"]
        if isinstance(any_of, list) and any_of:
            return " | ".join(p.go_typescript_type() for p in any_of if isinstance(p, ToolProperty))
        types = self.fields["Type"]
        if not isinstance(types, list) or not types:
            return "any"
        return " | ".join(_TS_TYPES.get(str(t), "any") for t in types)


_TS_TYPES: Final = {
    "string": "string",
    "number": "number",
    "integer": "number",
    "boolean": "boolean",
    "array": "any[]",
    "object": "Record<string, any>",
    "null": "null",
}


class TemplateTool(GoStruct):
    """A tool definition (Ollama's ``templateTool``), printed as its JSON."""

    go_type = "template.templateTool"
    json_tags = (("Type", "type", ""), ("Items", "items", _OMIT_NIL), ("Function", "function", ""))

    def go_string(self) -> str:
        """The tool's JSON."""
        return go_json(self)


class TemplateToolFunction(GoStruct):
    """``.Function`` of a tool: Name, Description, Parameters (no ``String()``: prints as a Go struct)."""

    go_type = "template.templateToolFunction"
    json_tags = (("Name", "name", ""), ("Description", "description", ""), ("Parameters", "parameters", ""))


class TemplateToolParameters(GoStruct):
    """``.Function.Parameters`` of a tool: Type, Defs, Items, Required, Properties."""

    go_type = "template.templateToolFunctionParameters"
    json_tags = (
        ("Type", "type", ""),
        ("Defs", "$defs", _OMIT_NIL),
        ("Items", "items", _OMIT_NIL),
        ("Required", "required", _OMIT_EMPTY),
        ("Properties", "properties", ""),
    )


class TemplateToolCall(GoStruct):
    """One entry of ``.ToolCalls``: ID and Function."""

    go_type = "template.templateToolCall"


class TemplateToolCallFunction(GoStruct):
    """``.Function`` of a tool call: Index, Name, Arguments."""

    go_type = "template.templateToolCallFunction"


class TemplateMessage(GoStruct):
    """One entry of ``.Messages``: Role, Content, Thinking, Images, ToolCalls, ToolName, ToolCallID."""

    go_type = "*template.templateMessage"


def _json_value(value: object) -> object:
    """A decoded JSON value as Go's ``any`` holds it: every number is a float64."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, Mapping):
        return {str(k): _json_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_value(v) for v in value]
    return value


def _strings(value: object) -> GoSlice:
    return GoSlice([str(v) for v in value] if isinstance(value, (list, tuple)) else (), nil=not value)


def _property_type(spec: Mapping[str, Any]) -> PropertyType:
    if "type" not in spec:
        return PropertyType(nil=True)
    types = spec["type"]
    return PropertyType([str(t) for t in types] if isinstance(types, (list, tuple)) else [str(types or "")])


def _property(spec: object) -> ToolProperty:
    """An ``api.ToolProperty`` decoded from JSON schema (keys Ollama does not know are dropped)."""
    spec = spec if isinstance(spec, Mapping) else {}
    nested = spec.get("properties")
    return ToolProperty(
        AnyOf=GoSlice([_property(p) for p in spec.get("anyOf") or ()], nil=not spec.get("anyOf")),
        Type=_property_type(spec),
        Items=_json_value(spec.get("items")),
        Description=str(spec.get("description") or ""),
        Enum=GoSlice([_json_value(v) for v in spec.get("enum") or ()], nil=not spec.get("enum")),
        Properties=ToolPropertiesMap({str(k): _property(v) for k, v in nested.items()})
        if isinstance(nested, Mapping)
        else None,
        Required=_strings(spec.get("required")),
    )


def to_template_tools(tools: Sequence[Mapping[str, Any]] | None) -> TemplateTools:
    """``.Tools`` from tools in Ollama's JSON form (unknown schema keys are dropped, as Go's decoder does)."""
    result = TemplateTools(nil=tools is None)
    for tool in tools or ():
        function = tool.get("function") or {}
        params = function.get("parameters") or {}
        props = params.get("properties")
        parameters = TemplateToolParameters(
            Type=str(params.get("type") or ""),
            Defs=_json_value(params.get("$defs")),
            Items=_json_value(params.get("items")),
            Required=_strings(params.get("required")),
            Properties=TemplateProperties(
                {str(k): _property(v) for k, v in props.items()} if isinstance(props, Mapping) else None,
                nil=not isinstance(props, Mapping),
            ),
        )
        result.append(
            TemplateTool(
                Type=str(tool.get("type") or ""),
                Items=_json_value(tool.get("items")),
                Function=TemplateToolFunction(
                    Name=str(function.get("name") or ""),
                    Description=str(function.get("description") or ""),
                    Parameters=parameters,
                ),
            )
        )
    return result


def _tool_call(call: Mapping[str, Any]) -> TemplateToolCall:
    function = call.get("function") or {}
    args = function.get("arguments")
    if args is not None and not isinstance(args, Mapping):
        raise InvalidRequest("tool call arguments must be a JSON object")
    return TemplateToolCall(
        ID=str(call.get("id") or ""),
        Function=TemplateToolCallFunction(
            Index=int(function.get("index") or 0),
            Name=str(function.get("name") or ""),
            Arguments=TemplateArgs({str(k): _json_value(v) for k, v in (args or {}).items()}, nil=args is None),
        ),
    )


def _image(data: object) -> bytes:
    if isinstance(data, (bytes, bytearray)):
        return bytes(data)
    try:
        return base64.b64decode(str(data), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidRequest(f"invalid image data: {exc}") from exc


def to_template_messages(messages: Sequence[Mapping[str, Any]]) -> GoSlice:
    """``.Messages`` from chat messages in Ollama's JSON form (already collated)."""
    result = GoSlice(nil=not messages)
    for msg in messages:
        calls, images = msg.get("tool_calls") or (), msg.get("images") or ()
        result.append(
            TemplateMessage(
                Role=str(msg.get("role") or "").lower(),
                Content=str(msg.get("content") or ""),
                Thinking=str(msg.get("thinking") or ""),
                Images=GoSlice([_image(i) for i in images], nil=not images),
                ToolCalls=GoSlice([_tool_call(c) for c in calls], nil=not calls),
                ToolName=str(msg.get("tool_name") or ""),
                ToolCallID=str(msg.get("tool_call_id") or ""),
            )
        )
    return result


# ---------------------------------------------------------------- .Think, .ThinkLevel, .IsThinkSet


def think_values(*, think: bool | str | None, is_thinking_model: bool) -> dict[str, Any]:
    """Think/ThinkLevel/IsThinkSet as Ollama derives them from the request's ``think``."""
    if think is None and is_thinking_model:
        think = True  # thinking models think unless told not to
    if think is None:
        return {"think": False, "think_level": "", "is_think_set": False}
    if isinstance(think, bool):
        return {"think": think, "think_level": "medium" if think else "", "is_think_set": True}
    return {"think": think in _THINK_LEVELS, "think_level": think, "is_think_set": True}
