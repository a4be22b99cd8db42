"""A tiny but valid GGUF file (metadata and one small tensor) for tests that need no real weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def write_tiny_gguf(
    path: Path,
    *,
    arch: str = "llama",
    context_length: int = 2048,
    chat_template: str | None = None,
    pooling: bool = False,
) -> Path:
    """Write a GGUF whose header parses like a real model's."""
    import gguf

    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_context_length(context_length)
    writer.add_embedding_length(8)
    writer.add_block_count(1)
    writer.add_head_count(2)
    writer.add_head_count_kv(2)
    writer.add_file_type(1)
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list(["<s>", "</s>", "a", "b"])
    writer.add_bos_token_id(0)
    writer.add_eos_token_id(1)
    if pooling:
        writer.add_pooling_type(gguf.PoolingType.MEAN)
    if chat_template:
        writer.add_chat_template(chat_template)
    writer.add_tensor("token_embd.weight", np.zeros((4, 8), dtype=np.float16))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
