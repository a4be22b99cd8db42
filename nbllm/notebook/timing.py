"""Timing stats of every response of a notebook session, as a pandas DataFrame.

The server's numbers (load, prompt evaluation, generation, in nanoseconds) come from the final
chunk of each response; the time to first token is measured here, on the client side, from
sending the request to the first chunk that carries text. For thinking models the server streams
the thinking as its own chunks (``message.thinking``); they are counted here, on the client side
(``thinking_chunks``, ``thinking_chars``), and are part of the server's ``eval_tokens``.
"""

from __future__ import annotations

import functools
import math
import threading
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from nbllm.schema import Metrics

if TYPE_CHECKING:
    import pandas as pd

    from nbllm.notebook.plots import ComparisonPlot

__all__ = ["COLUMNS", "COLUMN_NOTES", "DISPLAY_DECIMALS", "TimingLog", "TimingRecord", "timing_frame"]

COLUMNS = [
    "model",
    "prompt_tokens",
    "prompt_cached",
    "prompt_tok_s",
    "eval_tokens",
    "eval_tok_s",
    "thinking_chunks",
    "thinking_chars",
    "load_s",
    "ttft_s",
    "total_s",
    "prompt_eval_s",
    "eval_s",
    "wall_s",
    "kind",
    "host",
    "cell",
    "done_reason",
    "interrupted",
    "measured",
    "time",
]

COLUMN_NOTES = {
    "prompt_cached": (
        "of prompt_tokens, those reused from the KV cache (the slot, RAM or a snapshot; nbllm's"
        " prompt_cached_count): not evaluated again; empty where the server does not say"
    ),
    "eval_tokens": "tokens generated, thinking included (the server's eval_count)",
    "thinking_chunks": (
        "streamed chunks that carried the model's thinking (message.thinking), counted by the notebook:"
        " the server's split of eval_tokens, one chunk per token as it streams them; empty without thinking"
    ),
    "thinking_chars": "characters of thinking received (the answer's are not counted); empty without thinking",
    "measured": (
        "where eval_s, eval_tok_s and total_s were measured: 'server' (the server's own timings) or"
        " 'client arrival' (arrival times of the stream's events in this kernel, for OpenAI-compatible hosts,"
        " which report none; eval_s is first token to last); ttft_s and wall_s are always measured here"
    ),
}
"""What the less obvious columns hold (a timing DataFrame's ``attrs["notes"]``, shown under its HTML)."""

DISPLAY_DECIMALS = {
    **dict.fromkeys(("prompt_tok_s", "eval_tok_s"), 1),
    **dict.fromkeys(("load_s", "ttft_s", "total_s", "prompt_eval_s", "eval_s", "wall_s"), 3),
}
"""Decimals shown by a timing DataFrame's display (the values themselves are not rounded)."""


def _seconds(ns: int | None) -> float:
    return ns / 1e9 if ns else math.nan


def _rate(count: int | None, ns: int | None) -> float:
    return count / (ns / 1e9) if count and ns else math.nan


@dataclass(frozen=True)
class TimingRecord:
    """The stats of one response (token counts None, other figures NaN, where the server reported none)."""

    model: str
    prompt_tokens: int | None
    prompt_tok_s: float
    eval_tokens: int | None
    eval_tok_s: float
    load_s: float
    ttft_s: float
    total_s: float
    prompt_eval_s: float
    eval_s: float
    wall_s: float
    kind: str = "chat"
    host: str = ""
    cell: int | None = None
    done_reason: str | None = None
    interrupted: bool = False
    thinking_chunks: int | None = None
    """Streamed chunks that carried thinking (None: the response had none); see :data:`COLUMN_NOTES`."""
    thinking_chars: int | None = None
    """Characters of thinking received (None: the response had none)."""
    prompt_cached: int | None = None
    """Of ``prompt_tokens``, those reused from the KV cache (nbllm's ``prompt_cached_count``; None: not said)."""
    measured: str = "server"
    """Where the durations were measured: ``"server"`` or ``"client arrival"`` (see :data:`COLUMN_NOTES`)."""
    time: datetime = field(default_factory=lambda: datetime.now(timezone.utc))

    @classmethod
    def from_metrics(
        cls, model: str, final: Metrics | None, *, ttft_s: float | None, wall_s: float, **extra: Any
    ) -> TimingRecord:
        """A record from a response's final chunk (None when the stream ended early)."""
        m = final or Metrics()
        return cls(
            model=model,
            prompt_tokens=m.prompt_eval_count,
            prompt_cached=m.prompt_cached_count,
            prompt_tok_s=_rate(m.prompt_eval_count, m.prompt_eval_duration),
            eval_tokens=m.eval_count,
            eval_tok_s=_rate(m.eval_count, m.eval_duration),
            load_s=_seconds(m.load_duration),
            ttft_s=ttft_s if ttft_s is not None else math.nan,
            total_s=_seconds(m.total_duration),
            prompt_eval_s=_seconds(m.prompt_eval_duration),
            eval_s=_seconds(m.eval_duration),
            wall_s=wall_s,
            done_reason=getattr(final, "done_reason", None),
            measured=getattr(final, "measured", "server"),
            **extra,
        )

    def summary(self) -> str:
        """``48 tokens · 95.1 tok/s · first token 0.12 s · total 0.61 s`` (``48 tokens (30 thinking)``)."""
        parts = []
        if self.eval_tokens is not None:
            thinking = f" ({self.thinking_chunks} thinking)" if self.thinking_chunks else ""
            parts.append(f"{self.eval_tokens} tokens{thinking}")
        if not math.isnan(self.eval_tok_s):
            parts.append(f"{self.eval_tok_s:.1f} tok/s")
        if not math.isnan(self.ttft_s):
            parts.append(f"first token {self.ttft_s:.2f} s")
        parts.append(f"total {self.total_s if not math.isnan(self.total_s) else self.wall_s:.2f} s")
        if self.interrupted:
            parts.append("interrupted")
        return " · ".join(parts)

    def metadata(self) -> dict[str, Any]:
        """JSON-safe values for output metadata (NaN becomes null)."""
        out: dict[str, Any] = {}
        for key, value in asdict(self).items():
            if isinstance(value, float) and math.isnan(value):
                value = None
            elif isinstance(value, datetime):
                value = value.isoformat()
            out[key] = value
        return out


