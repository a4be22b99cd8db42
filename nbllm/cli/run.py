"""``nbllm run MODEL [PROMPT]``: pull if missing, then answer one prompt or chat at the ``>>>`` prompt."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import click

from nbllm.cli.backend import connect
from nbllm.cli.main import cli
from nbllm.cli.progress import render_progress
from nbllm.errors import NotFound

if TYPE_CHECKING:
    from nbllm.client import BaseClient
    from nbllm.schema import ShowResponse

__all__ = ["ensure_model", "run"]


def ensure_model(client: BaseClient, model: str, *, insecure: bool = False) -> ShowResponse:
    """The model's details, pulling it first if the backend does not have it (as ``ollama run`` does)."""
    try:
        return client.show(model)
    except NotFound:
        render_progress(client.pull(model, insecure=insecure))
        return client.show(model)


@cli.command(use="run MODEL [PROMPT]", env=("OLLAMA_HOST", "OLLAMA_NOHISTORY"))
@click.argument("model")
@click.argument("prompt", nargs=-1)
@click.option("--format", "fmt", default=None, help="Response format (e.g. json)")
@click.option("--keepalive", default=None, help="Duration to keep a model loaded (e.g. 5m)")
@click.option("--nowordwrap", is_flag=True, help="Don't wrap words to the next line automatically")
@click.option("--verbose", is_flag=True, help="Show timings for response")
@click.option("--insecure", is_flag=True, help="Use an insecure registry")
@click.option("--think", is_flag=False, flag_value="true", help="Enable thinking mode: true/false or high/medium/low")
@click.option("--hidethinking", is_flag=True, help="Hide thinking output (if provided)")
def run(
    model: str, prompt: tuple[str, ...], fmt: str | None, keepalive: str | None, think: str | None, **flags: bool
) -> None:
    """Run a model."""
    from nbllm.cli.session import keep_alive_value, think_value
    from nbllm.cli.turn import RunOptions, generate_once, load_model
    from nbllm.config import Settings

    settings = Settings.from_env()
    opts = RunOptions(
        model=model,
        format=fmt,
        keep_alive=keep_alive_value(keepalive),
        think=think_value(think),
        wordwrap=not flags["nowordwrap"],
        verbose=flags["verbose"],
        hide_thinking=flags["hidethinking"],
    )
    opts.format_value()  # a bad --format is an error before anything loads
    client = connect(settings=settings)
    info = ensure_model(client, model, insecure=flags["insecure"])
    text = " ".join(prompt)
    if not sys.stdin.isatty():  # piped input comes first, then the prompt words (as Ollama)
        text = " ".join(t for t in (sys.stdin.read(), text) if t)
    if text or not (sys.stdin.isatty() and sys.stdout.isatty()):
        generate_once(client, opts, text)
        return
    from nbllm.cli.lineeditor import LineReader
    from nbllm.cli.session import Session
    from nbllm.cli.slash import dispatch

    load_model(client, opts)
    reader = LineReader(settings.home / "history", history=not settings.nohistory)
    Session(client, opts, reader, dispatch).run(info)
