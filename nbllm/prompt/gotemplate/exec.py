"""Executing a parsed Go template (text/template/exec.go), with Ollama's ``missingkey=zero``."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Final, NoReturn, Protocol

from nbllm.errors import TemplateError
from nbllm.prompt.gotemplate.fmt import GoStruct, go_quote, go_type_name, hook, sorted_items, sprint_value, truth
from nbllm.prompt.gotemplate.funcs import BUILTINS, Func, go_and, go_or
from nbllm.prompt.gotemplate.lex import where
from nbllm.prompt.gotemplate.node import (
    ActionNode,
    BranchNode,
    BreakNode,
    ChainNode,
    CommandNode,
    ContinueNode,
    DotNode,
    FieldNode,
    IdentifierNode,
    ListNode,
    LiteralNode,
    NilNode,
    Node,
    PipeNode,
    TemplateNode,
    TextNode,
    VariableNode,
    node_text,
)

__all__ = ["Program", "execute"]

_MISSING: Final = object()  # "nothing piped in" (Go's missingVal)
_MAX_DEPTH: Final = 100  # nested {{template}} calls; Go allows 100000 but Python's stack does not


class Program(Protocol):
    """What execution needs of a template: its source, functions, named bodies and their arities."""

    text: str
    funcs: Mapping[str, Func]

    def lookup(self, name: str) -> ListNode | None:
        """The body of the named template, or None."""

    def arity(self, name: str, fn: Func) -> tuple[int, int | None]:
        """How many arguments function ``name`` takes: (minimum, maximum or None)."""


def execute(tmpl: Program, root: ListNode, data: object) -> str:
    """Apply the tree ``root`` of ``tmpl`` to ``data`` and return the text; TemplateError on failure."""
    out: list[str] = []
    try:
        _Exec(tmpl, out, data).walk(data, root)
    except RecursionError:
        raise TemplateError("template: nested too deeply") from None
    return "".join(out)


class _Break(Exception):
    """Internal: unwinds to the enclosing range on {{break}}."""


class _Continue(Exception):
    """Internal: unwinds to the next range iteration on {{continue}}."""


def _method(receiver: object, name: str) -> Callable[[], object] | None:
    if name == "String":
        return hook(receiver, "go_string")
    return receiver.go_method(name) if isinstance(receiver, GoStruct) else None


class _Exec:
    """One execution: output buffer, variable stack and the node being evaluated (for errors)."""

    def __init__(self, tmpl: Program, out: list[str], dot: object, depth: int = 0) -> None:
        self.tmpl, self.out, self.depth = tmpl, out, depth
        self.names: list[str] = ["$"]
        self.values: list[object] = [dot]
        self.node: Node | None = None

    def fail(self, msg: str) -> NoReturn:
        if self.node is None:
            raise TemplateError(f"template: {msg}")
        location = where(self.tmpl.text, self.node.pos)
        raise TemplateError(f"template: {location}: executing at <{node_text(self.node)}>: {msg}")

    def pop(self, mark: int) -> None:
        del self.names[mark:], self.values[mark:]

    def var_index(self, name: str) -> int:
        for i in range(len(self.names) - 1, -1, -1):
            if self.names[i] == name:
                return i
        self.fail(f"undefined variable: {name}")

    def walk(self, dot: object, node: Node) -> None:
        self.node = node
        if isinstance(node, TextNode):
            self.out.append(node.text)
        elif isinstance(node, ActionNode):
            value = self.pipeline(dot, node.pipe)
            if not node.pipe.decl:
                self.out.append("<no value>" if value is None else sprint_value(value))
        elif isinstance(node, ListNode):
            for child in node.nodes:
                self.walk(dot, child)
        elif isinstance(node, BranchNode) and node.kind == "range":
            self.walk_range(dot, node)
        elif isinstance(node, BranchNode):
            mark = len(self.names)
            try:
                value = self.pipeline(dot, node.pipe)
                if truth(value):
                    self.walk(value if node.kind == "with" else dot, node.body)
                elif node.else_body is not None:
                    self.walk(dot, node.else_body)
            finally:
                self.pop(mark)
        elif isinstance(node, TemplateNode):
            self.walk_template(dot, node)
        elif isinstance(node, (BreakNode, ContinueNode)):
            raise _Break if isinstance(node, BreakNode) else _Continue
        else:
            self.fail(f"unknown node: {node_text(node)}")

    def walk_range(self, dot: object, node: BranchNode) -> None:
        mark = len(self.names)
        try:
            items = self.range_items(self.pipeline(dot, node.pipe), node)
            inner, ran = len(self.names), False
            try:
                for index, elem in items:
                    ran = True
                    self.iteration(node, index, elem, inner)
            except _Break:
                pass
            if not ran and node.else_body is not None:
                self.walk(dot, node.else_body)
        finally:
            self.pop(mark)

    def range_items(self, value: object, node: BranchNode) -> Iterator[tuple[object, object]]:
        self.node = node
        if value is None:
            return iter(())
        if isinstance(value, int) and not isinstance(value, bool):
            if len(node.pipe.decl) > 1:
                self.fail(f"can't use {sprint_value(value)} to iterate over more than one variable")
            return ((None, i) for i in range(value))
        if isinstance(value, Mapping):
            return iter(sorted_items(value))
        if isinstance(value, (list, tuple, bytes)):
            return enumerate(value)
        self.fail(f"range can't iterate over {sprint_value(value)}")

    def iteration(self, node: BranchNode, index: object, elem: object, inner: int) -> None:
        decl = node.pipe.decl
        if node.pipe.is_assign:
            for name, value in zip(decl, (index, elem) if len(decl) > 1 else (elem,), strict=True):
                self.values[self.var_index(name)] = value
        elif decl:
            self.values[-1] = elem
            if len(decl) > 1:
                self.values[-2] = index
        try:
            self.walk(elem, node.body)
        except _Continue:
            pass
        finally:
            self.pop(inner)

    def walk_template(self, dot: object, node: TemplateNode) -> None:
        body = self.tmpl.lookup(node.name)
        if body is None:
            self.fail(f"template {go_quote(node.name)} not defined")
        if self.depth >= _MAX_DEPTH:
            self.fail(f"exceeded maximum template depth ({_MAX_DEPTH})")
        dot = self.pipeline(dot, node.pipe) if node.pipe is not None else None
        _Exec(self.tmpl, self.out, dot, self.depth + 1).walk(dot, body)

    def pipeline(self, dot: object, pipe: PipeNode) -> object:
        self.node = pipe
        value: object = _MISSING
        for cmd in pipe.cmds:
            value = self.command(dot, cmd, value)
        for name in pipe.decl:
            if pipe.is_assign:
                self.values[self.var_index(name)] = value
            else:
                self.names.append(name)
                self.values.append(value)
        return value

    def command(self, dot: object, cmd: CommandNode, final: object) -> object:
        first = cmd.args[0]
        self.node = first
        if isinstance(first, FieldNode):
            return self.field_chain(dot, dot, first.ident, cmd.args, final)
        if isinstance(first, ChainNode):
            return self.chain(dot, first, cmd.args, final)
        if isinstance(first, IdentifierNode):
            return self.call(dot, first, cmd.args, final)
        if isinstance(first, VariableNode):
            return self.variable(first, cmd.args, final)
        self.not_a_function(cmd.args, final)
        if isinstance(first, PipeNode):
            return self.pipeline(dot, first)
        if isinstance(first, LiteralNode):
            return first.value
        if isinstance(first, DotNode):
            return dot
        self.fail(
            "nil is not a command" if isinstance(first, NilNode) else f"can't evaluate command {node_text(first)}"
        )

    def not_a_function(self, args: Sequence[Node], final: object) -> None:
        if len(args) > 1 or final is not _MISSING:
            self.fail(f"can't give argument to non-function {node_text(args[0])}")

    def chain(self, dot: object, node: ChainNode, args: Sequence[Node], final: object) -> object:
        if isinstance(node.node, NilNode):
            self.fail(f"indirection through explicit nil in {node_text(node)}")
        receiver = self.arg(dot, node.node)
        self.node = node
        return self.field_chain(dot, receiver, node.fields, args, final)

    def variable(self, node: VariableNode, args: Sequence[Node], final: object) -> object:
        value = self.values[self.var_index(node.ident[0])]
        if len(node.ident) == 1:
            self.not_a_function(args, final)
            return value
        return self.field_chain(None, value, node.ident[1:], args, final)

    def field_chain(
        self, dot: object, receiver: object, ident: Sequence[str], args: Sequence[Node], final: object
    ) -> object:
        for step, name in enumerate(ident):
            last = step == len(ident) - 1
            receiver = self.field(name, receiver, args if last else (), final if last else _MISSING, first=step == 0)
        return receiver

    def field(self, name: str, receiver: object, args: Sequence[Node], final: object, *, first: bool) -> object:
        if receiver is None:
            if first:  # Go: an invalid receiver yields no value; a nil interface inside a chain is an error
                return None
            self.fail(f"nil pointer evaluating interface {{}}.{name}")
        has_args = len(args) > 1 or final is not _MISSING
        method = _method(receiver, name)
        if method is not None:
            if has_args:
                self.fail(f"wrong number of args for {name}: want 0 got {len(args) - 1 + (final is not _MISSING)}")
            return method()
        if isinstance(receiver, Mapping):
            if has_args:
                self.fail(f"{name} is not a method but has arguments")
            return receiver.get(name)
        value = receiver.fields.get(name, _MISSING) if isinstance(receiver, GoStruct) else _MISSING
        if value is _MISSING and not isinstance(receiver, (GoStruct, str, bytes, int, float, list, tuple)):
            value = getattr(receiver, name, _MISSING) if not name.startswith("_") else _MISSING
            value = _MISSING if callable(value) else value
        if value is _MISSING:
            self.fail(f"can't evaluate field {name} in type {go_type_name(receiver)}")
        if has_args:
            self.fail(f"{name} has arguments but cannot be invoked as function")
        return value

    def call(self, dot: object, node: IdentifierNode, args: Sequence[Node], final: object) -> object:
        name = node.name
        fn = self.tmpl.funcs.get(name) or BUILTINS.get(name)
        if fn is None:
            self.fail(f"{go_quote(name)} is not a defined function")
        if fn is go_and or fn is go_or:
            return self.and_or(dot, node, args, final)
        argv = [self.arg(dot, a) for a in args[1:]]
        if final is not _MISSING:
            argv.append(final)
        self.node = node
        low, high = self.tmpl.arity(name, fn)
        if len(argv) < low or (high is not None and len(argv) > high):
            want = f"at least {low}" if high is None else str(high)
            self.fail(f"wrong number of args for {name}: want {want} got {len(argv)}")
        try:
            return fn(*argv)
        except TemplateError:
            raise
        except Exception as exc:  # Go: the function returned an error (or panicked)
            error = exc
        self.fail(f"error calling {name}: {error}")

    def and_or(self, dot: object, node: IdentifierNode, args: Sequence[Node], final: object) -> object:
        if len(args) < 2 and final is _MISSING:
            self.fail(f"wrong number of args for {node.name}: want at least 1 got 0")
        value: object = None
        for arg in args[1:]:
            value = self.arg(dot, arg)
            if truth(value) == (node.name == "or"):
                return value
        return value if final is _MISSING else final

    def arg(self, dot: object, node: Node) -> object:
        self.node = node
        if isinstance(node, DotNode):
            return dot
        if isinstance(node, (NilNode, LiteralNode)):
            return node.value if isinstance(node, LiteralNode) else None
        if isinstance(node, FieldNode):
            return self.field_chain(dot, dot, node.ident, [node], _MISSING)
        if isinstance(node, VariableNode):
            return self.variable(node, [node], _MISSING)
        if isinstance(node, PipeNode):
            return self.pipeline(dot, node)
        if isinstance(node, IdentifierNode):
            return self.call(dot, node, [node], _MISSING)
        if isinstance(node, ChainNode):
            return self.chain(dot, node, [node], _MISSING)
        self.fail(f"can't handle {node_text(node)} as an argument")
