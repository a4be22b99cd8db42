"""Go's predefined template functions and the ones Ollama adds (template/template.go ``funcs``).

Private to :mod:`nbllm.prompt.gotemplate`, which re-exports BUILTINS and OLLAMA_FUNCS.
"""

from __future__ import annotations

import datetime
import re
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import Final

from nbllm.prompt.gotemplate.fmt import (
    GoSlice,
    GoStruct,
    go_sprint,
    go_sprintf,
    go_type_name,
    is_nil,
    sprint_value,
    truth,
)
from nbllm.prompt.gotemplate.json import go_json

__all__ = ["BUILTINS", "OLLAMA_FUNCS", "Func", "go_and", "go_or"]

Func = Callable[..., object]


def go_and(arg0: object, *args: object) -> object:
    """Go's ``and``: the first false argument, else the last (templates evaluate it lazily)."""
    for value in (arg0, *args):
        if not truth(value):
            return value
    return args[-1] if args else arg0


def go_or(arg0: object, *args: object) -> object:
    """Go's ``or``: the first true argument, else the last (templates evaluate it lazily)."""
    for value in (arg0, *args):
        if truth(value):
            return value
    return args[-1] if args else arg0


def _not(value: object) -> bool:
    return not truth(value)


def _len(value: object) -> int:
    if isinstance(value, str):
        return len(value.encode())
    if isinstance(value, (bytes, list, tuple, Mapping)):
        return len(value)
    raise ValueError("len of nil pointer" if value is None else f"len of type {go_type_name(value)}")


def _index_arg(index: object, cap: int) -> int:
    if index is None:
        raise ValueError("cannot index slice/array with nil")
    if not isinstance(index, int) or isinstance(index, bool):
        raise ValueError(f"cannot index slice/array with type {go_type_name(index)}")
    if not 0 <= index <= cap:
        raise ValueError(f"index out of range: {index}")
    return index


def _index(item: object, *indexes: object) -> object:
    if item is None:
        raise ValueError("index of untyped nil")
    for index in indexes:
        if item is None:
            raise ValueError("index of nil pointer")
        if isinstance(item, (str, bytes, list, tuple)):
            seq = item.encode() if isinstance(item, str) else item
            i = _index_arg(index, len(seq))
            if i == len(seq):
                raise ValueError(f"index out of range: {i}")
            item = seq[i]
        elif isinstance(item, Mapping):
            if index is None:
                raise ValueError("value is nil; should be of type string")
            item = item.get(index)
        else:
            raise ValueError(f"can't index item of type {go_type_name(item)}")
    return item


def _slice(item: object, *indexes: object) -> object:
    if item is None:
        raise ValueError("slice of untyped nil")
    if len(indexes) > 3:
        raise ValueError(f"too many slice indexes: {len(indexes)}")
    if isinstance(item, str) and len(indexes) == 3:
        raise ValueError("cannot 3-index slice a string")
    if not isinstance(item, (str, bytes, list, tuple)):
        raise ValueError(f"can't slice item of type {go_type_name(item)}")
    seq = item.encode() if isinstance(item, str) else item
    bounds = [0, len(seq), len(seq)]
    for k, index in enumerate(indexes):
        bounds[k] = _index_arg(index, len(seq))
    for lo, hi in ((bounds[0], bounds[1]), (bounds[1], bounds[2])):
        if lo > hi:
            raise ValueError(f"invalid slice index: {lo} > {hi}")
    part = seq[bounds[0] : bounds[1]]
    if isinstance(item, str):
        return bytes(part).decode("utf-8", "replace") if isinstance(part, bytes) else part
    return type(item)(part) if isinstance(item, GoSlice) else part


def _kind(value: object) -> str | None:
    """Go's basicKind: the comparable kinds, None for everything else (and nil)."""
    for typ, name in ((bool, "bool"), (int, "int"), (float, "float"), (complex, "complex"), (str, "string")):
        if isinstance(value, typ):
            return name
    return None


def _eq(arg1: object, *args: object) -> bool:
    if not args:
        raise ValueError("missing argument for comparison")
    kind1 = _kind(arg1)
    for arg in args:
        kind2 = _kind(arg)
        if kind1 != kind2:
            if arg1 is not None and arg is not None:
                raise ValueError("incompatible types for comparison")
            same = False
        elif kind1 is not None:
            same = arg1 == arg
        elif is_nil(arg1) or is_nil(arg):
            same = is_nil(arg1) == is_nil(arg)
        elif isinstance(arg1, GoStruct) and isinstance(arg, GoStruct):
            same = arg1 is arg  # struct values reach templates as pointers
        else:
            raise ValueError(f"non-comparable type {sprint_value(arg)}: {go_type_name(arg)}")
        if same:
            return True
    return False


