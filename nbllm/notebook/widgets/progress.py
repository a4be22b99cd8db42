"""PullProgress: a live progress bar per downloaded layer of ``%pull``, and its static text summary."""

from __future__ import annotations

import time

import ipywidgets as widgets

from nbllm.humanize import human_bytes
from nbllm.notebook.widgets._fallback import StaticFallback, escape
from nbllm.schema import ProgressResponse

__all__ = ["PullProgress"]


class _Layer:
    def __init__(self, status: str, total: int) -> None:
        self.status = status
        self.total = total
        self.completed = 0
        self.started = time.monotonic()
        self.bar = widgets.IntProgress(
            value=0, min=0, max=max(total, 1), description=status, style={"description_width": "initial"}
        )
        self.label = widgets.Label("")
        self.row = widgets.HBox([self.bar, self.label])

    def update(self, completed: int) -> None:
        self.completed = min(completed, self.total) if self.total else completed
        self.bar.value = min(self.completed, self.bar.max)
        pct = int(self.completed * 100 / self.total) if self.total else 100
        elapsed = time.monotonic() - self.started
        rate = f" · {human_bytes(int(self.completed / elapsed))}/s" if 0 < self.completed < self.total else ""
        self.label.value = f"{pct}% of {human_bytes(self.total)}{rate}"
        self.bar.bar_style = "success" if self.total and self.completed >= self.total else ""

    def line(self) -> str:
        pct = int(self.completed * 100 / self.total) if self.total else 100
        return f"{self.status}... {pct:3d}% {human_bytes(self.total)}"


class PullProgress(StaticFallback, widgets.VBox):
    """Progress of one pull: ``feed()`` it the server's progress events, in order.

    ``%pull`` replaces it by :meth:`text` when the pull ends; until then its output also holds that text.
    """

    def __init__(self, model: str) -> None:
        self.model_name = model
        self.status = widgets.Label(f"pulling {model}")
        self.layers: dict[str, _Layer] = {}
        self.steps: list[str] = []
        super().__init__([self.status])

    def feed(self, event: ProgressResponse) -> None:
        """Show one progress event (a step, or bytes of a layer)."""
        if event.total is not None:
            key = event.digest or event.status
            layer = self.layers.get(key)
            if layer is None:
                layer = self.layers[key] = _Layer(event.status, event.total)
                self.steps.append(key)
                self.children = (self.status, *(layer.row for layer in self.layers.values()))
            layer.update(event.completed or 0)
            return
        self.status.value = event.status
        self.steps.append(event.status)
        if event.status == "success":
            self.status.value = f"success: {self.model_name}"

    @property
    def done(self) -> bool:
        """Whether the pull reported success."""
        return bool(self.steps) and self.steps[-1] == "success"

    def text(self) -> str:
        """The pull as Ollama's CLI leaves it on screen, one line per step."""
        return "\n".join(self.layers[s].line() if s in self.layers else s for s in self.steps)

    def fallback(self) -> tuple[str, str]:
        """The steps so far (or what is being pulled), as HTML and as plain text."""
        text = self.text() or f"pulling {self.model_name}"
        return f"<pre>{escape(text)}</pre>", text
