"""Backend URLs: ``openai+http://host:8000/v1`` (OpenAI-compatible) or ``http://host:11434`` (Ollama API)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import httpx

from nbllm.backends.base import Backend, BackendError
from nbllm.backends.ollama import OllamaBackend
from nbllm.backends.openai import OpenAIBackend
from nbllm.config import Settings, parse_host, read_secret

if TYPE_CHECKING:
    from nbllm.runtime import Runtime

__all__ = ["DEFAULT_API_KEY_ENV", "LOCAL", "BackendURL", "open_backend", "parse_backend_url"]

LOCAL = "local"
"""The target that means nbllm in this process (no HTTP): :class:`~nbllm.backends.local.LocalBackend`."""

DEFAULT_API_KEY_ENV = "OPENAI_API_KEY"
"""Where an OpenAI-compatible backend's key is read from unless another variable is named."""


@dataclass(frozen=True)
class BackendURL:
    """A parsed backend URL: which API and the base URL its paths hang under."""

    kind: Literal["ollama", "openai"]
    base: str


def parse_backend_url(url: str) -> BackendURL:
    """Parse ``[ollama+|openai+]URL``; a plain host or URL is an Ollama-API host, as ``OLLAMA_HOST``.

    >>> parse_backend_url("openai+http://127.0.0.1:8000/v1")
    BackendURL(kind='openai', base='http://127.0.0.1:8000/v1')
    >>> parse_backend_url("openai+http://gpu1:8000")  # no path: /v1, as OpenAI clients expect
    BackendURL(kind='openai', base='http://gpu1:8000/v1')
    >>> parse_backend_url("http://127.0.0.1:11434")
    BackendURL(kind='ollama', base='http://127.0.0.1:11434')
    >>> parse_backend_url("gpu2:11500")
    BackendURL(kind='ollama', base='http://gpu2:11500')
    """
    text = url.strip()
    kind: Literal["ollama", "openai"] = "ollama"
    scheme, plus, rest = text.partition("+")
    if plus and scheme in ("openai", "ollama") and "://" in rest:
        kind, text = ("openai" if scheme == "openai" else "ollama"), rest
    try:
        address = parse_host(text)
    except ValueError as exc:
        raise BackendError(f"invalid backend URL {url!r}: {exc} (e.g. openai+http://host:8000/v1)") from None
    if kind == "openai" and not address.path.strip("/"):
        return BackendURL(kind, f"{address.url}/v1")
    return BackendURL(kind, address.url)


def open_backend(
    url: str,
    *,
    settings: Settings | None = None,
    api_key_env: str | None = DEFAULT_API_KEY_ENV,
    timeout: float = 600.0,
    transport: httpx.AsyncBaseTransport | None = None,
    runtime: Runtime | None = None,
) -> Backend:
    """A backend for ``url``; close it with ``await backend.aclose()``.

    ``local`` is ``runtime``'s engine in this process. An OpenAI-compatible backend sends the key in
    ``api_key_env`` (else nbllm's own NBLLM_API_KEY); an Ollama-API backend sends NBLLM_API_KEY when
    it is set, as nbllm's client does.
    """
    if url.strip() == LOCAL:
        if runtime is None:
            raise BackendError("the 'local' backend runs in a process with an nbllm runtime (none was given)")
        from nbllm.backends.local import LocalBackend  # the service layer, imported when it is used

        return LocalBackend(runtime)
    parsed = parse_backend_url(url)
    own_key = settings.api_key if settings is not None else None
    if parsed.kind == "openai":
        key = (read_secret(api_key_env) if api_key_env else None) or own_key
        return OpenAIBackend(parsed.base, api_key=key, timeout=timeout, transport=transport)
    return OllamaBackend(parsed.base, api_key=own_key, timeout=timeout, transport=transport)
