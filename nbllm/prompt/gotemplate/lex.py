"""The lexer of Go templates (text/template/parse/lex.go), with Go's literal decoding (strconv).

Private to :mod:`nbllm.prompt.gotemplate`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final, NoReturn

from nbllm.errors import TemplateError
from nbllm.prompt.gotemplate.fmt import go_quote

__all__ = ["KEYWORDS", "SPACE", "Tok", "lex", "number", "unquote", "where"]

SPACE: Final = " \t\r\n"
KEYWORDS: Final = frozenset(
    {"block", "break", "continue", "define", "else", "end", "if", "nil", "range", "template", "with"}
)
_QUOTED: Final = re.compile(r'"(?:[^"\\\n]|\\[^\n])*"')
_CHAR: Final = re.compile(r"'(?:[^'\\\n]|\\[^\n])*'")
_ESCAPE: Final = re.compile(
    r"\\(?:([abfnrtv\\'\"])|x([0-9a-fA-F]{2})|u([0-9a-fA-F]{4})|U([0-9a-fA-F]{8})|([0-7]{3})|(.))"
)
_SIMPLE_ESCAPES: Final = dict(zip("abfnrtv\\'\"", "\a\b\f\n\r\t\v\\'\"", strict=True))


def where(text: str, pos: int) -> str:
    """``line:column`` (both 1-based) of offset ``pos``."""
    return f"{text.count(chr(10), 0, pos) + 1}:{pos - text.rfind(chr(10), 0, pos)}"


def _rune(c: str) -> str:
    return f"U+{ord(c):04X} {c!r}"


# ---------------------------------------------------------------- lexer


@dataclass(frozen=True)
class Tok:
    """A token: its kind (``text``, ``{{``, ``field``, ``number``, a keyword, ...), source text and offset."""

    kind: str
    val: str
    pos: int


def _is_alnum(c: str) -> bool:
    return c == "_" or c.isalpha() or c.isdecimal()


def _skip_space(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in SPACE:
        pos += 1
    return pos


def _right_delim(text: str, pos: int) -> tuple[bool, bool]:
    """Whether ``pos`` is at ``}}``, and whether a `` -`` trim marker precedes it."""
    if text[pos : pos + 1] in tuple(SPACE) and text.startswith("-}}", pos + 1):
        return True, True
    return text.startswith("}}", pos), False


def _scan_number(text: str, pos: int) -> int | None:
    """End of the Go number literal at ``pos`` (lexing only), or None if an alphanumeric follows it."""

    def run(p: int, chars: str) -> int:
        while p < len(text) and text[p] in chars:
            p += 1
        return p

    p, digits = (pos + 1 if text[pos] in "+-" else pos), "0123456789_"
    if text.startswith("0", p):
        p += 1
        base = text[p : p + 1].lower()
        if base in ("x", "o", "b"):
            digits = {"x": "0123456789abcdefABCDEF_", "o": "01234567_", "b": "01_"}[base]
            p += 1
    p = run(p, digits)
    if text.startswith(".", p):
        p = run(p + 1, digits)
    exponent = "eE" if len(digits) == 11 else "pP" if len(digits) == 23 else ""
    if exponent and text[p : p + 1] in tuple(exponent):
        p = run(p + 1, "+-")
        p = run(p, "0123456789_")
    p += text.startswith("i", p)
    return None if p < len(text) and _is_alnum(text[p]) else p


class _Lexer:
    """Splits template source into tokens, applying trim markers and dropping comments."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.toks: list[Tok] = []

    def fail(self, msg: str, pos: int) -> NoReturn:
        raise TemplateError(f"template: {where(self.text, pos)}: {msg}")

    def run(self) -> list[Tok]:
        text, pos = self.text, 0
        while (i := text.find("{{", pos)) >= 0:
            trim = text.startswith("-", i + 2) and text[i + 3 : i + 4] in tuple(SPACE)
            end = pos + len(text[pos:i].rstrip(SPACE)) if trim else i
            if end > pos:
                self.toks.append(Tok("text", text[pos:end], pos))
            start = i + (4 if trim else 2)
            if text.startswith("/*", start):
                pos = self.comment(start)
            else:
                self.toks.append(Tok("{{", "{{", i))
                pos = self.action(start)
        if pos < len(text):
            self.toks.append(Tok("text", text[pos:], pos))
        self.toks.append(Tok("eof", "", len(text)))
        return self.toks

    def comment(self, start: int) -> int:
        close = self.text.find("*/", start + 2)
        if close < 0:
            self.fail("unclosed comment", start)
        delim, trim = _right_delim(self.text, close + 2)
        if not delim:
            self.fail("comment ends before closing delimiter", close + 2)
        pos = close + (6 if trim else 4)
        return _skip_space(self.text, pos) if trim else pos

    def action(self, pos: int) -> int:
        text, depth = self.text, 0
        while True:
            delim, trim = _right_delim(text, pos)
            if delim:
                if depth:
                    self.fail("unclosed left paren", pos)
                pos += 2 if trim else 0
                self.toks.append(Tok("}}", "}}", pos))
                return _skip_space(text, pos + 2) if trim else pos + 2
            if pos >= len(text):
                self.fail("unclosed action", pos)
            if text[pos] in SPACE:
                end = _skip_space(text, pos)
                end -= _right_delim(text, end - 1)[1]  # leave " -}}" whole
                if end > pos:
                    self.toks.append(Tok("space", text[pos:end], pos))
                pos = end
                continue
            kind, end = self.item(pos)
            depth += {"(": 1, ")": -1}.get(kind, 0)
            if depth < 0:
                self.fail("unexpected right paren U+0029 ')'", pos)
            self.toks.append(Tok(kind, text[pos:end], pos))
            pos = end

    def item(self, pos: int) -> tuple[str, int]:
        text, c = self.text, self.text[pos]
        if c in "=|()":
            return c, pos + 1
        if c == ":":
            if not text.startswith(":=", pos):
                self.fail("expected :=", pos)
            return ":=", pos + 2
        for quote, pattern, kind, what in (
            ('"', _QUOTED, "string", "quoted string"),
            ("'", _CHAR, "char", "character constant"),
        ):
            if c == quote:
                m = pattern.match(text, pos)
                if m is None:
                    self.fail(f"unterminated {what}", pos)
                return kind, m.end()
        if c == "`":
            close = text.find("`", pos + 1)
            if close < 0:
                self.fail("unterminated raw quoted string", pos)
            return "raw", close + 1
        if c == "$" or (c == "." and not "0" <= text[pos + 1 : pos + 2] <= "9"):
            end = self.word(pos + 1)
            return ("var" if c == "$" else "field" if end > pos + 1 else "dot"), end
        if c in "+-." or "0" <= c <= "9":
            return self.number(pos)
        if _is_alnum(c):
            end = self.word(pos)
            word = text[pos:end]
            return (word if word in KEYWORDS else "bool" if word in ("true", "false") else "ident"), end
        if c < "\x7f" and c.isprintable():
            return "chr", pos + 1
        self.fail(f"unrecognized character in action: {_rune(c)}", pos)

    def word(self, pos: int) -> int:
        while pos < len(self.text) and _is_alnum(self.text[pos]):
            pos += 1
        nxt = self.text[pos : pos + 1]
        if nxt and nxt not in SPACE and nxt not in ".,|:)(}":
            self.fail(f"bad character {_rune(nxt)}", pos)
        return pos

    def number(self, pos: int) -> tuple[str, int]:
        end = _scan_number(self.text, pos)
        if end is not None and self.text[end : end + 1] in ("+", "-"):
            end = _scan_number(self.text, end)
            if end is not None and self.text[end - 1] == "i":
                return "complex", end
            end = None
        if end is None:
            bad = re.match(r"[\w.+-]*", self.text[pos:])
            self.fail(f"bad number syntax: {go_quote(bad.group() if bad else '')}", pos)
        return "number", end


