"""``GET /metrics``: what the server does, in Prometheus' text format (``NBLLM_METRICS=0`` turns it off).

Three sources, none of them per token:

- the HTTP middleware counts every answered request by method, route template and status, and
  times it (a stream until its last byte) -- rejected requests (401, 403, 413) included;
- the runtime reports each finished generation once (:class:`~nbllm.runtime.GenerationRecord`):
  prompt and generated tokens, time to first token, decode rate;
- loaded models, their size, active requests and queue depth, and the requests waiting for a model
  to load or for room, are read from the scheduler when Prometheus scrapes.

Each app has its own registry: two servers in one process (a notebook's, a test's) never mix counts.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterator, MutableMapping, Sequence
from typing import Any

from fastapi import APIRouter, Request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from starlette.responses import Response
from starlette.routing import Match

from nbllm.runtime import GenerationRecord, Runtime

__all__ = ["MetricsMiddleware", "ServerMetrics", "router"]

Message = MutableMapping[str, Any]

_TTFT_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
_RATE_BUCKETS = (1.0, 2.0, 5.0, 10.0, 20.0, 35.0, 50.0, 75.0, 100.0, 150.0, 200.0, 300.0, 500.0, 1000.0)
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)


_CACHE = (
    ("entries", "Sequence states in the RAM prompt cache."),
    ("bytes", "Bytes the RAM prompt cache holds."),
    ("hits", "Requests that got their prefix back from the RAM prompt cache (since load)."),
    ("misses", "Requests the RAM prompt cache could not help (since load)."),
    ("snapshots", "KV snapshots on disk for the model as loaded."),
    ("snapshot_hits", "Requests resumed from a KV snapshot (since load)."),
    ("snapshot_refused", "KV snapshots refused: damaged, truncated or for other settings (since load)."),
)


class _RuntimeCollector:
    """Gauges read from the scheduler at scrape time (nothing to update on the hot path)."""

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime

    def collect(self) -> Iterator[Metric]:
        views = self._runtime.scheduler.ps()
        loaded = GaugeMetricFamily("nbllm_loaded_models", "Models loaded in memory.")
        loaded.add_metric([], len(views))
        size = GaugeMetricFamily("nbllm_loaded_model_bytes", "Memory a loaded model takes.", labels=["model"])
        active = GaugeMetricFamily("nbllm_active_requests", "Requests generating now.", labels=["model"])
        queued = GaugeMetricFamily(
            "nbllm_queue_depth", "Requests waiting for a free slot of a loaded model.", labels=["model"]
        )
        pending = GaugeMetricFamily(
            "nbllm_scheduler_pending",
            "Requests waiting for a model (to load, reload, get room) or a slot; over OLLAMA_MAX_QUEUE get a 503.",
        )
        pending.add_metric([], self._runtime.scheduler.pending)
        cache = {key: GaugeMetricFamily(f"nbllm_prompt_cache_{key}", text, labels=["model"]) for key, text in _CACHE}
        for view in views:
            size.add_metric([view.name], view.size)
            active.add_metric([view.name], view.active)
            queued.add_metric([view.name], view.queued)
            for key, value in (view.prompt_cache or {}).items():
                if key in cache:
                    cache[key].add_metric([view.name], value)
        yield from (loaded, size, active, queued, pending, *cache.values())


class ServerMetrics:
    """One server's counters and histograms, and the runtime observer that feeds the inference ones."""

    def __init__(self, runtime: Runtime) -> None:
        self.registry = CollectorRegistry()
        reg = self.registry
        self.requests = Counter(
            "nbllm_http_requests", "HTTP requests answered.", ["method", "route", "status"], registry=reg
        )
        self.latency = Histogram(
            "nbllm_http_request_duration_seconds",
            "Time to answer an HTTP request (a stream: until its last byte).",
            ["route"],
            buckets=_LATENCY_BUCKETS,
            registry=reg,
        )
        self.generations = Counter("nbllm_generations", "Generations finished.", ["model", "done_reason"], registry=reg)
        self.prompt_tokens = Counter(
            "nbllm_prompt_tokens", "Prompt tokens evaluated (a cached prefix is not).", ["model"], registry=reg
        )
        self.cached_tokens = Counter(
            "nbllm_prompt_cached_tokens", "Prompt tokens reused from the KV cache.", ["model"], registry=reg
        )
        self.generated_tokens = Counter("nbllm_generated_tokens", "Tokens generated.", ["model"], registry=reg)
        self.draft_tokens = Counter(
            "nbllm_draft_tokens", "Draft tokens proposed by speculative decoding.", ["model"], registry=reg
        )
        self.draft_accepted_tokens = Counter(
            "nbllm_draft_accepted_tokens",
            "Draft tokens the model accepted (each saved a step).",
            ["model"],
            registry=reg,
        )
        self.ttft = Histogram(
            "nbllm_time_to_first_token_seconds",
            "From a request's arrival to its first generated token (queueing and loading included).",
            ["model"],
            buckets=_TTFT_BUCKETS,
            registry=reg,
        )
        self.decode_rate = Histogram(
            "nbllm_decode_tokens_per_second",
            "Generation speed of a request after its first token.",
            ["model"],
            buckets=_RATE_BUCKETS,
            registry=reg,
        )
        reg.register(_RuntimeCollector(runtime))

    def generation_finished(self, record: GenerationRecord) -> None:
        """Count one finished generation (the runtime calls this once per request)."""
        model = record.model
        self.generations.labels(model, record.done_reason).inc()
        self.prompt_tokens.labels(model).inc(record.prompt_tokens)
        self.cached_tokens.labels(model).inc(record.cached_tokens)
        self.generated_tokens.labels(model).inc(record.generated_tokens)
        if record.draft_tokens:
            self.draft_tokens.labels(model).inc(record.draft_tokens)
            self.draft_accepted_tokens.labels(model).inc(record.draft_accepted_tokens)
        if record.generated_tokens:
            self.ttft.labels(model).observe(record.time_to_first_token)
        if record.generated_tokens > 1 and record.decode_seconds > 0:
            self.decode_rate.labels(model).observe(record.generated_tokens / record.decode_seconds)

    def request_done(self, method: str, route: str, status: int, seconds: float) -> None:
        """Count one answered HTTP request."""
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(route).observe(seconds)

    def render(self) -> bytes:
        """The exposition text."""
        return generate_latest(self.registry)


