"""How Ollama feeds chat templates: the values templates see, message collation, and legacy rendering.

Ported from Ollama's ``template/template.go`` (``Template.Execute``, ``collate``, the template-side
types that print as JSON), ``server/prompt.go`` (``chatPrompt``: image tags, then the template) and
``server/routes.go`` (how ``/api/chat`` and ``/api/generate`` build the message list).  Prompt
truncation to the context window is not done here.
"""

from __future__ import annotations

import base64
import binascii
import copy
import functools
from collections.abc import Mapping, Sequence
from typing import Any, Final

from nbllm.errors import InvalidRequest, TemplateError
from nbllm.prompt.gotemplate import (
    ActionNode,
    BranchNode,
    CommandNode,
    FieldNode,
    GoMap,
    GoSlice,
    GoStruct,
    GoTemplate,
    ListNode,
    Node,
    PipeNode,
    go_json,
    go_sprint,
)

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
    "collate",
    "execute",
    "parse_template",
    "render_generate",
    "render_messages",
    "tag_images",
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


# ---------------------------------------------------------------- Ollama's Template.Execute


def _response_node(pos: int) -> ActionNode:
    field = FieldNode(pos, ["Response"])
    return ActionNode(pos, PipeNode(pos, [], is_assign=False, cmds=[CommandNode(pos, [field])]))


def parse_template(text: str) -> GoTemplate:
    """Ollama's ``template.Parse``: parse, check, append ``{{ .Response }}`` if no turn field is used."""
    return _touched_up(GoTemplate(text))


@functools.lru_cache(maxsize=64)  # (by identity: each request renders its model's one parsed template)
def _touched_up(template: GoTemplate) -> GoTemplate:
    names = template.vars()  # also rejects {{template "x"}} without a pipeline, as Ollama does
    if "messages" in names or "response" in names:
        return template
    root = ListNode(template.root.pos, [*template.root.nodes, _response_node(len(template.text))])
    return GoTemplate.from_tree(template.text, root, defines=template.defines, funcs=template.funcs, name=template.name)


def _normalize(msg: Mapping[str, Any]) -> dict[str, Any]:
    """A message as Go decodes it: role lower-cased, content a string."""
    return {**msg, "role": str(msg.get("role") or "").lower(), "content": str(msg.get("content") or "")}


def collate(messages: Sequence[Mapping[str, Any]]) -> tuple[str, list[dict[str, Any]]]:
    """Ollama's ``collate``: system contents joined; consecutive same-role messages merged (not tool ones)."""
    system: list[str] = []
    collated: list[dict[str, Any]] = []
    for msg in map(_normalize, messages):
        if msg["role"] == "system":
            system.append(msg["content"])
        if collated and collated[-1]["role"] == msg["role"] and msg["role"] != "tool":
            collated[-1]["content"] += "\n\n" + msg["content"]  # the later message's other fields are dropped
        else:
            collated.append(msg)
    return "\n\n".join(system), collated


