"""The benchmark's plots: throughput vs concurrency, TTFT/TPOT percentiles vs load, latency CDFs, Pareto.

Each function takes the result DataFrames and returns a ``matplotlib.figure.Figure`` (no pyplot
state, no GUI backend), one line per model and target, averaged over repetitions. Lines are named
``model @ target`` (the target's short name: a profile's, ``local`` or ``host:port``) when there are
several targets, so two servers never merge into one line.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = ["all_plots", "latency_cdf", "latency_vs_load", "pareto", "throughput_vs_concurrency"]


def _labels(frame: pd.DataFrame) -> pd.Series:
    """Each row's line: its model, and its target when the frame has several (server x model)."""
    targets = frame["url"] if "url" in frame else frame["target"]
    if targets.nunique() > 1:
        return frame["model"].astype(str) + " @ " + frame["target"].astype(str)
    return frame["model"].astype(str)


def _series(runs: pd.DataFrame) -> pd.DataFrame:
    """Runs with a ``series`` label, a numeric load ``x`` and its axis name in ``attrs``."""
    frame = runs.copy()
    frame["series"] = _labels(frame)
    closed = frame["request_rate"].map(math.isinf)
    if closed.any():
        frame = frame[closed].assign(x=frame.loc[closed, "max_concurrency"].fillna(frame["num_prompts"]))
        frame.attrs["xlabel"] = "concurrent requests"
    else:
        frame = frame.assign(x=frame["request_rate"])
        frame.attrs["xlabel"] = "request rate (req/s)"
    return frame


def _mean_by_load(frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    return frame.groupby(["series", "x"], sort=True)[columns].mean().reset_index()


def _finish(ax: Axes, title: str, xlabel: str, ylabel: str) -> None:
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize="small")


def throughput_vs_concurrency(runs: pd.DataFrame) -> Figure:
    """Output tokens/s and requests/s against the load."""
    frame = _series(runs)
    means = _mean_by_load(frame, ["output_throughput", "request_throughput"])
    fig = Figure(figsize=(10, 4))
    left, right = fig.subplots(1, 2)
    for name, group in means.groupby("series"):
        left.plot(group["x"], group["output_throughput"], marker="o", label=str(name))
        right.plot(group["x"], group["request_throughput"], marker="o", label=str(name))
    _finish(left, "Output throughput", frame.attrs["xlabel"], "output tokens/s")
    _finish(right, "Request throughput", frame.attrs["xlabel"], "requests/s")
    fig.tight_layout()
    return fig


def latency_vs_load(runs: pd.DataFrame) -> Figure:
    """Median, p90 and p99 of TTFT and TPOT against the load."""
    frame = _series(runs)
    cols = [f"{s}_{m}_ms" for m in ("ttft", "tpot") for s in ("median", "p90", "p99")]
    means = _mean_by_load(frame, cols)
    fig = Figure(figsize=(10, 4))
    axes = fig.subplots(1, 2)
    for ax, metric in zip(axes, ("ttft", "tpot"), strict=True):
        for i, (name, group) in enumerate(means.groupby("series")):
            color = f"C{i}"
            for stat, style in (("median", "-"), ("p90", "--"), ("p99", ":")):
                ax.plot(
                    group["x"], group[f"{stat}_{metric}_ms"], style, color=color, marker="o", label=f"{name} {stat}"
                )
        _finish(ax, f"{metric.upper()} percentiles", frame.attrs["xlabel"], f"{metric.upper()} (ms)")
    fig.tight_layout()
    return fig


def latency_cdf(requests: pd.DataFrame) -> Figure:
    """Empirical CDFs of TTFT and end-to-end latency per target, model and load (completed requests)."""
    done = requests[requests["status"] == "ok"]
    done = done.assign(series=_labels(done))
    fig = Figure(figsize=(10, 4))
    axes = fig.subplots(1, 2)
    for ax, column, title in zip(axes, ("ttft_ms", "e2el_ms"), ("TTFT", "End-to-end latency"), strict=True):
        for (series, load), group in done.groupby(["series", "load"], sort=False):
            values = np.sort(group[column].to_numpy(dtype=float))
            if values.size:
                ax.step(values, np.arange(1, values.size + 1) / values.size, where="post", label=f"{series} {load}")
        _finish(ax, f"{title} CDF", f"{title} (ms)", "fraction of requests")
    fig.tight_layout()
    return fig


def pareto(runs: pd.DataFrame) -> Figure:
    """Output tokens/s per user against total output tokens/s, each load a point; the frontier drawn."""
    frame = _series(runs)
    means = _mean_by_load(frame, ["output_tok_s_per_user", "output_throughput"])
    fig = Figure(figsize=(6, 4.5))
    ax = fig.subplots()
    for name, group in means.groupby("series"):
        ax.plot(group["output_tok_s_per_user"], group["output_throughput"], marker="o", label=str(name))
        for _, row in group.iterrows():
            ax.annotate(f"{row['x']:g}", (row["output_tok_s_per_user"], row["output_throughput"]), fontsize="x-small")
    front = _frontier(means[["output_tok_s_per_user", "output_throughput"]].dropna().to_numpy())
    if len(front) > 1:
        ax.plot(front[:, 0], front[:, 1], color="grey", alpha=0.5, linewidth=4, zorder=0, label="Pareto frontier")
    _finish(ax, "Per-user vs total throughput", "output tokens/s per user (1/TPOT)", "total output tokens/s")
    fig.tight_layout()
    return fig


def _frontier(points: np.ndarray) -> np.ndarray:
    """Points no other point beats on both axes, by increasing x."""
    if points.size == 0:
        return points
    order = points[np.argsort(-points[:, 0])]
    best, keep = -np.inf, []
    for x, y in order:
        if y > best:
            keep.append((x, y))
            best = y
    return np.array(sorted(keep))


def all_plots(runs: pd.DataFrame, requests: pd.DataFrame) -> dict[str, Figure]:
    """Every plot, by file stem."""
    return {
        "throughput_vs_concurrency": throughput_vs_concurrency(runs),
        "latency_vs_load": latency_vs_load(runs),
        "latency_cdf": latency_cdf(requests),
        "pareto": pareto(runs),
    }
