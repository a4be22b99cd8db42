"""PsView: ``%ps --watch``, the running models refreshed by a background thread until stopped."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import ipywidgets as widgets

from nbllm.notebook.tables import ps_frame
from nbllm.notebook.widgets._callbacks import safe_callback
from nbllm.notebook.widgets._fallback import LiveFallback, escape
from nbllm.schema import ProcessResponse

__all__ = ["PsView", "ps_table"]

log = logging.getLogger(__name__)

_COLUMNS = ["name", "id", "size", "processor", "context", "until"]
_RIGHT = {"size", "context"}
_CELL = "padding:2px 12px 2px 0;white-space:nowrap;text-align:{align}"


def ps_table(resp: ProcessResponse) -> tuple[str, str]:
    """The running models as Ollama's ``ps`` columns: (an HTML table with inline styles, plain text)."""
    frame = ps_frame(resp)
    if frame.empty:
        return "<i>no models loaded</i>", "no models loaded"
    shown = frame[_COLUMNS].fillna("").astype(str)

    def cell(tag: str, column: str, text: str) -> str:
        style = _CELL.format(align="right" if column in _RIGHT else "left")
        if column == "id":
            style += ";font-family:var(--jp-code-font-family,monospace)"
        return f'<{tag} style="{style}">{escape(text)}</{tag}>'

    head = "".join(cell("th", c, c.upper()) for c in _COLUMNS)
    rows = ["<tr>" + "".join(cell("td", c, row[c]) for c in _COLUMNS) + "</tr>" for _, row in shown.iterrows()]
    html = (
        '<table style="border-collapse:collapse;font-size:var(--jp-ui-font-size1,13px)">'
        f'<thead><tr style="border-bottom:1px solid #8888">{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'
    )
    widths = {c: max(len(c), *(len(v) for v in shown[c])) for c in _COLUMNS}
    lines = ["  ".join(c.upper().ljust(widths[c]) for c in _COLUMNS).rstrip()]
    lines += ["  ".join(str(row[c]).ljust(widths[c]) for c in _COLUMNS).rstrip() for _, row in shown.iterrows()]
    return html, "\n".join(lines)


class PsView(LiveFallback, widgets.VBox):
    """A table refreshed every ``interval`` seconds from ``fetch()``, with a Stop button.

    The refresh thread only assigns trait values and updates this widget's outputs, which is safe off
    the cell thread. Stopping it leaves the last table as a static output.
    """

    def __init__(self, fetch: Callable[[], ProcessResponse], *, interval: float = 1.0) -> None:
        self.fetch = fetch
        self.interval = interval
        self.refreshes = 0
        self.last = ("<i>not fetched yet</i>", "not fetched yet")
        self.stopped_at: str | None = None
        self.table = widgets.HTML("")
        self.footer = widgets.Label("")
        self.stop_button = widgets.Button(description="Stop", icon="stop", tooltip="stop refreshing")
        self.stop_button.on_click(safe_callback(lambda _b: self.stop()))
        self._halt = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="nbllm-ps-watch", daemon=True)
        super().__init__([self.table, widgets.HBox([self.stop_button, self.footer])])

    def start(self) -> PsView:
        """Show the first table now and keep refreshing in the background."""
        self.refresh()
        self._thread.start()
        return self

    def refresh(self) -> None:
        """Fetch and show the table once."""
        try:
            self.last = ps_table(self.fetch())
            self.table.value = self.last[0]
            self.footer.value = f"updated {time.strftime('%H:%M:%S')} · every {self.interval:g} s"
        except Exception as exc:  # a server gone away: say so and keep trying
            self.footer.value = f"refresh failed: {exc}"
        self.refreshes += 1
        self.refresh_fallback()

    def fallback(self) -> tuple[str, str]:
        """The last table (and when the watch stopped), as HTML and as text."""
        html, plain = self.last
        if self.stopped_at is not None:
            return (
                f"{html}<p><small>stopped at {self.stopped_at}</small></p>",
                f"{plain}\n(stopped at {self.stopped_at})",
            )
        return html, plain

    def _loop(self) -> None:
        while not self._halt.wait(self.interval):
            self.refresh()

    @property
    def running(self) -> bool:
        """Whether the refresh thread runs."""
        return self._thread.is_alive()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop refreshing and leave the last table as a static output (idempotent)."""
        self._halt.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)
        if self.stopped_at is None:
            self.stopped_at = time.strftime("%H:%M:%S")
            self.footer.value = f"stopped at {self.stopped_at}"
            self.stop_button.disabled = True
        self.freeze()

    def close(self) -> None:
        """Stop refreshing and close the widget."""
        self.stop()
        super().close()
