"""Convert a Hugging Face safetensors model directory into one F16 GGUF file.

The output is planned from the headers first (names, shapes, types), then each tensor is read,
fixed, narrowed and written in turn, so memory holds one tensor at a time. The file is written
under a temporary name next to the destination and renamed only when complete.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gguf
import numpy as np

from nbllm.errors import InvalidRequest
from nbllm.store.convert.architectures import Architecture, architecture_for, rope_freqs
from nbllm.store.convert.safetensors import TensorRef, load_checkpoint
from nbllm.store.convert.vocab import add_vocab, load_vocab

__all__ = ["ConvertedModel", "PlannedTensor", "convert_model", "read_config", "write_gguf"]

log = logging.getLogger(__name__)

Array = np.ndarray[Any, np.dtype[Any]]
Progress = Callable[[int, int], None]
"""Called with (tensors written, tensors in all)."""
_F16_MAX = float(np.finfo(np.float16).max)


@dataclass(frozen=True)
class ConvertedModel:
    """What a conversion produced."""

    path: Path
    architecture: str
    tensors: int
    parameters: int


@dataclass(frozen=True)
class PlannedTensor:
    name: str
    """GGUF tensor name."""
    shape: tuple[int, ...]
    load: Callable[[], Array]
    """The tensor, ready to write (dtype decides the GGUF type)."""
    dtype: type[np.generic]


def read_config(directory: Path) -> dict[str, Any]:
    """``config.json`` of a model directory."""
    path = directory / "config.json"
    if not path.is_file():
        raise InvalidRequest("config.json not found: is this a Hugging Face model directory?")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise InvalidRequest(f"config.json is not valid JSON: {exc}") from None
    if not isinstance(config, dict):
        raise InvalidRequest("config.json must hold a JSON object")
    text = config.get("text_config")
    return {**config, **text} if isinstance(text, dict) else config


def _narrow(data: Array) -> Array:
    """Weights matrices go to F16 (Ollama's and llama.cpp's default); vectors stay F32."""
    if data.ndim <= 1:
        return np.ascontiguousarray(data, dtype=np.float32)
    peak = float(np.max(np.abs(data))) if data.size else 0.0
    if peak > _F16_MAX:
        log.warning("values up to %.3g do not fit F16; clipping", peak)
        data = np.clip(data, -_F16_MAX, _F16_MAX)
    return np.ascontiguousarray(data, dtype=np.float16)


def _plan(arch: Architecture, tensors: dict[str, TensorRef], config: dict[str, Any]) -> list[PlannedTensor]:
    names = arch.tensor_map(int(config["num_hidden_layers"]))
    plan: list[PlannedTensor] = []
    for hf_name, ref in tensors.items():
        if hf_name.endswith(arch.skip):
            continue
        name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if name is None:
            raise InvalidRequest(f"cannot map tensor {hf_name!r} of a {arch.name} model")

        def load(ref: TensorRef = ref, hf_name: str = hf_name) -> Array:
            return _narrow(arch.fix_tensor(hf_name, ref.load(), config))

        plan.append(PlannedTensor(name, ref.shape, load, np.float32 if len(ref.shape) <= 1 else np.float16))
    freqs = rope_freqs(config)
    if freqs is not None:
        plan.append(PlannedTensor("rope_freqs.weight", freqs.shape, lambda: freqs, np.float32))
    if not any(p.name == "token_embd.weight" for p in plan):
        raise InvalidRequest("the checkpoint has no token embedding (model.embed_tokens.weight)")
    return plan


def write_gguf(
    dst: Path,
    arch: str,
    add_metadata: Callable[[gguf.GGUFWriter], None],
    plan: list[PlannedTensor],
    progress: Progress | None = None,
) -> None:
    """Write a GGUF file tensor by tensor under a temporary name; rename it to ``dst`` when complete."""
    fd, name = tempfile.mkstemp(prefix=".tmp-", suffix=".gguf", dir=dst.parent)
    os.close(fd)
    tmp = Path(name)
    writer = gguf.GGUFWriter(tmp, arch)
    try:
        add_metadata(writer)
        for p in plan:
            nbytes = int(np.prod(p.shape, dtype=np.int64)) * np.dtype(p.dtype).itemsize
            writer.add_tensor_info(p.name, p.shape, np.dtype(p.dtype), nbytes)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        for done, p in enumerate(plan, start=1):
            writer.write_tensor_data(p.load())
            if progress is not None:
                progress(done, len(plan))
        writer.close()
        with tmp.open("rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, dst)
    except BaseException:
        writer.close()
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def convert_model(src: Path, dst: Path, *, progress: Progress | None = None) -> ConvertedModel:
    """Convert the model directory ``src`` (config.json, tokenizer.json, *.safetensors) to the GGUF ``dst``."""
    config = read_config(src)
    arch = architecture_for(config)
    for key in ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "vocab_size"):
        if not isinstance(config.get(key), int):
            raise InvalidRequest(f"config.json lacks {key!r}")
    weights = sorted(p for p in src.rglob("*.safetensors") if p.is_file())
    if not weights:
        raise InvalidRequest("no .safetensors weights found in the model directory")
    tensors = load_checkpoint(weights)
    vocab = load_vocab(src, int(config["vocab_size"]), arch.name)
    plan = _plan(arch, tensors, config)

    def metadata(writer: gguf.GGUFWriter) -> None:
        writer.add_name(src.name)
        writer.add_type(gguf.GGUFType.MODEL)
        arch.write_params(writer, config)
        writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
        add_vocab(writer, vocab, src)

    write_gguf(dst, arch.name, metadata, plan, progress)
    parameters = sum(int(np.prod(p.shape, dtype=np.int64)) for p in plan)
    log.info("converted %s (%s, %d tensors) to %s", src, arch.name, len(plan), dst)
    return ConvertedModel(path=dst, architecture=arch.name, tensors=len(plan), parameters=parameters)
