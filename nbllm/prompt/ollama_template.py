"""How Ollama feeds chat templates: message collation, image tags, and legacy turn-by-turn rendering.

Ported from Ollama's ``template/template.go`` (``Template.Execute``, ``collate``), ``server/prompt.go``
(``chatPrompt``: image tags, then the template) and ``server/routes.go`` (how ``/api/chat`` and
``/api/generate`` build the message list).  The values a template sees are built in
:mod:`nbllm.prompt.template_values` and re-exported here.  Prompt truncation to the context window is
not done here.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Mapping, Sequence
from typing import Any

from nbllm.errors import TemplateError
from nbllm.prompt.gotemplate import (
    ActionNode,
    BranchNode,
    CommandNode,
    FieldNode,
    GoTemplate,
    ListNode,
    Node,
    PipeNode,
)
from nbllm.prompt.template_values import (
    PropertyType,
    TemplateArgs,
    TemplateMessage,
    TemplateProperties,
    TemplateTool,
    TemplateToolCall,
    TemplateToolCallFunction,
    TemplateToolFunction,
    TemplateToolParameters,
    TemplateTools,
    ToolPropertiesMap,
    ToolProperty,
    think_values,
    to_template_messages,
    to_template_tools,
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
        **think_values(think=think, is_thinking_model=is_thinking_model),
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
    thinking = think_values(think=think, is_thinking_model=is_thinking_model)
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
