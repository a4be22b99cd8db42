"""The model store facade: resolve names to manifests and files; list, copy, delete, prune."""

from __future__ import annotations

import json
import logging
import re
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
from nbllm.store.lock import IN_USE, Pin, StoreLock, in_use
from nbllm.store.manifests import (
    MEDIA_ADAPTER,
    MEDIA_CONFIG,
    MEDIA_DRAFT,
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
    draft: Path | None = None
    """A draft model's GGUF for speculative decoding (the ``draft`` layer)."""
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
        self.lock = StoreLock(root)
        """Held to write a manifest (after checking its blobs) and to decide which blobs to remove."""
        self.blobs = BlobStore(root / "blobs", self.lock)
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
        draft = m.layer(MEDIA_DRAFT)
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
            draft=self.blobs.path(draft.digest) if draft else None,
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
            try:
                cached = read_gguf(model.model_path, keep_arrays=1 << 30 if verbose else 5, tensors=verbose)
            except StoreError:
                if self.manifests.read(model.name) is None:  # deleted since it was found: a read racing a delete
                    raise ModelNotFound(model.name.display) from None
                raise
            with self._lock:
                self._gguf_cache[key] = cached
        return cached

    def write_model(self, name: ModelName, layers: Iterable[Layer], config: dict[str, Any]) -> StoredManifest:
        """Write the config blob and the manifest (all layer blobs must already be present, and pinned by the
        caller if anything else could remove them meanwhile)."""
        layer_list = list(layers)
        config = {**config, "rootfs": {"type": "layers", "diff_ids": [layer.digest for layer in layer_list]}}
        config_bytes = json.dumps(config).encode()
        with self.lock.held():  # the config blob is unreferenced until the manifest is written
            config_digest = self.blobs.put_bytes(config_bytes)
            manifest = Manifest(
                config=Layer(mediaType=MEDIA_CONFIG, digest=config_digest, size=len(config_bytes)),
                layers=layer_list,
            )
            self.put_manifest(name, manifest)
            stored = self.manifests.read(name)
        if stored is None:  # pragma: no cover - we just wrote it
            raise StoreError(f"manifest of {name} vanished after writing")
        return stored

    def put_manifest(self, name: ModelName, manifest: Manifest) -> str:
        """Write a manifest if every blob it names is present (checked under the store lock); its digest hex."""
        with self.lock.held():
            missing = sorted(d for d in manifest.digests() if not self.blobs.has(d))
            if missing:
                raise StoreError(
                    f"refusing to write the manifest of {name.display}: its blobs {missing} are not in the store "
                    "(removed while it was being made?); try again"
                )
            return self.manifests.write(name, manifest)

    def pin(self) -> Pin:
        """A pin for an operation in progress: delete and prune keep the blobs it names (see store.lock)."""
        return self.lock.pin()

    def claim(self, name: str | ModelName, pin: Pin) -> LocalModel | None:
        """The model of that name with its blobs pinned, or None; a delete racing this one either ran before
        (None) or keeps the blobs."""
        with self.lock.held():
            model = self.find(name)
            if model is not None:
                pin.add(model.manifest.digests())
            return model

    def add_text_layer(self, media_type: str, text: str, *, pin: Pin | None = None) -> Layer:
        """Store a small text layer (pinned first, when a pin is given) and describe it."""
        data = text.encode()
        digest = digest_bytes(data)
        if pin is not None:
            pin.add([digest])
        if not self.blobs.has(digest):
            self.blobs.put_bytes(data)
        return Layer(mediaType=media_type, digest=digest, size=len(data))

    def copy(self, source: str | ModelName, destination: str | ModelName) -> None:
        """Give a model a second name (a new manifest over the same blobs)."""
        src = self.parse_name(source)
        dst = self.parse_name(destination)
        with self.lock.held():  # the source's blobs cannot go between reading it and writing the copy
            stored = self.manifests.read(src)
            if stored is None:
                raise ModelNotFound(str(source))
            replaced = self.manifests.read(dst)
            self.put_manifest(dst, stored.manifest)
            if replaced is not None:  # a copy over another model frees what only that model used
                self.drop_unreferenced(replaced.manifest.digests())

    def delete(self, name: str | ModelName) -> None:
        """Remove a model's manifest, then the blobs no other manifest (or operation in progress) needs."""
        parsed = self.parse_name(name)
        with self.lock.held():
            stored = self.manifests.read(parsed)
            if stored is None:
                raise ModelNotFound(str(name))
            self.manifests.delete(stored.name)
            self.drop_unreferenced(stored.manifest.digests())

    def drop_unreferenced(self, digests: Iterable[str]) -> list[str]:
        """Remove those of ``digests`` that no manifest references and no pin holds; return them."""
        with self.lock.held():
            unused = sorted(set(digests) - self.referenced() - self.lock.pinned())
            for digest in unused:
                self.blobs.delete(digest)
        return unused

    def prune_replaced(self, old: Manifest | None, new: Manifest, *, prune: bool) -> Iterator[ProgressResponse]:
        """After a pull replaced ``old`` with ``new`` (and released its pin): drop the blobs nothing uses any
        more (Ollama's status), ``new``'s own too if it was deleted before the pull ended."""
        if not prune:
            return
        if self.drop_unreferenced((old.digests() if old else set()) | new.digests()) and old is not None:
            yield ProgressResponse(status="removing unused layers")

    def referenced(self) -> set[str]:
        """Every digest some manifest references (an unreadable manifest keeps every digest its text names)."""
        refs: set[str] = set()
        for path in self.manifests.paths():
            try:
                refs |= Manifest.model_validate_json(path.read_bytes()).digests()
            except FileNotFoundError:
                continue  # deleted meanwhile
            except (OSError, ValueError):  # (a directory, a damaged file: scan its text)
                refs |= _digests_named(path)
        return refs

    def prune(self) -> list[str]:
        """Remove unreferenced, unpinned blobs and leftovers of interrupted writes (startup, unless OLLAMA_NOPRUNE)."""
        with self.lock.held():
            self.blobs.clean_temp()
            self.manifests.clean_temp()
            self._clean_work_dir()
            return self.blobs.gc(self.referenced() | self.lock.pinned())

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
                if in_use(entry / IN_USE):  # a create in progress, in this process or another
                    continue
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)

    def validate_name(self, name: str) -> ModelName:
        """Parse a destination name, with Ollama's wording for a bad one."""
        try:
            return ModelName.parse(name)
        except InvalidModelName:
            raise InvalidModelName(f'name "{name}" is invalid') from None


_NAMED_DIGEST = re.compile(rb"sha256[:-]([0-9a-f]{64})")


def _digests_named(path: Path) -> set[str]:
    """Digests an unreadable manifest's bytes mention: its blobs are kept rather than guessed unused."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        if path.is_file():
            log.warning("manifest %s is unreadable (%s): its blobs may be pruned", path, exc)
        return set()
    return {"sha256:" + m.group(1).decode() for m in _NAMED_DIGEST.finditer(data)}
