"""The engine seam: what a loaded model can do, and the values that cross the seam.

Everything above the engine (scheduler, service, server, notebook) talks to these types only;
``engine/llama/`` implements them on llama.cpp and ``engine/fake.py`` without any model.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextvars import ContextVar, Token
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from nbllm.engine.offload import OffloadPlan
from nbllm.options import Options

__all__ = [
    "PENDING",
    "Engine",
    "EngineFactory",
    "EngineInfo",
    "FinalStats",
    "GenerationEvent",
    "LoadSpec",
    "NoWait",
    "Pending",
    "SamplingParams",
    "StateFile",
    "StateFiles",
    "TokenChunk",
    "TokenLogprob",
    "TokenSource",
    "no_wait_handle",
]


class StateFile(Protocol):
    """A KV snapshot on disk: where it is and the tokens whose state it holds."""

    @property
    def path(self) -> Path:
        """The file."""
        ...

    @property
    def tokens(self) -> tuple[int, ...]:
        """The token ids whose keys and values it holds."""
        ...


class StateFiles(Protocol):
    """Where an engine persists sequences' KV states (``nbllm.store.snapshots.SnapshotStore``)."""

    def index(self, layout: Mapping[str, object]) -> Sequence[StateFile]:
        """The snapshots made under ``layout`` (model digest and context settings)."""
        ...

    def save(self, layout: Mapping[str, object], tokens: Sequence[int], state: bytes | memoryview) -> StateFile:
        """Persist the state of ``tokens`` atomically."""
        ...

    def load(self, path: Path, layout: Mapping[str, object], tokens: Sequence[int] | None = None) -> bytes:
        """A snapshot's state, every check passed; a StoreError otherwise."""
        ...

    def discard(self, path: Path) -> None:
        """Remove a snapshot."""
        ...


@dataclass(frozen=True)
class LoadSpec:
    """How to load a model: file, context and batch sizes, threads, offload."""

    path: Path
    num_ctx: int = 4096
    """Context length of each request slot."""
    parallel: int = 1
    """Request slots decoded together (the KV cache holds ``num_ctx * parallel`` tokens)."""
    num_batch: int = 512
    num_gpu: int = -1
    """Layers to offload to a GPU; -1 = as many as fit, 0 = CPU only."""
    main_gpu: int = 0
    num_thread: int = 0
    """0 = one per available core."""
    use_mmap: bool | None = None
    flash_attention: bool | None = None
    kv_cache_type: str = "f16"
    adapters: tuple[Path, ...] = ()
    draft: Path | None = None
    """A draft model (same vocabulary) for speculative decoding, loaded next to this one."""
    embedding: bool = False
    memory_estimate: int = field(default=0, compare=False)
    """Bytes the loaded model is expected to take (weights + KV cache), for the scheduler's fit check."""
    load_timeout: float = field(default=float("inf"), compare=False)
    """Give up a load whose progress stalls this many seconds (OLLAMA_LOAD_TIMEOUT)."""
    offload: OffloadPlan | None = field(default=None, compare=False)
    """Where the layers go (``engine.offload``), decided by the scheduler when it loads; None = llama.cpp's default."""
    ram_cache: int = field(default=0, compare=False)
    """Bytes of host RAM for the KV states of slots given to other requests (NBLLM_KV_CACHE_RAM; 0 = off)."""
    snapshots: StateFiles | None = field(default=None, compare=False)
    """Where finished sequences' KV states persist, to resume from after a restart (NBLLM_KV_SNAPSHOTS; None = off)."""


