"""Manifests: ``manifests/<host>/<namespace>/<model>/<tag>``, Docker v2 JSON with Ollama's media types."""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from nbllm.errors import InvalidRequest, StoreError
from nbllm.store.blobs import write_atomic
from nbllm.store.digest import normalize_digest
from nbllm.store.names import ModelName
from nbllm.store.permissions import make_private_dirs

__all__ = [
    "MEDIA_ADAPTER",
    "MEDIA_CONFIG",
    "MEDIA_DRAFT",
    "MEDIA_LICENSE",
    "MEDIA_MANIFEST",
    "MEDIA_MESSAGES",
    "MEDIA_MODEL",
    "MEDIA_PARAMS",
    "MEDIA_PROJECTOR",
    "MEDIA_SYSTEM",
    "MEDIA_TEMPLATE",
    "Layer",
    "Manifest",
    "ManifestStore",
    "StoredManifest",
]

MEDIA_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
MEDIA_CONFIG = "application/vnd.docker.container.image.v1+json"
MEDIA_MODEL = "application/vnd.ollama.image.model"
MEDIA_ADAPTER = "application/vnd.ollama.image.adapter"
MEDIA_PROJECTOR = "application/vnd.ollama.image.projector"
MEDIA_DRAFT = "application/vnd.ollama.image.draft"  # a draft model's GGUF (speculative decoding)
MEDIA_TEMPLATE = "application/vnd.ollama.image.template"
MEDIA_PROMPT = "application/vnd.ollama.image.prompt"  # legacy name of the template layer
MEDIA_SYSTEM = "application/vnd.ollama.image.system"
MEDIA_PARAMS = "application/vnd.ollama.image.params"
MEDIA_MESSAGES = "application/vnd.ollama.image.messages"
MEDIA_LICENSE = "application/vnd.ollama.image.license"


