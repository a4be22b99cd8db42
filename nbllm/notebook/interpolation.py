"""Safe prompt interpolation: ``{name}`` from the user namespace; every other brace stays as written.

``str.format_map`` treats any ``{...}`` as a field, so prompts that contain code (dict literals,
f-strings, JSON, TypeScript) break (jupyter-ai #27, #967). Here only ``{identifier}`` and
``{In[n]}``/``{Out[n]}`` that resolve are replaced, once.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

__all__ = ["interpolate", "strip_markers"]

_FIELD = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)(?:\[(-?\d+)\])?\}")
_MARKER = re.compile(r"^[ \t]*#[ \t]*NBVAL_[A-Z_]+[ \t]*$\n?", re.MULTILINE)


def interpolate(text: str, namespace: Mapping[str, Any]) -> str:
    """Replace ``{name}`` (and ``{name[i]}``) whose value exists in ``namespace``; leave the rest alone.

    >>> interpolate("Explain {topic}: {'a': 1} and {missing} and {x!r}", {"topic": "dicts"})
    "Explain dicts: {'a': 1} and {missing} and {x!r}"
    >>> interpolate("Cell {In[1]} gave {Out[1]}", {"In": ["", "1+1"], "Out": {1: 2}})
    'Cell 1+1 gave 2'
    >>> interpolate("{d}", {"d": "{nested}"}) # values are not interpolated again
    '{nested}'
    """

    def replace(match: re.Match[str]) -> str:
        name, index = match.group(1), match.group(2)
        if name not in namespace:
            return match.group(0)
        value = namespace[name]
        if index is not None:
            try:
                value = value[int(index)]
            except (LookupError, TypeError, ValueError):
                return match.group(0)
        return str(value)

    return _FIELD.sub(replace, text)


def strip_markers(text: str) -> str:
    """Drop nbval marker lines (``# NBVAL_IGNORE_OUTPUT``), which a cell magic's body cannot avoid.

    >>> strip_markers("# NBVAL_IGNORE_OUTPUT\\nHello")
    'Hello'
    """
    return _MARKER.sub("", text)
