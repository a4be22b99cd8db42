"""``POST /api/embed`` and the legacy ``POST /api/embeddings``."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from nbllm.schema.common import RequestModel, ResponseModel

__all__ = ["EmbedRequest", "EmbedResponse", "EmbeddingsRequest", "EmbeddingsResponse"]


class EmbedRequest(RequestModel):
    """Body of ``/api/embed``."""

    model: str = ""
    """Model name."""
    input: Any = None
    """A string or a list of strings to embed."""
    truncate: bool | None = None
    """Cut inputs longer than the context (default true); false makes them an error."""
    dimensions: int | None = None
    """Keep only the first N dimensions (then re-normalise)."""
    keep_alive: str | float | None = None
    """How long the model stays loaded after this request."""
    options: dict[str, Any] | None = None
    """Model options."""


class EmbedResponse(ResponseModel):
    """Body of ``/api/embed``: L2-normalised vectors, one per input."""

    model: str
    """Model name as requested."""
    embeddings: list[list[float]] = Field(default_factory=list)
    """One vector per input."""
    total_duration: int | None = None
    """Whole request, nanoseconds."""
    load_duration: int | None = None
    """Getting the model ready, nanoseconds."""
    prompt_eval_count: int | None = None
    """Tokens embedded."""


class EmbeddingsRequest(RequestModel):
    """Body of the legacy ``/api/embeddings``."""

    model: str = ""
    """Model name."""
    prompt: str = ""
    """Text to embed."""
    keep_alive: str | float | None = None
    """How long the model stays loaded after this request."""
    options: dict[str, Any] | None = None
    """Model options."""


class EmbeddingsResponse(ResponseModel):
    """Body of the legacy ``/api/embeddings`` (not normalised)."""

    embedding: list[float] = Field(default_factory=list)
    """The vector."""
