"""Backends: places that answer chat/generate requests and stream tokens (Ollama API, OpenAI-compatible,
nbllm in this process).

``open_backend("openai+http://host:8000/v1")`` or ``open_backend("http://host:11434")`` gives a
:class:`Backend` whose ``stream(GenRequest)`` yields :class:`Token` events stamped with their
arrival time, then one :class:`StreamEnd` with the server's counts and timings.
"""

from __future__ import annotations

from nbllm.backends.base import Backend, BackendError, GenRequest, ServerTimings, StreamEnd, StreamEvent, Token
from nbllm.backends.ollama import OllamaBackend
from nbllm.backends.openai import OpenAIBackend
from nbllm.backends.url import DEFAULT_API_KEY_ENV, LOCAL, BackendURL, open_backend, parse_backend_url

__all__ = [
    "DEFAULT_API_KEY_ENV",
    "LOCAL",
    "Backend",
    "BackendError",
    "BackendURL",
    "GenRequest",
    "OllamaBackend",
    "OpenAIBackend",
    "ServerTimings",
    "StreamEnd",
    "StreamEvent",
    "Token",
    "open_backend",
    "parse_backend_url",
]
