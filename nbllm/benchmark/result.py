"""A benchmark's results: tidy DataFrames (one row per request, one per run), CSV, vLLM JSON, plots."""

from __future__ import annotations

import html
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from nbllm.benchmark import metrics
from nbllm.benchmark.export import vllm_result
from nbllm.benchmark.records import RequestRecord, RunInfo
from nbllm.benchmark.spec import BenchSpec

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["BenchResult"]

_SUMMARY = [
    "model",
    "target",
    "load",
    "completed",
    "failed",
    "request_throughput",
    "output_throughput",
    "median_ttft_ms",
    "p99_ttft_ms",
    "median_tpot_ms",
    "p99_tpot_ms",
    "median_e2el_ms",
    "request_goodput",
]


_SHORT = {
    "completed": "ok",
    "request_throughput": "req/s",
    "output_throughput": "out tok/s",
    "median_ttft_ms": "TTFT p50",
    "p99_ttft_ms": "TTFT p99",
    "median_tpot_ms": "TPOT p50",
    "p99_tpot_ms": "TPOT p99",
    "median_e2el_ms": "E2EL p50",
    "request_goodput": "goodput/s",
}


@dataclass
class BenchResult:
    """Every request and every run of a benchmark; ``interrupted`` when Ctrl-C or Stop ended it early."""

    spec: BenchSpec
    runs_info: list[RunInfo]
    records: dict[int, list[RequestRecord]]
    requests: pd.DataFrame
    """One row per request: client-measured figures, token counts and their source, ``server_*`` timings."""
    runs: pd.DataFrame
    """One row per run: vLLM's aggregate metrics plus target, model, load and notes."""
    interrupted: bool = False

    @classmethod
    def build(
        cls, spec: BenchSpec, runs: list[RunInfo], records: dict[int, list[RequestRecord]], *, interrupted: bool
    ) -> BenchResult:
        """Compute the DataFrames from the raw records."""
        info_of = {info.run: info for info in runs}
        request_rows = [
            {
                "target": info_of[run].name or info_of[run].target,
                "url": info_of[run].target,
                "model": info_of[run].model,
                "load": info_of[run].point.label,
            }
            | metrics.request_row(rec, info_of[run])
            for run, recs in records.items()
            for rec in recs
        ]
        run_rows = [metrics.run_row(records[info.run], info, spec.slo) for info in runs]
        return cls(spec, runs, records, pd.DataFrame(request_rows), pd.DataFrame(run_rows), interrupted)

    def summary(self) -> pd.DataFrame:
        """The runs' headline columns."""
        if self.runs.empty:
            return self.runs
        return self.runs[[c for c in _SUMMARY if c in self.runs.columns]]

    def summary_text(self) -> str:
        """The headline columns as a fixed-width table (ms, tokens/s, requests/s), with the notes under it."""
        table = self.summary()
        if table.empty:
            return "no runs"
        shown = table.rename(columns=_SHORT)
        text = shown.to_string(index=False, float_format=lambda v: f"{v:.1f}", na_rep="-")
        notes = sorted(set(self.runs["dataset"]) | {f"server timings: {s}" for s in set(self.runs["server_timings"])})
        return "\n".join([text, "", *notes, "TTFT/TPOT/E2EL measured by this client from token arrival times."])

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, str]:
        notes = self.summary_text().split("\n\n", 1)[-1] if not self.runs.empty else ""
        head = "<p><b>interrupted</b>: the requests measured before the stop</p>" if self.interrupted else ""
        items = "".join(f"<li>{html.escape(line)}</li>" for line in notes.splitlines())
        table = self.summary().to_html(index=False, float_format=lambda v: f"{v:.1f}", na_rep="-")
        plain = (
            "interrupted: the requests measured before the stop\n" if self.interrupted else ""
        ) + self.summary_text()
        return {"text/plain": plain, "text/html": f"{head}{table}<ul>{items}</ul>"}

    def vllm_json(self) -> list[dict[str, Any]]:
        """Each run as ``vllm bench serve`` saves it (with ``--save-detailed``)."""
        spec = self.spec
        return [vllm_result(i, self.records[i.run], spec.slo, spec.label, spec.burstiness) for i in self.runs_info]

    def plots(self) -> dict[str, Figure]:
        """The standard plots, by file stem."""
        from nbllm.benchmark import plots

        return plots.all_plots(self.runs, self.requests)

    def save(self, directory: str | Path, *, with_plots: bool = True) -> list[Path]:
        """Write ``requests.csv``, ``runs.csv``, one vLLM JSON per run and the plots (PNG); return the paths."""
        root = Path(directory)
        root.mkdir(parents=True, exist_ok=True)
        written = [root / "requests.csv", root / "runs.csv"]
        self.requests.to_csv(written[0], index=False)
        self.runs.to_csv(written[1], index=False)
        for result in self.vllm_json():
            name = f"{result['backend']}-{result['request_rate']}qps"
            if result["max_concurrency"] is not None:
                name += f"-concurrency{result['max_concurrency']}"
            name += f"-{_slug(result['model_id'])}-run{result['nbllm']['run']}.json"
            path = root / name
            path.write_text(json.dumps(result, allow_nan=False) + "\n")
            written.append(path)
        if with_plots and not self.runs.empty:
            for stem, figure in self.plots().items():
                path = root / f"{stem}.png"
                figure.savefig(path, dpi=110, bbox_inches="tight")
                written.append(path)
        return written


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text)
