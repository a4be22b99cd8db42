"""Use cases on a Runtime, shared by the server, the CLI and the notebook: each edge is a thin adapter."""

from __future__ import annotations

from nbllm.service.create import create_model
from nbllm.service.embed import embed, embeddings
from nbllm.service.inference import chat, collect_chat, collect_generate, generate, settled
from nbllm.service.models import (
    copy_model,
    delete_model,
    list_models,
    processor_label,
    processor_text,
    ps,
    pull,
    show,
)
from nbllm.service.registry import push

__all__ = [
    "chat",
    "collect_chat",
    "collect_generate",
    "copy_model",
    "create_model",
    "delete_model",
    "embed",
    "embeddings",
    "generate",
    "list_models",
    "processor_label",
    "processor_text",
    "ps",
    "pull",
    "push",
    "settled",
    "show",
]
