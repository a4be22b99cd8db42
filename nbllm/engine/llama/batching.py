"""The decode loop: continuous batching of every active request into one ``llama_decode`` per step.

One thread per loaded model. Each step packs one token for every generating sequence, then as much
pending prompt as the batch holds, decodes once, and samples each sequence that produced logits with
its own native sampler chain. Requests join and leave between steps. A slot keeps its KV cache after
its request ends, so the next request sharing a prefix (a chat's earlier turns) evaluates only what
is new.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import llama_cpp as L
import numpy as np

from nbllm.engine.base import (
    FinalStats,
    SamplingParams,
    TokenChunk,
)
from nbllm.engine.llama.draft_model import DraftModel, Proposer
from nbllm.engine.llama.held import memory_seq_add, memory_seq_rm
from nbllm.engine.llama.kvstate import common_prefix
from nbllm.engine.llama.lookup import DraftPolicy, PromptLookup
from nbllm.engine.llama.native import NativeModel
from nbllm.engine.llama.request import Request
from nbllm.engine.llama.resume import SlotStates, loss
from nbllm.engine.llama.sampling import (
    Logits,
    free_sampler,
    make_sampler,
    plain_greedy,
    sample,
    shapes_without_history,
)
from nbllm.engine.llama.speculate import SampledVerifier
from nbllm.engine.logprobs import token_logprob
from nbllm.engine.text import StreamText
from nbllm.errors import Cancelled, EngineError

__all__ = ["DecodeLoop"]

log = logging.getLogger("nbllm.engine.llama")


@dataclass(eq=False)
class _Slot:
    seq_id: int
    cache: list[int] = field(default_factory=list)
    """Tokens whose keys and values are in this slot's KV cache, in position order."""
    req: Request | None = None
    pending: list[int] = field(default_factory=list)
    sampler: Any = None
    greedy: bool = False
    """Plain greedy: the token is the argmax of the logits and there is no sampler chain."""
    text: StreamText | None = None
    last_token: int | None = None
    batch_index: int = -1
    out_row: int = -1
    """This step's row in llama.cpp's logits (the outputs are in batch order)."""
    lookup: Proposer | None = None
    """The sequence's drafter: prompt lookup, or the draft model (None: this request does not speculate)."""
    policy: DraftPolicy | None = None
    draft: list[int] = field(default_factory=list)
    """This step's draft tokens, decoded right after the sequence's next token."""
    verifier: SampledVerifier | None = None
    """A sampled request's speculative sampling (None: plain greedy, verified by the argmax)."""
    n_drafted: int = 0
    n_accepted: int = 0
    n_generated: int = 0
    n_prompt: int = 0
    n_cached: int = 0
    shifted: bool = False
    """The cache was shifted: its keys no longer equal a fresh evaluation of its tokens (never kept elsewhere)."""
    t_start: float = 0.0
    t_first: float = 0.0


def _by_seq(part: tuple[_Slot, int, list[int], bool]) -> int:
    return part[0].seq_id


def _never(tokens: Sequence[int]) -> bool:
    return False


_WORTH_REUSING = 32
"""A shared prefix shorter than this and than half the prompt (a chat template's first tokens) does not decide
which slot a request takes."""


