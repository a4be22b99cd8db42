"""Hugging Face safetensors checkpoints (and LoRA adapters) to GGUF, written by nbllm with the ``gguf`` package.

Only ``numpy`` and ``gguf`` are needed: weights are memory-mapped from the safetensors files and
the tokenizer is read from ``tokenizer.json``. Import this package lazily (``import nbllm`` stays light).
"""

from __future__ import annotations

from nbllm.store.convert.architectures import ARCHITECTURES
from nbllm.store.convert.model import ConvertedModel, convert_model

__all__ = ["ARCHITECTURES", "ConvertedModel", "convert_model"]
