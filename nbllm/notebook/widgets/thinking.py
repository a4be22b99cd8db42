"""ThinkingAnswer: a streaming answer of a thinking model, its thinking in a collapsed section above it.

The thinking streams into an Accordion that starts collapsed ("Thinking…"); a click opens it, and
it stays open while the text grows: the kernel only changes the text, never the open state. The
answer streams below, into an Output widget holding the same Markdown bundle as an answer without
thinking. The static copy (where no widget can be shown) folds the thinking into an HTML
``<details>`` without ``open``; a finished answer replaces the widget by its static Markdown,
which folds the thinking the same way.
"""

from __future__ import annotations

from typing import Any

import ipywidgets as widgets

from nbllm.notebook.widgets._fallback import StaticFallback, escape

__all__ = ["THINKING_TITLE", "THOUGHT_TITLE", "ThinkingAnswer"]

THINKING_TITLE = "Thinking…"
THOUGHT_TITLE = "Thinking"
"""The section's title once the answer began (the final Markdown's ``<summary>`` says the same)."""
_PRE = "white-space: pre-wrap; margin: 0; font-size: 0.9em; opacity: 0.8"


class ThinkingAnswer(StaticFallback, widgets.VBox):
    """The live view of a thinking model's answer; :meth:`update` it as chunks arrive."""

    def __init__(self) -> None:
        self._thinking = widgets.HTML("")
        self.section = widgets.Accordion(children=[self._thinking], titles=(THINKING_TITLE,), selected_index=None)
        self.section.add_class("nbllm-thinking")
        self._answer = widgets.Output()
        self._answer.add_class("nbllm-answer")
        self.thought = ""
        """The thinking shown so far."""
        self.plain = ""
        """The answer shown so far, as plain text."""
        super().__init__(children=[self.section, self._answer])

    def update(self, thinking: str, answer: dict[str, Any], *, answering: bool = False) -> None:
        """Show ``thinking`` (plain text) in the section and the ``answer`` bundle below it.

        ``answering``: the answer's text began, so the thinking is over (the title drops its "…").
        """
        if answering and self.section.titles != (THOUGHT_TITLE,):
            self.section.titles = (THOUGHT_TITLE,)  # the title only: the open state stays the user's
        if thinking != self.thought:
            self.thought = thinking
            self._thinking.value = f'<pre style="{_PRE}">{escape(thinking)}</pre>'
        self.plain = str(answer.get("text/plain", ""))
        self._answer.outputs = ({"output_type": "display_data", "data": dict(answer), "metadata": {}},)

    @property
    def expanded(self) -> bool:
        """Whether the thinking section is open (as the front end last told the kernel)."""
        return self.section.selected_index is not None

    def fallback(self) -> tuple[str, str]:
        """A ``<details>`` (collapsed) with the thinking, then the answer as text."""
        page = (
            f"<details><summary>{THINKING_TITLE}</summary>"
            f'<pre style="{_PRE}">{escape(self.thought)}</pre></details>'
            f'<pre style="white-space: pre-wrap">{escape(self.plain)}</pre>'
        )
        return page, f"{THINKING_TITLE}\n{self.thought}\n\n{self.plain}"

    def __repr__(self) -> str:
        return f"ThinkingAnswer({len(self.thought)} characters of thinking)"
