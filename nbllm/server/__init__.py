"""The HTTP edge: Ollama's REST API over a Runtime, in the foreground or a background thread."""

from __future__ import annotations

from nbllm.server.app import create_app
from nbllm.server.thread import BackgroundServer

__all__ = ["BackgroundServer", "create_app"]
