"""LlamaEngine: a GGUF model in llama.cpp, behind the Engine protocol."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Sequence

import llama_cpp as L

from nbllm.engine.base import EngineInfo, GenerationEvent, LoadSpec, Pending, SamplingParams, no_wait_handle
from nbllm.engine.llama.batching import DecodeLoop
from nbllm.engine.llama.draft_model import DRAFT_MODEL_TOKENS, DraftModel
from nbllm.engine.llama.embedding import Embedder
from nbllm.engine.llama.native import NativeModel, attention_types, create_context, default_threads, free_context
from nbllm.engine.llama.request import Request
from nbllm.engine.llama.resume import SlotStates, layout_of
from nbllm.errors import ContextLengthExceeded, EngineError, InvalidRequest

__all__ = ["LlamaEngine", "load_llama"]

log = logging.getLogger("nbllm.engine.llama")


def load_llama(spec: LoadSpec) -> LlamaEngine:
    """The EngineFactory for real models."""
    return LlamaEngine(spec)


def copies_while_tokenizing(compute_threads: int) -> bool:
    """Whether the decode loop copies the slot a new prompt takes to the RAM cache while that prompt is tokenized
    (``DecodeLoop.expect``) rather than at its admission: only where llama.cpp's compute threads leave two CPUs
    free, one for the tokenizer and one for the copy. On this project's 2-core machine, with llama.cpp on both,
    a copy beside the tokenizer slowed it by more than the copy took (500 tokens: 1.5 ms whole, 2.7-4.4 ms
    beside a 0.5 ms copy; ``docs/kv-snapshots.md``)."""
    return default_threads() - compute_threads >= 2


def delivers_on_decode_thread(compute_threads: int) -> bool:
    """Whether a streamed token is better written to its client by the decode thread itself than handed to the
    event loop (``TokenSource.direct``): where llama.cpp's compute threads take every CPU we may use, waking
    the loop for each token preempts one of them, and the hand-off and the loop's wake-up cost more CPU than
    the write (``docs/streaming.md``, ninth pass). With a CPU to spare (a GPU computes, or fewer threads), the
    loop writes on that CPU, off the decode thread's path between two steps."""
    return compute_threads >= default_threads()


