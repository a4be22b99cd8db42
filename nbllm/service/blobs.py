"""Use cases of ``/api/blobs``: whether the store holds a blob, and storing one a client uploads, verified."""

from __future__ import annotations

from collections.abc import Iterable

from nbllm.errors import BlobNotFound
from nbllm.runtime import Runtime
from nbllm.store.blobs import BlobWriter
from nbllm.store.digest import normalize_digest

__all__ = ["blob_writer", "has_blob", "put_blob", "require_blob"]


def has_blob(rt: Runtime, digest: str) -> bool:
    """Whether the store holds the blob ``sha256:<hex>`` (a malformed digest is a 400)."""
    return bool(rt.store.blobs.has(normalize_digest(digest)))


def require_blob(rt: Runtime, digest: str) -> None:
    """Nothing if the store holds the blob; else ``BlobNotFound`` (404)."""
    if not has_blob(rt, digest):
        raise BlobNotFound(digest)


def blob_writer(rt: Runtime, digest: str) -> BlobWriter | None:
    """A writer that stores what it is given as the blob ``digest`` once it hashes to it; None when the
    store has that blob already."""
    wanted = normalize_digest(digest)
    if rt.store.blobs.has(wanted):
        return None
    return rt.store.blobs.writer(wanted)


def put_blob(rt: Runtime, chunks: Iterable[bytes], digest: str) -> str:
    """Store a stream of bytes as the blob ``digest``, verified; its digest."""
    return rt.store.blobs.put_stream(chunks, expected=normalize_digest(digest))
