"""Model-management endpoints: tags, show, ps, pull, copy, delete, version."""

from __future__ import annotations

from typing import Any

from pydantic import Field, model_validator

from nbllm.schema.common import Message, ModelDetails, RequestModel, ResponseModel

__all__ = [
    "CopyRequest",
    "CreateRequest",
    "DeleteRequest",
    "ListResponse",
    "ModelSummary",
    "ProcessModel",
    "ProcessResponse",
    "ProgressResponse",
    "PullRequest",
    "ShowRequest",
    "ShowResponse",
    "StatusResponse",
    "VersionResponse",
]


class _NamedRequest(RequestModel):
    """A request naming a model in ``model`` (or the deprecated ``name``)."""

    model: str = ""
    """Model name."""
    name: str = ""
    """Deprecated alias of ``model``."""

    @model_validator(mode="after")
    def _alias(self) -> _NamedRequest:
        if not self.model and self.name:
            self.model = self.name
        return self


class ModelSummary(ResponseModel):
    """One local model in ``/api/tags``."""

    name: str
    """Display name (``smollm2:135m``)."""
    model: str
    """Same as ``name``."""
    modified_at: str
    """When the manifest was written (RFC 3339)."""
    size: int
    """Bytes of all layers."""
    digest: str
    """sha256 of the manifest file (hex)."""
    details: ModelDetails
    """Format, family, parameter size, quantization."""
    capabilities: list[str] | None = None
    """``completion``, ``tools``, ``embedding``, ..."""


class ListResponse(ResponseModel):
    """Body of ``GET /api/tags``."""

    models: list[ModelSummary] = Field(default_factory=list)
    """Local models, newest first."""


class ShowRequest(_NamedRequest):
    """Body of ``POST /api/show``."""

    verbose: bool = False
    """Include long arrays in ``model_info`` and the tensor list."""
    system: str | None = None
    """System prompt to show in place of the model's."""
    template: str | None = None
    """Deprecated template override."""
    options: dict[str, Any] | None = None
    """Parameters merged into the shown Modelfile."""


class ShowResponse(ResponseModel):
    """Body of ``POST /api/show``."""

    license: str | None = None
    """License text."""
    modelfile: str = ""
    """A Modelfile that recreates the model."""
    parameters: str | None = None
    """Parameters, one ``name value`` per line."""
    template: str | None = None
    """Prompt template."""
    system: str | None = None
    """Default system prompt."""
    details: ModelDetails = Field(default_factory=ModelDetails)
    """Format, family, parameter size, quantization."""
    messages: list[Message] | None = None
    """Messages baked into the model."""
    model_info: dict[str, Any] = Field(default_factory=dict)
    """GGUF metadata (architecture, context length, tokenizer, ...)."""
    tensors: list[dict[str, Any]] | None = None
    """Tensor names, types and shapes (verbose only)."""
    capabilities: list[str] = Field(default_factory=list)
    """``completion``, ``tools``, ``insert``, ``embedding``, ..."""
    modified_at: str | None = None
    """When the manifest was written."""


class ProcessModel(ResponseModel):
    """One loaded model in ``/api/ps``."""

    name: str
    """Display name."""
    model: str
    """Same as ``name``."""
    size: int
    """Bytes the loaded model takes (weights + context)."""
    digest: str
    """Manifest digest (hex)."""
    details: ModelDetails
    """Format, family, parameter size, quantization."""
    expires_at: str
    """When it unloads if left idle (RFC 3339)."""
    size_vram: int
    """Bytes of ``size`` that live in GPU memory."""
    context_length: int
    """Context length per request slot."""
    processor: str | None = None
    """nbllm extension: ``100% CPU``, ``100% GPU`` or ``48%/52% CPU/GPU``."""
    devices: list[str] | None = None
    """nbllm extension: llama.cpp's devices it runs on (``CUDA0``, ``Metal``, ``CPU``)."""
    active_requests: int | None = None
    """nbllm extension: requests being generated now."""
    queued_requests: int | None = None
    """nbllm extension: requests waiting for this model."""
    prompt_cache: dict[str, int] | None = None
    """nbllm extension: its RAM prompt cache (``entries``, ``bytes``, ``budget``, ``hits``, ``misses``) and KV
    snapshots (``snapshots``, ``snapshot_hits``, ``snapshot_refused``, ``snapshot_writes``); docs/kv-snapshots.md."""


