"""A model that travels in 2 MB: SmolLM2-135M's GGUF header, with its weights made up on arrival.

SmolLM2-135M-Instruct's GGUF is 98 MB and cannot be made smaller: its 576-wide rows rule out the
k-quants, and Q4_0 of every tensor is still 76 MB, more than the 64 MiB that travels to the device
machine. Decode speed does not depend on the weights' values, only on the architecture, the tensor
types and shapes; so only the header travels (metadata, vocabulary, tensor table: 1.8 MB), and the
device machine writes a file of the very same layout and size with made-up weights: small random
quantized blocks (norms at 1.0). Both servers load that same file; the text it produces is
meaningless, the speeds are SmolLM2-135M Q4_1's. The real file's size is kept, so ``ps`` can be
checked against it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

# bytes per block and values per block of the types this writes (ggml's layouts)
_BLOCKS = {
    "F32": (4, 1),
    "F16": (2, 1),
    "Q4_0": (18, 32),
    "Q4_1": (20, 32),
    "Q5_0": (22, 32),
    "Q8_0": (34, 32),
    "Q4_K": (144, 256),
    "Q6_K": (210, 256),
}
# where each quantized block keeps its f16 scale (and, for Q4_1 and Q4_K, its f16 minimum), and the scale
_SCALE = {"Q4_0": (0, 0.006), "Q4_1": (0, 0.006), "Q5_0": (0, 0.004), "Q8_0": (0, 0.004), "Q4_K": (0, 0.0004)}
_SCALE["Q6_K"] = (208, 0.0002)  # d comes last; the 16 int8 sub-block scales before it stay random


def header(src: Path, dst: Path) -> dict[str, object]:
    """Write the GGUF header of ``src`` (everything before the tensor data) and its tensor table beside it."""
    import gguf

    reader = gguf.GGUFReader(str(src))
    table = [
        {"name": t.name, "type": t.tensor_type.name, "offset": int(t.data_offset), "bytes": int(t.n_bytes)}
        for t in reader.tensors
    ]
    unknown = {t["type"] for t in table} - set(_BLOCKS)
    if unknown:
        raise ValueError(f"tensor types this cannot make up: {sorted(unknown)}")
    with src.open("rb") as fh:
        dst.write_bytes(fh.read(reader.data_offset))
    info: dict[str, object] = {"size": src.stat().st_size, "tensors": table, "source": src.name}
    dst.with_suffix(".json").write_text(json.dumps(info))
    return info


def _blocks(kind: str, nbytes: int, rng: np.random.Generator, *, norm: bool) -> bytes:
    size, _per = _BLOCKS[kind]
    n = nbytes // size
    if kind == "F32":
        return (np.ones(n, np.float32) if norm else rng.normal(0, 0.02, n).astype(np.float32)).tobytes()
    if kind == "F16":
        return rng.normal(0, 0.02, n).astype(np.float16).tobytes()
    out = rng.integers(0, 256, (n, size), dtype=np.uint8)  # the quants: random nibbles / int8
    at, d = _SCALE[kind]
    out[:, at : at + 2] = np.full(n, d, np.float16).view(np.uint8).reshape(n, 2)
    if kind in ("Q4_1", "Q4_K"):  # minimum: centre the nibbles on zero
        out[:, 2:4] = np.full(n, 8 * d if kind == "Q4_K" else -8 * d, np.float16).view(np.uint8).reshape(n, 2)
    return out.tobytes()


def materialize(head: Path, dst: Path, *, seed: int = 0) -> int:
    """Write the model: the carried header, then made-up tensor data at the original offsets; its size."""
    info = json.loads(head.with_suffix(".json").read_text())
    rng = np.random.default_rng(seed)
    with dst.open("wb") as out:
        out.write(head.read_bytes())
        for t in info["tensors"]:
            out.write(b"\0" * (t["offset"] - out.tell()))  # alignment padding
            out.write(_blocks(t["type"], t["bytes"], rng, norm=t["name"].endswith("norm.weight")))
        out.write(b"\0" * (int(info["size"]) - out.tell()))
    return dst.stat().st_size
