"""The Ollama wire format as pydantic models: one contract for server, client, CLI and notebook."""

from __future__ import annotations

from nbllm.schema.chat import ChatRequest, ChatResponse
from nbllm.schema.common import (
    ErrorResponse,
    Message,
    Metrics,
    ModelDetails,
    Tool,
    ToolCall,
    ToolCallFunction,
    ToolFunction,
    format_timestamp,
    now_timestamp,
)
from nbllm.schema.embed import EmbeddingsRequest, EmbeddingsResponse, EmbedRequest, EmbedResponse
from nbllm.schema.generate import GenerateRequest, GenerateResponse, Logprob, TokenLogprob
from nbllm.schema.models import (
    CopyRequest,
    CreateRequest,
    DeleteRequest,
    ListResponse,
    ModelSummary,
    ProcessModel,
    ProcessResponse,
    ProgressResponse,
    PullRequest,
    ShowRequest,
    ShowResponse,
    StatusResponse,
    VersionResponse,
)
from nbllm.schema.registry import PushRequest

__all__ = [
    "ChatRequest",
    "ChatResponse",
    "CopyRequest",
    "CreateRequest",
    "DeleteRequest",
    "EmbedRequest",
    "EmbedResponse",
    "EmbeddingsRequest",
    "EmbeddingsResponse",
    "ErrorResponse",
    "GenerateRequest",
    "GenerateResponse",
    "ListResponse",
    "Logprob",
    "Message",
    "Metrics",
    "ModelDetails",
    "ModelSummary",
    "ProcessModel",
    "ProcessResponse",
    "ProgressResponse",
    "PullRequest",
    "PushRequest",
    "ShowRequest",
    "ShowResponse",
    "StatusResponse",
    "TokenLogprob",
    "Tool",
    "ToolCall",
    "ToolCallFunction",
    "ToolFunction",
    "VersionResponse",
    "format_timestamp",
    "now_timestamp",
]
