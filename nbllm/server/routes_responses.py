"""``POST /v1/responses``: OpenAI's Responses API over the chat use case (stateless, as Ollama's).

A streamed answer is server-sent events, each ``event: <type>`` and ``data: {...}``; a failure after
the stream started is a last ``response.failed`` event. The translation lives in ``service.responses``
(the request) and ``service.response_output`` (the answer).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import JSONResponse, Response

from nbllm import service
from nbllm.engine import Pending
from nbllm.errors import Cancelled
from nbllm.runtime import Runtime
from nbllm.schema.responses import ResponsesRequest
from nbllm.server.errors import openai_error_body, openai_error_response
from nbllm.server.streaming import ClientLeft, Feed, FeedResponse, watched
from nbllm.service import response_output
from nbllm.service.responses import chat_request

__all__ = ["router"]

router = APIRouter(prefix="/v1")


def _render(event: dict[str, Any] | str) -> str:  # (a plain delta comes as its events: ResponseEvents.line)
    return event if isinstance(event, str) else response_output.sse(event)


@router.post("/responses", summary="OpenAI responses")
async def responses(req: ResponsesRequest, request: Request) -> Response:
    """A model response in OpenAI's Responses shapes; ``previous_response_id`` and stored state are refused."""
    rt: Runtime = request.app.state.runtime
    try:
        chat_req = chat_request(req)
    except Exception as exc:
        return openai_error_response(exc)
    stream = response_output.ResponseEvents(req) if req.stream else None

    def make(cancel: threading.Event) -> Iterator[dict[str, Any] | str | Pending]:
        if stream is None:
            return response_output.response(service.chat(rt, chat_req, cancel=cancel), req)
        return stream.events(service.chat(rt, chat_req, cancel=cancel, lines=stream))

    feed = Feed(make)
    try:
        items = await watched(request.receive, feed, feed.first(submitted=stream is not None))
    except ClientLeft:
        return openai_error_response(Cancelled("request canceled"))
    except Exception as exc:
        return openai_error_response(exc)
    if stream is None:
        feed.close()
        return JSONResponse(items[0])

    def fail(exc: BaseException) -> str:
        error: Any = openai_error_body(exc)["error"]
        return response_output.sse(stream.failed(error))

    return FeedResponse(feed, items, _render, fail, media_type="text/event-stream")