class ProcessResponse(ResponseModel):
    """Body of ``GET /api/ps``."""

    models: list[ProcessModel] = Field(default_factory=list)
    """Loaded models, longest remaining time first."""


class PullRequest(_NamedRequest):
    """Body of ``POST /api/pull``."""

    insecure: bool = False
    """Allow plain-HTTP registries."""
    stream: bool = True
    """Stream progress (default) or return only the final status."""


class ProgressResponse(ResponseModel):
    """One progress line of pull/push/create."""

    status: str
    """What is happening (``pulling manifest``, ``pulling 4134f3eb0516``, ``success``)."""
    digest: str | None = None
    """The layer being transferred."""
    total: int | None = None
    """Bytes to transfer for this layer."""
    completed: int | None = None
    """Bytes transferred so far."""


class StatusResponse(ResponseModel):
    """A bare status answer."""

    status: str | None = None
    """``success``."""


class CopyRequest(RequestModel):
    """Body of ``POST /api/copy``."""

    source: str = ""
    """Existing model name."""
    destination: str = ""
    """New name."""


class DeleteRequest(_NamedRequest):
    """Body of ``DELETE /api/delete``."""


class VersionResponse(ResponseModel):
    """Body of ``GET /api/version``."""

    version: str
    """The Ollama API version the server speaks."""
    nbllm: str | None = None
    """nbllm's own version (absent on a real Ollama)."""


class CreateRequest(RequestModel):
    """Body of ``POST /api/create`` (Ollama's JSON form, since 0.5.5)."""

    model: str = ""
    """Name of the model to create."""
    name: str = ""
    """Deprecated alias of ``model``."""
    from_: str | None = Field(default=None, alias="from")
    """Existing model to base this one on."""
    files: dict[str, str] | None = None
    """``{filename: "sha256:<hex>"}`` of blobs uploaded with ``/api/blobs``."""
    adapters: dict[str, str] | None = None
    """LoRA adapters, ``{filename: digest}``."""
    draft_files: dict[str, str] | None = None
    """A draft model for speculative decoding (same vocabulary), ``{filename: digest}`` of an uploaded GGUF."""
    draft_quantize: str | None = None
    """Quantization type for the draft model (from an F16/BF16/F32 draft)."""
    draft: str | None = None
    """nbllm extra (Ollama names a draft only by its files): a local model whose weights become the draft."""
    template: str | None = None
    """Prompt template (Go text/template)."""
    license: str | list[str] | None = None
    """License text(s)."""
    system: str | None = None
    """System prompt."""
    parameters: dict[str, Any] | None = None
    """Default options."""
    messages: list[Message] | None = None
    """Messages baked into the model."""
    quantize: str | None = None
    """Quantization type (``q4_K_M``, ``q8_0``, ...)."""
    quantization: str | None = None
    """Deprecated alias of ``quantize``."""
    renderer: str | None = None
    """Name of a built-in prompt renderer (stored for Ollama; nbllm renders with the template)."""
    parser: str | None = None
    """Name of a built-in output parser (stored for Ollama; nbllm does not use it)."""
    requires: str | None = None
    """Minimum Ollama version the model needs (semver)."""
    stream: bool = True
    """Stream progress (default) or return only the final status."""

    @model_validator(mode="after")
    def _aliases(self) -> CreateRequest:
        if not self.model and self.name:
            self.model = self.name
        if not self.quantize and self.quantization:
            self.quantize = self.quantization
        return self
