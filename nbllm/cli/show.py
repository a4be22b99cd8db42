"""``nbllm show``'s text, laid out as ``ollama show`` lays it out."""

from __future__ import annotations

from collections.abc import Mapping

from nbllm.schema import ShowResponse

__all__ = ["format_show"]


def _section(title: str, rows: list[list[str]]) -> list[str]:
    if not rows:
        return []
    width = max(len(r[0]) for r in rows)
    lines = [f"  {title}"]
    for row in rows:
        lines.append(
            ("    " + row[0].ljust(width + 4) + " ".join(row[1:])).rstrip() if len(row) > 1 else f"    {row[0]}"
        )
    return [*lines, ""]


def format_show(resp: ShowResponse, flags: Mapping[str, bool]) -> str:
    """The text for the flags given (``--template`` prints the template, no flag prints the summary)."""
    if flags.get("modelfile"):
        return resp.modelfile
    if flags.get("template"):
        return resp.template or ""
    if flags.get("parameters"):
        return resp.parameters or ""
    if flags.get("system"):
        return resp.system or ""
    if flags.get("show_license"):
        return resp.license or ""
    info = resp.model_info
    arch = str(info.get("general.architecture", resp.details.family))
    model_rows = [
        ["architecture", arch],
        ["parameters", resp.details.parameter_size],
        ["context length", str(info.get(f"{arch}.context_length", ""))],
        ["embedding length", str(info.get(f"{arch}.embedding_length", ""))],
        ["quantization", resp.details.quantization_level],
    ]
    lines = _section("Model", [r for r in model_rows if r[1]])
    lines += _section("Capabilities", [[c] for c in resp.capabilities])
    params = [line.split(None, 1) for line in (resp.parameters or "").splitlines() if line.strip()]
    lines += _section("Parameters", params)
    if resp.system:
        lines += _section("System", [[line] for line in resp.system.strip().splitlines()[:2]])
    if resp.license:
        lines += _section("License", [[line.strip()] for line in resp.license.strip().splitlines() if line.strip()][:2])
    if flags.get("verbose"):
        meta = [[k, _short(v)] for k, v in sorted(info.items())]
        lines += _section("Metadata", meta)
        if resp.tensors:
            lines += _section("Tensors", [[t["name"], t["type"], str(t["shape"])] for t in resp.tensors])
    return "\n".join(["", *lines]).rstrip() + "\n"


def _short(value: object) -> str:
    text = str(value) if value is not None else "[...]"
    return text if len(text) <= 60 else text[:57] + "..."
