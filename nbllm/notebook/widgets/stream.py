"""StreamColumns: several answers streaming side by side, one column per model."""

from __future__ import annotations

import ipywidgets as widgets

from nbllm.notebook.widgets._fallback import StaticFallback, escape

__all__ = ["StreamColumns"]


class StreamColumns(StaticFallback, widgets.HBox):
    """One column per model: a header (model, live stats) above the answer rendered as Markdown.

    The cell replaces it by a static bundle when the answers end; until then its output also holds
    the answers so far as plain HTML and text.

    Updates only assign traits (``outputs``, ``value``), so they are safe from any thread and never
    capture output meant for another cell.
    """

    def __init__(self, titles: list[str]) -> None:
        self.titles = list(titles)
        self.headers = [widgets.HTML(f"<b>{escape(t)}</b>") for t in titles]
        self.outputs = [widgets.Output() for _ in titles]
        self.texts = ["" for _ in titles]
        columns = [
            widgets.VBox([h, o], layout=widgets.Layout(flex="1 1 0%", min_width="0", padding="0 8px"))
            for h, o in zip(self.headers, self.outputs, strict=True)
        ]
        super().__init__(columns, layout=widgets.Layout(width="100%"))

    def set_markdown(self, index: int, text: str) -> None:
        """Replace column ``index``'s answer."""
        self.texts[index] = text
        self.outputs[index].outputs = (
            {"output_type": "display_data", "data": {"text/markdown": text, "text/plain": text}, "metadata": {}},
        )

    def set_status(self, index: int, status: str) -> None:
        """Replace the stats under column ``index``'s title."""
        title = escape(self.titles[index])
        self.headers[index].value = f"<b>{title}</b><br><small>{escape(status)}</small>"

    def fallback(self) -> tuple[str, str]:
        """The answers so far, one per model, as HTML and as plain text."""
        html = "".join(
            f'<div><b>{escape(t)}</b><pre style="white-space:pre-wrap">{escape(x)}</pre></div>'
            for t, x in zip(self.titles, self.texts, strict=True)
        )
        plain = "\n\n".join(f"{t}:\n{x}" for t, x in zip(self.titles, self.texts, strict=True))
        return html, plain