class Layer(BaseModel):
    """One blob referenced by a manifest."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)
    mediaType: str
    digest: str
    """Always ``sha256:<hex>``: either spelling is accepted and normalised here, so that digests from
    disk, a registry or a request compare equal as strings."""
    size: int
    from_: str | None = Field(default=None, alias="from")

    @field_validator("digest", mode="before")
    @classmethod
    def _normalize_digest(cls, value: object) -> str:
        if not isinstance(value, str):
            raise ValueError("digest must be a string")
        try:
            return normalize_digest(value)
        except InvalidRequest as exc:
            raise ValueError(f"invalid digest {value[:80]!r}") from exc


class Manifest(BaseModel):
    """An image manifest: a config blob plus layers."""

    model_config = ConfigDict(extra="allow")
    schemaVersion: int = 2
    mediaType: str = MEDIA_MANIFEST
    config: Layer
    layers: list[Layer] = Field(default_factory=list)

    def to_bytes(self) -> bytes:
        """Canonical JSON of the manifest (its sha256 is the model's digest)."""
        return self.model_dump_json(by_alias=True, exclude_none=True).encode()

    def layer(self, media_type: str) -> Layer | None:
        """The first layer of a media type."""
        return next((layer for layer in self.layers if layer.mediaType == media_type), None)

    def digests(self) -> set[str]:
        """Every blob the manifest references, config included."""
        return {self.config.digest, *(layer.digest for layer in self.layers)}

    @property
    def size(self) -> int:
        """Total bytes of config and layers (what ``ollama list`` shows)."""
        return self.config.size + sum(layer.size for layer in self.layers)


@dataclass(frozen=True)
class StoredManifest:
    """A manifest as found on disk."""

    name: ModelName
    manifest: Manifest
    digest: str
    """sha256 hex of the manifest file."""
    modified_at: datetime


class ManifestStore:
    """The ``manifests/`` tree."""

    def __init__(self, root: Path) -> None:
        self.root = root
        make_private_dirs(root)

    def _path(self, name: ModelName) -> Path:
        # ModelName's part rules exclude separators and leading dots, so this stays inside root.
        return self.root.joinpath(*name.parts())

    def find(self, name: ModelName) -> Path | None:
        """The manifest file of ``name``, matching existing names case-insensitively."""
        exact = self._path(name)
        if exact.is_file():
            return exact
        current = self.root
        for part in name.parts():
            if not current.is_dir():
                return None
            try:
                match = next((p for p in current.iterdir() if p.name.lower() == part.lower()), None)
            except (FileNotFoundError, NotADirectoryError):  # removed by a delete meanwhile
                return None
            if match is None:
                return None
            current = match
        return current if current.is_file() else None

    def read(self, name: ModelName) -> StoredManifest | None:
        """Load a manifest, or None if the model is not in the store."""
        path = self.find(name)
        if path is None:
            return None
        return self._load(path, name)

    def _load(self, path: Path, name: ModelName) -> StoredManifest | None:
        try:
            raw = path.read_bytes()
            manifest = Manifest.model_validate_json(raw)
            mtime = path.stat().st_mtime
        except FileNotFoundError:
            return None  # deleted between finding and reading it: not there
        except (OSError, ValidationError) as exc:
            # (the message names no path: it reaches API clients, who have no business knowing the server's)
            reason = exc.strerror or type(exc).__name__ if isinstance(exc, OSError) else "not a valid manifest"
            raise StoreError(
                f"the manifest of {name} is unreadable ({reason}); remove the model and pull or create it again"
            ) from exc
        real = ModelName(*path.relative_to(self.root).parts)
        return StoredManifest(
            name=real,
            manifest=manifest,
            digest=hashlib.sha256(raw).hexdigest(),
            modified_at=datetime.fromtimestamp(mtime, tz=timezone.utc),
        )

    def write(self, name: ModelName, manifest: Manifest) -> str:
        """Write a manifest atomically (temp file, fsync, rename); return its digest hex."""
        existing = self.find(name)
        target = existing if existing is not None else self._path(name)
        make_private_dirs(target.parent)
        data = manifest.to_bytes()
        write_atomic(target, [data], f"the manifest of {name}")
        return hashlib.sha256(data).hexdigest()

    def delete(self, name: ModelName) -> bool:
        """Remove a manifest and any directories it leaves empty; False if it did not exist."""
        path = self.find(name)
        if path is None:
            return False
        try:
            path.unlink()
        except FileNotFoundError:  # another delete won
            return False
        parent = path.parent
        while parent != self.root:
            with contextlib.suppress(OSError):
                parent.rmdir()
            parent = parent.parent
        return True

    def clean_temp(self) -> None:
        """Remove temporary files of manifest writes that never finished (a crash), and the directories
        they leave empty; call at startup."""
        for entry in self.root.glob("*/*/*/.tmp-*"):
            with contextlib.suppress(OSError):
                entry.unlink()
            for parent in (entry.parent, entry.parent.parent, entry.parent.parent.parent):
                with contextlib.suppress(OSError):
                    parent.rmdir()  # only succeeds when empty

    def paths(self) -> list[Path]:
        """Every file four levels down (``<host>/<namespace>/<model>/<tag>``), tolerating directories that a
        concurrent delete removes while they are listed."""
        level = [self.root]
        for _ in range(4):
            below: list[Path] = []
            for parent in level:
                try:
                    below += [p for p in parent.iterdir() if not p.name.startswith(".tmp-")]
                except (FileNotFoundError, NotADirectoryError):
                    continue
            level = below
        return sorted(level)

    def all(self) -> Iterator[StoredManifest]:
        """Every readable manifest in the store (unreadable ones are skipped)."""
        for path in self.paths():
            if not path.is_file() or path.name.startswith(".tmp-"):
                continue
            parts = path.relative_to(self.root).parts
            try:
                name = ModelName.parse(f"{parts[0]}/{parts[1]}/{parts[2]}:{parts[3]}")
                stored = self._load(path, name)
            except (StoreError, ValueError):
                continue
            if stored is not None:
                yield stored