def tag_images(messages: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Ollama's ``imageTaggedMessages``: put ``[img-N]`` for each image (in place of ``[img]`` if present)."""
    tagged: list[dict[str, Any]] = []
    count = 0
    for msg in map(_normalize, messages):
        prefix, content = "", msg["content"]
        for _ in msg.get("images") or ():
            tag = f"[img-{count}]"
            count += 1
            if "[img]" in content:
                content = content.replace("[img]", tag, 1)
            else:
                prefix += tag
        tagged.append({**msg, "content": prefix + content})
    return tagged


def execute(
    template: GoTemplate,
    *,
    messages: Sequence[Mapping[str, Any]] = (),
    tools: Sequence[Mapping[str, Any]] | None = None,
    prompt: str = "",
    suffix: str = "",
    think: bool = False,
    think_level: str = "",
    is_think_set: bool = False,
) -> str:
    """Ollama's ``Template.Execute``: fill-in-the-middle, ``.Messages``, or legacy turn-by-turn rendering."""
    template = _touched_up(template)
    system, collated = collate(messages)
    flags = {"Think": think, "ThinkLevel": think_level, "IsThinkSet": is_think_set}
    if prompt and suffix:
        return template.execute({"Prompt": prompt, "Suffix": suffix, "Response": "", **flags})
    if "messages" in template.vars():
        values = {
            "System": system,
            "Messages": to_template_messages(collated),
            "Tools": to_template_tools(tools),
        }
        return template.execute({**values, "Response": "", **flags})
    turns = _legacy_turns(collated)
    out = [template.execute({"System": s, "Prompt": p, "Response": r, **flags}) for s, p, r in turns[:-1]]
    # The last turn runs a copy cut right after {{ .Response }}, as a new Go template that has neither
    # the {{define}}s nor Ollama's functions: the model continues from there.
    cut = GoTemplate.from_tree(template.text, _cut_after_response(template.root), defines={}, funcs={})
    system, prompt, response = turns[-1]
    out.append(cut.execute({"System": system, "Prompt": prompt, "Response": response, **flags}))
    return "".join(out)


def _legacy_turns(collated: Sequence[Mapping[str, Any]]) -> list[tuple[str, str, str]]:
    """Group messages into (system, prompt, response) triples the way Ollama's legacy loop does."""
    turns: list[tuple[str, str, str]] = []
    system = prompt = response = ""
    for msg in collated:
        role, content = msg["role"], msg["content"]
        if (role == "system" and (prompt or response)) or (role == "user" and response):
            turns.append((system, prompt, response))
            system = prompt = response = ""
        if role == "system":
            system = content
        elif role == "user":
            prompt = content
        elif role == "assistant":
            response = content
    turns.append((system, prompt, response))
    return turns


def _cut_after_response(root: ListNode) -> ListNode:
    """Ollama's ``deleteNode``: keep everything up to the first ``.Response`` field, drop all after it."""
    cut = False

    def walk(node: Node) -> Node | None:
        nonlocal cut
        if isinstance(node, FieldNode) and "Response" in node.ident:
            cut = True
            return node
        if cut:
            return None
        if isinstance(node, ListNode):
            node.nodes = [kept for kept in map(walk, node.nodes) if kept is not None]
        elif isinstance(node, BranchNode):
            body = walk(node.body)
            else_body = walk(node.else_body) if node.else_body is not None else None
            if not isinstance(body, ListNode) or (node.else_body is not None and else_body is None):
                # Go's deleteNode panics here (a nil list where a list is required)
                raise TemplateError("template: cannot cut the template after .Response inside an if/else")
            node.body = body
            node.else_body = else_body if isinstance(else_body, ListNode) else None
        elif isinstance(node, ActionNode):
            return None if walk(node.pipe) is None else node
        elif isinstance(node, PipeNode):
            for cmd in node.cmds:
                cmd.args = [kept for kept in map(walk, cmd.args) if kept is not None]
                if not cmd.args:
                    return None
        return node

    result = walk(copy.deepcopy(root))
    assert isinstance(result, ListNode)
    return result


# ---------------------------------------------------------------- what the server does per request


def _think_values(*, think: bool | str | None, is_thinking_model: bool) -> dict[str, Any]:
    """Think/ThinkLevel/IsThinkSet as Ollama derives them from the request's ``think``."""
    if think is None and is_thinking_model:
        think = True  # thinking models think unless told not to
    if think is None:
        return {"think": False, "think_level": "", "is_think_set": False}
    if isinstance(think, bool):
        return {"think": think, "think_level": "medium" if think else "", "is_think_set": True}
    return {"think": think in _THINK_LEVELS, "think_level": think, "is_think_set": True}


def render_messages(
    template: GoTemplate,
    messages: Sequence[Mapping[str, Any]],
    *,
    tools: Sequence[Mapping[str, Any]] | None = None,
    think: bool | str | None = None,
    is_thinking_model: bool = False,
    model_system: str = "",
    model_messages: Sequence[Mapping[str, Any]] = (),
) -> str:
    """The prompt Ollama's ``/api/chat`` builds (without truncation): model messages, system, image tags."""
    msgs = [*map(_normalize, model_messages), *map(_normalize, messages)]
    if messages and _normalize(messages[0])["role"] != "system" and model_system:
        msgs.insert(0, {"role": "system", "content": model_system})
    return execute(
        template,
        messages=tag_images(msgs),
        tools=tools,
        **_think_values(think=think, is_thinking_model=is_thinking_model),
    )


def render_generate(
    template: GoTemplate,
    *,
    prompt: str,
    system: str | None = None,
    suffix: str | None = None,
    response: str = "",
    think: bool | str | None = None,
    is_thinking_model: bool = False,
    model_system: str = "",
    model_messages: Sequence[Mapping[str, Any]] = (),
    images: Sequence[bytes | str] = (),
) -> str:
    """The prompt Ollama's ``/api/generate`` builds in non-raw mode with the model's own template.

    With a suffix the template gets ``.Prompt``/``.Suffix``; otherwise the request becomes messages
    (system, the model's messages, the user prompt) rendered as for chat, with no tools.  ``response``
    is not an Ollama field: when given it is appended as an assistant message for the model to continue.
    """
    thinking = _think_values(think=think, is_thinking_model=is_thinking_model)
    if suffix:
        return execute(template, prompt=prompt, suffix=suffix, **thinking)
    msgs: list[Mapping[str, Any]] = []
    if system or model_system:
        msgs.append({"role": "system", "content": system or model_system})
    msgs.extend(model_messages)
    msgs.append({"role": "user", "content": prompt, "images": list(images)})
    if response:
        msgs.append({"role": "assistant", "content": response})
    return execute(template, messages=tag_images(msgs), tools=[], **thinking)
