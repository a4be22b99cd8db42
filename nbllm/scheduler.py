"""The scheduler: which models are loaded, for how long, and who may use them (Ollama's rules).

- A request *acquires* a runner for a model; a loaded runner with the same load-time options is
  shared (its engine decodes up to ``parallel`` requests at once), otherwise the model is loaded.
- When a runner's last request ends, its ``expires_at`` is set to now + its session duration
  (``keep_alive``); ``0`` unloads at once, a negative value keeps it forever. A request that
  carries ``keep_alive`` overwrites the session duration; one without it leaves it alone.
- At most ``OLLAMA_MAX_LOADED_MODELS`` runners (default 3 without a GPU). To make room an idle
  runner is unloaded first (shortest session first); if none is idle, the request waits.
- A load-time option that differs from the loaded runner's (num_ctx, num_batch, num_gpu, ...)
  reloads the model once its requests are done.
- A model whose estimated memory (weights + KV cache) does not fit in free memory makes idle models
  unload first; if it cannot fit even alone, the request fails with a clear error.
- Loads, reloads and evictions are decided one request at a time, first come first served; a
  request whose model is already loaded as asked goes straight through.
- Every request that would wait -- for a model to load, reload or get room, or, its model loaded, for
  one of the engine's ``parallel`` slots -- counts against ``OLLAMA_MAX_QUEUE``; one more than that
  many → ServerBusy (HTTP 503) at once. A request that gets a slot straight away is never refused.
- A request whose cancel flag is set (its client left) stops waiting within ``_CANCEL_POLL`` seconds.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from nbllm.engine import Engine, EngineFactory, LoadSpec
from nbllm.errors import Cancelled, ModelLoadError, NbllmError, ServerBusy
from nbllm.store import LocalModel
from nbllm.system import available_memory

__all__ = ["Runner", "RunnerView", "Scheduler"]

log = logging.getLogger(__name__)

_FOREVER_DATE = datetime(2318, 1, 1, tzinfo=timezone.utc)
_BUSY = "server busy, please try again.  maximum pending requests exceeded"
_CANCEL_POLL = 0.05
"""Seconds between two looks at a waiting request's cancel flag."""


@dataclass(eq=False)
class Runner:
    """A loaded model and its lifetime bookkeeping."""

    key: str
    name: str
    model: LocalModel
    spec: LoadSpec
    engine: Engine
    session: float
    """Seconds to stay loaded once idle (inf = forever, 0 = unload when idle)."""
    loaded_at: float
    refs: int = 0
    expires_at: float = math.inf
    """Monotonic deadline while idle; inf while busy or kept forever."""
    expires_wall: datetime = field(default_factory=lambda: _FOREVER_DATE)
    unloading: bool = False


@dataclass(frozen=True)
class RunnerView:
    """A loaded model as ``/api/ps`` reports it."""

    name: str
    model: LocalModel
    size: int
    size_vram: int
    context_length: int
    expires_at: datetime
    active: int
    queued: int
    unloading: bool
    devices: tuple[str, ...] = ()
    """The devices it runs on (``CUDA0``, ``CPU``)."""
    prompt_cache: dict[str, int] | None = None
    """Its RAM prompt cache and KV snapshot counters, if it keeps them (``EngineInfo.cache_stats``)."""


