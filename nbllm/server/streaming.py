"""Streaming a use case's chunks to the client: NDJSON (Ollama's routes) or server-sent events (``/v1``).

Each stream's use case runs in a thread of its own that hands chunks to the event loop, waking it
only when it waits for one; whatever piled up meanwhile goes out in one write. Per token that is one
wakeup of the stream's thread (the decode loop's hand-off) and at most one of the event loop: a
thread-pool round trip per chunk costs three, and on a machine with as many cores as llama.cpp has
threads every wakeup preempts the decode.

The first chunk is produced before the response starts, so errors found up front (unknown model,
bad options) get their real status code; a failure later becomes a final error line. When the client
goes away, the request's cancel flag is set and the engine frees its slot within one decode step.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import threading
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response, StreamingResponse

from nbllm.server.errors import error_line, error_response

__all__ = ["Feed", "ndjson_response", "single_response", "stream_lines"]

log = logging.getLogger(__name__)

_DONE = object()
_BACKLOG = 256
"""Chunks a stream's thread may run ahead of a slow client before it waits (and the decode of that
request with it): the client's back-pressure reaches the engine, the memory a stream holds is bounded."""


@dataclass(frozen=True)
class _Failed:
    exc: BaseException


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class Feed:
    """The items of ``make(cancel)``, produced in a thread of their own and taken on the event loop."""

    def __init__(self, make: Callable[[threading.Event], Iterator[Any]]) -> None:
        self._loop = asyncio.get_running_loop()
        self._make = make
        self.cancel = threading.Event()
        """The request's cancel flag, handed to ``make``: set when the consumer closes the feed."""
        self._closed = False
        """Set by the consumer when it stops reading; ``cancel`` is the engine's flag (also set at a normal end)."""
        self._lock = threading.Lock()
        self._items: deque[object] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._space = threading.Semaphore(_BACKLOG)
        context = contextvars.copy_context()
        thread = threading.Thread(target=context.run, args=(self._produce,), name="nbllm-stream", daemon=True)
        thread.start()

    # ── the stream's thread ─────────────────────────────────────────────────────────────────
    def _produce(self) -> None:
        it: Iterator[Any] | None = None
        try:
            it = self._make(self.cancel)
            for item in it:
                if self._closed:  # the client left: stop here, the engine already frees the slot
                    return
                self._put(item)
            self._put(_DONE)
        except BaseException as exc:  # the consumer renders or re-raises it
            self._put(_Failed(exc))
        finally:
            close = getattr(it, "close", None)
            if close is not None:  # a generator's cleanup runs in the thread that ran it
                try:
                    close()
                except Exception:
                    log.exception("closing a stream failed")

    def _put(self, item: object) -> None:
        self._space.acquire()
        with self._lock:
            self._items.append(item)
            waiter, self._waiter = self._waiter, None
        if waiter is not None:
            with contextlib.suppress(RuntimeError):  # the loop is gone (server shutting down)
                self._loop.call_soon_threadsafe(_wake, waiter)

    # ── the event loop ──────────────────────────────────────────────────────────────────────
    async def take(self) -> list[object]:
        """Everything produced since the last call; waits for at least one item."""
        while True:
            with self._lock:
                if self._items:
                    items = list(self._items)
                    self._items.clear()
                    self._space.release(len(items))
                    return items
                waiter = self._waiter = self._loop.create_future()
            await waiter

    def close(self) -> None:
        """Stop the stream: cancel the request and let the thread past any wait for space."""
        self._closed = True
        self.cancel.set()
        self._space.release(_BACKLOG)

    async def first(self) -> list[object]:
        """The first items (at least one); raises the use case's error if it failed before its first chunk."""
        try:
            items = await self.take()
        except BaseException:
            self.close()
            raise
        if isinstance(items[0], _Failed):
            self.close()
            raise items[0].exc
        return items


def stream_lines(
    feed: Feed, items: list[object], render: Callable[[Any], str], fail: Callable[[BaseException], str], end: str = ""
) -> AsyncIterator[str]:
    """The response body: ``items`` then the feed's, rendered; several at once become one write."""

    async def body() -> AsyncIterator[str]:
        pending = items
        try:
            while True:
                out: list[str] = []
                for item in pending:
                    if item is _DONE or isinstance(item, _Failed):
                        last = end
                        if isinstance(item, _Failed):
                            if not isinstance(item.exc, Exception):
                                raise item.exc
                            last = fail(item.exc)
                        text = "".join([*out, last])
                        if text:
                            yield text
                        return
                    out.append(render(item))
                yield "".join(out)
                pending = await feed.take()
        finally:
            feed.close()  # the client left, or we are done: free the engine slot either way

    return body()


def _dump(chunk: BaseModel) -> str:
    return chunk.model_dump_json(exclude_none=True, by_alias=True) + "\n"


async def ndjson_response(make: Callable[[threading.Event], Iterator[BaseModel]]) -> Response:
    """Run ``make(cancel)`` and stream its chunks as ``application/x-ndjson``."""
    feed = Feed(make)
    try:
        items = await feed.first()
    except Exception as exc:
        return error_response(exc)
    return StreamingResponse(stream_lines(feed, items, _dump, error_line), media_type="application/x-ndjson")


async def single_response(make: Callable[[], BaseModel | None]) -> Response:
    """Run a blocking use case in a worker thread and answer with its JSON (``{}``-less 200 for None)."""
    try:
        result = await run_in_threadpool(make)
    except Exception as exc:
        return error_response(exc)
    if result is None:
        return Response(status_code=200)
    return Response(_dump(result).rstrip("\n"), media_type="application/json")