def _flatten(routes: Sequence[Any]) -> Iterator[Any]:
    for route in routes:
        inner = getattr(route, "original_router", None)  # FastAPI's included routers
        if inner is not None:
            yield from _flatten(inner.routes)
        else:
            yield route


class MetricsMiddleware:
    """Counts every HTTP request by the route template it matched (``other`` when none did).

    A request refused before routing (401, 403, 413, 405) is counted under the route it was meant for.
    """

    def __init__(self, app: Any, *, metrics: ServerMetrics, routes: Sequence[Any] = ()) -> None:
        self.app = app
        self.metrics = metrics
        self._routes = routes  # the app's route list (filled in as routers are included)
        self._flat: list[Any] | None = None

    def _label(self, scope: MutableMapping[str, Any]) -> str:
        route = scope.get("route")
        if route is not None:
            return str(getattr(route, "path", None) or "other")
        if self._flat is None:
            self._flat = [r for r in _flatten(self._routes) if hasattr(r, "matches")]
        partial = None
        for candidate in self._flat:
            match, _ = candidate.matches(scope)
            if match is Match.FULL:
                return str(candidate.path)
            if match is Match.PARTIAL and partial is None:
                partial = str(candidate.path)  # the path exists, not with this method
        return partial or "other"

    async def __call__(
        self, scope: MutableMapping[str, Any], receive: Any, send: Callable[[Message], Awaitable[None]]
    ) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the client gets if the app raises before answering

        async def counted(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, counted)
        finally:
            self.metrics.request_done(scope["method"], self._label(scope), status, time.perf_counter() - started)


router = APIRouter()


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics(request: Request) -> Response:
    """Counters, histograms and gauges in Prometheus' text exposition format."""
    server_metrics: ServerMetrics = request.app.state.metrics
    return Response(server_metrics.render(), media_type=CONTENT_TYPE_LATEST)
