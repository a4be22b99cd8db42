"""Go values as templates see them, and Go's fmt printing of them.

``None`` is nil, ``str``/``int``/``float``/``bool`` are themselves, lists are slices, mappings are
maps (keys sorted when printed or ranged over) and :class:`GoStruct` instances are structs.  A value
with ``go_string()`` prints through it (Go's ``String()``); one with ``go_json()`` is encoded through
it (Go's ``MarshalJSON``, see :mod:`nbllm.prompt.gotemplate.json`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import ClassVar, Final, Protocol, runtime_checkable

__all__ = [
    "GoJSONMarshaler",
    "GoMap",
    "GoSlice",
    "GoStringer",
    "GoStruct",
    "fixed_notation",
    "go_quote",
    "go_sprint",
    "go_sprintf",
    "go_type_name",
    "hook",
    "is_nil",
    "sci_notation",
    "shortest_digits",
    "sorted_items",
    "sprint_value",
    "truth",
]


# ---------------------------------------------------------------- values


@runtime_checkable
class GoStringer(Protocol):
    """A value with Go's ``String() string`` method."""

    def go_string(self) -> str:
        """What Go's ``String()`` returns."""


@runtime_checkable
class GoJSONMarshaler(Protocol):
    """A value with Go's ``MarshalJSON`` method."""

    def go_json(self) -> str:
        """The JSON text Go's ``MarshalJSON`` returns."""


class GoStruct:
    """A Go struct value: ordered named fields and optional JSON field tags."""

    go_type: ClassVar[str] = "struct"
    #: (Go field, JSON key, omit); omit: "" never, "empty" omitempty, "nil" omitempty of an interface
    json_tags: ClassVar[tuple[tuple[str, str, str], ...]] = ()

    def __init__(self, **fields: object) -> None:
        self.fields: dict[str, object] = fields

    def go_method(self, name: str) -> Callable[[], object] | None:
        """A method without arguments that templates may call as ``.Name`` (none by default)."""
        return None


class GoSlice(list[object]):
    """A Go slice; ``nil`` marks a nil slice (prints ``[]``, JSON-encodes as ``null``)."""

    go_type: ClassVar[str] = "[]interface {}"

    def __init__(self, items: Iterable[object] = (), *, nil: bool = False) -> None:
        super().__init__(items)
        self.nil = nil and not self


class GoMap(dict[str, object]):
    """A Go map with string keys; ``nil`` marks a nil map (prints ``map[]``, JSON-encodes as ``null``)."""

    go_type: ClassVar[str] = "map[string]interface {}"

    def __init__(self, items: Mapping[str, object] | None = None, *, nil: bool = False) -> None:
        super().__init__(items or {})
        self.nil = nil and not self


def go_type_name(v: object) -> str:
    """The Go type name of a value, as Go's error messages and ``%T`` spell it."""
    for typ, name in ((bool, "bool"), (int, "int"), (float, "float64"), (str, "string"), (bytes, "[]uint8")):
        if isinstance(v, typ):
            return name
    if v is None:
        return "<nil>"
    if isinstance(v, (GoStruct, GoSlice, GoMap)):
        return v.go_type
    if isinstance(v, Mapping):
        return "map[string]interface {}"
    return "[]interface {}" if isinstance(v, (list, tuple)) else type(v).__name__


def hook(v: object, name: str) -> Callable[[], str] | None:
    """A ``go_string``/``go_json`` method of ``v`` (see GoStringer, GoJSONMarshaler), or None."""
    method = getattr(v, name, None)
    return method if callable(method) else None


def is_nil(v: object) -> bool:
    """Whether ``v`` is nil: None, or an empty GoSlice/GoMap marked nil."""
    return v is None or (isinstance(v, (GoSlice, GoMap)) and v.nil and not v)


def truth(v: object) -> bool:
    """Go template truth: false, 0, nil and empty strings, slices and maps are false; structs are true."""
    if v is None:
        return False
    if isinstance(v, (bool, int, float, complex)):
        return v != 0
    if isinstance(v, (str, bytes, list, tuple, Mapping)):
        return len(v) > 0
    return True


def _sort_key(k: object) -> tuple[int, object]:
    if isinstance(k, (int, float)) and not isinstance(k, bool):
        return 0, k
    return (1, k) if isinstance(k, str) else (2, str(k))


