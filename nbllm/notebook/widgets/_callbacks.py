"""Widget callbacks that show their exceptions instead of losing them in the comm handler."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["safe_callback"]

log = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])


def safe_callback(fn: F) -> F:
    """Wrap a widget callback: an exception is shown as a traceback in the notebook (or logged)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Exception:
            from IPython import get_ipython

            shell = get_ipython()
            if shell is not None:
                shell.showtraceback()
            else:
                log.exception("widget callback %s failed", getattr(fn, "__name__", fn))
            return None

    return wrapper  # type: ignore[return-value]
