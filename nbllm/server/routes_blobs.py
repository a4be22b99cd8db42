"""``HEAD``/``POST /api/blobs/sha256:<hex>``: does the server have a blob; upload one, verified.

The body is streamed into the blob store's writer, which hashes it on the way and renames it into
place only if it matches the digest in the URL; a mismatch is a 400 and nothing is stored.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from nbllm.errors import BlobNotFound, NbllmError
from nbllm.runtime import Runtime
from nbllm.server.errors import error_response
from nbllm.store.blobs import BlobWriter
from nbllm.store.digest import normalize_digest

__all__ = ["router"]

router = APIRouter()
_FLUSH_AT = 1 << 20


def _rt(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


@router.head("/api/blobs/{digest}")
async def head_blob(digest: str, request: Request) -> Response:
    """200 if the blob is here, 404 if not, 400 for a malformed digest."""
    try:
        wanted = normalize_digest(digest)
        if not _rt(request).store.blobs.has(wanted):
            raise BlobNotFound(digest)
    except NbllmError as exc:
        return error_response(exc)
    return Response(status_code=200)


@router.post("/api/blobs/{digest}", status_code=201)
async def create_blob(digest: str, request: Request) -> Response:
    """Store the raw body as the blob ``digest``: 201 when stored, 200 when it was already here."""
    try:
        wanted = normalize_digest(digest)
    except NbllmError as exc:
        return error_response(exc)
    blobs = _rt(request).store.blobs
    if blobs.has(wanted):
        return Response(status_code=200)
    writer: BlobWriter = await run_in_threadpool(blobs.writer, wanted)
    pending = bytearray()
    try:
        async for chunk in request.stream():
            pending += chunk
            if len(pending) >= _FLUSH_AT:  # write in large pieces: one worker-thread hop per MiB
                await run_in_threadpool(writer.write, bytes(pending))
                pending.clear()
        await run_in_threadpool(writer.write, bytes(pending))
        await run_in_threadpool(writer.commit)
    except NbllmError as exc:
        return error_response(exc)
    finally:
        if writer.digest is None:
            await run_in_threadpool(writer.abort)
    return Response(status_code=201)