def unquote(lit: str) -> str | None:
    """Go's strconv.Unquote for "...", '...' and `...` literals; None when malformed."""
    quote, body = lit[0], lit[1:-1]
    if quote == "`":
        return body.replace("\r", "")
    bad: list[str] = []

    def escape(m: re.Match[str]) -> str:
        simple, x, u, big_u, octal, other = m.groups()
        if other is not None or (simple in ("'", '"') and simple != quote):
            bad.append(m.group())
            return ""
        if simple is not None:
            return _SIMPLE_ESCAPES[simple]
        code = int(x or u or big_u, 16) if octal is None else int(octal, 8)
        if code > 0x10FFFF or 0xD800 <= code < 0xE000:
            bad.append(m.group())
            return ""
        return chr(code)

    out = _ESCAPE.sub(escape, body)
    return None if bad else out


def number(text: str) -> int | float | str:
    """The value of a Go number literal as text/template's idealConstant sees it, or an error message."""
    body, sign = text.lstrip("+-"), -1 if text.startswith("-") else 1
    try:
        value = sign * (int(body, 8) if re.fullmatch(r"0[0-7_]+", body) else int(body, 0))
    except ValueError:
        pass
    else:
        return value if -(2**63) <= value < 2**63 else f"{text} overflows int"
    try:
        number = float.fromhex(body) if body[:2].lower() == "0x" else float(body)
    except ValueError:
        return f"illegal number syntax: {go_quote(text)}"
    if not re.search(r"[.eEpP]", body):
        return f"integer overflow: {go_quote(text)}"
    return sign * number


def lex(text: str) -> list[Tok]:
    """The tokens of a template (text, delimiters and action items), ending with an ``eof`` token."""
    return _Lexer(text).run()
