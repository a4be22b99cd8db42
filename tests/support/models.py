"""Putting a model into a store directly (for tests of the layers above the store)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from nbllm.store import ModelName, ModelStore
from nbllm.store.gguf import read_gguf
from nbllm.store.manifests import MEDIA_MODEL, MEDIA_PARAMS, MEDIA_SYSTEM, MEDIA_TEMPLATE, Layer


def install_model(
    store: ModelStore,
    name: str,
    gguf: Path,
    *,
    template: str | None = None,
    system: str | None = None,
    params: dict[str, Any] | None = None,
) -> None:
    """Store ``gguf`` as the weights of ``name`` with optional template/system/params layers."""
    digest = store.blobs.put_stream(iter([gguf.read_bytes()]))
    layers = [Layer(mediaType=MEDIA_MODEL, digest=digest, size=gguf.stat().st_size)]
    for media, text in (
        (MEDIA_TEMPLATE, template),
        (MEDIA_SYSTEM, system),
        (MEDIA_PARAMS, json.dumps(params) if params else None),
    ):
        if text:
            layers.append(store.add_text_layer(media, text))
    info = read_gguf(gguf)
    config = {
        "model_format": "gguf",
        "model_family": info.architecture,
        "model_families": [info.architecture],
        "model_type": info.parameter_size,
        "file_type": info.file_type,
    }
    store.write_model(ModelName.parse(name), layers, config)
