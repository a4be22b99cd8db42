"""Ollama's registry protocol (Docker Registry v2, as ``registry.ollama.ai`` serves it): pull and push.

Pull: ``GET /v2/<ns>/<model>/manifests/<tag>``, then every layer not already in the store from
``/v2/<ns>/<model>/blobs/<digest>``, several at once, resumable and verified (``remote.transfer``);
the manifest is written only when every blob is in place, so a model is never half visible.

Push: ``HEAD`` each blob (present: skipped), else ``POST .../blobs/uploads/``, ``PATCH`` the bytes,
``PUT ...?digest=``; finally ``PUT .../manifests/<tag>``.

A ``401`` with a ``Bearer`` challenge is answered with an anonymous token from the challenge's realm
(standard Docker token auth). Ollama signs that token request with the user's ollama.com key;
nbllm has no such key, so private ollama.com models and pushes to ollama.com are refused.
"""

from __future__ import annotations

import contextlib
import functools
import re
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import httpx

from nbllm._version import __version__
from nbllm.errors import InvalidRequest, ModelNotFound, NbllmError, PullError, RegistryUnreachable, StoreError
from nbllm.remote.transfer import STALL_TIMEOUT, BlobFetch, describe_error, fetch_blobs, follow
from nbllm.schema import ProgressResponse
from nbllm.store.digest import normalize_digest
from nbllm.store.layer_contents import manifest_problems
from nbllm.store.local import ModelStore
from nbllm.store.manifests import MEDIA_MANIFEST, Layer, Manifest
from nbllm.store.names import ModelName

__all__ = ["RegistryClient", "pull_model", "push_model"]

_CHUNK = 1 << 20


