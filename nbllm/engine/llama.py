"""LlamaEngine: llama.cpp through llama-cpp-python's low-level bindings, with continuous batching.

One decode thread per loaded model. Every step it packs one token for each generating sequence
and chunks of pending prompts into a single ``llama_decode``; sequences join and leave between
steps. Sampling runs in llama.cpp's native sampler chains (the logits never come into Python
unless log probabilities are asked for), and each slot keeps its KV cache after a request so the
next request that shares a prefix (the earlier turns of a chat) evaluates only what is new.

This is the only module that imports ``llama_cpp``.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import logging
import os
import queue
import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import llama_cpp as L

from nbllm.engine.base import EngineInfo, FinalStats, GenerationEvent, LoadSpec, SamplingParams, TokenChunk
from nbllm.engine.logprobs import token_logprob
from nbllm.engine.text import StreamText
from nbllm.errors import Cancelled, ContextLengthExceeded, EngineError, ModelLoadError

__all__ = ["LlamaEngine", "load_llama"]

log = logging.getLogger(__name__)

_KV_TYPES = {"f16": 1, "f32": 0, "bf16": 30, "q8_0": 8, "q4_0": 2, "q4_1": 3, "q5_0": 6, "q5_1": 7, "iq4_nl": 20}
_LOG_LEVELS = {1: logging.DEBUG, 2: logging.DEBUG, 3: logging.WARNING, 4: logging.ERROR}


def _log(level: int, text: bytes | None, _user_data: ctypes.c_void_p) -> None:
    if text:
        message = text.decode("utf-8", errors="replace").rstrip()
        if message:
            log.log(_LOG_LEVELS.get(level, logging.DEBUG), "llama.cpp: %s", message)


@functools.cache
def _backend() -> Any:
    """Initialise llama.cpp once and route its C log through ``logging`` (never stderr)."""
    callback = L.llama_log_callback(_log)  # the cache keeps this alive for the process lifetime
    L.llama_log_set(callback, ctypes.c_void_p(0))
    L.llama_backend_init()
    return callback


def default_threads() -> int:
    """One thread per core this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def load_llama(spec: LoadSpec) -> LlamaEngine:
    """The EngineFactory for real models."""
    return LlamaEngine(spec)


@dataclass(eq=False)
class _Request:
    prompt: list[int]
    params: SamplingParams
    cancel: threading.Event
    out: queue.SimpleQueue[GenerationEvent | BaseException] = field(default_factory=queue.SimpleQueue)


@dataclass(eq=False)
class _Slot:
    seq_id: int
    cache: list[int] = field(default_factory=list)
    """Tokens whose keys and values are in this slot's KV cache, in position order."""
    req: _Request | None = None
    pending: list[int] = field(default_factory=list)
    sampler: Any = None
    text: StreamText | None = None
    last_token: int | None = None
    batch_index: int = -1
    n_generated: int = 0
    n_prompt: int = 0
    n_cached: int = 0
    t_start: float = 0.0
    t_first: float = 0.0


