"""``create_app(runtime)``: the FastAPI application, its routes and its error handling."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Iterator, MutableMapping
from contextlib import asynccontextmanager
from typing import Any

from anyio import to_thread
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.responses import Response
from starlette.routing import Match

from nbllm.errors import InvalidRequest, NbllmError
from nbllm.runtime import Runtime
from nbllm.server import (
    metrics,
    routes_blobs,
    routes_generate,
    routes_models,
    routes_openai,
    routes_registry,
    routes_responses,
)
from nbllm.server.errors import handle_nbllm_error, render_error
from nbllm.server.openapi import install_openapi
from nbllm.server.security import SecurityMiddleware
from nbllm.server.streaming import RAW_SEND

__all__ = ["create_app", "describe_validation_error"]

log = logging.getLogger(__name__)


def describe_validation_error(errors: list[dict[str, Any]]) -> str:
    """One line in Ollama's spirit for a request body that did not validate."""
    for err in errors:
        loc = [str(p) for p in err.get("loc", ()) if p != "body"]
        kind = err.get("type", "")
        if kind == "missing" and not loc:
            return "missing request body"
        if kind == "json_invalid":
            return f"invalid JSON: {err.get('ctx', {}).get('error', err.get('msg'))}"
        if kind == "model_attributes_type" or (kind.endswith("_type") and not loc):
            return "invalid request body: expected a JSON object"
        if kind == "value_error" and not loc:  # a check of the whole body (UnicodeChecked): its own words
            return str(err.get("msg", "invalid request body")).removeprefix("Value error, ")
    first = errors[0] if errors else {}
    where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
    return f"invalid value for field {where!r}: {first.get('msg', 'invalid')}" if where else "invalid request body"


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    return render_error(request.url.path, InvalidRequest(describe_validation_error(list(exc.errors()))))


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    message = {404: "404 page not found", 405: "405 method not allowed"}.get(exc.status_code, str(exc.detail))
    return render_error(request.url.path, NbllmError(message), status=exc.status_code, headers=exc.headers)


