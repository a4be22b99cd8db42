"""What ``nbllm run`` does once the model is there: one answer, or a chat session at the ``>>>`` prompt."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from typing import Any, Protocol

import click

from nbllm.cli.answer import Answer, AnswerWriter, print_summary, stream_answer
from nbllm.cli.progress import Spinner
from nbllm.client import BaseClient
from nbllm.duration import parse_keep_alive
from nbllm.errors import InvalidRequest, NbllmError
from nbllm.schema import ChatRequest, GenerateRequest, Message, ShowResponse

__all__ = [
    "LineSource",
    "RunOptions",
    "Session",
    "chat_turn",
    "generate_once",
    "keep_alive_value",
    "load_model",
    "think_value",
]

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


@dataclass
class RunOptions:
    """The flags of ``run`` and the state a session changes with ``/set``, ``/load`` and ``/clear``."""

    model: str
    format: str | None = None
    keep_alive: str | float | None = None
    wordwrap: bool = True
    verbose: bool = False
    think: bool | str | None = None
    hide_thinking: bool = False
    system: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    messages: list[Message] = field(default_factory=list)
    loaded_messages: list[Message] = field(default_factory=list)

    def format_value(self) -> str | dict[str, Any] | None:
        """``json`` or a JSON schema given as text."""
        if not self.format or self.format == "json":
            return self.format or None
        try:
            value = json.loads(self.format)
        except ValueError:
            raise InvalidRequest(f"invalid format {self.format!r}: use json or a JSON schema") from None
        if not isinstance(value, dict):
            raise InvalidRequest("format must be json or a JSON schema object")
        return value


def load_model(client: BaseClient, opts: RunOptions) -> None:
    """Load the model before the first prompt (an empty request), with a spinner."""
    with Spinner():
        for _ in client.generate(GenerateRequest(model=opts.model, keep_alive=opts.keep_alive, think=opts.think)):
            pass


def generate_once(client: BaseClient, opts: RunOptions, prompt: str) -> None:
    """Answer one prompt, streaming, then the ``--verbose`` timings on stderr."""
    req = GenerateRequest(
        model=opts.model,
        prompt=prompt,
        format=opts.format_value(),
        keep_alive=opts.keep_alive,
        think=opts.think,
        options=opts.options or None,
        system=opts.system,
    )
    answer = stream_answer(client.generate(req), AnswerWriter(wordwrap=opts.wordwrap, hide_thinking=opts.hide_thinking))
    if prompt and not answer.cancelled:
        sys.stdout.write("\n\n" if sys.stdout.isatty() else "\n")
        sys.stdout.flush()
    if opts.verbose and answer.final is not None:
        print_summary(answer.final)


def chat_turn(client: BaseClient, opts: RunOptions) -> Answer:
    """Send the session's messages, print the answer; Ctrl-C stops it."""
    req = ChatRequest(
        model=opts.model,
        messages=list(opts.messages),
        format=opts.format_value(),
        keep_alive=opts.keep_alive,
        think=opts.think,
        options=opts.options or None,
    )
    answer = stream_answer(client.chat(req), AnswerWriter(wordwrap=opts.wordwrap, hide_thinking=opts.hide_thinking))
    sys.stdout.write("\n\n")
    sys.stdout.flush()
    if opts.verbose and answer.final is not None:
        print_summary(answer.final)
    return answer


class LineSource(Protocol):
    """Where the REPL's lines come from (the prompt_toolkit reader, or a script in tests)."""

    def read(self, *, alt: bool = False) -> str:
        """One line; EOFError at the end, KeyboardInterrupt on Ctrl-C."""

    def set_history(self, *, enabled: bool) -> None:
        """Keep or stop keeping history."""


class Session:
    """The ``>>>`` loop: messages go to the model, ``/`` commands change the session."""

    def __init__(self, client: BaseClient, opts: RunOptions, reader: LineSource) -> None:
        self.client = client
        self.opts = opts
        self.reader = reader

    def run(self, info: ShowResponse | None = None) -> None:
        """Chat until ``/bye``, ``/exit`` or Ctrl-D."""
        from nbllm.cli.slash import dispatch

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
                if not dispatch(self, text):
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
