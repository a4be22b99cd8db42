"""The server's OpenAPI document (``/openapi.json``, ``/docs``), corrected to say what the server really does.

FastAPI derives the request and response bodies from the pydantic models of ``nbllm.schema``, which
is most of the contract. Four things it gets wrong are fixed here, so that a client generator or a
property-based fuzzer (``tests/fuzz``) reads the truth:

- a bad request body is answered ``400 {"error": ...}`` as Ollama does, not FastAPI's ``422``
  ``detail`` list; every operation lists the error answers it can give, in its API family's shape;
- routes answering both GET and HEAD get one operation id per method (FastAPI reuses one);
- ``POST /api/blobs/{digest}`` takes the raw bytes of the blob, which FastAPI cannot see;
- with ``NBLLM_API_KEY`` set, every operation requires the bearer key.
"""

from __future__ import annotations

import re
import warnings
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from nbllm.schema.common import ErrorResponse

__all__ = ["install_openapi", "openapi_document"]

_OPENAI_ERROR: dict[str, Any] = {
    "type": "object",
    "title": "OpenAIError",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type"],
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "param": {"type": ["string", "null"]},
                "code": {"type": ["string", "null"]},
            },
        }
    },
}
_ERRORS = {
    "400": "Bad request: invalid JSON, a field of the wrong type, an invalid model name or option.",
    "404": "Model or blob not found.",
    "500": "The model could not be loaded or run, or the store could not be written.",
    "503": "Too many requests waiting (OLLAMA_MAX_QUEUE).",
}
_AUTH_ERROR = "Missing or wrong API key (NBLLM_API_KEY)."
_BLOB_BODY = {
    "required": True,
    "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
}


def _error_content(path: str) -> dict[str, Any]:
    ref = "#/components/schemas/OpenAIError" if path.startswith("/v1/") else "#/components/schemas/ErrorResponse"
    return {"application/json": {"schema": {"$ref": ref}}}


def _fix_operation(path: str, method: str, op: dict[str, Any], *, api_key: bool) -> None:
    slug = re.sub(r"[^A-Za-z0-9]+", "_", path).strip("_") or "root"
    op["operationId"] = f"{method}_{slug}"
    responses: dict[str, Any] = op.setdefault("responses", {})
    responses.pop("422", None)
    for code, text in _ERRORS.items():
        if code not in responses:
            responses[code] = {"description": text, "content": _error_content(path)}
    if api_key:
        op["security"] = [{"bearer": []}]
        responses["401"] = {"description": _AUTH_ERROR, "content": _error_content(path)}
    if path == "/api/blobs/{digest}" and method == "post":
        op["requestBody"] = _BLOB_BODY


def openapi_document(app: FastAPI, *, api_key: bool = False) -> dict[str, Any]:
    """FastAPI's document for ``app`` with the corrections above."""
    with warnings.catch_warnings():  # the duplicate GET/HEAD operation ids are replaced below
        warnings.filterwarnings("ignore", message="Duplicate Operation ID", category=UserWarning)
        doc = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    for path, operations in doc.get("paths", {}).items():
        for method, op in operations.items():
            _fix_operation(path, method, op, api_key=api_key)
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    schemas["ErrorResponse"] = ErrorResponse.model_json_schema()
    schemas["OpenAIError"] = _OPENAI_ERROR
    if api_key:
        doc["components"]["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
    return doc


def install_openapi(app: FastAPI, *, api_key: bool = False) -> None:
    """Make ``app.openapi()`` (and so ``/openapi.json``) return :func:`openapi_document`, built once."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = openapi_document(app, api_key=api_key)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
