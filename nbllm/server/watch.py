"""Watching for a client that leaves while its request is worked on, without a task for the work.

An ASGI server tells the app that the client disconnected through ``receive`` (``http.disconnect``). The
request's work (waiting for the first token, streaming the body) runs in the request's own task; a small
task waits for the disconnect and cancels it. Starlette's ``StreamingResponse`` and ``asyncio.wait`` would
each put the work in a task of its own instead: the event loop then needs two more turns between the
work's end and what follows it (for a stream: between the first token and its first write).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable
from typing import TypeVar

from starlette.types import Receive

__all__ = ["gone", "unless_gone"]

T = TypeVar("T")


async def gone(receive: Receive) -> None:
    """Returns once the client has gone (the body is read by then: ``http.disconnect`` is what is left)."""
    while (await receive())["type"] != "http.disconnect":
        pass


async def unless_gone(receive: Receive, work: Awaitable[T]) -> tuple[bool, T | None]:
    """``(True, work's result)``, awaited in this very task; ``(False, None)`` if the client disconnects first.

    A watcher task waits for the disconnect and then cancels this task, which ``work`` sees at its next
    await. Running ``work`` here rather than in a task of its own (``asyncio.wait`` on both) saves the event
    loop two turns between ``work``'s end and the caller's going on: on the way from the first token to
    the response, and once more for every streamed response (Starlette's task group for the body).
    """
    me = asyncio.current_task()
    assert me is not None
    running, left = True, False

    async def watch() -> None:
        nonlocal left
        with contextlib.suppress(Exception):  # a receive that fails means the client is gone too
            await gone(receive)
        if running:  # (on this loop: nothing runs between ``work``'s end and ``running = False``)
            left = True
            me.cancel()

    watcher = asyncio.ensure_future(watch())
    try:
        return True, await work
    except asyncio.CancelledError:
        if not left:  # somebody else's cancellation (the server shutting down)
            raise
        uncancel = getattr(me, "uncancel", None)  # (Python >= 3.11 counts cancellations; this one is handled)
        if uncancel is not None and uncancel() > 0:  # somebody else cancelled it too: theirs goes on
            raise
        return False, None
    finally:
        running = False
        watcher.cancel()
