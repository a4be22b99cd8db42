"""The ``nbllm`` command group: Ollama's CLI. NbllmError becomes ``Error: ...`` and exit 1, here only."""

from __future__ import annotations

import logging
from typing import Any

import click

from nbllm._version import __version__
from nbllm.cli.usage import OllamaCommand, root_help
from nbllm.errors import NbllmError

__all__ = ["NbllmGroup", "cli", "main"]

# `ollama --help` lists its commands in this order (cobra's sorting is off); others follow.
_ORDER = ("serve", "create", "show", "run", "stop", "pull", "push", "list", "ps", "cp", "rm", "verify", "help")


class NbllmGroup(click.Group):
    """A click group that turns nbllm's errors into one-line ``Error: ...`` messages, with Ollama's help."""

    command_class = OllamaCommand

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except NbllmError as exc:
            raise click.ClickException(exc.message) from None
        except click.UsageError as exc:  # one line, as cobra's "Error: accepts 1 arg(s), received 0"
            raise click.ClickException(exc.format_message()) from None
        except KeyboardInterrupt:
            raise click.exceptions.Exit(130) from None

    def list_commands(self, ctx: click.Context) -> list[str]:
        rank = {name: i for i, name in enumerate(_ORDER)}
        return sorted(self.commands, key=lambda name: (rank.get(name, len(rank)), name))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        found = self.commands.get(cmd_name)
        if found is not None:
            return found
        for command in self.commands.values():
            if cmd_name in getattr(command, "aliases", ()):
                return command
        return None

    def format_help(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        formatter.write(root_help(self, ctx, "Show version information"))


@click.group(cls=NbllmGroup, invoke_without_command=True, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "-v", "--version", prog_name="nbllm", message="nbllm version is %(version)s")
@click.pass_context
def cli(ctx: click.Context) -> None:
    """Large language model runner."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if ctx.invoked_subcommand is None:
        click.echo(ctx.get_help())


@cli.command("help", use="help [command]", env=())
@click.argument("command", nargs=-1)
@click.pass_context
def help_command(ctx: click.Context, command: tuple[str, ...]) -> None:
    """Help about any command."""
    parent = ctx.parent
    assert parent is not None
    target = cli.get_command(parent, command[0]) if command else None
    if command and target is None:
        raise click.ClickException(f'unknown help topic "{" ".join(command)}"')
    if target is None:
        click.echo(cli.get_help(parent))
        return
    with click.Context(target, info_name=command[0], parent=parent) as sub:
        click.echo(target.get_help(sub))


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="nbllm")
