"""Writing a streamed answer to the terminal as ``ollama run`` does: word wrap, thinking, Ctrl-C, timings."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TextIO, TypeVar

import click
from wcwidth import wcwidth

from nbllm.cli.progress import Spinner
from nbllm.humanize import timing_summary
from nbllm.schema import ChatResponse, GenerateResponse, Metrics

__all__ = ["Answer", "AnswerWriter", "WordWrapper", "print_summary", "stream_answer"]

_GREY, _BOLD, _RESET = "\x1b[90m", "\x1b[1m", "\x1b[0m"
Chunk = TypeVar("Chunk", GenerateResponse, ChatResponse)


class WordWrapper:
    """Breaks streamed text into lines of at most ``width`` columns, between words.

    Wide (CJK) characters count two columns and may break anywhere, as in Ollama.

    >>> w = WordWrapper(10)
    >>> w.feed("the quick brown fox jumps") + w.flush()
    'the quick\\nbrown fox\\njumps'
    >>> w = WordWrapper(10)
    >>> w.feed("我是一个人工智能助手。") + w.flush()
    '我是一个人\\n工智能助手\\n。'
    """

    def __init__(self, width: int) -> None:
        self.width = max(10, width)
        self.column = 0
        self.spaces = ""
        self.word = ""
        self.word_width = 0

    def feed(self, text: str) -> str:
        """The text to print now for a new chunk (a word is held until it is known to fit)."""
        out: list[str] = []
        for ch in text:
            size = max(0, wcwidth(ch))
            if ch in "\r\n":
                out.append(self._place() + "\n")
                self.column, self.spaces = 0, ""
            elif ch in " \t":
                out.append(self._place())
                self.spaces += ch
            elif size >= 2:
                out.append(self._place())
                self.word, self.word_width = ch, size
                out.append(self._place())
            else:
                self.word += ch
                self.word_width += size
                if self.word_width >= self.width:  # longer than a line: break it where it is
                    out.append(self._place())
        return "".join(out)

    def _place(self) -> str:
        """The held word, after the held spaces or at the start of a new line."""
        word, size, spaces = self.word, self.word_width, self.spaces
        if not word:
            return ""
        self.word, self.word_width, self.spaces = "", 0, ""
        if self.column > 0 and self.column + len(spaces) + size > self.width:
            self.column = size
            return "\n" + word
        self.column += len(spaces) + size
        return spaces + word

    def flush(self) -> str:
        """The word still held at the end of the answer."""
        return self._place()


class AnswerWriter:
    """Prints an answer's thinking and content to stdout."""

    def __init__(self, *, wordwrap: bool, hide_thinking: bool = False, out: TextIO | None = None) -> None:
        self.out = out or sys.stdout
        self.plain = not self.out.isatty()
        width = shutil.get_terminal_size((80, 24)).columns
        self.wrap = WordWrapper(width - 5) if wordwrap and not self.plain else None
        self.hide_thinking = hide_thinking
        self.thinking_open = False
        self.thinking_seen = ""

    def _write(self, text: str) -> None:
        self.out.write(self.wrap.feed(text) if self.wrap else text)
        self.out.flush()

    def thinking(self, text: str) -> None:
        """Thinking text, between ``Thinking...`` and ``...done thinking.``."""
        if not text or self.hide_thinking:
            return
        if not self.thinking_open:
            self.out.write("Thinking...\n" if self.plain else f"{_GREY}{_BOLD}Thinking...\n{_RESET}{_GREY}")
            self.thinking_open = True
        self.thinking_seen += text
        self._write(text)

    def content(self, text: str) -> None:
        """Answer text."""
        if text and self.thinking_open:
            self.close_thinking()
        if text:
            self._write(text)

    def close_thinking(self) -> None:
        """End the thinking block."""
        if self.wrap:
            self.out.write(self.wrap.flush())
        if not self.thinking_seen.endswith("\n"):
            self.out.write("\n")
        self.out.write("...done thinking.\n\n" if self.plain else f"{_GREY}{_BOLD}...done thinking.\n\n{_RESET}")
        self.thinking_open = False
        if self.wrap:
            self.wrap = WordWrapper(self.wrap.width)

    def finish(self) -> None:
        """Print what the word wrapper still holds."""
        if self.thinking_open:
            self.close_thinking()
        if self.wrap:
            self.out.write(self.wrap.flush())
        self.out.flush()


@dataclass
class Answer:
    """What came back: the text, the thinking, the final chunk (None if cancelled)."""

    content: str = ""
    thinking: str = ""
    final: Metrics | None = None
    cancelled: bool = False


def stream_answer(chunks: Iterator[Chunk], writer: AnswerWriter) -> Answer:
    """Print a streamed answer; Ctrl-C stops it (closing the stream cancels the generation)."""
    answer = Answer()
    spinner = Spinner().start()
    try:
        for chunk in chunks:
            spinner.stop()
            if isinstance(chunk, ChatResponse):
                thinking, content = chunk.message.thinking or "", chunk.message.content
            else:
                thinking, content = chunk.thinking or "", chunk.response
            writer.thinking(thinking)
            writer.content(content)
            answer.thinking += thinking
            answer.content += content
            if chunk.done:
                answer.final = chunk
    except KeyboardInterrupt:
        answer.cancelled = True
    finally:
        spinner.stop()
        close = getattr(chunks, "close", None)
        if close is not None:
            close()
        writer.finish()
    return answer


def print_summary(final: Metrics) -> None:
    """The ``--verbose`` timing block, on stderr."""
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
    if final.draft_count:  # nbllm's speculative decoding (prompt lookup), after Ollama's lines
        accepted = final.draft_accepted_count or 0
        click.echo(
            f"draft tokens:         {final.draft_count} ({accepted} accepted, {accepted / final.draft_count:.0%})",
            err=True,
        )
