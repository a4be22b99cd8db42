"""What a JSON schema may ask of a grammar: bounds within limits, and nothing that can match nothing.

Length and count bounds (``minLength``, ``maxItems``, a pattern's ``{m,n}``...) become repetitions in
the grammar, and the memory and time llama.cpp spends building it grow with them. A schema is
walked before it is converted, adding up what each bound will cost; one bound beyond its limit, or
a total beyond the request's budget, is refused as a bad request naming the field and the limit.
Schemas that can match nothing (an empty ``enum``, ``anyOf``, ``oneOf``, ``allOf`` or ``type``,
``minLength`` above ``maxLength``) are refused too: the model could never produce a valid answer.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from nbllm.errors import InvalidRequest

__all__ = ["MAX_BOUND", "MAX_COST", "MAX_DEPTH", "MAX_PATTERN_COUNT", "REPEAT_CHUNK", "SchemaBudget"]

MAX_BOUND = 1_000_000
"""The largest ``minLength``/``maxLength``/``minItems``/``maxItems`` a schema may give."""
MAX_PATTERN_COUNT = 1_000
"""The largest count in a ``pattern``'s ``{m,n}`` (the converter spells those out one by one)."""
MAX_COST = 200_000
"""The grammar elements all the schemas of one request may cost (about 160 bytes each in llama.cpp)."""
MAX_DEPTH = 64
"""How deeply subschemas may nest."""
REPEAT_CHUNK = 1_000
"""Counts above twice this are built from repeated chunks of this size (llama.cpp takes at most 2000)."""

_BOUNDS = (("minLength", "maxLength"), ("minItems", "maxItems"))
_SUBSCHEMA_MAPS = ("properties", "patternProperties", "$defs", "definitions", "dependentSchemas")
_SUBSCHEMAS = ("items", "additionalProperties", "additionalItems", "contains", "not", "propertyNames")
_SUBSCHEMA_LISTS = ("prefixItems", "anyOf", "oneOf", "allOf")
_QUANTIFIER = re.compile(r"(?<!\\)\{\s*(\d*)\s*(?:,\s*(\d*)\s*)?\}")


def repeat_cost(lo: int, hi: int | None) -> int:
    """Grammar elements that ``x{lo,hi}`` costs once built (bounded by the chunking of large counts)."""
    return min(max(lo, hi or 0), 4 * REPEAT_CHUNK) + 1


def _bound(value: object, where: str) -> int:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidRequest(f"invalid JSON schema in {where}: must be a non-negative integer, not {value!r}")
    if value > MAX_BOUND:
        raise InvalidRequest(f"JSON schema too large: {where} is {value}, above the limit of {MAX_BOUND}")
    return value


class SchemaBudget:
    """Checks the schemas of one request against the limits, adding up their cost."""

    def __init__(self, limit: int = MAX_COST) -> None:
        self.limit = limit
        self.cost = 0

    def check(self, schema: object, where: str) -> None:
        """Refuse ``schema`` (found at ``where`` in the request) if it is over the limits or matches nothing."""
        self._visit(schema, where, 0)

    def _spend(self, cost: int, where: str) -> None:
        self.cost += cost
        if self.cost > self.limit:
            raise InvalidRequest(
                f"JSON schema too large: the grammar for it would exceed {self.limit} elements (at {where}); "
                "use smaller length and item bounds"
            )

    def _visit(self, schema: object, where: str, depth: int) -> None:
        if isinstance(schema, bool):
            return
        if not isinstance(schema, Mapping):
            raise InvalidRequest(f"invalid JSON schema in {where}: a schema must be an object")
        if depth > MAX_DEPTH:
            raise InvalidRequest(f"JSON schema too deep: {where} is nested more than {MAX_DEPTH} levels")
        self._spend(1, where)
        self._own_keywords(schema, where)
        for key in _SUBSCHEMA_MAPS:
            sub = schema.get(key)
            if isinstance(sub, Mapping):
                for name, value in sub.items():
                    self._visit(value, f"{where}.{key}.{name}", depth + 1)
        for key in _SUBSCHEMAS:
            sub = schema.get(key)
            if isinstance(sub, list):  # the old tuple form of items
                for i, value in enumerate(sub):
                    self._visit(value, f"{where}.{key}[{i}]", depth + 1)
            elif sub is not None:
                self._visit(sub, f"{where}.{key}", depth + 1)
        for key in _SUBSCHEMA_LISTS:
            for i, value in enumerate(schema.get(key) or ()):
                self._visit(value, f"{where}.{key}[{i}]", depth + 1)

    def _own_keywords(self, schema: Mapping[str, Any], where: str) -> None:
        for key in ("enum", "anyOf", "oneOf", "allOf", "type", "prefixItems"):
            value = schema.get(key)
            if key in schema and key != "type" and not isinstance(value, list):
                raise InvalidRequest(f"invalid JSON schema in {where}.{key}: must be a list")
            if isinstance(value, list) and not value and key != "prefixItems":
                raise InvalidRequest(f"invalid JSON schema in {where}.{key}: an empty {key} matches nothing")
        for key in ("enum", "const"):
            try:
                json.dumps(schema.get(key), allow_nan=False)
            except ValueError:
                raise InvalidRequest(
                    f"invalid JSON schema in {where}.{key}: NaN and Infinity are not JSON values"
                ) from None
        for low_key, high_key in _BOUNDS:
            low = _bound(schema[low_key], f"{where}.{low_key}") if low_key in schema else 0
            high = _bound(schema[high_key], f"{where}.{high_key}") if high_key in schema else None
            if high is not None and low > high:
                raise InvalidRequest(
                    f"invalid JSON schema in {where}: {low_key} {low} is above {high_key} {high}, nothing matches"
                )
            if low_key in schema or high_key in schema:
                self._spend(repeat_cost(low, high), f"{where}.{low_key if high is None else high_key}")
        pattern = schema.get("pattern")
        if pattern is not None:
            self._pattern(pattern, f"{where}.pattern")

    def _pattern(self, pattern: object, where: str) -> None:
        if not isinstance(pattern, str):
            raise InvalidRequest(f"invalid JSON schema in {where}: must be a string")
        self._spend(len(pattern), where)
        for match in _QUANTIFIER.finditer(pattern):
            for count in match.groups():
                if count and (len(count) > 9 or int(count) > MAX_PATTERN_COUNT):
                    shown = count if len(count) <= 12 else count[:12] + "..."
                    raise InvalidRequest(
                        f"JSON schema too large: {where} repeats {shown} times, above the limit of {MAX_PATTERN_COUNT}"
                    )
                if count:  # spelled out in full, each copy as long as the pattern at most
                    self._spend(int(count) * len(pattern), where)
