"""Read a GGUF file's metadata and tensor table without loading weights.

A fast header walk of our own (``gguf.GGUFReader`` materialises every array and takes seconds on
a 49k-token vocabulary); the ``gguf`` package supplies the names of types and file types.
Long arrays (token lists, merges) are skipped unless asked for.
"""

from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nbllm.errors import StoreError

__all__ = ["GGUFInfo", "human_parameters", "kv_cache_bytes", "read_gguf"]

_MAGIC = b"GGUF"
# GGUF value types: https://github.com/ggml-org/ggml/blob/master/docs/gguf.md
_SCALARS: dict[int, tuple[str, int]] = {
    0: ("<B", 1),
    1: ("<b", 1),
    2: ("<H", 2),
    3: ("<h", 2),
    4: ("<I", 4),
    5: ("<i", 4),
    6: ("<f", 4),
    7: ("<?", 1),
    10: ("<Q", 8),
    11: ("<q", 8),
    12: ("<d", 8),
}
_STRING, _ARRAY = 8, 9


@dataclass(frozen=True)
class GGUFInfo:
    """What ``show``, ``list`` and the scheduler need to know about a GGUF file."""

    metadata: dict[str, Any]
    """Key-value metadata; arrays longer than the limit are ``None`` (their length in ``array_lengths``)."""
    array_lengths: dict[str, int]
    """Length of every array value, including skipped ones."""
    tensors: list[dict[str, Any]] = field(default_factory=list)
    """``{"name", "type", "shape"}`` per tensor (when asked for)."""
    parameter_count: int = 0
    """Total number of weights."""
    token_texts: dict[str, str] = field(default_factory=dict)
    """Text of the special tokens named by ``tokenizer.ggml.<name>_token_id`` (bos, eos, ...)."""

    @property
    def architecture(self) -> str:
        """``general.architecture`` (``llama``, ``gemma3``, ...)."""
        return str(self.metadata.get("general.architecture", ""))

    def arch_value(self, key: str, default: Any = None) -> Any:
        """An architecture-scoped value, e.g. ``arch_value("context_length")``."""
        return self.metadata.get(f"{self.architecture}.{key}", default)

    @property
    def context_length(self) -> int:
        """Trained context length."""
        return int(self.arch_value("context_length", 0) or 0)

    @property
    def embedding_length(self) -> int:
        """Width of the embedding."""
        return int(self.arch_value("embedding_length", 0) or 0)

    @property
    def chat_template(self) -> str | None:
        """The Jinja chat template embedded by the converter, if any."""
        value = self.metadata.get("tokenizer.chat_template")
        return value if isinstance(value, str) and value else None

    @property
    def file_type(self) -> str:
        """Quantization of the file as Ollama names it (``Q4_K_M``, ``F16``, ...)."""
        raw = self.metadata.get("general.file_type")
        if raw is None:
            return "unknown"
        import gguf  # the names of llama.cpp's file types

        try:
            name = gguf.LlamaFileType(int(raw)).name
        except ValueError:
            return "unknown"
        return name.removeprefix("MOSTLY_").replace("ALL_", "")

    @property
    def parameter_size(self) -> str:
        """Human parameter count, as Ollama prints it (``135M``, ``1.2B``)."""
        return human_parameters(self.parameter_count)

    @property
    def is_embedding_model(self) -> bool:
        """Whether the model pools its output into embeddings (Ollama: a ``pooling_type`` key)."""
        return self.arch_value("pooling_type") is not None


def kv_cache_bytes(info: GGUFInfo, n_tokens: int, bytes_per_value: float = 2.0) -> int:
    """Bytes the K and V caches take for ``n_tokens`` positions (all layers)."""
    layers = int(info.arch_value("block_count", 0) or 0)
    heads = info.arch_value("attention.head_count", 1) or 1
    heads_kv = info.arch_value("attention.head_count_kv", heads) or heads
    heads_kv = max(heads_kv) if isinstance(heads_kv, list) else int(heads_kv)
    heads = max(heads) if isinstance(heads, list) else int(heads)
    head_dim = info.embedding_length // max(1, heads)
    k_len = int(info.arch_value("attention.key_length", head_dim) or head_dim)
    v_len = int(info.arch_value("attention.value_length", head_dim) or head_dim)
    return int(layers * n_tokens * heads_kv * (k_len + v_len) * bytes_per_value)


def human_parameters(count: int) -> str:
    """Format a parameter count like Ollama's ``format.HumanNumber``.

    >>> human_parameters(134_515_008)
    '134.52M'
    >>> human_parameters(1_235_814_400)
    '1.2B'
    >>> human_parameters(7_000_000_000)
    '7B'
    """
    for unit, size, decimals in (("T", 10**12, 1), ("B", 10**9, 1), ("M", 10**6, 2), ("K", 10**3, 0)):
        if count >= size:
            value = count / size
            return f"{value:.0f}{unit}" if value == int(value) else f"{value:.{decimals}f}{unit}"
    return str(count)


