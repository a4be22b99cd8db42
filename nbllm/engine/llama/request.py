"""A request to the decode loop, and the hand-off of its events to whoever consumes them.

The decode thread posts each event (a token, the final stats, an error) into the request's queue and calls
the consumer's wake-up, if one is armed. A consumer that may block (a thread, the notebook) waits on the
queue; one that may not (the event loop, inside a ``NoWait`` block) is told PENDING instead and is woken.
``docs/streaming.md`` has the protocol and its flags.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from nbllm.engine.base import (
    PENDING,
    FinalStats,
    GenerationEvent,
    NoWait,
    Pending,
    SamplingParams,
    TokenChunk,
    no_wait_handle,
)

__all__ = ["Request"]

log = logging.getLogger("nbllm.engine.llama")


@dataclass(eq=False)
class Request:
    """A generation request travelling to the decode thread and its events travelling back."""

    prompt: list[int]
    params: SamplingParams
    cancel: threading.Event
    out: queue.SimpleQueue[GenerationEvent | BaseException] = field(default_factory=queue.SimpleQueue)
    direct_pays: bool = False
    """``TokenSource.direct_pays``: the engine's compute threads take every CPU."""
    wake: Callable[[], None] | None = None
    """A ``NoWait`` consumer's wake-up, called by the decode thread with the next event (then cleared)."""
    direct: Callable[[str], bool] | None = None
    """A ``NoWait`` consumer's own delivery of a plain token's text (``TokenSource.direct``), tried by the decode
    thread before queueing the token when nothing is queued before it."""
    _held: GenerationEvent | BaseException | None = None
    """The last event, held back while a ``NoWait`` consumer moves to where it may block."""
    _back: GenerationEvent | BaseException | None = None
    """The event ``ready`` took from the queue and did not give: the iterator's next step takes it first."""

    def post(self, event: GenerationEvent | BaseException) -> None:
        """Hand the consumer an event (decode thread)."""
        direct = self.direct
        if direct is not None and event.__class__ is TokenChunk and self.out.empty():
            try:
                if direct(event.text):
                    return  # (delivered; only this thread puts, so nothing queued is overtaken)
            except Exception:  # a consumer's delivery never fails the decode loop: the token queues
                self.direct = None
                log.exception("delivering a token failed")
        self.out.put(event)
        wake = self.wake
        if wake is not None:
            self.wake = None
            try:
                wake()
            except Exception:  # a consumer's wake-up never fails the decode loop
                log.exception("waking a stream failed")

    def events(self) -> Iterator[GenerationEvent | Pending]:
        """The request's events until its FinalStats; leaving early cancels it."""
        try:
            while True:
                event = self._next()
                if event is PENDING:
                    yield PENDING
                    continue
                if isinstance(event, BaseException):
                    raise event
                assert not isinstance(event, Pending)
                yield event
                if isinstance(event, FinalStats):
                    return
        finally:
            self.cancel.set()

    def ready(self, handle: NoWait, limit: int) -> tuple[list[str], bool]:
        """The texts of the plain tokens in the queue (``TokenSource``: a ``NoWait`` consumer's way past the
        layers above); a wake-up armed when it is empty, as ``_next`` arms it."""
        texts: list[str] = []
        out = self.out
        while True:
            while not out.empty():  # (the one consumer: not empty stays so until it takes)
                event = out.get_nowait()
                if event.__class__ is not TokenChunk:
                    self._back = event  # (the final stats or an error: the iterator's to take, as ever)
                    return texts, True
                texts.append(event.text)
                if len(texts) >= limit:
                    return texts, False  # (more may be ready; no wake-up armed)
            self.wake = handle.wake
            if out.empty():  # else an event came in before the decode thread could see the wake-up
                return texts, False
            self.wake = None

    def _next(self) -> GenerationEvent | BaseException | Pending:
        held, self._held = self._held, None
        if held is not None:
            return held
        handle = no_wait_handle()
        event = self._back
        if event is not None:
            self._back = None
        elif handle is None:
            return self.out.get()
        else:
            if self.out.empty():  # (the one consumer: not empty stays so until it takes)
                self.wake = handle.wake
                if self.out.empty():  # else an event came in before the decode thread could see the wake-up
                    return PENDING
                self.wake = None  # (if it saw it anyway, the consumer gets a wake-up it does not need)
            event = self.out.get_nowait()
        if handle is None:
            return event
        if isinstance(event, FinalStats | BaseException):
            if not handle.ending:
                handle.ending = True  # the last step: the consumer takes it where it may block
                self._held = event
                return PENDING
        elif self.out.empty():  # nothing else yet: arm the wake-up now (the consumer may stop after this)
            self.wake = handle.wake
            if self.out.empty():
                handle.armed = True
            else:
                self.wake = None
        return event
