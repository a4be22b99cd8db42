"""Model management and status routes: tags, show, ps, pull, copy, delete, version, health."""

from __future__ import annotations

from collections import deque

from fastapi import APIRouter, Request
from starlette.responses import PlainTextResponse, Response

from nbllm import service
from nbllm._version import OLLAMA_API_VERSION
from nbllm.runtime import Runtime
from nbllm.schema import (
    CopyRequest,
    CreateRequest,
    DeleteRequest,
    ListResponse,
    ProcessResponse,
    ProgressResponse,
    PullRequest,
    ShowRequest,
    ShowResponse,
    VersionResponse,
)
from nbllm.server.streaming import collected_response, ndjson_response, single_response

__all__ = ["router"]

router = APIRouter()


def _rt(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


@router.api_route("/", methods=["GET", "HEAD"], include_in_schema=False)
async def health() -> Response:
    """Liveness probe, worded as Ollama's (tools look for this text)."""
    return PlainTextResponse("Ollama is running")


@router.api_route("/api/version", methods=["GET", "HEAD"], response_model=VersionResponse)
async def version(request: Request) -> Response:
    """The Ollama API version served, and nbllm's own."""
    body = VersionResponse(version=OLLAMA_API_VERSION, nbllm=_rt(request).version)
    return Response(body.model_dump_json(exclude_none=True), media_type="application/json")


@router.api_route("/api/tags", methods=["GET", "HEAD"], response_model=ListResponse)
async def tags(request: Request) -> Response:
    """Local models."""
    rt = _rt(request)
    return await single_response(lambda: service.list_models(rt))


@router.post("/api/show", response_model=ShowResponse)
async def show(req: ShowRequest, request: Request) -> Response:
    """Details of a model."""
    rt = _rt(request)
    return await single_response(lambda: service.show(rt, req))


@router.get("/api/ps", response_model=ProcessResponse)
async def ps(request: Request) -> Response:
    """Loaded models."""
    rt = _rt(request)
    return await single_response(lambda: service.ps(rt))


@router.post("/api/pull", response_model=ProgressResponse)
async def pull(req: PullRequest, request: Request) -> Response:
    """Download a model, streaming progress."""
    rt = _rt(request)
    if req.stream:
        return await ndjson_response(lambda cancel: service.pull(rt, req), request.receive)
    # a client that leaves stops the download (partial files are kept: the next pull resumes)
    return await collected_response(lambda cancel: service.pull(rt, req), lambda it: next(it), request.receive, keep=1)


@router.post("/api/create", response_model=ProgressResponse)
async def create(req: CreateRequest, request: Request) -> Response:
    """Create a model, streaming progress."""
    rt = _rt(request)
    if req.stream:
        return await ndjson_response(lambda cancel: service.create_model(rt, req))
    return await single_response(lambda: deque(service.create_model(rt, req), maxlen=1)[0])


@router.post("/api/copy")
async def copy(req: CopyRequest, request: Request) -> Response:
    """Give a model another name."""
    rt = _rt(request)
    return await single_response(lambda: service.copy_model(rt, req))


@router.delete("/api/delete")
async def delete(req: DeleteRequest, request: Request) -> Response:
    """Remove a model."""
    rt = _rt(request)
    return await single_response(lambda: service.delete_model(rt, req))
