"""Reading safetensors checkpoints tensor by tensor, memory-mapped, BF16 included.

The format (https://github.com/huggingface/safetensors#format) is an 8-byte little-endian header
length, a JSON header ``{name: {dtype, shape, data_offsets}}`` and the raw data. The ``safetensors``
package's numpy backend cannot return BF16 (numpy has no such type), and most checkpoints are
BF16, so the header is read here and each tensor is mapped from the file only when it is converted.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nbllm.errors import InvalidRequest

__all__ = ["TensorRef", "load_checkpoint", "read_safetensors"]

_MAX_HEADER = 100 << 20
_DTYPES: dict[str, tuple[str, int]] = {
    "F64": ("<f8", 8),
    "F32": ("<f4", 4),
    "F16": ("<f2", 2),
    "BF16": ("<u2", 2),
    "I64": ("<i8", 8),
    "I32": ("<i4", 4),
    "I16": ("<i2", 2),
    "I8": ("i1", 1),
    "U8": ("u1", 1),
    "BOOL": ("u1", 1),
}


@dataclass(frozen=True)
class TensorRef:
    """Where one tensor's bytes are, and what they hold."""

    name: str
    dtype: str
    """The safetensors dtype name (``BF16``, ``F16``, ``F32``, ...)."""
    shape: tuple[int, ...]
    path: Path
    offset: int
    """Byte offset of the data in the file."""
    nbytes: int

    @property
    def size(self) -> int:
        """Number of elements."""
        return math.prod(self.shape)

    def load(self) -> np.ndarray[Any, np.dtype[np.float32]]:
        """The tensor as float32 (BF16 widened exactly)."""
        code, _ = _DTYPES[self.dtype]
        if self.nbytes == 0:
            return np.zeros(self.shape, dtype=np.float32)
        raw = np.memmap(self.path, dtype=np.dtype(code), mode="r", offset=self.offset, shape=(self.size,))
        wide = (raw.astype(np.uint32) << 16).view(np.float32) if self.dtype == "BF16" else raw.astype(np.float32)
        return wide.reshape(self.shape)


def read_safetensors(path: Path) -> dict[str, TensorRef]:
    """The tensors of one ``.safetensors`` file (header only; no data is read)."""
    size = path.stat().st_size
    with path.open("rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            raise InvalidRequest(f"{path.name} is not a safetensors file (too short)")
        (length,) = struct.unpack("<Q", head)
        if length > min(_MAX_HEADER, size - 8):
            raise InvalidRequest(f"{path.name} is not a safetensors file (bad header length)")
        try:
            header = json.loads(fh.read(length))
        except ValueError as exc:
            raise InvalidRequest(f"{path.name} is not a safetensors file: {exc}") from None
    if not isinstance(header, dict):
        raise InvalidRequest(f"{path.name} is not a safetensors file (header is not an object)")
    start = 8 + length
    out: dict[str, TensorRef] = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        out[name] = _ref(path, name, info, start, size)
    return out


def _ref(path: Path, name: str, info: Any, start: int, size: int) -> TensorRef:
    try:
        dtype = str(info["dtype"])
        shape = tuple(int(d) for d in info["shape"])
        begin, end = (int(x) for x in info["data_offsets"])
    except (KeyError, TypeError, ValueError):
        raise InvalidRequest(f"{path.name}: malformed entry for tensor {name!r}") from None
    if dtype not in _DTYPES:
        raise InvalidRequest(f"{path.name}: tensor {name!r} has unsupported dtype {dtype}")
    expected = math.prod(shape) * _DTYPES[dtype][1]
    if end - begin != expected or begin < 0 or start + end > size:
        raise InvalidRequest(f"{path.name}: tensor {name!r} does not fit the file (truncated download?)")
    return TensorRef(name=name, dtype=dtype, shape=shape, path=path, offset=start + begin, nbytes=expected)


def load_checkpoint(files: Iterable[Path]) -> dict[str, TensorRef]:
    """Every tensor of a (possibly sharded) checkpoint; a name found twice is an error."""
    tensors: dict[str, TensorRef] = {}
    for path in sorted(files):
        for name, ref in read_safetensors(path).items():
            if name in tensors:
                raise InvalidRequest(f"tensor {name!r} appears in both {tensors[name].path.name} and {path.name}")
            tensors[name] = ref
    if not tensors:
        raise InvalidRequest("no tensors found in the safetensors files")
    return tensors
