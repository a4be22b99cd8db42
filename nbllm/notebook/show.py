"""``%show MODEL``: a model's details as Markdown tables (``text/plain`` for terminals), or one field."""

from __future__ import annotations

from typing import Any

from nbllm.humanize import show_summary_rows
from nbllm.notebook.display import markdown_table
from nbllm.schema import ShowResponse
from nbllm.store.catalog import note_for

__all__ = ["ShowView"]


def _first_lines(text: str, n: int = 3) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return "\n".join(lines[:n]) + ("\n…" if len(lines) > n else "")


class ShowView:
    """The answer of ``/api/show`` (``.response``), displayed as ``ollama show`` would, in Markdown."""

    def __init__(self, model: str, response: ShowResponse, *, field: str | None = None, verbose: bool = False) -> None:
        self.model = model
        self.response = response
        self.field = field
        self.verbose = verbose

    def sections(self) -> list[tuple[str, list[list[str]]]]:
        """The titled tables of the summary."""
        resp = self.response
        params = [([*line.split(None, 1), ""])[:2] for line in (resp.parameters or "").splitlines() if line.strip()]
        note = note_for(resp.modelfile or "")
        out = [
            ("Model", show_summary_rows(resp)),
            ("Note", [[note]] if note else []),
            ("Capabilities", [[c] for c in resp.capabilities]),
            ("Parameters", params),
        ]
        if self.verbose:
            out.append(("Metadata", [[k, _short(v)] for k, v in sorted(resp.model_info.items())]))
        return [(title, rows) for title, rows in out if rows]

    def text(self) -> str:
        """Plain text (one field, or the summary)."""
        if self.field is not None:
            return str(getattr(self.response, self.field) or "")
        blocks = []
        for title, rows in self.sections():
            width = max(len(r[0]) for r in rows)
            blocks.append(
                f"  {title}\n" + "\n".join(f"    {r[0].ljust(width + 4)}{' '.join(r[1:])}".rstrip() for r in rows)
            )
        for title, value in (("System", self.response.system), ("License", self.response.license)):
            if value:
                blocks.append(f"  {title}\n" + "\n".join(f"    {line}" for line in _first_lines(value).splitlines()))
        return "\n\n".join(blocks) + "\n"

    def markdown(self) -> str:
        """Markdown (one field in a code block, or the summary tables)."""
        if self.field is not None:
            lang = "go" if self.field == "template" else ""
            return f"**{self.model}** {self.field}\n\n```{lang}\n{self.text().rstrip()}\n```"
        parts = [f"### {self.model}"]
        for title, rows in self.sections():
            headers = [title, ""] if len(rows[0]) > 1 else [title]
            parts.append(markdown_table(headers, [r[: len(headers)] for r in rows]))
        for title, value in (("System", self.response.system), ("License", self.response.license)):
            if value:
                quoted = "\n".join(f"> {line}" for line in _first_lines(value).splitlines())
                parts.append(f"**{title}**\n\n{quoted}")
        return "\n\n".join(parts)

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, str]:
        return {"text/markdown": self.markdown(), "text/plain": self.text()}

    def __repr__(self) -> str:
        return self.text()


def _short(value: Any) -> str:
    text = str(value)
    return text if len(text) <= 80 else text[:79] + "…"
