"""The registry protocol under ``/v2/`` (Docker Registry v2 as Ollama's clients speak it), and ``/api/push``.

nbllm serves the models of its own store whose names have the default registry host, so
``nbllm pull 127.0.0.1:PORT/me/mymodel:tag --insecure`` fetches ``me/mymodel:tag`` from a running
nbllm server and ``nbllm push 127.0.0.1:PORT/me/mymodel:tag --insecure`` stores it there as
``me/mymodel:tag``. Uploaded blobs are verified against their digest before they enter the store,
and a manifest is accepted only when every blob it references is present with its stated size.
Errors use the registry's ``{"errors": [{"code", "message", "detail"}]}`` shape. Like the rest of
the API it needs no key unless NBLLM_API_KEY is set: bind to loopback (the default) unless every peer is trusted.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Query, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import FileResponse, JSONResponse, Response

from nbllm import service
from nbllm.errors import DigestMismatch, InvalidModelName, InvalidRequest
from nbllm.runtime import Runtime
from nbllm.schema import ProgressResponse, PushRequest
from nbllm.server.errors import ErrorJSONResponse
from nbllm.server.streaming import ndjson_response, single_response
from nbllm.store import ModelName, ModelStore
from nbllm.store.digest import normalize_digest
from nbllm.store.layer_contents import manifest_problems
from nbllm.store.manifests import MEDIA_MANIFEST, Manifest, StoredManifest
from nbllm.store.names import DEFAULT_HOST

__all__ = ["UPLOAD_ENDPOINTS", "router"]

router = APIRouter()

_API_VERSION = {"Docker-Distribution-API-Version": "registry/2.0"}
_UPLOAD_ID = re.compile(r"[0-9a-f]{32}")
_REPO = "/v2/{namespace}/{model}"
_BLOCK = 1 << 20


def _store(request: Request) -> ModelStore:
    runtime: Runtime = request.app.state.runtime
    return runtime.store


def _error(status: int, code: str, message: str, detail: Any = None) -> JSONResponse:
    body = {"errors": [{"code": code, "message": message, "detail": detail}]}
    return ErrorJSONResponse(body, status_code=status, headers=_API_VERSION)


def _name(namespace: str, model: str, tag: str = "latest") -> ModelName:
    """The local name of a repository path; only the default registry host is served."""
    parsed = ModelName.parse(f"{namespace}/{model}:{tag}")
    return ModelName(DEFAULT_HOST, parsed.namespace, parsed.model, parsed.tag)


@router.post("/api/push", response_model=ProgressResponse)
async def push(req: PushRequest, request: Request) -> Response:
    """Upload a model to the registry its name points at, streaming progress."""
    runtime: Runtime = request.app.state.runtime
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
    store = _store(request)
    try:
        path = _find_manifest(store, namespace, model, reference)
    except InvalidRequest as exc:
        return _error(400, "NAME_INVALID", exc.message)
    if path is None:
        return _error(404, "MANIFEST_UNKNOWN", "manifest unknown", {"name": f"{namespace}/{model}", "tag": reference})
    data = path.read_bytes()
    headers = {**_API_VERSION, "Docker-Content-Digest": "sha256:" + hashlib.sha256(data).hexdigest()}
    return Response(data, media_type=MEDIA_MANIFEST, headers=headers)


def _find_manifest(store: ModelStore, namespace: str, model: str, reference: str) -> Path | None:
    if not reference.startswith("sha256:"):
        return store.manifests.find(_name(namespace, model, reference))
    want = normalize_digest(reference).removeprefix("sha256:")
    for stored in _repository(store, namespace, model):
        if stored.digest == want:
            return store.manifests.find(stored.name)
    return None


def _repository(store: ModelStore, namespace: str, model: str) -> Iterator[StoredManifest]:
    repo = _name(namespace, model)
    for stored in store.manifests.all():
        if stored.name.key()[:3] == repo.key()[:3]:
            yield stored


@router.put(_REPO + "/manifests/{tag}", include_in_schema=False)
async def put_manifest(namespace: str, model: str, tag: str, request: Request) -> Response:
    """Store a manifest whose blobs were all uploaded first."""
    store = _store(request)
    try:
        name = _name(namespace, model, tag)
    except InvalidModelName as exc:
        return _error(400, "NAME_INVALID", exc.message)
    try:
        manifest = Manifest.model_validate_json(await request.body())
        for layer in [*manifest.layers, manifest.config]:
            layer.digest = normalize_digest(layer.digest)
    except (ValueError, InvalidRequest) as exc:
        return _error(400, "MANIFEST_INVALID", "manifest invalid", str(exc))
    missing = sorted(d for d in manifest.digests() if not store.blobs.has(d))
    if missing:
        return _error(400, "MANIFEST_BLOB_UNKNOWN", "blob unknown to registry", missing)
    for layer in [*manifest.layers, manifest.config]:
        if store.blobs.size(layer.digest) != layer.size:
            return _error(400, "MANIFEST_INVALID", f"size of {layer.digest} is not {layer.size}")
    problems = await run_in_threadpool(manifest_problems, manifest, store.blobs.read_bytes)
    if problems:  # a params layer that is not JSON (...) would break every listing of the store
        return _error(400, "MANIFEST_INVALID", "manifest invalid", problems)
    digest = await run_in_threadpool(store.put_manifest, name, manifest)  # checks the blobs again, locked
    headers = {
        **_API_VERSION,
        "Location": f"/v2/{namespace}/{model}/manifests/{tag}",
        "Docker-Content-Digest": f"sha256:{digest}",
    }
    return Response(status_code=201, headers=headers)


@router.get(_REPO + "/tags/list", include_in_schema=False)
async def tags(namespace: str, model: str, request: Request) -> Response:
    """The tags of a repository."""
    try:
        found = sorted(s.name.tag for s in _repository(_store(request), namespace, model))
    except InvalidModelName as exc:
        return _error(400, "NAME_INVALID", exc.message)
    if not found:
        return _error(404, "NAME_UNKNOWN", "repository name not known to registry", {"name": f"{namespace}/{model}"})
    return JSONResponse({"name": f"{namespace}/{model}", "tags": found}, headers=_API_VERSION)


@router.api_route(_REPO + "/blobs/{digest}", methods=["GET", "HEAD"], include_in_schema=False)
async def get_blob(namespace: str, model: str, digest: str, request: Request) -> Response:
    """A blob, with HTTP Range support (resumed pulls)."""
    store = _store(request)
    try:
        digest = normalize_digest(digest)
    except InvalidRequest:
        return _error(400, "DIGEST_INVALID", "invalid digest format", digest)
    path = store.blobs.path(digest)
    if not path.is_file():
        return _error(404, "BLOB_UNKNOWN", "blob unknown to registry", digest)
    headers = {**_API_VERSION, "Docker-Content-Digest": digest}
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
    store = _store(request)
    try:
        _name(namespace, model)
    except InvalidModelName as exc:
        return _error(400, "NAME_INVALID", exc.message)
    if mount:
        try:
            mounted = normalize_digest(mount)
        except InvalidRequest:
            return _error(400, "DIGEST_INVALID", "invalid digest format", mount)
        if store.blobs.has(mounted):
            return _created(namespace, model, mounted)
    upload_id = uuid.uuid4().hex
    path = _upload_path(store, upload_id)
    path.touch(mode=0o600)
    if digest:
        return await _finish(store, namespace, model, path, digest, request)
    return _session(namespace, model, upload_id, 0, status=202)


def _upload_path(store: ModelStore, upload_id: str) -> Path:
    # ".tmp-*.blob" is what the blob store clears at startup: an abandoned upload does not linger.
    return store.blobs.root / f".tmp-upload-{upload_id}.blob"


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


def _open_upload(store: ModelStore, upload_id: str) -> Path | None:
    if not _UPLOAD_ID.fullmatch(upload_id):
        return None
    path = _upload_path(store, upload_id)
    return path if path.is_file() else None


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
    path = _open_upload(_store(request), upload_id)
    if path is None:
        return _error(404, "BLOB_UPLOAD_UNKNOWN", "blob upload unknown to registry", upload_id)
    size = path.stat().st_size
    m = re.match(r"(?:bytes[ =])?(\d+)-(\d+)", request.headers.get("content-range", ""))
    if m and int(m.group(1)) != size:
        return Response(status_code=416, headers={**_API_VERSION, "Range": f"0-{max(size - 1, 0)}"})
    size = await _append(path, request)
    return _session(namespace, model, upload_id, size, status=202)


@router.put(_REPO + "/blobs/uploads/{upload_id}", include_in_schema=False)
async def finish_upload(namespace: str, model: str, upload_id: str, request: Request, digest: str = "") -> Response:
    """Append the last chunk (if any), verify the digest, and move the blob into the store."""
    store = _store(request)
    path = _open_upload(store, upload_id)
    if path is None:
        return _error(404, "BLOB_UPLOAD_UNKNOWN", "blob upload unknown to registry", upload_id)
    return await _finish(store, namespace, model, path, digest, request)


async def _finish(store: ModelStore, namespace: str, model: str, path: Path, digest: str, request: Request) -> Response:
    try:
        expected = normalize_digest(digest)
        await _append(path, request)
        await run_in_threadpool(store.blobs.put_stream, _read(path), expected)
    except DigestMismatch as exc:
        return _error(400, "DIGEST_INVALID", "provided digest did not match uploaded content", exc.message)
    except InvalidRequest:
        return _error(400, "DIGEST_INVALID", "invalid digest format", digest)
    finally:
        path.unlink(missing_ok=True)
    return _created(namespace, model, expected)


def _read(path: Path) -> Iterator[bytes]:
    with path.open("rb") as fh:
        while block := fh.read(_BLOCK):
            yield block


@router.get(_REPO + "/blobs/uploads/{upload_id}", include_in_schema=False)
async def upload_status(namespace: str, model: str, upload_id: str, request: Request) -> Response:
    """How far an upload has come."""
    path = _open_upload(_store(request), upload_id)
    if path is None:
        return _error(404, "BLOB_UPLOAD_UNKNOWN", "blob upload unknown to registry", upload_id)
    return _session(namespace, model, upload_id, path.stat().st_size, status=204)


@router.delete(_REPO + "/blobs/uploads/{upload_id}", include_in_schema=False)
async def cancel_upload(namespace: str, model: str, upload_id: str, request: Request) -> Response:
    """Abandon an upload."""
    path = _open_upload(_store(request), upload_id)
    if path is None:
        return _error(404, "BLOB_UPLOAD_UNKNOWN", "blob upload unknown to registry", upload_id)
    path.unlink(missing_ok=True)
    return Response(status_code=204, headers=_API_VERSION)


UPLOAD_ENDPOINTS = (start_upload, patch_upload, finish_upload)
"""The routes whose request body is a blob, streamed to disk (exempt from the JSON body limit)."""
