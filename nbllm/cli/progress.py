"""Ollama-style progress on stderr: ``pulling 4134f3eb0516... 100% ▕██▏ 81 B`` bars, status lines, a spinner.

Each bar line is as wide as the terminal (80 columns when stderr is not one), with a fixed-width
label and suffix, so the bars of one pull line up as Ollama's do.
"""

from __future__ import annotations

import shutil
import sys
import threading
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, TextIO

from nbllm.humanize import human_bytes

if TYPE_CHECKING:
    from nbllm.schema import ProgressResponse

__all__ = ["Spinner", "bar_line", "render_progress"]

LABEL_WIDTH = len("pulling 0123456789ab...")
DEFAULT_WIDTH = 80
_REDRAW_EVERY = 0.1


def _eta(seconds: float) -> str:
    """Time left as Ollama's bar shows it (two units at most).

    >>> _eta(65.4), _eta(3 * 3600 + 125), _eta(500 * 3600)
    ('1m5s', '3h2m', '99h+')
    """
    s = round(seconds)
    if s >= 100 * 3600:
        return "99h+"
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60}m"
    return f"{s // 60}m{s % 60}s" if s >= 60 else f"{s}s"


def bar_line(label: str, completed: int, total: int, *, width: int = DEFAULT_WIDTH, rate: float = 0.0) -> str:
    """One bar: label, percentage, the bar, then sizes (and speed and time left while running).

    >>> line = bar_line("pulling 4134f3eb0516...", 81, 81)
    >>> line.rstrip().endswith("100% ▕████████████████▏   81 B"), len(line)
    (True, 79)
    """
    fraction = min(1.0, completed / total) if total > 0 else 1.0
    pre = f"{label:<{LABEL_WIDTH}} {fraction * 100:3.0f}%"
    if completed < total:
        suffix = f"{human_bytes(completed):>6}/{human_bytes(total):>6}"
        suffix += f"  {human_bytes(int(rate)):>6}/s  {_eta((total - completed) / rate):>6}" if rate > 0 else " " * 18
    else:
        suffix = f"{human_bytes(total):>6}" + " " * 25
    room = max(10, width - len(pre) - len(suffix) - 5)
    filled = int(room * fraction)
    return f"{pre} ▕{'█' * filled}{' ' * (room - filled)}▏ {suffix}"


class _Bars:
    """The bar being drawn: redrawn in place on a terminal, printed once when done otherwise."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.tty = out.isatty()
        self.width = shutil.get_terminal_size((DEFAULT_WIDTH, 24)).columns if self.tty else DEFAULT_WIDTH
        self.key: str | None = None
        self.line = ""
        self.started = 0.0
        self.first = 0
        self.drawn = 0.0

    def update(self, event: ProgressResponse) -> None:
        key = event.digest or event.status
        completed, total = event.completed or 0, event.total or 0
        if key != self.key:
            self.finish()
            self.key, self.started, self.first = key, time.monotonic(), completed
        elapsed = time.monotonic() - self.started
        rate = (completed - self.first) / elapsed if elapsed > 0.5 else 0.0
        self.line = bar_line(event.status + "...", completed, total, width=self.width, rate=rate)
        if self.tty and (completed >= total or time.monotonic() - self.drawn >= _REDRAW_EVERY):
            self.drawn = time.monotonic()
            self.out.write("\r" + self.line.rstrip() + "\x1b[K")
            self.out.flush()

    def finish(self) -> None:
        if self.key is None:
            return
        self.out.write(("\r" + self.line.rstrip() + "\x1b[K" if self.tty else self.line.rstrip()) + "\n")
        self.out.flush()
        self.key = None


def render_progress(events: Iterable[ProgressResponse], out: TextIO | None = None) -> None:
    """Print pull/push/create progress as Ollama does: a bar per layer, a line per other status."""
    bars = _Bars(out or sys.stderr)
    try:
        for event in events:
            if event.digest and event.total:
                if not event.completed:
                    continue  # the announcement before a download; Ollama shows no 0% bar
                bars.update(event)
                continue
            bars.finish()
            bars.out.write(event.status + "\n")
            bars.out.flush()
    finally:
        bars.finish()


class Spinner:
    """Ollama's braille spinner on stderr while waiting (nothing when stderr is not a terminal)."""

    FRAMES = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"

    def __init__(self, out: TextIO | None = None) -> None:
        self.out = out or sys.stderr
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> Spinner:
        return self.start()

    def start(self) -> Spinner:
        """Start spinning (on a terminal)."""
        if self.out.isatty() and self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._spin, name="nbllm-spinner", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _spin(self) -> None:
        frame = 0
        while not self._stop.wait(0.1):
            self.out.write(f"\r{self.FRAMES[frame % len(self.FRAMES)]} ")
            self.out.flush()
            frame += 1

    def stop(self) -> None:
        """Stop and erase the spinner (idempotent)."""
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join()
        self._thread = None
        self.out.write("\r\x1b[K")
        self.out.flush()
