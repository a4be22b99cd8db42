"""Matplotlib comparisons of timing stats: generation speed per model with its spread, and where the time went.

Figures are built with ``matplotlib.figure.Figure`` (no pyplot state, no backend needed) and shown
as a PNG mimebundle, so they render in any frontend and in saved notebooks. The PNG is white with a
thin grey frame, so that it reads as a picture on a dark theme too; the legend sits under the bars
it explains, never over them.
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

__all__ = ["ComparisonPlot", "comparison_plot"]

_FRAME = "#b0b0b0"
_STAGES = (
    ("load_s", "load", "#c7c7c7"),
    ("prompt_eval_s", "prompt eval", "#9ecae1"),
    ("eval_s", "generation", "#3182bd"),
)


@dataclass
class ComparisonPlot:
    """A drawn comparison: ``.figure`` is the matplotlib Figure; ``.stats`` the numbers plotted."""

    figure: Figure
    stats: pd.DataFrame

    def png(self) -> bytes:
        """The figure as PNG bytes."""
        buf = io.BytesIO()
        self.figure.savefig(buf, format="png", dpi=100)
        return buf.getvalue()

    def savefig(self, *args: Any, **kwargs: Any) -> None:
        """``Figure.savefig``."""
        self.figure.savefig(*args, **kwargs)

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, str]:
        models = ", ".join(str(m) for m in self.stats.index)
        return {
            "image/png": base64.b64encode(self.png()).decode("ascii"),
            "text/plain": f"<nbllm timing comparison: {models}>",
        }


def model_stats(frame: pd.DataFrame) -> pd.DataFrame:
    """Per model: runs, mean and spread of generation tok/s, mean seconds of load, prompt eval and generation."""
    grouped = frame.groupby("model", sort=False)
    stats = grouped.agg(
        runs=("model", "size"),
        eval_tok_s=("eval_tok_s", "mean"),
        eval_tok_s_std=("eval_tok_s", "std"),
        prompt_tok_s=("prompt_tok_s", "mean"),
        ttft_s=("ttft_s", "mean"),
        load_s=("load_s", "mean"),
        prompt_eval_s=("prompt_eval_s", "mean"),
        eval_s=("eval_s", "mean"),
    )
    return stats.fillna({"eval_tok_s_std": 0.0, "load_s": 0.0, "prompt_eval_s": 0.0, "eval_s": 0.0})


def comparison_plot(frame: pd.DataFrame, *, title: str | None = None) -> ComparisonPlot:
    """Two panels: generation tok/s per model (mean, spread and every run), and stacked mean time per stage."""
    from matplotlib.figure import Figure

    if frame.empty:
        raise ValueError("no timings to plot yet: run %%chat, %%generate or %bench first")
    stats = model_stats(frame)
    models = [str(m) for m in stats.index]
    fig = Figure(
        figsize=(11, 0.6 * len(models) + 3.0),
        layout="constrained",
        facecolor="white",
        edgecolor=_FRAME,
        linewidth=1.5,
    )
    speed, stages = fig.subplots(1, 2)
    positions = list(range(len(models)))
    speed.barh(positions, stats["eval_tok_s"], xerr=stats["eval_tok_s_std"], color="#3182bd", alpha=0.7, capsize=4)
    for pos, model in zip(positions, stats.index, strict=True):
        runs = frame.loc[frame["model"] == model, "eval_tok_s"].dropna()
        speed.scatter(runs, [pos] * len(runs), color="black", s=12, zorder=3)
    speed.set_yticks(positions, models)
    speed.invert_yaxis()
    speed.set_xlabel("generation speed (tokens/s)")
    speed.set_title("tokens/s per model (mean ± sd, dots = runs)")
    left = [0.0] * len(models)
    for column, label, color in _STAGES:
        values = [float(v) for v in stats[column]]
        stages.barh(positions, values, left=left, color=color, label=label)
        left = [a + b for a, b in zip(left, values, strict=True)]
    stages.set_yticks(positions, models)
    stages.invert_yaxis()
    stages.set_xlabel("seconds (mean per response)")
    stages.set_title("where the time goes")
    handles, labels = stages.get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower right", ncols=len(_STAGES), fontsize="small", frameon=False)
    if title:
        fig.suptitle(title)
    return ComparisonPlot(figure=fig, stats=stats)
