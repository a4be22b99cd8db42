"""Prefixes kept beyond the slots: the host-RAM prompt cache and KV snapshots on disk.

The decode loop calls :meth:`SlotStates.admit` when it gives a request a slot. A slot whose tokens the
request would cut by :data:`MIN_TOKENS` or more first has its state put in the RAM cache, unless the cache
already holds exactly those tokens: when the loop goes idle with every slot taken, :meth:`SlotStates.stash_ahead`
(after :attr:`SlotStates.IDLE_AFTER` with nothing to do) copies the slot a new prompt would take, so that the
copy is made while nobody waits, not while the next request waits for its first token (the first copy also
pays for fresh memory: 50-220 ms for 42 MiB here). When the RAM
cache or a snapshot shares a longer prefix with the prompt than any free slot, that state is restored into
the free slot with the least to lose and trimmed to the shared prefix; the rest of the prompt is evaluated
as usual. A snapshot that cannot be used (damaged, truncated, another model or settings, refused by
llama.cpp) is logged and dropped from the index, and the prompt is evaluated: never an error, never
output that differs from evaluating the prompt.

With snapshots on, :meth:`SlotStates.finished` copies a finished sequence's state (on the decode thread:
a memory copy) and a writer thread persists it; :meth:`SlotStates.close` waits for the writes.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, TypeVar

import llama_cpp as L

from nbllm.engine.base import LoadSpec, StateFile, StateFiles
from nbllm.engine.llama.held import memory_seq_rm
from nbllm.engine.llama.kvstate import RamCache, State, common_prefix, restore_seq, save_seq

__all__ = ["MIN_TOKENS", "SlotStates", "layout_of", "loss"]

log = logging.getLogger("nbllm.engine.llama")

MIN_TOKENS = 32
"""Shorter prefixes are evaluated again rather than kept: the copy would cost about as much."""
_SUPERSEDED = 16
"""A new snapshot replaces an older one that shares all of its tokens but at most this many (the previous
turn of the same conversation: its last answer tokens may be written back differently)."""


def loss(cache: Sequence[int], *, held: bool) -> int:
    """What giving away a slot holding ``cache`` costs, in tokens, to a prompt that shares nothing with it: a copy
    to RAM before its first token unless the RAM cache holds that state already, and a copy back if the slot's
    conversation comes back. The decode loop gives a new prompt the free slot where this is least."""
    return len(cache) if held else 2 * len(cache)


class SlotLike(Protocol):
    """What SlotStates needs of the decode loop's slots."""

    seq_id: int
    cache: list[int]
    shifted: bool


S = TypeVar("S", bound=SlotLike)


def layout_of(spec: LoadSpec, ctx: Any, n_ctx: int, type_k: int, flash: int) -> dict[str, object]:
    """What a sequence state is tied to: model digest, adapters, context settings and llama.cpp's version."""
    size = spec.path.stat().st_size if spec.path.exists() else 0
    return {
        "model": f"{spec.path.name}:{size}",
        "adapters": ",".join(f"{p.name}:{p.stat().st_size if p.exists() else 0}" for p in spec.adapters),
        "n_ctx": n_ctx,
        "type_k": type_k,
        "type_v": type_k,
        "flash_attn": flash,
        "n_embd_layers": int(L.llama_model_n_layer(L.llama_get_model(ctx))),
        "llama_cpp": str(getattr(L, "__version__", "")),
    }


