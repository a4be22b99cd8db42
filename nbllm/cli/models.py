"""Model commands: pull, list, show, cp, rm, ps, stop."""

from __future__ import annotations

import json
from datetime import datetime

import click

from nbllm.cli.backend import connect
from nbllm.cli.main import cli
from nbllm.cli.progress import render_progress
from nbllm.errors import NbllmError, NotFound
from nbllm.humanize import human_bytes, human_time, table

__all__ = ["copy", "list_models", "ps", "pull", "remove", "show", "stop"]


@cli.command()
@click.argument("model")
@click.option("--insecure", is_flag=True, help="Use an insecure registry")
def pull(model: str, *, insecure: bool) -> None:
    """Pull a model from a registry."""
    render_progress(connect().pull(model, insecure=insecure))


@cli.command("list")
@click.argument("prefix", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print the /api/tags JSON")
def list_models(prefix: str | None, *, as_json: bool) -> None:
    """List models."""
    models = connect().list_models().models
    if prefix:
        models = [m for m in models if m.name.startswith(prefix)]
    if as_json:
        click.echo(json.dumps([m.model_dump(exclude_none=True) for m in models], indent=2))
        return
    rows = [
        [m.name, m.digest[:12], human_bytes(m.size), human_time(datetime.fromisoformat(m.modified_at))] for m in models
    ]
    click.echo(table(["NAME", "ID", "SIZE", "MODIFIED"], rows))


cli.add_command(list_models, "ls")


@cli.command()
@click.argument("model")
@click.option("--license", "show_license", is_flag=True, help="Show license of a model")
@click.option("--modelfile", is_flag=True, help="Show Modelfile of a model")
@click.option("--parameters", is_flag=True, help="Show parameters of a model")
@click.option("--template", is_flag=True, help="Show template of a model")
@click.option("--system", is_flag=True, help="Show system message of a model")
@click.option("-v", "--verbose", is_flag=True, help="Show detailed model information")
def show(model: str, **flags: bool) -> None:
    """Show information for a model."""
    from nbllm.cli.show import format_show

    resp = connect().show(model, verbose=flags["verbose"])
    click.echo(format_show(resp, flags))


@cli.command("cp")
@click.argument("source")
@click.argument("destination")
def copy(source: str, destination: str) -> None:
    """Copy a model."""
    connect().copy(source, destination)
    click.echo(f"copied '{source}' to '{destination}'")


@cli.command("rm")
@click.argument("models", nargs=-1, required=True)
def remove(models: tuple[str, ...]) -> None:
    """Remove a model."""
    client = connect()
    for model in models:
        _unload_quietly(client, model)
        client.delete(model)
        click.echo(f"deleted '{model}'")


def _unload_quietly(client: object, model: str) -> None:
    from nbllm.client import Client
    from nbllm.schema import GenerateRequest

    if isinstance(client, Client):
        try:
            for _ in client.generate(GenerateRequest(model=model, keep_alive=0)):
                pass
        except NbllmError:
            pass


@cli.command()
@click.argument("prefix", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print the /api/ps JSON")
def ps(prefix: str | None, *, as_json: bool) -> None:
    """List running models."""
    from nbllm.service import processor_label

    models = connect(local_ok=False).ps().models
    if prefix:
        models = [m for m in models if m.name.startswith(prefix)]
    if as_json:
        click.echo(json.dumps([m.model_dump(exclude_none=True) for m in models], indent=2))
        return
    rows = []
    for m in models:
        until = human_time(datetime.fromisoformat(m.expires_at))
        if datetime.fromisoformat(m.expires_at) <= datetime.now().astimezone() and not m.active_requests:
            until = "Stopping..."
        rows.append(
            [m.name, m.digest[:12], human_bytes(m.size), m.processor or processor_label(m.size, m.size_vram), until]
        )
    click.echo(table(["NAME", "ID", "SIZE", "PROCESSOR", "UNTIL"], rows))


@cli.command()
@click.argument("model")
def stop(model: str) -> None:
    """Stop a running model."""
    from nbllm.schema import GenerateRequest
    from nbllm.store import ModelName

    client = connect(local_ok=False)
    wanted = ModelName.parse(model).key()
    if not any(ModelName.parse(m.name).key() == wanted for m in client.ps().models):
        raise NotFound(f'model "{model}" is not running')
    for _ in client.generate(GenerateRequest(model=model, keep_alive=0)):
        pass
