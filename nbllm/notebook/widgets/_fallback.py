"""Widgets whose output also carries a static copy (text/html and text/plain), for notebooks read without a kernel.

A widget's output holds only a reference to a model that lives in the kernel. Where that model is
missing (nbconvert's HTML, GitHub, nbviewer, an untrusted notebook) the front end shows another
type of the same output bundle, so every widget here adds its own copy of what it shows.
JupyterLab shows "Error displaying widget: model not found" instead for a notebook it trusts, so a
widget whose live part has ended (a stopped ``%ps --watch``, the kernel shutting down) replaces its
output by the copy alone: :meth:`LiveFallback.freeze`.
"""

from __future__ import annotations

import html
import threading
from typing import Any

from nbllm.notebook.display import show

__all__ = ["LiveFallback", "StaticFallback", "escape"]

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


def escape(text: str) -> str:
    """Text for HTML.

    >>> escape("<a & b>")
    '&lt;a &amp; b&gt;'
    """
    return html.escape(text, quote=False)


class StaticFallback:
    """Mixin (before the ipywidgets base): the display bundle holds the widget and its static copy."""

    frozen = False
    """Whether the output shows only the static copy (set by :meth:`LiveFallback.freeze`)."""

    def fallback(self) -> tuple[str, str]:
        """The static copy: (HTML, plain text)."""
        raise NotImplementedError

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        page, plain = self.fallback()
        data: dict[str, Any] = {"text/html": page, "text/plain": plain}
        if not self.frozen:
            view = super()._repr_mimebundle_()  # type: ignore[misc]
            if WIDGET_VIEW in view:
                data[WIDGET_VIEW] = view[WIDGET_VIEW]
        return data


class LiveFallback(StaticFallback):
    """A StaticFallback that displays itself with a display id and keeps every output's copy current."""

    def _fallback_state(self) -> tuple[list[Any], threading.Lock]:
        state: tuple[list[Any], threading.Lock] | None = self.__dict__.get("_nbllm_fallback")
        if state is None:
            state = self.__dict__["_nbllm_fallback"] = ([], threading.Lock())
        return state

    def _ipython_display_(self) -> None:
        handles, lock = self._fallback_state()
        with lock:
            bundle = self._repr_mimebundle_()
            handles.append([show(bundle, raw=True, display_id=True), bundle])

    def refresh_fallback(self) -> None:
        """Send the current copy to every output of this widget (only where it changed)."""
        handles, lock = self._fallback_state()
        with lock:
            bundle = self._repr_mimebundle_()
            for entry in handles:
                if entry[1] != bundle:
                    entry[0].update(bundle, raw=True)
                    entry[1] = bundle

    def freeze(self) -> None:
        """Replace this widget's outputs by the static copy alone (the live view ends; idempotent)."""
        self.frozen = True
        self.refresh_fallback()