class TimingLog:
    """Every response's stats in this session (appended from the cell thread, read from anywhere)."""

    def __init__(self) -> None:
        self._records: list[TimingRecord] = []
        self._lock = threading.Lock()

    def add(self, record: TimingRecord) -> None:
        """Keep a record."""
        with self._lock:
            self._records.append(record)

    def records(self) -> list[TimingRecord]:
        """A snapshot of the records."""
        with self._lock:
            return list(self._records)

    def clear(self) -> None:
        """Forget every record."""
        with self._lock:
            self._records.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._records)

    def frame(self) -> pd.DataFrame:
        """The records as a :func:`timing_frame`."""
        return timing_frame(self.records())


def timing_frame(records: Iterable[TimingRecord]) -> pd.DataFrame:
    """A DataFrame of timing records whose ``.plot()`` draws the per-model comparison.

    Token counts are integers (pandas' nullable ``Int64``); the frame keeps every figure at full
    precision and only its display rounds them (:data:`DISPLAY_DECIMALS`).
    """
    import pandas as pd

    frame_cls = _frame_class()
    data = [asdict(r) for r in records]
    counts = ("prompt_tokens", "prompt_cached", "eval_tokens", "thinking_chunks", "thinking_chars")
    frame = frame_cls(pd.DataFrame(data, columns=COLUMNS).astype(dict.fromkeys(counts, "Int64")))
    frame.attrs["notes"] = dict(COLUMN_NOTES)
    return frame


def _rounded(frame: pd.DataFrame) -> pd.DataFrame:
    """A plain copy of ``frame`` rounded for display: rates to 0.1, seconds to 1 ms, times to the second."""
    import pandas as pd

    shown = pd.DataFrame(frame).round({k: v for k, v in DISPLAY_DECIMALS.items() if k in frame.columns})
    if "time" in shown.columns and isinstance(shown["time"].dtype, pd.DatetimeTZDtype):
        shown["time"] = shown["time"].dt.floor("s")
    return shown


@functools.cache
def _frame_class() -> type[pd.DataFrame]:
    """The DataFrame subclass, defined on first use so that pandas is imported only when needed."""
    import pandas as pd

    class TimingFrame(pd.DataFrame):
        """Timing stats; ``.plot()`` compares models, ``.plot.<kind>()`` is pandas' own plotting."""

        @property
        def _constructor(self) -> Callable[..., TimingFrame]:
            return TimingFrame

        @property
        def plot(self) -> _PlotAccessor:
            return _PlotAccessor(self)

        def __repr__(self) -> str:
            return repr(_rounded(self))

        def _repr_html_(self) -> str | None:
            html: str | None = _rounded(self)._repr_html_()
            return html if html is None else html + _notes_html(self)

    return TimingFrame


def _notes_html(frame: pd.DataFrame) -> str:
    """The column notes, under a frame that has thinking or client-measured durations (else nothing)."""
    import html

    thinking = "thinking_chunks" in frame.columns and frame["thinking_chunks"].notna().any()
    client_timed = "measured" in frame.columns and (frame["measured"] != "server").any()
    if not (thinking or client_timed):
        return ""
    notes: dict[str, str] = frame.attrs.get("notes", COLUMN_NOTES)
    items = "".join(f"<li><code>{k}</code>: {html.escape(v)}</li>" for k, v in notes.items() if k in frame.columns)
    return f"<ul style='font-size: smaller'>{items}</ul>"


class _PlotAccessor:
    """Calling it draws nbllm's comparison; attributes are pandas' plot accessor (``.bar``, ``.scatter``)."""

    def __init__(self, frame: pd.DataFrame) -> None:
        self._frame = frame

    def __call__(self, *, title: str | None = None) -> ComparisonPlot:
        from nbllm.notebook.plots import comparison_plot

        return comparison_plot(self._frame, title=title)

    def __getattr__(self, name: str) -> Any:
        import pandas as pd

        return getattr(pd.DataFrame(self._frame).plot, name)
