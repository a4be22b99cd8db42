"""Bringing blobs into the store: several at once, resumable, verified, with Ollama's progress lines.

Each download appends to ``blobs/sha256-<hex>-partial`` and hashes while it writes, so an
interrupted pull -- a dropped connection, a killed process -- resumes with an HTTP ``Range``
request. A partial file is locked while a download appends to it (one download per blob, across
threads and processes), and a blob is renamed into place only when its sha256 matches. Bytes kept
from an earlier attempt that fail verification are dropped and the blob is fetched once more.
Used by registry pulls (``store.registry``) and Hugging Face pulls (``store.hf``).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import wait as wait_for
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import httpx

from nbllm.errors import Cancelled, DigestMismatch, PullError
from nbllm.schema import ProgressResponse
from nbllm.store.blobs import fsync_dir, is_disk_full, write_error
from nbllm.store.digest import filename_for
from nbllm.store.local import ModelStore
from nbllm.store.permissions import FILE_MODE

try:  # POSIX: one download per blob at a time, across threads and processes
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "REPORT_EVERY",
    "STALL_TIMEOUT",
    "BlobFetch",
    "Sender",
    "describe_error",
    "fetch_blobs",
    "follow",
    "retries_exhausted",
]

log = logging.getLogger(__name__)

REPORT_EVERY = 0.06
"""Seconds between progress lines of one layer (Ollama's ~60 ms)."""
STALL_TIMEOUT = 30.0
"""Seconds a download (or any registry call) may receive nothing before it counts as stalled: the
read timeout of the HTTP clients. A stalled download is retried from where it stopped."""
_CHUNK = 1 << 20
_RETRIES = 5
_WORKERS = 4
_STOP_WAIT = 5.0
"""Seconds a stopped pull waits for its downloads to let go of their partial files (their connections cut)."""


class Sender(Protocol):
    """What a download needs of an HTTP client: one request, answering auth challenges itself."""

    def send(
        self, method: str, url: str, *, headers: dict[str, str] | None = None, stream: bool = False
    ) -> httpx.Response:
        """Send a request; transport errors propagate."""


def describe_error(resp: httpx.Response) -> str:
    """``<status>: <message>`` from a registry's (Docker ``errors`` list) or nbllm's (``error``) error body."""
    with contextlib.suppress(httpx.ResponseNotRead):
        text = resp.text.strip()
        with contextlib.suppress(ValueError, AttributeError, TypeError, IndexError, KeyError):
            data = resp.json()
            if isinstance(data, dict) and data.get("errors"):
                first = data["errors"][0]
                text = str(first.get("message") or first.get("code"))
            elif isinstance(data, dict) and data.get("error"):
                text = str(data["error"])
        return f"{resp.status_code}: {text[:300]}" if text else str(resp.status_code)
    return str(resp.status_code)


@dataclass
class BlobFetch:
    """One blob to bring into the store: from ``url`` (resumable) or a local ``path`` (copied, verified)."""

    digest: str
    size: int
    url: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    path: Path | None = None
    completed: int = 0
    error: BaseException | None = None
    done: threading.Event = field(default_factory=threading.Event)
    receiving: httpx.Response | None = None
    """The response a download is reading now (cut by :meth:`abort` when its pull stops)."""

    def abort(self) -> None:
        """Wake a download blocked reading its response: shut its socket down (closing it would not wake it)."""
        resp = self.receiving
        stream = resp.extensions.get("network_stream") if resp is not None else None
        sock = stream.get_extra_info("socket") if stream is not None else None
        if isinstance(sock, socket.socket):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def progress(self, verb: str = "pulling") -> ProgressResponse:
        """Ollama's progress line for this blob."""
        return ProgressResponse(
            status=f"{verb} {self.digest[7:19]}", digest=self.digest, total=self.size, completed=self.completed
        )


def fetch_blobs(
    store: ModelStore, registry: Sender, fetches: list[BlobFetch], *, workers: int = _WORKERS
) -> Iterator[ProgressResponse]:
    """Bring blobs into the store, several at once; yield progress for each in order (present ones at once)."""
    stop = threading.Event()
    missing = [f for f in fetches if not store.blobs.has(f.digest)]
    missing_ids = {id(f) for f in missing}
    pool = ThreadPoolExecutor(max_workers=max(1, min(workers, len(missing))), thread_name_prefix="nbllm-pull")
    futures = [pool.submit(_run, store, registry, f, stop) for f in missing]
    try:
        for f in fetches:
            if id(f) not in missing_ids:
                f.completed = f.size
                yield f.progress()
                continue
            yield f.progress()
            while not f.done.wait(REPORT_EVERY):
                _raise_first_error(fetches)
                yield f.progress()
            _raise_first_error(fetches)
            yield f.progress()
    finally:
        stop.set()
        pool.shutdown(wait=False, cancel_futures=True)
        if any(not fut.done() for fut in futures):
            # a download blocked in a read would hold its partial file's lock until the read timed out,
            # and the next pull of that blob would wait for it: cut the connections, let the workers end
            for f in missing:
                f.abort()
            wait_for(futures, timeout=_STOP_WAIT)
            log.info("pull stopped; partial downloads are kept and resume on the next pull")


def _raise_first_error(fetches: list[BlobFetch]) -> None:
    for f in fetches:
        if f.error is not None:
            raise f.error


def _run(store: ModelStore, registry: Sender, fetch: BlobFetch, stop: threading.Event) -> None:
    try:
        if fetch.path is not None:
            _copy_in(store, fetch, stop)
        else:
            _download(store, registry, fetch, stop)
    except BaseException as exc:
        fetch.error = exc
    finally:
        fetch.done.set()


def _copy_in(store: ModelStore, fetch: BlobFetch, stop: threading.Event) -> None:
    assert fetch.path is not None
    with store.blobs.writer(expected=fetch.digest) as writer, fetch.path.open("rb") as src:
        while block := src.read(_CHUNK):
            if stop.is_set():
                raise Cancelled("pull cancelled")
            writer.write(block)
            fetch.completed += len(block)
        writer.commit()


class _Partial:
    """``blobs/sha256-<hex>-partial``: bytes received so far, locked while one download appends to it."""

    def __init__(self, store: ModelStore, digest: str) -> None:
        self.path = store.blobs.root / (filename_for(digest) + "-partial")
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, FILE_MODE)  # (mkstemp's mode, as blobs)
        self.fh = os.fdopen(fd, "a+b")
        self.hash = hashlib.sha256()
        self.size = 0

    def lock(self, stop: threading.Event) -> None:
        while fcntl is not None:
            try:
                fcntl.flock(self.fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:  # another pull of the same blob is running
                if stop.wait(0.05):
                    raise Cancelled("pull cancelled") from None

    def load(self, limit: int) -> None:
        """Hash what an earlier attempt left (dropping it if it is longer than the blob)."""
        self.fh.seek(0, os.SEEK_END)
        if self.fh.tell() > limit:
            self.reset()
            return
        self.fh.seek(0)
        while block := self.fh.read(_CHUNK):
            self.hash.update(block)
            self.size += len(block)

    def reset(self) -> None:
        self.fh.seek(0)
        self.fh.truncate()
        self.hash = hashlib.sha256()
        self.size = 0

    def append(self, block: bytes) -> None:
        self.fh.write(block)
        self.hash.update(block)
        self.size += len(block)

    def close(self) -> None:
        self.fh.close()


def _download(store: ModelStore, registry: Sender, fetch: BlobFetch, stop: threading.Event) -> None:
    partial = _Partial(store, fetch.digest)
    try:
        partial.lock(stop)
        if store.blobs.has(fetch.digest):  # another pull finished it while we waited
            fetch.completed = fetch.size
            return
        partial.load(fetch.size)
        resumed = partial.size > 0
        _fill(registry, fetch, partial, stop)
        if resumed and "sha256:" + partial.hash.hexdigest() != fetch.digest:
            # bytes kept from an earlier attempt were bad (a crash mid-write, a corrupt source): start over once
            log.warning("%s: resumed download failed verification; downloading it again", fetch.digest[7:19])
            partial.reset()
            _fill(registry, fetch, partial, stop)
        actual = "sha256:" + partial.hash.hexdigest()
        if actual != fetch.digest:
            partial.close()
            partial.path.unlink(missing_ok=True)
            raise DigestMismatch(fetch.digest, actual)
        partial.fh.flush()
        os.fsync(partial.fh.fileno())
        os.chmod(partial.path, FILE_MODE)
        os.replace(partial.path, store.blobs.path(fetch.digest))
        fsync_dir(store.blobs.root)
    except OSError as exc:
        partial.close()
        if is_disk_full(exc):  # it cannot finish here: give the space back
            partial.path.unlink(missing_ok=True)
        raise write_error(exc, f"the blob {fetch.digest[7:19]}") from exc
    finally:
        partial.close()


def _fill(registry: Sender, fetch: BlobFetch, partial: _Partial, stop: threading.Event) -> None:
    """Receive until the partial file has every byte, resuming after dropped connections."""
    fetch.completed = partial.size
    failures = 0
    while partial.size < fetch.size:
        try:
            _receive(registry, fetch, partial, stop)
        except (httpx.TransportError, httpx.DecodingError) as exc:
            if stop.is_set():  # the pull was abandoned and its connections closed under us
                raise Cancelled("pull cancelled") from None
            failures += 1
            if failures > _RETRIES:
                raise retries_exhausted(exc, failures) from exc
            log.warning("%s: download interrupted (%s); resuming", fetch.digest[7:19], exc)
            if stop.wait(min(0.25 * 2**failures, 4.0)):
                raise Cancelled("pull cancelled") from None


def retries_exhausted(exc: Exception, attempts: int) -> PullError:
    """The error once a download failed ``attempts`` times; a stall says so (the partial file stays, to resume)."""
    if isinstance(exc, httpx.ReadTimeout):
        return PullError(
            f"download stalled: no data for {STALL_TIMEOUT:g}s, {attempts} times; "
            "the part already downloaded is kept, and pulling again resumes from it"
        )
    return PullError(f"max retries exceeded: {exc}")


def _receive(registry: Sender, fetch: BlobFetch, partial: _Partial, stop: threading.Event) -> None:
    assert fetch.url is not None
    headers = {"Accept-Encoding": "identity", **fetch.headers}
    if partial.size:
        headers["Range"] = f"bytes={partial.size}-"
    resp = registry.send("GET", fetch.url, headers=headers, stream=True)
    fetch.receiving = resp
    try:
        if stop.is_set():  # stopped while connecting: abort() may have come before this response existed
            raise Cancelled("pull cancelled")
        if resp.status_code == 416:  # our partial is not a prefix the server agrees with: start over
            partial.reset()
            return
        if resp.status_code >= 400:
            resp.read()
            raise PullError(f"download {fetch.digest[7:19]}: {describe_error(resp)}")
        if resp.status_code == 200 and partial.size:  # Range ignored: the whole blob comes again
            partial.reset()
        fetch.completed = partial.size
        for block in resp.iter_bytes(_CHUNK):
            if stop.is_set():
                raise Cancelled("pull cancelled")
            partial.append(block)
            fetch.completed = partial.size
            if partial.size > fetch.size:
                partial.reset()
                raise PullError(f"download {fetch.digest[7:19]}: the registry sent more than {fetch.size} bytes")
        if partial.size < fetch.size:
            raise httpx.RemoteProtocolError(f"connection closed after {partial.size} of {fetch.size} bytes")
    finally:
        fetch.receiving = None
        resp.close()


def follow(job: BlobFetch, work: Callable[[], None]) -> Iterator[ProgressResponse]:
    """Run ``work`` in a thread, yielding the job's progress every REPORT_EVERY seconds."""

    def run() -> None:
        try:
            work()
        except BaseException as exc:
            job.error = exc
        finally:
            job.done.set()

    thread = threading.Thread(target=run, name="nbllm-transfer", daemon=True)
    started = time.monotonic()
    thread.start()
    yield job.progress("pushing")
    while not job.done.wait(REPORT_EVERY):
        yield job.progress("pushing")
    if job.error is not None:
        raise job.error
    log.debug("pushed %s in %.2fs", job.digest[7:19], time.monotonic() - started)
    yield job.progress("pushing")
