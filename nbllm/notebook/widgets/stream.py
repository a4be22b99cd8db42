"""StreamColumns: several answers streaming side by side, one column per model."""

from __future__ import annotations

import ipywidgets as widgets

__all__ = ["StreamColumns"]


class StreamColumns(widgets.HBox):
    """One column per model: a header (model, live stats) above the answer rendered as Markdown.

    Updates only assign traits (``outputs``, ``value``), so they are safe from any thread and never
    capture output meant for another cell.
    """

    def __init__(self, titles: list[str]) -> None:
        self.titles = list(titles)
        self.headers = [widgets.HTML(f"<b>{_escape(t)}</b>") for t in titles]
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
        title = _escape(self.titles[index])
        self.headers[index].value = f"<b>{title}</b><br><small>{_escape(status)}</small>"


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
