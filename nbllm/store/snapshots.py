"""KV snapshots on disk: a sequence's state, tied to the model and the context settings that produced it.

Snapshots live in ``<store>/kvstate/<layout>/``, never among the blobs: ``<layout>`` is a hash of the
model digest and the context settings that shape a state (the engine's ``layout``), so a server only ever
looks at files it could use. One file per token prefix, named by the hash of its token ids::

    MAGIC (8 bytes) | header length (u32 LE) | header (JSON) | token ids (i32 LE) | state (llama.cpp's bytes)

The header carries the format version, the layout, the number of tokens, the token ids' and the state's
SHA-256 and sizes; :meth:`SnapshotStore.load` checks them all and refuses a file that is damaged,
truncated or made for another model or other settings with a :class:`SnapshotError` that says which.
Files are written as blobs are (temporary file, fsync, rename, fsync of the directory), so a ``kill -9``
leaves either the old state or the new one. Over the byte budget the least recently used go first.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from nbllm.errors import StoreError
from nbllm.store.blobs import write_atomic, write_error
from nbllm.store.permissions import make_private_dirs

__all__ = ["FORMAT_VERSION", "Snapshot", "SnapshotError", "SnapshotStore", "layout_key"]

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
MAGIC = b"NBLLMKV\x00"
_LEN = struct.Struct("<I")
_MAX_HEADER = 1 << 20
SUFFIX = ".kv"


class SnapshotError(StoreError):
    """A snapshot file that cannot be used: damaged, truncated, or made for another model or settings."""


@dataclass(frozen=True)
class Snapshot:
    """A snapshot file and the tokens whose state it holds."""

    path: Path
    tokens: tuple[int, ...]
    size: int


def layout_key(layout: Mapping[str, Any]) -> str:
    """The directory name of a layout: a hash of its canonical JSON."""
    return hashlib.sha256(json.dumps(dict(layout), sort_keys=True).encode()).hexdigest()[:32]


def _tokens_bytes(tokens: Sequence[int]) -> bytes:
    return struct.pack(f"<{len(tokens)}i", *tokens)


class SnapshotStore:
    """The snapshot directory of a model store, with a byte budget for all layouts together."""

    def __init__(self, root: Path, budget: int) -> None:
        self.root = root
        self.budget = budget

    def directory(self, layout: Mapping[str, Any]) -> Path:
        """Where the snapshots of one layout go."""
        return self.root / layout_key(layout)

    # ── writing ──────────────────────────────────────────────────────────────────────────────
    def save(self, layout: Mapping[str, Any], tokens: Sequence[int], state: bytes | memoryview) -> Snapshot:
        """Write the state of ``tokens`` atomically (replacing one of the same tokens), then keep to the budget."""
        ids = _tokens_bytes(tokens)
        header = json.dumps(
            {
                "format": FORMAT_VERSION,
                "layout": dict(layout),
                "n_tokens": len(tokens),
                "tokens_sha256": hashlib.sha256(ids).hexdigest(),
                "state_size": len(state),
                "state_sha256": hashlib.sha256(state).hexdigest(),
            },
            sort_keys=True,
        ).encode()
        directory = self.directory(layout)
        target = directory / (hashlib.sha256(ids).hexdigest()[:40] + SUFFIX)
        try:
            make_private_dirs(directory)
        except OSError as exc:
            raise write_error(exc, "a KV snapshot") from None
        write_atomic(target, (MAGIC, _LEN.pack(len(header)), header, ids, state), "a KV snapshot")
        size = target.stat().st_size
        self.evict(keep=target)
        return Snapshot(target, tuple(tokens), size)

    def evict(self, keep: Path | None = None) -> list[Path]:
        """Remove the least recently used snapshots (and stale temporary files) until the budget holds."""
        files: list[tuple[float, int, Path]] = []
        removed: list[Path] = []
        for path in self.root.glob(f"*/*{SUFFIX}") if self.root.is_dir() else ():
            with contextlib.suppress(OSError):
                st = path.stat()
                files.append((st.st_mtime, st.st_size, path))
        total = sum(size for _, size, _ in files)
        for _, size, path in sorted(files):
            if total <= self.budget:
                break
            if path == keep:
                continue
            with contextlib.suppress(OSError):
                path.unlink()
                removed.append(path)
                total -= size
        return removed

    def discard(self, path: Path) -> None:
        """Remove one snapshot (superseded, or unusable)."""
        with contextlib.suppress(OSError):
            path.unlink()

    # ── reading ──────────────────────────────────────────────────────────────────────────────
    def index(self, layout: Mapping[str, Any]) -> list[Snapshot]:
        """The snapshots of a layout, by their headers; files that cannot even be indexed are logged and skipped."""
        directory = self.directory(layout)
        found = []
        for path in sorted(directory.glob(f"*{SUFFIX}")) if directory.is_dir() else ():
            try:
                with path.open("rb") as fh:
                    _, tokens = self._head(fh, path, layout)
                found.append(Snapshot(path, tokens, path.stat().st_size))
            except (OSError, SnapshotError) as exc:
                log.warning("ignoring KV snapshot %s: %s", path.name, exc)
        return found

    def load(self, path: Path, layout: Mapping[str, Any], tokens: Sequence[int] | None = None) -> bytes:
        """The state in a snapshot file, every check passed (and its tokens equal to ``tokens``, if given)."""
        try:
            with path.open("rb") as fh:
                header, stored = self._head(fh, path, layout)
                state = fh.read(int(header["state_size"]) + 1)
        except OSError as exc:
            raise SnapshotError(f"cannot read KV snapshot {path.name}: {exc.strerror or exc}") from None
        if tokens is not None and tuple(tokens) != stored:
            raise SnapshotError(f"KV snapshot {path.name} holds other tokens than expected")
        if len(state) != header["state_size"]:
            raise SnapshotError(f"KV snapshot {path.name} is truncated or has trailing bytes")
        if hashlib.sha256(state).hexdigest() != header["state_sha256"]:
            raise SnapshotError(f"KV snapshot {path.name} is damaged (its state's checksum does not match)")
        with contextlib.suppress(OSError):
            os.utime(path)  # most recently used
        return state

    def _head(self, fh: BinaryIO, path: Path, layout: Mapping[str, Any]) -> tuple[dict[str, Any], tuple[int, ...]]:
        """Read and check the header and token ids; the file stays positioned at the state."""
        name = path.name
        if fh.read(len(MAGIC)) != MAGIC:
            raise SnapshotError(f"{name} is not a KV snapshot")
        raw = fh.read(_LEN.size)
        size = _LEN.unpack(raw)[0] if len(raw) == _LEN.size else -1
        if not 0 < size <= _MAX_HEADER:
            raise SnapshotError(f"KV snapshot {name} is truncated or damaged (bad header length)")
        try:
            header = json.loads(fh.read(size))
            n_tokens, version = int(header["n_tokens"]), header["format"]
            stored_layout = header["layout"]
        except (ValueError, KeyError, TypeError):
            raise SnapshotError(f"KV snapshot {name} is truncated or damaged (unreadable header)") from None
        if version != FORMAT_VERSION:
            raise SnapshotError(f"KV snapshot {name} has format {version}; this nbllm reads format {FORMAT_VERSION}")
        if stored_layout != dict(layout):
            diff = sorted(k for k in {**stored_layout, **layout} if stored_layout.get(k) != layout.get(k))
            raise SnapshotError(f"KV snapshot {name} was made for another model or settings ({', '.join(diff)} differ)")
        ids = fh.read(4 * n_tokens)
        if len(ids) != 4 * n_tokens or hashlib.sha256(ids).hexdigest() != header.get("tokens_sha256"):
            raise SnapshotError(f"KV snapshot {name} is truncated or damaged (token ids)")
        return header, tuple(struct.unpack(f"<{n_tokens}i", ids))
