"""Go ``text/template`` as Ollama runs it: parse a template, inspect it, execute it.

The interpreter follows Go's text/template (and Ollama's ``missingkey=zero`` option): trim markers,
comments, pipelines, variables, if/else/with/range/break/continue, define/template/block, Go's
builtin functions plus Ollama's (``json``, ``currentDate``, ``yesterdayDate``, ``toTypeScriptType``),
and Go's fmt printing including ``String()`` methods (see :mod:`nbllm.prompt.gotemplate.fmt` for how
Python values map onto Go's).  Not supported: methods with arguments, complex numbers, channels, iterators.

The modules mirror Go's own files: ``lex`` (parse/lex.go), ``node`` (parse/node.go), ``parse``
(parse/parse.go), ``exec`` (exec.go), ``funcs`` (funcs.go and Ollama's template.go), ``fmt`` (package
fmt) and ``json`` (encoding/json); ``template`` holds the :class:`GoTemplate` that ties them together.
"""

from __future__ import annotations

from nbllm.prompt.gotemplate.fmt import (
    GoJSONMarshaler,
    GoMap,
    GoSlice,
    GoStringer,
    GoStruct,
    go_quote,
    go_sprint,
    go_sprintf,
    go_type_name,
)
from nbllm.prompt.gotemplate.funcs import BUILTINS, OLLAMA_FUNCS, Func
from nbllm.prompt.gotemplate.json import go_json
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
)
from nbllm.prompt.gotemplate.template import GoTemplate

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