def sorted_items(m: Mapping[object, object]) -> list[tuple[object, object]]:
    """Map entries in Go's order (fmt and range sort keys)."""
    return sorted(m.items(), key=lambda kv: _sort_key(kv[0]))


# ---------------------------------------------------------------- fmt


@dataclass(frozen=True)
class _Spec:
    verb: str = "v"
    flags: str = ""
    width: int | None = None
    prec: int | None = None


_V: Final = _Spec()
_SPEC: Final = re.compile(r"%([-+# 0]*)(\d+|\*)?(?:\.(\d*|\*))?(.?)", re.S)


def shortest_digits(x: float) -> tuple[str, int]:
    """Shortest round-trip digits of ``x > 0`` and the decimal point position (x = 0.DIGITS * 10**dp)."""
    mantissa, _, exp = repr(x).partition("e")
    whole, _, frac = mantissa.partition(".")
    joined = whole + frac
    digits = joined.lstrip("0")
    dp = len(whole) + int(exp or 0) - (len(joined) - len(digits))
    return digits.rstrip("0") or "0", dp


def fixed_notation(digits: str, dp: int) -> str:
    if dp <= 0:
        return "0." + "0" * -dp + digits
    if dp >= len(digits):
        return digits + "0" * (dp - len(digits))
    return digits[:dp] + "." + digits[dp:]


def sci_notation(digits: str, exp: int) -> str:
    return digits[0] + ("." + digits[1:] if len(digits) > 1 else "") + f"e{'-' if exp < 0 else '+'}{abs(exp):02d}"


def _go_g(x: float, prec: int) -> str:
    """Go's %g of ``x >= 0``; ``prec < 0`` is the shortest form that %v prints."""
    if x == 0:
        return "0"
    if prec < 0:
        digits, dp = shortest_digits(x)
        eprec = 6
    else:
        mantissa, _, exp = f"{x:.{max(prec, 1) - 1}e}".partition("e")
        digits, dp, eprec = mantissa.replace(".", "").rstrip("0") or "0", int(exp) + 1, max(prec, 1)
    return sci_notation(digits, dp - 1) if not -4 <= dp - 1 < eprec else fixed_notation(digits, dp)


def _sign(s: _Spec, *, negative: bool) -> str:
    return "-" if negative else "+" if "+" in s.flags else " " if " " in s.flags else ""


def _pad(text: str, s: _Spec, sign: str = "", *, zero: bool = True) -> str:
    fill = (s.width or 0) - len(sign) - len(text)
    if fill <= 0:
        return sign + text
    if "-" in s.flags:
        return sign + text + " " * fill
    if "0" in s.flags and zero:
        return sign + "0" * fill + text
    return " " * fill + sign + text


def _bad(v: object, s: _Spec) -> str:
    return f"%!{s.verb}(<nil>)" if v is None else f"%!{s.verb}({go_type_name(v)}={_fmt(v, _V)})"


def _fmt_int(v: int, s: _Spec) -> str:
    if s.verb == "c":
        return _pad(chr(v), s)
    if s.verb == "q":
        return _pad(go_quote(chr(v), "'"), s)
    if s.verb == "U":
        return _pad(f"U+{v:04X}", s)
    spec = {"v": "d", "d": "d", "b": "b", "o": "o", "O": "o", "x": "x", "X": "X"}.get(s.verb)
    if spec is None:
        return _bad(v, s)
    digits = format(abs(v), spec).rjust(s.prec or 0, "0") if s.prec != 0 or v else ""
    prefix = {"b": "0b", "o": "0", "x": "0x", "X": "0X"}.get(s.verb, "") if "#" in s.flags else ""
    prefix = "0o" if s.verb == "O" else prefix
    return _pad(digits, s, _sign(s, negative=v < 0) + prefix, zero=s.prec is None)


def _fmt_float(v: float, s: _Spec) -> str:
    if s.verb not in "vfFeEgG":
        return _bad(v, s)
    sign = _sign(s, negative=math.copysign(1, v) < 0 and not math.isnan(v))
    if math.isinf(v) or math.isnan(v):
        return _pad("NaN" if math.isnan(v) else "Inf", s, sign or ("+" if math.isinf(v) else ""), zero=False)
    prec = 6 if s.prec is None else s.prec
    if s.verb in "vgG":
        text = _go_g(abs(v), -1 if s.prec is None else s.prec)
    else:
        text = format(abs(v), f".{prec}{'e' if s.verb in 'eE' else 'f'}")
    return _pad(text.upper() if s.verb in "EG" else text, s, sign)


