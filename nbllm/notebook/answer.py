"""One model's answer as it streams in, and how it is rendered (live and as the final static bundle)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from nbllm.notebook.display import close_fences, escape_html
from nbllm.notebook.timing import TimingRecord
from nbllm.notebook.tools import ToolCallRecord
from nbllm.schema import ChatResponse, GenerateResponse, Message, Metrics, ToolCall

__all__ = ["LONG_ANSWER_SECONDS", "LONG_ANSWER_TOKENS", "STOP_HINT", "Answer", "ChatResult", "code_blocks"]

LONG_ANSWER_TOKENS = 200
LONG_ANSWER_SECONDS = 10.0
"""After this many tokens or seconds of streaming, the live status says how to stop the answer."""
STOP_HINT = "press ■ / interrupt the kernel to stop"

_CODE_BLOCK = re.compile(r"^[ \t]{0,3}(`{3,}|~{3,})[^\n]*\n(.*?)^[ \t]{0,3}\1[ \t]*$", re.DOTALL | re.MULTILINE)


@dataclass
class Answer:
    """The streamed parts of one response (one round of a chat) and when they arrived."""

    model: str
    started_at: float
    content: list[str] = field(default_factory=list)
    thinking: list[str] = field(default_factory=list)
    tool_calls: list[ToolCall] = field(default_factory=list)
    final: Metrics | None = None
    first_at: float | None = None
    last_at: float | None = None
    chunks: int = 0
    thinking_chunks: int = 0
    """Chunks that carried thinking (``message.thinking``/``thinking``): the server's split of the tokens."""
    error: BaseException | None = None
    loading: bool = False
    """Set (from a probe thread) when the model was not loaded as the request went out."""

    def feed(self, chunk: ChatResponse | GenerateResponse, at: float) -> None:
        """Add a streamed chunk received at ``at`` (``perf_counter`` seconds)."""
        if isinstance(chunk, ChatResponse):
            text, thinking, calls = chunk.message.content, chunk.message.thinking, chunk.message.tool_calls
        else:
            text, thinking, calls = chunk.response, chunk.thinking, None
        if text:
            self.content.append(text)
        if thinking:
            self.thinking.append(thinking)
            self.thinking_chunks += 1
        if calls:
            self.tool_calls.extend(calls)
        if self.first_at is None and (text or thinking or calls):
            self.first_at = at
        self.chunks += 1
        self.last_at = at
        if chunk.done:
            self.final = chunk

    @property
    def text(self) -> str:
        """The answer so far."""
        return "".join(self.content)

    @property
    def thought(self) -> str:
        """The thinking so far."""
        return "".join(self.thinking)

    def message(self) -> Message:
        """The assistant message to keep in the conversation."""
        return Message(
            role="assistant", content=self.text, thinking=self.thought or None, tool_calls=self.tool_calls or None
        )

    def timing(self, **extra: Any) -> TimingRecord:
        """The timing record of this response."""
        ttft = self.first_at - self.started_at if self.first_at is not None else None
        wall = (self.last_at or self.started_at) - self.started_at
        thought = self.thought
        return TimingRecord.from_metrics(
            self.model,
            self.final,
            ttft_s=ttft,
            wall_s=wall,
            thinking_chunks=self.thinking_chunks if thought else None,
            thinking_chars=len(thought) if thought else None,
            **extra,
        )

    @property
    def finished(self) -> bool:
        """Whether the response ended normally (its final chunk, with the server's stats, arrived)."""
        return self.final is not None

    def live_status(self) -> str:
        """Client-side progress while streaming: ``37 tokens · 12.3 tok/s`` (and how to stop a long one)."""
        if self.first_at is None or self.last_at is None:
            return f"loading {self.model}…" if self.loading else "waiting for the first token…"
        span = self.last_at - self.first_at
        rate = f" · {self.chunks / span:.1f} tok/s" if span > 0 else ""
        hint = f" · {STOP_HINT}" if self.chunks >= LONG_ANSWER_TOKENS or span >= LONG_ANSWER_SECONDS else ""
        return f"{self.chunks} tokens{rate}{hint}"


def render_body(
    answers: list[Answer],
    calls: list[list[ToolCallRecord]],
    *,
    as_json: bool = False,
    partial: bool = False,
    escape: bool = True,
    thinking: bool = True,
) -> str:
    """Markdown of a (possibly multi-round) answer: thinking folded, text, tool calls as quoted lines.

    The model's text is shown as written: tag-like text in it is escaped (:func:`escape_html`);
    ``escape=False`` gives the same layout with the text as the model wrote it (for ``text/plain``).
    The thinking is a ``<details>`` without ``open`` (collapsed); ``thinking=False`` leaves it out.
    """
    shown = escape_html if escape else str
    parts: list[str] = []
    for i, answer in enumerate(answers):
        if answer.thought and thinking:
            parts.append(f"<details><summary>Thinking</summary>\n\n{shown(answer.thought.strip())}\n\n</details>")
        if answer.text:
            parts.append(_as_json_block(answer.text, shown) if as_json and not partial else shown(answer.text))
        for record in calls[i] if i < len(calls) else []:
            parts.append(f"> 🔧 `{record.summary()}`")
    text = "\n\n".join(p for p in parts if p)
    return close_fences(text) if partial else text


def _as_json_block(text: str, shown: Callable[[str], str]) -> str:
    try:
        pretty = json.dumps(json.loads(text), indent=2, ensure_ascii=False)
    except ValueError:
        return shown(text)
    return f"```json\n{pretty}\n```"


def code_blocks(text: str) -> str:
    """The contents of the fenced code blocks of ``text``, one after another (``text`` when it has none).

    >>> code_blocks("Try:\\n```python\\nx = 1\\n```\\nthen\\n```\\ny = 2\\n```")
    'x = 1\\n\\ny = 2'
    >>> code_blocks("x = 1")
    'x = 1'
    """
    blocks = [m.group(2).rstrip("\n") for m in _CODE_BLOCK.finditer(text)]
    return "\n\n".join(blocks) if blocks else text.strip()


@dataclass
class ChatResult:
    """What a ``%%chat`` or ``%%generate`` cell produced (stored with ``--var NAME``)."""

    model: str
    text: str
    thinking: str = ""
    tool_calls: list[ToolCallRecord] = field(default_factory=list)
    timings: list[TimingRecord] = field(default_factory=list)
    interrupted: bool = False
    markdown: str = ""
    inspector: Any = None
    """The cell's :class:`~nbllm.notebook.widgets.inspector.ToolCallInspector` (``--tools``), to re-run calls."""

    def json(self) -> Any:
        """The answer parsed as JSON (for ``--format``)."""
        return json.loads(self.text)

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, str]:
        return {"text/markdown": self.markdown or self.text, "text/plain": self.text}

    def __str__(self) -> str:
        return self.text
