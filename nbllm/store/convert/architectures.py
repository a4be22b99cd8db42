"""The Hugging Face architectures nbllm converts, and what each needs: GGUF keys and tensor fixes.

Facts from llama.cpp's ``convert_hf_to_gguf.py``: the GGUF keys per family, and the Q/K row
permutation for ``llama``. Hugging Face stores rotary dimensions as two halves (``rotate_half``);
llama.cpp's ``llama`` graph rotates adjacent pairs, so the rows of ``q_proj`` and ``k_proj`` are
interleaved per head. ``qwen2`` runs NeoX-style rotary in llama.cpp and needs no change.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import gguf
import numpy as np

from nbllm.errors import InvalidRequest

__all__ = ["ARCHITECTURES", "Architecture", "architecture_for", "permute_rotary", "rope_freqs"]

Array = np.ndarray[Any, np.dtype[np.float32]]


def permute_rotary(weights: Array, n_head: int) -> Array:
    """Interleave the two rotary halves of each head's rows (HF layout → llama.cpp ``llama`` layout).

    >>> permute_rotary(np.arange(4, dtype=np.float32).reshape(4, 1), 1).ravel().tolist()
    [0.0, 2.0, 1.0, 3.0]
    """
    rows = weights.shape[0]
    out: Array = weights.reshape(n_head, 2, rows // n_head // 2, *weights.shape[1:]).swapaxes(1, 2)
    out = out.reshape(weights.shape)
    return out


def _head_dim(hp: Mapping[str, Any]) -> int:
    return int(hp.get("head_dim") or hp["hidden_size"] // hp["num_attention_heads"])


def rope_freqs(hp: Mapping[str, Any]) -> Array | None:
    """Llama 3.1-style frequency factors (``rope_scaling.rope_type == "llama3"``), else None."""
    scaling = hp.get("rope_scaling") or {}
    if scaling.get("rope_type", scaling.get("type")) != "llama3":
        return None
    dim = _head_dim(hp)
    base = float(hp.get("rope_theta", 10000.0))
    factor = float(scaling.get("factor", 8.0))
    low, high = float(scaling.get("low_freq_factor", 1.0)), float(scaling.get("high_freq_factor", 4.0))
    old_ctx = float(scaling.get("original_max_position_embeddings", 8192))
    out = []
    for i in range(0, dim, 2):
        wavelen = 2 * math.pi * base ** (i / dim)
        if wavelen < old_ctx / high:
            out.append(1.0)
        elif wavelen > old_ctx / low:
            out.append(factor)
        else:
            smooth = (old_ctx / wavelen - low) / (high - low)
            out.append(1 / ((1 - smooth) / factor + smooth))
    return np.asarray(out, dtype=np.float32)


def _write_rope_scaling(writer: gguf.GGUFWriter, hp: Mapping[str, Any]) -> None:
    scaling = hp.get("rope_scaling") or {}
    kind = scaling.get("rope_type", scaling.get("type"))
    if not kind or kind in ("default", "llama3"):  # llama3 scaling travels as the rope_freqs tensor
        return
    if kind not in ("linear", "yarn"):
        raise InvalidRequest(f"rope scaling type {kind!r} is not supported by the converter")
    writer.add_rope_scaling_type(gguf.RopeScalingType(kind))
    writer.add_rope_scaling_factor(float(scaling["factor"]))
    if kind == "yarn" and "original_max_position_embeddings" in scaling:
        writer.add_rope_scaling_orig_ctx_len(int(scaling["original_max_position_embeddings"]))


def _common_params(writer: gguf.GGUFWriter, hp: Mapping[str, Any]) -> None:
    writer.add_context_length(int(hp.get("max_position_embeddings", 4096)))
    writer.add_embedding_length(int(hp["hidden_size"]))
    writer.add_block_count(int(hp["num_hidden_layers"]))
    writer.add_feed_forward_length(int(hp["intermediate_size"]))
    heads = int(hp["num_attention_heads"])
    writer.add_head_count(heads)
    writer.add_head_count_kv(int(hp.get("num_key_value_heads") or heads))
    writer.add_layer_norm_rms_eps(float(hp.get("rms_norm_eps", 1e-6)))
    writer.add_rope_freq_base(float(hp.get("rope_theta", 10000.0)))
    head_dim = _head_dim(hp)
    writer.add_rope_dimension_count(head_dim)
    if head_dim != int(hp["hidden_size"]) // heads:
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)
    writer.add_vocab_size(int(hp["vocab_size"]))
    _write_rope_scaling(writer, hp)


def _llama_tensor(name: str, data: Array, hp: Mapping[str, Any]) -> Array:
    heads = int(hp["num_attention_heads"])
    if name.endswith(("q_proj.weight", "q_proj.bias")):
        return permute_rotary(data, heads)
    if name.endswith(("k_proj.weight", "k_proj.bias")):
        return permute_rotary(data, int(hp.get("num_key_value_heads") or heads))
    return data


def _unchanged(name: str, data: Array, hp: Mapping[str, Any]) -> Array:
    return data


@dataclass(frozen=True)
class Architecture:
    """How one family converts."""

    arch: gguf.MODEL_ARCH
    fix_tensor: Callable[[str, Array, Mapping[str, Any]], Array] = _unchanged
    """Applied to each source tensor (by its Hugging Face name) before it is written."""
    write_params: Callable[[gguf.GGUFWriter, Mapping[str, Any]], None] = _common_params
    skip: tuple[str, ...] = field(default=("rotary_emb.inv_freq",))
    """Source tensors that are recomputed by llama.cpp and not stored."""

    @property
    def name(self) -> str:
        """The GGUF ``general.architecture`` value."""
        return gguf.MODEL_ARCH_NAMES[self.arch]

    def tensor_map(self, n_blocks: int) -> gguf.TensorNameMap:
        """Hugging Face tensor names → GGUF tensor names (the ``gguf`` package's table)."""
        return gguf.get_tensor_name_map(self.arch, n_blocks)


_LLAMA = Architecture(gguf.MODEL_ARCH.LLAMA, fix_tensor=_llama_tensor)
_QWEN2 = Architecture(gguf.MODEL_ARCH.QWEN2)

ARCHITECTURES: dict[str, Architecture] = {
    "LlamaForCausalLM": _LLAMA,
    "MistralForCausalLM": _LLAMA,
    "Qwen2ForCausalLM": _QWEN2,
}
"""Hugging Face ``architectures`` class names nbllm converts."""


def architecture_for(config: Mapping[str, Any]) -> Architecture:
    """The converter of a ``config.json``; a clear error for families it does not know."""
    names = config.get("architectures") or []
    for name in names:
        if name in ARCHITECTURES:
            return ARCHITECTURES[name]
    supported = ", ".join(sorted(ARCHITECTURES))
    raise InvalidRequest(f"unsupported architecture {names!r}: nbllm converts {supported}")
