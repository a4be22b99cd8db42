"""Streaming a use case's chunks as NDJSON, Ollama's way.

The first chunk is produced before the response starts, so errors found up front (unknown model,
bad options) get their real status code; a failure later becomes a final ``{"error": ...}`` line.
When the client goes away, the request's cancel flag is set and the engine frees its slot.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import TypeVar

from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response, StreamingResponse

from nbllm.server.errors import error_line, error_response

__all__ = ["ndjson_response", "single_response"]

T = TypeVar("T", bound=BaseModel)
_DONE = object()


def _dump(chunk: BaseModel) -> str:
    return chunk.model_dump_json(exclude_none=True, by_alias=True) + "\n"


def _next(it: Iterator[T]) -> T | object:
    return next(it, _DONE)


async def ndjson_response(make: Callable[[threading.Event], Iterator[T]]) -> Response:
    """Run ``make(cancel)`` and stream its chunks as ``application/x-ndjson``."""
    cancel = threading.Event()
    try:
        it = await run_in_threadpool(make, cancel)
        first = await run_in_threadpool(_next, it)
    except Exception as exc:
        return error_response(exc)

    async def body() -> AsyncIterator[str]:
        chunk = first
        try:
            while chunk is not _DONE:
                yield _dump(chunk)  # type: ignore[arg-type]
                chunk = await run_in_threadpool(_next, it)
        except Exception as exc:
            yield error_line(exc)
        finally:
            cancel.set()  # the client left, or we are done: free the engine slot either way
            close = getattr(it, "close", None)
            if close is not None:
                await run_in_threadpool(close)

    return StreamingResponse(body(), media_type="application/x-ndjson")


async def single_response(make: Callable[[], BaseModel | None]) -> Response:
    """Run a blocking use case in a worker thread and answer with its JSON (``{}``-less 200 for None)."""
    try:
        result = await run_in_threadpool(make)
    except Exception as exc:
        return error_response(exc)
    if result is None:
        return Response(status_code=200)
    return Response(_dump(result).rstrip("\n"), media_type="application/json")
