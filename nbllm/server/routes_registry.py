"""The registry protocol under ``/v2/`` (Docker Registry v2 as Ollama's clients speak it), and ``/api/push``.

nbllm serves the models of its own store whose names have the default registry host, so
``nbllm pull 127.0.0.1:PORT/me/mymodel:tag --insecure`` fetches ``me/mymodel:tag`` from a running
nbllm server and ``nbllm push 127.0.0.1:PORT/me/mymodel:tag --insecure`` stores it there as
``me/mymodel:tag``. The routes are adapters over :mod:`nbllm.service.distribution`, called from
worker threads (it reads and writes the store); its refusals carry the registry's error codes and
render as ``{"errors": [{"code", "message", "detail"}]}`` (``server.errors``). Like the rest of the
API it needs no key unless NBLLM_API_KEY is set: bind to loopback (the default) unless every peer is trusted.
"""

from __future__ import annotations

import re
from collections import deque
from pathlib import Path

from fastapi import APIRouter, Query, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import FileResponse, JSONResponse, Response

from nbllm import service
from nbllm.runtime import Runtime
from nbllm.schema import ProgressResponse, PushRequest
from nbllm.server.errors import REGISTRY_HEADERS
from nbllm.server.streaming import ndjson_response, single_response
from nbllm.service import distribution
from nbllm.store.manifests import MEDIA_MANIFEST

__all__ = ["UPLOAD_ENDPOINTS", "router"]

router = APIRouter()

_API_VERSION = REGISTRY_HEADERS
_REPO = "/v2/{namespace}/{model}"
_BLOCK = 1 << 20


