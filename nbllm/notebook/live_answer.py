"""What a streaming ``%%chat``/``%%generate`` answer shows: its Markdown, or a thinking section above it.

An answer without thinking is one Markdown bundle, replaced as it grows. Once thinking arrives
(``message.thinking`` chunks), the output becomes a :class:`ThinkingAnswer` widget: the thinking in
a collapsed "Thinking…" section that the user may open while it streams, the answer below it.
Either way the answer ends as the static bundle of :func:`finish`, whose Markdown folds the
thinking into a ``<details>`` without ``open``: collapsed in the saved notebook.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from nbllm.notebook.answer import Answer, render_body
from nbllm.notebook.display import LiveDisplay
from nbllm.notebook.outputs import live_bundle
from nbllm.notebook.tools import ToolCallRecord

if TYPE_CHECKING:
    from nbllm.notebook.widgets.thinking import ThinkingAnswer

__all__ = ["LiveAnswer", "thinking_text"]


def thinking_text(answers: list[Answer]) -> str:
    """The thinking of every round of an answer, one paragraph per round."""
    return "\n\n".join(a.thought.strip() for a in answers if a.thought.strip())


class LiveAnswer:
    """Draws a streaming answer into ``display`` (at most every ``interval`` seconds) and ends it."""

    def __init__(self, display: LiveDisplay, *, interval: float) -> None:
        self.display = display
        self.interval = interval
        self.view: ThinkingAnswer | None = None
        """The thinking widget, once thinking arrived (live displays only)."""
        self._last = 0.0

    def redraw(self, answers: list[Answer], calls: list[list[ToolCallRecord]]) -> None:
        """Show the answer so far (called for every chunk and every idle tick)."""
        thinking = thinking_text(answers)
        if not thinking or not self.display.live:
            self.display.update(
                lambda: live_bundle(render_body(answers, calls, partial=True), answers[-1].live_status())
            )
            return
        now = time.monotonic()
        if self.view is not None and now - self._last < self.interval:
            return  # a later chunk or tick draws it
        body = live_bundle(render_body(answers, calls, partial=True, thinking=False), answers[-1].live_status())
        answering = bool(answers[-1].text)
        if self.view is None:
            from nbllm.notebook.widgets.thinking import ThinkingAnswer

            self.view = ThinkingAnswer()
            self.view.update(thinking, body, answering=answering)
            self.display.update(self.view._repr_mimebundle_(), force=True)  # the widget replaces the Markdown
        else:
            self.view.update(thinking, body, answering=answering)  # only its text changes: an open section stays open
        self._last = now

    def finish(self, bundle: dict[str, Any], metadata: Mapping[str, Any] | None = None) -> None:
        """The final, static content (it replaces the widget, which is closed)."""
        self.display.finish(bundle, metadata)
        if self.view is not None:
            self.view.close()
