"""``nbllm show``'s text, laid out as ``ollama show`` lays it out."""

from __future__ import annotations

import textwrap
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from nbllm.humanize import show_summary_rows
from nbllm.schema import ShowResponse
from nbllm.store.catalog import note_for

__all__ = ["format_show", "go_float", "head", "metadata_value"]


def _section(title: str, rows: list[list[str]]) -> list[str]:
    """A titled block whose columns are padded to the widest cell plus four spaces (Ollama's tablewriter)."""
    if not rows:
        return []
    columns = max(len(r) for r in rows)
    widths = [max(len(r[i]) for r in rows if i < len(r)) for i in range(columns)]
    lines = [f"  {title}"]
    for row in rows:
        cells = [cell.ljust(widths[i] + 4) for i, cell in enumerate(row)]
        lines.append(("    " + "".join(cells)).rstrip())
    return [*lines, ""]


def head(text: str, n: int) -> list[list[str]]:
    """The first ``n`` non-blank lines, then ``...`` if there were more.

    >>> head("a\\n\\nb\\nc", 2)
    [['a'], ['b'], ['...']]
    """
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return [[line] for line in lines[:n]] + ([["..."]] if len(lines) > n else [])


def go_float(value: float) -> str:
    """A JSON number as Go's ``%g`` prints a float64 (shortest digits; exponent form from 1e+06).

    >>> go_float(131072), go_float(1000000), go_float(0.00001), go_float(0.5), go_float(10000.0)
    ('131072', '1e+06', '1e-05', '0.5', '10000')
    """
    number = Decimal(repr(float(value))).normalize()
    exponent, digits = number.adjusted(), len(number.as_tuple().digits)
    if exponent < -4 or exponent >= 6:
        return f"{float(value):.{digits - 1}e}"
    return format(number, "f")


def metadata_value(value: Any) -> str:
    """A metadata value as ``ollama show -v`` prints it (arrays cut to about 10 columns).

    >>> metadata_value(["<unk>", "<s>", "</s>", "a"]), metadata_value(1e-05), metadata_value(True)
    ('[<unk> ...+3 more]', '1e-05', 'true')
    """
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return go_float(value)
    if isinstance(value, list):
        shown, width = [], 1
        for i, item in enumerate(value):
            size = len(str(item)) + (2 if i else 0)
            if width + size > 10 and i > 0:
                break
            width += size
            shown.append(str(item))
        more = f" ...+{len(value) - len(shown)} more" if len(shown) < len(value) else ""
        return "[" + " ".join(shown) + more + "]"
    if value is None:
        return "[]"
    return str(value)


def format_show(resp: ShowResponse, flags: Mapping[str, bool]) -> str:
    """The text for the flags given (``--template`` prints the template, no flag prints the summary)."""
    for flag, text in (
        ("modelfile", resp.modelfile),
        ("template", resp.template),
        ("parameters", resp.parameters),
        ("system", resp.system),
        ("show_license", resp.license),
    ):
        if flags.get(flag):
            return text or ""
    lines = _section("Model", show_summary_rows(resp))
    note = note_for(resp.modelfile or "")
    if note:
        lines += _section("Note", [[line] for line in textwrap.wrap(note, 96, break_on_hyphens=False)])
    lines += _section("Capabilities", [[c] for c in resp.capabilities])
    params = [line.split(None, 1) for line in (resp.parameters or "").splitlines() if line.strip()]
    lines += _section("Parameters", params)
    if flags.get("verbose"):
        meta = [[k, metadata_value(v)] for k, v in sorted(resp.model_info.items())]
        lines += _section("Metadata", meta)
        if resp.tensors:
            lines += _section("Tensors", [[t["name"], t["type"], str(t["shape"])] for t in resp.tensors])
    if resp.system:
        lines += _section("System", head(resp.system, 2))
    if resp.license:
        lines += _section("License", head(resp.license, 2))
    return "\n".join(lines).rstrip("\n") + "\n"
