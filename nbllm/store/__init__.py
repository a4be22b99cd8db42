"""The model store: content-addressed blobs and manifests, compatible with Ollama's layout."""

from __future__ import annotations

from nbllm.store.local import LocalModel, ModelStore
from nbllm.store.names import ModelName

__all__ = ["LocalModel", "ModelName", "ModelStore"]
