"""The JSON ``vllm bench serve --save-result --save-detailed`` writes, one object per run.

Field names and units follow vLLM's ``vllm/benchmarks/serve.py``: per-request lists in seconds
(``ttfts``, ``itls``, ``latencies``, ``start_times``), aggregates in milliseconds
(``mean_ttft_ms``, ``p99_tpot_ms``, ...), ``request_rate`` ``"inf"`` for all-at-once, and
``request_goodput`` null without SLOs. ``backend`` is ``ollama``, ``ollama-chat``, ``openai`` or
``openai-chat``. nbllm's own notes (SLOs, which figures the server timed) sit under ``"nbllm"``.
"""

from __future__ import annotations

import math
from typing import Any

from nbllm.benchmark import metrics
from nbllm.benchmark.records import RequestRecord, RunInfo
from nbllm.benchmark.spec import SLO

__all__ = ["vllm_result"]

_AGGREGATES = (
    "duration_s",
    "completed",
    "failed",
    "total_input_tokens",
    "total_output_tokens",
    "request_throughput",
    "request_goodput",
    "output_throughput",
    "total_token_throughput",
    "max_output_tokens_per_s",
    "max_concurrent_requests",
)


def _clean(value: Any) -> Any:
    """NaN (not valid JSON) becomes null; numpy scalars become Python numbers."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if hasattr(value, "item"):
        return _clean(value.item())
    return value


def vllm_result(
    info: RunInfo, records: list[RequestRecord], slo: SLO, label: str | None = None, burstiness: float = 1.0
) -> dict[str, Any]:
    """One run in vLLM's result layout."""
    row = metrics.run_row(records, info, slo)
    rate = info.point.rate
    result: dict[str, Any] = {
        "date": info.date,
        "endpoint_type": info.backend,
        "backend": info.backend,
        "label": label or info.backend,
        "model_id": info.model,
        "tokenizer_id": info.model,
        "num_prompts": info.num_prompts,
        "request_rate": "inf" if math.isinf(rate) else rate,
        "burstiness": burstiness,
        "max_concurrency": info.point.concurrency,
    }
    for key in _AGGREGATES:
        result["duration" if key == "duration_s" else key] = _clean(row[key])
    if not slo:
        result["request_goodput"] = None
    ok = [r.ok for r in records]
    result.update(
        {
            "input_lens": [metrics.input_tokens(r)[0] or 0 for r in records],
            "output_lens": [metrics.output_tokens(r)[0] if good else 0 for r, good in zip(records, ok, strict=True)],
            "ttfts": [metrics.ttft(r) if good else 0.0 for r, good in zip(records, ok, strict=True)],
            "itls": [metrics.itls(r) if good else [] for r, good in zip(records, ok, strict=True)],
            "latencies": [metrics.e2el(r) if good else 0.0 for r, good in zip(records, ok, strict=True)],
            "start_times": [r.start for r in records],
            "generated_texts": ["".join(r.text) for r in records],
            "errors": [r.error or "" for r in records],
        }
    )
    for name in ("ttft", "tpot", "itl", "e2el"):
        keys = [f"mean_{name}_ms", f"median_{name}_ms", f"std_{name}_ms"]
        for key in keys + [f"p{p}_{name}_ms" for p in metrics.PERCENTILES]:
            result[key] = _clean(row[key])
    result["nbllm"] = {
        "run": info.run,
        "target": info.name or info.target,
        "url": info.target,
        "load": info.point.label,
        "repetition": info.repetition,
        "interrupted": info.interrupted,
        "goodput_slo_ms": slo.as_dict(),
        "measured": row["measured"],
        "server_timings": row["server_timings"],
        "token_counts": row["token_counts"],
        "dataset": row["dataset"],
    }
    return result
