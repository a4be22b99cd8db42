"""The model store facade: resolve names to manifests and files; list, copy, delete, prune."""

from __future__ import annotations

import json
import logging
import shutil
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from nbllm.errors import InvalidModelName, ModelNotFound, NbllmError, StoreError
from nbllm.schema import ProgressResponse
from nbllm.store.blobs import BlobStore
from nbllm.store.digest import digest_bytes
from nbllm.store.gguf import GGUFInfo, read_gguf
from nbllm.store.layer_contents import MAX_SMALL_LAYER, layer_label, parse_messages, parse_params
from nbllm.store.manifests import (
    MEDIA_ADAPTER,
    MEDIA_CONFIG,
    MEDIA_LICENSE,
    MEDIA_MESSAGES,
    MEDIA_MODEL,
    MEDIA_PARAMS,
    MEDIA_PROJECTOR,
    MEDIA_PROMPT,
    MEDIA_SYSTEM,
    MEDIA_TEMPLATE,
    Layer,
    Manifest,
    ManifestStore,
    StoredManifest,
)
from nbllm.store.names import ModelName

__all__ = ["LocalModel", "ModelStore"]

log = logging.getLogger(__name__)


_TEXTS_KEPT = 512
"""Text layers remembered by digest (each at most a few kB)."""


@dataclass(frozen=True)
class LocalModel:
    """A model in the store, with its small layers read and its file paths resolved."""

    name: ModelName
    digest: str
    """sha256 hex of the manifest."""
    size: int
    modified_at: datetime
    manifest: Manifest
    model_path: Path | None
    """The GGUF weights (None for a model with no model layer, which cannot run)."""
    template: str | None = None
    system: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    license: tuple[str, ...] = ()
    messages: tuple[dict[str, Any], ...] = ()
    adapters: tuple[Path, ...] = ()
    projector: Path | None = None
    config: dict[str, Any] = field(default_factory=dict)
    problems: tuple[str, ...] = ()
    """What could not be read (damaged small layers); such a model is listed, shown and removable, not run."""

    @property
    def model_digest(self) -> str | None:
        """Digest of the weights layer: the identity of the loaded engine."""
        layer = self.manifest.layer(MEDIA_MODEL)
        return layer.digest if layer else None


def _parse_config(data: bytes) -> dict[str, Any]:
    config = json.loads(data)
    if not isinstance(config, dict):
        raise ValueError("it is not a JSON object")
    return config


