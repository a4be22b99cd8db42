"""``nbllm serve`` with the decode thread's hand-off of each event timed, for ``bench.loop_ab --decode-side``.

A streamed token costs the event loop's thread (what ``bench.loop_ab`` and ``bench.pertoken`` measure) and
the decode thread, which hands it over (``Request.post``: queueing it and waking the loop, or, where the feed
takes plain tokens directly, making its line). The decode thread is one of llama.cpp's compute threads, which
``bench.pertoken`` leaves out of serving CPU; this times ``post`` there (thread CPU, ``CLOCK_THREAD_CPUTIME_ID``)
and writes the running total and count to the file named by ``BENCH_POST_COST`` before each request's last
event, so a change that moves work from the loop to the decode thread is measured on both sides.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from nbllm.engine.base import FinalStats
from nbllm.engine.llama.request import Request


def main() -> None:
    """Patch ``Request.post``, then run nbllm's CLI."""
    install(Path(os.environ["BENCH_POST_COST"]))
    from nbllm.cli import main as cli_main

    cli_main()


def install(out: Path) -> None:
    """Time every ``Request.post`` from now on, writing the totals to ``out`` before each request's last event."""
    post, clock = Request.post, time.thread_time_ns
    total = [0, 0]

    def timed(self: Request, event: Any) -> None:
        if event.__class__ is FinalStats:  # (before it is posted: once the client sees the end, the bench reads)
            part = out.with_suffix(".part")
            part.write_text(f"{total[0]} {total[1]}")
            part.replace(out)  # (whole, or not at all)
        start = clock()
        post(self, event)
        total[0] += clock() - start
        total[1] += 1

    Request.post = timed  # type: ignore[method-assign]


def read(path: Path) -> tuple[int, int]:
    """Nanoseconds in ``post`` and events posted so far (0, 0 before the first request ends)."""
    try:
        ns, count = path.read_text().split()
    except (OSError, ValueError):
        return 0, 0
    return int(ns), int(count)


if __name__ == "__main__":
    main()
