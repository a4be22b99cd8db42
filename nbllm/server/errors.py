"""The one table from nbllm's errors to HTTP status codes, and the ``{"error": ...}`` renderer."""

from __future__ import annotations

import json
import logging

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from nbllm.errors import (
    Cancelled,
    ConfigError,
    EngineError,
    InvalidRequest,
    ModelLoadError,
    NbllmError,
    NotFound,
    PullError,
    ServerBusy,
    ServerUnreachable,
    StoreError,
    TemplateError,
)

__all__ = ["STATUS", "error_line", "error_response", "handle_nbllm_error", "status_for"]

log = logging.getLogger(__name__)

STATUS: dict[type[NbllmError], int] = {
    InvalidRequest: 400,
    NotFound: 404,
    Cancelled: 499,
    ServerBusy: 503,
    ServerUnreachable: 502,
    ConfigError: 500,
    TemplateError: 500,
    ModelLoadError: 500,
    EngineError: 500,
    PullError: 500,
    StoreError: 500,
    NbllmError: 500,
}
"""Status code of each error class; subclasses inherit their nearest listed ancestor's."""


def status_for(exc: BaseException) -> int:
    """HTTP status of an exception, by walking its class hierarchy."""
    for cls in type(exc).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return 500


def message_for(exc: BaseException) -> str:
    """The message a client sees."""
    if isinstance(exc, NbllmError):
        return exc.message
    return f"internal error: {type(exc).__name__}: {exc}"


def error_response(exc: BaseException) -> Response:
    """``{"error": message}`` with the mapped status."""
    status = status_for(exc)
    if status >= 500:
        log.error("request failed: %s", message_for(exc), exc_info=not isinstance(exc, NbllmError))
    return JSONResponse({"error": message_for(exc)}, status_code=status)


def error_line(exc: BaseException) -> str:
    """A failure after the stream started: one last NDJSON line (ollama-python raises on it)."""
    if status_for(exc) >= 500:
        log.error("stream failed: %s", message_for(exc), exc_info=not isinstance(exc, NbllmError))
    return json.dumps({"error": message_for(exc)}) + "\n"


async def handle_nbllm_error(request: Request, exc: Exception) -> Response:
    """Starlette exception handler for NbllmError (and anything else that escapes a route)."""
    return error_response(exc)
