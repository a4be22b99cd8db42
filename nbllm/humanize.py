"""Sizes, times and tables as Ollama's CLI prints them (shared by the CLI and the notebook)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import TYPE_CHECKING

from nbllm.duration import format_duration

if TYPE_CHECKING:  # a type only: importing the schema (pydantic) here would slow `nbllm --help`
    from nbllm.schema import ShowResponse

__all__ = [
    "format_duration",
    "human_bytes",
    "human_duration",
    "human_time",
    "show_summary_rows",
    "table",
    "timing_summary",
]


def human_bytes(size: int) -> str:
    """Decimal units, as Ollama's ``format.HumanBytes``.

    >>> human_bytes(98_375_650), human_bytes(1_321_098_329), human_bytes(6_500), human_bytes(81)
    ('98 MB', '1.3 GB', '6.5 KB', '81 B')
    """
    for unit, scale in (("TB", 10**12), ("GB", 10**9), ("MB", 10**6), ("KB", 10**3)):
        if size >= scale:
            value = size / scale
            if value >= 10 or value == math.trunc(value):
                return f"{int(value)} {unit}"
            return f"{value:.1f} {unit}"
    return f"{size} B"


def human_duration(seconds: float) -> str:
    """A rough length of time, as Ollama's ``format.HumanDuration``.

    >>> human_duration(33), human_duration(250), human_duration(20 * 3600), human_duration(0.2)
    ('33 seconds', '4 minutes', '20 hours', 'Less than a second')
    """
    s = int(seconds)
    if s < 1:
        return "Less than a second"
    if s == 1:
        return "1 second"
    if s < 60:
        return f"{s} seconds"
    minutes = int(seconds // 60)
    if minutes == 1:
        return "About a minute"
    if minutes < 60:
        return f"{minutes} minutes"
    hours = round(seconds / 3600)
    if hours == 1:
        return "About an hour"
    if hours < 48:
        return f"{hours} hours"
    if hours < 24 * 7 * 2:
        return f"{hours // 24} days"
    if hours < 24 * 30 * 2:
        return f"{hours // 24 // 7} weeks"
    if hours < 24 * 365 * 2:
        return f"{hours // 24 // 30} months"
    return f"{int(seconds / 86400 / 365)} years"


def human_time(moment: datetime, now: datetime | None = None) -> str:
    """``33 seconds ago``, ``4 minutes from now`` or ``Forever`` (more than 20 years ahead)."""
    now = now or datetime.now(timezone.utc)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    delta = (now - moment).total_seconds()
    if delta < -20 * 365 * 86400:
        return "Forever"
    if delta < 0:
        return human_duration(-delta) + " from now"
    return human_duration(delta) + " ago"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned columns separated by four spaces (Ollama's tablewriter settings).

    >>> print(table(["NAME", "ID"], [["llama3.2:1b", "baf6a787fdff"]]))
    NAME           ID
    llama3.2:1b    baf6a787fdff
    """
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))]
    lines = []
    for row in [headers, *rows]:
        cells = [str(c).ljust(widths[i] + 4) if i < len(row) - 1 else str(c) for i, c in enumerate(row)]
        lines.append("".join(cells).rstrip())
    return "\n".join(lines)


def timing_summary(
    *,
    total_duration: int | None,
    load_duration: int | None,
    prompt_eval_count: int | None,
    prompt_eval_duration: int | None,
    eval_count: int | None,
    eval_duration: int | None,
) -> str:
    """The block ``ollama run --verbose`` prints after an answer (durations in nanoseconds)."""
    lines = []
    if total_duration:
        lines.append(f"total duration:       {format_duration(total_duration / 1e9)}")
    if load_duration:
        lines.append(f"load duration:        {format_duration(load_duration / 1e9)}")
    if prompt_eval_count:
        lines.append(f"prompt eval count:    {prompt_eval_count} token(s)")
    if prompt_eval_duration:
        lines.append(f"prompt eval duration: {format_duration(prompt_eval_duration / 1e9)}")
        lines.append(f"prompt eval rate:     {(prompt_eval_count or 0) / (prompt_eval_duration / 1e9):.2f} tokens/s")
    if eval_count:
        lines.append(f"eval count:           {eval_count} token(s)")
    if eval_duration:
        lines.append(f"eval duration:        {format_duration(eval_duration / 1e9)}")
        lines.append(f"eval rate:            {(eval_count or 0) / (eval_duration / 1e9):.2f} tokens/s")
    return "\n".join(lines)


def show_summary_rows(resp: ShowResponse) -> list[list[str]]:
    """The "Model" block of ``ollama show``: architecture, parameters, context and embedding length, quantization."""
    info = resp.model_info
    arch = str(info.get("general.architecture") or resp.details.family)
    rows = [["architecture", arch], ["parameters", resp.details.parameter_size]]
    for label, key in (("context length", "context_length"), ("embedding length", "embedding_length")):
        value = info.get(f"{arch}.{key}")
        if value is not None:
            rows.append([label, str(value)])
    rows.append(["quantization", resp.details.quantization_level])
    return [r for r in rows if r[1]]
