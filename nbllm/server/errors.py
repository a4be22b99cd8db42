"""The one table from nbllm's errors to HTTP status codes, and the ``{"error": ...}`` renderer."""

from __future__ import annotations

import json
import logging
import re
from typing import Any

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

__all__ = [
    "STATUS",
    "ErrorJSONResponse",
    "error_line",
    "error_response",
    "handle_nbllm_error",
    "openai_error_body",
    "openai_error_response",
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


def error_response(exc: BaseException) -> Response:
    """``{"error": message}`` with the mapped status."""
    status = status_for(exc)
    if status >= 500:
        log.error("request failed: %s", message_for(exc), exc_info=not isinstance(exc, NbllmError))
    return ErrorJSONResponse({"error": message_for(exc)}, status_code=status)


def error_line(exc: BaseException) -> str:
    """A failure after the stream started: one last NDJSON line (ollama-python raises on it)."""
    if status_for(exc) >= 500:
        log.error("stream failed: %s", message_for(exc), exc_info=not isinstance(exc, NbllmError))
    return json.dumps({"error": message_for(exc)}) + "\n"


async def handle_nbllm_error(request: Request, exc: Exception) -> Response:
    """Starlette exception handler for NbllmError (and anything else that escapes a route)."""
    return error_response(exc)


_OPENAI_TYPES = {400: "invalid_request_error", 404: "not_found_error"}


def openai_error_body(exc: BaseException) -> dict[str, object]:
    """OpenAI's error object for an exception (``/v1`` routes)."""
    status = status_for(exc)
    kind = _OPENAI_TYPES.get(status, "api_error")
    return {"error": {"message": message_for(exc), "type": kind, "param": None, "code": None}}


def openai_error_response(exc: BaseException) -> Response:
    """An OpenAI-shaped error with the mapped status."""
    if status_for(exc) >= 500:
        log.error("request failed: %s", message_for(exc), exc_info=not isinstance(exc, NbllmError))
    return ErrorJSONResponse(openai_error_body(exc), status_code=status_for(exc))
