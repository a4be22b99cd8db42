"""llama.cpp's KV-cache bookkeeping called without letting go of the GIL.

llama-cpp-python binds every function through ``ctypes.CDLL``, which releases the GIL for the call and takes
it back after. For a call of microseconds on the decode thread that is a trap: another thread (the event loop
starting a stream, a request being tokenized) takes the GIL in that moment, and the decode thread waits until
it lets go. At a prompt's admission, ``llama_memory_seq_rm`` took 40-120 µs of CPU but 1.0-1.4 ms of wall
time in most rounds here, and 5-7 ms in some (``bench.ttft_path`` with a probe on it; 2 cores); bound as
below, the admission's median went from 1.24 to 0.13 ms. The same call runs after every speculative step
(the rejected draft positions).

Only functions that change the cache's bookkeeping and touch no tensor are bound here: they never wait for a
GPU, so holding the GIL through them is never longer than letting go of it. Where llama-cpp-python's library
handle cannot be found, its own (GIL-releasing) functions are used.
"""

from __future__ import annotations

import ctypes
import logging
from typing import Any

import llama_cpp as L

__all__ = ["memory_seq_add", "memory_seq_rm"]

log = logging.getLogger(__name__)


def _held(name: str) -> Any:
    """``name`` from llama-cpp-python's own library, through ``ctypes.PyDLL`` (the GIL is kept), with the
    argument and result types llama-cpp-python declares for it."""
    declared = getattr(L, name)
    try:
        lib = ctypes.PyDLL(L.llama_cpp._lib._name)  # (the library it loaded: dlopen hands back the same one)
        func = getattr(lib, name)
    except (AttributeError, OSError) as exc:  # a llama-cpp-python laid out otherwise
        log.debug("llama.cpp's %s is called releasing the GIL: %s", name, exc)
        return declared
    func.argtypes, func.restype = declared.argtypes, declared.restype
    return func


memory_seq_rm = _held("llama_memory_seq_rm")
"""``llama_memory_seq_rm(mem, seq_id, p0, p1) -> bool``, the GIL kept."""
memory_seq_add = _held("llama_memory_seq_add")
"""``llama_memory_seq_add(mem, seq_id, p0, p1, delta)``, the GIL kept."""
