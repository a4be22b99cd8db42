"""``nbllm push``: upload a model to a registry (``pull --insecure`` lives with the other model commands)."""

from __future__ import annotations

import click

from nbllm.cli.backend import connect
from nbllm.cli.main import cli
from nbllm.cli.progress import render_progress

__all__ = ["push"]


@cli.command()
@click.argument("model")
@click.option("--insecure", is_flag=True, help="Use an insecure registry")
def push(model: str, *, insecure: bool) -> None:
    """Push a model to a registry."""
    render_progress(connect().push(model, insecure=insecure))
