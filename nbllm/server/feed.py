"""A stream's items, from the use case's thread or the decode thread to the event loop (``Feed``).

A generation's tokens go from the decode thread to the event loop directly: one thread wakeup per token,
where a thread-pool round trip per chunk costs three, and on a machine with as many cores as llama.cpp has
threads every wakeup preempts the decode. Once the response has started, the wake-up writes the token's
line to the socket itself (``Feed.attach``); the response's task only wakes for what it must do itself
(the last line, a client that does not read). Where llama.cpp's threads take every CPU, the decode thread then
writes the lines itself and the loop is not woken per token at all (``Feed._arm``). ``docs/streaming.md`` has
the state machine and the numbers.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import threading
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from nbllm.engine import NoWait, Pending, TokenSource
from nbllm.server.workers import spawn

__all__ = ["DONE", "Failed", "Feed"]

log = logging.getLogger(__name__)

DONE = object()
"""The item after a stream's last one."""
BACKLOG = 256
"""Chunks a stream's thread may run ahead of a slow client before it waits (and the decode of that
request with it): the client's back-pressure reaches the engine, the memory a stream holds is bounded."""


@dataclass(frozen=True)
class Failed:
    exc: BaseException


class Sink(Protocol):
    """A response's chunks written by another thread straight to its connection (``connections.SocketSink``)."""

    def write(self, body: bytes) -> bytes:
        """Write one chunk without waiting; the framed bytes not taken. Raises ``OSError`` if the client is gone."""
        ...

    def close(self) -> None: ...


