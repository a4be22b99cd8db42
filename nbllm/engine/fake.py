"""FakeEngine: a deterministic engine without a model, for fast tests of the layers above.

Tokens are characters (``ord``). The reply is scripted (``replies`` queue) or, by default, the
prompt's last line reversed; generation honours num_predict, stop strings, cancellation and the
slot count, and reports timings, so the scheduler, service and server can be exercised for real.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import replace

from nbllm.engine.base import EngineInfo, FinalStats, GenerationEvent, LoadSpec, SamplingParams, TokenChunk
from nbllm.engine.text import StreamText
from nbllm.errors import Cancelled, ContextLengthExceeded, InvalidRequest

__all__ = ["FakeEngine", "FakeEngineFactory"]


class FakeEngine:
    """Echo/scripted generation with real bookkeeping."""

    def __init__(self, spec: LoadSpec, *, replies: deque[str] | None = None, token_delay: float = 0.0) -> None:
        self.spec = spec
        self.replies = replies if replies is not None else deque()
        self.token_delay = token_delay
        self.closed = False
        self.prompts: list[str] = []
        self._active = 0
        self._slots = threading.Semaphore(spec.parallel)
        self._lock = threading.Lock()
        self.info = EngineInfo(
            n_ctx=spec.num_ctx,
            parallel=spec.parallel,
            n_ctx_train=spec.num_ctx,
            n_embd=8,
            n_vocab=0x110000,
            weights_bytes=1000,
            total_bytes=1000 + spec.num_ctx * spec.parallel,
            n_layers=1,
        )
        plan = spec.offload
        if plan is not None:  # placed on (simulated) GPUs: report the plan as the real engine does
            self.info = replace(
                self.info,
                total_bytes=plan.total_bytes,
                vram_bytes=plan.vram_bytes,
                gpu_layers=plan.gpu_layers,
                n_layers=plan.total_layers,
                extra={"devices": plan.device_names() if plan.gpu_layers else ("CPU",)},
            )

    def tokenize(self, text: str, *, add_special: bool = True, parse_special: bool = True) -> list[int]:
        """One token per character."""
        return [ord(c) for c in text]

    def detokenize(self, tokens: Sequence[int]) -> str:
        """Characters back (an id outside the vocabulary is a 400, as with llama.cpp)."""
        n_vocab = self.info.n_vocab
        bad = next((t for t in tokens if not 0 <= t < n_vocab), None)
        if bad is not None:
            raise InvalidRequest(f"invalid token id {bad}: this model's vocabulary has ids 0 to {n_vocab - 1}")
        return "".join(chr(t) for t in tokens)

    def generate(
        self, prompt: Sequence[int], params: SamplingParams, *, cancel: threading.Event | None = None
    ) -> Iterator[GenerationEvent]:
        """Stream the scripted (or echoed) reply."""
        if len(prompt) >= self.spec.num_ctx:
            raise ContextLengthExceeded(len(prompt), self.spec.num_ctx)
        text = self.detokenize(prompt)
        self.prompts.append(text)
        reply = self.replies.popleft() if self.replies else text.rstrip().splitlines()[-1][::-1] if text.strip() else ""
        return self._run(list(prompt), reply, params, cancel or threading.Event())

    def _run(
        self, prompt: list[int], reply: str, params: SamplingParams, cancel: threading.Event
    ) -> Iterator[GenerationEvent]:
        while not self._slots.acquire(timeout=0.02):  # waiting for a slot: a client that leaves stops waiting
            if cancel.is_set():
                raise Cancelled("request cancelled")
        try:
            with self._lock:
                self._active += 1
            try:
                yield from self._emit(prompt, reply, params, cancel)
            finally:
                with self._lock:
                    self._active -= 1
        finally:
            self._slots.release()

    def _emit(
        self, prompt: list[int], reply: str, params: SamplingParams, cancel: threading.Event
    ) -> Iterator[GenerationEvent]:
        start = time.perf_counter()
        stream = StreamText(params.stop)
        first = time.perf_counter()
        count = 0
        reason = "stop"
        for ch in reply:
            if cancel.is_set():
                raise Cancelled("request cancelled")
            if self.token_delay:
                time.sleep(self.token_delay)
            count += 1
            yield TokenChunk(text=stream.feed(ch.encode()), token=ord(ch))
            if stream.stopped:
                break
            if 0 < params.num_predict <= count:
                reason = "length"
                break
        end = time.perf_counter()
        yield FinalStats(
            done_reason=reason,
            prompt_eval_count=len(prompt),
            prompt_eval_duration=max(1, int((first - start) * 1e9)),
            eval_count=count,
            eval_duration=max(1, int((end - first) * 1e9)),
            text=stream.flush(),
            tokens=tuple(prompt) + tuple(ord(c) for c in stream.text),
        )

    def embed(self, inputs: Sequence[Sequence[int]]) -> list[list[float]]:
        """A fixed-size vector of character statistics per input."""
        out = []
        for tokens in inputs:
            vec = [float(sum(tokens) % (i + 7)) + 1.0 for i in range(8)]
            norm = sum(v * v for v in vec) ** 0.5
            out.append([v / norm for v in vec])
        return out

    def load_state(self) -> tuple[int, int]:
        """(active, queued)."""
        with self._lock:
            return self._active, 0

    def close(self) -> None:
        """Mark closed."""
        self.closed = True


class FakeEngineFactory:
    """Makes FakeEngines and remembers them (``loads``), with an optional load delay."""

    def __init__(self, *, load_delay: float = 0.0, token_delay: float = 0.0) -> None:
        self.load_delay = load_delay
        self.token_delay = token_delay
        self.loads: list[FakeEngine] = []
        self.replies: deque[str] = deque()

    def __call__(self, spec: LoadSpec) -> FakeEngine:
        if self.load_delay:
            time.sleep(self.load_delay)
        engine = FakeEngine(spec, replies=self.replies, token_delay=self.token_delay)
        self.loads.append(engine)
        return engine
