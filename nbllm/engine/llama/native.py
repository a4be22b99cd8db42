"""llama.cpp itself: backend start-up, its log routed to ``logging``, models, contexts, tokens."""

from __future__ import annotations

import ctypes
import functools
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import llama_cpp as L

from nbllm.engine.base import LoadSpec
from nbllm.engine.llama.history import HistoryTokens, boundaries, special_tokens
from nbllm.engine.llama.split import MAX_PIECES, MIN_PIECE, SplitTokens, why_not_split
from nbllm.engine.offload import attention_settings
from nbllm.errors import ModelLoadError

__all__ = ["NativeModel", "amx_kernels", "backend", "create_context", "default_threads"]

log = logging.getLogger("nbllm.engine.llama")

_KV_TYPES = {"f16": 1, "f32": 0, "bf16": 30, "q8_0": 8, "q4_0": 2, "q4_1": 3, "q5_0": 6, "q5_1": 7, "iq4_nl": 20}
_KV_BYTES = {"f32": 4.0, "f16": 2.0, "bf16": 2.0, "q8_0": 34 / 32, "q4_0": 18 / 32, "q4_1": 20 / 32}
_LOG_LEVELS = {1: logging.DEBUG, 2: logging.DEBUG, 3: logging.WARNING, 4: logging.ERROR}


def _log(level: int, text: bytes | None, _user_data: ctypes.c_void_p) -> None:
    if text:
        message = text.decode("utf-8", errors="replace").rstrip()
        if message:
            log.log(_LOG_LEVELS.get(level, logging.DEBUG), "llama.cpp: %s", message)


@functools.cache
def backend() -> Any:
    """Initialise llama.cpp once and route its C log through ``logging`` (never stderr)."""
    callback = L.llama_log_callback(_log)  # the cache keeps this alive for the process lifetime
    L.llama_log_set(callback, ctypes.c_void_p(0))
    L.llama_backend_init()
    return callback


@functools.cache
def amx_kernels() -> bool:
    """Whether this llama.cpp was compiled with ggml's AMX matrix kernels (``AMX_INT8 = 1`` in its system info).

    llama-cpp-python builds llama.cpp with ``-march=native``, so on a CPU with AMX (Xeon Sapphire Rapids and
    later, common in clouds) the kernels are in. Those of llama-cpp-python 0.3.36 kill the process at the first
    matrix product: a general protection fault on ``ldtilecfg`` in ``ggml_backend_amx_mul_mat``, whose tile
    configuration the compiler left half written (seen here on a 2-core Xeon VM; llama.cpp issue 20824, pull
    request 26954). The kernels run only on weights placed in llama.cpp's extra buffer types, so
    :class:`NativeModel` keeps weights out of them while this is true."""
    backend()
    return b"AMX_INT8 = 1" in L.llama_print_system_info()


def default_threads(cpu_max: Path = Path("/sys/fs/cgroup/cpu.max")) -> int:
    """One thread per core this process may run on, and no more than its cgroup's CPU quota allows.

    A container limited by quota (Binder, Kubernetes) still sees every core of the host; llama.cpp's
    threads spin-wait on each other, so more threads than CPUs granted is far slower, not a little.
    """
    try:
        cores = max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        cores = max(1, os.cpu_count() or 1)
    return min(cores, _quota_cpus(cpu_max) or cores)


def _quota_cpus(cpu_max: Path) -> int | None:
    """CPUs granted by a cgroup v2 ``cpu.max`` ("QUOTA PERIOD", or "max PERIOD" for none), rounded up."""
    try:
        quota, period = cpu_max.read_text().split()[:2]
        if quota == "max":
            return None
        return max(1, math.ceil(int(quota) / int(period)))
    except (OSError, ValueError, ZeroDivisionError):
        return None