class Sinks(Protocol):
    """What ``attach`` may be given besides its line writer (``connections.ChunkWriter``): the connection's
    state, a ``Sink`` for another thread, and the event loop's write of what a sink did not take."""

    def idle(self) -> bool:
        """A chunk written now goes out at once, and the transport holds nothing before it."""
        ...

    def sink(self) -> Sink | None: ...

    def spill(self, data: bytes) -> None: ...


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class Feed:
    """The items of ``make(cancel)``, produced in a thread of their own and taken on the event loop.

    A generation's tokens skip that thread: ``make`` runs inside a ``NoWait`` block, and once its iterator
    says PENDING (it would wait for the decode loop) the event loop owns it. From then on ``take`` advances
    it in place, when the decode thread has woken the loop: per token one thread wakeup (the event loop's)
    and no hand-off between threads, as in a server written in C++. Once the response has started and
    handed it its writer (``attach``), that wake-up writes the new lines itself while the response's task waits in
    ``take``: a token costs no task step, no future and no trip through the response's coroutines; where the
    decode thread may write to the socket itself (``_arm``), its tokens do not wake the loop at all. A route may
    start its response as soon as the request is with the engine (``first(submitted=True)``), so that the first
    token goes out that way too. The generation's last step (its final stats or its error) and what the use
    case does after it (releasing the model, perhaps unloading it) run in a thread again, as does closing it.
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
        self._lines: Callable[[list[object]], bool] | None = None
        """The started response's writer (``attach``): a wake-up writes the new lines itself."""
        self._early: list[object] = []
        """Items a wake-up took but did not write: ``take`` returns them first."""
        self._sinks: Sinks | None = None
        """The started response's connection (``attach``), where the decode thread may write tokens itself."""
        self._sink: Sink | None = None
        """The decode thread's way to the socket (``Sinks.sink``), made when first armed, closed by ``close``."""
        self._sending = threading.Lock()
        """Held by whoever writes the stream's tokens to the socket: the decode thread (``_direct``), or the loop's
        wake-up while it takes and writes what was queued; and to arm, disarm and close the sink."""
        self._armed = False
        """The decode thread writes each plain token's line to the socket itself (``_arm``)."""
        self._spilling = False
        """A line the socket did not take whole is on its way to the loop (``_spill``): nothing is armed before."""
        self._gone = False
        """The socket said the client is gone: the decode thread writes no more (the loop ends the stream)."""
        self._line: Callable[[str], str] | None = None
        self._render: Callable[[Any], str] = str
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
                    self._put(DONE)
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
            self._put(Failed(exc))
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
            while len(self._items) >= BACKLOG and not self._closed:
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

    def _direct(self, text: str) -> bool:
        """``TokenSource.direct``: a plain token's line written to the socket here, while armed; False otherwise
        (it queues, and the loop writes it). No wake-up of the event loop, no step of the feed's on it."""
        if not self._armed:
            return False
        line = self._line
        try:
            body = self._render(line(text)).encode()  # type: ignore[misc]
        except Exception:  # (it queues: the loop makes its line again, and the stream fails as it would)
            return False
        with self._sending:
            sink = self._sink
            if not self._armed or sink is None:
                return False
            try:
                rest = sink.write(body)
            except OSError:  # the client is gone: the event loop finds out, and ends the stream
                self._armed = False
                self._gone = True
                return True
            if rest:  # the socket is full: the rest, and what follows, go through the event loop, in order
                self._armed = False
                self._spilling = True
                try:  # noqa: SIM105  (not contextlib.suppress: this runs between two decodes)
                    self._loop.call_soon_threadsafe(self._spill, rest)
                except RuntimeError:  # the loop is gone (server shutting down)
                    pass
        return True

    # ── the event loop ──────────────────────────────────────────────────────────────────────────
    def _on_wake(self) -> None:
        if self._lines is not None and self._waiter is not None and self._owned and not self._closed:
            # The response's task waits in ``take`` with nothing in flight: write from here, in order.
            with self._sending:  # (and the decode thread writes none meanwhile)
                self._woken = False
                try:
                    items = self._pull()
                except BaseException as exc:  # (never out of a loop callback: the response would wait for ever)
                    items = [Failed(exc)]
                try:
                    written = self._lines(items)
                except Exception:  # (a line that fails to render: the task renders it again, and fails as it would)
                    written = False
                if not written:
                    self._early += items
                elif not self._woken:
                    self._arm()
                    return  # all out; the thread taking a last step wakes the waiter when it puts its item
        self._wake_task()

    def _wake_task(self) -> None:
        """The response's task takes what comes next; tokens queue meanwhile."""
        self._disarm()
        self._woken = True
        waiter, self._waiter = self._waiter, None
        if waiter is not None:
            _wake(waiter)

    def _arm(self) -> None:
        """With ``_sending`` held, everything queued written and the task waiting in ``take`` (a wake-up has just
        written what it took, or the task is about to wait with nothing of the stream in flight: before the first
        token, once the response has started as its request reached the engine): the decode thread
        writes the plain tokens' lines to the socket itself from now on, where that pays (``TokenSource.direct_pays``),
        the use case's line writer may be called on it (``NoWait.line_anywhere``) and the connection holds
        nothing unsent."""
        handle, sinks = self._handle, self._sinks
        source = handle.source
        if (
            sinks is None
            or source is None
            or not source.direct_pays
            or handle.line is None
            or not handle.line_anywhere
            or handle.ending
            or self._spilling
            or self._gone
            or not sinks.idle()
        ):
            self._armed = False
            return
        if self._sink is None:
            self._sink = sinks.sink()
            if self._sink is None:
                self._sinks = None  # (no socket to write to: never again)
                return
        self._line = handle.line
        source.direct = self._direct
        self._armed = True

    def _disarm(self) -> None:
        if self._armed:
            with self._sending:  # (a write under way ends first)
                self._armed = False

    def _spill(self, rest: bytes) -> None:
        """What the socket did not take of a line the decode thread wrote: to the transport, before anything else."""
        self._spilling = False
        if self._sinks is not None and not self._closed:
            self._sinks.spill(rest)

    def _pull(self) -> list[object]:
        """What is ready: the plain tokens' lines straight from the engine's request where the use case allows
        (``_lane``), else (and from where they stop) ``_advance`` in the stream's context; a last step due goes to
        a thread."""
        handle = self._handle
        if handle.line is not None and handle.source is not None and not handle.ending:
            items, more = self._lane(handle.source, handle.line)
            if not more:
                return items
            items += self._context.run(self._advance)
        else:
            items = self._context.run(self._advance)
        if self._handle.ending and not self._owned:
            spawn("nbllm-stream", self._produce)
        return items

    def _lane(self, source: TokenSource, line: Callable[[str], str]) -> tuple[list[object], bool]:
        """The lines of the plain tokens ready, as the iterator's steps would give them, without its steps
        (``NoWait.line``): per token no generator resumed in each layer, no ``NoWait`` block, no context switch
        of ``contextvars``. True with them when the next event is the iterator's own to take (the last)."""
        texts, more = source.ready(self._handle, BACKLOG)
        if len(texts) >= BACKLOG:
            self._woken = True  # the backlog's worth: more may be ready
        return list(map(line, texts)), more

    def _advance(self) -> list[object]:
        """What the iterator has ready, up to the backlog (it never blocks here: it says PENDING instead).

        Clears ``_owned`` when the stream ends, or when its last step is due (``take`` hands that to a thread).
        """
        it = self._it
        assert it is not None
        out: list[object] = []
        with self._handle:
            while len(out) < BACKLOG:
                try:
                    item = next(it)
                except StopIteration:
                    item = DONE
                except BaseException as exc:
                    item = Failed(exc)
                if isinstance(item, Pending):
                    if self._handle.ending:
                        self._owned = False
                    return out
                out.append(item)
                if item is DONE or isinstance(item, Failed):
                    self._owned = False
                    return out
                if self._handle.armed:  # (its next step would say PENDING: the wake-up is armed)
                    return out
        self._woken = True  # the backlog's worth: more may be ready
        return out

    def attach(
        self,
        lines: Callable[[list[object]], bool],
        sinks: Sinks | None = None,
        render: Callable[[Any], str] = str,
    ) -> None:
        """From now on a wake-up that finds the consumer waiting in ``take`` hands the new items to ``lines``
        (on the event loop) instead of waking it: ``lines`` writes them and says True, or writes nothing and
        says False, and ``take`` returns them. The consumer must have nothing of the stream in flight
        whenever it waits in ``take``. With ``sinks`` (the connection ``lines`` writes to) and ``render`` (what
        ``lines`` makes of an item; called on the decode thread), the decode thread may write plain tokens'
        lines to the socket itself while the consumer waits (``_arm``)."""
        self._lines, self._sinks, self._render = lines, sinks, render

    async def take(self, *, submitted: bool = False) -> list[object]:
        """Everything ready since the last call; waits for at least one item. ``submitted``: or none, once the
        iterator is the event loop's and has nothing ready (its request is with the engine)."""
        while True:
            if self._early:
                items, self._early = self._early, []
                return items
            with self._lock:
                if self._items:
                    items = list(self._items)
                    self._items.clear()
                    self._room.notify()
                    return items
            if self._owned and self._woken and not self._closed:
                self._woken = False
                items = self._pull()
                if items or (submitted and self._owned):
                    return items
                continue  # (the wake-up found nothing new, or a thread has the last step)
            with self._lock:
                if self._items:
                    continue
                waiter = self._waiter = self._loop.create_future()
            if self._lines is not None and self._owned and not self._closed:
                with self._sending:  # (nothing of the stream in flight: the decode thread may write what comes next;
                    self._arm()  # a token already queued keeps the next ones queued behind it: ``Request.post``)
            try:
                await waiter
            finally:
                self._waiter = None
                self._disarm()  # (the task writes next: the decode thread must not)

    def close(self) -> None:
        """Stop the stream: cancel the request, let the thread past any wait for room, close the iterator."""
        self._lines = self._sinks = None
        with self._sending:  # (a write under way ends first; none starts after)
            self._armed = False
            sink, self._sink = self._sink, None
        if sink is not None:
            sink.close()
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
                    if item is DONE:
                        return list(out)
                    if isinstance(item, Failed):
                        raise item.exc
                    out.append(item)
        finally:
            self.close()

    async def first(self, *, submitted: bool = False) -> list[object]:
        """The first items (at least one; with ``submitted``, none once the request is with the engine); raises
        the use case's error if it failed before its first chunk."""
        try:
            items = await self.take(submitted=submitted)
        except BaseException:
            self.close()
            raise
        if items and isinstance(items[0], Failed):
            self.close()
            raise items[0].exc
        return items
