"""Pattern rules made JSON-safe: a ``pattern`` describes a string's value, the grammar its JSON text.

llama.cpp's converter copies a pattern's literals and character classes into the grammar as they
are, so a pattern that allows a quote, a backslash or a control character (``.``, ``[^,]``,
``[ -~]``, a literal ``\\n``) lets the model write it raw, and the output is not JSON. Here each
literal of a pattern's rules is written in its JSON-escaped form, and each character class is split
into the characters that may stand for themselves and the escapes of those that may not.
"""

from __future__ import annotations

import json
import re

from nbllm.errors import InvalidRequest

__all__ = ["json_safe", "quotes_escaped"]

_TOKEN = re.compile(r'"(?:\\.|[^"\\])*"|\[(?:\\.|[^\]\\])*\]')
"""A GBNF literal or character class; what lies between them (rule names, operators) stays as it is."""
_NAMED = {"n": "\n", "t": "\t", "r": "\r"}
_WIDTH = {"x": 2, "u": 4, "U": 8}
_UNSAFE = [(0x00, 0x1F), (0x22, 0x22), (0x5C, 0x5C), (0x7F, 0x7F)]
"""What may not stand for itself in a JSON string (DEL may, but llama.cpp's converter escapes it too)."""
_TOP = 0x10FFFF
_ANY_CONTROL = r'("\\u00" [01] [0-9a-fA-F] | "\\" [bfnrt])'


def quotes_escaped(pattern: str) -> str:
    r"""A regex with its quotes written ``\x22``, so that no raw quote ends up in a GBNF literal.

    >>> quotes_escaped(r'a"b\"c\\')
    'a\\x22b\\x22c\\\\'
    """
    out, i = [], 0
    while i < len(pattern):
        pair = pattern[i : i + 2]
        if pair == '\\"' or pattern[i] == '"':
            out.append("\\x22")
            i += len(pair) if pair == '\\"' else 1
        else:
            out.append(pair if pattern[i] == "\\" else pattern[i])
            i += len(pair) if pattern[i] == "\\" else 1
    return "".join(out)


def _units(body: str) -> list[tuple[str, bool]]:
    """The characters of a GBNF literal's or class's body, each with whether it was escaped."""
    out, i = [], 0
    while i < len(body):
        if body[i] != "\\":
            out.append((body[i], False))
            i += 1
            continue
        kind = body[i + 1 : i + 2]
        if kind in _WIDTH:
            digits = body[i + 2 : i + 2 + _WIDTH[kind]]
            if len(digits) != _WIDTH[kind] or not all(c in "0123456789abcdefABCDEF" for c in digits):
                raise InvalidRequest(f"invalid JSON schema: a pattern has a bad escape \\{kind}{digits}")
            out.append((chr(min(int(digits, 16), _TOP)), True))
            i += 2 + _WIDTH[kind]
        elif kind in _NAMED or (kind and not kind.isalnum()):
            out.append((_NAMED.get(kind, kind), True))
            i += 2
        else:  # \d, \w, \s...: the converter takes them for literals, and llama.cpp knows none of them
            raise InvalidRequest(f"invalid JSON schema: patterns cannot use \\{kind} (write a class such as [0-9])")
    return out


def _gbnf_literal(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _escaped(code: int) -> str:
    """The JSON text of one character: itself, or its escape if it may not stand for itself."""
    text = json.dumps(chr(code), ensure_ascii=False)[1:-1]
    return "\\u007f" if code == 0x7F else text


def _literal(token: str) -> str:
    return _gbnf_literal("".join(_escaped(ord(c)) for c, _ in _units(token[1:-1])))


def _ranges(units: list[tuple[str, bool]]) -> list[tuple[int, int]]:
    out, i = [], 0
    while i < len(units):
        low = ord(units[i][0])
        if i + 2 < len(units) and units[i + 1] == ("-", False):
            out.append((low, ord(units[i + 2][0])))
            i += 3
        else:
            out.append((low, low))
            i += 1
    return out


def _complement(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out, start = [], 0
    for low, high in sorted(ranges):
        if low > start:
            out.append((start, low - 1))
        start = max(start, high + 1)
    return [*out, (start, _TOP)] if start <= _TOP else out


def _intersect(a: list[tuple[int, int]], b: list[tuple[int, int]]) -> list[tuple[int, int]]:
    return [(max(x, y), min(x2, y2)) for x, x2 in a for y, y2 in b if max(x, y) <= min(x2, y2)]


def _class(ranges: list[tuple[int, int]], *, negated: bool) -> str:
    def char(code: int) -> str:
        printable = 0x20 < code < 0x7F and chr(code) not in "]\\-^["
        return chr(code) if printable else f"\\x{code:02X}" if code <= 0xFF else f"\\U{code:08X}"

    body = "".join(char(lo) + ("-" + char(hi) if hi > lo else "") for lo, hi in ranges)
    return f"[{'^' if negated else ''}{body}]"


def _char_class(token: str) -> str:
    negated = token.startswith("[^")
    listed = _ranges(_units(token[2 if negated else 1 : -1]))
    allowed = _complement(listed) if negated else listed
    unsafe = _intersect(allowed, _UNSAFE)
    parts = []
    if _intersect(allowed, _complement(_UNSAFE)):
        parts.append(
            _class(listed + _UNSAFE, negated=True)
            if negated
            else _class(_intersect(allowed, _complement(_UNSAFE)), negated=False)
        )
    codes = sorted({c for low, high in unsafe for c in range(low, high + 1)})
    if all(c in codes for c in range(0x20)):
        parts.append(_ANY_CONTROL)
        codes = [c for c in codes if c >= 0x20]
    parts += [_gbnf_literal(_escaped(c)) for c in codes]
    if not parts:
        raise InvalidRequest(f"invalid JSON schema: the pattern's class {token} matches nothing")
    return parts[0] if len(parts) == 1 else "(" + " | ".join(parts) + ")"


def json_safe(rule: str) -> str:
    """A pattern's GBNF rule (matching a string's value) rewritten to match that value's JSON text."""
    return _TOKEN.sub(lambda m: _literal(m.group()) if m.group().startswith('"') else _char_class(m.group()), rule)
