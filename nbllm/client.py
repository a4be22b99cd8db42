"""Clients: ``Client`` speaks Ollama's REST API over HTTP; ``LocalClient`` runs the same calls in-process.

Both return the schema package's types, so the CLI and the notebook do not care which one they
hold. HTTP status codes are mapped back onto nbllm's error classes here, in one place.
"""

from __future__ import annotations

import abc
import json
import os
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal, TypeVar, overload

import httpx
from pydantic import BaseModel

from nbllm.config import Settings
from nbllm.errors import Cancelled, InvalidRequest, NbllmError, NotFound, ServerBusy, ServerUnreachable
from nbllm.schema import (
    ChatRequest,
    ChatResponse,
    CopyRequest,
    CreateRequest,
    DeleteRequest,
    GenerateRequest,
    GenerateResponse,
    ListResponse,
    ProcessResponse,
    ProgressResponse,
    PullRequest,
    PushRequest,
    ShowRequest,
    ShowResponse,
    VersionResponse,
)

__all__ = ["IN_PROCESS", "BaseClient", "Client", "LocalClient", "error_for_status", "stream_error"]

IN_PROCESS = "in-process"
"""The ``host`` of a :class:`LocalClient`: the answers come from this process's runtime."""

R = TypeVar("R", bound=BaseModel)

_BY_STATUS: dict[int, type[NbllmError]] = {
    400: InvalidRequest,
    404: NotFound,
    429: ServerBusy,
    499: Cancelled,
    502: ServerUnreachable,
    503: ServerBusy,
}


def error_for_status(status: int, message: str) -> NbllmError:
    """The nbllm error for an HTTP error answer, its status kept as ``status_code`` (the inverse of the
    server's table, ``nbllm.server.errors.STATUS``; any other 4xx is an InvalidRequest, the rest NbllmError).

    >>> exc = error_for_status(413, "request body too large")
    >>> type(exc).__name__, exc.status_code
    ('InvalidRequest', 413)
    """
    cls = _BY_STATUS.get(status) or (InvalidRequest if 400 <= status < 500 else NbllmError)
    exc = cls(message)
    exc.status_code = status
    return exc


def stream_error(data: dict[str, Any]) -> NbllmError:
    """The error of a line ``{"error": ..., "status": ...}`` that ends a stream after it started: the status
    it would have had before the first byte, as Ollama writes it; a line without one is a server failure (500)."""
    status = data.get("status")
    return error_for_status(status if isinstance(status, int) and 400 <= status < 600 else 500, str(data["error"]))


class BaseClient(abc.ABC):
    """The calls every client offers; ``stream=False`` collects a stream into one response."""

    host: str

    @abc.abstractmethod
    def heartbeat(self) -> bool:
        """Whether the backend answers."""

    @abc.abstractmethod
    def version(self) -> VersionResponse:
        """Versions of the backend."""

    @abc.abstractmethod
    def _generate(self, req: GenerateRequest) -> Iterator[GenerateResponse]:
        """Stream a completion."""

    @abc.abstractmethod
    def _chat(self, req: ChatRequest) -> Iterator[ChatResponse]:
        """Stream a chat answer."""

    @abc.abstractmethod
    def _pull(self, req: PullRequest) -> Iterator[ProgressResponse]:
        """Stream pull progress."""

    @abc.abstractmethod
    def _push(self, req: PushRequest) -> Iterator[ProgressResponse]:
        """Stream push progress."""

    @abc.abstractmethod
    def create(self, req: CreateRequest) -> Iterator[ProgressResponse]:
        """Create a model, with progress."""

    @abc.abstractmethod
    def list_models(self) -> ListResponse:
        """Local models."""

    @abc.abstractmethod
    def show(self, model: str, *, verbose: bool = False, system: str | None = None) -> ShowResponse:
        """Details of a model."""

    @abc.abstractmethod
    def ps(self) -> ProcessResponse:
        """Loaded models."""

    @abc.abstractmethod
    def copy(self, source: str, destination: str) -> None:
        """Copy a model."""

    @abc.abstractmethod
    def delete(self, model: str) -> None:
        """Delete a model."""

    @overload
    def generate(self, req: GenerateRequest, *, stream: Literal[True] = ...) -> Iterator[GenerateResponse]: ...
    @overload
    def generate(self, req: GenerateRequest, *, stream: Literal[False]) -> GenerateResponse: ...
    def generate(self, req: GenerateRequest, *, stream: bool = True) -> Iterator[GenerateResponse] | GenerateResponse:
        """Complete a prompt."""
        chunks = self._generate(req.model_copy(update={"stream": True}))
        if stream:
            return chunks
        from nbllm.service import collect_generate

        return collect_generate(chunks)

    @overload
    def chat(self, req: ChatRequest, *, stream: Literal[True] = ...) -> Iterator[ChatResponse]: ...
    @overload
    def chat(self, req: ChatRequest, *, stream: Literal[False]) -> ChatResponse: ...
    def chat(self, req: ChatRequest, *, stream: bool = True) -> Iterator[ChatResponse] | ChatResponse:
        """The assistant's next message."""
        chunks = self._chat(req.model_copy(update={"stream": True}))
        if stream:
            return chunks
        from nbllm.service import collect_chat

        return collect_chat(chunks)

    def pull(self, model: str, *, insecure: bool = False) -> Iterator[ProgressResponse]:
        """Download a model, with progress."""
        return self._pull(PullRequest(model=model, insecure=insecure))

    def push(self, model: str, *, insecure: bool = False) -> Iterator[ProgressResponse]:
        """Upload a model to the registry its name points at, with progress."""
        return self._push(PushRequest(model=model, insecure=insecure))

    def pull_all(self, model: str) -> ProgressResponse:
        """Download a model and return the final status."""
        return deque(self.pull(model), maxlen=1)[0]

    @abc.abstractmethod
    def has_blob(self, digest: str) -> bool:
        """Whether the server holds the blob ``sha256:<hex>``."""

    @abc.abstractmethod
    def _put_blob(self, chunks: Iterator[bytes], digest: str, size: int) -> None:
        """Send bytes to be stored as the blob ``digest`` (verified by the receiver)."""

    def create_blob(self, path: str | os.PathLike[str], progress: Callable[[int, int], None] | None = None) -> str:
        """Make a local file a blob on the server (``/api/blobs``) unless it is there; return its digest.

        ``progress(sent, total)`` follows the upload.
        """
        from nbllm.store.digest import digest_file

        file = Path(path)
        digest = digest_file(file)
        if not self.has_blob(digest):
            self._put_blob(_read_chunks(file, progress), digest, file.stat().st_size)
        return digest


