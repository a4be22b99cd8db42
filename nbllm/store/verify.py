"""Checking a store against itself: every manifest readable, every blob it names present, whole and intact.

Blobs are content-addressed, so a blob is intact exactly when the sha256 of its bytes is the digest
in its name. :func:`verify_store` re-hashes each referenced blob once (models share blobs), checks
its size against the manifest, then checks that each small layer holds what its media type says
(params a JSON object, messages a JSON array of role/content objects, a template that parses, text
that is UTF-8, a config that is a JSON object), and reports what is wrong and which models it breaks.
It changes nothing: repairing is removing the model (``nbllm rm``) and pulling or creating it again.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from nbllm.errors import ModelNotFound, StoreError
from nbllm.store.layer_contents import MAX_SMALL_LAYER, SMALL_LAYERS, TemplateCheck, layer_label, layer_problem
from nbllm.store.local import ModelStore
from nbllm.store.manifests import MEDIA_CONFIG
from nbllm.store.names import ModelName

__all__ = ["BlobProblem", "VerifyReport", "verify_store"]

_BLOCK = 1 << 20


@dataclass(frozen=True)
class BlobProblem:
    """Something wrong with one blob or manifest, and the models it breaks."""

    digest: str
    """The blob's digest (``sha256:...``), or the manifest's path for an unreadable manifest."""
    kind: str
    """``missing``, ``size``, ``corrupt``, ``content`` (intact bytes that are not what the layer must hold)
    or ``manifest``."""
    detail: str
    models: tuple[str, ...]


@dataclass(frozen=True)
class VerifyReport:
    """What :func:`verify_store` looked at and found."""

    models: tuple[str, ...]
    """Models checked (display names)."""
    blobs: int
    """Distinct blobs checked."""
    bytes_hashed: int
    problems: tuple[BlobProblem, ...] = field(default=())

    @property
    def ok(self) -> bool:
        """Whether everything checked is intact."""
        return not self.problems

    def broken_models(self) -> list[str]:
        """Models with at least one problem, sorted."""
        return sorted({m for p in self.problems for m in p.models})


def _sha256(store: ModelStore, digest: str, progress: Callable[[int], None] | None) -> tuple[str, int]:
    h = hashlib.sha256()
    size = 0
    with store.blobs.path(digest).open("rb") as fh:
        while block := fh.read(_BLOCK):
            h.update(block)
            size += len(block)
            if progress is not None:
                progress(len(block))
    return "sha256:" + h.hexdigest(), size


def _manifests(
    store: ModelStore, names: Iterable[str] | None, media: dict[str, str]
) -> tuple[dict[str, dict[str, int]], list[BlobProblem]]:
    """``{model: {digest: size}}`` of the models asked for (all when None), and unreadable manifests.

    ``media`` is filled with the media type of each digest (the config's is MEDIA_CONFIG).
    """
    wanted: dict[str, dict[str, int]] = {}
    problems: list[BlobProblem] = []
    if names is None:
        paths = [p for p in store.manifests.paths() if p.is_file() and not p.name.startswith(".")]
        candidates = [ModelName(*p.relative_to(store.manifests.root).parts) for p in paths]
    else:
        candidates = [store.parse_name(n) for n in names]
    for name in candidates:
        try:
            stored = store.manifests.read(name)
        except StoreError as exc:
            problems.append(BlobProblem(str(name), "manifest", exc.message, (name.display,)))
            continue
        if stored is None:
            if names is None:
                continue  # deleted since it was listed
            raise ModelNotFound(name.display)
        layers = [stored.manifest.config, *stored.manifest.layers]
        wanted[stored.name.display] = {layer.digest: layer.size for layer in layers}
        media.setdefault(stored.manifest.config.digest, MEDIA_CONFIG)
        for layer in stored.manifest.layers:
            media.setdefault(layer.digest, layer.mediaType)
    return wanted, problems


def _content_problem(
    store: ModelStore, digest: str, media_type: str, size: int, check_template: TemplateCheck | None
) -> str | None:
    """What is wrong with an intact small layer's content (a template is checked too, when asked), or None."""
    if media_type not in SMALL_LAYERS:
        return None  # weights, adapters, projectors: their bytes are the engine's to judge
    if size > MAX_SMALL_LAYER:
        return f"the {layer_label(media_type)} layer has {size} bytes, more than such a layer may"
    return layer_problem(media_type, store.blobs.read_bytes(digest), check_template=check_template)


def verify_store(
    store: ModelStore,
    names: Iterable[str] | None = None,
    *,
    progress: Callable[[int], None] | None = None,
    check_template: TemplateCheck | None = None,
) -> VerifyReport:
    """Re-hash the blobs of the named models (every model when ``names`` is None).

    ``progress(n)`` is called as bytes are hashed; templates are rendered with ``check_template`` when
    given (``nbllm verify`` passes the prompt package's). An unknown name raises ModelNotFound; a malformed
    one InvalidModelName.
    """
    media: dict[str, str] = {}
    wanted, problems = _manifests(store, names, media)
    users: dict[str, list[str]] = {}
    sizes: dict[str, int] = {}
    for model, layers in wanted.items():
        for digest, size in layers.items():
            users.setdefault(digest, []).append(model)
            sizes.setdefault(digest, size)
    hashed = 0
    for digest in sorted(users):
        models = tuple(sorted(users[digest]))
        if not store.blobs.has(digest):
            problems.append(BlobProblem(digest, "missing", "the blob is not in the store", models))
            continue
        actual, size = _sha256(store, digest, progress)
        hashed += size
        if size != sizes[digest]:
            detail = f"the blob has {size} bytes; the manifest says {sizes[digest]}"
            problems.append(BlobProblem(digest, "size", detail, models))
        elif actual != digest:
            problems.append(BlobProblem(digest, "corrupt", f"its content hashes to {actual}", models))
        elif problem := _content_problem(store, digest, media.get(digest, ""), size, check_template):
            problems.append(BlobProblem(digest, "content", problem, models))
    return VerifyReport(tuple(sorted(wanted)), len(users), hashed, tuple(problems))
