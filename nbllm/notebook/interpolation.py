"""Safe prompt interpolation: ``{name}`` from the user namespace; every other brace stays as written.

``str.format_map`` treats any ``{...}`` as a field, so prompts that contain code (dict literals,
f-strings, JSON, TypeScript) break (jupyter-ai #27, #967). Here only ``{identifier}`` and
``{In[n]}``/``{Out[n]}``/``{Err[n]}`` that resolve are replaced, once.

``Err`` is the errors of earlier cells (:class:`CellErrors`, kept by a ``post_run_cell`` callback,
not by ``set_custom_exc`` as jupyter-ai does, so no other extension's handler is replaced):
``{Err}`` or ``{Err[-1]}`` is the last error's traceback, ``{Err[7]}`` the error of cell 7.
"""

from __future__ import annotations

import re
import threading
import traceback
from collections.abc import Mapping
from typing import Any

__all__ = ["CellErrors", "interpolate", "strip_markers"]

MAX_TRACEBACK_CHARS = 4000
"""The end of a longer traceback is kept (its last frames and the error), to keep prompts small."""

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
        try:
            return str(value if index is None else value[int(index)])
        except (LookupError, TypeError, ValueError):  # no such entry (or no error yet for {Err})
            return match.group(0)

    return _FIELD.sub(replace, text)


def strip_markers(text: str) -> str:
    """Drop nbval marker lines (``# NBVAL_IGNORE_OUTPUT``), which a cell magic's body cannot avoid.

    >>> strip_markers("# NBVAL_IGNORE_OUTPUT\\nHello")
    'Hello'
    """
    return _MARKER.sub("", text)


class CellErrors:
    """The error of each cell that failed, by execution count, as the text of its traceback.

    ``errors[7]`` is cell 7's, ``errors[-1]`` the last one, ``str(errors)`` the last one too.

    >>> errors = CellErrors()
    >>> errors.add(3, ZeroDivisionError("division by zero"))
    >>> errors[3] == errors[-1] == str(errors) == "ZeroDivisionError: division by zero"
    True
    """

    def __init__(self) -> None:
        self._by_cell: dict[int, str] = {}
        self._lock = threading.Lock()

    def add(self, cell: int, error: BaseException) -> None:
        """Keep ``error`` as cell ``cell``'s."""
        text = format_error(error)
        with self._lock:
            self._by_cell[cell] = text

    def record(self, result: Any) -> None:
        """IPython's ``post_run_cell`` callback: keep the error of a cell that failed."""
        error = getattr(result, "error_in_exec", None) or getattr(result, "error_before_exec", None)
        count = getattr(result, "execution_count", None)
        if error is not None and count is not None:
            self.add(count, error)

    def __getitem__(self, key: int) -> str:
        with self._lock:
            if key < 0:
                return self._by_cell[sorted(self._by_cell)[key]]
            return self._by_cell[key]

    def __len__(self) -> int:
        with self._lock:
            return len(self._by_cell)

    def __str__(self) -> str:
        return self[-1]


def format_error(error: BaseException) -> str:
    """A traceback as plain text, without IPython's own frame, cut to its last ``MAX_TRACEBACK_CHARS``."""
    tb = error.__traceback__
    if tb is not None and tb.tb_next is not None and "interactiveshell" in tb.tb_frame.f_code.co_filename:
        tb = tb.tb_next  # IPython's run_code frame, which its own display hides too
    text = "".join(traceback.format_exception(type(error), error, tb)).strip()
    return text if len(text) <= MAX_TRACEBACK_CHARS else "…" + text[-MAX_TRACEBACK_CHARS:]
