"""Content-addressed blobs: ``blobs/sha256-<hex>``, written atomically and verified while streaming."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import TracebackType

from nbllm.errors import BlobNotFound, DigestMismatch, StoreError
from nbllm.store.digest import digest_from_filename, filename_for, normalize_digest
from nbllm.store.lock import StoreLock, hold_file, in_use
from nbllm.store.permissions import FILE_MODE, make_private_dirs

__all__ = ["BlobStore", "BlobWriter", "fsync_dir", "is_disk_full", "write_atomic", "write_error"]

log = logging.getLogger(__name__)


_DISK_FULL = frozenset({errno.ENOSPC, errno.EFBIG, errno.EDQUOT})


def is_disk_full(exc: OSError) -> bool:
    """Whether a write failed for lack of space (a full disk, a quota, a file size limit)."""
    return exc.errno in _DISK_FULL


def write_error(exc: OSError, what: str) -> StoreError:
    """A StoreError that says which write failed and, for a full disk, what to do."""
    reason = exc.strerror or str(exc)
    if is_disk_full(exc):
        return StoreError(
            f"not enough disk space to write {what} ({reason}); free some space, or point OLLAMA_MODELS "
            "at a larger disk, and try again"
        )
    return StoreError(f"cannot write {what}: {reason}")


def fsync_dir(path: Path) -> None:
    """Flush a directory entry (after a rename) so the rename survives a crash."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_atomic(target: Path, parts: Iterable[bytes | memoryview], what: str) -> None:
    """Replace ``target`` with ``parts`` in one step: a temporary file beside it (``.tmp-…``, ``0600``),
    fsync, rename, fsync of the directory. A failure leaves the previous file and no temporary one, and
    an OSError comes as :func:`write_error` naming ``what``. The directory must exist."""
    try:
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=target.parent)
    except OSError as exc:
        raise write_error(exc, what) from exc
    try:
        with os.fdopen(fd, "wb") as fh:
            for part in parts:
                fh.write(part)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise write_error(exc, what) from exc
        raise
    fsync_dir(target.parent)


def _blob_write_error(exc: OSError, root: Path) -> StoreError:
    """A failed blob write, logged with the store's path; the error (which clients see) names no path."""
    log.error("cannot write a blob in %s: %s", root, exc)
    return write_error(exc, "a blob in the model store")


class BlobWriter:
    """Streams bytes into a temporary file next to the blobs, hashing as it goes.

    ``commit()`` verifies the digest (when one was expected), fsyncs and renames the file into
    place; leaving the ``with`` block without committing removes the temporary file, so a failed
    or interrupted write never leaves a partial blob under a real digest name.
    """

    def __init__(self, store: BlobStore, expected: str | None = None) -> None:
        self._store = store
        self._expected = normalize_digest(expected) if expected else None
        self._hash = hashlib.sha256()
        self.size = 0
        try:
            with store.lock.held() if store.lock else contextlib.nullcontext():  # (a startup prune sees it held)
                fd, name = tempfile.mkstemp(prefix=".tmp-", suffix=".blob", dir=store.root)
                hold_file(fd)  # in use: a prune in another process leaves it alone
        except OSError as exc:
            raise _blob_write_error(exc, store.root) from exc
        self._fh = os.fdopen(fd, "wb")
        self._tmp = Path(name)
        self.digest: str | None = None

    def write(self, data: bytes) -> None:
        """Append bytes."""
        try:
            self._fh.write(data)
        except OSError as exc:  # the `with` block removes the temporary file
            raise _blob_write_error(exc, self._store.root) from exc
        self._hash.update(data)
        self.size += len(data)

    def commit(self) -> str:
        """Verify, flush and move the blob into place; return its digest."""
        try:
            self._fh.flush()
            os.fsync(self._fh.fileno())
            if os.name == "nt":  # Windows cannot rename an open file; elsewhere it stays held until in place
                self._fh.close()
        except OSError as exc:
            self.abort()
            raise _blob_write_error(exc, self._store.root) from exc
        digest = "sha256:" + self._hash.hexdigest()
        if self._expected is not None and digest != self._expected:
            self.abort()
            raise DigestMismatch(self._expected, digest)
        target = self._store.path(digest)
        os.chmod(self._tmp, FILE_MODE)  # not world-readable (store.permissions; Ollama's are 0644)
        os.replace(self._tmp, target)
        with contextlib.suppress(OSError):
            self._fh.close()
        fsync_dir(self._store.root)
        self.digest = digest
        return digest

    def abort(self) -> None:
        """Drop the temporary file."""
        if not self._fh.closed:
            self._fh.close()
        self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> BlobWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.digest is None:
            self.abort()


class BlobStore:
    """The ``blobs/`` directory of a model store."""

    def __init__(self, root: Path, lock: StoreLock | None = None) -> None:
        self.root = root
        self.lock = lock
        """The store's lock (None for a bare blobs directory)."""
        make_private_dirs(root)

    def path(self, digest: str) -> Path:
        """Where the blob of ``digest`` lives (whether or not it exists)."""
        return self.root / filename_for(digest)

    def has(self, digest: str) -> bool:
        """Whether the blob is present."""
        return self.path(digest).is_file()

    def size(self, digest: str) -> int:
        """Size in bytes of a present blob."""
        try:
            return self.path(digest).stat().st_size
        except FileNotFoundError:
            raise BlobNotFound(normalize_digest(digest)) from None

    def writer(self, expected: str | None = None) -> BlobWriter:
        """A writer for a new blob (verified against ``expected`` if given)."""
        return BlobWriter(self, expected)

    def put_stream(self, chunks: Iterable[bytes], expected: str | None = None) -> str:
        """Store a stream of bytes; return its digest."""
        with self.writer(expected) as w:
            for chunk in chunks:
                w.write(chunk)
            return w.commit()

    def put_bytes(self, data: bytes) -> str:
        """Store small bytes (template, params, license layers); return the digest."""
        return self.put_stream([data])

    def read_bytes(self, digest: str) -> bytes:
        """The content of a (small) blob."""
        try:
            return self.path(digest).read_bytes()
        except FileNotFoundError:
            raise BlobNotFound(normalize_digest(digest)) from None

    def digests(self) -> Iterator[str]:
        """Digests of every complete blob."""
        if not self.root.is_dir():
            return
        for entry in self.root.iterdir():
            digest = digest_from_filename(entry.name)
            if digest is not None and entry.is_file():
                yield digest

    def delete(self, digest: str) -> None:
        """Remove a blob if present."""
        self.path(digest).unlink(missing_ok=True)

    def gc(self, referenced: set[str]) -> list[str]:
        """Remove blobs not in ``referenced``; return what was removed."""
        removed = []
        for digest in list(self.digests()):
            if digest not in referenced:
                self.delete(digest)
                removed.append(digest)
        if removed:
            log.info("pruned %d unreferenced blob(s)", len(removed))
        return removed

    def clean_temp(self) -> None:
        """Remove temporary files left by writes that never finished (a crash), not those of live writers."""
        for entry in self.root.glob(".tmp-*.blob"):
            if not in_use(entry):
                with contextlib.suppress(OSError):
                    entry.unlink()

    def check_writable(self) -> None:
        """Raise StoreError if the blobs directory cannot be written."""
        if not os.access(self.root, os.W_OK):
            log.error("model store %s is not writable", self.root)
            raise StoreError("the model store (OLLAMA_MODELS) is not writable")
