"""Go's encoding/json Marshal of template values, as Ollama's ``json`` template function prints them."""

from __future__ import annotations

import base64
import math
import re
from collections.abc import Mapping
from typing import Final

from nbllm.prompt.gotemplate.fmt import (
    GoStruct,
    fixed_notation,
    go_type_name,
    hook,
    is_nil,
    sci_notation,
    shortest_digits,
    sorted_items,
    sprint_value,
    truth,
)

__all__ = ["go_json"]

_JSON_ESCAPES: Final = {
    '"': '\\"',
    "\\": "\\\\",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
    "\b": "\\b",
    "\f": "\\f",
}
_JSON_SPECIAL: Final = re.compile('["\\\\\x00-\x1f<>&\u2028\u2029\ud800-\udfff]')


def _json_str(s: str) -> str:
    def escape(m: re.Match[str]) -> str:
        c = m.group()
        return "\\ufffd" if "\ud800" <= c <= "\udfff" else _JSON_ESCAPES.get(c) or f"\\u{ord(c):04x}"

    return '"' + _JSON_SPECIAL.sub(escape, s) + '"'


def _json_float(f: float) -> str:
    if math.isinf(f) or math.isnan(f):
        raise ValueError(f"json: unsupported value: {sprint_value(f)}")
    if f == 0:
        return "-0" if math.copysign(1, f) < 0 else "0"
    digits, dp = shortest_digits(abs(f))
    text = sci_notation(digits, dp - 1) if abs(f) < 1e-6 or abs(f) >= 1e21 else fixed_notation(digits, dp)
    return ("-" if f < 0 else "") + re.sub(r"e-0(\d)$", r"e-\1", text)


def _json_struct(v: GoStruct) -> str:
    tags = v.json_tags or tuple((name, name, "") for name in v.fields)
    parts = []
    for name, key, omit in tags:
        value = v.fields.get(name)
        if (omit == "nil" and value is None) or (omit == "empty" and not truth(value)):
            continue
        parts.append(f"{_json_str(key)}:{go_json(value)}")
    return "{" + ",".join(parts) + "}"


def go_json(v: object) -> str:
    """Go's json.Marshal: HTML-safe escaping, sorted map keys, ordered struct fields; ValueError if not."""
    marshal = hook(v, "go_json")
    if marshal is not None:
        return marshal()
    if is_nil(v):
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return _json_float(v)
    if isinstance(v, str):
        return _json_str(v)
    if isinstance(v, (bytes, bytearray)):
        return '"' + base64.b64encode(v).decode() + '"'
    if isinstance(v, Mapping):
        return "{" + ",".join(f"{_json_str(str(k))}:{go_json(x)}" for k, x in sorted_items(v)) + "}"
    if isinstance(v, (list, tuple)):
        return "[" + ",".join(go_json(x) for x in v) + "]"
    if isinstance(v, GoStruct):
        return _json_struct(v)
    raise ValueError(f"json: unsupported type: {go_type_name(v)}")