def _rt(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


@router.post("/api/push", response_model=ProgressResponse)
async def push(req: PushRequest, request: Request) -> Response:
    """Upload a model to the registry its name points at, streaming progress."""
    runtime = _rt(request)
    if req.stream:
        return await ndjson_response(lambda cancel: service.push(runtime, req))
    return await single_response(lambda: deque(service.push(runtime, req), maxlen=1)[0])


@router.get("/v2/", include_in_schema=False)
async def api_version() -> Response:
    """The registry API version check."""
    return JSONResponse({}, headers=_API_VERSION)


@router.api_route(_REPO + "/manifests/{reference}", methods=["GET", "HEAD"], include_in_schema=False)
async def get_manifest(namespace: str, model: str, reference: str, request: Request) -> Response:
    """A manifest by tag (or by its ``sha256:`` digest), byte for byte as stored."""
    served = await run_in_threadpool(distribution.manifest, _rt(request), namespace, model, reference)
    headers = {**_API_VERSION, "Docker-Content-Digest": served.digest}
    return Response(served.data, media_type=MEDIA_MANIFEST, headers=headers)


@router.put(_REPO + "/manifests/{tag}", include_in_schema=False)
async def put_manifest(namespace: str, model: str, tag: str, request: Request) -> Response:
    """Store a manifest whose blobs were all uploaded first."""
    distribution.repository(namespace, model, tag)  # a bad name is refused before the body is read
    body = await request.body()
    digest = await run_in_threadpool(distribution.put_manifest, _rt(request), namespace, model, tag, body)
    headers = {
        **_API_VERSION,
        "Location": f"/v2/{namespace}/{model}/manifests/{tag}",
        "Docker-Content-Digest": f"sha256:{digest}",
    }
    return Response(status_code=201, headers=headers)


@router.get(_REPO + "/tags/list", include_in_schema=False)
async def tags(namespace: str, model: str, request: Request) -> Response:
    """The tags of a repository."""
    found = await run_in_threadpool(distribution.tags, _rt(request), namespace, model)
    return JSONResponse({"name": f"{namespace}/{model}", "tags": found}, headers=_API_VERSION)


@router.api_route(_REPO + "/blobs/{digest}", methods=["GET", "HEAD"], include_in_schema=False)
async def get_blob(namespace: str, model: str, digest: str, request: Request) -> Response:
    """A blob, with HTTP Range support (resumed pulls)."""
    wanted, path = await run_in_threadpool(distribution.blob_file, _rt(request), digest)
    headers = {**_API_VERSION, "Docker-Content-Digest": wanted}
    return FileResponse(path, media_type="application/octet-stream", headers=headers)


@router.post(_REPO + "/blobs/uploads/", include_in_schema=False)
@router.post(_REPO + "/blobs/uploads", include_in_schema=False)
async def start_upload(
    namespace: str,
    model: str,
    request: Request,
    mount: str | None = None,
    digest: str | None = None,
    source: str | None = Query(default=None, alias="from"),
) -> Response:
    """Begin an upload: a cross-repository mount (201), a monolithic upload (201), or a session (202)."""
    runtime = _rt(request)
    distribution.repository(namespace, model)
    if mount and (mounted := await run_in_threadpool(distribution.mounted, runtime, mount)):
        return _created(namespace, model, mounted)
    upload_id, path = await run_in_threadpool(distribution.new_upload, runtime)
    if digest:
        return await _finish(runtime, namespace, model, path, digest, request)
    return _session(namespace, model, upload_id, 0, status=202)


def _session(namespace: str, model: str, upload_id: str, size: int, *, status: int) -> Response:
    headers = {
        **_API_VERSION,
        "Location": f"/v2/{namespace}/{model}/blobs/uploads/{upload_id}",
        "Docker-Upload-UUID": upload_id,
        "Range": f"0-{max(size - 1, 0)}",
    }
    return Response(status_code=status, headers=headers)


def _created(namespace: str, model: str, digest: str) -> Response:
    headers = {**_API_VERSION, "Location": f"/v2/{namespace}/{model}/blobs/{digest}", "Docker-Content-Digest": digest}
    return Response(status_code=201, headers=headers)


async def _append(path: Path, request: Request) -> int:
    """Stream the body onto the upload's file; the writes run in a worker thread, a MiB at a time."""
    fh = await run_in_threadpool(path.open, "ab")
    try:
        pending = bytearray()
        async for chunk in request.stream():
            pending += chunk
            if len(pending) >= _BLOCK:  # one worker-thread hop per MiB, never a write on the event loop
                await run_in_threadpool(fh.write, bytes(pending))
                pending.clear()
        await run_in_threadpool(fh.write, bytes(pending))
        return fh.tell()
    finally:
        await run_in_threadpool(fh.close)


@router.patch(_REPO + "/blobs/uploads/{upload_id}", include_in_schema=False)
async def patch_upload(namespace: str, model: str, upload_id: str, request: Request) -> Response:
    """Append a chunk; ``Content-Range: <start>-<end>`` must continue where the upload stands."""
    path = await run_in_threadpool(distribution.upload_file, _rt(request), upload_id)
    size = await run_in_threadpool(distribution.upload_size, path)
    m = re.match(r"(?:bytes[ =])?(\d+)-(\d+)", request.headers.get("content-range", ""))
    if m and int(m.group(1)) != size:
        return Response(status_code=416, headers={**_API_VERSION, "Range": f"0-{max(size - 1, 0)}"})
    size = await _append(path, request)
    return _session(namespace, model, upload_id, size, status=202)


@router.put(_REPO + "/blobs/uploads/{upload_id}", include_in_schema=False)
async def finish_upload(namespace: str, model: str, upload_id: str, request: Request, digest: str = "") -> Response:
    """Append the last chunk (if any), verify the digest, and move the blob into the store."""
    runtime = _rt(request)
    path = await run_in_threadpool(distribution.upload_file, runtime, upload_id)
    return await _finish(runtime, namespace, model, path, digest, request)


async def _finish(runtime: Runtime, namespace: str, model: str, path: Path, digest: str, request: Request) -> Response:
    try:
        expected = distribution.upload_digest(digest)
        await _append(path, request)
        await run_in_threadpool(distribution.commit_upload, runtime, path, expected)
    finally:
        await run_in_threadpool(distribution.cancel_upload, path)
    return _created(namespace, model, expected)


@router.get(_REPO + "/blobs/uploads/{upload_id}", include_in_schema=False)
async def upload_status(namespace: str, model: str, upload_id: str, request: Request) -> Response:
    """How far an upload has come."""
    path = await run_in_threadpool(distribution.upload_file, _rt(request), upload_id)
    size = await run_in_threadpool(distribution.upload_size, path)
    return _session(namespace, model, upload_id, size, status=204)


@router.delete(_REPO + "/blobs/uploads/{upload_id}", include_in_schema=False)
async def cancel_upload(namespace: str, model: str, upload_id: str, request: Request) -> Response:
    """Abandon an upload."""
    path = await run_in_threadpool(distribution.upload_file, _rt(request), upload_id)
    await run_in_threadpool(distribution.cancel_upload, path)
    return Response(status_code=204, headers=_API_VERSION)


UPLOAD_ENDPOINTS = (start_upload, patch_upload, finish_upload)
"""The routes whose request body is a blob, streamed to disk (exempt from the JSON body limit)."""
