"""``nbllm create MODEL [-f Modelfile] [-q QUANT]``: Ollama's create, the client's half.

The Modelfile is parsed here; the files it names are uploaded as blobs (skipped when the server
has them); then ``/api/create`` runs with the blob digests and its statuses are shown.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from nbllm.cli.backend import connect
from nbllm.cli.main import cli
from nbllm.cli.progress import render_progress
from nbllm.errors import InvalidModelName, InvalidRequest

__all__ = ["create"]


class _UploadLine:
    """``copying file sha256:… 42%`` on stderr: redrawn on a terminal, one line per file otherwise."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.tty = sys.stderr.isatty()
        self.last = -1

    def __call__(self, sent: int, total: int) -> None:
        pct = int(sent * 100 / total) if total else 100
        if self.tty and pct != self.last:
            sys.stderr.write(f"\rcopying file {self.path.name} {pct}%\x1b[K")
            sys.stderr.flush()
        self.last = pct


@cli.command(use="create MODEL")
@click.argument("model")
@click.option("-f", "--file", "modelfile", default=None, help='Name of the Modelfile (default "Modelfile")')
@click.option("-q", "--quantize", default=None, help="Quantize model to this level (e.g. q4_0)")
@click.option("--draft-quantize", default=None, help="Quantize draft model to this level")
def create(model: str, modelfile: str | None, quantize: str | None, draft_quantize: str | None) -> None:
    """Create a model from a Modelfile."""
    from nbllm.remote.modelfile_request import prepare_create
    from nbllm.store import ModelName
    from nbllm.store.modelfile import parse_modelfile

    try:
        ModelName.parse(model)  # a bad name fails before any upload
    except InvalidModelName:
        raise InvalidModelName(f"invalid model name: {model}") from None
    path = Path(modelfile or "Modelfile").absolute()
    if path.is_file():
        text, base_dir = path.read_text(encoding="utf-8"), path.parent
    elif modelfile is not None:
        raise InvalidRequest("specified Modelfile wasn't found")
    else:
        text, base_dir = "FROM .\n", Path.cwd()  # Ollama: no Modelfile means the model in this directory
    parsed = parse_modelfile(text)
    client = connect()
    click.echo("gathering model components", err=True)

    def upload(file: Path) -> str:
        line = _UploadLine(file)
        digest = client.create_blob(file, progress=line)
        done = f"copying file {digest} 100%"
        if line.tty:
            sys.stderr.write(f"\r{done}\x1b[K\n")
        else:
            click.echo(done, err=True)
        return digest

    prepared = prepare_create(
        parsed, base_dir=base_dir, upload=upload, model=model, quantize=quantize, draft_quantize=draft_quantize
    )
    for warning in prepared.warnings:
        click.echo(f"warning: {warning}")
    render_progress(client.create(prepared.request))
