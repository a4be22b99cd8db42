"""``nbllm run MODEL [PROMPT]``: pull if missing, then answer one prompt (or chat interactively)."""

from __future__ import annotations

import sys

import click

from nbllm.cli.backend import connect
from nbllm.cli.main import cli
from nbllm.cli.progress import render_progress
from nbllm.client import BaseClient
from nbllm.errors import NotFound

__all__ = ["ensure_model", "run"]


def ensure_model(client: BaseClient, model: str, *, insecure: bool = False) -> None:
    """Pull the model first if the backend does not have it (as ``ollama run`` does)."""
    try:
        client.show(model)
    except NotFound:
        render_progress(client.pull(model, insecure=insecure))


@cli.command(context_settings={"ignore_unknown_options": False})
@click.argument("model")
@click.argument("prompt", nargs=-1)
@click.option("--format", "fmt", default=None, help="Response format (e.g. json)")
@click.option("--keepalive", default=None, help="Duration to keep a model loaded (e.g. 5m)")
@click.option("--nowordwrap", is_flag=True, help="Don't wrap words to the next line automatically")
@click.option("--verbose", is_flag=True, help="Show timings for response")
@click.option("--insecure", is_flag=True, help="Use an insecure registry")
@click.option(
    "--think", default=None, is_flag=False, flag_value="true", help="Enable thinking (true|false|low|medium|high)"
)
def run(
    model: str,
    prompt: tuple[str, ...],
    fmt: str | None,
    keepalive: str | None,
    *,
    nowordwrap: bool,
    verbose: bool,
    insecure: bool,
    think: str | None,
) -> None:
    """Run a model."""
    from nbllm.cli.session import RunOptions, generate_once, interactive

    client = connect()
    ensure_model(client, model, insecure=insecure)
    text = " ".join(prompt)
    if not sys.stdin.isatty():
        piped = sys.stdin.read()
        text = f"{piped} {text}".strip() if text else piped
    options = RunOptions(
        model=model, format=fmt, keep_alive=keepalive, wordwrap=not nowordwrap, verbose=verbose, think=think
    )
    if text or not sys.stdin.isatty():
        generate_once(client, options, text)
    else:
        interactive(client, options)
