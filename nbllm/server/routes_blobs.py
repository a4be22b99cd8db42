"""``HEAD``/``POST /api/blobs/sha256:<hex>``: does the server have a blob; upload one, verified.

The body is streamed into the blob store's writer, which hashes it on the way and renames it into
place only if it matches the digest in the URL; a mismatch is a 400 and nothing is stored.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from nbllm.runtime import Runtime
from nbllm.service import blobs
from nbllm.store.blobs import BlobWriter

__all__ = ["router"]

router = APIRouter()
_FLUSH_AT = 1 << 20


def _rt(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


@router.head("/api/blobs/{digest}")
async def head_blob(digest: str, request: Request) -> Response:
    """200 if the blob is here, 404 if not, 400 for a malformed digest."""
    await run_in_threadpool(blobs.require_blob, _rt(request), digest)
    return Response(status_code=200)


@router.post("/api/blobs/{digest}", status_code=201)
async def create_blob(digest: str, request: Request) -> Response:
    """Store the raw body as the blob ``digest``: 201 when stored, 200 when it was already here."""
    writer: BlobWriter | None = await run_in_threadpool(blobs.blob_writer, _rt(request), digest)
    if writer is None:
        return Response(status_code=200)
    pending = bytearray()
    try:
        async for chunk in request.stream():
            pending += chunk
            if len(pending) >= _FLUSH_AT:  # write in large pieces: one worker-thread hop per MiB
                await run_in_threadpool(writer.write, bytes(pending))
                pending.clear()
        await run_in_threadpool(writer.write, bytes(pending))
        await run_in_threadpool(writer.commit)
    finally:
        if writer.digest is None:
            await run_in_threadpool(writer.abort)
    return Response(status_code=201)
