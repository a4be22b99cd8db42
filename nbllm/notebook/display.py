"""What the magics show: live, throttled displays and static mimebundles that render anywhere.

Every result has ``text/plain`` (terminal IPython, nbval) and usually ``text/markdown``; streamed
answers end as such a static bundle, so a saved notebook shows them on GitHub and nbviewer.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from typing import Any

from IPython import display as _ipython_display

__all__ = ["LiveDisplay", "Note", "Rich", "close_fences", "escape_html", "markdown_table", "server_note", "show"]

_FENCE = re.compile(r"^[ \t]{0,3}(`{3,}|~{3,})", re.MULTILINE)
_CODE_SPAN = re.compile(r"(?<!`)(`+)(?!`).*?(?<!`)\1(?!`)", re.DOTALL)
_HTML_CHARS = {"&": "&amp;", "<": "&lt;"}  # ">" stays: it starts a block quote and opens no tag

Bundle = dict[str, Any]


def show(obj: Any, **kwargs: Any) -> Any:
    """``IPython.display.display`` (typed): shows ``obj`` in the current cell; returns a handle with ``display_id``."""
    return _ipython_display.display(obj, **kwargs)  # type: ignore[no-untyped-call]


def close_fences(text: str) -> str:
    """Close a code fence left open by a partial answer, so it renders as code while it streams.

    >>> close_fences("Here:\\n```python\\nx = 1")
    'Here:\\n```python\\nx = 1\\n```'
    >>> close_fences("```\\nx\\n```")
    '```\\nx\\n```'
    """
    opener: str | None = None
    for match in _FENCE.finditer(text):
        fence = match.group(1)
        if opener is None:
            opener = fence
        elif fence[0] == opener[0] and len(fence) >= len(opener):
            opener = None
    if opener is None:
        return text
    return text + ("" if text.endswith("\n") else "\n") + opener


def escape_html(text: str) -> str:
    """Model text as Markdown that shows every character: raw HTML is escaped, code is left as code.

    A Markdown renderer hides tag-like text (``<think>``, ``<tool_response>``, ``<|im_end|>``, HTML
    the model writes); outside code fences and code spans, ``&`` and ``<`` become entities.

    >>> escape_html("<think>hm</think> a < b & `<b>` and\\n```html\\n<p>x</p>\\n```")
    '&lt;think>hm&lt;/think> a &lt; b &amp; `<b>` and\\n```html\\n<p>x</p>\\n```'
    """
    out: list[str] = []
    pos = 0
    for start, end in _fenced_blocks(text):
        out.append(_escape_prose(text[pos:start]))
        out.append(text[start:end])
        pos = end
    out.append(_escape_prose(text[pos:]))
    return "".join(out)


def _fenced_blocks(text: str) -> list[tuple[int, int]]:
    """Spans of fenced code blocks (an unclosed fence runs to the end, as it renders)."""
    blocks: list[tuple[int, int]] = []
    opener: tuple[str, int] | None = None
    for match in _FENCE.finditer(text):
        fence = match.group(1)
        if opener is None:
            opener = (fence, match.start())
        elif fence[0] == opener[0][0] and len(fence) >= len(opener[0]):
            line_end = text.find("\n", match.end())
            blocks.append((opener[1], len(text) if line_end < 0 else line_end))
            opener = None
    if opener is not None:
        blocks.append((opener[1], len(text)))
    return blocks


def _escape_prose(text: str) -> str:
    out: list[str] = []
    pos = 0
    for match in _CODE_SPAN.finditer(text):
        out.append(_escape_chars(text[pos : match.start()]))
        out.append(match.group(0))
        pos = match.end()
    out.append(_escape_chars(text[pos:]))
    return "".join(out)


def _escape_chars(text: str) -> str:
    return "".join(_HTML_CHARS.get(ch, ch) for ch in text)


def markdown_table(headers: list[str], rows: list[list[str]]) -> str:
    """A GitHub-flavoured Markdown table.

    >>> print(markdown_table(["a", "b"], [["1", "x|y"]]))
    | a | b |
    |---|---|
    | 1 | x\\|y |
    """

    def cell(value: str) -> str:
        return str(value).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(cell(h) for h in headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


class Rich:
    """A result with Markdown and plain text (and optional metadata), as jupyter-ai's TextOrMarkdown."""

    def __init__(self, markdown: str, plain: str | None = None, *, metadata: Mapping[str, Any] | None = None) -> None:
        self.markdown = markdown
        self.plain = plain if plain is not None else markdown
        self.metadata = dict(metadata or {})

    def bundle(self) -> Bundle:
        """The mimebundle."""
        return {"text/markdown": self.markdown, "text/plain": self.plain}

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> tuple[Bundle, dict[str, Any]]:
        return self.bundle(), self.metadata

    def __repr__(self) -> str:
        return self.plain


class Note(Rich):
    """A one-line message (``%serve`` status, ``%stop`` confirmation, ...)."""

    def __init__(self, text: str) -> None:
        super().__init__(text, text)


def server_note(url: str) -> Rich:
    """``%serve``'s result: the server's URL and how to reach it (``.url`` holds it)."""
    hostport = url.removeprefix("http://")
    plain = (
        f"nbllm server running at {url}\n"
        f"  curl {url}/api/tags\n"
        f"  ollama.Client(host={url!r})\n"
        f"  OLLAMA_HOST={hostport} nbllm list"
    )
    markdown = (
        f"nbllm server running at **{url}**\n\n```\ncurl {url}/api/tags\n"
        f"ollama.Client(host={url!r})\nOLLAMA_HOST={hostport} nbllm list\n```"
    )
    note = Rich(markdown, plain, metadata={"nbllm": {"server": url}})
    note.url = url  # type: ignore[attr-defined]
    return note


class LiveDisplay:
    """One output area of the cell, updated in place at most every ``interval`` seconds."""

    def __init__(self, *, interval: float = 0.1, live: bool = True) -> None:
        self.interval = interval
        self.live = live
        self._handle: Any = None
        self._last = 0.0
        self._pending: Bundle | Callable[[], Bundle] | None = None

    def show(self, obj: Any, *, raw: bool = False) -> None:
        """Display the first content (a bundle with ``raw``, or any displayable object)."""
        if self.live:
            self._handle = show(obj, raw=raw, display_id=True)
            self._last = time.monotonic()

    def update(self, bundle: Bundle | Callable[[], Bundle], *, force: bool = False) -> None:
        """Replace the content, unless the last update was less than ``interval`` ago (then later).

        ``bundle`` may be a function: it is only called when an update is actually sent.
        """
        self._pending = bundle
        if self.live and (force or time.monotonic() - self._last >= self.interval):
            self.flush()

    def flush(self) -> None:
        """Send a held-back update now."""
        if self._pending is None or not self.live:
            return
        pending, self._pending = self._pending, None
        bundle = pending() if callable(pending) else pending
        if self._handle is None:
            self._handle = show(bundle, raw=True, display_id=True)
        else:
            self._handle.update(bundle, raw=True)
        self._last = time.monotonic()

    def finish(self, bundle: Bundle, metadata: Mapping[str, Any] | None = None) -> None:
        """The final, static content with its metadata (shown once when not live)."""
        self._pending = None
        if self._handle is None:
            show(bundle, raw=True, metadata=dict(metadata or {}))
        else:
            self._handle.update(bundle, raw=True, metadata=dict(metadata or {}))
