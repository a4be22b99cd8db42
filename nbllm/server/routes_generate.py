"""``POST /api/generate`` and ``POST /api/chat``."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from nbllm import service
from nbllm.runtime import Runtime
from nbllm.schema import (
    ChatRequest,
    ChatResponse,
    EmbeddingsRequest,
    EmbeddingsResponse,
    EmbedRequest,
    EmbedResponse,
    GenerateRequest,
    GenerateResponse,
)
from nbllm.schema.lines import ChunkLines
from nbllm.server.streaming import collected_response, ndjson_response, single_response

__all__ = ["router"]

router = APIRouter()


def _rt(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


@router.post("/api/generate", response_model=GenerateResponse, summary="Generate a completion")
async def generate(req: GenerateRequest, request: Request) -> Response:
    """Stream (default) or return the completion of a prompt."""
    rt = _rt(request)
    if req.stream:
        return await ndjson_response(
            lambda cancel: service.generate(rt, req, cancel=cancel, lines=ChunkLines(req.model, chat=False)),
            request.receive,
        )
    return await collected_response(
        lambda cancel: service.generate(rt, req, cancel=cancel), service.collect_generate, request.receive
    )


@router.post("/api/chat", response_model=ChatResponse, summary="Chat with a model")
async def chat(req: ChatRequest, request: Request) -> Response:
    """Stream (default) or return the assistant's next message."""
    rt = _rt(request)
    if req.stream:
        return await ndjson_response(
            lambda cancel: service.chat(rt, req, cancel=cancel, lines=ChunkLines(req.model, chat=True)), request.receive
        )
    return await collected_response(
        lambda cancel: service.chat(rt, req, cancel=cancel), service.collect_chat, request.receive
    )


@router.post("/api/embed", response_model=EmbedResponse, summary="Embed inputs")
async def embed(req: EmbedRequest, request: Request) -> Response:
    """L2-normalised embeddings of one or more inputs."""
    rt = _rt(request)
    return await collected_response(
        lambda cancel: iter([service.embed(rt, req, cancel=cancel)]), lambda it: next(it), request.receive
    )


@router.post("/api/embeddings", response_model=EmbeddingsResponse, summary="Embed a prompt (legacy)")
async def embeddings(req: EmbeddingsRequest, request: Request) -> Response:
    """The raw embedding of one prompt (superseded by /api/embed)."""
    rt = _rt(request)
    return await single_response(lambda: service.embeddings(rt, req))
