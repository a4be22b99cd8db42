"""Streaming a use case's chunks to the client: NDJSON (Ollama's routes) or server-sent events (``/v1``).

Each stream's use case starts in a thread of its own (it may load a model, pull, read files). A
generation's tokens then go from the decode thread to the event loop directly (see ``Feed``): one
thread wakeup per token, where a thread-pool round trip per chunk costs three, and on a machine with as
many cores as llama.cpp has threads every wakeup preempts the decode. Whatever piled up while the loop
was busy goes out in one write.

The first chunk is produced before the response starts, so errors found up front (unknown model,
bad options) get their real status code; a failure later becomes a final error line. A response that
is not streamed (``collected_response``) is gathered on the event loop the same way, so a request
waiting for a slot or generating holds no thread. Whenever the client goes away -- waiting for the
model, for a slot, during the prompt or the answer, streamed or not -- the request's cancel flag is
set, and the scheduler or the engine lets it go within one decode step.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import threading
from collections import deque
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from nbllm.engine import NoWait, Pending
from nbllm.errors import Cancelled
from nbllm.server.errors import error_line, error_response
from nbllm.server.watch import unless_gone
from nbllm.server.workers import spawn

__all__ = ["ClientLeft", "Feed", "FeedResponse", "collected_response", "ndjson_response", "single_response", "watched"]

log = logging.getLogger(__name__)

T = TypeVar("T")

_DONE = object()
RAW_SEND = "nbllm.send"
"""The scope's key for the server's own ``send`` (``app._App``): a streamed body's chunks skip the middlewares."""
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
    """The items of ``make(cancel)``, produced in a thread of their own and taken on the event loop.

    A generation's tokens skip that thread: ``make`` runs inside a ``NoWait`` block, and once its iterator
    says PENDING (it would wait for the decode loop) the event loop owns it. From then on ``take`` advances
    it in place, when the decode thread has woken the loop: per token one thread wakeup (the event loop's)
    and no hand-off between threads, as in a server written in C++. The generation's last step (its final
    stats or its error) and what the use case does after it (releasing the model, perhaps unloading it)
    run in a thread again, as does closing it.
    """

    def __init__(self, make: Callable[[threading.Event], Iterator[Any]]) -> None:
        self._loop = asyncio.get_running_loop()
        self._make = make
        self.cancel = threading.Event()
        """The request's cancel flag, handed to ``make``: set when the consumer closes the feed."""
        self._closed = False
        """Set by the consumer when it stops reading; ``cancel`` is the engine's flag (also set at a normal end)."""
        self._lock = threading.Lock()
        self._room = threading.Condition(self._lock)
        """The producer thread waits here while the backlog is full."""
        self._items: deque[object] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._context = contextvars.copy_context()
        self._handle = NoWait(self._wake)
        self._it: Iterator[Any] | None = None
        self._owned = False
        """The event loop owns the iterator (it said PENDING): ``take`` advances it."""
        self._woken = False
        """The decode thread has news since the loop last advanced the iterator."""
        spawn("nbllm-stream", self._produce)

    def _step(self, it: Iterator[Any]) -> Any:
        """The next item; inside the ``NoWait`` block until the generation's last step."""
        if self._handle.ending:
            return next(it)
        with self._handle:
            return next(it)

    # ── a thread: the start (model load, prompt), items of use cases that are not generations, the end ──
    def _produce(self) -> None:
        it = self._it
        try:
            if it is None:
                it = self._it = self._context.run(self._make, self.cancel)
            while True:
                if self._closed:  # the client left: stop here, the engine already frees the slot
                    return
                try:
                    item = self._context.run(self._step, it)
                except StopIteration:
                    self._put(_DONE)
                    return
                if isinstance(item, Pending):
                    if self._handle.ending:
                        continue  # the last step: take it here
                    if self._hand_to_loop():
                        it = None  # the loop owns it now
                        return
                    continue
                self._put(item)
        except BaseException as exc:  # the consumer renders or re-raises it
            self._put(_Failed(exc))
        finally:
            if it is not None:
                self._close(it)

    def _hand_to_loop(self) -> bool:
        with self._lock:
            if self._closed:
                return False
            self._owned = True
        with contextlib.suppress(RuntimeError):  # (the loop is gone: the server is shutting down)
            self._loop.call_soon_threadsafe(self._on_wake)  # the event may be in already
        return True

    def _close(self, it: Iterator[Any]) -> None:
        close = getattr(it, "close", None)
        if close is not None:  # a generator's cleanup runs in a thread, never on the event loop
            try:
                self._context.run(close)
            except Exception:
                log.exception("closing a stream failed")

    def _put(self, item: object) -> None:
        with self._lock:
            while len(self._items) >= _BACKLOG and not self._closed:
                self._room.wait()
            self._items.append(item)
            waiter, self._waiter = self._waiter, None  # (one wake-up for whatever comes before it is taken)
        if waiter is not None:
            with contextlib.suppress(RuntimeError):  # the loop is gone (server shutting down)
                self._loop.call_soon_threadsafe(_wake, waiter)

    # ── the decode thread ───────────────────────────────────────────────────────────────────────
    def _wake(self) -> None:
        try:  # noqa: SIM105  (not contextlib.suppress: this runs for every token, between two decodes)
            self._loop.call_soon_threadsafe(self._on_wake)
        except RuntimeError:  # the loop is gone (server shutting down)
            pass

    # ── the event loop ──────────────────────────────────────────────────────────────────────────
    def _on_wake(self) -> None:
        self._woken = True
        waiter, self._waiter = self._waiter, None
        if waiter is not None:
            _wake(waiter)

    def _advance(self) -> list[object]:
        """What the iterator has ready, up to the backlog (it never blocks here: it says PENDING instead).

        Clears ``_owned`` when the stream ends, or when its last step is due (``take`` hands that to a thread).
        """
        it = self._it
        assert it is not None
        out: list[object] = []
        with self._handle:
            while len(out) < _BACKLOG:
                try:
                    item = next(it)
                except StopIteration:
                    item = _DONE
                except BaseException as exc:
                    item = _Failed(exc)
                if isinstance(item, Pending):
                    if self._handle.ending:
                        self._owned = False
                    return out
                out.append(item)
                if item is _DONE or isinstance(item, _Failed):
                    self._owned = False
                    return out
                if self._handle.armed:  # (its next step would say PENDING: the wake-up is armed)
                    return out
        self._woken = True  # the backlog's worth: more may be ready
        return out

    async def take(self) -> list[object]:
        """Everything ready since the last call; waits for at least one item."""
        while True:
            with self._lock:
                if self._items:
                    items = list(self._items)
                    self._items.clear()
                    self._room.notify()
                    return items
            if self._owned and self._woken and not self._closed:
                self._woken = False
                items = self._context.run(self._advance)
                if self._handle.ending and not self._owned:  # the last step and what follows it: in a thread
                    spawn("nbllm-stream", self._produce)
                if items:
                    return items
                continue  # (the wake-up found nothing new, or a thread has the last step)
            with self._lock:
                if self._items:
                    continue
                waiter = self._waiter = self._loop.create_future()
            try:
                await waiter
            finally:
                self._waiter = None

    def close(self) -> None:
        """Stop the stream: cancel the request, let the thread past any wait for room, close the iterator."""
        with self._lock:
            self._closed = True
            owned, self._owned = self._owned, False
            self._room.notify_all()
        self.cancel.set()
        it = self._it
        if owned and it is not None:
            spawn("nbllm-stream-close", self._close, it)

    async def drain(self, keep: int | None = None) -> list[object]:
        """Every item to the end (the last ``keep`` only, with ``keep``); raises the use case's error."""
        out: deque[object] = deque(maxlen=keep)
        try:
            while True:
                for item in await self.take():
                    if item is _DONE:
                        return list(out)
                    if isinstance(item, _Failed):
                        raise item.exc
                    out.append(item)
        finally:
            self.close()

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


