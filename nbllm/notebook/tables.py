"""``%list`` and ``%ps`` as pandas DataFrames (Ollama's columns, plus raw numbers to compute with)."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from nbllm.humanize import human_bytes, human_time
from nbllm.schema import ListResponse, ProcessResponse

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["LIST_COLUMNS", "PS_COLUMNS", "models_frame", "ps_frame"]

LIST_COLUMNS = ["name", "id", "size", "modified", "family", "parameters", "quantization", "bytes", "modified_at"]
PS_COLUMNS = ["name", "id", "size", "processor", "context", "until", "bytes", "size_vram", "expires_at"]


def _when(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def models_frame(resp: ListResponse) -> pd.DataFrame:
    """``ollama list`` as a DataFrame."""
    import pandas as pd

    rows = []
    for m in resp.models:
        modified = _when(m.modified_at)
        rows.append(
            {
                "name": m.name or m.model,
                "id": m.digest.removeprefix("sha256:")[:12],
                "size": human_bytes(m.size),
                "modified": human_time(modified) if modified else "",
                "family": m.details.family,
                "parameters": m.details.parameter_size,
                "quantization": m.details.quantization_level,
                "bytes": m.size,
                "modified_at": modified,
            }
        )
    return pd.DataFrame(rows, columns=LIST_COLUMNS)


def ps_frame(resp: ProcessResponse) -> pd.DataFrame:
    """``ollama ps`` as a DataFrame."""
    import pandas as pd

    from nbllm.service import processor_text

    rows = []
    for m in resp.models:
        expires = _when(m.expires_at)
        rows.append(
            {
                "name": m.name or m.model,
                "id": m.digest.removeprefix("sha256:")[:12],
                "size": human_bytes(m.size),
                "processor": processor_text(m),
                "context": m.context_length,
                "until": human_time(expires) if expires else "",
                "bytes": m.size,
                "size_vram": m.size_vram,
                "expires_at": expires,
            }
        )
    return pd.DataFrame(rows, columns=PS_COLUMNS)