class Client(BaseClient):
    """An HTTP client of an nbllm (or Ollama) server."""

    def __init__(
        self, host: str | None = None, *, timeout: float | None = None, settings: Settings | None = None
    ) -> None:
        from nbllm.config import parse_host

        settings = settings or Settings.from_env()
        self.host = parse_host(host).url if host else settings.host.url
        key = settings.api_key  # NBLLM_API_KEY: the server's key, sent as a bearer token
        headers = {"Authorization": f"Bearer {key.get_secret_value()}"} if key else {}
        self._http = httpx.Client(
            base_url=self.host, timeout=httpx.Timeout(timeout, connect=10.0), trust_env=False, headers=headers
        )

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def heartbeat(self) -> bool:
        """Whether a server answers at ``host`` (HEAD /)."""
        try:
            return self._http.head("/", timeout=2.0).status_code == 200
        except httpx.HTTPError:
            return False

    def _unreachable(self, exc: Exception) -> ServerUnreachable:
        return ServerUnreachable(
            f"could not connect to a server at {self.host}; is it running? (start one with `nbllm serve`)"
        )

    def _send(self, method: str, path: str, *, empty: str = "request failed", **kwargs: Any) -> httpx.Response:
        """One request: no answer is ServerUnreachable, an error answer its nbllm error (``empty``: its
        message when the body says nothing, as a HEAD's cannot)."""
        try:
            resp = self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from exc
        if resp.status_code >= 400:
            raise error_for_status(resp.status_code, _error_text(resp.text) if resp.text.strip() else empty)
        return resp

    def _request(self, method: str, path: str, body: BaseModel | None = None) -> httpx.Response:
        payload = body.model_dump_json(exclude_none=True, by_alias=True) if body is not None else None
        return self._send(method, path, content=payload, headers={"Content-Type": "application/json"})

    def _get(self, path: str, cls: type[R], body: BaseModel | None = None, method: str = "GET") -> R:
        return cls.model_validate_json(self._request(method, path, body).content)

    def _stream(self, path: str, body: BaseModel, cls: type[R]) -> Iterator[R]:
        payload = body.model_dump_json(exclude_none=True, by_alias=True)
        try:
            with self._http.stream("POST", path, content=payload, headers={"Content-Type": "application/json"}) as resp:
                if resp.status_code >= 400:
                    resp.read()
                    raise error_for_status(resp.status_code, _error_text(resp.text))
                for line in resp.iter_lines():
                    if not line.strip():
                        continue
                    data = json.loads(line)
                    if isinstance(data, dict) and "error" in data:
                        raise stream_error(data)
                    yield cls.model_validate(data)
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from exc

    def version(self) -> VersionResponse:
        """Server version."""
        return self._get("/api/version", VersionResponse)

    def _generate(self, req: GenerateRequest) -> Iterator[GenerateResponse]:
        return self._stream("/api/generate", req, GenerateResponse)

    def _chat(self, req: ChatRequest) -> Iterator[ChatResponse]:
        return self._stream("/api/chat", req, ChatResponse)

    def _pull(self, req: PullRequest) -> Iterator[ProgressResponse]:
        return self._stream("/api/pull", req, ProgressResponse)

    def _push(self, req: PushRequest) -> Iterator[ProgressResponse]:
        return self._stream("/api/push", req, ProgressResponse)

    def has_blob(self, digest: str) -> bool:
        """``HEAD /api/blobs/<digest>``."""
        try:
            self._send("HEAD", f"/api/blobs/{digest}", empty="invalid digest format")
        except NotFound:
            return False
        return True

    def _put_blob(self, chunks: Iterator[bytes], digest: str, size: int) -> None:
        headers = {"Content-Type": "application/octet-stream", "Content-Length": str(size)}
        self._send("POST", f"/api/blobs/{digest}", content=chunks, headers=headers)

    def create(self, req: CreateRequest) -> Iterator[ProgressResponse]:
        """Create a model on the server."""
        return self._stream("/api/create", req.model_copy(update={"stream": True}), ProgressResponse)

    def list_models(self) -> ListResponse:
        """Local models of the server."""
        return self._get("/api/tags", ListResponse)

    def show(self, model: str, *, verbose: bool = False, system: str | None = None) -> ShowResponse:
        """Details of a model."""
        return self._get("/api/show", ShowResponse, ShowRequest(model=model, verbose=verbose, system=system), "POST")

    def ps(self) -> ProcessResponse:
        """Loaded models."""
        return self._get("/api/ps", ProcessResponse)

    def copy(self, source: str, destination: str) -> None:
        """Copy a model."""
        self._request("POST", "/api/copy", CopyRequest(source=source, destination=destination))

    def delete(self, model: str) -> None:
        """Delete a model."""
        self._request("DELETE", "/api/delete", DeleteRequest(model=model))