def _slot_rank(cache: list[int], prompt: list[int], *, held: bool = False) -> tuple[int, int]:
    """How well a free slot suits a prompt: the longest prefix worth reusing, then the least to lose (an empty
    slot first: nothing of another conversation is overwritten, or kept in RAM at the cost of a copy; then,
    ``resume.loss``, the one holding least, a slot whose state the RAM cache holds (``held``) counting half)."""
    shared = common_prefix(cache, prompt)
    return (shared if shared >= min(_WORTH_REUSING, len(prompt) // 2) else 0), -loss(cache, held=held)


def _runs_added(seq_id: int, busy: set[int]) -> int:
    """How many runs of consecutive sequence ids the sequences in ``busy`` gain with ``seq_id`` among them: 1 apart
    from every one, 0 next to one, -1 between two. llama.cpp computes a batch over per-sequence KV streams one
    run at a time (docs/batching.md), so a new request's slot next to the running ones costs its steps less."""
    return 1 - ((seq_id - 1) in busy) - ((seq_id + 1) in busy)


def _slot_runs_added(slot: _Slot, *, busy: set[int]) -> int:
    return _runs_added(slot.seq_id, busy)


def _admission_rank(slot: _Slot, prompt: list[int], busy: set[int], *, held: bool) -> tuple[int, int, int]:
    """Which free slot a request takes: the longest prefix worth reusing, then the fewest runs of sequence ids
    added to the batch (:func:`_runs_added`), then the least to lose (:func:`_slot_rank`)."""
    shared, kept = _slot_rank(slot.cache, prompt, held=held)
    return shared, -_runs_added(slot.seq_id, busy), kept


class DecodeLoop:
    """Owns a context's sequences and the thread that decodes them."""

    SPIN_S = 0.02
    """How long after its last step llama.cpp's threads may still hold the cores: its OpenMP workers spin a
    while before they sleep. A prompt split over two threads 1, 3 and 10 ms after a step took 1.90, 1.82 and
    1.17 ms against 1.6 whole (500 tokens, 2 cores)."""

    def __init__(
        self,
        model: NativeModel,
        ctx: Any,
        *,
        parallel: int,
        name: str,
        draft_limit: int = 63,
        drafter: DraftModel | None = None,
        states: SlotStates | None = None,
    ) -> None:
        self._model = model
        self._drafter = drafter
        """The draft model, when the model has one: it drafts in place of prompt lookup."""
        self._states = states if states is not None and states.enabled else None
        """The RAM prompt cache and KV snapshots (engine.llama.resume), if either is on."""
        # Drafts need the tail of a sequence's memory removed when rejected: not on recurrent models.
        self._can_draft = not model.is_recurrent()
        self._draft_limit = draft_limit
        """Most draft tokens a step in the automatic mode."""
        self._ctx = ctx
        self._mem = L.llama_get_memory(ctx)
        self.n_ctx = int(L.llama_n_ctx_seq(ctx))
        self._n_batch = int(L.llama_n_batch(ctx))
        size = max(self._n_batch, parallel)
        self._batch = L.llama_batch_init(size, 0, 1)
        # The batch's arrays, looked up once: each field access on the ctypes struct makes a new pointer object.
        b = self._batch
        self._tokens, self._positions, self._outputs = b.token, b.pos, b.logits
        self._seq_ids = [b.seq_id[i] for i in range(size)]
        for i in range(size):
            b.n_seq_id[i] = 1  # one sequence per token, always
        self._slots = [_Slot(seq_id=i) for i in range(parallel)]
        self._active: list[_Slot] = []
        """The slots with a request, in the order they got it. Replaced, never changed in place, so a step may
        go on iterating the list it started with while a request leaves."""
        self._queue: deque[Request] = deque()
        self._cv = threading.Condition()
        self._closed = False
        self._logits = Logits(ctx, model.n_vocab)
        self.idle_since: float | None = None
        """When the loop last ran out of work (``time.monotonic``); None while it has some."""
        self._expected = False
        """A new prompt is being tokenized (:meth:`expect`): make the idle copy at once. Cleared by an admission."""
        self._thread = threading.Thread(target=self._run, name=f"nbllm-decode-{name[:24]}", daemon=True)
        self._thread.start()

    def submit(self, req: Request) -> None:
        """Queue a request (FIFO)."""
        with self._cv:
            if self._closed:
                raise EngineError("the model was unloaded")
            self._queue.append(req)
            self._cv.notify()

    def load_state(self) -> tuple[int, int]:
        """(active, queued) requests."""
        with self._cv:
            return len(self._active), len(self._queue)

    def close(self) -> bool:
        """Stop the thread, failing what is left; False if it would not stop."""
        with self._cv:
            self._closed = True
            self._cv.notify()
        self._thread.join(timeout=30)
        if self._thread.is_alive():  # pragma: no cover - a decode step never takes this long
            return False
        L.llama_batch_free(self._batch)
        return True

    # ── the loop ────────────────────────────────────────────────────────────────────────────
    def _run(self) -> None:
        while True:
            # While sequences are generating and nothing waits, the lock is skipped: a request submitted
            # meanwhile is seen at the next step (the deque's length is read atomically).
            if self._queue or self._closed or not self._active:
                if not self._active and not self._queue and not self._closed:
                    self.idle_since = time.monotonic()
                    if self._states is not None:
                        self._idle_stash(self._states)
                with self._cv:
                    while not self._closed and not self._queue and not self._active:
                        self._cv.wait()
                    self.idle_since = None
                    if self._closed:
                        self._fail_all(EngineError("the model was unloaded"))
                        return
                    if self._queue:
                        self._admit()
            try:
                self._drop_cancelled()
                self._step()
            except Exception as exc:  # keep serving: fail the requests in flight, reset the cache
                log.exception("decode step failed")
                with self._cv:
                    self._fail_all(exc if isinstance(exc, EngineError) else EngineError(f"llama.cpp: {exc}"))
                L.llama_memory_clear(self._mem, True)  # noqa: FBT003 - C API
                for slot in self._slots:
                    slot.cache.clear()
                    slot.shifted = False

    def computing(self) -> bool:
        """Whether llama.cpp may be computing now, or its threads still spinning: the loop has work, or went idle
        less than ``SPIN_S`` ago."""
        since = self.idle_since
        return since is None or time.monotonic() - since < self.SPIN_S

    def _has_work(self) -> bool:
        return self._closed or bool(self._queue) or bool(self._active)

    def expect(self) -> None:
        """A prompt that goes on from no recent one (a new conversation, a fresh ``/api/generate`` prompt) is
        being tokenized (``NativeModel.new_prompt``). If the loop is idle and has not yet copied to RAM the slot
        such a prompt takes, it copies it now, while the prompt is tokenized on the request's thread, instead of
        at the prompt's admission, where the copy delayed its first token: 0.6 ms for 500 tokens on this
        project's 2 CPU cores, ~5 ms for 2,000 on an H200 (``docs/kv-snapshots.md``)."""
        if self._states is None:
            return
        with self._cv:  # (busy, the loop makes the copy as soon as it goes idle, unless the prompt is in by then)
            self._expected = True
            self._cv.notify()

    def _idle_stash(self, states: SlotStates) -> None:
        """Idle: once nothing has come for ``SlotStates.IDLE_AFTER`` seconds, or at once when a new prompt is
        on its way (:meth:`expect`), copy to RAM what the next new prompt would otherwise copy while it waits
        (``SlotStates.stash_ahead``: after ``IDLE_AFTER``, every slot, one at a time). A request that comes
        sooner and continues its own slot (a client's next turn, an agent back from a tool) waits for no copy,
        and finds its slot as it left it; one that comes during a copy waits for that copy to end."""
        with self._cv:
            self._cv.wait_for(lambda: self._has_work() or self._expected, timeout=states.IDLE_AFTER)
            if self._has_work():
                return
            told = self._expected  # (a prompt on its way: only the slot it takes; else every slot, until work comes)
        try:
            states.stash_ahead(self._slots, None if told else self._has_work)
        except Exception:  # a copy that fails costs the cache an entry, never the loop
            log.exception("keeping an idle slot's state in RAM failed")

    def _fail_all(self, exc: BaseException) -> None:
        for slot in self._active:
            req = slot.req
            assert req is not None
            self._release(slot)
            req.post(exc)
        while self._queue:
            self._queue.popleft().post(exc)

    def _admit(self) -> None:
        """Drop queued requests whose client left; give the others free slots, FIFO, by longest shared prefix."""
        if any(req.cancel.is_set() for req in self._queue):
            for req in [req for req in self._queue if req.cancel.is_set()]:
                self._queue.remove(req)
                req.post(Cancelled("request cancelled"))
        while self._queue:
            free = [s for s in self._slots if s.req is None]
            if not free:
                return
            req = self._queue.popleft()
            self._expected = False  # (the heads-up was this prompt's, or one's that comes after: it copies itself)
            t_start = time.perf_counter()  # (a restore below counts in the prompt's evaluation time)
            held = self._states.held if self._states is not None else _never
            busy = {s.seq_id for s in self._active}
            slot = max(free, key=lambda s: _admission_rank(s, req.prompt, busy, held=held(s.cache)))
            reuse = min(common_prefix(slot.cache, req.prompt), len(req.prompt) - 1)
            if self._states is not None:  # a longer prefix kept in RAM or on disk, restored into a slot
                runs = functools.partial(_slot_runs_added, busy=busy)
                slot = self._states.admit(free, slot, req.prompt, reuse, runs=runs)
                reuse = min(common_prefix(slot.cache, req.prompt), len(req.prompt) - 1)
                t_start += self._states.stash_s  # keeping the old state is overhead, not the prompt's evaluation
            if reuse < len(slot.cache) and not memory_seq_rm(self._mem, slot.seq_id, reuse, -1):
                memory_seq_rm(self._mem, slot.seq_id, -1, -1)  # partial removal unsupported
                reuse = 0
            del slot.cache[reuse:]
            slot.shifted = slot.shifted and reuse > 0
            slot.req = req
            self._active = [*self._active, slot]
            slot.pending = req.prompt[reuse:]
            slot.n_cached = reuse
            slot.n_prompt = slot.n_generated = 0
            slot.last_token = None
            slot.t_first = 0.0
            slot.text = StreamText(req.params.stop)
            slot.t_start = t_start
            slot.greedy = plain_greedy(req.params)
            self._plan_drafts(slot, req)
            try:
                # plain greedy needs no chain: _sample takes the argmax
                slot.sampler = None if slot.greedy else make_sampler(self._model.vocab, req.params, req.prompt)
            except Exception as exc:  # a bad sampler fails its own request, never the decode thread
                log.exception("could not build the sampler")
                self._release(slot)
                req.post(exc if isinstance(exc, EngineError) else EngineError(f"sampler: {exc}"))

    def _drop_cancelled(self) -> None:
        for slot in self._active:
            req = slot.req
            assert req is not None
            if req.cancel.is_set():
                self._release(slot)
                req.post(Cancelled("request cancelled"))

    def _release(self, slot: _Slot) -> None:
        if slot.sampler is not None:
            free_sampler(slot.sampler)
        slot.sampler = None
        if slot.verifier is not None:  # its native sampler chain is freed with the request, not at the next one
            slot.verifier.close()
            slot.verifier = None
        if slot.req is not None:
            self._active = [s for s in self._active if s is not slot]
        slot.req = None
        slot.pending = []
        slot.last_token = None
        slot.batch_index = slot.out_row = -1
        slot.lookup = slot.policy = None
        slot.draft = []

    def _add(self, i: int, token: int, pos: int, seq: int, *, logits: bool) -> None:
        self._tokens[i] = token
        self._positions[i] = pos
        self._seq_ids[i][0] = seq
        self._outputs[i] = logits

    def _step(self) -> None:
        budget = self._n_batch
        active = self._active
        parts: list[tuple[_Slot, int, list[int], bool]] = []
        """What each slot puts in this step: (slot, first position, tokens, generating), decided in the order the
        slots came (the prompt budget goes first come, first served), written to the batch by sequence id."""
        generating = sum(1 for slot in active if not slot.pending and slot.last_token is not None)
        for slot in active:  # one token per generating sequence (and its draft, if it has one)
            if slot.pending or slot.last_token is None:
                continue
            if len(slot.cache) >= self.n_ctx and not self._make_room(slot):
                continue
            pos = len(slot.cache)
            token = slot.last_token
            slot.cache.append(token)
            slot.last_token = None
            if slot.policy is not None:
                slot.draft = draft = self._draft(slot, generating, budget - generating)
                budget -= len(draft)
                parts.append((slot, pos, [token, *draft], True))
            else:
                parts.append((slot, pos, [token], True))
            budget -= 1
        for slot in active:  # then as much pending prompt as fits
            if not slot.pending or budget <= 0 or slot.req is None:
                continue
            take = slot.pending[:budget]
            parts.append((slot, len(slot.cache), take, False))
            slot.cache.extend(take)
            slot.pending = slot.pending[len(take) :]
            slot.n_prompt += len(take)
            budget -= len(take)
        if len(parts) > 1:
            # In ascending sequence ids: llama.cpp splits a batch over per-sequence KV streams into one ubatch
            # per run of consecutive ids in batch order, each computed apart (docs/batching.md)
            parts.sort(key=_by_seq)
        n = outputs = greedy = 0
        sampled: list[_Slot] = []
        """The slots that get logits this step, in batch (and so in output row) order."""
        for slot, pos, tokens, gen in parts:
            seq = slot.seq_id
            for j, token in enumerate(tokens):
                self._add(n + j, token, pos + j, seq, logits=gen)
            if gen:
                slot.batch_index = n
                slot.out_row = outputs
                outputs += len(tokens)
                greedy += len(tokens) * slot.greedy
                sampled.append(slot)
            elif not slot.pending:  # the prompt's last token: its logits give the first generated token
                self._outputs[n + len(tokens) - 1] = True
                slot.batch_index = n + len(tokens) - 1
                slot.out_row = outputs
                outputs += 1
                greedy += slot.greedy
                sampled.append(slot)
            n += len(tokens)
        if n == 0:
            return
        self._batch.n_tokens = n
        rc = L.llama_decode(self._ctx, self._batch)
        if rc != 0:
            raise EngineError(f"llama_decode failed with status {rc}")
        now = time.perf_counter()
        logits = self._logits.table(outputs)
        # plain greedy everywhere (the common case): every row's argmax in one call
        argmax: list[int] | None = logits.argmax(axis=1).tolist() if greedy == outputs else None
        for slot in sampled:
            row = slot.out_row
            if slot.draft:
                self._verify(slot, now, logits, argmax)
                continue
            if argmax is not None:
                token = argmax[row]
            elif slot.greedy:
                token = int(logits[row].argmax())
            else:
                token = sample(slot.sampler, self._ctx, slot.batch_index)
            self._emit(slot, token, now, logits, row)

    def _plan_drafts(self, slot: _Slot, req: Request) -> None:
        """Speculate for plain greedy requests, and for sampled ones whose distribution needs no history."""
        slot.n_drafted = slot.n_accepted = 0
        slot.draft = []
        if slot.verifier is not None:
            slot.verifier.close()
        slot.verifier = policy = None
        sampled = shapes_without_history(req.params)
        if (slot.greedy or sampled) and self._can_draft:
            policy = DraftPolicy.for_request(req.params.draft, auto_limit=self._draft_limit, greedy=slot.greedy)
        if policy is not None and sampled:
            slot.verifier = SampledVerifier(req.params, self._model.n_vocab)
        slot.policy = policy
        drafter = self._drafter
        slot.lookup = (
            None
            if policy is None
            else drafter.follow(slot.seq_id, req.prompt)
            if drafter
            else PromptLookup(req.prompt, policy.ngrams)
        )

    def _draft(self, slot: _Slot, generating: int, room: int) -> list[int]:
        """This step's draft for a slot: within its policy, the batch, the context and what it may still generate."""
        assert slot.policy is not None and slot.lookup is not None and slot.req is not None
        k = slot.policy.want(generating)
        left = slot.req.params.num_predict - slot.n_generated - 1 if slot.req.params.num_predict > 0 else k
        k = min(k, room, self.n_ctx - len(slot.cache) - 1, left)
        return slot.lookup.draft(k) if k > 0 else []

    def _verify(self, slot: _Slot, now: float, logits: np.ndarray[Any, Any], argmax: list[int] | None) -> None:
        """Emit the model's own tokens for a drafted step: the next one and one more per draft token it agrees
        with (greedy: its argmax; sampled: speculative sampling's acceptance); then remove the rejected draft
        positions from the sequence's memory."""
        draft, slot.draft = slot.draft, []
        row = slot.out_row
        rows = logits[row : row + len(draft) + 1]
        if slot.verifier is not None:  # sampled: speculative sampling's acceptance
            chosen = slot.verifier.verify(rows, draft)
            accepted = len(chosen) - 1
        else:  # greedy: the model's own argmax at each position
            chosen = argmax[row : row + len(draft) + 1] if argmax is not None else rows.argmax(axis=1).tolist()
            accepted = 0
            while accepted < len(draft) and chosen[accepted] == draft[accepted]:
                accepted += 1
        slot.n_drafted += len(draft)
        slot.n_accepted += accepted
        assert slot.policy is not None
        slot.policy.update(len(draft), accepted)
        end = len(slot.cache) + len(draft)  # the positions this step put in the sequence's memory
        for j in range(accepted + 1):
            self._emit(slot, chosen[j], now, logits, row + j)
            if slot.req is None or j == accepted:  # finished (the rest is dropped), or the last one
                break
            slot.cache.append(chosen[j])  # it is the draft token already decoded at this position
            slot.last_token = None
        if len(slot.cache) < end and not memory_seq_rm(self._mem, slot.seq_id, len(slot.cache), -1):
            raise EngineError("llama.cpp could not remove rejected draft tokens from the cache")

    def _make_room(self, slot: _Slot) -> bool:
        """The slot's context is full: shift it (drop old tokens after num_keep) or finish with 'length'."""
        params = slot.req.params if slot.req else SamplingParams()
        if not params.shift or not L.llama_memory_can_shift(self._mem):
            self._finish(slot, "length")
            return False
        keep = max(0, min(params.num_keep, len(slot.cache) - 2))
        discard = (len(slot.cache) - keep) // 2
        memory_seq_rm(self._mem, slot.seq_id, keep, keep + discard)
        memory_seq_add(self._mem, slot.seq_id, keep + discard, len(slot.cache), -discard)
        del slot.cache[keep : keep + discard]
        slot.shifted = True
        return True

    def _emit(self, slot: _Slot, token: int, now: float, logits: np.ndarray[Any, Any], row: int) -> None:
        """Hand the request its sampled token (or finish it); ``logits[row]`` is its row, read for logprobs only."""
        req = slot.req
        assert req is not None and slot.text is not None
        if slot.n_generated == 0:
            slot.t_first = now
        model = self._model
        if model.is_eog(token):
            self._finish(slot, "stop")
            return
        slot.n_generated += 1
        slot.last_token = token
        if slot.lookup is not None:
            slot.lookup.push(token)
        params = req.params
        logprob = token_logprob(logits[row], token, params.top_logprobs, model.piece) if params.logprobs else None
        text = slot.text.feed(model.text_of(token))
        req.post(TokenChunk(text, token, logprob))
        if slot.text.stopped:
            self._finish(slot, "stop")
        elif 0 < params.num_predict <= slot.n_generated:
            self._finish(slot, "length")

    def _finish(self, slot: _Slot, reason: str) -> None:
        req = slot.req
        assert req is not None and slot.text is not None
        end = time.perf_counter()
        first = slot.t_first or end
        tokens = [*slot.cache, *([slot.last_token] if slot.last_token is not None else [])]
        text = slot.text.flush()
        if self._states is not None:
            self._states.finished(slot)
        self._release(slot)  # before the caller hears of the end, so the slot is already free
        req.post(
            FinalStats(
                done_reason=reason,
                prompt_eval_count=slot.n_prompt,
                prompt_eval_duration=int((first - slot.t_start) * 1e9),
                eval_count=slot.n_generated,
                eval_duration=int((end - first) * 1e9),
                text=text,
                tokens=tuple(tokens),
                cached_tokens=slot.n_cached,
                draft_count=slot.n_drafted,
                draft_accepted_count=slot.n_accepted,
            )
        )