class RegistryClient:
    """An HTTP client of one kind of registry call (pull or push), with token auth and Ollama's errors."""

    def __init__(
        self,
        *,
        insecure: bool = False,
        failure: type[NbllmError] = PullError,
        timeout: float = STALL_TIMEOUT,
        part_size: int = 64 << 20,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.scheme = "http" if insecure else "https"
        self.failure = failure
        self.part_size = part_size
        """Bytes per ``PATCH`` when pushing."""
        self._token: str | None = None
        self._lock = threading.Lock()
        self._http = httpx.Client(
            follow_redirects=True,  # registry.ollama.ai redirects blobs to a CDN (Authorization is dropped)
            timeout=httpx.Timeout(timeout, connect=15.0),
            headers={"User-Agent": f"nbllm/{__version__}"},
            transport=transport,
        )

    def close(self) -> None:
        """Release the connection pool."""
        self._http.close()

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def repo_url(self, name: ModelName) -> str:
        """``{scheme}://{host}/v2/{namespace}/{model}``."""
        return f"{self.scheme}://{name.host}/v2/{name.namespace}/{name.model}"

    def send(
        self,
        method: str,
        url: str,
        *,
        headers: dict[str, str] | None = None,
        params: dict[str, str] | None = None,
        body: Callable[[], Iterable[bytes] | bytes] | None = None,
        stream: bool = False,
    ) -> httpx.Response:
        """One request; a 401 Bearer challenge is answered once with a token. Transport errors propagate."""
        for attempt in range(2):
            hdrs = dict(headers or {})
            if self._token and "Authorization" not in hdrs:
                hdrs["Authorization"] = f"Bearer {self._token}"
            request = self._http.build_request(
                method, url, headers=hdrs, params=params, content=body() if body is not None else None
            )
            resp = self._http.send(request, stream=stream)
            if resp.status_code != 401 or attempt == 1:
                if resp.status_code == 401:
                    resp.close()
                    raise self.failure("unauthorized: access denied")
                return resp
            challenge = resp.headers.get("www-authenticate", "")
            resp.close()
            token = self._fetch_token(challenge)
            with self._lock:
                self._token = token
        raise AssertionError("unreachable")  # pragma: no cover

    def _fetch_token(self, challenge: str) -> str:
        scheme, _, rest = challenge.partition(" ")
        fields = dict(re.findall(r'(\w+)="([^"]*)"', rest))
        if scheme.lower() != "bearer" or "realm" not in fields:
            raise self.failure("unauthorized: access denied (the registry wants credentials nbllm does not have)")
        params = {k: fields[k] for k in ("service", "scope") if k in fields}
        try:
            resp = self._http.get(fields["realm"], params=params)
        except httpx.HTTPError as exc:
            raise self.failure(f"unauthorized: token request to {fields['realm']} failed: {exc}") from exc
        token = None
        if resp.status_code == 200:
            with contextlib.suppress(ValueError, AttributeError):
                data = resp.json()
                token = data.get("token") or data.get("access_token")
        if not token:
            raise self.failure(
                f"unauthorized: access denied ({describe_error(resp)} from {fields['realm']}; nbllm has no "
                "ollama.com key to sign in with, so only registries that grant anonymous tokens work)"
            )
        return str(token)

    def manifest(self, name: ModelName) -> Manifest:
        """The manifest of ``name``; PullError worded as Ollama's ``pull model manifest: ...``."""
        url = f"{self.repo_url(name)}/manifests/{name.tag}"
        try:
            resp = self.send("GET", url, headers={"Accept": MEDIA_MANIFEST})
        except httpx.TransportError as exc:  # no answer at all: the caller may know better what to say
            raise RegistryUnreachable(f'pull model manifest: Get "{url}": {exc}') from exc
        except httpx.HTTPError as exc:
            raise PullError(f'pull model manifest: Get "{url}": {exc}') from exc
        except NbllmError as exc:
            raise PullError(f"pull model manifest: {exc.message}") from exc
        if resp.status_code == 404:
            raise PullError("pull model manifest: file does not exist")
        if resp.status_code >= 400:
            raise PullError(f"pull model manifest: {describe_error(resp)}")
        try:
            manifest = Manifest.model_validate_json(resp.content)
            for layer in [*manifest.layers, manifest.config]:
                layer.digest = normalize_digest(layer.digest)
        except (ValueError, InvalidRequest) as exc:
            raise PullError(f"pull model manifest: the registry sent an invalid manifest: {exc}") from exc
        return manifest

    def has_blob(self, name: ModelName, digest: str) -> bool:
        """Whether the registry already has a blob (``HEAD``)."""
        resp = self._checked("HEAD", f"{self.repo_url(name)}/blobs/{digest}", ok=(200, 404))
        return resp.status_code == 200

    def upload_blob(self, name: ModelName, layer: Layer, path: Path, progress: Callable[[int], None]) -> None:
        """``POST`` an upload, ``PATCH`` the file in parts, ``PUT ?digest=``; calls ``progress(bytes)``."""
        params: dict[str, str] = {}
        source = ModelName.parse(layer.from_) if layer.from_ and ModelName.is_valid(layer.from_) else None
        if source is not None and source.host.lower() == name.host.lower():
            params = {"mount": layer.digest, "from": f"{source.namespace}/{source.model}"}
        start_url = f"{self.repo_url(name)}/blobs/uploads/"
        resp = self._checked("POST", start_url, params=params, ok=(201, 202))
        if resp.status_code == 201:  # mounted from another repository of the same registry
            progress(layer.size)
            return
        location = self._location(resp)
        offset = 0
        while offset < layer.size:
            n = min(self.part_size, layer.size - offset)
            headers = {
                "Content-Type": "application/octet-stream",
                "Content-Length": str(n),
                "Content-Range": f"{offset}-{offset + n - 1}",
            }
            part = functools.partial(_file_part, path, offset, n, progress)
            resp = self._checked("PATCH", location, headers=headers, body=part, ok=(202, 204))
            location = self._location(resp, default=location)
            offset += n
        headers = {"Content-Type": "application/octet-stream", "Content-Length": "0"}
        self._checked("PUT", location, params={"digest": layer.digest}, headers=headers, ok=(201, 204))

    def put_manifest(self, name: ModelName, data: bytes) -> None:
        """``PUT /v2/<ns>/<model>/manifests/<tag>``."""
        headers = {"Content-Type": MEDIA_MANIFEST}
        self._checked("PUT", f"{self.repo_url(name)}/manifests/{name.tag}", headers=headers, body=lambda: data)

    def _location(self, resp: httpx.Response, default: str | None = None) -> str:
        location: str | None = resp.headers.get("docker-upload-location") or resp.headers.get("location")
        if not location:
            if default is not None:
                return default
            raise self.failure(f"{resp.request.method} {resp.request.url}: the registry sent no upload location")
        return urljoin(str(resp.request.url), location)

    def _checked(self, method: str, url: str, *, ok: tuple[int, ...] = (200, 201, 202), **kw: Any) -> httpx.Response:
        try:
            resp = self.send(method, url, **kw)
        except httpx.HTTPError as exc:
            raise self.failure(f'{method} "{url}": {exc}') from exc
        if resp.status_code not in ok:
            raise self.failure(describe_error(resp))
        return resp


def _file_part(path: Path, offset: int, size: int, progress: Callable[[int], None]) -> Iterator[bytes]:
    with path.open("rb") as fh:
        fh.seek(offset)
        left = size
        while left > 0:
            block = fh.read(min(_CHUNK, left))
            if not block:
                raise StoreError(f"blob {path.name} is shorter than its manifest says")
            left -= len(block)
            progress(len(block))
            yield block


def pull_model(
    store: ModelStore, name: ModelName, registry: RegistryClient, *, prune: bool = True
) -> Iterator[ProgressResponse]:
    """Pull ``name`` from its registry, yielding Ollama's statuses; the manifest appears only when complete."""
    yield ProgressResponse(status="pulling manifest")
    manifest = registry.manifest(name)
    url = registry.repo_url(name)
    fetches: dict[str, BlobFetch] = {}
    for layer in [*manifest.layers, manifest.config]:
        fetches.setdefault(layer.digest, BlobFetch(layer.digest, layer.size, url=f"{url}/blobs/{layer.digest}"))
    with store.pin() as pin:  # downloaded blobs stay while the manifest is not written yet
        pin.add(fetches)
        yield from fetch_blobs(store, registry, list(fetches.values()))
        yield ProgressResponse(status="verifying sha256 digest")
        missing = [d for d in fetches if not store.blobs.has(d)]
        if missing:
            raise StoreError(f"blobs vanished from the store during the pull: {missing}")
        problems = manifest_problems(manifest, store.blobs.read_bytes)
        if problems:  # its blobs stay unreferenced until the next prune
            raise PullError(f"{name.display}: the registry sent a damaged model: {'; '.join(problems)}")
        yield ProgressResponse(status="writing manifest")
        with store.lock.held():  # what it replaces is read where it is replaced
            old = store.manifests.read(name)
            store.put_manifest(name, manifest)
    yield from store.prune_replaced(old.manifest if old else None, manifest, prune=prune)
    yield ProgressResponse(status="success")


def push_model(store: ModelStore, name: ModelName, registry: RegistryClient) -> Iterator[ProgressResponse]:
    """Push ``name`` to the registry its name points at, yielding Ollama's statuses."""
    stored = store.manifests.read(name)
    if stored is None:
        raise ModelNotFound(name.display)
    yield ProgressResponse(status="retrieving manifest")
    manifest = stored.manifest
    for layer in [*manifest.layers, manifest.config]:
        path = store.blobs.path(layer.digest)
        if not path.is_file():
            raise StoreError(f"blob {layer.digest} of {name.display} is missing from the store; pull it again")
        job = BlobFetch(layer.digest, layer.size)
        if registry.has_blob(name, layer.digest):
            job.completed = layer.size
            yield job.progress("pushing")
            continue
        yield from follow(job, functools.partial(_upload, registry, name, layer, path, job))
    yield ProgressResponse(status="pushing manifest")
    registry.put_manifest(name, manifest.to_bytes())
    yield ProgressResponse(status="success")


def _upload(registry: RegistryClient, name: ModelName, layer: Layer, path: Path, job: BlobFetch) -> None:
    def progress(n: int) -> None:
        job.completed += n

    registry.upload_blob(name, layer, path, progress)
    job.completed = layer.size
