"""ToolCallInspector: each tool call of a chat (name, arguments, result, duration), re-runnable with edits."""

from __future__ import annotations

import json
from typing import Any

import ipywidgets as widgets

from nbllm.notebook.tools import ToolBox, ToolCallRecord
from nbllm.notebook.widgets._callbacks import safe_callback

__all__ = ["ToolCallCard", "ToolCallInspector"]


class ToolCallCard(widgets.VBox):
    """One call: a title line, the arguments (editable JSON), the result, and a Re-run button."""

    def __init__(self, record: ToolCallRecord, toolbox: ToolBox) -> None:
        self.record = record
        self.toolbox = toolbox
        self.title = widgets.HTML()
        self.arguments = widgets.Textarea(
            value=json.dumps(record.arguments, indent=2, default=str), description="arguments", rows=3
        )
        self.result = widgets.Textarea(value="", description="result", rows=3, disabled=True)
        self.rerun = widgets.Button(description="Re-run", icon="refresh", tooltip="run again with these arguments")
        self.rerun.on_click(safe_callback(self._on_rerun))
        super().__init__([self.title, self.arguments, self.result, self.rerun])
        self.refresh()

    def refresh(self) -> None:
        """Show the record's current state."""
        r = self.record
        mark = "✗" if r.error is not None else "✓"
        runs = f" · re-run {r.reruns}×" if r.reruns else ""
        self.title.value = f"<code>{mark} {_escape(r.name)}</code> <small>{r.duration_s * 1000:.1f} ms{runs}</small>"
        self.result.value = f"error: {r.error}" if r.error is not None else r.content

    def _on_rerun(self, _button: Any = None) -> None:
        try:
            args = json.loads(self.arguments.value or "{}")
        except json.JSONDecodeError as exc:
            self.result.value = f"arguments are not valid JSON: {exc}"
            return
        if not isinstance(args, dict):
            self.result.value = "arguments must be a JSON object"
            return
        self.record.arguments = args
        self.record.reruns += 1
        self.toolbox.run(self.record)
        self.refresh()


class ToolCallInspector(widgets.VBox):
    """Every tool call of one ``%%chat`` cell, in order."""

    def __init__(self, toolbox: ToolBox) -> None:
        self.toolbox = toolbox
        self.cards: list[ToolCallCard] = []
        self.heading = widgets.HTML("<b>tool calls</b>")
        super().__init__([self.heading])

    def add(self, record: ToolCallRecord) -> ToolCallCard:
        """Show a new call."""
        card = ToolCallCard(record, self.toolbox)
        self.cards.append(card)
        self.children = (self.heading, *self.cards)
        self.heading.value = f"<b>tool calls ({len(self.cards)})</b>"
        return card


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
