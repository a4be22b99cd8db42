"""What one benchmark request and one run recorded: raw client-side times, server counts, errors."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from nbllm.backends import ServerTimings
from nbllm.benchmark.spec import LoadPoint

__all__ = ["RequestRecord", "RunInfo"]

Status = Literal["pending", "running", "ok", "error", "cancelled", "unsent"]
"""``cancelled``: in flight when the benchmark was interrupted; ``unsent``: waiting for a slot then."""


@dataclass
class RequestRecord:
    """One request as it happened; times are ``time.perf_counter()`` seconds."""

    run: int
    index: int
    queued: float
    """When the load generator released it (before waiting for a concurrency slot)."""
    input_len: int | None = None
    """Intended prompt tokens (from the dataset); the server's count is ``input_tokens``."""
    status: Status = "pending"
    start: float = math.nan
    """When it was sent."""
    arrivals: list[float] = field(default_factory=list)
    """Arrival time of each streamed token chunk."""
    end: float = math.nan
    """Arrival of the stream's last event."""
    text: list[str] = field(default_factory=list)
    input_tokens: int | None = None
    output_tokens: int | None = None
    cached_tokens: int | None = None
    done_reason: str | None = None
    server: ServerTimings | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        """Finished with at least one token and no error."""
        return self.status == "ok"


@dataclass
class RunInfo:
    """One run: a target, a model, a load point and a repetition."""

    run: int
    target: str
    """The target's URL (``local``: this process's engine)."""
    backend: str
    model: str
    point: LoadPoint
    repetition: int
    endpoint: str
    num_prompts: int
    started: float = math.nan
    duration: float = math.nan
    interrupted: bool = False
    dataset_note: str = ""
    date: str = ""
    name: str = ""
    """The target's short name (legends, the frames' ``target``); the URL when empty."""
