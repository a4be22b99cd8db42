"""Single source of nbllm's version."""

from __future__ import annotations

__version__ = "0.1.0"

OLLAMA_API_VERSION = "0.12.11"
"""The Ollama release whose API nbllm speaks (clients gate features on ``/api/version``)."""
