"""Streaming a use case's chunks to the client: NDJSON (Ollama's routes) or server-sent events (``/v1``).

Each stream's use case starts in a thread of its own (it may load a model, pull, read files). A
generation's tokens then go from the decode thread to the event loop directly (see ``server.feed``): one
thread wakeup per token, and once the response has started that wake-up writes the token's line itself.
Whatever piled up while the loop was busy goes out in one write.

A generation's response starts once its request is with the engine (the use case has resolved the model,
checked the options and tokenized the prompt), before the prompt is evaluated, as llama-server does: the
client has the status and headers while the prompt runs, and the decode thread can write the first token's
line itself. Errors found up to there (unknown model, bad options, a prompt too long) get their real status
code; a failure later (the engine's own, which Ollama would answer 500) becomes a final error line, as
after the first token. Other streams (pull, push, create) start with their first chunk. A response that
is not streamed (``collected_response``) is gathered on the event loop the same way, so a request
waiting for a slot or generating holds no thread. Whenever the client goes away -- waiting for the
model, for a slot, during the prompt or the answer, streamed or not -- the request's cancel flag is
set, and the scheduler or the engine lets it go within one decode step.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TypeVar, cast

from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from nbllm.engine import Pending
from nbllm.errors import Cancelled
from nbllm.server.connections import SYNC_WRITE
from nbllm.server.errors import error_line, error_response
from nbllm.server.feed import DONE, Failed, Feed
from nbllm.server.watch import unless_gone

__all__ = ["ClientLeft", "Feed", "FeedResponse", "collected_response", "ndjson_response", "single_response", "watched"]

log = logging.getLogger(__name__)

T = TypeVar("T")

RAW_SEND = "nbllm.send"
"""The scope's key for the server's own ``send`` (``app._App``): a streamed body's chunks skip the middlewares."""


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
        await unless_gone(receive, self.stream_response(send, scope.get(RAW_SEND, send), scope.get(SYNC_WRITE)))

    async def stream_response(
        self, send: Send, body_send: Send | None = None, write: Callable[[bytes], bool] | None = None
    ) -> None:
        """Send the items as they come; the feed is closed however this ends (the client left, or done).
        The chunks in between go to ``body_send`` (the server's own ``send``, past the middlewares' wrappers,
        which look only at the start and the end). With ``write`` (``connections.SYNC_WRITE``), once the
        first chunk is out the feed's wake-ups write the tokens' lines themselves (``Feed.attach``)."""
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        chunk = body_send or send
        feed, render, items = self._feed, self._render, self._items
        done = False
        try:
            while not done:
                out: list[str] = []
                for item in items:
                    if item is DONE or isinstance(item, Failed):
                        out.append(self._last(item))
                        done = True
                        break
                    out.append(render(item))
                body = "".join(out).encode()
                if body:
                    await chunk({"type": "http.response.body", "body": body, "more_body": True})
                if not done:
                    if write is not None:
                        sinks = write if hasattr(write, "sink") else None  # (``connections.ChunkWriter``)
                        feed.attach(self._lines_to(write), sinks, render)  # type: ignore[arg-type]
                        write = None
                    items = await feed.take()
        finally:
            feed.close()  # free the engine slot
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    def _lines_to(self, write: Callable[[bytes], bool]) -> Callable[[list[object]], bool]:
        """What writes items in passing (``Feed.attach``): False, having written nothing, for the last item
        (its line is this task's: ``_last``) or when ``write`` cannot take the chunk now."""
        render = self._render

        def lines(items: list[object]) -> bool:
            out = []
            for item in items:
                if item is DONE or isinstance(item, Failed):
                    return False
                out.append(render(item))
            body = "".join(out).encode()
            return not body or write(body)

        return lines

    def _last(self, item: object) -> str:
        if isinstance(item, Failed):
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
    """Run ``make(cancel)`` and stream its chunks as ``application/x-ndjson``, from its first chunk or from its
    request's hand-over to the engine (``Feed.first``); with ``receive``, a client that leaves before then
    (waiting for the model, for the prompt's tokens) cancels the request."""
    feed = Feed(make)
    try:
        items = await watched(receive, feed, feed.first(submitted=True))
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
