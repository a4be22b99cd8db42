"""A parsed Go template (text/template/template.go): parse once, list its variables, execute it."""

from __future__ import annotations

import inspect
from collections.abc import Mapping

from nbllm.errors import TemplateError
from nbllm.prompt.gotemplate.exec import execute
from nbllm.prompt.gotemplate.funcs import BUILTINS, OLLAMA_FUNCS, Func
from nbllm.prompt.gotemplate.node import (
    ActionNode,
    BranchNode,
    FieldNode,
    ListNode,
    Node,
    PipeNode,
    TemplateNode,
    VariableNode,
)
from nbllm.prompt.gotemplate.parse import parse

__all__ = ["GoTemplate"]


def _arity(fn: Func) -> tuple[int, int | None]:
    try:
        params = list(inspect.signature(fn).parameters.values())
    except ValueError:
        return 0, None
    fixed = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    variadic = any(p.kind is p.VAR_POSITIONAL for p in params)
    return sum(p.default is p.empty for p in fixed), None if variadic else len(fixed)


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
        return execute(self, self.root, data)

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