class _LoadWatchdog:
    """llama.cpp's load progress callback: returning False aborts a load that has stalled too long."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.progress = 0.0
        self.stalled = False
        self._last = time.monotonic()

    def __call__(self, progress: float, _user_data: ctypes.c_void_p) -> bool:
        now = time.monotonic()
        if progress > self.progress:
            self.progress, self._last = progress, now
        elif now - self._last > self.timeout:
            self.stalled = True
            return False
        return True


@functools.cache
def _note_amx() -> None:
    log.info(
        "llama.cpp was built with AMX kernels, which crash in this llama-cpp-python: weights stay in plain CPU "
        "buffers (no AMX, no repacking)"
    )


class NativeModel:
    """A loaded ``llama_model``: weights, vocabulary, LoRA adapters, token <-> text."""

    def __init__(self, spec: LoadSpec) -> None:
        backend()
        if not spec.path.is_file():
            raise ModelLoadError(f"model file {spec.path.name} does not exist")  # (no server path to clients)
        mp = L.llama_model_default_params()
        mp.n_gpu_layers = spec.num_gpu if spec.num_gpu >= 0 else (-1 if L.llama_supports_gpu_offload() else 0)
        mp.main_gpu = spec.main_gpu
        if amx_kernels():  # (they crash: see there; this also gives up the CPU repacking of Q4_0/Q4_K weights)
            mp.use_extra_bufts = False
            _note_amx()
        split = apply_plan(mp, spec)  # referenced until the load returns
        if spec.use_mmap is not None:
            mp.load_mode = L.LLAMA_LOAD_MODE_MMAP if spec.use_mmap else L.LLAMA_LOAD_MODE_NONE
        watchdog = _LoadWatchdog(spec.load_timeout)
        callback = L.llama_progress_callback(watchdog)  # referenced until the load returns
        mp.progress_callback = callback
        self.ptr = L.llama_model_load_from_file(str(spec.path).encode(), mp)
        del split
        if not self.ptr and watchdog.stalled:
            raise ModelLoadError(
                f"timed out waiting for the model to load - progress {watchdog.progress:.2f} "
                f"(no progress for {spec.load_timeout:g}s; raise OLLAMA_LOAD_TIMEOUT)"
            )
        if not self.ptr:
            raise ModelLoadError(
                f"unable to load model {spec.path.name}: llama.cpp could not read it "
                "(the file may be corrupt, truncated, or of an unsupported architecture)"
            )
        self.spec = spec
        self.vocab = L.llama_model_get_vocab(self.ptr)
        self.n_vocab = int(L.llama_vocab_n_tokens(self.vocab))
        self._text: dict[int, bytes] = {}
        self._eog: dict[int, bool] = {}
        self._history: HistoryTokens | None = None
        """A conversation's history tokenized once (engine.llama.history); None until ready, or if unsafe."""
        self._split: SplitTokens | None = None
        """Long prompts tokenized on several threads (engine.llama.split); None until ready, or if inexact."""
        self.compute_threads = 0
        """The CPU threads llama.cpp computes with while it decodes (the engine sets it: 1 when a GPU computes)."""
        self.computing: Callable[[], bool] = lambda: False
        """Whether llama.cpp may be computing now, or its threads still spinning after a step (the engine's loop)."""
        self.new_prompt: Callable[[], None] | None = None
        """Called as a prompt that goes on from no recent one starts to be tokenized (the engine's loop: a copy
        to the RAM cache that the prompt's admission would make, made now, while it is tokenized). Only the
        history (``HistoryTokens``) tells which do: without it, no prompt is announced. None (no CPU to spare
        for the copy): the history does not even look."""
        self._history_thread = threading.Thread(target=self._prepare_history, name="nbllm-vocab", daemon=True)
        self._history_thread.start()
        self.adapters: list[Any] = []
        for path in spec.adapters:
            adapter = L.llama_adapter_lora_init(self.ptr, str(path).encode())
            if not adapter:
                self.free()
                raise ModelLoadError(f"unable to load adapter {path.name}: not a LoRA GGUF for this model")
            self.adapters.append(adapter)

    def apply_adapters(self, ctx: Any) -> None:
        """Put the LoRA adapters on a context at scale 1.0."""
        if not self.adapters:
            return
        array = (L.llama_adapter_lora_p_ctypes * len(self.adapters))(*self.adapters)
        scales = (ctypes.c_float * len(self.adapters))(*([1.0] * len(self.adapters)))
        if L.llama_set_adapters_lora(ctx, array, len(self.adapters), scales) != 0:
            raise ModelLoadError("llama.cpp refused the LoRA adapters")

    def _prepare_history(self) -> None:
        """Find where a prompt may be cut: after which special tokens (a conversation's history, kept), and
        whether between words (a long prompt tokenized on several threads). A pass over the vocabulary and a
        trial of the cuts, off the load's path."""
        vocab = self.vocab
        if int(L.llama_vocab_type(vocab)) not in (L.LLAMA_VOCAB_TYPE_SPM, L.LLAMA_VOCAB_TYPE_BPE):
            return
        if L.llama_vocab_get_add_eos(vocab) or L.llama_vocab_get_add_sep(vocab):
            return
        specials, ends = special_tokens(vocab, self.n_vocab)
        refused = why_not_split(vocab, specials, self._tokenize_whole, self.meta("tokenizer.ggml.model") or "")
        if refused is None:
            self._split = SplitTokens(self._tokenize_whole, self._tokenize_threads)
        else:
            log.debug("prompts of %s are tokenized whole: %s", self.spec.path.name, refused)
        cut_after = boundaries(specials, ends)
        if cut_after:
            self._history = HistoryTokens(self._tokenize_bytes, cut_after)

    def free(self) -> None:
        """Release the adapters and the weights."""
        self._history_thread.join()  # (it reads the vocabulary)
        for adapter in self.adapters:
            L.llama_adapter_lora_free(adapter)
        self.adapters = []
        if self.ptr:
            L.llama_model_free(self.ptr)
            self.ptr = None

    # ── facts ───────────────────────────────────────────────────────────────────────────────
    def meta(self, key: str) -> str | None:
        """A GGUF metadata value as text (``None`` when the file has no such key)."""
        buf = ctypes.create_string_buffer(256)
        n = L.llama_model_meta_val_str(self.ptr, key.encode(), buf, len(buf))
        if n < 0:
            return None
        if n >= len(buf):
            buf = ctypes.create_string_buffer(n + 1)
            L.llama_model_meta_val_str(self.ptr, key.encode(), buf, len(buf))
        return buf.value.decode("utf-8", errors="replace")

    def dims(self) -> dict[str, int]:
        """Layer, head and width counts."""
        n_head = max(1, int(L.llama_model_n_head(self.ptr)))
        return {
            "n_layer": int(L.llama_model_n_layer(self.ptr)),
            "n_head": n_head,
            "n_head_kv": int(L.llama_model_n_head_kv(self.ptr)) or n_head,
            "n_embd": int(L.llama_model_n_embd(self.ptr)),
            "n_ctx_train": int(L.llama_model_n_ctx_train(self.ptr)),
            "weights": int(L.llama_model_size(self.ptr)),
        }

    def kv_bytes(self, n_ctx: int, kv_type: str) -> int:
        """Bytes of the K and V caches for ``n_ctx`` positions (all layers)."""
        d = self.dims()
        head_dim = d["n_embd"] // d["n_head"]
        return int(2 * d["n_layer"] * n_ctx * d["n_head_kv"] * head_dim * _KV_BYTES.get(kv_type, 2.0))

    def is_recurrent(self) -> bool:
        """Whether the model keeps a recurrent state (its memory cannot drop the last positions of a sequence)."""
        return bool(L.llama_model_is_recurrent(self.ptr) or L.llama_model_is_hybrid(self.ptr))

    def bos_text(self) -> str | None:
        """Text of the BOS token when tokenizing adds one."""
        bos = L.llama_vocab_bos(self.vocab)
        if bos < 0 or not L.llama_vocab_get_add_bos(self.vocab):
            return None
        return self.piece(bos, special=True).decode("utf-8", errors="replace") or None

    # ── tokens ──────────────────────────────────────────────────────────────────────────────
    def tokenize(self, text: str, *, add_special: bool, parse_special: bool) -> list[int]:
        """Text to token ids (with special tokens parsed, a conversation's history is reused from its last turn)."""
        data = text.encode("utf-8")
        history = self._history
        if parse_special and history is not None:
            return history.tokenize(data, add_special, self.new_prompt)
        return self._tokenize_bytes(data, add_special, parse_special=parse_special)  # (not announced: unknown)

    def _tokenize_threads(self) -> int:
        """Threads a prompt may be tokenized on now: the CPUs llama.cpp leaves free. On a CPU that is every one
        of them only while the model is idle; split while llama.cpp's threads hold the cores, a prompt took
        longer (2.0-2.3 ms against 1.65-1.75 for 500 tokens on 2 cores, ``docs/streaming.md``)."""
        return max(1, min(MAX_PIECES, default_threads()) - (self.compute_threads if self.computing() else 0))

    def _tokenize_bytes(self, data: bytes, add_special: bool, *, parse_special: bool = True) -> list[int]:  # noqa: FBT001
        """llama.cpp's tokenization of UTF-8 bytes (a long prompt in pieces on several threads, where exact)."""
        pieces = self._split
        if pieces is not None and parse_special and len(data) >= 2 * MIN_PIECE:
            return pieces.tokenize(data, add_special)
        return self._tokenize_whole(data, add_special, parse_special=parse_special)

    def _tokenize_whole(self, data: bytes, add_special: bool, *, parse_special: bool = True) -> list[int]:  # noqa: FBT001
        """llama.cpp's tokenization of UTF-8 bytes, in one call."""
        size = len(data) + 8
        buf = (L.llama_token * size)()
        n = L.llama_tokenize(self.vocab, data, len(data), buf, size, add_special, parse_special)
        if n < 0:
            size = -n
            buf = (L.llama_token * size)()
            n = L.llama_tokenize(self.vocab, data, len(data), buf, size, add_special, parse_special)
        return list(buf[:n])

    def piece(self, token: int, *, special: bool = False, buf: Any = None) -> bytes:
        """Bytes of one token (pass a buffer owned by the calling thread to avoid allocating)."""
        if buf is None:
            buf = ctypes.create_string_buffer(256)
        n = L.llama_token_to_piece(self.vocab, token, buf, len(buf), 0, special)
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = L.llama_token_to_piece(self.vocab, token, buf, len(buf), 0, special)
        raw: bytes = buf.raw[:n]
        return raw

    def text_of(self, token: int) -> bytes:
        """``piece(token)``, remembered: the decode loop asks for each generated token's bytes.

        A dictionary hit costs far less than a call into llama.cpp, and every such call lets another
        thread take the GIL mid-step.
        """
        raw = self._text.get(token)
        if raw is None:
            raw = self._text[token] = self.piece(token)
        return raw

    def detokenize(self, tokens: Sequence[int]) -> str:
        """Token ids to text (special tokens shown)."""
        buf = ctypes.create_string_buffer(256)
        return b"".join(self.piece(t, special=True, buf=buf) for t in tokens).decode("utf-8", errors="replace")

    def is_eog(self, token: int) -> bool:
        """Whether the token ends generation (remembered per token)."""
        eog = self._eog.get(token)
        if eog is None:
            eog = self._eog[token] = bool(L.llama_vocab_is_eog(self.vocab, token))
        return eog


