"""Threads for the streams' blocking steps, kept for reuse.

``Thread.start()`` waits until the new thread has run: on a machine whose cores are busy with llama.cpp's
compute threads that is 1-3 ms (measured: bench/results/2026-12-03-per-token.md), spent on the event loop,
for every stream's start (on the way to its first token) and again for its end. An idle worker takes the
next job at the cost of a queue put.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from typing import Any

__all__ = ["IDLE_NAME", "spawn"]

log = logging.getLogger(__name__)

IDLE_NAME = "nbllm-idle"
"""The name of a worker waiting for a job (a running one has its job's name)."""
_IDLE_MAX = 8
"""Workers kept waiting at most; one that finds the pool full ends."""

_lock = threading.Lock()
_idle: list[queue.SimpleQueue[tuple[str, Callable[..., Any], tuple[Any, ...]]]] = []


def spawn(name: str, fn: Callable[..., Any], *args: Any) -> None:
    """Run ``fn(*args)`` in a daemon thread named ``name``: an idle worker if there is one, else a new thread."""
    with _lock:
        inbox = _idle.pop() if _idle else None
    if inbox is None:
        inbox = queue.SimpleQueue()
        threading.Thread(target=_work, args=(inbox,), name=name, daemon=True).start()
    inbox.put((name, fn, args))


def _work(inbox: queue.SimpleQueue[tuple[str, Callable[..., Any], tuple[Any, ...]]]) -> None:
    me = threading.current_thread()
    while True:
        me.name, fn, args = inbox.get()
        try:
            fn(*args)
        except BaseException:  # a job handles its own errors; this only keeps the worker alive
            log.exception("a stream's job failed")
        me.name = IDLE_NAME
        with _lock:
            if len(_idle) >= _IDLE_MAX:
                return
            _idle.append(inbox)