class LlamaEngine:
    """Generation through a continuous-batching decode loop; embeddings through a pooled context."""

    def __init__(self, spec: LoadSpec) -> None:
        self.spec = spec
        self._model = NativeModel(spec)
        # more threads than the CPUs we may use only slows llama.cpp down (and thousands crash it)
        threads = min(spec.num_thread, default_threads()) if spec.num_thread > 0 else default_threads()
        self._model.compute_threads, self._model.computing = threads, lambda: True  # (the loop's, below)
        self._ctx = None
        self._loop: DecodeLoop | None = None
        self._drafter: DraftModel | None = None
        self._states: SlotStates | None = None
        self._direct = False
        try:
            if not spec.embedding:  # embedding-only models get no generation context
                self._ctx = create_context(
                    self._model,
                    n_ctx=spec.num_ctx * spec.parallel,
                    n_batch=spec.num_batch,
                    n_seq_max=spec.parallel,
                    threads=threads,
                )
                n_ctx = int(L.llama_n_ctx_seq(self._ctx))
                flash, type_k = attention_types(spec)
                self._states = SlotStates(self._ctx, spec, layout_of(spec, self._ctx, n_ctx, type_k, flash))
                if spec.draft is not None:
                    self._drafter = DraftModel.load(self._model, spec, threads=threads)
                limit = {"draft_limit": DRAFT_MODEL_TOKENS} if self._drafter is not None else {}
                self._loop = DecodeLoop(
                    self._model,
                    self._ctx,
                    parallel=spec.parallel,
                    name=spec.path.name,
                    drafter=self._drafter,
                    states=self._states,
                    **limit,
                )
                on_gpu = spec.offload is not None and spec.offload.all_on_gpu  # (tokenizing uses the CPUs left free)
                self._model.compute_threads = 1 if on_gpu else threads
                self._model.computing = self._loop.computing
                if copies_while_tokenizing(self._model.compute_threads):
                    self._model.new_prompt = self._loop.expect
                self._direct = delivers_on_decode_thread(self._model.compute_threads)
        except BaseException:
            if self._drafter is not None:
                self._drafter.close()
            if self._ctx is not None:
                free_context(self._ctx)
            self._model.free()
            raise
        self._embedder = Embedder(self._model, n_ctx=spec.num_ctx, threads=threads, native_pooling=spec.embedding)
        self._closed = False
        self.info = self._describe()

    def _describe(self) -> EngineInfo:
        d = self._model.dims()
        n_ctx = self._loop.n_ctx if self._loop is not None else self.spec.num_ctx
        kv = self._model.kv_bytes(n_ctx * self.spec.parallel, self.spec.kv_cache_type) if self._loop else 0
        total = d["weights"] + kv
        gpu_layers = 0
        if L.llama_supports_gpu_offload() and self.spec.num_gpu != 0:
            gpu_layers = d["n_layer"] if self.spec.num_gpu < 0 else min(self.spec.num_gpu, d["n_layer"])
        plan = self.spec.offload
        devices = ("CPU",) if plan is None or not plan.gpu_layers else plan.device_names()
        if plan is not None:  # the scheduler's estimate: what ps reports for size and size_vram
            total, gpu_layers = plan.total_bytes, plan.gpu_layers
            d = {**d, "n_layer": plan.total_layers}
        if self._drafter is not None:  # loaded next to it
            total += self._drafter.memory_bytes(self.spec.kv_cache_type)
        return EngineInfo(
            n_ctx=n_ctx,
            parallel=self.spec.parallel,
            n_ctx_train=d["n_ctx_train"],
            n_embd=d["n_embd"],
            n_vocab=self._model.n_vocab,
            weights_bytes=d["weights"],
            total_bytes=total,
            vram_bytes=plan.vram_bytes if plan else (total * gpu_layers // d["n_layer"] if d["n_layer"] else 0),
            gpu_layers=gpu_layers,
            n_layers=d["n_layer"],
            bos_text=self._model.bos_text(),
            extra={"devices": devices},
            cache_stats=self._states.stats if self._states is not None and self._states.enabled else None,
        )

    def tokenize(self, text: str, *, add_special: bool = True, parse_special: bool = True) -> list[int]:
        """Text to token ids (``parse_special`` turns ``<|im_start|>`` and the like into their ids)."""
        return self._model.tokenize(text, add_special=add_special, parse_special=parse_special)

    def detokenize(self, tokens: Sequence[int]) -> str:
        """Token ids to text (special tokens shown); an id outside the vocabulary is a 400, not a crash."""
        n_vocab = self._model.n_vocab
        bad = next((t for t in tokens if not 0 <= t < n_vocab), None)
        if bad is not None:  # llama.cpp aborts the process on an unknown id (std::out_of_range)
            raise InvalidRequest(f"invalid token id {bad}: this model's vocabulary has ids 0 to {n_vocab - 1}")
        return self._model.detokenize(tokens)

    def generate(
        self, prompt: Sequence[int], params: SamplingParams, *, cancel: threading.Event | None = None
    ) -> Iterator[GenerationEvent | Pending]:
        """Queue a request and stream its tokens; leaving the iterator early cancels it."""
        if self._loop is None:
            raise EngineError("this is an embedding model; it cannot generate text")
        tokens = list(prompt)
        if not tokens:
            raise EngineError("empty prompt")
        if len(tokens) >= self._loop.n_ctx:
            raise ContextLengthExceeded(len(tokens), self._loop.n_ctx)
        req = Request(tokens, params, cancel or threading.Event(), direct_pays=self._direct)
        handle = no_wait_handle()
        if handle is not None:  # (the iterator is the request's own events: its tokens may be taken directly)
            handle.source = req
        self._loop.submit(req)
        return req.events()

    def embed(self, inputs: Sequence[Sequence[int]]) -> list[list[float]]:
        """One pooled (not normalised) embedding per tokenized input."""
        return self._embedder.embed(inputs)

    def load_state(self) -> tuple[int, int]:
        """(active, queued) requests."""
        return self._loop.load_state() if self._loop is not None else (0, 0)

    def close(self) -> None:
        """Stop the decode loop, fail what is left, free llama.cpp's memory. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._loop is not None and not self._loop.close():
            log.error("decode thread did not stop; leaking the model")
            return
        if self._states is not None:
            self._states.close()  # the snapshot writes still pending
        self._embedder.close()
        if self._drafter is not None:
            self._drafter.close()
        if self._ctx is not None:
            free_context(self._ctx)
        self._model.free()
