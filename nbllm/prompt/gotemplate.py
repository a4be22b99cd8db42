"""Go ``text/template`` as Ollama runs it: parse a template, inspect it, execute it.

The interpreter follows Go's text/template (and Ollama's ``missingkey=zero`` option): trim markers,
comments, pipelines, variables, if/else/with/range/break/continue, define/template/block, Go's
builtin functions plus Ollama's (``json``, ``currentDate``, ``yesterdayDate``, ``toTypeScriptType``),
and Go's fmt printing including ``String()`` methods (see :mod:`nbllm.prompt._gofmt` for how Python
values map onto Go's).  Not supported: methods with arguments, complex numbers, channels, iterators.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Final, NoReturn

from nbllm.errors import TemplateError
from nbllm.prompt._gofmt import (
    GoJSONMarshaler,
    GoMap,
    GoSlice,
    GoStringer,
    GoStruct,
    go_json,
    go_quote,
    go_sprint,
    go_sprintf,
    go_type_name,
    hook,
    sorted_items,
    sprint_value,
    truth,
)
from nbllm.prompt._gofuncs import BUILTINS, OLLAMA_FUNCS, Func, go_and, go_or
from nbllm.prompt._golex import (
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
    where,
)
from nbllm.prompt._goparse import parse

__all__ = [
    "BUILTINS",
    "OLLAMA_FUNCS",
    "ActionNode",
    "BranchNode",
    "BreakNode",
    "ChainNode",
    "CommandNode",
    "ContinueNode",
    "DotNode",
    "FieldNode",
    "Func",
    "GoJSONMarshaler",
    "GoMap",
    "GoSlice",
    "GoStringer",
    "GoStruct",
    "GoTemplate",
    "IdentifierNode",
    "ListNode",
    "LiteralNode",
    "NilNode",
    "Node",
    "PipeNode",
    "TemplateNode",
    "TextNode",
    "VariableNode",
    "go_json",
    "go_quote",
    "go_sprint",
    "go_sprintf",
    "go_type_name",
]

_MISSING: Final = object()  # "nothing piped in" (Go's missingVal)
_MAX_DEPTH: Final = 100  # nested {{template}} calls; Go allows 100000 but Python's stack does not


# ---------------------------------------------------------------- execution


class _Break(Exception):
    """Internal: unwinds to the enclosing range on {{break}}."""


class _Continue(Exception):
    """Internal: unwinds to the next range iteration on {{continue}}."""


def _arity(fn: Func) -> tuple[int, int | None]:
    try:
        params = list(inspect.signature(fn).parameters.values())
    except ValueError:
        return 0, None
    fixed = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    variadic = any(p.kind is p.VAR_POSITIONAL for p in params)
    return sum(p.default is p.empty for p in fixed), None if variadic else len(fixed)


def _method(receiver: object, name: str) -> Callable[[], object] | None:
    if name == "String":
        return hook(receiver, "go_string")
    return receiver.go_method(name) if isinstance(receiver, GoStruct) else None


class _Exec:
    """One execution: output buffer, variable stack and the node being evaluated (for errors)."""

    def __init__(self, tmpl: GoTemplate, out: list[str], dot: object, depth: int = 0) -> None:
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


# ---------------------------------------------------------------- public API


def _identifiers(node: Node, out: list[str]) -> None:
    """Ollama's template.Identifiers: field and variable names, descending into control structures."""
    if isinstance(node, ListNode):
        for child in node.nodes:
            _identifiers(child, out)
    elif isinstance(node, TemplateNode):
        if node.pipe is None:
            raise TemplateError("undefined template specified")
        _identifiers(node.pipe, out)
    elif isinstance(node, ActionNode):
        _identifiers(node.pipe, out)
    elif isinstance(node, BranchNode):
        for part in (node.pipe, node.body, node.else_body):
            if part is not None:
                _identifiers(part, out)
    elif isinstance(node, PipeNode):
        for cmd in node.cmds:
            for arg in cmd.args:
                _identifiers(arg, out)
    elif isinstance(node, (FieldNode, VariableNode)):
        out.extend(node.ident)


class GoTemplate:
    """A parsed Go text/template; ``funcs`` defaults to Ollama's extra functions."""

    def __init__(self, text: str, *, funcs: Mapping[str, Func] | None = None, name: str = "") -> None:
        self.text = text
        self.name = name
        self.funcs: Mapping[str, Func] = OLLAMA_FUNCS if funcs is None else funcs
        self.root, self.defines = parse(text, {*self.funcs, *BUILTINS})
        self._arities: dict[str, tuple[int, int | None]] = {}
        self._vars: frozenset[str] | None = None

    @classmethod
    def from_tree(
        cls,
        text: str,
        root: ListNode,
        *,
        defines: Mapping[str, ListNode],
        funcs: Mapping[str, Func],
        name: str = "",
    ) -> GoTemplate:
        """A template around an already built tree (``text`` is the source its positions refer to)."""
        tmpl = cls.__new__(cls)
        tmpl.text, tmpl.name, tmpl.funcs, tmpl.root, tmpl.defines = text, name, funcs, root, dict(defines)
        tmpl._arities = {}
        tmpl._vars = None
        return tmpl

    def arity(self, name: str, fn: Func) -> tuple[int, int | None]:
        """How many arguments function ``name`` takes: (minimum, maximum or None)."""
        if name not in self._arities:
            self._arities[name] = _arity(fn)
        return self._arities[name]

    def lookup(self, name: str) -> ListNode | None:
        """The body of the named template (``define``/``block``, or this one by its own name)."""
        return self.defines.get(name) or (self.root if name == self.name else None)

    def execute(self, data: object) -> str:
        """Apply the template to ``data`` and return the text; TemplateError on failure."""
        out: list[str] = []
        try:
            _Exec(self, out, data).walk(data, self.root)
        except RecursionError:
            raise TemplateError("template: nested too deeply") from None
        return "".join(out)

    def vars(self) -> frozenset[str]:
        """Lower-cased field and variable names used anywhere, as Ollama's ``Template.Vars`` reports them.

        Worked out once per template (a tree is never changed once built): every request asks, several times.
        """
        if self._vars is None:
            names: list[str] = []
            for tree in (self.root, *self.defines.values()):
                _identifiers(tree, names)
            self._vars = frozenset(n.lower() for n in names)
        return self._vars
