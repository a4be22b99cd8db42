"""One model's answer as it streams in, and how it is rendered (live and as the final static bundle)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from nbllm.notebook.display import close_fences
from nbllm.notebook.timing import TimingRecord
from nbllm.notebook.tools import ToolCallRecord
from nbllm.schema import ChatResponse, GenerateResponse, Message, Metrics, ToolCall

__all__ = ["Answer", "ChatResult"]


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
    error: BaseException | None = None

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
        return TimingRecord.from_metrics(self.model, self.final, ttft_s=ttft, wall_s=wall, **extra)

    def live_status(self) -> str:
        """Client-side progress while streaming: ``37 chunks · 12.3 chunks/s``."""
        if self.first_at is None or self.last_at is None:
            return "waiting for the first token…"
        span = self.last_at - self.first_at
        rate = f" · {self.chunks / span:.1f} tok/s" if span > 0 else ""
        return f"{self.chunks} tokens{rate}"


def render_body(
    answers: list[Answer], calls: list[list[ToolCallRecord]], *, as_json: bool = False, partial: bool = False
) -> str:
    """Markdown of a (possibly multi-round) answer: thinking folded, text, tool calls as quoted lines."""
    parts: list[str] = []
    for i, answer in enumerate(answers):
        if answer.thought:
            parts.append(f"<details><summary>Thinking</summary>\n\n{answer.thought.strip()}\n\n</details>")
        if answer.text:
            parts.append(_as_json_block(answer.text) if as_json and not partial else answer.text)
        for record in calls[i] if i < len(calls) else []:
            parts.append(f"> 🔧 `{record.summary()}`")
    text = "\n\n".join(p for p in parts if p)
    return close_fences(text) if partial else text


def _as_json_block(text: str) -> str:
    try:
        pretty = json.dumps(json.loads(text), indent=2, ensure_ascii=False)
    except ValueError:
        return text
    return f"```json\n{pretty}\n```"


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
