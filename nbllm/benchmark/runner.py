"""Run a benchmark: every target x model x load point x repetition, with warm-up and a progress bar.

The requests run on an asyncio loop in a worker thread, so the same code serves a terminal and a
notebook kernel (whose own loop is busy). The calling thread waits; Ctrl-C there (or setting the
``stop`` event, e.g. a Stop button) cancels what is in flight and returns every request measured
so far, with the interrupted run marked as such.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Protocol

import httpx
import numpy as np

from nbllm.backends import Backend, BackendError, GenRequest, StreamEnd, Token, open_backend
from nbllm.benchmark.datasets import Prompt, TokenScale, build_prompts, calibrate, random_text
from nbllm.benchmark.load import arrival_offsets
from nbllm.benchmark.records import RequestRecord, RunInfo
from nbllm.benchmark.result import BenchResult
from nbllm.benchmark.spec import BenchSpec, LoadPoint
from nbllm.config import Settings

if TYPE_CHECKING:
    from nbllm.runtime import Runtime

__all__ = ["ProgressBar", "run_benchmark"]

log = logging.getLogger(__name__)


class ProgressBar(Protocol):
    """The part of ``tqdm`` the runner uses (``tqdm.tqdm`` and ``tqdm.auto.tqdm`` both fit)."""

    def update(self, n: float | None = 1) -> bool | None:
        """Count ``n`` more finished requests."""
        ...

    def set_description(self, desc: str | None = None) -> None:
        """Say which run is going."""
        ...

    def close(self) -> None:
        """Finish the bar."""
        ...


ProgressFactory = Callable[[int], ProgressBar]
"""Makes a bar for a number of measured requests, e.g. ``lambda n: tqdm(total=n, unit="req")``."""


@dataclass
class _Collector:
    """Everything measured so far; shared by the loop thread (writer) and the caller (reader)."""

    runs: list[RunInfo] = field(default_factory=list)
    records: dict[int, list[RequestRecord]] = field(default_factory=dict)
    error: BaseException | None = None


def _request(prompt: Prompt, model: str, spec: BenchSpec) -> GenRequest:
    return GenRequest(
        model=model,
        prompt=prompt.text,
        system=prompt.system,
        chat=spec.endpoint == "chat",
        max_tokens=prompt.output_len if prompt.output_len is not None else spec.dataset.output_len,
        options=spec.options,
    )


def _finish(rec: RequestRecord, end: StreamEnd) -> None:
    rec.end = end.arrival
    rec.input_tokens, rec.output_tokens = end.input_tokens, end.output_tokens
    rec.cached_tokens, rec.done_reason, rec.server = end.cached_tokens, end.done_reason, end.server


async def _stream_into(backend: Backend, req: GenRequest, rec: RequestRecord) -> None:
    async with contextlib.aclosing(backend.stream(req)) as events:
        async for event in events:
            if isinstance(event, Token):
                rec.arrivals.append(event.arrival)
                rec.text.append(event.thinking + event.text)
            else:
                _finish(rec, event)


def _describe(exc: Exception) -> str:
    """A backend's own message; other exceptions (connection, protocol) with their type."""
    if isinstance(exc, BackendError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


async def _one(backend: Backend, req: GenRequest, rec: RequestRecord, spec: BenchSpec) -> None:
    """Send one request and record it; every failure is recorded as an error, none is raised."""
    rec.status, rec.start = "running", time.perf_counter()
    try:
        await asyncio.wait_for(_stream_into(backend, req, rec), spec.timeout)
    except asyncio.CancelledError:
        rec.status = "cancelled"
        raise
    except asyncio.TimeoutError:
        rec.status, rec.error = "error", f"timed out after {spec.timeout:g}s"
    except Exception as exc:  # a benchmark counts every failure: HTTP, protocol, connection
        rec.status, rec.error = "error", _describe(exc)
    else:
        if not rec.arrivals:
            rec.status, rec.error = "error", "no token received"
        else:
            rec.status = "ok"
            if rec.end != rec.end:  # NaN: no closing event was parsed
                rec.end = rec.arrivals[-1]


async def _run(
    backend: Backend,
    info: RunInfo,
    prompts: list[Prompt],
    spec: BenchSpec,
    sink: list[RequestRecord],
    bar: ProgressBar | None,
) -> None:
    """One run at one load point; ``sink`` fills as requests are released, so an interrupt keeps them."""
    offsets = arrival_offsets(len(prompts), info.point.rate, spec.burstiness, np.random.default_rng(spec.seed))
    slots = asyncio.Semaphore(info.point.concurrency) if info.point.concurrency else None
    tasks: list[asyncio.Task[None]] = []

    async def limited(req: GenRequest, rec: RequestRecord) -> None:
        async with slots if slots is not None else contextlib.nullcontext():
            await _one(backend, req, rec, spec)
        if bar is not None:
            bar.update(1)

    info.started = time.perf_counter()
    try:
        for i, prompt in enumerate(prompts):
            delay = info.started + offsets[i] - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            rec = RequestRecord(run=info.run, index=i, queued=time.perf_counter(), input_len=prompt.input_len)
            sink.append(rec)
            tasks.append(asyncio.create_task(limited(_request(prompt, info.model, spec), rec)))
        await asyncio.gather(*tasks)
    except asyncio.CancelledError:
        info.interrupted = True
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for rec in sink:
            if rec.status == "pending":
                rec.status = "unsent"
        raise
    finally:
        info.duration = time.perf_counter() - info.started


async def _warm_up(backend: Backend, spec: BenchSpec, model: str, scale: TokenScale | None) -> None:
    """Unmeasured requests (a load, caches); if every one fails the target or model is wrong: say so."""
    if spec.warmup == 0:
        return
    words = scale.words_for(spec.dataset.input_len) if scale else 16
    prompt = Prompt(random_text(np.random.default_rng([spec.seed, 1_000_003]), words), None, spec.dataset.output_len)
    errors = []
    for _ in range(spec.warmup):
        rec = RequestRecord(run=-1, index=0, queued=time.perf_counter())
        await _one(backend, _request(prompt, model, spec), rec, replace(spec, timeout=max(spec.timeout, 600.0)))
        if rec.error:
            errors.append(rec.error)
    if len(errors) == spec.warmup:
        raise BackendError(f"warm-up failed on {backend.url} with model {model!r}: {errors[-1]}")


async def _sweep(
    spec: BenchSpec,
    out: _Collector,
    bar: ProgressBar | None,
    settings: Settings | None,
    transport: httpx.AsyncBaseTransport | None,
    runtime: Runtime | None,
) -> None:
    points = spec.load_points()
    for target in spec.targets:
        key_env = spec.key_env(target)
        backend = open_backend(
            target, settings=settings, api_key_env=key_env, timeout=spec.timeout, transport=transport, runtime=runtime
        )
        try:
            for model in spec.models:
                scale = await calibrate(backend, model, spec.seed) if spec.dataset.kind != "jsonl" else None
                await _warm_up(backend, spec, model, scale)
                for p, point in enumerate(points):
                    for repetition in range(spec.repeat):
                        await _one_run(backend, spec, target, model, point, (p, repetition), scale, out, bar)
        finally:
            await backend.aclose()


async def _one_run(
    backend: Backend,
    spec: BenchSpec,
    target: str,
    model: str,
    point: LoadPoint,
    where: tuple[int, int],
    scale: TokenScale | None,
    out: _Collector,
    bar: ProgressBar | None,
) -> None:
    # fresh prompts per load point and repetition (no accidental prefix-cache hits between runs),
    # the same ones for every target and model (a fair comparison)
    prompts = build_prompts(spec.dataset, scale or TokenScale(1.0, 0.0, ""), [spec.seed, *where])
    info = RunInfo(
        run=len(out.runs),
        target=target,
        backend=f"{backend.kind}-chat" if spec.endpoint == "chat" else backend.kind,
        model=model,
        point=point,
        repetition=where[1],
        endpoint=spec.endpoint,
        num_prompts=len(prompts),
        dataset_note=f"{spec.dataset.kind}: {scale.note}" if scale else f"jsonl: {spec.dataset.path}",
        date=datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S"),
        name=spec.target_names()[target],
    )
    sink: list[RequestRecord] = []
    out.runs.append(info)
    out.records[info.run] = sink
    if bar is not None:
        bar.set_description(f"{model} {point.label}")
    await _run(backend, info, prompts, spec, sink, bar)


def _total(spec: BenchSpec) -> int:
    per_run = spec.dataset.num_prompts
    return len(spec.targets) * len(spec.models) * len(spec.load_points()) * spec.repeat * per_run


def run_benchmark(
    spec: BenchSpec,
    *,
    progress: ProgressFactory | None = None,
    stop: threading.Event | None = None,
    settings: Settings | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
    runtime: Runtime | None = None,
) -> BenchResult:
    """Run ``spec`` and return its results; Ctrl-C or ``stop`` ends it early, keeping what was measured.

    ``runtime``: the engine of this process, for the target ``local``."""
    spec.validate()
    out = _Collector()
    bar = progress(_total(spec)) if progress is not None else None
    loop = asyncio.new_event_loop()
    task: asyncio.Task[None] = loop.create_task(_sweep(spec, out, bar, settings, transport, runtime))

    finished = threading.Event()

    def work() -> None:
        try:
            loop.run_until_complete(task)
        except asyncio.CancelledError:
            pass
        except BaseException as exc:  # handed to the calling thread below
            out.error = exc
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()
            finished.set()

    # waiting on an Event, not Thread.join: a KeyboardInterrupt inside join() can leave the thread
    # looking finished while it still runs (CPython before 3.13)
    threading.Thread(target=work, name="nbllm-bench", daemon=True).start()
    interrupted = False
    try:
        while not finished.wait(0.05):
            if stop is not None and stop.is_set() and not interrupted:
                interrupted = _cancel(loop, task)
    except KeyboardInterrupt:
        interrupted = _cancel(loop, task)
        finished.wait()
    finally:
        if bar is not None:
            bar.close()
    if out.error is not None:
        raise out.error
    return BenchResult.build(spec, out.runs, out.records, interrupted=interrupted)


def _cancel(loop: asyncio.AbstractEventLoop, task: asyncio.Task[Any]) -> bool:
    with contextlib.suppress(RuntimeError):  # the loop may just have finished
        loop.call_soon_threadsafe(task.cancel)
    log.info("benchmark interrupted: keeping the requests measured so far")
    return True
