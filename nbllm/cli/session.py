"""What ``nbllm run`` does once the model is there: one answer, or a chat session at the ``>>>`` prompt."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import click

from nbllm.cli.answer import AnswerWriter
from nbllm.cli.turn import RunOptions, chat_turn
from nbllm.client import BaseClient
from nbllm.duration import parse_keep_alive
from nbllm.errors import InvalidRequest, NbllmError
from nbllm.schema import Message, ShowResponse

__all__ = ["Dispatch", "LineSource", "Session", "keep_alive_value", "think_value"]

_THINK_LEVELS = ("high", "medium", "low", "max")


def think_value(text: str | None) -> bool | str | None:
    """``--think`` as the API takes it.

    >>> think_value("true"), think_value("False"), think_value("high"), think_value(None)
    (True, False, 'high', None)
    """
    if text is None:
        return None
    lowered = text.strip().lower()
    if lowered in ("", "true", "false"):
        return lowered != "false"
    if lowered in _THINK_LEVELS:
        return lowered
    raise InvalidRequest(f'invalid value for --think: "{text}" (must be true, false, high, medium, low, or max)')


def keep_alive_value(text: str | None) -> str | float | None:
    """``--keepalive``: a Go duration (``5m``, ``-1m``), or a number of seconds; checked before any request.

    >>> keep_alive_value("-1m"), keep_alive_value("300"), keep_alive_value(None)
    ('-1m', 300.0, None)
    """
    if text is None:
        return None
    try:
        parse_keep_alive(text, numbers_as_strings=True)
    except ValueError as exc:
        raise InvalidRequest(str(exc)) from None
    try:
        return float(text)
    except ValueError:
        return text.strip()


class LineSource(Protocol):
    """Where the REPL's lines come from (the prompt_toolkit reader, or a script in tests)."""

    def read(self, *, alt: bool = False) -> str:
        """One line; EOFError at the end, KeyboardInterrupt on Ctrl-C."""

    def set_history(self, *, enabled: bool) -> None:
        """Keep or stop keeping history."""


Dispatch = Callable[["Session", str], bool]
"""Runs a ``/`` command line on a session; False ends it (``cli.slash.dispatch``)."""


class Session:
    """The ``>>>`` loop: messages go to the model, ``/`` commands go to ``dispatch``."""

    def __init__(self, client: BaseClient, opts: RunOptions, reader: LineSource, dispatch: Dispatch) -> None:
        self.client = client
        self.opts = opts
        self.reader = reader
        self.dispatch = dispatch

    def run(self, info: ShowResponse | None = None) -> None:
        """Chat until ``/bye``, ``/exit`` or Ctrl-D."""
        self._replay(info)
        while True:
            try:
                text, is_command = self.read_input()
            except EOFError:
                click.echo("")
                return
            except KeyboardInterrupt:
                click.echo("\nUse Ctrl + d or /bye to exit.")
                continue
            if is_command:
                if not self.dispatch(self, text):
                    return
            elif text:
                self.send(text)

    def read_input(self) -> tuple[str, bool]:
        """One message (a line, or a ``\"\"\"`` block) and whether it is a ``/`` command."""
        line = self.reader.read()
        if line.startswith('"""'):
            return self.until_closing_quotes(line[3:]), False
        return line, line.startswith("/")

    def until_closing_quotes(self, first: str) -> str:
        """The rest of a ``\"\"\"`` block, read at the ``... `` prompt."""
        if first.endswith('"""'):
            return first[:-3]
        parts = [first]
        while True:
            line = self.reader.read(alt=True)
            if line.endswith('"""'):
                parts.append(line[:-3])
                return "\n".join(parts)
            parts.append(line)

    def send(self, text: str) -> None:
        """One user turn; a cancelled or failed answer leaves no trace in the conversation."""
        self.opts.messages.append(Message(role="user", content=text))
        try:
            answer = chat_turn(self.client, self.opts)
        except NbllmError as exc:
            self.opts.messages.pop()
            click.echo(f"Error: {exc.message}", err=True)
            return
        if answer.cancelled:
            self.opts.messages.pop()
            return
        self.opts.messages.append(Message(role="assistant", content=answer.content, thinking=answer.thinking or None))

    def _replay(self, info: ShowResponse | None) -> None:
        """Show the conversation baked into the model (its MESSAGEs), as Ollama does."""
        self.opts.loaded_messages = list(info.messages or []) if info else []
        for message in self.opts.loaded_messages:
            if message.role == "user":
                click.echo(f">>> {message.content}")
            elif message.role == "assistant":
                writer = AnswerWriter(wordwrap=self.opts.wordwrap)
                writer.content(message.content)
                writer.finish()
                click.echo("\n")
