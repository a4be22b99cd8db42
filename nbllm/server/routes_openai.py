"""OpenAI-compatible routes: ``/v1/chat/completions``, ``/v1/completions``, ``/v1/embeddings``, ``/v1/models``.

Streams are server-sent events (``data: {...}``, then ``data: [DONE]``); errors are OpenAI's error
objects. The translation lives in ``service.openai``; this module only moves bytes.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import JSONResponse, Response
from starlette.types import Receive

from nbllm import service
from nbllm.engine import Pending
from nbllm.errors import Cancelled
from nbllm.runtime import Runtime
from nbllm.schema.lines import ChatCompletionLines, CompletionLines, openai_id
from nbllm.schema.openai import OpenAIChatRequest, OpenAICompletionRequest, OpenAIEmbeddingRequest
from nbllm.server.errors import openai_error_body, openai_error_response
from nbllm.server.streaming import ClientLeft, Feed, FeedResponse, watched
from nbllm.service import openai

__all__ = ["router"]

router = APIRouter(prefix="/v1")


def _rt(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


async def _extra_options(request: Request) -> dict[str, Any] | None:
    """nbllm extension: Ollama ``options`` in the body (``extra_body`` in OpenAI's client)."""
    try:
        body = json.loads(await request.body() or b"{}")
    except ValueError:
        return None
    options = body.get("options") if isinstance(body, dict) else None
    return options if isinstance(options, dict) else None


async def _answer(
    make: Callable[[threading.Event], Iterator[dict[str, Any] | str | Pending]],
    *,
    stream: bool,
    receive: Receive | None,
) -> Response:
    """The first object (the whole answer unless streamed); a client that leaves before it cancels the request."""
    feed = Feed(make)
    try:
        items = await watched(receive, feed, feed.first(submitted=stream))  # (streamed: from the engine's hand-over)
    except ClientLeft:
        return openai_error_response(Cancelled("request canceled"))
    except Exception as exc:
        return openai_error_response(exc)
    if not stream:
        feed.close()
        return JSONResponse(items[0])

    def render(item: dict[str, Any] | str) -> str:  # (a plain chunk comes as its event: schema.lines)
        return item if isinstance(item, str) else f"data: {json.dumps(item)}\n\n"

    def fail(exc: BaseException) -> str:
        return f"data: {json.dumps(openai_error_body(exc))}\n\n"

    return FeedResponse(feed, items, render, fail, end="data: [DONE]\n\n", media_type="text/event-stream")


@router.post("/chat/completions", summary="OpenAI chat completions")
async def chat_completions(req: OpenAIChatRequest, request: Request) -> Response:
    """Chat, in OpenAI's shapes."""
    rt, extra = _rt(request), await _extra_options(request)
    usage = bool(req.stream_options and req.stream_options.include_usage)

    def make(cancel: threading.Event) -> Iterator[dict[str, Any] | str | Pending]:
        chat_req = openai.chat_request(req, extra)
        if not req.stream:
            return openai.chat_completion(service.chat(rt, chat_req, cancel=cancel), req.model, stream=False)
        lines = ChatCompletionLines(openai_id("chatcmpl"), int(time.time()), req.model)
        chunks = service.chat(rt, chat_req, cancel=cancel, lines=lines)
        return openai.chat_completion(chunks, req.model, stream=True, include_usage=usage, lines=lines)

    return await _answer(make, stream=req.stream, receive=request.receive)


@router.post("/completions", summary="OpenAI completions")
async def completions(req: OpenAICompletionRequest, request: Request) -> Response:
    """Text completion, in OpenAI's shapes."""
    rt, extra = _rt(request), await _extra_options(request)
    usage = bool(req.stream_options and req.stream_options.include_usage)

    def make(cancel: threading.Event) -> Iterator[dict[str, Any] | str | Pending]:
        gen_req = openai.completion_request(req, extra)
        if not req.stream:
            return openai.completion(service.generate(rt, gen_req, cancel=cancel), req.model, stream=False)
        lines = CompletionLines(openai_id("cmpl"), int(time.time()), req.model)
        chunks = service.generate(rt, gen_req, cancel=cancel, lines=lines)
        return openai.completion(chunks, req.model, stream=True, include_usage=usage, lines=lines)

    return await _answer(make, stream=req.stream, receive=request.receive)


@router.post("/embeddings", summary="OpenAI embeddings")
async def embeddings(req: OpenAIEmbeddingRequest, request: Request) -> Response:
    """Embeddings, in OpenAI's shapes."""
    rt, extra = _rt(request), await _extra_options(request)
    return await _answer(
        lambda cancel: iter([openai.embeddings(rt, req, extra, cancel=cancel)]), stream=False, receive=request.receive
    )


@router.get("/models", summary="OpenAI model list")
async def models(request: Request) -> Response:
    """Local models, in OpenAI's shapes."""
    rt = _rt(request)
    return await _answer(lambda cancel: iter([openai.models(rt)]), stream=False, receive=None)


@router.get("/models/{name:path}", summary="OpenAI model")
async def model(name: str, request: Request) -> Response:
    """One local model, in OpenAI's shapes."""
    rt = _rt(request)
    return await _answer(lambda cancel: iter([openai.model(rt, name)]), stream=False, receive=None)