@dataclass(frozen=True)
class SamplingParams:
    """Per-request generation settings, in the engine's terms."""

    temperature: float = 0.8
    top_k: int = 40
    top_p: float = 0.9
    min_p: float = 0.0
    typical_p: float = 1.0
    seed: int = -1
    repeat_penalty: float = 1.0
    repeat_last_n: int = 64
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    num_predict: int = -1
    """Most tokens to generate; -1 (or 0) = until the model stops or the context is full."""
    num_keep: int = 4
    stop: tuple[str, ...] = ()
    grammar: str | None = None
    """A GBNF grammar the output must follow."""
    grammar_triggers: tuple[str, ...] = ()
    """With these, the grammar is lazy: it constrains only from where one of these regexes matches."""
    logprobs: bool = False
    top_logprobs: int = 0
    shift: bool = True
    """Shift the context (drop old tokens after ``num_keep``) when generation fills it."""
    draft: int = -1
    """Prompt-lookup speculation (``draft_num_predict``): -1 = automatic, 0 = off, N = up to N draft tokens a step."""

    @classmethod
    def from_options(cls, options: Options, **extra: object) -> SamplingParams:
        """The runtime options of an Options, plus request-level extras (grammar, logprobs, shift)."""
        return cls(
            temperature=options.temperature,
            top_k=options.top_k,
            top_p=options.top_p,
            min_p=options.min_p,
            typical_p=options.typical_p,
            seed=options.seed,
            repeat_penalty=options.repeat_penalty,
            repeat_last_n=options.repeat_last_n,
            presence_penalty=options.presence_penalty,
            frequency_penalty=options.frequency_penalty,
            num_predict=options.num_predict,
            num_keep=options.num_keep,
            stop=options.stop,
            draft=options.draft_num_predict,
            **extra,  # type: ignore[arg-type]
        )


@dataclass(frozen=True)
class TokenLogprob:
    """Log probability of a token, with the best alternatives."""

    token: str
    logprob: float
    bytes: tuple[int, ...]
    top: tuple[tuple[str, float, tuple[int, ...]], ...] = ()


@dataclass(frozen=True)
class TokenChunk:
    """One generated token: the text it releases (may be empty while a stop string is pending)."""

    text: str
    token: int
    logprob: TokenLogprob | None = None


@dataclass(frozen=True)
class FinalStats:
    """The end of a generation, with llama-server's meaning of the timings (nanoseconds)."""

    done_reason: str
    """``stop`` (end of generation or stop string) or ``length`` (num_predict or context full)."""
    prompt_eval_count: int
    """Prompt tokens evaluated (a reused cached prefix is not counted)."""
    prompt_eval_duration: int
    eval_count: int
    """Tokens generated."""
    eval_duration: int
    text: str = ""
    """Text released at the very end (held back while it might have begun a stop string)."""
    tokens: tuple[int, ...] = ()
    """Prompt and generated tokens (Ollama's ``context``)."""
    cached_tokens: int = 0
    """Prompt tokens reused from the slot's KV cache."""
    draft_count: int = 0
    """Draft tokens proposed by speculative decoding (prompt lookup)."""
    draft_accepted_count: int = 0
    """Of ``draft_count``, those the model agreed with (each saved a decoding step)."""


GenerationEvent = TokenChunk | FinalStats


class Pending:
    """The type of ``PENDING``."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "PENDING"


PENDING = Pending()
"""What a generation's iterator yields inside a ``NoWait`` block where it would otherwise wait for the engine."""


_NO_WAIT: ContextVar[NoWait | None] = ContextVar("nbllm_no_wait", default=None)


class TokenSource(Protocol):
    """A generation's plain tokens, taken by a ``NoWait`` consumer past the layers above (``NoWait.line``)."""

    def ready(self, handle: NoWait, limit: int) -> tuple[list[str], bool]:
        """The texts of the plain tokens ready now, in order, at most ``limit``: what the iterator's next
        steps would give one by one. True with them when the next event is something else (the final stats,
        an error): the iterator's next step gives it. Arms ``handle.wake`` when nothing more is ready. Only
        between two steps of the iterator, by its consumer, and never once ``handle.ending`` is set."""
        ...

    direct_pays: bool
    """Whether the engine's thread should deliver its tokens itself (``direct``) where it can: handing a token to
    another thread costs the generation more (the engine's compute threads take every CPU, so waking another
    thread preempts one of them). False: deliver on another thread, off the engine's path between two steps."""

    direct: Callable[[str], bool] | None
    """Set by the consumer (on its own thread) to be handed plain tokens as they come: the engine's thread calls
    it with a plain token's text when no event waits in the queue before it, in place of queueing the token (and
    of calling ``wake``). True: the consumer has delivered it; False: it took nothing, and the token is queued
    as ever. Only while the consumer has taken past the layers everything queued (``ready``)."""