def _ne(arg1: object, arg2: object) -> bool:
    return not _eq(arg1, arg2)


def _lt(arg1: object, arg2: object) -> bool:
    kind1, kind2 = _kind(arg1), _kind(arg2)
    if kind1 in (None, "bool", "complex") or kind2 in (None, "bool", "complex"):
        raise ValueError("invalid type for comparison")
    if kind1 != kind2:
        raise ValueError("incompatible types for comparison")
    return bool(arg1 < arg2)  # type: ignore[operator]


def _le(arg1: object, arg2: object) -> bool:
    return _lt(arg1, arg2) or _eq(arg1, arg2)


def _gt(arg1: object, arg2: object) -> bool:
    return not _le(arg1, arg2)


def _ge(arg1: object, arg2: object) -> bool:
    return not _lt(arg1, arg2)


def _printf(fmt: object, *args: object) -> str:
    if not isinstance(fmt, str):
        raise ValueError(f"wrong type for value; expected string; got {go_type_name(fmt)}")
    return go_sprintf(fmt, *args)


def _println(*args: object) -> str:
    return " ".join(sprint_value(a) for a in args) + "\n"


def _text_arg(args: Sequence[object]) -> str:
    """text/template's evalArgs: a lone string as is, otherwise Sprint (nil prints as <no value>)."""
    if len(args) == 1 and isinstance(args[0], str):
        return args[0]
    return go_sprint(*("<no value>" if a is None else a for a in args))


_HTML_ESCAPES: Final = {"<": "&lt;", ">": "&gt;", "&": "&amp;", "'": "&#39;", '"': "&#34;", "\0": "\ufffd"}
_JS_ESCAPES: Final = {
    "\\": "\\\\",
    "'": "\\'",
    '"': '\\"',
    "<": "\\u003C",
    ">": "\\u003E",
    "&": "\\u0026",
    "=": "\\u003D",
}


def _html(*args: object) -> str:
    return re.sub("[<>&'\"\0]", lambda m: _HTML_ESCAPES[m.group()], _text_arg(args))


def _js(*args: object) -> str:
    def escape(m: re.Match[str]) -> str:
        c = m.group()
        if c in _JS_ESCAPES:
            return _JS_ESCAPES[c]
        return f"\\u{ord(c):04X}" if ord(c) < 0x20 or not c.isprintable() else c

    return re.sub("[\\\\'\"<>&=\x00-\x1f\x80-\U0010ffff]", escape, _text_arg(args))


def _urlquery(*args: object) -> str:
    return urllib.parse.quote_plus(_text_arg(args), safe="")


def _call(fn: object, *args: object) -> object:
    if not callable(fn):
        raise ValueError(f"non-function of type {go_type_name(fn)}")
    return fn(*args)


def _json(value: object) -> str:
    try:
        return go_json(value)
    except ValueError:
        return ""  # Ollama ignores the marshalling error


def _date_args(args: Sequence[object]) -> None:
    for a in args:
        if not isinstance(a, str):
            raise ValueError(f"wrong type for value; expected string; got {go_type_name(a)}")


def _current_date(*args: object) -> str:
    _date_args(args)  # Ollama accepts a format argument and ignores it
    return datetime.date.today().isoformat()


def _yesterday_date(*args: object) -> str:
    _date_args(args)
    return (datetime.date.today() - datetime.timedelta(days=1)).isoformat()


def _to_typescript_type(value: object) -> str:
    method = getattr(value, "go_typescript_type", None)
    return str(method()) if callable(method) else "any"


#: Go's predefined template functions.
BUILTINS: Final[Mapping[str, Func]] = MappingProxyType(
    {
        "and": go_and,
        "call": _call,
        "eq": _eq,
        "ge": _ge,
        "gt": _gt,
        "html": _html,
        "index": _index,
        "js": _js,
        "le": _le,
        "len": _len,
        "lt": _lt,
        "ne": _ne,
        "not": _not,
        "or": go_or,
        "print": go_sprint,
        "printf": _printf,
        "println": _println,
        "slice": _slice,
        "urlquery": _urlquery,
    }
)

#: The functions Ollama adds (template/template.go ``funcs``).
OLLAMA_FUNCS: Final[Mapping[str, Func]] = MappingProxyType(
    {
        "json": _json,
        "currentDate": _current_date,
        "yesterdayDate": _yesterday_date,
        "toTypeScriptType": _to_typescript_type,
    }
)