class JSONBodies:
    """Treat every API request body as JSON, whatever its Content-Type, as Ollama does.

    ``curl -d '{...}'`` sends ``application/x-www-form-urlencoded``; Ollama (gin's ShouldBindJSON)
    parses it as JSON anyway, and the tutorials rely on that. Blob uploads are raw bytes.
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if (
            scope["type"] == "http"
            and scope["method"] in ("POST", "DELETE", "PUT")
            and scope["path"].startswith(("/api/", "/v1/"))
            and not scope["path"].startswith("/api/blobs/")
        ):
            headers = [(k, v) for k, v in scope["headers"] if k != b"content-type"]
            # in place: the scope dict is this request's, and outer middleware reads the matched route from it
            scope["headers"] = [*headers, (b"content-type", b"application/json")]
        await self.app(scope, receive, send)


_KNOWN_PATHS = 4096
"""Paths whose upload-or-not answer ``_streams_to_disk`` keeps (then it starts afresh)."""


def _streams_to_disk(app: FastAPI) -> Callable[[MutableMapping[str, Any]], bool]:
    """Whether the router dispatches a request to a blob upload route (whose body streams to disk).

    The first route that fully matches the path and method is the one the router calls; asking the
    route table, not the path's text, means a repository named ``blobs/uploads`` is no loophole.
    """
    uploads = {routes_blobs.create_blob, *routes_registry.UPLOAD_ENDPOINTS}
    table: list[Any] = []
    known: dict[tuple[str, str, str], bool] = {}
    """Answers by (method, root path, path): all a route's match depends on. Matching the table costs ~50 µs
    a request (FastAPI's included routers); a client sending endless new paths only empties this now and then."""

    def streamed(scope: MutableMapping[str, Any]) -> bool:
        key = (scope["method"], scope.get("root_path", ""), scope["path"])
        answer = known.get(key)
        if answer is None:
            answer = known[key] = _routed_to(scope)
            if len(known) > _KNOWN_PATHS:
                known.clear()
        return answer

    def _routed_to(scope: MutableMapping[str, Any]) -> bool:
        if not table:  # (built at the first request: the routers are included after the middleware)
            table.extend(_flatten(app.router.routes))
        for route in table:
            match, _ = route.matches(scope)
            if match is Match.FULL:
                return getattr(route, "endpoint", None) in uploads
        return False

    return streamed


def _flatten(routes: list[Any]) -> Iterator[Any]:
    """The routes in the order the router tries them, FastAPI's included routers opened up."""
    for route in routes:
        inner = getattr(route, "original_router", None)
        if inner is not None:
            yield from _flatten(inner.routes)
        elif hasattr(route, "matches"):
            yield route


def _size_worker_pool(max_connections: int) -> None:
    """Give the worker-thread pool a thread for every connection the server admits.

    A request holds at most one worker thread at a time, so no request then waits for a thread
    behind others' long work: 45 pulls stalled on a slow registry leave ``/api/tags`` as quick as
    ever (with anyio's default of 40 threads they queued it). Threads are started only when needed.
    """
    limiter = to_thread.current_default_thread_limiter()
    limiter.total_tokens = max(limiter.total_tokens, max_connections)


class _App(FastAPI):
    """FastAPI, with the server's own ``send`` kept in the scope (``streaming.RAW_SEND``): a stream's body
    chunks go straight to it. The middlewares' wrappers of ``send`` (errors, metrics, CORS headers, the
    route's exception handling) look only at a response's start, which still goes through them; one
    token's line then skips three coroutine calls (``docs/streaming.md``)."""

    async def __call__(self, scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        scope[RAW_SEND] = send
        await super().__call__(scope, receive, send)


def create_app(runtime: Runtime, *, close_runtime: bool = False, listen_host: str | None = None) -> FastAPI:
    """The API server over ``runtime``. With ``close_runtime`` its shutdown unloads every model.

    ``listen_host`` is the address the server binds: on loopback, the Host-header guard is on (without
    it, each connection's local address decides).
    """
    settings = runtime.settings
    server_metrics = metrics.ServerMetrics(runtime) if settings.metrics else None

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        _size_worker_pool(settings.max_connections)
        runtime.startup()
        if server_metrics is not None:
            runtime.observers.append(server_metrics)
        try:
            yield
        finally:
            if server_metrics is not None:
                runtime.observers.remove(server_metrics)
            if close_runtime:
                runtime.close()

    app = _App(
        title="nbllm",
        version=runtime.version,
        description="Ollama's REST API, served by nbllm.",
        lifespan=lifespan,
        exception_handlers={
            RequestValidationError: _validation_error,
            HTTPException: _http_error,
            NbllmError: handle_nbllm_error,
            Exception: handle_nbllm_error,
        },
    )
    app.state.runtime = runtime
    app.state.metrics = server_metrics
    app.add_middleware(JSONBodies)
    app.add_middleware(
        SecurityMiddleware,
        origins=settings.origins,
        api_key=settings.api_key.get_secret_value() if settings.api_key else None,
        max_body=settings.max_request_size,
        listen_host=listen_host,
        streamed=_streams_to_disk(app),
    )
    if server_metrics is not None:  # outermost: rejected requests are counted too
        app.add_middleware(metrics.MetricsMiddleware, metrics=server_metrics, routes=app.router.routes)
        app.include_router(metrics.router)
    # The router tries routes in this order, each included router's in turn (~5 µs a route): generation first.
    app.include_router(routes_generate.router)
    app.include_router(routes_openai.router)
    app.include_router(routes_models.router)
    app.include_router(routes_responses.router)
    app.include_router(routes_registry.router)
    app.include_router(routes_blobs.router)
    install_openapi(app, api_key=settings.api_key is not None)
    return app