@dataclass(eq=False)
class NoWait:
    """A consumer that must not block (an event loop) iterating a generation.

    Within ``with handle:`` a generation's iterator never waits for the engine: where it would, it yields
    ``PENDING`` and calls ``wake`` once its next event is ready. This is how the server streams a request
    without a thread of its own per token hand-off: the event loop advances the use case's generator only
    when the decode loop has something for it. Every layer that passes a generation's events on passes
    ``PENDING`` on unchanged; outside the block it never appears. An engine whose iterator never waits (the
    fake) never yields it either. The block is entered once per step, by one thread at a time.
    """

    wake: Callable[[], None]
    """Called from the engine's thread once an event is ready after a PENDING; must not block."""
    ending: bool = False
    """Set, with a PENDING, before a generation's last step (its final stats or its error): the consumer
    takes that step, and what the layers above do when it ends (releasing the model, perhaps unloading
    it), where blocking is allowed."""
    armed: bool = False
    """Set when the generation handed over an event, found nothing else ready and armed ``wake``: its next
    step would only say PENDING, so the consumer may stop here and wait for the wake-up (one trip through
    the layers per token instead of two). Cleared on entering the block."""
    source: TokenSource | None = None
    """Set by an engine whose iterator is one request's own events (llama's ``Request``), when the
    generation starts: its plain tokens can be taken without stepping the layers above (``line``)."""
    line: Callable[[str], str] | None = None
    """Set by the use case when it turns each plain token (a ``TokenChunk``) of ``source`` into ``line(text)``
    and every layer above passes that item on unchanged. With both set, the consumer may take a token's
    item as ``line(text)`` from ``source.ready`` in place of a step through the layers: the same item, in the
    same order, without resuming a generator a layer (``server/feed.py``, ``docs/streaming.md``)."""
    line_anywhere: bool = False
    """Set with ``line`` where any thread may call it (it keeps no state a concurrent call could see half
    made): the consumer may then have the engine's thread make the lines (``TokenSource.direct``)."""
    _token: Token[NoWait | None] | None = None

    def __enter__(self) -> NoWait:
        self.armed = False
        self._token = _NO_WAIT.set(self)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._token is not None:
            _NO_WAIT.reset(self._token)
            self._token = None


def no_wait_handle() -> NoWait | None:
    """The innermost ``NoWait`` block in effect, if any."""
    return _NO_WAIT.get()


@dataclass(frozen=True)
class EngineInfo:
    """Facts about a loaded model that the scheduler and ``/api/ps`` report."""

    n_ctx: int
    """Context length per slot."""
    parallel: int
    n_ctx_train: int
    n_embd: int
    n_vocab: int
    weights_bytes: int
    total_bytes: int
    """Weights plus KV cache plus compute buffers (``size`` in ``/api/ps``)."""
    vram_bytes: int = 0
    """Part of ``total_bytes`` on a GPU (``size_vram``)."""
    gpu_layers: int = 0
    n_layers: int = 0
    bos_text: str | None = None
    """Text of the BOS token when tokenizing adds one (so a template that writes it is not doubled)."""
    extra: dict[str, object] = field(default_factory=dict)
    cache_stats: Callable[[], dict[str, int]] | None = field(default=None, compare=False)
    """The prompt cache's counters now (RAM entries, bytes, hits, misses; snapshots), if the engine keeps one."""


class Engine(Protocol):
    """A loaded model."""

    info: EngineInfo

    def tokenize(self, text: str, *, add_special: bool = True, parse_special: bool = True) -> list[int]:
        """Text to token ids."""
        ...

    def detokenize(self, tokens: Sequence[int]) -> str:
        """Token ids to text."""
        ...

    def generate(
        self, prompt: Sequence[int], params: SamplingParams, *, cancel: threading.Event | None = None
    ) -> Iterator[GenerationEvent | Pending]:
        """Stream tokens for ``prompt``; ends with one FinalStats. Stopping iteration cancels.

        PENDING only comes inside a ``NoWait`` block (see there), and only from an engine whose events can keep
        a consumer waiting."""
        ...

    def embed(self, inputs: Sequence[Sequence[int]]) -> list[list[float]]:
        """One pooled embedding per tokenized input."""
        ...

    def load_state(self) -> tuple[int, int]:
        """(active, queued) requests right now."""
        ...

    def close(self) -> None:
        """Stop the decode loop and free the model."""
        ...


class EngineFactory(Protocol):
    """Loads models."""

    def __call__(self, spec: LoadSpec) -> Engine:
        """Load the model described by ``spec``."""
        ...