class LlamaEngine:
    """A GGUF model loaded in llama.cpp, decoding up to ``spec.parallel`` requests at once."""

    def __init__(self, spec: LoadSpec) -> None:
        _backend()
        self.spec = spec
        self._model, self._ctx = self._load(spec)
        self._adapters = self._apply_adapters(spec)
        self._vocab = L.llama_model_get_vocab(self._model)
        self._mem = L.llama_get_memory(self._ctx)
        self._n_vocab = L.llama_vocab_n_tokens(self._vocab)
        self._n_ctx = L.llama_n_ctx_seq(self._ctx)
        self._n_batch = L.llama_n_batch(self._ctx)
        self._batch = L.llama_batch_init(max(self._n_batch, spec.parallel), 0, 1)
        self._slots = [_Slot(seq_id=i) for i in range(spec.parallel)]
        self._queue: deque[_Request] = deque()
        self._cv = threading.Condition()
        self._closed = False
        self._piece_buf = ctypes.create_string_buffer(256)
        self.info = self._describe()
        self._thread = threading.Thread(target=self._run, name=f"nbllm-decode-{spec.path.name[:24]}", daemon=True)
        self._thread.start()

    # ── loading ─────────────────────────────────────────────────────────────────────────────
    @staticmethod
    def _load(spec: LoadSpec) -> tuple[Any, Any]:
        if not spec.path.is_file():
            raise ModelLoadError(f"model file {spec.path} does not exist")
        mp = L.llama_model_default_params()
        mp.n_gpu_layers = spec.num_gpu if spec.num_gpu >= 0 else (-1 if L.llama_supports_gpu_offload() else 0)
        mp.main_gpu = spec.main_gpu
        if spec.use_mmap is not None:
            mp.load_mode = L.LLAMA_LOAD_MODE_MMAP if spec.use_mmap else L.LLAMA_LOAD_MODE_NONE
        model = L.llama_model_load_from_file(str(spec.path).encode(), mp)
        if not model:
            raise ModelLoadError(
                f"unable to load model {spec.path.name}: llama.cpp could not read it "
                "(the file may be corrupt, truncated, or of an unsupported architecture)"
            )
        threads = spec.num_thread or default_threads()
        cp = L.llama_context_default_params()
        cp.n_ctx = spec.num_ctx * spec.parallel
        cp.n_batch = cp.n_ubatch = spec.num_batch
        cp.n_seq_max = spec.parallel
        cp.n_threads = cp.n_threads_batch = threads
        cp.flash_attn_type = {None: -1, True: 1, False: 0}[spec.flash_attention]
        cp.type_k = cp.type_v = _KV_TYPES.get(spec.kv_cache_type, 1)
        cp.embeddings = spec.embedding
        cp.no_perf = True
        ctx = L.llama_init_from_model(model, cp)
        if not ctx:
            L.llama_model_free(model)
            raise ModelLoadError(
                f"unable to create a context of {spec.num_ctx} x {spec.parallel} tokens for {spec.path.name}: "
                "not enough memory; lower num_ctx or OLLAMA_NUM_PARALLEL"
            )
        return model, ctx

    def _apply_adapters(self, spec: LoadSpec) -> list[Any]:
        """Load the LoRA adapters (GGUF) and apply them to the context at scale 1.0."""
        adapters: list[Any] = []
        problem = None
        for path in spec.adapters:
            adapter = L.llama_adapter_lora_init(self._model, str(path).encode())
            if not adapter:
                problem = f"unable to load adapter {path.name}: not a LoRA GGUF for this model"
                break
            adapters.append(adapter)
        if adapters and problem is None:
            array = (L.llama_adapter_lora_p_ctypes * len(adapters))(*adapters)
            scales = (ctypes.c_float * len(adapters))(*([1.0] * len(adapters)))
            if L.llama_set_adapters_lora(self._ctx, array, len(adapters), scales) != 0:
                problem = "llama.cpp refused the LoRA adapters"
        if problem is not None:
            for loaded in adapters:
                L.llama_adapter_lora_free(loaded)
            L.llama_free(self._ctx)
            L.llama_model_free(self._model)
            raise ModelLoadError(problem)
        return adapters

    def _describe(self) -> EngineInfo:
        weights = int(L.llama_model_size(self._model))
        state = self._kv_bytes()
        n_layers = int(L.llama_model_n_layer(self._model))
        gpu_layers = 0 if not L.llama_supports_gpu_offload() else self._gpu_layers(n_layers)
        total = weights + state
        vram = total * gpu_layers // n_layers if n_layers else 0
        return EngineInfo(
            n_ctx=self._n_ctx,
            parallel=self.spec.parallel,
            n_ctx_train=int(L.llama_model_n_ctx_train(self._model)),
            n_embd=int(L.llama_model_n_embd(self._model)),
            n_vocab=self._n_vocab,
            weights_bytes=weights,
            total_bytes=total,
            vram_bytes=vram,
            gpu_layers=gpu_layers,
            n_layers=n_layers,
            bos_text=self._bos_text(),
        )

    def _bos_text(self) -> str | None:
        bos = L.llama_vocab_bos(self._vocab)
        if bos < 0 or not L.llama_vocab_get_add_bos(self._vocab):
            return None
        text = self._piece(bos, special=True, buf=ctypes.create_string_buffer(256))
        return text.decode("utf-8", errors="replace") or None

    def _kv_bytes(self) -> int:
        """Bytes of the K and V caches as allocated (all slots, all layers)."""
        n_layer = int(L.llama_model_n_layer(self._model))
        n_head = max(1, int(L.llama_model_n_head(self._model)))
        n_head_kv = int(L.llama_model_n_head_kv(self._model)) or n_head
        head_dim = int(L.llama_model_n_embd(self._model)) // n_head
        per_value = {"f32": 4.0, "f16": 2.0, "bf16": 2.0, "q8_0": 34 / 32, "q4_0": 18 / 32}.get(
            self.spec.kv_cache_type, 2.0
        )
        n_ctx = int(L.llama_n_ctx(self._ctx))
        return int(2 * n_layer * n_ctx * n_head_kv * head_dim * per_value)

    def _gpu_layers(self, n_layers: int) -> int:
        requested = self.spec.num_gpu
        # llama.cpp offloads the repeating layers plus the output layer; -1 means all that fit.
        return n_layers if requested < 0 else min(requested, n_layers)

    # ── tokens ──────────────────────────────────────────────────────────────────────────────
    def tokenize(self, text: str, *, add_special: bool = True, parse_special: bool = True) -> list[int]:
        """Text to token ids (``parse_special`` turns ``<|im_start|>`` and the like into their ids)."""
        data = text.encode("utf-8")
        size = len(data) + 8
        buf = (L.llama_token * size)()
        n = L.llama_tokenize(self._vocab, data, len(data), buf, size, add_special, parse_special)
        if n < 0:
            size = -n
            buf = (L.llama_token * size)()
            n = L.llama_tokenize(self._vocab, data, len(data), buf, size, add_special, parse_special)
        return list(buf[:n])

    def _piece(self, token: int, *, special: bool = False, buf: Any = None) -> bytes:
        """Bytes of one token. Only the decode thread may use the shared buffer (``buf=None``)."""
        buf = self._piece_buf if buf is None else buf
        n = L.llama_token_to_piece(self._vocab, token, buf, len(buf), 0, special)
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = L.llama_token_to_piece(self._vocab, token, buf, len(buf), 0, special)
        raw: bytes = buf.raw[:n]
        return raw

    def detokenize(self, tokens: Sequence[int]) -> str:
        """Token ids to text (special tokens shown)."""
        buf = ctypes.create_string_buffer(256)
        return b"".join(self._piece(t, special=True, buf=buf) for t in tokens).decode("utf-8", errors="replace")

    # ── requests ────────────────────────────────────────────────────────────────────────────
    def generate(
        self, prompt: Sequence[int], params: SamplingParams, *, cancel: threading.Event | None = None
    ) -> Iterator[GenerationEvent]:
        """Queue a request and stream its tokens; leaving the iterator early cancels it."""
        tokens = list(prompt)
        if not tokens:
            raise EngineError("empty prompt")
        if len(tokens) >= self._n_ctx:
            raise ContextLengthExceeded(len(tokens), self._n_ctx)
        req = _Request(tokens, params, cancel or threading.Event())
        with self._cv:
            if self._closed:
                raise EngineError("the model was unloaded")
            self._queue.append(req)
            self._cv.notify()
        return self._drain(req)

    @staticmethod
    def _drain(req: _Request) -> Iterator[GenerationEvent]:
        try:
            while True:
                event = req.out.get()
                if isinstance(event, BaseException):
                    raise event
                yield event
                if isinstance(event, FinalStats):
                    return
        finally:
            req.cancel.set()

    def embed(self, inputs: Sequence[Sequence[int]]) -> list[list[float]]:
        """Embeddings are served by engines loaded with ``embedding=True`` (see the inference issue)."""
        raise EngineError("this model was not loaded for embeddings")

    def load_state(self) -> tuple[int, int]:
        """(active, queued) requests."""
        with self._cv:
            return sum(1 for s in self._slots if s.req is not None), len(self._queue)

    def close(self) -> None:
        """Stop the decode loop, fail what is left, free llama.cpp's memory. Idempotent."""
        with self._cv:
            if self._closed:
                return
            self._closed = True
            self._cv.notify()
        self._thread.join(timeout=30)
        if self._thread.is_alive():  # pragma: no cover - a decode step never takes this long
            log.error("decode thread did not stop; leaking the model")
            return
        L.llama_batch_free(self._batch)
        L.llama_free(self._ctx)
        for adapter in self._adapters:
            L.llama_adapter_lora_free(adapter)
        L.llama_model_free(self._model)

    # ── the decode loop ─────────────────────────────────────────────────────────────────────
    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._closed and not self._queue and not self._busy():
                    self._cv.wait()
                if self._closed:
                    self._fail_all(EngineError("the model was unloaded"))
                    return
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

    def _busy(self) -> bool:
        return any(s.req is not None for s in self._slots)

    def _fail_all(self, exc: BaseException) -> None:
        for slot in self._slots:
            req = slot.req
            if req is not None:
                self._release(slot)
                req.out.put(exc)
        while self._queue:
            self._queue.popleft().out.put(exc)

    def _admit(self) -> None:
        """Give queued requests free slots, FIFO, each to the slot sharing its longest prefix."""
        while self._queue:
            free = [s for s in self._slots if s.req is None]
            if not free:
                return
            req = self._queue.popleft()
            if req.cancel.is_set():
                continue
            slot = max(free, key=lambda s: _common_prefix(s.cache, req.prompt))
            reuse = min(_common_prefix(slot.cache, req.prompt), len(req.prompt) - 1)
            if reuse < len(slot.cache) and not L.llama_memory_seq_rm(self._mem, slot.seq_id, reuse, -1):
                L.llama_memory_seq_rm(self._mem, slot.seq_id, -1, -1)  # partial removal unsupported
                reuse = 0
            del slot.cache[reuse:]
            slot.req = req
            slot.pending = req.prompt[reuse:]
            slot.n_cached = reuse
            slot.n_prompt = slot.n_generated = 0
            slot.last_token = None
            slot.text = StreamText(req.params.stop)
            slot.t_start = time.perf_counter()
            try:
                slot.sampler = _make_sampler(self._vocab, req.params, req.prompt)
            except EngineError as exc:
                req.out.put(exc)
                self._release(slot)

    def _drop_cancelled(self) -> None:
        for slot in self._slots:
            req = slot.req
            if req is not None and req.cancel.is_set():
                self._release(slot)
                req.out.put(Cancelled("request cancelled"))

    def _release(self, slot: _Slot) -> None:
        if slot.sampler is not None:
            L.llama_sampler_free(slot.sampler)
        slot.sampler = None
        slot.req = None
        slot.pending = []
        slot.last_token = None
        slot.batch_index = -1

    def _add(self, i: int, token: int, pos: int, seq: int, *, logits: bool) -> None:
        b = self._batch
        b.token[i] = token
        b.pos[i] = pos
        b.n_seq_id[i] = 1
        b.seq_id[i][0] = seq
        b.logits[i] = logits

    def _step(self) -> None:
        n = 0
        budget = self._n_batch
        active = [s for s in self._slots if s.req is not None]
        for slot in active:  # one token per generating sequence
            slot.batch_index = -1
            if slot.pending or slot.last_token is None:
                continue
            if len(slot.cache) >= self._n_ctx and not self._make_room(slot):
                continue
            self._add(n, slot.last_token, len(slot.cache), slot.seq_id, logits=True)
            slot.cache.append(slot.last_token)
            slot.last_token = None
            slot.batch_index = n
            n += 1
            budget -= 1
        for slot in active:  # then as much pending prompt as fits
            if not slot.pending or budget <= 0:
                continue
            take = slot.pending[:budget]
            for token in take:
                self._add(n, token, len(slot.cache), slot.seq_id, logits=False)
                slot.cache.append(token)
                n += 1
            slot.pending = slot.pending[len(take) :]
            slot.n_prompt += len(take)
            budget -= len(take)
            if not slot.pending:
                self._batch.logits[n - 1] = True
                slot.batch_index = n - 1
        if n == 0:
            return
        self._batch.n_tokens = n
        rc = L.llama_decode(self._ctx, self._batch)
        if rc != 0:
            raise EngineError(f"llama_decode failed with status {rc}")
        now = time.perf_counter()
        for slot in active:
            if slot.batch_index >= 0 and slot.req is not None:
                self._sample(slot, now)

    def _make_room(self, slot: _Slot) -> bool:
        """The slot's context is full: shift it (drop old tokens after num_keep) or finish with 'length'."""
        params = slot.req.params if slot.req else SamplingParams()
        if not params.shift or not L.llama_memory_can_shift(self._mem):
            self._finish(slot, "length")
            return False
        keep = max(0, min(params.num_keep, len(slot.cache) - 2))
        discard = (len(slot.cache) - keep) // 2
        L.llama_memory_seq_rm(self._mem, slot.seq_id, keep, keep + discard)
        L.llama_memory_seq_add(self._mem, slot.seq_id, keep + discard, len(slot.cache), -discard)
        del slot.cache[keep : keep + discard]
        return True

    def _sample(self, slot: _Slot, now: float) -> None:
        req = slot.req
        assert req is not None and slot.text is not None
        token = L.llama_sampler_sample(slot.sampler, self._ctx, slot.batch_index)
        if slot.n_generated == 0:
            slot.t_first = now
        if L.llama_vocab_is_eog(self._vocab, token):
            self._finish(slot, "stop")
            return
        slot.n_generated += 1
        slot.last_token = token
        logprob = None
        if req.params.logprobs:
            logits = L.llama_get_logits_ith(self._ctx, slot.batch_index)
            logprob = token_logprob(logits, self._n_vocab, token, req.params.top_logprobs, self._piece)
        text = slot.text.feed(self._piece(token))
        req.out.put(TokenChunk(text=text, token=token, logprob=logprob))
        if slot.text.stopped:
            self._finish(slot, "stop")
        elif 0 < req.params.num_predict <= slot.n_generated:
            self._finish(slot, "length")

    def _finish(self, slot: _Slot, reason: str) -> None:
        req = slot.req
        assert req is not None and slot.text is not None
        end = time.perf_counter()
        first = slot.t_first or end
        tokens = [*slot.cache, *([slot.last_token] if slot.last_token is not None else [])]
        text = slot.text.flush()
        self._release(slot)  # before the caller hears of the end, so the slot is already free
        req.out.put(
            FinalStats(
                done_reason=reason,
                prompt_eval_count=slot.n_prompt,
                prompt_eval_duration=int((first - slot.t_start) * 1e9),
                eval_count=slot.n_generated,
                eval_duration=int((end - first) * 1e9),
                text=text,
                tokens=tuple(tokens),
                cached_tokens=slot.n_cached,
            )
        )


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def _grammar_sampler(vocab: Any, grammar: str, triggers: tuple[str, ...]) -> Any:
    if not triggers:
        return L.llama_sampler_init_grammar(vocab, grammar.encode(), b"root")
    patterns = (ctypes.c_char_p * len(triggers))(*(t.encode() for t in triggers))
    no_tokens = (L.llama_token * 1)()
    return L.llama_sampler_init_grammar_lazy_patterns(
        vocab, grammar.encode(), b"root", patterns, len(triggers), no_tokens, 0
    )


