"""The store lock and pins: what keeps every manifest's blobs present while many writers share a store.

Two kinds of writers share a store: threads of one server, and other processes (a CLI working
in-process beside a server, a second server) on the same ``OLLAMA_MODELS``. The lock is a
``threading.RLock`` plus an ``flock`` on ``<store>/.nbllm-lock``, so it excludes both. It is held
only for short steps: checking that a manifest's blobs are present and writing it, and deciding
which blobs nothing references and removing them. Long work (downloads, conversions) runs outside it.

A blob that an operation in progress needs but no manifest names yet (a finished download whose
manifest waits for the other layers, the blobs of a model being copied into a new one) is *pinned*:
its digest is listed in a file under ``<store>/.nbllm-pins/`` that its process holds a shared
``flock`` on. Garbage collection and delete leave pinned blobs alone. A pin file whose lock nobody
holds belongs to a process that died, and is removed. ``fcntl`` is used directly (not the
``filelock`` package) because liveness is probed by trying a non-blocking lock on another
process's pin file without truncating it; without ``fcntl`` (Windows) locks and pins cover the
threads of one process only.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import TracebackType

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = ["IN_USE", "Pin", "StoreLock", "hold_file", "in_use"]

log = logging.getLogger(__name__)

LOCK_FILE = ".nbllm-lock"
PINS_DIR = ".nbllm-pins"
IN_USE = ".in-use"
"""A work directory's marker file, held (:func:`hold_file`) while its owner works in it."""


def hold_file(fd: int) -> None:
    """Mark an open temporary file as in use (a shared ``flock``, released when the file is closed)."""
    if fcntl is not None:
        fcntl.flock(fd, fcntl.LOCK_SH)


def in_use(path: Path) -> bool:
    """Whether a live writer holds ``path`` (see :func:`hold_file`); a crashed writer's file is not in use."""
    if fcntl is None:
        return False
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


class StoreLock:
    """One writer at a time in a store, across threads and processes; re-entrant in one thread."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.pins_dir = root / PINS_DIR
        self._thread = threading.RLock()
        self._depth = 0
        self._fd: int | None = None
        self._own: dict[str, set[str]] = {}
        """Live pins of this object (by pin file name): pins without ``fcntl``, and a cache of ours."""

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        """Hold the lock for the ``with`` block."""
        with self._thread:
            if self._depth == 0:
                self._fd = self._acquire()
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
                if self._depth == 0 and self._fd is not None:
                    fd, self._fd = self._fd, None
                    with contextlib.suppress(OSError):
                        fcntl.flock(fd, fcntl.LOCK_UN)
                    os.close(fd)

    def _acquire(self) -> int | None:
        if fcntl is None:
            return None
        path = self.root / LOCK_FILE
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError:
            try:  # another user's lock file (flock needs no write access)
                fd = os.open(path, os.O_RDONLY)
            except OSError as exc:  # a read-only store: nothing here can write it anyway
                log.debug("store lock %s unavailable: %s", path, exc)
                return None
        fcntl.flock(fd, fcntl.LOCK_EX)
        return fd

    def pin(self) -> Pin:
        """A new, empty pin (use it as a context manager; add digests as they become needed)."""
        return Pin(self)

    def pinned(self) -> set[str]:
        """Every digest a live pin names, in this process or another (call with the lock held)."""
        digests: set[str] = set()
        for own in self._own.values():
            digests |= own
        if fcntl is None or not self.pins_dir.is_dir():
            return digests
        for path in self.pins_dir.iterdir():
            if path.name in self._own:
                continue
            try:
                fd = os.open(path, os.O_RDONLY)
            except OSError:
                continue  # released meanwhile
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:  # its owner is alive
                    digests |= set(os.read(fd, 1 << 24).decode("ascii", errors="replace").split())
                else:  # nobody holds it: its process died
                    path.unlink(missing_ok=True)
            finally:
                os.close(fd)
        return digests


class Pin:
    """Digests an operation in progress needs: garbage collection and delete keep their blobs."""

    def __init__(self, lock: StoreLock) -> None:
        self._lock = lock
        self.name = f"{os.getpid()}-{uuid.uuid4().hex}"
        self.digests: set[str] = set()
        self._fd: int | None = None

    def add(self, digests: Iterable[str]) -> None:
        """Pin more digests (normalised ``sha256:<hex>``); visible to every process once this returns."""
        new = set(digests) - self.digests
        if not new:
            return
        with self._lock.held():
            self.digests |= new
            self._lock._own[self.name] = set(self.digests)
            if fcntl is None:
                return
            if self._fd is None:
                self._lock.pins_dir.mkdir(exist_ok=True)
                self._fd = os.open(self._lock.pins_dir / self.name, os.O_RDWR | os.O_CREAT, 0o644)
                fcntl.flock(self._fd, fcntl.LOCK_SH)
            data = "\n".join(sorted(self.digests)).encode("ascii")
            os.ftruncate(self._fd, 0)
            os.pwrite(self._fd, data, 0)

    def close(self) -> None:
        """Release the pin."""
        with self._lock.held():
            self._lock._own.pop(self.name, None)
            if self._fd is not None:
                (self._lock.pins_dir / self.name).unlink(missing_ok=True)
                os.close(self._fd)
                self._fd = None

    def __enter__(self) -> Pin:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