class _Cursor:
    def __init__(self, buf: mmap.mmap) -> None:
        self.buf = buf
        self.pos = 0

    def unpack(self, fmt: str, size: int) -> Any:
        if self.pos + size > len(self.buf):
            raise StoreError("truncated GGUF header")
        value = struct.unpack_from(fmt, self.buf, self.pos)[0]
        self.pos += size
        return value

    def string(self) -> str:
        length = self.unpack("<Q", 8)
        if self.pos + length > len(self.buf):
            raise StoreError("truncated GGUF string")
        raw = self.buf[self.pos : self.pos + length]
        self.pos += length
        return raw.decode("utf-8", errors="replace")

    def skip_string(self) -> None:
        length = self.unpack("<Q", 8)
        self.pos += length

    def value(self, vtype: int, *, keep_arrays: int) -> tuple[Any, int | None]:
        if vtype == _STRING:
            return self.string(), None
        if vtype in _SCALARS:
            fmt, size = _SCALARS[vtype]
            return self.unpack(fmt, size), None
        if vtype != _ARRAY:
            raise StoreError(f"unknown GGUF value type {vtype}")
        etype = self.unpack("<I", 4)
        count = self.unpack("<Q", 8)
        if count <= keep_arrays:
            return [self.value(etype, keep_arrays=keep_arrays)[0] for _ in range(count)], count
        if etype in _SCALARS:
            self.pos += _SCALARS[etype][1] * count
        elif etype == _STRING:
            for _ in range(count):
                self.skip_string()
        else:
            for _ in range(count):
                self.value(etype, keep_arrays=0)
        return None, count


def read_gguf(path: Path, *, keep_arrays: int = 64, tensors: bool = False) -> GGUFInfo:
    """Parse the header of the GGUF file at ``path``."""
    try:
        with path.open("rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            return _parse(buf, keep_arrays=keep_arrays, want_tensors=tensors)
    except (OSError, ValueError) as exc:
        # the file's name only (a blob's digest): the message may reach API clients, the directory must not
        reason = exc.strerror or type(exc).__name__ if isinstance(exc, OSError) else str(exc)
        raise StoreError(f"cannot read GGUF file {path.name}: {reason}") from exc


def _parse(buf: mmap.mmap, *, keep_arrays: int, want_tensors: bool) -> GGUFInfo:
    if buf[:4] != _MAGIC:
        raise StoreError("not a GGUF file (bad magic)")
    cur = _Cursor(buf)
    cur.pos = 4
    version = cur.unpack("<I", 4)
    if version < 2:
        raise StoreError(f"unsupported GGUF version {version}")
    n_tensors = cur.unpack("<Q", 8)
    n_kv = cur.unpack("<Q", 8)
    metadata: dict[str, Any] = {}
    lengths: dict[str, int] = {}
    tokens_at = -1
    for _ in range(n_kv):
        key = cur.string()
        vtype = cur.unpack("<I", 4)
        if key == "tokenizer.ggml.tokens":
            tokens_at = cur.pos
        value, length = cur.value(vtype, keep_arrays=keep_arrays)
        metadata[key] = value
        if length is not None:
            lengths[key] = length
    end_of_kv = cur.pos
    token_texts = _special_token_texts(cur, metadata, tokens_at)
    cur.pos = end_of_kv
    table: list[dict[str, Any]] = []
    total = 0
    type_names = _tensor_type_names() if want_tensors else {}
    for _ in range(n_tensors):
        name = cur.string()
        n_dims = cur.unpack("<I", 4)
        shape = [cur.unpack("<Q", 8) for _ in range(n_dims)]
        ttype = cur.unpack("<I", 4)
        cur.pos += 8  # data offset
        count = 1
        for dim in shape:
            count *= dim
        total += count
        if want_tensors:
            table.append({"name": name, "type": type_names.get(ttype, str(ttype)), "shape": shape})
    return GGUFInfo(
        metadata=metadata, array_lengths=lengths, tensors=table, parameter_count=total, token_texts=token_texts
    )


def _special_token_texts(cur: _Cursor, metadata: dict[str, Any], tokens_at: int) -> dict[str, str]:
    """Look up the text of bos/eos/... in the (skipped) token list."""
    wanted = {
        key.removeprefix("tokenizer.ggml.").removesuffix("_token_id"): int(value)
        for key, value in metadata.items()
        if key.startswith("tokenizer.ggml.") and key.endswith("_token_id") and isinstance(value, int)
    }
    tokens = metadata.get("tokenizer.ggml.tokens")
    if isinstance(tokens, list):
        return {name: str(tokens[i]) for name, i in wanted.items() if 0 <= i < len(tokens)}
    if tokens_at < 0 or not wanted:
        return {}
    cur.pos = tokens_at + 4  # element type
    count = cur.unpack("<Q", 8)
    by_index: dict[int, list[str]] = {}
    for name, index in wanted.items():
        by_index.setdefault(index, []).append(name)
    out: dict[str, str] = {}
    for i in range(min(count, max(by_index) + 1)):
        if i in by_index:
            text = cur.string()
            out.update(dict.fromkeys(by_index[i], text))
        else:
            cur.skip_string()
    return out


def _tensor_type_names() -> dict[int, str]:
    import gguf

    return {int(t): t.name for t in gguf.GGMLQuantizationType}
