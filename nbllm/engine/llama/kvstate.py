"""A sequence's KV state as bytes (llama.cpp's per-sequence state API), and the host-RAM prompt cache.

``save_seq`` copies one sequence's keys and values (and their positions) out of a context; ``restore_seq``
puts such bytes back into any sequence of a context over the same model and settings, replacing what that
sequence held. The decode loop uses them to keep a slot's prefix when the slot is given to another request
(:class:`RamCache`) and to resume conversations from files (:mod:`nbllm.store.snapshots`).
"""

from __future__ import annotations

import ctypes
import logging
import mmap
import queue
import sys
import threading
from collections import Counter, OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import llama_cpp as L

from nbllm.engine.llama.held import memory_seq_rm

__all__ = ["Buffer", "RamCache", "RamCacheStats", "State", "common_prefix", "fresh_buffer", "restore_seq", "save_seq"]

State = bytes | memoryview
"""A sequence's state: bytes (read from a file) or a view of the buffer :func:`save_seq` filled."""

log = logging.getLogger("nbllm.engine.llama")


_BLOCK = 64
"""Tokens :func:`common_prefix` compares at a time."""


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """How many leading tokens two sequences share (a list's or a tuple's).

    It runs on the decode thread at every admission, against every slot and every RAM-cache entry, and a
    shared system prompt makes every one of them a long walk: so a block of tokens at a time (one comparison
    in C), then token by token within the first block that differs. 500 shared tokens took 6-7 µs against
    14.4 for a loop over them (warm)."""
    n = min(len(a), len(b))
    if n == 0 or a[0] != b[0]:
        return 0
    i = 0
    while i + _BLOCK <= n and tuple(a[i : i + _BLOCK]) == tuple(b[i : i + _BLOCK]):
        i += _BLOCK
    while i < n and a[i] == b[i]:
        i += 1
    return i


Buffer = bytearray | mmap.mmap


def fresh_buffer(size: int) -> Buffer:
    """New writable memory for a state, its pages in place, without holding the GIL while the kernel faults them
    in: an anonymous map, written through by ``ctypes.memset`` (a C call that lets go of the GIL); a
    ``bytearray`` where there is no ``mmap.MAP_ANONYMOUS``.

    Every other way holds the GIL for as long as the faults take, and so stops the event loop and the decode
    thread: a ``bytearray``'s zeroing (44 MiB stalled the decode thread for 40-100 ms here), and Python's own
    ``mmap`` with ``MAP_POPULATE`` (CPython 3.11 does not let go of the GIL around ``mmap()``: 400 MiB held it
    460 ms, against 0.7 ms at most with this, which also took 290 ms instead)."""
    if sys.platform == "win32" or size <= 0 or not hasattr(mmap, "MAP_ANONYMOUS"):
        return bytearray(size)
    buf = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)  # (lazy: no page is in yet)
    start = ctypes.c_char.from_buffer(buf)
    ctypes.memset(ctypes.addressof(start), 0, size)
    del start  # (the map may be closed once nothing exports it)
    return buf


def save_seq(ctx: Any, seq_id: int, spare: Callable[[int], Buffer | None] | None = None) -> State:
    """One sequence's KV state, as llama.cpp serializes it (empty if the sequence holds nothing).

    Written straight into a buffer (one that ``spare(size)`` hands back, else a new one) and returned as a view
    of it: no second copy. Fresh memory is the dear part (faulting in 44 MiB took 23 ms here against 5 ms for
    llama.cpp to fill it), so the RAM cache recycles the buffers of the entries it drops.
    """
    size = int(L.llama_state_seq_get_size(ctx, seq_id))
    if size <= 0:
        return b""
    buf = spare(size) if spare is not None else None
    if buf is None or len(buf) < size:
        buf = fresh_buffer(size)
    n = int(L.llama_state_seq_get_data(ctx, (ctypes.c_uint8 * size).from_buffer(buf), size, seq_id))
    return memoryview(buf)[:n]


def restore_seq(ctx: Any, seq_id: int, data: State) -> bool:
    """Replace sequence ``seq_id``'s KV state with ``data`` (from :func:`save_seq`); False if llama.cpp refused it.

    On False the sequence is empty: llama.cpp checks the layer count, types and row sizes against the context
    and clears what it had begun to restore.
    """
    mem = L.llama_get_memory(ctx)
    memory_seq_rm(mem, seq_id, -1, -1)
    if not data:
        return False
    if isinstance(data, memoryview) and not data.readonly:  # a buffer of ours: read in place
        buf = (ctypes.c_uint8 * len(data)).from_buffer(data)
    else:
        buf = (ctypes.c_uint8 * len(data)).from_buffer_copy(data)
    if int(L.llama_state_seq_set_data(ctx, buf, len(data), seq_id)) == 0:
        memory_seq_rm(mem, seq_id, -1, -1)
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


def _held(data: State) -> int:
    """Bytes of memory a state keeps: its whole buffer for a view."""
    return len(data.obj) if isinstance(data, memoryview) and isinstance(data.obj, bytearray | mmap.mmap) else len(data)


