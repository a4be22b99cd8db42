"""The parser of Go templates, following text/template/parse/parse.go (recursive descent over the tokens).

Private to :mod:`nbllm.prompt.gotemplate`.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Final, NoReturn

from nbllm.errors import TemplateError
from nbllm.prompt.gotemplate.fmt import go_quote
from nbllm.prompt.gotemplate.lex import KEYWORDS, SPACE, Tok, lex, number, unquote, where
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
    Marker,
    NilNode,
    Node,
    PipeNode,
    TemplateNode,
    TextNode,
    VariableNode,
    node_text,
)

__all__ = ["parse"]

# ---------------------------------------------------------------- parser

_OPERAND_START: Final = frozenset(
    {"bool", "char", "complex", "dot", "field", "ident", "number", "nil", "raw", "string", "var", "("}
)
_NOT_EXECUTABLE: Final = (LiteralNode, DotNode, NilNode)


def _is_empty(tree: ListNode) -> bool:
    return all(isinstance(n, TextNode) and not n.text.strip(SPACE) for n in tree.nodes)


class _Parser:
    """Recursive-descent parser following Go's text/template/parse."""

    def __init__(self, text: str, funcs: Collection[str]) -> None:
        self.text = text
        self.toks = lex(text)
        self.i = 0
        self.funcs = funcs
        self.vars = ["$"]
        self.range_depth = 0
        self.defines: dict[str, ListNode] = {}

    def fail(self, msg: str, pos: int) -> NoReturn:
        raise TemplateError(f"template: {where(self.text, pos)}: {msg}")

    def peek(self) -> Tok:
        return self.toks[min(self.i, len(self.toks) - 1)]

    def next(self) -> Tok:
        tok = self.peek()
        self.i += 1
        return tok

    def next_non_space(self) -> Tok:
        tok = self.next()
        while tok.kind == "space":
            tok = self.next()
        return tok

    def peek_non_space(self) -> Tok:
        tok = self.next_non_space()
        self.i -= 1
        return tok

    def unexpected(self, tok: Tok, context: str) -> NoReturn:
        if tok.kind == "eof":
            desc = "EOF"
        elif tok.kind in KEYWORDS or tok.kind == "dot":
            desc = f"<{tok.val}>"
        else:
            desc = go_quote(tok.val[:10]) + ("..." if len(tok.val) > 10 else "")
        self.fail(f"unexpected {desc} in {context}", tok.pos)

    def expect(self, kind: str, context: str) -> Tok:
        tok = self.next_non_space()
        if tok.kind != kind:
            self.unexpected(tok, context)
        return tok

    def parse(self) -> ListNode:
        root = ListNode(0, [])
        while self.peek().kind != "eof":
            if self.peek().kind == "{{":
                save = self.i
                self.next()
                if self.next_non_space().kind == "define":
                    self.definition()
                    continue
                self.i = save
            node = self.text_or_action()
            if isinstance(node, Marker):
                self.fail(f"unexpected {node}", node.pos)
            root.nodes.append(node)
        return root

    def definition(self) -> None:
        tok = self.next_non_space()
        if tok.kind not in ("string", "raw"):
            self.unexpected(tok, "define clause")
        self.expect("}}", "define clause")
        self.add_define(self.unquote(tok), self.isolated_list("define clause"), tok.pos)

    def isolated_list(self, context: str) -> ListNode:
        """The body of a define or block: a new tree, so outer variables are not visible."""
        saved = self.vars, self.range_depth
        self.vars, self.range_depth = ["$"], 0
        try:
            body, end = self.item_list()
            if end.word != "end":
                self.fail(f"unexpected {end} in {context}", end.pos)
            return body
        finally:
            self.vars, self.range_depth = saved

    def add_define(self, name: str, body: ListNode, pos: int) -> None:
        old = self.defines.get(name)
        if old is not None and not _is_empty(old) and not _is_empty(body):
            self.fail(f"template: multiple definition of template {go_quote(name)}", pos)
        if old is None or _is_empty(old):
            self.defines[name] = body

    def item_list(self) -> tuple[ListNode, Marker]:
        body = ListNode(self.peek_non_space().pos, [])
        while self.peek_non_space().kind != "eof":
            node = self.text_or_action()
            if isinstance(node, Marker):
                return body, node
            body.nodes.append(node)
        self.fail("unexpected EOF", len(self.text))

    def text_or_action(self) -> Node:
        tok = self.next_non_space()
        if tok.kind == "text":
            return TextNode(tok.pos, tok.val)
        if tok.kind == "{{":
            return self.action()
        self.unexpected(tok, "input")

    def action(self) -> Node:
        tok = self.next_non_space()
        kind = tok.kind
        if kind in ("break", "continue"):
            self.expect("}}", "{{" + kind + "}}")
            if not self.range_depth:
                self.fail("{{" + kind + "}} outside {{range}}", tok.pos)
            return BreakNode(tok.pos) if kind == "break" else ContinueNode(tok.pos)
        if kind == "else":
            if self.peek_non_space().kind not in ("if", "with"):
                self.expect("}}", "else")
            return Marker(tok.pos, "else")
        if kind == "end":
            self.expect("}}", "end")
            return Marker(tok.pos, "end")
        if kind in ("if", "range", "with"):
            return self.control(kind, tok.pos)
        if kind in ("template", "block"):
            return self.template(tok.pos, block=kind == "block")
        self.i -= 1
        return ActionNode(tok.pos, self.pipeline("command", "}}"))

    def control(self, kind: str, pos: int) -> BranchNode:
        saved = len(self.vars)
        try:
            pipe = self.pipeline(kind, "}}")
            self.range_depth += kind == "range"
            body, nxt = self.item_list()
            self.range_depth -= kind == "range"
            else_body = None
            if nxt.word == "else":
                if kind in ("if", "with") and self.peek().kind == kind:
                    chained = self.next()
                    else_body = ListNode(nxt.pos, [self.control(kind, chained.pos)])
                else:
                    else_body, nxt = self.item_list()
                    if nxt.word != "end":
                        self.fail(f"expected end; found {nxt}", nxt.pos)
            return BranchNode(pos, kind, pipe, body, else_body)
        finally:
            del self.vars[saved:]

    def template(self, pos: int, *, block: bool) -> TemplateNode:
        context = "block clause" if block else "template clause"
        tok = self.next_non_space()
        if tok.kind not in ("string", "raw"):
            self.unexpected(tok, context)
        name = self.unquote(tok)
        pipe = None
        if block:
            pipe = self.pipeline(context, "}}")
        elif self.next_non_space().kind != "}}":
            self.i -= 1
            pipe = self.pipeline(context, "}}")
        if block:
            self.add_define(name, self.isolated_list(context), pos)
        return TemplateNode(pos, name, pipe)

    def pipeline(self, context: str, end: str) -> PipeNode:
        pipe = PipeNode(self.peek_non_space().pos, [], is_assign=False, cmds=[])
        while (var := self.peek_non_space()).kind == "var":
            save = self.i
            self.next_non_space()
            nxt = self.peek_non_space()
            if nxt.kind in ("=", ":="):
                self.next_non_space()
                pipe.is_assign = nxt.kind == "="
                pipe.decl.append(var.val)
                self.vars.append(var.val)
                break
            if nxt.kind == "chr" and nxt.val == ",":
                self.next_non_space()
                pipe.decl.append(var.val)
                self.vars.append(var.val)
                if context == "range" and len(pipe.decl) < 2:
                    if self.peek_non_space().kind in ("var", "}}", ")"):
                        continue
                    self.fail("range can only initialize variables", nxt.pos)
                self.fail(f"too many declarations in {context}", nxt.pos)
            self.i = save
            break
        while (tok := self.next_non_space()).kind != end:
            if tok.kind not in _OPERAND_START:
                self.unexpected(tok, context)
            self.i -= 1
            pipe.cmds.append(self.command())
        if not pipe.cmds:
            self.fail(f"missing value for {context}", tok.pos)
        for stage, cmd in enumerate(pipe.cmds[1:], start=2):
            if isinstance(cmd.args[0], _NOT_EXECUTABLE):
                self.fail(f"non executable command in pipeline stage {stage}", cmd.pos)
        return pipe

    def command(self) -> CommandNode:
        cmd = CommandNode(self.peek_non_space().pos, [])
        while True:
            self.peek_non_space()
            operand = self.operand()
            if operand is not None:
                cmd.args.append(operand)
            tok = self.next()
            if tok.kind == "space":
                continue
            if tok.kind in ("}}", ")"):
                self.i -= 1
            elif tok.kind != "|":
                self.unexpected(tok, "operand")
            break
        if not cmd.args:
            self.fail("empty command", cmd.pos)
        return cmd

    def operand(self) -> Node | None:
        node = self.term()
        if node is None or self.peek().kind != "field":
            return node
        fields = []
        while self.peek().kind == "field":
            fields.append(self.next().val[1:])
        if isinstance(node, (FieldNode, VariableNode)):
            node.ident.extend(fields)
            return node
        if isinstance(node, _NOT_EXECUTABLE):
            self.fail(f"unexpected . after term {go_quote(node_text(node))}", node.pos)
        return ChainNode(node.pos, node, fields)

    def term(self) -> Node | None:
        tok = self.next_non_space()
        kind, pos = tok.kind, tok.pos
        if kind == "ident":
            if tok.val not in self.funcs:
                self.fail(f"function {go_quote(tok.val)} not defined", pos)
            return IdentifierNode(pos, tok.val)
        if kind == "var":
            if tok.val not in self.vars:
                self.fail(f"undefined variable {go_quote(tok.val)}", pos)
            return VariableNode(pos, [tok.val])
        if kind == "dot":
            return DotNode(pos)
        if kind == "nil":
            return NilNode(pos)
        if kind == "field":
            return FieldNode(pos, [tok.val[1:]])
        if kind == "(":
            return self.pipeline("parenthesized pipeline", ")")
        if kind in ("bool", "string", "raw", "char", "number", "complex"):
            return LiteralNode(pos, tok.val, self.literal(tok))
        self.i -= 1
        return None

    def literal(self, tok: Tok) -> object:
        if tok.kind == "bool":
            return tok.val == "true"
        if tok.kind in ("string", "raw"):
            return self.unquote(tok)
        if tok.kind == "char":
            char = unquote(tok.val)
            if char is None or len(char) != 1:
                self.fail(f"malformed character constant: {tok.val}", tok.pos)
            return ord(char)
        if tok.kind == "complex" or tok.val.endswith("i"):
            self.fail(f"complex numbers are not supported: {go_quote(tok.val)}", tok.pos)
        value = number(tok.val)
        if isinstance(value, str):
            self.fail(value, tok.pos)
        return value

    def unquote(self, tok: Tok) -> str:
        text = unquote(tok.val)
        if text is None:
            self.fail(f"invalid syntax: {tok.val}", tok.pos)
        return text


def parse(text: str, funcs: Collection[str]) -> tuple[ListNode, dict[str, ListNode]]:
    """Parse a template: its tree and the trees it defines; ``funcs`` are the known function names."""
    parser = _Parser(text, funcs)
    return parser.parse(), parser.defines