class ModelStore:
    """Blobs and manifests under one root directory (``OLLAMA_MODELS``)."""

    def __init__(self, root: Path, *, tmp_dir: Path | None = None) -> None:
        self.root = root
        self.blobs = BlobStore(root / "blobs")
        self.manifests = ManifestStore(root / "manifests")
        self.tmp_dir = tmp_dir or root / ".nbllm-tmp"
        self._gguf_cache: dict[tuple[str, bool], GGUFInfo] = {}
        self._texts: dict[str, str] = {}
        """Text layers (template, system, params, license, messages) by digest: a blob's content never changes,
        and every request resolves its model's manifest."""
        self._reported: set[str] = set()
        """Digests of damaged layers already logged."""
        self._lock = threading.Lock()

    @staticmethod
    def parse_name(name: str | ModelName) -> ModelName:
        """A ModelName from user input."""
        return name if isinstance(name, ModelName) else ModelName.parse(name)

    def find(self, name: str | ModelName) -> LocalModel | None:
        """The model of that name, or None."""
        stored = self.manifests.read(self.parse_name(name))
        return self._resolve(stored) if stored is not None else None

    def get(self, name: str | ModelName) -> LocalModel:
        """The model of that name; ModelNotFound if absent."""
        parsed = self.parse_name(name)
        model = self.find(parsed)
        if model is None:
            raise ModelNotFound(str(name) if isinstance(name, str) else parsed.display)
        return model

    def models(self) -> list[LocalModel]:
        """Every model in the store, newest first; a model with damaged layers too (see ``LocalModel.problems``)."""
        models = [self._resolve(m) for m in self.manifests.all()]
        return sorted(models, key=lambda m: m.modified_at, reverse=True)

    def _resolve(self, stored: StoredManifest) -> LocalModel:
        """The model of a manifest; a small layer that cannot be read is left empty and named in ``problems``."""
        m = stored.manifest
        problems: list[str] = []

        def text(layer: Layer | None) -> str | None:
            return self._layer_text(layer, problems)

        model_layer = m.layer(MEDIA_MODEL)
        projector = m.layer(MEDIA_PROJECTOR)
        params = self._parsed(m.layer(MEDIA_PARAMS), parse_params, problems)
        messages = self._parsed(m.layer(MEDIA_MESSAGES), parse_messages, problems)
        # the config only fills in ``details``: one that cannot be read leaves them blank (and is logged)
        config = self._parsed(m.config, _parse_config, [], media_type=MEDIA_CONFIG)
        return LocalModel(
            name=stored.name,
            digest=stored.digest,
            size=m.size,
            modified_at=stored.modified_at,
            manifest=m,
            model_path=self.blobs.path(model_layer.digest) if model_layer else None,
            template=text(m.layer(MEDIA_TEMPLATE) or m.layer(MEDIA_PROMPT)),
            system=text(m.layer(MEDIA_SYSTEM)),
            params=params if isinstance(params, dict) else {},
            license=tuple(t for layer in m.layers if layer.mediaType == MEDIA_LICENSE if (t := text(layer))),
            messages=tuple(messages) if isinstance(messages, list) else (),
            adapters=tuple(self.blobs.path(a.digest) for a in m.layers if a.mediaType == MEDIA_ADAPTER),
            projector=self.blobs.path(projector.digest) if projector else None,
            config=config if isinstance(config, dict) else {},
            problems=tuple(problems),
        )

    def _parsed(
        self,
        layer: Layer | None,
        parse: Callable[[bytes], Any],
        problems: list[str],
        *,
        media_type: str | None = None,
    ) -> Any:
        """A JSON layer parsed, or None (absent, or damaged: then noted in ``problems``)."""
        if layer is None:
            return None
        data = self._layer_text(layer, problems, media_type=media_type)
        if data is None:
            return None
        try:
            return parse(data.encode())
        except ValueError as exc:
            self._damaged(
                layer, f"the {layer_label(media_type or layer.mediaType)} layer is not valid: {exc}", problems
            )
            return None

    def _layer_text(self, layer: Layer | None, problems: list[str], *, media_type: str | None = None) -> str | None:
        """A small layer's text (cached by digest); None, noted in ``problems``, if it cannot be read."""
        if layer is None:
            return None
        text = self._texts.get(layer.digest)
        if text is not None:
            return text
        label = layer_label(media_type or layer.mediaType)
        try:
            if self.blobs.size(layer.digest) > MAX_SMALL_LAYER:
                raise StoreError(f"the {label} layer is too large to be one")
            text = self.blobs.read_bytes(layer.digest).decode("utf-8")
        except UnicodeDecodeError:
            self._damaged(layer, f"the {label} layer is not UTF-8 text", problems)
            return None
        except (OSError, NbllmError) as exc:
            reason = exc.message if isinstance(exc, NbllmError) else exc.strerror or type(exc).__name__
            self._damaged(layer, f"the {label} layer cannot be read: {reason}", problems)
            return None
        if len(self._texts) >= _TEXTS_KEPT:
            self._texts.clear()  # (a store with that many distinct text layers reads them again; rare)
        self._texts[layer.digest] = text
        return text

    def _damaged(self, layer: Layer, problem: str, problems: list[str]) -> None:
        """Note a damaged layer; warn about each one once (listings read every manifest each time)."""
        problems.append(f"{problem} ({layer.digest})")
        if layer.digest not in self._reported:
            self._reported.add(layer.digest)
            log.warning("%s (%s); `nbllm verify` lists the models it breaks", problem, layer.digest)

    def gguf(self, model: LocalModel, *, verbose: bool = False) -> GGUFInfo:
        """GGUF metadata of a model's weights (cached per digest)."""
        if model.model_path is None or model.model_digest is None:
            raise StoreError(f"model {model.name} has no weights layer")
        key = (model.model_digest, verbose)
        with self._lock:
            cached = self._gguf_cache.get(key)
        if cached is None:
            cached = read_gguf(model.model_path, keep_arrays=1 << 30 if verbose else 5, tensors=verbose)
            with self._lock:
                self._gguf_cache[key] = cached
        return cached

    def write_model(self, name: ModelName, layers: Iterable[Layer], config: dict[str, Any]) -> StoredManifest:
        """Write the config blob and the manifest (all layer blobs must already be present)."""
        layer_list = list(layers)
        missing = [layer.digest for layer in layer_list if not self.blobs.has(layer.digest)]
        if missing:
            raise StoreError(f"refusing to write a manifest that references missing blobs: {missing}")
        config = {**config, "rootfs": {"type": "layers", "diff_ids": [layer.digest for layer in layer_list]}}
        config_bytes = json.dumps(config).encode()
        config_digest = self.blobs.put_bytes(config_bytes)
        manifest = Manifest(
            config=Layer(mediaType=MEDIA_CONFIG, digest=config_digest, size=len(config_bytes)),
            layers=layer_list,
        )
        self.manifests.write(name, manifest)
        stored = self.manifests.read(name)
        if stored is None:  # pragma: no cover - we just wrote it
            raise StoreError(f"manifest of {name} vanished after writing")
        return stored

    def add_text_layer(self, media_type: str, text: str) -> Layer:
        """Store a small text layer and describe it."""
        data = text.encode()
        digest = self.blobs.put_bytes(data) if not self.blobs.has(digest_bytes(data)) else digest_bytes(data)
        return Layer(mediaType=media_type, digest=digest, size=len(data))

    def copy(self, source: str | ModelName, destination: str | ModelName) -> None:
        """Give a model a second name (a new manifest over the same blobs)."""
        src = self.parse_name(source)
        dst = self.parse_name(destination)
        stored = self.manifests.read(src)
        if stored is None:
            raise ModelNotFound(str(source))
        self.manifests.write(dst, stored.manifest)

    def delete(self, name: str | ModelName) -> None:
        """Remove a model's manifest, then the blobs no other manifest references."""
        parsed = self.parse_name(name)
        stored = self.manifests.read(parsed)
        if stored is None:
            raise ModelNotFound(str(name))
        self.manifests.delete(stored.name)
        unused = stored.manifest.digests() - self.referenced()
        for digest in unused:
            self.blobs.delete(digest)

    def prune_replaced(self, old: Manifest | None, new: Manifest, *, prune: bool) -> Iterator[ProgressResponse]:
        """After a pull replaced ``old`` with ``new``: drop the blobs nothing uses any more (Ollama's status)."""
        if old is None or not prune:
            return
        unused = old.digests() - new.digests() - self.referenced()
        if unused:
            yield ProgressResponse(status="removing unused layers")
            for digest in unused:
                self.blobs.delete(digest)

    def referenced(self) -> set[str]:
        """Every digest some manifest references."""
        refs: set[str] = set()
        for stored in self.manifests.all():
            refs |= stored.manifest.digests()
        return refs

    def prune(self) -> list[str]:
        """Remove unreferenced blobs and leftovers of interrupted writes (startup, unless OLLAMA_NOPRUNE)."""
        self.blobs.clean_temp()
        self.manifests.clean_temp()
        self._clean_work_dir()
        return self.blobs.gc(self.referenced())

    def _clean_work_dir(self) -> None:
        """Work files a crashed create or pull left in the store's own temporary directory.

        Resumable downloads (``*.partial``) stay; a directory set with OLLAMA_TMPDIR is never emptied.
        """
        if self.tmp_dir != self.root / ".nbllm-tmp" or not self.tmp_dir.is_dir():
            return
        for entry in self.tmp_dir.iterdir():
            if entry.name.endswith(".partial"):
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)

    def validate_name(self, name: str) -> ModelName:
        """Parse a destination name, with Ollama's wording for a bad one."""
        try:
            return ModelName.parse(name)
        except InvalidModelName:
            raise InvalidModelName(f'name "{name}" is invalid') from None