class FeedResponse(StreamingResponse):
    """A feed as the response body: ``items``, then each ``take``'s, rendered and sent in one write each.

    Starlette's StreamingResponse (its disconnect handling is kept) with the body loop written out:
    no async generator between the feed and ``send``, a frame less for every token. ``end`` follows the
    last item, unless the use case failed: then its rendered error is the last line.
    """

    def __init__(
        self,
        feed: Feed,
        items: list[object],
        render: Callable[[Any], str],
        fail: Callable[[BaseException], str],
        *,
        end: str = "",
        media_type: str,
    ) -> None:
        self._feed, self._items, self._render, self._fail, self._end = feed, items, render, fail, end
        self.status_code = 200
        self.media_type = media_type
        self.background = None
        self.init_headers(None)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Stream the body in this task until done or until the client leaves (Starlette's own ``__call__``
        would run it in a task group, a task of its own beside the disconnect listener)."""
        await unless_gone(receive, self.stream_response(send, scope.get(RAW_SEND, send)))

    async def stream_response(self, send: Send, body_send: Send | None = None) -> None:
        """Send the items as they come; the feed is closed however this ends (the client left, or done).
        The chunks in between go to ``body_send`` (the server's own ``send``, past the middlewares' wrappers,
        which look only at the start and the end)."""
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        chunk = body_send or send
        feed, render, items = self._feed, self._render, self._items
        done = False
        try:
            while not done:
                out: list[str] = []
                for item in items:
                    if item is _DONE or isinstance(item, _Failed):
                        out.append(self._last(item))
                        done = True
                        break
                    out.append(render(item))
                body = "".join(out).encode()
                if body:
                    await chunk({"type": "http.response.body", "body": body, "more_body": True})
                if not done:
                    items = await feed.take()
        finally:
            feed.close()  # free the engine slot
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    def _last(self, item: object) -> str:
        if isinstance(item, _Failed):
            if not isinstance(item.exc, Exception):
                raise item.exc
            return self._fail(item.exc)
        return self._end


def _dump(chunk: BaseModel | str) -> str:  # (a use case may yield a plain chunk as its line: service.generate)
    return chunk if isinstance(chunk, str) else chunk.model_dump_json(exclude_none=True, by_alias=True) + "\n"


class ClientLeft(Exception):
    """The client disconnected before its answer was ready (its request was cancelled)."""


async def watched(receive: Receive | None, feed: Feed, work: Coroutine[Any, Any, T]) -> T:
    """``work``'s result; if the client disconnects first, the feed is closed (its request cancelled,
    wherever it is) and ClientLeft raised. Once a streamed response starts, ``FeedResponse`` watches instead."""
    if receive is None:
        return await work
    try:
        done, result = await unless_gone(receive, work)
    except BaseException:  # (also when this coroutine is cancelled: the server shutting down)
        feed.close()
        raise
    if not done:
        feed.close()
        raise ClientLeft
    return cast("T", result)  # (done: work's own result)


def _left() -> Response:
    """What a request whose client left gets (Ollama's 499; nobody reads it, the access log does)."""
    return error_response(Cancelled("request canceled"))


async def ndjson_response(
    make: Callable[[threading.Event], Iterator[BaseModel | str | Pending]], receive: Receive | None = None
) -> Response:
    """Run ``make(cancel)`` and stream its chunks as ``application/x-ndjson``; with ``receive``, a client
    that leaves before the first chunk (waiting for the model, a slot, the prompt) cancels the request."""
    feed = Feed(make)
    try:
        items = await watched(receive, feed, feed.first())
    except ClientLeft:
        return _left()
    except Exception as exc:
        return error_response(exc)
    return FeedResponse(feed, items, _dump, error_line, media_type="application/x-ndjson")


async def collected_response(
    make: Callable[[threading.Event], Iterator[BaseModel | Pending]],
    reduce: Callable[[Iterator[Any]], BaseModel],
    receive: Receive | None,
    *,
    keep: int | None = None,
) -> Response:
    """The JSON of ``reduce`` over all of ``make(cancel)``'s chunks (``keep``: only the last ones), gathered
    on the event loop; a client that leaves meanwhile cancels the request at once."""
    feed = Feed(make)
    try:
        items = await watched(receive, feed, feed.drain(keep))
        result = reduce(iter(items))
    except ClientLeft:
        return _left()
    except Exception as exc:
        return error_response(exc)
    return Response(_dump(result).rstrip("\n"), media_type="application/json")


async def single_response(make: Callable[[], BaseModel | None]) -> Response:
    """Run a blocking use case in a worker thread and answer with its JSON (``{}``-less 200 for None)."""
    try:
        result = await run_in_threadpool(make)
    except Exception as exc:
        return error_response(exc)
    if result is None:
        return Response(status_code=200)
    return Response(_dump(result).rstrip("\n"), media_type="application/json")
