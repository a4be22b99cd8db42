"""The syntax tree of Go templates (text/template/parse/node.go) and how nodes print in errors."""

from __future__ import annotations

from dataclasses import dataclass

from nbllm.prompt.gotemplate.fmt import go_quote

__all__ = [
    "ActionNode",
    "BranchNode",
    "BreakNode",
    "ChainNode",
    "CommandNode",
    "ContinueNode",
    "DotNode",
    "FieldNode",
    "IdentifierNode",
    "ListNode",
    "LiteralNode",
    "Marker",
    "NilNode",
    "Node",
    "PipeNode",
    "TemplateNode",
    "TextNode",
    "VariableNode",
    "node_text",
]


@dataclass(eq=False)
class Node:
    """A syntax-tree node; ``pos`` is its offset in the template source."""

    pos: int


@dataclass(eq=False)
class TextNode(Node):
    """Literal text."""

    text: str


@dataclass(eq=False)
class ListNode(Node):
    """A sequence of nodes."""

    nodes: list[Node]


@dataclass(eq=False)
class DotNode(Node):
    """The cursor ``.``."""


@dataclass(eq=False)
class NilNode(Node):
    """The untyped ``nil``."""


@dataclass(eq=False)
class BreakNode(Node):
    """``{{break}}``."""


@dataclass(eq=False)
class ContinueNode(Node):
    """``{{continue}}``."""


@dataclass(eq=False)
class LiteralNode(Node):
    """A bool, number, char or string constant; ``text`` is its source spelling."""

    text: str
    value: object


@dataclass(eq=False)
class FieldNode(Node):
    """A field chain on dot, ``.A.B``."""

    ident: list[str]


@dataclass(eq=False)
class VariableNode(Node):
    """A variable with optional field chain, ``$x.A``."""

    ident: list[str]


@dataclass(eq=False)
class IdentifierNode(Node):
    """A function name."""

    name: str


@dataclass(eq=False)
class ChainNode(Node):
    """Fields on a non-field term, ``(pipe).A``."""

    node: Node
    fields: list[str]


@dataclass(eq=False)
class CommandNode(Node):
    """One stage of a pipeline: a function, field or value and its arguments."""

    args: list[Node]


@dataclass(eq=False)
class PipeNode(Node):
    """A pipeline with its variable declarations (``:=``) or assignments (``=``)."""

    decl: list[str]
    is_assign: bool
    cmds: list[CommandNode]


@dataclass(eq=False)
class ActionNode(Node):
    """``{{pipeline}}``: printed unless it declares variables."""

    pipe: PipeNode


@dataclass(eq=False)
class BranchNode(Node):
    """``if``, ``range`` or ``with`` (``kind``) with body and optional else body."""

    kind: str
    pipe: PipeNode
    body: ListNode
    else_body: ListNode | None


@dataclass(eq=False)
class TemplateNode(Node):
    """``{{template "name" pipeline}}`` (also what ``block`` leaves in place)."""

    name: str
    pipe: PipeNode | None


@dataclass(eq=False)
class Marker(Node):
    """``{{end}}`` or ``{{else}}`` while parsing (never left in a tree)."""

    word: str  # "end" or "else"

    def __str__(self) -> str:
        return "{{" + self.word + "}}"


def node_text(n: Node) -> str:
    """Go-like source text of a node, for error messages."""
    if isinstance(n, FieldNode):
        return "".join("." + i for i in n.ident)
    if isinstance(n, VariableNode):
        return ".".join(n.ident)
    if isinstance(n, IdentifierNode):
        return n.name
    if isinstance(n, LiteralNode):
        return n.text
    if isinstance(n, (DotNode, NilNode)):
        return "." if isinstance(n, DotNode) else "nil"
    if isinstance(n, ChainNode):
        return f"({node_text(n.node)})" + "".join("." + f for f in n.fields)
    if isinstance(n, CommandNode):
        return " ".join(f"({node_text(a)})" if isinstance(a, PipeNode) else node_text(a) for a in n.args)
    if isinstance(n, PipeNode):
        decl = ", ".join(n.decl) + (" = " if n.is_assign else " := ") if n.decl else ""
        return decl + " | ".join(node_text(c) for c in n.cmds)
    if isinstance(n, ActionNode):
        return "{{" + node_text(n.pipe) + "}}"
    if isinstance(n, TemplateNode):
        return "{{template " + go_quote(n.name) + (" " + node_text(n.pipe) if n.pipe else "") + "}}"
    if isinstance(n, BranchNode):
        return "{{" + n.kind + " " + node_text(n.pipe) + "}}"
    return type(n).__name__
