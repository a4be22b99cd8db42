"""Typed, HTTP-agnostic errors of nbllm.

The hierarchy::

    NbllmError
     ├── InvalidRequest            a request that can never succeed as sent (400)
     │    ├── InvalidModelName     a name that does not parse, or could escape the store
     │    ├── InvalidOption        an option with the wrong type or value
     │    ├── UnsupportedCapability  tools/thinking/insert/... asked of a model without it
     │    ├── ContextLengthExceeded  the prompt does not fit num_ctx and truncation is off
     │    └── DigestMismatch       uploaded or downloaded bytes do not hash to the digest
     ├── NotFound                  (404)
     │    ├── ModelNotFound        no such model in the store
     │    └── BlobNotFound         no such blob in the store
     ├── ConfigError               a bad environment variable or setting
     ├── TemplateError             a chat template that does not parse or execute (500)
     ├── ModelLoadError            the engine could not load a model (500)
     ├── EngineError               the engine failed while generating (500)
     ├── PullError                 a download or a package index failed (500)
     │    └── RegistryUnreachable  no answer from the registry (DNS, connection, TLS)
     ├── PushError                 an upload to a registry failed (500)
     ├── StoreError                the model store could not be read or written (500)
     ├── ServerBusy                the request queue is full (503)
     ├── ServerUnreachable         the client could not reach a server
     └── Cancelled                 the client went away or interrupted (499)

Each message says what went wrong and, where there is one, what to do next.
Mapping to HTTP status codes lives in ``nbllm.server.errors`` and nowhere else.
"""

from __future__ import annotations

__all__ = [
    "BlobNotFound",
    "Cancelled",
    "ConfigError",
    "ContextLengthExceeded",
    "DigestMismatch",
    "EngineError",
    "InvalidModelName",
    "InvalidOption",
    "InvalidRequest",
    "ModelLoadError",
    "ModelNotFound",
    "NbllmError",
    "NotFound",
    "PullError",
    "PushError",
    "RegistryUnreachable",
    "ServerBusy",
    "ServerUnreachable",
    "StoreError",
    "TemplateError",
    "UnsupportedCapability",
]


class NbllmError(Exception):
    """Base class of every error nbllm raises on purpose."""

    status_code: int | None = None
    """The HTTP status a client received this error with (``nbllm.client``); None when raised in-process."""

    @property
    def message(self) -> str:
        """The human-readable message (what Ollama puts in ``{"error": ...}``)."""
        return str(self.args[0]) if self.args else type(self).__name__


class InvalidRequest(NbllmError):
    """The request is malformed or asks for something that cannot work."""


class InvalidModelName(InvalidRequest):
    """A model name that does not parse or could escape the model store."""


class InvalidOption(InvalidRequest):
    """An option value of the wrong type or out of range."""


class UnsupportedCapability(InvalidRequest):
    """The model lacks a capability the request needs (tools, thinking, insert, ...)."""


class ContextLengthExceeded(InvalidRequest):
    """The prompt does not fit into the context window and truncation was refused."""

    def __init__(self, prompt_tokens: int, n_ctx: int) -> None:
        super().__init__(
            f"the input length ({prompt_tokens} tokens) exceeds the context length ({n_ctx} tokens); "
            "raise num_ctx or allow truncation"
        )
        self.prompt_tokens = prompt_tokens
        self.n_ctx = n_ctx


class DigestMismatch(InvalidRequest):
    """Bytes did not hash to the digest they were promised under."""

    def __init__(self, expected: str, actual: str) -> None:
        super().__init__(f'digest mismatch, expected "{expected}", got "{actual}"')
        self.expected = expected
        self.actual = actual


class NotFound(NbllmError):
    """Something named in the request does not exist."""


class ModelNotFound(NotFound):
    """No model of that name in the store."""

    def __init__(self, name: str, *, hint: str = "", quote: str = "'") -> None:
        super().__init__(f"model {quote}{name}{quote} not found" + (f", {hint}" if hint else ""))
        self.name = name


class BlobNotFound(NotFound):
    """No blob with that digest in the store."""

    def __init__(self, digest: str) -> None:
        super().__init__(f'blob "{digest}" not found')
        self.digest = digest


class ConfigError(NbllmError):
    """An environment variable or setting has a value nbllm cannot use."""


class TemplateError(NbllmError):
    """A chat template failed to parse or to execute."""


class ModelLoadError(NbllmError):
    """The engine could not load a model file."""


class EngineError(NbllmError):
    """The engine failed while evaluating or generating."""


class PullError(NbllmError):
    """Downloading a model failed (index unreachable, file missing, bad archive, ...)."""


class RegistryUnreachable(PullError):
    """A model registry could not be reached (no network, DNS failure, refused connection)."""


class PushError(NbllmError):
    """Uploading a model to a registry failed (unreachable, refused, unauthorized, ...)."""


class StoreError(NbllmError):
    """The model store could not be read or written."""


class ServerBusy(NbllmError):
    """Too many requests are waiting; try again later."""


class ServerUnreachable(NbllmError):
    """No nbllm (or Ollama) server answers at the configured host."""


class Cancelled(NbllmError):
    """The request was cancelled (client disconnected or interrupted)."""
