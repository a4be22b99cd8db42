"""Prompt building: chat templates (Go text/template as Ollama uses, and GGUF Jinja), tool-call parsing."""

from __future__ import annotations