def _fmt_str(v: str, s: _Spec) -> str:
    if s.verb in "vs":
        return _pad(v if s.prec is None else v[: s.prec], s)
    if s.verb == "q":
        return _pad(go_quote(v if s.prec is None else v[: s.prec]), s)
    if s.verb in "xX":
        sep = " " if " " in s.flags else ""
        text = sep.join(format(b, "02x" if s.verb == "x" else "02X") for b in v.encode())
        return _pad(text, s)
    return _bad(v, s)


def _fmt(v: object, s: _Spec, *, nested: bool = False) -> str:
    """One operand formatted like Go's fmt with verb ``s.verb`` (String() methods included)."""
    if s.verb == "T":
        return _pad(go_type_name(v), s)
    if v is None:
        return _pad("<nil>", s) if s.verb == "v" or nested else _bad(v, s)
    stringer = hook(v, "go_string")
    if stringer is not None and s.verb in "vsqxX":
        return _fmt_str(stringer(), s)
    if isinstance(v, bool):
        return _pad("true" if v else "false", s) if s.verb in "vt" else _bad(v, s)
    if isinstance(v, int):
        return _fmt_int(v, s)
    if isinstance(v, float):
        return _fmt_float(v, s)
    if isinstance(v, str):
        return _fmt_str(v, s)
    if isinstance(v, (bytes, bytearray)) and s.verb in "sqxX":
        return _fmt_str(bytes(v).decode("utf-8", "replace"), s)
    if isinstance(v, Mapping):
        pairs = (f"{_fmt(k, s, nested=True)}:{_fmt(x, s, nested=True)}" for k, x in sorted_items(v))
        return "map[" + " ".join(pairs) + "]"
    if isinstance(v, (list, tuple, bytes, bytearray)):
        return "[" + " ".join(_fmt(x, s, nested=True) for x in v) + "]"
    if isinstance(v, GoStruct):
        return "{" + " ".join(_fmt(x, s, nested=True) for x in v.fields.values()) + "}"
    return _pad(str(v), s)


def go_quote(s: str, quote: str = '"') -> str:
    """Go's strconv.Quote (or QuoteRune with ``quote="'"``)."""
    out = [quote]
    for ch in s:
        code = ord(ch)
        if ch in (quote, "\\"):
            out.append("\\" + ch)
        elif ch in "\a\b\f\n\r\t\v":
            out.append("\\" + "abfnrtv"["\a\b\f\n\r\t\v".index(ch)])
        elif ch.isprintable():
            out.append(ch)
        else:
            out.append(
                f"\\x{code:02x}"
                if code < 0x20 or code == 0x7F
                else f"\\u{code:04x}"
                if code < 0x10000
                else f"\\U{code:08x}"
            )
    return "".join(out) + quote


def go_sprint(*args: object) -> str:
    """Go's fmt.Sprint: a space between operands when neither side is a string."""
    out: list[str] = []
    for i, a in enumerate(args):
        if i and not isinstance(a, str) and not isinstance(args[i - 1], str):
            out.append(" ")
        out.append(_fmt(a, _V))
    return "".join(out)


def go_sprintf(fmt: str, *args: object) -> str:
    """Go's fmt.Sprintf for the common verbs (v s d q x X o b c t e f g T U and %%)."""
    out: list[str] = []
    pending = list(args)
    pos = 0
    for m in _SPEC.finditer(fmt):
        out.append(fmt[pos : m.start()])
        pos = m.end()
        flags, width, prec, verb = m.groups()
        if verb == "%":
            out.append("%")
            continue
        if not verb:
            out.append("%!(NOVERB)")
            continue
        sizes = [_star(pending) if x == "*" else (int(x) if x else (0 if x == "" else None)) for x in (width, prec)]
        if pending:
            out.append(_fmt(pending.pop(0), _Spec(verb, flags, sizes[0] or None, sizes[1])))
        else:
            out.append(f"%!{verb}(MISSING)")
    out.append(fmt[pos:])
    if pending:
        out.append("%!(EXTRA " + ", ".join(f"{go_type_name(a)}={_fmt(a, _V)}" for a in pending) + ")")
    return "".join(out)


def _star(pending: list[object]) -> int | None:
    value = pending.pop(0) if pending else None
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def sprint_value(v: object) -> str:
    """``v`` formatted as Go's ``%v`` (``String()`` methods included)."""
    return _fmt(v, _V)