class RamCache:
    """Sequence states of slots given to other requests, by their tokens; least recently used goes first.

    Used by the decode thread; ``stats`` may be read from any thread. An entry's bytes are those of the buffer
    that holds it. Buffers for the next :func:`save_seq` (``spare``) are kept ready, at most ``POOL`` of them,
    outside the budget: those of dropped entries, and, when none would fit, one that a background thread
    allocates after a save is kept, half as large again as that save. Memory that is new costs more than the copy
    (the pages are faulted in and zeroed: 23 ms for 44 MiB here, against 5 ms for llama.cpp to fill them), and
    the save happens while a request waits for its first token.
    """

    POOL = 2

    def __init__(self, budget: int, *, ahead: bool = True) -> None:
        self.budget = max(0, budget)
        self.ahead = ahead
        """Whether buffers are made ready in the background (else only dropped entries' are reused)."""
        self._entries: OrderedDict[tuple[int, ...], State] = OrderedDict()
        self._lengths: Counter[int] = Counter()
        """How many entries hold each number of tokens: most slots are told apart from every entry by that alone."""
        self._bytes = 0
        self._hits = self._misses = 0
        self._lock = threading.Lock()
        self._pool: list[Buffer] = []
        self._pool_lock = threading.Lock()  # apart from _lock: put() drops entries into the pool under _lock
        self._wanted: queue.SimpleQueue[int] = queue.SimpleQueue()
        self._filler: threading.Thread | None = None

    def put(self, tokens: Sequence[int], data: State, *, first_out: bool = False) -> None:
        """Keep ``data`` (the state of exactly ``tokens``); entries it extends are dropped, old ones evicted.

        ``first_out``: a copy of a slot still in use, made in case a new prompt takes that slot: it goes in as
        the first to go, so it takes only room that is free and is dropped before any state of a slot given
        away (it becomes one of those, most recently used, when its slot is given away: :meth:`keep`)."""
        key = tuple(tokens)
        if not data or _held(data) > (self.room() if first_out else self.budget):
            self._recycle(data)  # (a copy of a slot in use that does not fit leaves every entry as it was)
            return
        with self._lock:
            for old in [k for k in self._entries if len(k) <= len(key) and key[: len(k)] == k]:
                self._drop(old)
            self._entries[key] = data
            self._lengths[len(key)] += 1
            self._bytes += _held(data)
            if first_out:
                self._entries.move_to_end(key, last=False)
            while self._bytes > self.budget:
                self._drop(next(iter(self._entries)))
        self._ahead(len(data))

    def room(self) -> int:
        """Bytes of the budget no entry takes."""
        with self._lock:
            return self.budget - self._bytes

    def _drop(self, key: tuple[int, ...]) -> None:
        data = self._entries.pop(key)
        self._lengths[len(key)] -= 1
        if not self._lengths[len(key)]:
            del self._lengths[len(key)]  # (one count per length entries have now, not per length ever seen)
        self._bytes -= _held(data)
        self._recycle(data)

    def _recycle(self, data: State) -> None:
        if isinstance(data, memoryview) and isinstance(data.obj, bytearray | mmap.mmap):
            self._keep(data.obj)

    def _keep(self, buf: Buffer) -> None:
        if len(buf) > self.budget:  # it could never hold an entry: not kept outside the budget either
            return
        with self._pool_lock:
            self._pool = [buf, *self._pool][: self.POOL]

    def spare(self, size: int) -> Buffer | None:
        """A ready buffer that holds ``size`` bytes without wasting more than as much again, if any."""
        with self._pool_lock:
            fits = [b for b in self._pool if size <= len(b) <= 2 * size]
            buf = min(fits, key=len) if fits else None
            self._pool = [b for b in self._pool if b is not buf]
        return buf

    def _ahead(self, size: int) -> None:
        """After a save of ``size`` bytes (not during it: two threads faulting memory in at once slowed both
        ten-fold here), make a buffer ready for the next one unless one is."""
        with self._pool_lock:
            ready = any(size <= len(b) <= 2 * size for b in self._pool)
        if self.ahead and not ready:
            self._prepare(size + size // 2)

    def _prepare(self, size: int) -> None:
        self._wanted.put(size)
        if self._filler is None:
            self._filler = threading.Thread(target=self._fill, name="nbllm-kv-buffers", daemon=True)
            self._filler.start()

    def _fill(self) -> None:
        while (size := self._wanted.get()) > 0:
            self._keep(fresh_buffer(size))

    def close(self) -> None:
        """Stop the background thread (the buffers go with the cache)."""
        if self._filler is not None:
            self._wanted.put(0)
            self._filler.join(5)

    def best(self, prompt: Sequence[int]) -> tuple[int, tuple[int, ...] | None]:
        """The entry sharing the longest prefix with ``prompt``: (shared tokens, its key), or (0, None)."""
        best_n, best_key = 0, None
        with self._lock:
            for key in self._entries:
                n = common_prefix(key, prompt)
                if n > best_n:
                    best_n, best_key = n, key
        return best_n, best_key

    def holds(self, tokens: Sequence[int]) -> bool:
        """Whether an entry is the state of exactly ``tokens`` (a slot holding them needs no copy)."""
        if not self._lengths[len(tokens)]:  # (no tuple made: the decode loop asks this of every free slot)
            return False
        key = tuple(tokens)
        with self._lock:
            return key in self._entries

    def keep(self, tokens: Sequence[int]) -> bool:
        """The slot holding ``tokens`` is given away: whether an entry holds them, now as the most recently used."""
        if not self._lengths[len(tokens)]:
            return False
        key = tuple(tokens)
        with self._lock:
            if key not in self._entries:
                return False
            self._entries.move_to_end(key)
            return True

    def take(self, key: tuple[int, ...]) -> State | None:
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
