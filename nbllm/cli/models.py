"""Model commands: pull, list, show, cp, rm, ps, stop — output laid out as Ollama's."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timezone
from typing import TYPE_CHECKING

import click

from nbllm.cli.backend import connect
from nbllm.cli.main import cli
from nbllm.cli.progress import render_progress
from nbllm.errors import InvalidRequest, NbllmError, NotFound
from nbllm.humanize import human_bytes, human_time, table

if TYPE_CHECKING:
    from nbllm.client import BaseClient
    from nbllm.schema import ModelSummary, ProcessModel

__all__ = ["copy", "list_models", "list_rows", "ps", "ps_rows", "pull", "remove", "show", "stop"]


def list_rows(models: Sequence[ModelSummary], prefix: str | None = None) -> list[list[str]]:
    """``NAME ID SIZE MODIFIED`` rows; a prefix filters names (ignoring case), as ``ollama list PREFIX``."""
    return [
        [m.name, m.digest[:12], human_bytes(m.size), human_time(datetime.fromisoformat(m.modified_at))]
        for m in models
        if not prefix or m.name.lower().startswith(prefix.lower())
    ]


def ps_rows(models: Sequence[ProcessModel], now: datetime | None = None) -> list[list[str]]:
    """``NAME ID SIZE PROCESSOR UNTIL`` rows: ``Forever``, ``4 minutes from now``, ``Stopping...``."""
    from nbllm.service import processor_text

    now = now or datetime.now(timezone.utc)
    rows = []
    for m in models:
        expires = datetime.fromisoformat(m.expires_at)
        until = "Stopping..." if expires <= now else human_time(expires, now)
        processor = processor_text(m)
        rows.append([m.name, m.digest[:12], human_bytes(m.size), processor, until])
    return rows


def _unload(client: BaseClient, model: str) -> None:
    """Ask the backend to unload a model now (an empty request with ``keep_alive: 0``)."""
    from nbllm.schema import GenerateRequest

    for _ in client.generate(GenerateRequest(model=model, keep_alive=0)):
        pass


@cli.command(use="pull MODEL")
@click.argument("model")
@click.option("--insecure", is_flag=True, help="Use an insecure registry")
def pull(model: str, *, insecure: bool) -> None:
    """Pull a model from a registry."""
    render_progress(connect().pull(model, insecure=insecure))


@cli.command("list", use="list", aliases=("ls",))
@click.argument("prefix", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print the /api/tags JSON")
def list_models(prefix: str | None, *, as_json: bool) -> None:
    """List models."""
    resp = connect().list_models()
    if as_json:
        resp.models = [m for m in resp.models if not prefix or m.name.lower().startswith(prefix.lower())]
        click.echo(resp.model_dump_json(indent=2, exclude_none=True))
        return
    click.echo(table(["NAME", "ID", "SIZE", "MODIFIED"], list_rows(resp.models, prefix)))


@cli.command(use="show MODEL")
@click.argument("model")
@click.option("--license", "show_license", is_flag=True, help="Show license of a model")
@click.option("--modelfile", is_flag=True, help="Show Modelfile of a model")
@click.option("--parameters", is_flag=True, help="Show parameters of a model")
@click.option("--template", is_flag=True, help="Show template of a model")
@click.option("--system", is_flag=True, help="Show system message of a model")
@click.option("-v", "--verbose", is_flag=True, help="Show detailed model information")
@click.option("--json", "as_json", is_flag=True, help="Print the /api/show JSON")
def show(model: str, **flags: bool) -> None:
    """Show information for a model."""
    from nbllm.cli.show import format_show

    picked = [f for f in ("show_license", "modelfile", "parameters", "system", "template") if flags[f]]
    if len(picked) > 1:
        raise InvalidRequest(
            "only one of '--license', '--modelfile', '--parameters', '--system', or '--template' can be specified"
        )
    resp = connect().show(model, verbose=flags["verbose"])
    if flags["as_json"]:
        click.echo(resp.model_dump_json(indent=2, exclude_none=True))
        return
    text = format_show(resp, flags)
    click.echo(text, nl=not (picked and picked[0] in ("system", "template")))  # Ollama prints those as they are


@cli.command("cp", use="cp SOURCE DESTINATION")
@click.argument("source")
@click.argument("destination")
def copy(source: str, destination: str) -> None:
    """Copy a model."""
    connect().copy(source, destination)
    click.echo(f"copied '{source}' to '{destination}'")


@cli.command("rm", use="rm MODEL [MODEL...]")
@click.argument("models", nargs=-1, required=True)
def remove(models: tuple[str, ...]) -> None:
    """Remove a model."""
    client = connect()
    for model in models:
        try:  # unload it first, as Ollama does
            _unload(client, model)
        except NotFound:
            pass
        except NbllmError:
            click.echo(f"Warning: unable to stop model '{model}'", err=True)
        client.delete(model)
        click.echo(f"deleted '{model}'")


@cli.command(use="ps")
@click.argument("prefix", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print the /api/ps JSON")
def ps(prefix: str | None, *, as_json: bool) -> None:
    """List running models."""
    resp = connect(local_ok=False).ps()
    resp.models = [m for m in resp.models if not prefix or m.name.startswith(prefix)]
    if as_json:
        click.echo(resp.model_dump_json(indent=2, exclude_none=True))
        return
    click.echo(table(["NAME", "ID", "SIZE", "PROCESSOR", "UNTIL"], ps_rows(resp.models)))


@cli.command(use="stop MODEL")
@click.argument("model")
def stop(model: str) -> None:
    """Stop a running model."""
    from nbllm.store import ModelName

    client = connect(local_ok=False)
    wanted = ModelName.parse(model).key()
    if not any(ModelName.parse(m.name).key() == wanted for m in client.ps().models):
        try:
            client.show(model)
        except NotFound:
            raise NotFound(f'couldn\'t find model "{model}" to stop') from None
        raise InvalidRequest(f'model "{model}" is not running')
    _unload(client, model)
