"""Streams consumed on the cell's thread: workers read the backend, the cell thread shows what arrives.

Output from a worker thread lands in whichever cell runs *now* (ipykernel 7 removed the guessing,
ipykernel#1451), and a blocking read on the cell thread would delay the kernel's interrupt. So each
stream is read by a daemon worker that only puts items on a queue; the cell thread takes them off
with a short timeout, draws them, and is interruptible at every step. ``stop()`` asks the workers
to leave their streams, which cancels the request on the server (or in the engine).
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

__all__ = ["StreamEvent", "StreamPump"]

T = TypeVar("T")


@dataclass(frozen=True)
class StreamEvent(Generic[T]):
    """An item (or the end, or a failure) of stream ``source``, stamped when the worker received it."""

    source: int
    at: float
    item: T | None = None
    error: BaseException | None = None
    done: bool = False


class StreamPump(Generic[T]):
    """Read several streams at once in worker threads; iterate :meth:`events` on the cell thread."""

    def __init__(self, sources: Sequence[Callable[[], Iterable[T]]], *, name: str = "nbllm-stream") -> None:
        self._sources = list(sources)
        self._queue: queue.Queue[StreamEvent[T]] = queue.Queue()
        self._stop = threading.Event()
        self.started_at: list[float] = [0.0] * len(self._sources)
        self._threads = [
            threading.Thread(target=self._work, args=(i,), name=f"{name}-{i}", daemon=True)
            for i in range(len(self._sources))
        ]

    def _work(self, index: int) -> None:
        iterator: Iterator[T] | None = None
        self.started_at[index] = time.perf_counter()
        try:
            iterator = iter(self._sources[index]())
            for item in iterator:
                if self._stop.is_set():
                    break
                self._queue.put(StreamEvent(index, time.perf_counter(), item=item))
        except BaseException as exc:  # handed to the cell thread, which decides what to show
            self._queue.put(StreamEvent(index, time.perf_counter(), error=exc))
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                with contextlib.suppress(Exception):  # the stream is being abandoned; nothing to report to
                    close()  # leaving the stream early cancels the request (engine slot or HTTP connection)
            self._queue.put(StreamEvent(index, time.perf_counter(), done=True))

    def start(self) -> StreamPump[T]:
        """Start the workers."""
        for thread in self._threads:
            thread.start()
        return self

    def events(self, *, tick: float = 0.05) -> Iterator[StreamEvent[T] | None]:
        """Items as they arrive, ``None`` every ``tick`` seconds while waiting, until every stream ended."""
        remaining = len(self._threads)
        while remaining:
            try:
                event = self._queue.get(timeout=tick)
            except queue.Empty:
                yield None
                continue
            if event.done:
                remaining -= 1
            yield event

    def stop(self) -> None:
        """Ask the workers to leave their streams (they do at their next item); does not wait."""
        self._stop.set()

    @property
    def stopped(self) -> bool:
        """Whether :meth:`stop` was called."""
        return self._stop.is_set()

    def join(self, timeout: float = 5.0) -> bool:
        """Wait for the workers; True when all ended."""
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        return not any(t.is_alive() for t in self._threads)
