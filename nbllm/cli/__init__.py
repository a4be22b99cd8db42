"""The ``nbllm`` command line."""

from __future__ import annotations

from nbllm.cli import bench, create, models, registry, run, serve, verify
from nbllm.cli.main import cli, main

__all__ = ["bench", "cli", "create", "main", "models", "registry", "run", "serve", "verify"]
