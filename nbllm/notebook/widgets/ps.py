"""PsView: ``%ps --watch``, the running models refreshed by a background thread until stopped."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import ipywidgets as widgets

from nbllm.notebook.widgets._callbacks import safe_callback

__all__ = ["PsView"]

log = logging.getLogger(__name__)


class PsView(widgets.VBox):
    """A table refreshed every ``interval`` seconds from ``fetch()`` (HTML), with a Stop button.

    The refresh thread only assigns trait values, which is safe off the cell thread.
    """

    def __init__(self, fetch: Callable[[], str], *, interval: float = 1.0) -> None:
        self.fetch = fetch
        self.interval = interval
        self.refreshes = 0
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
            self.table.value = self.fetch()
            self.footer.value = f"updated {time.strftime('%H:%M:%S')} · every {self.interval:g} s"
        except Exception as exc:  # a server gone away: say so and keep trying
            self.footer.value = f"refresh failed: {exc}"
        self.refreshes += 1

    def _loop(self) -> None:
        while not self._halt.wait(self.interval):
            self.refresh()
        self.footer.value = f"stopped at {time.strftime('%H:%M:%S')}"
        self.stop_button.disabled = True

    @property
    def running(self) -> bool:
        """Whether the refresh thread runs."""
        return self._thread.is_alive()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop refreshing (idempotent)."""
        self._halt.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def close(self) -> None:
        """Stop refreshing and close the widget."""
        self.stop()
        super().close()
