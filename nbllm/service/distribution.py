"""Use cases of the registry protocol nbllm serves under ``/v2/`` (Docker Registry v2, as Ollama speaks it).

The store's models with the default registry host are served: a repository path ``<namespace>/<model>``
names ``registry.ollama.ai/<namespace>/<model>``. An uploaded blob is verified against its digest
before it enters the store; a manifest is accepted only when every blob it references is present
with its stated size and its layers are well formed. Every function here touches the disk: the
routes call them from a worker thread. A refusal is a :class:`RegistryRefusal`, carrying the
protocol's error code, which the server renders as ``{"errors": [{"code", "message", "detail"}]}``.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nbllm.errors import DigestMismatch, InvalidModelName, InvalidRequest, NbllmError, NotFound
from nbllm.runtime import Runtime
from nbllm.store import ModelName, ModelStore
from nbllm.store.digest import normalize_digest
from nbllm.store.layer_contents import manifest_problems
from nbllm.store.manifests import Manifest, StoredManifest
from nbllm.store.names import DEFAULT_HOST

__all__ = [
    "RegistryInvalid",
    "RegistryRefusal",
    "RegistryUnknown",
    "Served",
    "blob_file",
    "cancel_upload",
    "commit_upload",
    "manifest",
    "mounted",
    "new_upload",
    "put_manifest",
    "repository",
    "tags",
    "upload_digest",
    "upload_file",
    "upload_size",
]

_UPLOAD_ID = re.compile(r"[0-9a-f]{32}")
_BLOCK = 1 << 20


class RegistryRefusal(NbllmError):
    """A request the registry protocol refuses, in its terms: an error code, a message and a detail."""

    def __init__(self, code: str, message: str, detail: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.detail = detail


class RegistryInvalid(RegistryRefusal, InvalidRequest):
    """A malformed name, digest or manifest (400)."""


class RegistryUnknown(RegistryRefusal, NotFound):
    """No such manifest, repository, blob or upload (404)."""


@dataclass(frozen=True)
class Served:
    """A manifest as stored, byte for byte, with its digest."""

    data: bytes
    digest: str


def repository(namespace: str, model: str, tag: str = "latest") -> ModelName:
    """The local name of a repository path; only the default registry host is served."""
    try:
        parsed = ModelName.parse(f"{namespace}/{model}:{tag}")
    except InvalidModelName as exc:
        raise RegistryInvalid("NAME_INVALID", exc.message) from None
    return ModelName(DEFAULT_HOST, parsed.namespace, parsed.model, parsed.tag)


def _stored(store: ModelStore, namespace: str, model: str) -> Iterator[StoredManifest]:
    repo = repository(namespace, model)
    for stored in store.manifests.all():
        if stored.name.key()[:3] == repo.key()[:3]:
            yield stored


def manifest(rt: Runtime, namespace: str, model: str, reference: str) -> Served:
    """A manifest by tag (or by its ``sha256:`` digest)."""
    store = rt.store
    try:
        if not reference.startswith("sha256:"):
            path = store.manifests.find(repository(namespace, model, reference))
        else:
            want = normalize_digest(reference).removeprefix("sha256:")
            found = (s for s in _stored(store, namespace, model) if s.digest == want)
            path = next((store.manifests.find(s.name) for s in found), None)
    except InvalidRequest as exc:
        raise RegistryInvalid("NAME_INVALID", exc.message) from None
    if path is None:
        detail = {"name": f"{namespace}/{model}", "tag": reference}
        raise RegistryUnknown("MANIFEST_UNKNOWN", "manifest unknown", detail)
    data = path.read_bytes()
    return Served(data, "sha256:" + hashlib.sha256(data).hexdigest())


def put_manifest(rt: Runtime, namespace: str, model: str, tag: str, body: bytes) -> str:
    """Store a manifest whose blobs were all uploaded first; its digest hex."""
    store = rt.store
    name = repository(namespace, model, tag)
    try:
        parsed = Manifest.model_validate_json(body)
        for layer in [*parsed.layers, parsed.config]:
            layer.digest = normalize_digest(layer.digest)
    except (ValueError, InvalidRequest) as exc:
        raise RegistryInvalid("MANIFEST_INVALID", "manifest invalid", str(exc)) from None
    missing = sorted(d for d in parsed.digests() if not store.blobs.has(d))
    if missing:
        raise RegistryInvalid("MANIFEST_BLOB_UNKNOWN", "blob unknown to registry", missing)
    for layer in [*parsed.layers, parsed.config]:
        if store.blobs.size(layer.digest) != layer.size:
            raise RegistryInvalid("MANIFEST_INVALID", f"size of {layer.digest} is not {layer.size}")
    problems = manifest_problems(parsed, store.blobs.read_bytes)
    if problems:  # a params layer that is not JSON (...) would break every listing of the store
        raise RegistryInvalid("MANIFEST_INVALID", "manifest invalid", problems)
    return store.put_manifest(name, parsed)  # checks the blobs again, locked


def tags(rt: Runtime, namespace: str, model: str) -> list[str]:
    """The tags of a repository."""
    found = sorted(s.name.tag for s in _stored(rt.store, namespace, model))
    if not found:
        detail = {"name": f"{namespace}/{model}"}
        raise RegistryUnknown("NAME_UNKNOWN", "repository name not known to registry", detail)
    return found


def _digest(text: str) -> str:
    try:
        return normalize_digest(text)
    except InvalidRequest:
        raise RegistryInvalid("DIGEST_INVALID", "invalid digest format", text) from None


def blob_file(rt: Runtime, digest: str) -> tuple[str, Path]:
    """The digest (spelled ``sha256:<hex>``) and file of a stored blob."""
    wanted = _digest(digest)
    path = rt.store.blobs.path(wanted)
    if not path.is_file():
        raise RegistryUnknown("BLOB_UNKNOWN", "blob unknown to registry", wanted)
    return wanted, path


def mounted(rt: Runtime, digest: str) -> str | None:
    """A cross-repository mount: the blob's digest when the store has it (every repository shares it)."""
    wanted = _digest(digest)
    return wanted if rt.store.blobs.has(wanted) else None


