"""The draft model of ``/api/create``: Ollama's ``draft_files`` (an uploaded GGUF), or nbllm's ``draft`` (a local
model's weights), checked and stored as the manifest's ``application/vnd.ollama.image.draft`` layer.

A draft proposes token ids that the model verifies, so both must share one vocabulary. The check here
reads the two GGUF headers (tokenizer type, special tokens, vocabulary size, then every token's text
and type when the sizes agree), so that a mismatched draft is a 400 at create time and never a model
that fails when loaded. The engine checks again, through llama.cpp, when it loads the pair (a manifest
may come from elsewhere).
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nbllm.errors import InvalidRequest, StoreError
from nbllm.runtime import Runtime
from nbllm.schema import CreateRequest, ProgressResponse
from nbllm.service.common import parse_model_name
from nbllm.service.layers import Built, Workspace, check_files, file_kind, quantize_layer
from nbllm.store import ModelStore
from nbllm.store.digest import normalize_digest
from nbllm.store.gguf import GGUFInfo, read_gguf
from nbllm.store.lock import Pin
from nbllm.store.manifests import MEDIA_DRAFT, MEDIA_MODEL, Layer

__all__ = ["DraftSource", "check_draft", "draft_config", "draft_layer", "validate_draft", "vocabulary_difference"]


@dataclass(frozen=True)
class DraftSource:
    """A create request's draft model: where it came from (for messages), its blob, the quantization asked."""

    label: str
    digest: str
    quantize: str | None = None


def validate_draft(rt: Runtime, req: CreateRequest, pin: Pin) -> DraftSource | None:
    """The request's draft model, checked without reading it (its blob pinned); None if it names none."""
    if req.draft_quantize and not (req.draft_files or req.draft):
        raise InvalidRequest("--draft-quantize requires a DRAFT model")  # (Ollama's wording)
    if req.draft_files and req.draft:
        raise InvalidRequest("name the draft model by draft_files or by draft, not both")
    quantize = None
    if req.draft_quantize:
        from nbllm.engine.quantize import parse_quantization

        quantize = parse_quantization(req.draft_quantize)
    if req.draft_files:
        files = {path: normalize_digest(digest) for path, digest in req.draft_files.items()}
        if len(files) > 1:
            raise InvalidRequest("a draft model is one GGUF file (split or multi-file drafts are not supported)")
        pin.add(files.values())
        check_files(rt.store, files)
        path, digest = next(iter(files.items()))
        if file_kind(rt.store, files) != "gguf":
            raise InvalidRequest(f"draft {path}: a draft model must be a GGUF file (safetensors are not converted)")
        return DraftSource(path, digest, quantize)
    if req.draft:
        model = rt.store.claim(parse_model_name(req.draft), pin)
        weights = model.manifest.layer(MEDIA_MODEL) if model is not None else None
        if weights is None:
            raise InvalidRequest(f"draft model '{req.draft}' not found: pull or create it first")
        return DraftSource(req.draft, weights.digest, quantize)
    return None


def check_draft(store: ModelStore, source: DraftSource, weights: Path) -> GGUFInfo:
    """The draft's header, once it is known to be a model GGUF with the vocabulary of the ``weights`` it drafts for."""
    path = store.blobs.path(source.digest)
    info = _read(source.label, path)
    kind = str(info.metadata.get("general.type", "model"))
    if kind != "model" or info.architecture == "clip":
        raise InvalidRequest(f"draft {source.label} is not a model GGUF (general.type is {kind!r})")
    if path != weights:  # the same file drafts for itself with the same vocabulary
        problem = vocabulary_difference(weights, path)
        if problem is not None:
            raise InvalidRequest(
                f"draft {source.label} cannot draft for this model: its vocabulary differs - {problem}. "
                "A draft model must use the same tokenizer (a smaller model of the same family)"
            )
    return info


def draft_layer(
    ws: Workspace, source: DraftSource, model: Built | None, *, checked: bool
) -> Generator[ProgressResponse, None, Built]:
    """The draft layer, quantized if asked; checked against the model's weights unless ``checked`` already."""
    if model is None or model.info is None:
        raise InvalidRequest("a draft model needs a model with GGUF weights to draft for")
    yield ProgressResponse(status="parsing GGUF")
    info = read_gguf(ws.store.blobs.path(source.digest)) if checked else check_draft(ws.store, source, model.path)
    layer = Layer(mediaType=MEDIA_DRAFT, digest=source.digest, size=ws.store.blobs.size(source.digest))
    built = Built.stored(ws.store, layer, info)
    if source.quantize:
        built = yield from quantize_layer(ws, built, source.quantize)
    return built


def draft_config(draft: Built) -> dict[str, Any]:
    """The config blob's ``draft`` entry (Ollama's ``model.Draft``: format and architecture)."""
    return {"model_format": "gguf", "architecture": draft.info.architecture if draft.info else ""}


def _read(label: str, path: Path, *, keep_arrays: int = 64) -> GGUFInfo:
    try:
        return read_gguf(path, keep_arrays=keep_arrays)
    except StoreError as exc:
        raise InvalidRequest(f"draft {label} is not a valid GGUF file ({exc.message})") from None


_TOKENS, _TYPES = "tokenizer.ggml.tokens", "tokenizer.ggml.token_type"
_SAME = (
    ("tokenizer.ggml.model", "tokenizer"),
    ("tokenizer.ggml.bos_token_id", "BOS token"),
    ("tokenizer.ggml.eos_token_id", "EOS token"),
)


def vocabulary_difference(model: Path, draft: Path) -> str | None:
    """How a draft GGUF's vocabulary differs from the model's, by their headers (None: the same)."""
    a, b = _read("model", model, keep_arrays=0), _read("draft", draft, keep_arrays=0)
    for key, label in _SAME:
        if a.metadata.get(key) != b.metadata.get(key):
            return f"the {label} is {a.metadata.get(key)!r} in the model and {b.metadata.get(key)!r} in the draft"
    n_a, n_b = a.array_lengths.get(_TOKENS, 0), b.array_lengths.get(_TOKENS, 0)
    if n_a != n_b:
        return f"the model has {n_a} tokens and the draft {n_b}"
    a, b = _read("model", model, keep_arrays=n_a), _read("draft", draft, keep_arrays=n_b)
    for key in (_TOKENS, _TYPES):
        for token, (x, y) in enumerate(zip(a.metadata.get(key) or [], b.metadata.get(key) or [], strict=False)):
            if x != y:
                what = "is" if key == _TOKENS else "has type"
                return f"token {token} {what} {x!r} in the model and {y!r} in the draft"
    return None
