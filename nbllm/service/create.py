"""Use case: ``/api/create`` in Ollama's JSON form, with its progress statuses.

A model is made from an existing model (``from``), from uploaded files (``files``: a GGUF or a
safetensors directory, converted), or from a blob digest; then a LoRA adapter (``adapters``),
quantization (``quantize``) and the small layers (template, system prompt, parameters, messages,
license) are applied. Every check that can fail without doing work runs before the first status,
so a bad request is an HTTP error, not a stream that ends in one. The manifest is written last,
after every blob it names is in place.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nbllm.errors import InvalidRequest, ModelNotFound, TemplateError
from nbllm.options import parse_api_options
from nbllm.runtime import Runtime
from nbllm.schema import CreateRequest, ProgressResponse
from nbllm.service.common import parse_model_name
from nbllm.service.draft import DraftSource, check_draft, draft_config, draft_layer, validate_draft
from nbllm.service.layers import (
    Built,
    Workspace,
    adapter_layers,
    check_files,
    file_kind,
    model_layers,
    quantize_layer,
)
from nbllm.store import LocalModel, ModelName
from nbllm.store.digest import digest_bytes, normalize_digest
from nbllm.store.gguf import human_parameters
from nbllm.store.lock import Pin
from nbllm.store.manifests import (
    MEDIA_ADAPTER,
    MEDIA_DRAFT,
    MEDIA_LICENSE,
    MEDIA_MESSAGES,
    MEDIA_MODEL,
    MEDIA_PARAMS,
    MEDIA_PROMPT,
    MEDIA_SYSTEM,
    MEDIA_TEMPLATE,
    Layer,
    Manifest,
)

__all__ = ["create_model"]

_DIGEST = re.compile(r"@?sha256[:-]([0-9a-f]{64})")
_SEMVER = re.compile(r"(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?")


@dataclass(frozen=True)
class _Plan:
    """A validated request."""

    name: ModelName
    base: LocalModel | None
    files: dict[str, str]
    adapters: dict[str, str]
    """Uploaded files and adapters, each digest normalised (``sha256:<hex>``)."""
    quantize: str | None
    converted_sources: set[str]
    """Uploaded blobs that are converted, not kept: removed once the model is written."""
    draft: DraftSource | None = None
    """A draft model for speculative decoding (``draft_files``, or nbllm's ``draft`` model name)."""
    draft_checked: bool = False
    """The draft's vocabulary was checked against the weights already."""


def _normalized(files: dict[str, str] | None) -> dict[str, str]:
    """File digests spelled one way (``sha256:<hex>``): the store compares digests as strings."""
    return {path: normalize_digest(digest) for path, digest in (files or {}).items()}


def _validate(rt: Runtime, req: CreateRequest, pin: Pin) -> _Plan:
    """The checked request; the blobs it names are pinned (a concurrent delete keeps them)."""
    name = parse_model_name(req.model)
    files = _normalized(req.files)
    adapters = _normalized(req.adapters)
    base = None
    if req.from_ and (digest := _DIGEST.fullmatch(req.from_.strip())):
        files = {f"sha256-{digest.group(1)}": f"sha256:{digest.group(1)}"}  # FROM a blob: a file of its own
    elif req.from_:
        base = rt.store.claim(parse_model_name(req.from_), pin)
        if base is None:
            raise ModelNotFound(req.from_)
    elif not files:
        raise InvalidRequest("neither 'from' or 'files' was specified")
    pin.add([*(files.values() if base is None else ()), *adapters.values()])
    check_files(rt.store, files if base is None else {})
    check_files(rt.store, adapters)
    quantize = None
    if req.quantize:
        from nbllm.engine.quantize import parse_quantization

        quantize = parse_quantization(req.quantize)
    _validate_small_layers(req)
    draft = validate_draft(rt, req, pin)
    weights = _known_weights(rt, base, files)
    if draft is not None and weights is not None:  # checked before the first status: a mismatch is a 400
        check_draft(rt.store, draft, weights)
    if quantize and base is not None:  # quantizing a stored model: its type is known now
        if base.model_path is None:
            raise InvalidRequest(f"model '{req.from_}' has no weights to quantize")
        if rt.store.gguf(base).file_type not in ("F16", "BF16", "F32", quantize):
            raise InvalidRequest("quantization is only supported for F16, BF16 and F32 models")
    converted = set()
    for given in (files if base is None else {}, adapters):
        if given and file_kind(rt.store, given) == "safetensors":
            converted |= set(given.values())
    return _Plan(
        name=name,
        base=base,
        files=files,
        adapters=adapters,
        quantize=quantize,
        converted_sources=converted,
        draft=draft,
        draft_checked=weights is not None,
    )


def _known_weights(rt: Runtime, base: LocalModel | None, files: dict[str, str]) -> Path | None:
    """The GGUF weights the new model will have, when known without converting anything."""
    if base is not None:
        return base.model_path
    if len(files) == 1 and file_kind(rt.store, files) == "gguf":
        return rt.store.blobs.path(next(iter(files.values())))
    return None


def _validate_small_layers(req: CreateRequest) -> None:
    if req.template is not None:
        from nbllm.prompt.template_check import check_template

        try:  # parsed and rendered once: a template that fails only when run fails here, not on every chat
            check_template(req.template)
        except TemplateError as exc:
            raise InvalidRequest(f"template error: {exc.message}") from None
    if req.parameters is not None:
        parse_api_options(req.parameters)  # wrong types are a 400 before anything is written
    if req.requires is not None and _SEMVER.fullmatch(req.requires.removeprefix("v")) is None:
        raise InvalidRequest("requires must be a valid semver (e.g. 0.14.0)")


def create_model(rt: Runtime, req: CreateRequest) -> Iterator[ProgressResponse]:
    """Create ``req.model``; yields Ollama's statuses and ends with ``success``.

    A create that fails (or is abandoned) removes the blobs it was given that no model uses: a file
    uploaded for it by mistake (``FROM ./secret.txt``) does not stay in the store.
    """
    try:
        yield from _create(rt, req)
    except BaseException:
        _drop_unused(rt, _given_blobs(req))
        raise


def _given_blobs(req: CreateRequest) -> set[str]:
    """The uploaded blobs a request names (``files``, ``adapters``, ``from`` a digest), well-formed ones only."""
    given = [*(req.files or {}).values(), *(req.adapters or {}).values(), *(req.draft_files or {}).values()]
    if req.from_ and (found := _DIGEST.fullmatch(req.from_.strip())):
        given.append(f"sha256:{found.group(1)}")
    out = set()
    for digest in given:
        with contextlib.suppress(InvalidRequest):
            out.add(normalize_digest(digest))
    return out


def _create(rt: Runtime, req: CreateRequest) -> Iterator[ProgressResponse]:
    with rt.store.pin() as pin:
        plan = _validate(rt, req, pin)
        previous, written = yield from _build(rt, req, plan, pin)
    # Unused now: the replaced model's layers, converted uploads; and, after races that the pin made
    # delete skip, a base deleted meanwhile (its layers this model did not take), this model deleted.
    unused = previous.digests() if previous else set()
    unused |= plan.base.manifest.digests() if plan.base else set()
    _drop_unused(rt, unused | plan.converted_sources | written.digests())
    yield ProgressResponse(status="success")


def _build(
    rt: Runtime, req: CreateRequest, plan: _Plan, pin: Pin
) -> Generator[ProgressResponse, None, tuple[Manifest | None, Manifest]]:
    """Make the layers and write the manifest; return the manifest it replaced and the new one."""
    ws = Workspace(rt.store, pin)
    try:
        if plan.base is not None:
            info = rt.store.gguf(plan.base) if plan.base.model_path is not None else None
            built = [
                Built.stored(rt.store, layer, info if layer.mediaType == MEDIA_MODEL else None)
                for layer in plan.base.manifest.layers
                if not _replaced(layer, req)
            ]
        else:
            built = yield from model_layers(ws, plan.files)
        model = next((b for b in built if b.media_type == MEDIA_MODEL), None)
        if plan.adapters:
            adapters = yield from adapter_layers(ws, plan.adapters, model.info if model else None)
            built = [b for b in built if b.media_type != MEDIA_ADAPTER] + adapters
        if plan.quantize:
            if model is None or model.info is None:
                raise InvalidRequest("there are no GGUF weights to quantize")
            quantized = yield from quantize_layer(ws, model, plan.quantize)
            built = [quantized if b is model else b for b in built]
        drafted = None
        if plan.draft is not None:
            drafted = yield from draft_layer(ws, plan.draft, model, checked=plan.draft_checked)
            built = [b for b in built if b.media_type != MEDIA_DRAFT] + [drafted]
        built = [ws.commit(b) for b in built]
        built += [_text_layer(rt, media_type, text, pin) for media_type, text in _text_layers(plan.base, req)]
        for b in built:
            yield ProgressResponse(status=b.status)
        yield ProgressResponse(status="writing manifest")
        config = _config(plan, req, next((b for b in built if b.media_type == MEDIA_MODEL), None))
        if drafted is not None:
            config["draft"] = draft_config(drafted)
        with rt.store.lock.held():  # what this replaces is read where it is replaced (two creates of one name)
            previous = rt.store.manifests.read(plan.name)
            written = rt.store.write_model(plan.name, [b.layer for b in built if b.layer], config)
        return (previous.manifest if previous else None), written.manifest
    finally:
        ws.close()


def _drop_unused(rt: Runtime, digests: set[str]) -> None:
    """Remove those blobs that no manifest (or operation in progress) needs any more."""
    if not rt.settings.noprune:
        rt.store.drop_unreferenced(digests)


def _text_layer(rt: Runtime, media_type: str, text: str, pin: Pin) -> Built:
    existed = rt.store.blobs.has(digest_bytes(text.encode()))
    layer = rt.store.add_text_layer(media_type, text, pin=pin)
    status = f"{'using existing' if existed else 'creating new'} layer {layer.digest}"
    return Built(media_type, rt.store.blobs.path(layer.digest), None, layer, status)


def _replaced(layer: Layer, req: CreateRequest) -> bool:
    """Whether the request brings its own version of a base model's small layer."""
    return {
        MEDIA_TEMPLATE: req.template is not None,
        MEDIA_PROMPT: req.template is not None,
        MEDIA_SYSTEM: req.system is not None,
        MEDIA_PARAMS: req.parameters is not None,
        MEDIA_MESSAGES: req.messages is not None,
        MEDIA_LICENSE: req.license is not None,
    }.get(layer.mediaType, False)


def _text_layers(base: LocalModel | None, req: CreateRequest) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    if req.template is not None:
        out.append((MEDIA_TEMPLATE, req.template))
    if req.system is not None:
        out.append((MEDIA_SYSTEM, req.system))
    if req.parameters is not None:
        inherited = base.params if base is not None else {}
        merged = {**inherited, **{k: v for k, v in req.parameters.items() if v is not None}}
        out.append((MEDIA_PARAMS, json.dumps(merged)))
    if req.messages is not None:
        out.append((MEDIA_MESSAGES, json.dumps([m.model_dump(exclude_none=True) for m in req.messages])))
    if req.license is not None:
        texts = [req.license] if isinstance(req.license, str) else req.license
        out.extend((MEDIA_LICENSE, text) for text in texts)
    return out


def _config(plan: _Plan, req: CreateRequest, model: Built | None) -> dict[str, Any]:
    """The config blob: what ``list`` and ``show`` report in ``details``."""
    config: dict[str, Any] = dict(plan.base.config) if plan.base is not None else {}
    config.pop("rootfs", None)
    if plan.base is not None:
        config["parent_model"] = plan.base.name.display
    if model is not None and model.info is not None:
        arch = model.info.architecture
        families = [f for f in config.get("model_families") or [] if f != arch]
        config.update(
            model_format="gguf",
            model_family=arch,
            model_families=[arch, *families],
            model_type=human_parameters(model.info.parameter_count),
            file_type=model.info.file_type,
        )
    for key in ("renderer", "parser", "requires"):
        value = getattr(req, key)
        if value:
            config[key] = value.removeprefix("v") if key == "requires" else value
    return config
