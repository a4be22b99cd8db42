"""Use case: ``/api/create``: a new model from an existing one (new system prompt, template,
parameters, messages, license), with Ollama's progress statuses.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from nbllm.errors import InvalidModelName, InvalidRequest, ModelNotFound
from nbllm.options import parse_api_options
from nbllm.runtime import Runtime
from nbllm.schema import CreateRequest, ProgressResponse
from nbllm.store import ModelName
from nbllm.store.manifests import (
    MEDIA_LICENSE,
    MEDIA_MESSAGES,
    MEDIA_PARAMS,
    MEDIA_PROMPT,
    MEDIA_SYSTEM,
    MEDIA_TEMPLATE,
    Layer,
)

__all__ = ["create_model"]

_REPLACED = {MEDIA_TEMPLATE, MEDIA_PROMPT, MEDIA_SYSTEM, MEDIA_PARAMS, MEDIA_MESSAGES}


def create_model(rt: Runtime, req: CreateRequest) -> Iterator[ProgressResponse]:
    """Create ``req.model`` from ``req.from_``; the weights' blobs are shared, small layers rewritten."""
    if not req.model:
        raise InvalidRequest("model is required")
    try:
        name = ModelName.parse(req.model)
    except InvalidModelName:
        raise InvalidModelName(f"invalid model name '{req.model}'") from None
    if not req.from_ and not req.files:
        raise InvalidRequest("neither 'from' or 'files' was specified")
    if req.files:
        raise InvalidRequest("creating from uploaded files is not supported by this server yet")
    assert req.from_ is not None
    base = rt.store.find(req.from_)
    if base is None:
        raise ModelNotFound(req.from_)
    new_layers = _new_layers(base.params, req)  # validates before anything is written or reported
    layers: list[Layer] = []
    for layer in base.manifest.layers:
        if layer.mediaType in _REPLACED and _overridden(layer.mediaType, req):
            continue
        if layer.mediaType == MEDIA_LICENSE and req.license is not None:
            continue
        yield ProgressResponse(status=f"using existing layer {layer.digest}")
        layers.append(layer)
    for media_type, text in new_layers:
        layer = rt.store.add_text_layer(media_type, text)
        yield ProgressResponse(status=f"creating new layer {layer.digest}")
        layers.append(layer)
    yield ProgressResponse(status="writing manifest")
    config = {**base.config, "parent_model": base.name.display}
    config.pop("rootfs", None)
    rt.store.write_model(name, layers, config)
    yield ProgressResponse(status="success")


def _overridden(media_type: str, req: CreateRequest) -> bool:
    return {
        MEDIA_TEMPLATE: req.template is not None,
        MEDIA_PROMPT: req.template is not None,
        MEDIA_SYSTEM: req.system is not None,
        MEDIA_PARAMS: req.parameters is not None,
        MEDIA_MESSAGES: req.messages is not None,
    }[media_type]


def _new_layers(base_params: dict[str, Any], req: CreateRequest) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    if req.template is not None:
        out.append((MEDIA_TEMPLATE, req.template))
    if req.system is not None:
        out.append((MEDIA_SYSTEM, req.system))
    if req.parameters is not None:
        parse_api_options(req.parameters)  # wrong types are a 400 before anything is written
        merged = {**base_params, **{k: v for k, v in req.parameters.items() if v is not None}}
        out.append((MEDIA_PARAMS, json.dumps(merged)))
    if req.messages is not None:
        out.append((MEDIA_MESSAGES, json.dumps([m.model_dump(exclude_none=True) for m in req.messages])))
    if req.license is not None:
        texts = [req.license] if isinstance(req.license, str) else req.license
        out.extend((MEDIA_LICENSE, text) for text in texts)
    return out
