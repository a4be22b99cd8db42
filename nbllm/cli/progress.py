"""Ollama-style progress lines for pull/push/create: ``pulling 4134f3eb0516... 100% ▕██▏ 81 B``."""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Iterable
from typing import TextIO

from nbllm.humanize import human_bytes
from nbllm.schema import ProgressResponse

__all__ = ["render_progress"]


def _bar(status: str, completed: int, total: int, width: int, rate: float) -> str:
    pct = int(completed * 100 / total) if total else 100
    size = human_bytes(total)
    extra = f" {human_bytes(int(rate))}/s" if 0 < completed < total and rate > 0 else ""
    bar_width = max(10, width - len(status) - len(size) - len(extra) - 12)
    filled = int(bar_width * completed / total) if total else bar_width
    return f"{status}... {pct:3d}% ▕{'█' * filled}{' ' * (bar_width - filled)}▏ {size:>7}{extra}"


def render_progress(events: Iterable[ProgressResponse], out: TextIO | None = None) -> None:
    """Print progress: redrawn lines on a terminal, one final line per step otherwise."""
    out = out or sys.stderr
    tty = out.isatty()
    width = min(shutil.get_terminal_size((100, 20)).columns, 120)
    current: str | None = None
    started = time.monotonic()
    last_line = ""
    for event in events:
        if event.total is not None:
            if event.status != current:
                if current is not None:
                    out.write(("\r" + last_line if tty else last_line) + "\n")
                current = event.status
                started = time.monotonic()
            rate = (event.completed or 0) / max(1e-3, time.monotonic() - started)
            last_line = _bar(event.status, event.completed or 0, event.total, width, rate)
            if tty:
                out.write("\r" + last_line + "\x1b[K")
                out.flush()
            continue
        if current is not None:
            out.write(("\r" + last_line + "\x1b[K" if tty else last_line) + "\n")
            current = None
        out.write(event.status + "\n")
        out.flush()
    if current is not None:
        out.write(("\r" + last_line if tty else last_line) + "\n")
