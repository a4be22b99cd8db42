"""The ``nbllm`` command group: Ollama's CLI. NbllmError becomes ``Error: ...`` and exit 1, here only."""

from __future__ import annotations

import logging
from typing import Any

import click

from nbllm._version import __version__
from nbllm.errors import NbllmError

__all__ = ["NbllmGroup", "cli", "main"]


class NbllmGroup(click.Group):
    """A click group that turns nbllm's errors into one-line ``Error: ...`` messages."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except NbllmError as exc:
            raise click.ClickException(exc.message) from None
        except KeyboardInterrupt:
            raise click.exceptions.Exit(130) from None


@click.group(cls=NbllmGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "-v", "--version", prog_name="nbllm", message="nbllm version is %(version)s")
def cli() -> None:
    """Large language model runner (Ollama's CLI, served by nbllm)."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="nbllm")
