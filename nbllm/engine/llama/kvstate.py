"""A sequence's KV state as bytes (llama.cpp's per-sequence state API), and the host-RAM prompt cache.

``save_seq`` copies one sequence's keys and values (and their positions) out of a context; ``restore_seq``
puts such bytes back into any sequence of a context over the same model and settings, replacing what that
sequence held. The decode loop uses them to keep a slot's prefix when the slot is given to another request
(:class:`RamCache`) and to resume conversations from files (:mod:`nbllm.store.snapshots`).
"""

from __future__ import annotations

import ctypes
import logging
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import llama_cpp as L

__all__ = ["RamCache", "RamCacheStats", "common_prefix", "restore_seq", "save_seq"]

log = logging.getLogger("nbllm.engine.llama")


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """How many leading tokens two sequences share."""
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def save_seq(ctx: Any, seq_id: int) -> bytes:
    """One sequence's KV state, as llama.cpp serializes it (empty if the sequence holds nothing)."""
    size = int(L.llama_state_seq_get_size(ctx, seq_id))
    if size <= 0:
        return b""
    buf = (ctypes.c_uint8 * size)()
    n = int(L.llama_state_seq_get_data(ctx, buf, size, seq_id))
    return bytes(memoryview(buf)[:n])


def restore_seq(ctx: Any, seq_id: int, data: bytes) -> bool:
    """Replace sequence ``seq_id``'s KV state with ``data`` (from :func:`save_seq`); False if llama.cpp refused it.

    On False the sequence is empty: llama.cpp checks the layer count, types and row sizes against the context
    and clears what it had begun to restore.
    """
    mem = L.llama_get_memory(ctx)
    L.llama_memory_seq_rm(mem, seq_id, -1, -1)
    if not data:
        return False
    buf = (ctypes.c_uint8 * len(data)).from_buffer_copy(data)
    if int(L.llama_state_seq_set_data(ctx, buf, len(data), seq_id)) == 0:
        L.llama_memory_seq_rm(mem, seq_id, -1, -1)
        return False
    return True


@dataclass(frozen=True)
class RamCacheStats:
    """What ``/metrics`` and ``/api/ps`` report of a model's RAM prompt cache."""

    entries: int = 0
    bytes: int = 0
    budget: int = 0
    hits: int = 0
    misses: int = 0


class RamCache:
    """Sequence states of slots given to other requests, by their tokens; least recently used goes first.

    Used by the decode thread; ``stats`` may be read from any thread.
    """

    def __init__(self, budget: int) -> None:
        self.budget = max(0, budget)
        self._entries: OrderedDict[tuple[int, ...], bytes] = OrderedDict()
        self._bytes = 0
        self._hits = self._misses = 0
        self._lock = threading.Lock()

    def put(self, tokens: Sequence[int], data: bytes) -> None:
        """Keep ``data`` (the state of exactly ``tokens``); entries it extends are dropped, old ones evicted."""
        key = tuple(tokens)
        if not data or len(data) > self.budget:
            return
        with self._lock:
            for old in [k for k in self._entries if len(k) <= len(key) and key[: len(k)] == k]:
                self._bytes -= len(self._entries.pop(old))
            self._entries[key] = data
            self._bytes += len(data)
            while self._bytes > self.budget:
                _, dropped = self._entries.popitem(last=False)
                self._bytes -= len(dropped)

    def best(self, prompt: Sequence[int]) -> tuple[int, tuple[int, ...] | None]:
        """The entry sharing the longest prefix with ``prompt``: (shared tokens, its key), or (0, None)."""
        best_n, best_key = 0, None
        with self._lock:
            for key in self._entries:
                n = common_prefix(key, prompt)
                if n > best_n:
                    best_n, best_key = n, key
        return best_n, best_key

    def take(self, key: tuple[int, ...]) -> bytes | None:
        """An entry's state, counted as a hit (it stays, as most recently used)."""
        with self._lock:
            data = self._entries.get(key)
            if data is not None:
                self._entries.move_to_end(key)
                self._hits += 1
            return data

    def miss(self) -> None:
        """Count a request whose prefix no entry would have improved."""
        with self._lock:
            self._misses += 1

    def stats(self) -> RamCacheStats:
        """Entries, bytes, budget, hits and misses now."""
        with self._lock:
            return RamCacheStats(len(self._entries), self._bytes, self.budget, self._hits, self._misses)