def create_context(
    model: NativeModel,
    *,
    n_ctx: int,
    n_batch: int,
    n_seq_max: int,
    threads: int,
    embeddings: bool = False,
    pooling: int | None = None,
) -> Any:
    """A ``llama_context`` over ``model`` (the KV cache holds ``n_ctx`` positions in all)."""
    spec = model.spec
    cp = L.llama_context_default_params()
    cp.n_ctx = n_ctx
    cp.n_batch = cp.n_ubatch = n_batch
    cp.n_seq_max = n_seq_max
    cp.n_threads = cp.n_threads_batch = threads
    cp.flash_attn_type, cp.type_k = attention_types(spec)
    cp.type_v = cp.type_k
    cp.embeddings = embeddings
    if pooling is not None:
        cp.pooling_type = pooling
    cp.no_perf = True
    ctx = L.llama_init_from_model(model.ptr, cp)
    if not ctx:
        raise ModelLoadError(
            f"unable to create a context of {n_ctx} tokens for {spec.path.name}: not enough memory; "
            "lower num_ctx or OLLAMA_NUM_PARALLEL"
        )
    try:
        model.apply_adapters(ctx)
    except ModelLoadError:
        L.llama_free(ctx)
        raise
    return ctx


def attention_types(spec: LoadSpec) -> tuple[int, int]:
    """llama.cpp's flash attention mode and KV cache type for a load (the offload plan's, as Ollama resolves them)."""
    plan = spec.offload
    if plan is not None:
        flash, kv_type = plan.flash_attention, plan.kv_cache_type
    else:  # no GPU placement: the same rule (a quantized cache only with flash attention on)
        kv_type, flash, warnings = attention_settings(spec.kv_cache_type, spec.flash_attention)
        for warning in warnings:
            log.warning("%s", warning)
    return {None: -1, True: 1, False: 0}[flash], _KV_TYPES.get(kv_type, 1)


def apply_plan(mp: Any, spec: LoadSpec) -> Any:
    """Set the offload plan's layers and split on llama.cpp's model params; the split array to keep alive."""
    plan = spec.offload
    if plan is None:
        return None
    mp.n_gpu_layers = plan.gpu_layers
    main = plan.main_device
    if main is not None:  # one GPU holds it all: no split, that GPU computes
        mp.split_mode, mp.main_gpu = L.LLAMA_SPLIT_MODE_NONE, main
        return None
    if not plan.layers:
        return None
    shares = plan.tensor_split(int(L.llama_max_devices()))
    split = (ctypes.c_float * len(shares))(*shares)
    mp.split_mode, mp.tensor_split = L.LLAMA_SPLIT_MODE_LAYER, split
    return split


def free_context(ctx: Any) -> None:
    """Release a context."""
    L.llama_free(ctx)
