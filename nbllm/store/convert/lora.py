"""Convert a PEFT LoRA adapter (``adapter_config.json`` + ``adapter_model.safetensors``) to a LoRA GGUF.

llama.cpp's adapter format (``src/llama-adapter.cpp``): ``general.type = "adapter"``,
``adapter.type = "lora"``, ``adapter.lora.alpha``, and for each adapted weight ``W`` of the base
model a pair ``<gguf name>.lora_a`` (rank × in) and ``.lora_b`` (out × rank), so that
``W + alpha / rank · B·A`` is the adapted weight. For ``llama`` the rows of Q and K are permuted
in the base conversion, so ``lora_b`` of those projections gets the same permutation.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import gguf
import numpy as np

from nbllm.errors import InvalidRequest
from nbllm.store.convert.architectures import ARCHITECTURES, Architecture
from nbllm.store.convert.model import ConvertedModel, PlannedTensor, write_gguf
from nbllm.store.convert.safetensors import TensorRef, load_checkpoint

__all__ = ["convert_adapter", "is_adapter_dir"]

_PREFIXES = ("base_model.model.", "base_model.")
_SUFFIXES = {".lora_A.weight": "lora_a", ".lora_B.weight": "lora_b"}


def is_adapter_dir(directory: Path) -> bool:
    """Whether a directory holds a PEFT adapter."""
    return (directory / "adapter_config.json").is_file()


def _architecture(name: str) -> Architecture:
    for arch in ARCHITECTURES.values():
        if arch.name == name:
            return arch
    raise InvalidRequest(f"LoRA adapters for {name!r} models cannot be converted")


def _base_name(name: str) -> tuple[str, str]:
    """(Hugging Face weight name, lora_a|lora_b) of a PEFT tensor name."""
    for suffix, kind in _SUFFIXES.items():
        if name.endswith(suffix):
            base = name[: -len(suffix)] + ".weight"
            for prefix in _PREFIXES:
                if base.startswith(prefix):
                    base = base[len(prefix) :]
                    break
            return base, kind
    raise InvalidRequest(f"adapter tensor {name!r} is not a LoRA A/B matrix (only LoRA adapters are supported)")


def convert_adapter(src: Path, dst: Path, *, architecture: str, head_count: int, head_count_kv: int) -> ConvertedModel:
    """Convert the PEFT adapter in ``src`` for a base model of ``architecture`` into the GGUF ``dst``."""
    try:
        config = json.loads((src / "adapter_config.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InvalidRequest("adapter_config.json is missing: upload it with the adapter's safetensors") from None
    except (OSError, ValueError) as exc:  # (the reason without the file's path: the server's is no client's business)
        reason = exc.strerror or type(exc).__name__ if isinstance(exc, OSError) else str(exc)
        raise InvalidRequest(f"adapter_config.json is not valid: {reason}") from None
    if not isinstance(config, dict):
        raise InvalidRequest("adapter_config.json is not valid: it is not a JSON object")
    if str(config.get("peft_type", "LORA")).upper() != "LORA":
        raise InvalidRequest(f"only LoRA adapters are supported, not {config.get('peft_type')}")
    rank = int(config.get("r") or 0)
    alpha = float(config.get("lora_alpha") or rank)
    if rank <= 0:
        raise InvalidRequest("adapter_config.json lacks the LoRA rank 'r'")
    arch = _architecture(architecture)
    tensors = load_checkpoint(sorted(p for p in src.rglob("*.safetensors") if p.is_file()))
    layers = 1 + max((int(n.split("layers.")[1].split(".")[0]) for n in tensors if "layers." in n), default=0)
    names = arch.tensor_map(layers)
    hp = {"num_attention_heads": head_count, "num_key_value_heads": head_count_kv}
    plan: list[PlannedTensor] = []
    for name, ref in sorted(tensors.items()):
        base, kind = _base_name(name)
        target = names.get_name(base, try_suffixes=(".weight",))
        if target is None:
            raise InvalidRequest(f"adapter tensor {name!r} targets a weight a {arch.name} model does not have")

        def load(ref: TensorRef = ref, base: str = base, kind: str = kind) -> np.ndarray[Any, np.dtype[Any]]:
            data = ref.load()
            return np.ascontiguousarray(arch.fix_tensor(base, data, hp) if kind == "lora_b" else data)

        plan.append(PlannedTensor(f"{target}.{kind}", ref.shape, load, np.float32))

    def metadata(writer: gguf.GGUFWriter) -> None:
        writer.add_type(gguf.GGUFType.ADAPTER)
        writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
        writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, alpha)

    write_gguf(dst, arch.name, metadata, plan)
    return ConvertedModel(
        path=dst, architecture=arch.name, tensors=len(plan), parameters=sum(r.size for r in tensors.values())
    )
