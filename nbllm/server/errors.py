"""The one table from nbllm's errors to HTTP status codes, and the one renderer of every error body.

A body takes the shape of the API family its path belongs to (:func:`family_of`): Ollama's
``{"error": message}`` under ``/api`` (and everywhere else), OpenAI's ``{"error": {"message", "type",
"param", "code"}}`` under ``/v1``, the registry protocol's ``{"errors": [{"code", "message", "detail"}]}``
under ``/v2``. Exception handlers, the routing errors, the security middleware and the routes all
build their bodies here.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from typing import Any, Literal

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
from nbllm.service.distribution import RegistryRefusal

__all__ = [
    "REGISTRY_HEADERS",
    "STATUS",
    "ErrorJSONResponse",
    "Family",
    "error_body",
    "error_bytes",
    "error_line",
    "error_response",
    "family_of",
    "handle_nbllm_error",
    "message_for",
    "openai_error_body",
    "openai_error_response",
    "render_error",
    "status_for",
]

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


_SURROGATE = re.compile("[\ud800-\udfff]")


class ErrorJSONResponse(JSONResponse):
    """A JSON response that always encodes: a lone surrogate (say, user text quoted in an error message)
    becomes U+FFFD, as Go's encoding/json writes it, where plain JSONResponse would fail with a 500."""

    def render(self, content: Any) -> bytes:
        """The body as UTF-8."""
        text = json.dumps(content, ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":"))
        try:
            return text.encode("utf-8")
        except UnicodeEncodeError:
            return _SURROGATE.sub("\ufffd", text).encode("utf-8")


def status_for(exc: BaseException) -> int:
    """HTTP status of an exception, by walking its class hierarchy."""
    for cls in type(exc).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return 500


def message_for(exc: BaseException) -> str:
    """The message a client sees (encodable as UTF-8: a lone surrogate a client sent is echoed as ``\\udXXX``)."""
    text = exc.message if isinstance(exc, NbllmError) else f"internal error: {type(exc).__name__}: {exc}"
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


Family = Literal["ollama", "openai", "registry"]
"""The API families, each with its own error shape."""

_OPENAI_TYPES = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    404: "not_found_error",
    413: "invalid_request_error",
}
_OPENAI_CODES = {401: "invalid_api_key"}
# the registry protocol's codes (distribution's errcode and spec), when the error carries none of its own
REGISTRY_HEADERS = {"Docker-Distribution-API-Version": "registry/2.0"}
"""Sent with every registry protocol answer, errors included."""
_REGISTRY_CODES = {401: "UNAUTHORIZED", 403: "DENIED", 404: "UNSUPPORTED", 405: "UNSUPPORTED", 413: "SIZE_INVALID"}


def family_of(path: str) -> Family:
    """The API family of a request path.

    >>> family_of("/api/chat"), family_of("/v1/models"), family_of("/v2/library/m/tags/list"), family_of("/")
    ('ollama', 'openai', 'registry', 'ollama')
    """
    if path.startswith("/v1/"):
        return "openai"
    if path.startswith("/v2/"):
        return "registry"
    return "ollama"


def error_body(
    family: Family, status: int, message: str, *, code: str | None = None, detail: Any = None
) -> dict[str, Any]:
    """The error body of ``family``; ``code`` and ``detail`` are the registry protocol's (``/v2``) own."""
    if family == "openai":
        kind = _OPENAI_TYPES.get(status, "api_error")
        return {"error": {"message": message, "type": kind, "param": None, "code": _OPENAI_CODES.get(status)}}
    if family == "registry":
        code = code or _REGISTRY_CODES.get(status, "UNKNOWN")
        return {"errors": [{"code": code, "message": message, "detail": detail}]}
    return {"error": message}


def render_error(
    path: str, exc: BaseException, *, status: int | None = None, headers: Mapping[str, str] | None = None
) -> Response:
    """The response to a failed request: the mapped status (or ``status``), the body of the path's family."""
    status = status_for(exc) if status is None else status
    if status >= 500:
        log.error("request failed: %s", message_for(exc), exc_info=not isinstance(exc, NbllmError))
    code, detail = (exc.code, exc.detail) if isinstance(exc, RegistryRefusal) else (None, None)
    family = family_of(path)
    body = error_body(family, status, message_for(exc), code=code, detail=detail)
    if family == "registry":
        headers = {**REGISTRY_HEADERS, **(headers or {})}
    return ErrorJSONResponse(body, status_code=status, headers=headers)


def error_bytes(path: str, status: int, message: str) -> bytes:
    """An error body as bytes, for the middleware that answers below the routes."""
    return bytes(ErrorJSONResponse(error_body(family_of(path), status, message)).body)


def error_response(exc: BaseException) -> Response:
    """Ollama's ``{"error": message}`` with the mapped status."""
    return render_error("/api", exc)


def error_line(exc: BaseException) -> str:
    """A failure after the stream started: one last NDJSON line with the status it would have had, as
    Ollama writes it (``{"error": ..., "status": ...}``; ollama-python raises on it)."""
    status = status_for(exc)
    if status >= 500:
        log.error("stream failed: %s", message_for(exc), exc_info=not isinstance(exc, NbllmError))
    return json.dumps({"error": message_for(exc), "status": status}) + "\n"


async def handle_nbllm_error(request: Request, exc: Exception) -> Response:
    """Starlette exception handler for NbllmError (and anything else that escapes a route)."""
    return render_error(request.url.path, exc)


def openai_error_body(exc: BaseException) -> dict[str, object]:
    """OpenAI's error object for an exception (``/v1`` routes)."""
    return error_body("openai", status_for(exc), message_for(exc))


def openai_error_response(exc: BaseException) -> Response:
    """An OpenAI-shaped error with the mapped status."""
    return render_error("/v1/", exc)
