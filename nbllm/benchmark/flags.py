"""Parsing the benchmark's text flags (shared by ``nbllm bench`` and ``%bench``): lists and key=value options."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from typing import Any

__all__ = ["parse_concurrency", "parse_option_pairs", "parse_rates"]


def _items(text: str | Iterable[str]) -> list[str]:
    parts = text.split(",") if isinstance(text, str) else [p for t in text for p in t.split(",")]
    return [p.strip() for p in parts if p.strip()]


def parse_concurrency(text: str | Iterable[str]) -> tuple[int, ...]:
    """``"1,2,4,8"`` (or repeated values) as concurrency levels.

    >>> parse_concurrency("1,2, 4")
    (1, 2, 4)
    """
    try:
        levels = tuple(int(p) for p in _items(text))
    except ValueError:
        raise ValueError(f"concurrency must be whole numbers like 1,2,4,8, not {text!r}") from None
    if any(c < 1 for c in levels):
        raise ValueError("concurrency levels must be at least 1")
    return levels


def parse_rates(text: str | Iterable[str]) -> tuple[float, ...]:
    """``"0.5,1,inf"`` as request rates (requests/s; ``inf`` sends all at once).

    >>> parse_rates("0.5,2,inf")
    (0.5, 2.0, inf)
    """
    try:
        rates = tuple(float(p) for p in _items(text))
    except ValueError:
        raise ValueError(f"request rates must be numbers like 0.5,1,inf, not {text!r}") from None
    if any(not (r > 0) or math.isnan(r) for r in rates):
        raise ValueError("request rates must be positive")
    return rates


def parse_option_pairs(pairs: Iterable[str]) -> dict[str, Any]:
    """``["temperature=0", "stop=[\\"x\\"]", "mirostat=off"]``: values read as JSON where they parse, else text.

    >>> parse_option_pairs(["temperature=0", "top_k=40", "name=abc"])
    {'temperature': 0, 'top_k': 40, 'name': 'abc'}
    """
    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"options are key=value, not {pair!r}")
        try:
            options[key.strip()] = json.loads(value)
        except ValueError:
            options[key.strip()] = value
    return options