class SlotStates:
    """The RAM cache and the snapshot files of one decode loop."""

    IDLE_AFTER = 0.2
    """Seconds the decode loop waits with nothing to do before it calls :meth:`stash_ahead`: requests that
    follow each other closer than that (a script, an agent's tool loop, a benchmark) never wait for an idle
    copy, and the copy is not wasted on a conversation about to go on in its own slot."""

    def __init__(self, ctx: Any, spec: LoadSpec, layout: Mapping[str, object]) -> None:
        self._ctx = ctx
        self.ram = RamCache(spec.ram_cache) if spec.ram_cache > 0 else None
        self._files: StateFiles | None = spec.snapshots
        self._layout = dict(layout)
        self._lock = threading.Lock()
        self._disk: list[StateFile] = []
        self._counts = {"snapshot_hits": 0, "snapshot_refused": 0, "snapshot_writes": 0}
        self._writes: queue.SimpleQueue[tuple[list[int], State] | None] = queue.SimpleQueue()
        self.stash_s = 0.0
        """Seconds the last :meth:`admit` spent keeping a slot's state in RAM (not the new prompt's evaluation)."""
        self._writer: threading.Thread | None = None
        if self._files is not None:
            self._disk = list(self._files.index(self._layout))
            self._writer = threading.Thread(target=self._write_loop, name="nbllm-kv-snapshots", daemon=True)
            self._writer.start()

    @property
    def enabled(self) -> bool:
        """Whether anything is kept at all."""
        return self.ram is not None or self._files is not None

    # ── admission (decode thread) ─────────────────────────────────────────────────────────────
    def admit(
        self, free: Sequence[S], slot: S, prompt: Sequence[int], reuse: int, *, runs: Callable[[S], int] | None = None
    ) -> S:
        """The slot to give a request whose best free slot is ``slot`` sharing ``reuse`` tokens; its cache set.

        A state restored goes to the free slot that adds the fewest ``runs`` of sequence ids to the decode loop's
        batch (``batching._runs_added``), then to the one holding least."""
        self.stash_s = 0.0
        limit = len(prompt) - 1
        n_ram, key = self.ram.best(prompt) if self.ram is not None else (0, None)
        n_disk, snap = self._best_file(prompt)
        if min(max(n_ram, n_disk), limit) < reuse + MIN_TOKENS:
            if self.ram is not None and n_ram <= reuse:
                self.ram.miss()
            self._stash(slot, reuse)
            return slot
        target = min(free, key=lambda s: (runs(s) if runs is not None else 0, len(s.cache)))
        self._stash(target, 0)
        tokens: Sequence[int] | None = None
        if n_ram >= n_disk and key is not None and self.ram is not None:
            data = self.ram.take(key)
            tokens = key if data is not None and restore_seq(self._ctx, target.seq_id, data) else None
        elif snap is not None:
            tokens = self._restore_file(snap, target.seq_id)
        if tokens is None:  # nothing restored: the sequence is empty now
            memory_seq_rm(L.llama_get_memory(self._ctx), target.seq_id, -1, -1)
            tokens = []
        target.cache[:] = tokens
        target.shifted = False
        return target

    def _best_file(self, prompt: Sequence[int]) -> tuple[int, StateFile | None]:
        best_n, best = 0, None
        with self._lock:
            for snap in self._disk:
                n = common_prefix(snap.tokens, prompt)
                if n > best_n:
                    best_n, best = n, snap
        return best_n, best

    def _restore_file(self, snap: StateFile, seq_id: int) -> Sequence[int] | None:
        assert self._files is not None
        try:
            data = self._files.load(snap.path, self._layout, snap.tokens)
            if not restore_seq(self._ctx, seq_id, data):
                raise ValueError("llama.cpp refused its state")
        except Exception as exc:  # an unusable file is never an error: the prompt is evaluated instead
            log.warning("not resuming from KV snapshot %s: %s", snap.path.name, exc)
            self._forget(snap.path)
            with self._lock:
                self._counts["snapshot_refused"] += 1
            return None
        with self._lock:
            self._counts["snapshot_hits"] += 1
        return snap.tokens

    def _forget(self, path: Path) -> None:
        with self._lock:
            self._disk = [s for s in self._disk if s.path != path]

    def held(self, tokens: Sequence[int]) -> bool:
        """Whether the RAM cache holds the state of exactly ``tokens``: a slot holding them goes with no copy."""
        return self.ram is not None and self.ram.holds(tokens)

    def stash_ahead(self, slots: Sequence[SlotLike], busy: Callable[[], bool] | None = None) -> None:
        """The loop is idle and every slot holds something: keep in RAM now the state of the slot that a prompt
        sharing nothing with any of them would take (as the loop's ``_slot_rank`` picks), so that its
        admission finds it kept. With ``busy`` (idle for ``IDLE_AFTER``, not told of a prompt on its way), then
        the states of the other slots too, one at a time until ``busy()``, as first to go and only into room
        that is free (``RamCache.put``): prompts that come back to back after the pause (a script, an agent,
        a benchmark's rounds) then find each slot they take kept, where the first used to copy none and the
        next ones one each, as they waited for their first token. A slot taken by a prompt that shares its
        prefix keeps its tokens in the slot; its RAM entry is then one more copy of a prefix, dropped when a
        longer one of it is kept, or by age."""
        if self.ram is None or not slots or any(not slot.cache for slot in slots):
            return
        order = sorted(slots, key=lambda slot: loss(slot.cache, held=self.held(slot.cache)))
        if busy is None:
            order = order[:1]
        copied = False
        for slot in order:
            if copied and busy is not None and busy():
                return
            if not self.held(slot.cache):
                copied = self._stash(slot, 0, first_out=copied) or copied

    def _stash(self, slot: SlotLike, keep: int, *, first_out: bool = False) -> bool:
        """Keep a slot's state in RAM before it loses all but ``keep`` of its tokens; whether a copy was made."""
        if self.ram is not None and not slot.shifted and len(slot.cache) - keep >= MIN_TOKENS:
            if self.ram.keep(slot.cache):
                return False  # kept already (while the loop was idle, or restored and not extended since)
            room = self.ram.room() if first_out else self.ram.budget
            if int(L.llama_state_seq_get_size(self._ctx, slot.seq_id)) > room:
                return False  # it would not be kept: no copy made
            started = time.perf_counter()
            self.ram.put(slot.cache, save_seq(self._ctx, slot.seq_id, self.ram.spare), first_out=first_out)
            self.stash_s += time.perf_counter() - started
            return True
        return False

    # ── persistence ──────────────────────────────────────────────────────────────────────────
    def finished(self, slot: SlotLike) -> None:
        """A request finished in ``slot``: persist its sequence's state (snapshots on)."""
        if self._writer is None or slot.shifted or len(slot.cache) < MIN_TOKENS:
            return
        self._writes.put((list(slot.cache), save_seq(self._ctx, slot.seq_id)))

    def _write_loop(self) -> None:
        assert self._files is not None
        while (item := self._writes.get()) is not None:
            tokens, data = item
            try:
                snap = self._files.save(self._layout, tokens, data)
            except Exception:  # a full disk loses a snapshot, never an answer
                log.exception("could not write a KV snapshot")
                continue
            with self._lock:
                self._counts["snapshot_writes"] += 1
                old = [s for s in self._disk if common_prefix(s.tokens, tokens) >= len(s.tokens) - _SUPERSEDED]
                self._disk = [*(s for s in self._disk if s not in old), snap]
            for s in old:
                if s.path != snap.path:
                    self._files.discard(s.path)

    def stats(self) -> dict[str, int]:
        """RAM cache entries, bytes, budget, hits, misses; snapshots indexed, resumed from, refused, written."""
        out: dict[str, int] = {}
        if self.ram is not None:
            r = self.ram.stats()
            out.update(entries=r.entries, bytes=r.bytes, budget=r.budget, hits=r.hits, misses=r.misses)
        if self._files is not None:
            with self._lock:
                out.update(snapshots=len(self._disk), **self._counts)
        return out

    def close(self) -> None:
        """Finish the pending writes."""
        if self.ram is not None:
            self.ram.close()
        if self._writer is not None:
            self._writes.put(None)
            self._writer.join(timeout=60)