def _upload_path(store: ModelStore, upload_id: str) -> Path:
    # ".tmp-*.blob" is what the blob store clears at startup: an abandoned upload does not linger.
    return store.blobs.root / f".tmp-upload-{upload_id}.blob"


def new_upload(rt: Runtime) -> tuple[str, Path]:
    """A new upload session: its id and the (empty, private) file its chunks are appended to."""
    upload_id = uuid.uuid4().hex
    path = _upload_path(rt.store, upload_id)
    path.touch(mode=0o600)
    return upload_id, path


def upload_file(rt: Runtime, upload_id: str) -> Path:
    """The file of an upload in progress."""
    path = _upload_path(rt.store, upload_id) if _UPLOAD_ID.fullmatch(upload_id) else None
    if path is None or not path.is_file():
        raise RegistryUnknown("BLOB_UPLOAD_UNKNOWN", "blob upload unknown to registry", upload_id)
    return path


def upload_size(path: Path) -> int:
    """How many bytes an upload holds."""
    return path.stat().st_size


def upload_digest(digest: str) -> str:
    """The digest an upload is finished under, checked before its last chunk is read."""
    return _digest(digest)


def commit_upload(rt: Runtime, path: Path, digest: str) -> None:
    """Move a finished upload into the store if its bytes hash to ``digest``."""
    try:
        rt.store.blobs.put_stream(_read(path), digest)
    except DigestMismatch as exc:
        raise RegistryInvalid("DIGEST_INVALID", "provided digest did not match uploaded content", exc.message) from None


def cancel_upload(path: Path) -> None:
    """Abandon an upload (or clear away a finished one)."""
    path.unlink(missing_ok=True)


def _read(path: Path) -> Iterator[bytes]:
    with path.open("rb") as fh:
        while block := fh.read(_BLOCK):
            yield block
