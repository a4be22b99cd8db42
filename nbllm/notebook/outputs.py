"""``-f/--output-format``: how a finished answer is shown (``markdown``, ``text``, ``json`` or ``code``).

``markdown`` (the default) renders the answer, with the model's raw text escaped; ``text`` shows it
as plain text; ``json`` as a JSON tree (and asks the model for JSON unless ``--format`` says
otherwise); ``code`` shows the answer and puts the contents of its code blocks into a new cell
below (IPython's ``set_next_input``), as jupyter-ai's ``-f code`` does.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from nbllm.notebook.answer import code_blocks

__all__ = ["CODE_NOTE", "OUTPUT_FORMATS", "final_bundle", "live_bundle", "status_bundle"]

OUTPUT_FORMATS = ("markdown", "text", "json", "code")
CODE_NOTE = "*(the code is in a new cell below)*"


def status_bundle(status: str) -> dict[str, Any]:
    """What a live answer shows before its first token: only the status line."""
    return {"text/plain": status, "text/markdown": f"<sub>{status}</sub>"}


def live_bundle(body: str, status: str) -> dict[str, Any]:
    """A streaming answer: only the status line until text arrives, then the text above it."""
    if not body:
        return status_bundle(status)
    return {"text/markdown": f"{body}\n\n<sub>{status}</sub>", "text/plain": f"{body}\n\n[{status}]"}


def final_bundle(
    output: str,
    *,
    markdown: str,
    text: str,
    footer: str,
    plain: str | None = None,
    show_stats: bool = True,
    set_next_input: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """The static bundle of an answer.

    ``markdown`` is its rendered body, ``text`` the answer as the model wrote it, ``plain`` the body
    for ``text/plain`` (default ``text``: with tool calls, it also lists them).
    """
    body_plain = text if plain is None else plain
    plain = f"{body_plain}\n\n[{footer}]" if body_plain else f"[{footer}]"
    if output == "text":
        return {"text/plain": plain}
    if output == "json" and text:
        try:
            value = json.loads(text)
        except ValueError as exc:
            value, markdown = None, f"{markdown}\n\n*(not valid JSON: {exc})*"
        if isinstance(value, (dict, list)):  # what a JSON viewer shows; a bare number stays text
            pretty = json.dumps(value, indent=2, ensure_ascii=False)
            return {"application/json": value, "text/plain": f"{pretty}\n\n[{footer}]"}
    if output == "code" and text and set_next_input is not None:
        set_next_input(code_blocks(text))
        markdown = f"{markdown}\n\n{CODE_NOTE}"
    body = markdown or "*(empty answer)*"
    if show_stats:
        body += f"\n\n<sub>{footer}</sub>"
    return {"text/markdown": body, "text/plain": plain}
