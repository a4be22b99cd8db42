"""What ``nbllm run`` does once a model is there: one answer, or a chat session at the ``>>>`` prompt."""

from __future__ import annotations

import json
import shutil
import sys
from dataclasses import dataclass, field
from typing import Any

import click

from nbllm.client import BaseClient
from nbllm.errors import InvalidRequest
from nbllm.humanize import timing_summary
from nbllm.schema import ChatRequest, GenerateRequest, Message, Metrics

__all__ = ["RunOptions", "WordWrapper", "generate_once", "interactive"]


@dataclass
class RunOptions:
    """The flags of ``run`` and the state a session changes with ``/set``."""

    model: str
    format: str | None = None
    keep_alive: str | None = None
    wordwrap: bool = True
    verbose: bool = False
    think: str | None = None
    system: str | None = None
    options: dict[str, Any] = field(default_factory=dict)

    def format_value(self) -> str | dict[str, Any] | None:
        """``json`` or a JSON schema given as text."""
        if not self.format or self.format == "json":
            return self.format
        try:
            value = json.loads(self.format)
        except ValueError:
            raise InvalidRequest(f"invalid format {self.format!r}: use json or a JSON schema") from None
        if not isinstance(value, dict):
            raise InvalidRequest("format must be json or a JSON schema object")
        return value

    def think_value(self) -> bool | str | None:
        """``--think`` as the API takes it."""
        if self.think is None:
            return None
        lowered = self.think.lower()
        if lowered in ("true", "false"):
            return lowered == "true"
        return lowered

    def keep_alive_value(self) -> str | float | None:
        """``--keepalive`` (a Go duration, or a number of seconds)."""
        if self.keep_alive is None:
            return None
        try:
            return float(self.keep_alive)
        except ValueError:
            return self.keep_alive


class WordWrapper:
    """Wraps streamed text at the terminal width without breaking words."""

    def __init__(self, width: int) -> None:
        self.width = max(20, width)
        self.column = 0
        self.word = ""

    def feed(self, text: str) -> str:
        """Text to print now for a new chunk."""
        out = []
        for ch in text:
            if ch == "\n":
                out.append(self.word + "\n")
                self.word, self.column = "", 0
            elif ch == " ":
                out.append(self._place(self.word) + " ")
                self.column += 1
                self.word = ""
            else:
                self.word += ch
        return "".join(out)

    def _place(self, word: str) -> str:
        if self.column + len(word) > self.width and self.column > 0:
            self.column = len(word)
            return "\n" + word
        self.column += len(word)
        return word

    def flush(self) -> str:
        """The word still held at the end."""
        out, self.word = self._place(self.word), ""
        return out


def _writer(opts: RunOptions) -> WordWrapper | None:
    if opts.wordwrap and sys.stdout.isatty():
        return WordWrapper(shutil.get_terminal_size((80, 20)).columns - 5)
    return None


def _emit(wrap: WordWrapper | None, text: str) -> None:
    sys.stdout.write(wrap.feed(text) if wrap else text)
    sys.stdout.flush()


def _summary(final: Metrics) -> None:
    click.echo(
        timing_summary(
            total_duration=final.total_duration,
            load_duration=final.load_duration,
            prompt_eval_count=final.prompt_eval_count,
            prompt_eval_duration=final.prompt_eval_duration,
            eval_count=final.eval_count,
            eval_duration=final.eval_duration,
        ),
        err=True,
    )


def generate_once(client: BaseClient, opts: RunOptions, prompt: str) -> None:
    """Answer one prompt, streaming, then the ``--verbose`` timings on stderr."""
    req = GenerateRequest(
        model=opts.model,
        prompt=prompt,
        format=opts.format_value(),
        keep_alive=opts.keep_alive_value(),
        think=opts.think_value(),
        options=opts.options or None,
        system=opts.system,
    )
    wrap = _writer(opts)
    final = None
    for chunk in client.generate(req):
        _emit(wrap, chunk.response)
        if chunk.done:
            final = chunk
    if wrap:
        sys.stdout.write(wrap.flush())
    sys.stdout.write("\n\n" if sys.stdout.isatty() else "\n")
    sys.stdout.flush()
    if opts.verbose and final is not None:
        _summary(final)


def _read_message() -> str | None:
    """One user message: a line, or a block between triple quotes. None at end of input."""
    try:
        line = input(">>> ")
    except EOFError:
        return None
    if not line.lstrip().startswith('"""'):
        return line
    parts = [line.lstrip()[3:]]
    while not parts[-1].rstrip().endswith('"""'):
        try:
            parts.append(input("... "))
        except EOFError:
            return None
    parts[-1] = parts[-1].rstrip()[:-3]
    return "\n".join(parts).strip("\n")


def interactive(client: BaseClient, opts: RunOptions) -> None:
    """Chat at the ``>>>`` prompt until ``/bye`` or end of input; Ctrl-C stops an answer."""
    messages: list[Message] = []
    click.echo(">>> Send a message (/? for help)", err=True)
    while True:
        text = _read_message()
        if text is None or text.strip() in ("/bye", "/exit"):
            return
        if not text.strip():
            continue
        if text.strip() in ("/?", "/help"):
            click.echo(
                "Available Commands:\n  /bye            Exit\n  /?, /help       Help for a command\n\n"
                'Use """ to begin a multi-line message.'
            )
            continue
        messages.append(Message(role="user", content=text))
        req = ChatRequest(
            model=opts.model,
            messages=list(messages),
            format=opts.format_value(),
            keep_alive=opts.keep_alive_value(),
            options=opts.options or None,
        )
        wrap = _writer(opts)
        answer, final = [], None
        try:
            for chunk in client.chat(req):
                answer.append(chunk.message.content)
                _emit(wrap, chunk.message.content)
                if chunk.done:
                    final = chunk
        except KeyboardInterrupt:
            click.echo("")
        if wrap:
            sys.stdout.write(wrap.flush())
        sys.stdout.write("\n\n")
        messages.append(Message(role="assistant", content="".join(answer)))
        if opts.verbose and final is not None:
            _summary(final)
