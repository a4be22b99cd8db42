"""The ``nbllm`` command line."""

from __future__ import annotations

from nbllm.cli import models, run, serve
from nbllm.cli.main import cli, main

__all__ = ["cli", "main", "models", "run", "serve"]
