"""One turn of ``nbllm run``: the run's options, loading the model, one answer, one chat turn."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from typing import Any

from nbllm.cli.answer import Answer, AnswerWriter, print_summary, stream_answer
from nbllm.cli.progress import Spinner
from nbllm.client import BaseClient
from nbllm.errors import InvalidRequest
from nbllm.schema import ChatRequest, GenerateRequest, Message

__all__ = ["RunOptions", "chat_turn", "generate_once", "load_model"]


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
