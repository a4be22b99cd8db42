"""Quantizing a GGUF model with llama.cpp's quantizer (``llama_model_quantize``).

The quantizer writes under a temporary name next to the destination; the file is renamed into
place only when llama.cpp reports success. Progress is the growth of that file against the size
the target type should come to.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import llama_cpp as L

from nbllm.engine.llama.native import backend, default_threads
from nbllm.errors import EngineError, InvalidRequest

__all__ = ["QUANTIZATION_TYPES", "SOURCE_TYPES", "bits_per_weight", "parse_quantization", "quantize_model"]

log = logging.getLogger(__name__)

QUANTIZATION_TYPES: dict[str, int] = {
    "Q4_0": L.LLAMA_FTYPE_MOSTLY_Q4_0,
    "Q4_1": L.LLAMA_FTYPE_MOSTLY_Q4_1,
    "Q5_0": L.LLAMA_FTYPE_MOSTLY_Q5_0,
    "Q5_1": L.LLAMA_FTYPE_MOSTLY_Q5_1,
    "Q8_0": L.LLAMA_FTYPE_MOSTLY_Q8_0,
    "Q2_K": L.LLAMA_FTYPE_MOSTLY_Q2_K,
    "Q3_K_S": L.LLAMA_FTYPE_MOSTLY_Q3_K_S,
    "Q3_K_M": L.LLAMA_FTYPE_MOSTLY_Q3_K_M,
    "Q3_K_L": L.LLAMA_FTYPE_MOSTLY_Q3_K_L,
    "Q4_K_S": L.LLAMA_FTYPE_MOSTLY_Q4_K_S,
    "Q4_K_M": L.LLAMA_FTYPE_MOSTLY_Q4_K_M,
    "Q5_K_S": L.LLAMA_FTYPE_MOSTLY_Q5_K_S,
    "Q5_K_M": L.LLAMA_FTYPE_MOSTLY_Q5_K_M,
    "Q6_K": L.LLAMA_FTYPE_MOSTLY_Q6_K,
    "IQ4_NL": L.LLAMA_FTYPE_MOSTLY_IQ4_NL,
    "IQ4_XS": L.LLAMA_FTYPE_MOSTLY_IQ4_XS,
    "F16": L.LLAMA_FTYPE_MOSTLY_F16,
    "BF16": L.LLAMA_FTYPE_MOSTLY_BF16,
}
"""Targets nbllm offers (those that need no importance matrix), by Ollama's names."""
SOURCE_TYPES = ("F16", "BF16", "F32")
"""File types quantization starts from."""
_ALIASES = {"Q4_K": "Q4_K_M", "Q5_K": "Q5_K_M", "Q3_K": "Q3_K_M"}
# Nominal bits per weight of each target (llama.cpp's quantize help), to size the progress bar.
_BITS = {
    "Q4_0": 4.5, "Q4_1": 5.0, "Q5_0": 5.5, "Q5_1": 6.0, "Q8_0": 8.5, "Q2_K": 2.96, "Q3_K_S": 3.5,
    "Q3_K_M": 3.91, "Q3_K_L": 4.27, "Q4_K_S": 4.58, "Q4_K_M": 4.89, "Q5_K_S": 5.54, "Q5_K_M": 5.7,
    "Q6_K": 6.56, "IQ4_NL": 4.5, "IQ4_XS": 4.25, "F16": 16.0, "BF16": 16.0,
}  # fmt: skip


def parse_quantization(name: str) -> str:
    """The canonical name of a quantization type (``q4_k_m`` → ``Q4_K_M``); a clear error otherwise.

    >>> parse_quantization("q4_K_M"), parse_quantization("q8_0"), parse_quantization("Q4_K")
    ('Q4_K_M', 'Q8_0', 'Q4_K_M')
    """
    upper = name.strip().upper()
    upper = _ALIASES.get(upper, upper)
    if upper not in QUANTIZATION_TYPES:
        raise InvalidRequest(
            f"unsupported quantization type {name} - supported types are {', '.join(QUANTIZATION_TYPES)}"
        )
    return upper


def bits_per_weight(name: str) -> float:
    """Nominal size of a weight in the quantization type ``name``."""
    return _BITS[parse_quantization(name)]


def quantize_model(src: Path, dst: Path, target: str, *, threads: int = 0, interval: float = 0.25) -> Iterator[int]:
    """Quantize the GGUF ``src`` to ``target`` as ``dst``, yielding the bytes written so far as it goes.

    The file is written aside and renamed to ``dst`` when llama.cpp reports success; when the
    iteration ends early, the quantizer is waited for and its partial output removed.
    """
    ftype = QUANTIZATION_TYPES[parse_quantization(target)]
    backend()  # llama.cpp's log goes through ``logging``, as the engine routes it
    fd, name = tempfile.mkstemp(prefix=".tmp-", suffix=".gguf", dir=dst.parent)
    os.close(fd)
    tmp = Path(name)
    params = L.llama_model_quantize_default_params()
    params.ftype = ftype
    params.nthread = threads or default_threads()
    result: list[int | BaseException] = []

    def work() -> None:
        try:
            result.append(L.llama_model_quantize(str(src).encode(), str(tmp).encode(), ctypes.byref(params)))
        except BaseException as exc:  # re-raised on the calling thread
            result.append(exc)

    worker = threading.Thread(target=work, name="nbllm-quantize", daemon=True)
    worker.start()
    try:
        while worker.is_alive():
            worker.join(interval)
            with contextlib.suppress(OSError):
                yield tmp.stat().st_size
        outcome = result[0] if result else EngineError("the quantizer thread ended without a result")
        if isinstance(outcome, BaseException):
            raise outcome
        if outcome != 0:
            raise EngineError(f"llama.cpp could not quantize {src.name} to {target} (error {outcome})")
        with tmp.open("rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, dst)
        log.info("quantized %s to %s (%s)", src, dst, target)
    finally:
        worker.join()  # llama.cpp cannot be interrupted: never remove a file it is still writing
        with contextlib.suppress(OSError):
            tmp.unlink()