class Scheduler:
    """Owns loaded models: load, share, expire, evict, unload."""

    def __init__(
        self,
        factory: EngineFactory,
        *,
        default_keep_alive: float,
        max_loaded: int,
        max_queue: int,
        clock: Callable[[], float] = time.monotonic,
        free_memory: Callable[[], int] = available_memory,
        place: Callable[[LoadSpec], LoadSpec] | None = None,
    ) -> None:
        self._factory = factory
        self._default_keep_alive = default_keep_alive
        self._max_loaded = max(1, max_loaded)
        self._max_queue = max_queue
        self._clock = clock
        self._runners: dict[str, Runner] = {}
        self._loading: set[str] = set()
        self._waiting = 0
        self._free_memory = free_memory
        self._place = place or (lambda spec: spec)  # GPU placement at load time (nbllm.placement)
        self._tickets: deque[int] = deque()
        self._next_ticket = 0
        self._cv = threading.Condition()
        self._closed = False
        self._reaper = threading.Thread(target=self._reap, name="nbllm-scheduler-reaper", daemon=True)
        self._reaper.start()

    # ── acquiring ───────────────────────────────────────────────────────────────────────────
    @contextmanager
    def acquire(
        self,
        name: str,
        model: LocalModel,
        spec: LoadSpec,
        keep_alive: float | None,
        *,
        cancel: threading.Event | None = None,
    ) -> Iterator[Runner]:
        """Hold a runner for the model for the duration of a request; ``cancel`` set stops the wait for it."""
        runner = self._get(name, model, spec, keep_alive, cancel)
        try:
            yield runner
        finally:
            self._release(runner)

    def _get(
        self, name: str, model: LocalModel, spec: LoadSpec, keep_alive: float | None, cancel: threading.Event | None
    ) -> Runner:
        key = _runner_key(model)
        with self._cv:
            runner = self._runners.get(key)
            free = runner is not None and self._ready(runner, spec) and runner.refs < runner.spec.parallel
            if not free and self._pending_locked() >= self._max_queue:
                raise ServerBusy(_BUSY)
            self._waiting += 1
            ticket = self._next_ticket
            self._next_ticket += 1
            self._tickets.append(ticket)
            try:
                runner = self._wait_for_runner(key, name, model, spec, keep_alive, ticket, cancel)
            finally:
                self._waiting -= 1
                self._tickets.remove(ticket)
                self._cv.notify_all()
        if cancel is not None and cancel.is_set():  # it left while the model loaded: the model stays
            self._release(runner)
            raise Cancelled("request canceled")
        return runner

    @staticmethod
    def _ready(runner: Runner, spec: LoadSpec) -> bool:
        """Whether a request asking for ``spec`` can use this runner now."""
        return not runner.unloading and runner.spec == spec

    def _pending_locked(self) -> int:
        """Requests waiting: for a model here, and for a slot in a loaded model's engine (its references
        beyond its ``parallel`` slots: taken here, before the engine's queue, so a burst is counted exactly)."""
        return self._waiting + sum(max(0, r.refs - r.spec.parallel) for r in self._runners.values())

    def _wait(self, cancel: threading.Event | None) -> None:
        """Wait for a change (the lock held); a request whose client left stops waiting."""
        if cancel is None:
            self._cv.wait()
            return
        self._cv.wait(_CANCEL_POLL)
        if cancel.is_set():
            raise Cancelled("request canceled")

    def _wait_for_runner(
        self,
        key: str,
        name: str,
        model: LocalModel,
        spec: LoadSpec,
        keep_alive: float | None,
        ticket: int,
        cancel: threading.Event | None,
    ) -> Runner:
        """Called with the lock held; returns a runner with a reference taken.

        A request whose model is loaded as asked goes straight through. Everything else (loads,
        reloads, evictions) happens one request at a time, first come first served.
        """
        while True:
            if self._closed:
                raise ModelLoadError("server is shutting down")
            runner = self._runners.get(key)
            if runner is not None and self._ready(runner, spec):
                self._take(runner, keep_alive)
                runner.name, runner.model = name, model  # ps shows the name it was last used under
                return runner
            if cancel is not None and cancel.is_set():
                raise Cancelled("request canceled")
            if self._tickets[0] != ticket:  # FIFO: earlier requests decide first
                self._wait(cancel)
                continue
            if runner is not None:  # different load-time options, or being unloaded: reload when idle
                if runner.refs == 0:
                    self._unload_locked(runner)
                    continue
                runner.unloading = True
                self._wait(cancel)
                continue
            if key in self._loading:
                self._wait(cancel)
                continue
            spec = self._place(spec)
            full = len(self._runners) + len(self._loading) >= self._max_loaded
            if full or not self._fits(spec):
                victim = self._pick_victim()
                if victim is None and not self._runners and not full:
                    raise ModelLoadError(_too_big(spec.memory_estimate, self._free_memory()))
                if victim is None:
                    self._wait(cancel)
                    continue
                self._unload_locked(victim)
                continue
            return self._load_locked(key, name, model, spec, keep_alive)

    def _fits(self, spec: LoadSpec) -> bool:
        """Whether the model's estimated memory fits in what is free now (loaded models already count); a
        model that would not fit in GPU memory makes others unload first (alone, it loads partly offloaded)."""
        plan = spec.offload
        return spec.memory_estimate <= self._free_memory() and (plan is None or plan.fits or not self._runners)

    def _load_locked(self, key: str, name: str, model: LocalModel, spec: LoadSpec, keep_alive: float | None) -> Runner:
        self._loading.add(key)
        self._cv.release()
        try:
            started = time.perf_counter()
            engine = self._factory(spec)
            log.info(
                "loaded %s in %.2fs (ctx %d x %d)", name, time.perf_counter() - started, spec.num_ctx, spec.parallel
            )
        except NbllmError:
            raise
        except Exception as exc:  # a bug or an unexpected llama.cpp failure: report, keep serving
            raise ModelLoadError(f"unable to load model {name}: {exc}") from exc
        finally:
            self._cv.acquire()
            self._loading.discard(key)
            self._cv.notify_all()
        session = self._default_keep_alive if keep_alive is None else keep_alive
        runner = Runner(
            key=key, name=name, model=model, spec=spec, engine=engine, session=session, loaded_at=self._clock()
        )
        self._runners[key] = runner
        self._take(runner, None)
        return runner

    def _take(self, runner: Runner, keep_alive: float | None) -> None:
        if keep_alive is not None:
            runner.session = keep_alive
        runner.refs += 1
        runner.expires_at = math.inf  # the timer stops while a request is in flight

    def _release(self, runner: Runner) -> None:
        with self._cv:
            runner.refs -= 1
            if runner.refs == 0:
                if runner.session <= 0 or runner.unloading:
                    self._unload_locked(runner)
                else:
                    self._arm(runner)
            self._cv.notify_all()

    def _arm(self, runner: Runner) -> None:
        now = self._clock()
        runner.expires_at = now + runner.session
        runner.expires_wall = (
            _FOREVER_DATE
            if math.isinf(runner.session)
            else datetime.now(timezone.utc) + timedelta(seconds=runner.session)
        )

    def _pick_victim(self) -> Runner | None:
        idle = [r for r in self._runners.values() if r.refs == 0]
        if idle:
            return min(idle, key=lambda r: (r.session, r.name))
        busy = sorted(self._runners.values(), key=lambda r: (r.session, r.name))
        if busy:
            busy[0].unloading = True  # finish its requests, then make room
        return None

    # ── unloading ───────────────────────────────────────────────────────────────────────────
    def _unload_locked(self, runner: Runner) -> None:
        if self._runners.get(runner.key) is runner:
            del self._runners[runner.key]
        runner.unloading = True
        runner.expires_wall = datetime.now(timezone.utc)
        self._cv.release()
        try:
            runner.engine.close()
            log.info("unloaded %s", runner.name)
        finally:
            self._cv.acquire()
            self._cv.notify_all()

    def expire(self, model: LocalModel) -> bool:
        """Unload a model now if idle, or as soon as its requests finish (``keep_alive: 0``)."""
        with self._cv:
            runner = self._runners.get(_runner_key(model))
            if runner is None:
                return False
            runner.session = 0
            if runner.refs == 0:
                self._unload_locked(runner)
            else:
                runner.unloading = True
            return True

    @property
    def pending(self) -> int:
        """Requests waiting for a model to load, reload or get room, or for a slot (``OLLAMA_MAX_QUEUE`` caps them)."""
        with self._cv:
            return self._pending_locked()

    def is_loaded(self, model: LocalModel) -> bool:
        """Whether the model's weights are loaded."""
        with self._cv:
            return _runner_key(model) in self._runners

    def _reap(self) -> None:
        with self._cv:
            while not self._closed:
                now = self._clock()
                due = [r for r in self._runners.values() if r.refs == 0 and r.expires_at <= now]
                for runner in due:
                    self._unload_locked(runner)
                deadline = min((r.expires_at for r in self._runners.values() if r.refs == 0), default=math.inf)
                timeout = None if math.isinf(deadline) else max(0.01, deadline - self._clock())
                self._cv.wait(timeout=min(timeout, 1.0) if timeout is not None else 1.0)

    def ps(self) -> list[RunnerView]:
        """Loaded models, longest remaining time first."""
        with self._cv:
            runners = list(self._runners.values())
        views = []
        for r in runners:
            active, queued = r.engine.load_state()
            expires = (
                r.expires_wall
                if r.refs == 0
                else datetime.now(timezone.utc) + timedelta(seconds=min(r.session, 292 * 365 * 86400.0))
            )
            if math.isinf(r.session):
                expires = _FOREVER_DATE
            views.append(
                RunnerView(
                    name=r.name,
                    model=r.model,
                    size=r.engine.info.total_bytes,
                    size_vram=r.engine.info.vram_bytes,
                    context_length=r.engine.info.n_ctx,
                    expires_at=expires,
                    active=active,
                    queued=queued,
                    unloading=r.unloading,
                    devices=_devices(r.engine.info.extra.get("devices")),
                    prompt_cache=r.engine.info.cache_stats() if r.engine.info.cache_stats is not None else None,
                )
            )
        return sorted(views, key=lambda v: v.expires_at, reverse=True)

    def close(self) -> None:
        """Unload everything and stop the reaper (server shutdown)."""
        with self._cv:
            self._closed = True
            for runner in list(self._runners.values()):
                self._unload_locked(runner)
            self._cv.notify_all()
        self._reaper.join(timeout=5)


def _devices(value: object) -> tuple[str, ...]:
    """The device names an engine reports in ``info.extra["devices"]`` (none from an engine that does not)."""
    return tuple(str(v) for v in value) if isinstance(value, (list, tuple)) else ()


def _too_big(need: int, free: int) -> str:
    gib = 1 << 30
    return f"model requires more system memory ({need / gib:.1f} GiB) than is available ({free / gib:.1f} GiB)"


def _runner_key(model: LocalModel) -> str:
    adapters = ",".join(str(p) for p in model.adapters)
    return f"{model.model_digest}|{adapters}|{model.draft or ''}"