def _make_sampler(vocab: Any, p: SamplingParams, prompt: Sequence[int]) -> Any:
    """A native sampler chain in llama.cpp's default order."""
    chain = L.llama_sampler_chain_init(L.llama_sampler_chain_default_params())
    add = functools.partial(L.llama_sampler_chain_add, chain)
    if p.grammar:
        grammar = _grammar_sampler(vocab, p.grammar, p.grammar_triggers)
        if not grammar:
            L.llama_sampler_free(chain)
            raise EngineError("invalid grammar")
        add(grammar)
    penalties = p.repeat_penalty != 1.0 or p.presence_penalty != 0.0 or p.frequency_penalty != 0.0
    if penalties and p.repeat_last_n != 0:
        last_n = p.repeat_last_n if p.repeat_last_n > 0 else len(prompt) + 4096
        add(L.llama_sampler_init_penalties(last_n, p.repeat_penalty, p.frequency_penalty, p.presence_penalty))
    if p.temperature <= 0:
        add(L.llama_sampler_init_greedy())
    else:
        if p.top_k > 0:
            add(L.llama_sampler_init_top_k(p.top_k))
        if 0 < p.typical_p < 1:
            add(L.llama_sampler_init_typical(p.typical_p, 1))
        if 0 < p.top_p < 1:
            add(L.llama_sampler_init_top_p(p.top_p, 1))
        if p.min_p > 0:
            add(L.llama_sampler_init_min_p(p.min_p, 1))
        add(L.llama_sampler_init_temp(p.temperature))
        seed = p.seed if p.seed >= 0 else int.from_bytes(os.urandom(4), "little")
        add(L.llama_sampler_init_dist(seed & 0xFFFFFFFF))
    if penalties and not p.grammar:
        # Penalties look back over the prompt too, as llama-server does.
        with contextlib.suppress(Exception):
            for token in prompt[-(p.repeat_last_n if p.repeat_last_n > 0 else len(prompt)) :]:
                L.llama_sampler_accept(chain, token)
    return chain