def _error_text(text: str) -> str:
    try:
        data = json.loads(text)
    except ValueError:
        return text.strip() or "request failed"
    return str(data.get("error", text)) if isinstance(data, dict) else text


def _read_chunks(path: Path, progress: Callable[[int, int], None] | None) -> Iterator[bytes]:
    total = path.stat().st_size
    sent = 0
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            sent += len(chunk)
            if progress is not None:
                progress(sent, total)
            yield chunk


class LocalClient(BaseClient):
    """The same calls served in this process from a Runtime (no server needed)."""

    def __init__(self, runtime: Any) -> None:
        from nbllm import service  # the use cases, imported when a runtime is at hand (never at import time)
        from nbllm.service import blobs

        self.runtime = runtime
        self.host = IN_PROCESS
        self._service = service
        self._blobs = blobs

    def heartbeat(self) -> bool:
        """Always up."""
        return True

    def version(self) -> VersionResponse:
        """nbllm's version."""
        from nbllm._version import OLLAMA_API_VERSION

        return VersionResponse(version=OLLAMA_API_VERSION, nbllm=self.runtime.version)

    def _generate(self, req: GenerateRequest) -> Iterator[GenerateResponse]:
        return self._service.settled(self._service.generate(self.runtime, req))

    def _chat(self, req: ChatRequest) -> Iterator[ChatResponse]:
        return self._service.settled(self._service.chat(self.runtime, req))

    def _pull(self, req: PullRequest) -> Iterator[ProgressResponse]:
        return self._service.pull(self.runtime, req)

    def _push(self, req: PushRequest) -> Iterator[ProgressResponse]:
        return self._service.push(self.runtime, req)

    def create(self, req: CreateRequest) -> Iterator[ProgressResponse]:
        """Create a model."""
        return self._service.create_model(self.runtime, req)

    def list_models(self) -> ListResponse:
        """Local models."""
        return self._service.list_models(self.runtime)

    def show(self, model: str, *, verbose: bool = False, system: str | None = None) -> ShowResponse:
        """Details of a model."""
        return self._service.show(self.runtime, ShowRequest(model=model, verbose=verbose, system=system))

    def ps(self) -> ProcessResponse:
        """Loaded models (of this process)."""
        return self._service.ps(self.runtime)

    def copy(self, source: str, destination: str) -> None:
        """Copy a model."""
        self._service.copy_model(self.runtime, CopyRequest(source=source, destination=destination))

    def delete(self, model: str) -> None:
        """Delete a model."""
        self._service.delete_model(self.runtime, DeleteRequest(model=model))

    def has_blob(self, digest: str) -> bool:
        """Whether the store holds the blob."""
        return self._blobs.has_blob(self.runtime, digest)

    def _put_blob(self, chunks: Iterator[bytes], digest: str, size: int) -> None:
        self._blobs.put_blob(self.runtime, chunks, digest)
