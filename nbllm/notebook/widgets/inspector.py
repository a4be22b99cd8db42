"""ToolCallInspector: each tool call of a chat (name, arguments, result, duration), re-runnable with edits."""

from __future__ import annotations

import json
from typing import Any

import ipywidgets as widgets

from nbllm.notebook.tools import ToolBox, ToolCallRecord
from nbllm.notebook.widgets._callbacks import safe_callback
from nbllm.notebook.widgets._fallback import LiveFallback, escape

__all__ = ["ToolCallCard", "ToolCallInspector"]

_MAX_ROWS = 20


def _rows(text: str) -> int:
    """Rows for a text box that shows ``text`` whole (up to a limit; then it scrolls)."""
    return max(2, min(_MAX_ROWS, text.count("\n") + 1 + len(text) // 100))


def _box(value: str, label: str, *, disabled: bool = False) -> widgets.Textarea:
    return widgets.Textarea(
        value=value,
        description=label,
        rows=_rows(value),
        disabled=disabled,
        layout=widgets.Layout(width="100%"),
        style={"description_width": "7em"},
    )


class ToolCallCard(widgets.VBox):
    """One call: a title line, the arguments (editable JSON), the result, and a Re-run button."""

    def __init__(self, record: ToolCallRecord, toolbox: ToolBox, on_change: Any = None) -> None:
        self.record = record
        self.toolbox = toolbox
        self.on_change = on_change
        self.title = widgets.HTML()
        self.arguments = _box(json.dumps(record.arguments, indent=2, default=str), "arguments")
        self.result = _box("", "result", disabled=True)
        self.rerun = widgets.Button(description="Re-run", icon="refresh", tooltip="run again with these arguments")
        self.rerun.on_click(safe_callback(self._on_rerun))
        super().__init__([self.title, self.arguments, self.result, self.rerun], layout=widgets.Layout(width="100%"))
        self.refresh()

    def refresh(self) -> None:
        """Show the record's current state."""
        r = self.record
        self.title.value = f"<code>{_mark(r)} {escape(r.name)}</code> <small>{_stats(r)}</small>"
        self.result.value = _outcome(r)
        self.result.rows = _rows(self.result.value)

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
        if self.on_change is not None:
            self.on_change()


class ToolCallInspector(LiveFallback, widgets.VBox):
    """Every tool call of one ``%%chat`` cell, in order; its output also holds them as static HTML and text."""

    def __init__(self, toolbox: ToolBox) -> None:
        self.toolbox = toolbox
        self.cards: list[ToolCallCard] = []
        self.heading = widgets.HTML("<b>tool calls</b>")
        super().__init__([self.heading], layout=widgets.Layout(width="100%"))

    def add(self, record: ToolCallRecord) -> ToolCallCard:
        """Show a new call."""
        card = ToolCallCard(record, self.toolbox, on_change=self.refresh_fallback)
        self.cards.append(card)
        self.children = (self.heading, *self.cards)
        self.heading.value = f"<b>tool calls ({len(self.cards)})</b>"
        self.refresh_fallback()
        return card

    def fallback(self) -> tuple[str, str]:
        """Each call with its arguments and result, as HTML and as plain text."""
        records = [card.record for card in self.cards]
        html = [f"<p><b>tool calls ({len(records)})</b></p>"]
        plain = [f"tool calls ({len(records)})"]
        for r in records:
            args = json.dumps(r.arguments, indent=2, default=str, ensure_ascii=False)
            html.append(
                f"<p><code>{_mark(r)} {escape(r.name)}</code> <small>{_stats(r)}</small></p>"
                f"<p>arguments</p><pre>{escape(args)}</pre><p>result</p><pre>{escape(_outcome(r))}</pre>"
            )
            compact = json.dumps(r.arguments, default=str, ensure_ascii=False)
            plain.append(f"{_mark(r)} {r.name} ({_stats(r)})\n  arguments: {compact}\n  result: {_outcome(r)}")
        return "\n".join(html), "\n".join(plain)


def _mark(record: ToolCallRecord) -> str:
    return "✗" if record.error is not None else "✓"


def _stats(record: ToolCallRecord) -> str:
    runs = f" · re-run {record.reruns}×" if record.reruns else ""
    return f"{record.duration_s * 1000:.1f} ms{runs}"


def _outcome(record: ToolCallRecord) -> str:
    return f"error: {record.error}" if record.error is not None else record.content
