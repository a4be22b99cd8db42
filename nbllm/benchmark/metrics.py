"""Serving metrics from arrival times, with vLLM's definitions (``vllm bench serve``).

Per request, all measured by the client from ``time.perf_counter()`` stamps:

- TTFT: first token chunk's arrival minus the send time;
- E2EL: the stream's last event's arrival minus the send time;
- ITL: the gaps between successive token chunks;
- TPOT: ``(E2EL - TTFT) / (output_tokens - 1)``, for requests with more than one output token.

Output tokens are the server's count (``eval_count`` / ``usage.completion_tokens``), else the number
of chunks (then ``output_tokens_source`` says ``chunks``). Per run: means, medians, standard
deviations and p90/p99 over completed requests (ITL over every gap of every request); request,
output and total token throughput over the run's duration; goodput is the rate of completed
requests meeting every SLO (a request with one output token has TPOT 0 there, as in vLLM).
Failed requests are counted, never averaged in.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from nbllm.benchmark.records import RequestRecord, RunInfo
from nbllm.benchmark.spec import SLO

__all__ = ["PERCENTILES", "itls", "output_tokens", "request_row", "run_row", "stats", "tpot", "ttft"]

PERCENTILES = (90, 99)
_NAN = math.nan


def ttft(rec: RequestRecord) -> float:
    """Seconds from send to the first token chunk (NaN without one)."""
    return rec.arrivals[0] - rec.start if rec.arrivals else _NAN


def e2el(rec: RequestRecord) -> float:
    """Seconds from send to the stream's last event."""
    return rec.end - rec.start


def itls(rec: RequestRecord) -> list[float]:
    """Seconds between successive token chunks."""
    return [b - a for a, b in zip(rec.arrivals[:-1], rec.arrivals[1:], strict=True)]


def output_tokens(rec: RequestRecord) -> tuple[int, str]:
    """Generated tokens and where the count came from (``server`` or ``chunks``)."""
    if rec.output_tokens is not None:
        return rec.output_tokens, "server"
    return len(rec.arrivals), "chunks"


def input_tokens(rec: RequestRecord) -> tuple[int | None, str]:
    """Prompt tokens and where the count came from (``server``, ``dataset`` estimate, or ``none``)."""
    if rec.input_tokens is not None:
        return rec.input_tokens, "server"
    if rec.input_len is not None:
        return rec.input_len, "dataset"
    return None, "none"


def tpot(rec: RequestRecord) -> float:
    """Seconds per output token after the first (NaN for one token or fewer)."""
    n, _ = output_tokens(rec)
    return (e2el(rec) - ttft(rec)) / (n - 1) if n > 1 else _NAN


def _ms(seconds: float | None) -> float:
    return seconds * 1000 if seconds is not None else _NAN


def request_row(rec: RequestRecord, info: RunInfo) -> dict[str, Any]:
    """One tidy row: the request's measured figures (client) and what the server reported (``server_*``)."""
    ok = rec.ok
    out, out_source = output_tokens(rec)
    inp, inp_source = input_tokens(rec)
    gaps = itls(rec) if ok else []
    server = rec.server
    return {
        "run": rec.run,
        "request": rec.index,
        "status": rec.status,
        "error": rec.error,
        "start_s": rec.start - info.started if not math.isnan(rec.start) else _NAN,
        "queue_ms": _ms(rec.start - rec.queued) if not math.isnan(rec.start) else _NAN,
        "ttft_ms": _ms(ttft(rec)) if ok else _NAN,
        "tpot_ms": _ms(tpot(rec)) if ok else _NAN,
        "itl_mean_ms": _ms(float(np.mean(gaps))) if gaps else _NAN,
        "itl_max_ms": _ms(max(gaps)) if gaps else _NAN,
        "e2el_ms": _ms(e2el(rec)) if ok else _NAN,
        "input_tokens": inp,
        "input_tokens_source": inp_source,
        "output_tokens": out if ok else 0,
        "output_tokens_source": out_source,
        "cached_tokens": rec.cached_tokens,
        "chunks": len(rec.arrivals),
        "done_reason": rec.done_reason,
        "server_timings": server.source if server else None,
        "server_ttft_ms": _ms(server.ttft_s) if server else _NAN,
        "server_tpot_ms": _ms(server.tpot_s) if server else _NAN,
        "server_prompt_eval_ms": _ms(server.prompt_eval_s) if server else _NAN,
        "server_load_ms": _ms(server.load_s) if server else _NAN,
    }


def stats(name: str, values: Sequence[float]) -> dict[str, float]:
    """``mean_X_ms``, ``median_X_ms``, ``std_X_ms``, ``p90_X_ms``, ``p99_X_ms`` of seconds (NaN when empty)."""
    arr = np.asarray(values, dtype=float) * 1000
    empty = arr.size == 0
    row = {
        f"mean_{name}_ms": _NAN if empty else float(arr.mean()),
        f"median_{name}_ms": _NAN if empty else float(np.median(arr)),
        f"std_{name}_ms": _NAN if empty else float(arr.std()),
    }
    for p in PERCENTILES:
        row[f"p{p}_{name}_ms"] = _NAN if empty else float(np.percentile(arr, p))
    return row


def _good(rec: RequestRecord, slo: SLO) -> bool:
    per_token = tpot(rec)
    limits = (
        (slo.ttft_ms, ttft(rec)),
        (slo.tpot_ms, 0.0 if math.isnan(per_token) else per_token),
        (slo.e2el_ms, e2el(rec)),
    )
    return all(limit is None or value * 1000 <= limit for limit, value in limits)


def _peaks(done: list[RequestRecord]) -> tuple[float, int]:
    """Most output chunks in one second of the run, and most requests in flight at once."""
    if not done:
        return 0.0, 0
    origin = min(r.start for r in done)
    buckets = np.bincount([int(t - origin) for r in done for t in r.arrivals] or [0])
    events = sorted([(r.start, 1) for r in done] + [(r.end, -1) for r in done])
    level = peak = 0
    for _, delta in events:
        level += delta
        peak = max(peak, level)
    return float(buckets.max()), peak


def run_row(records: list[RequestRecord], info: RunInfo, slo: SLO) -> dict[str, Any]:
    """One run's aggregate row (vLLM's ``BenchmarkMetrics`` fields, plus identification and notes)."""
    done = [r for r in records if r.ok]
    failed = sum(r.status == "error" for r in records)
    duration = info.duration
    outs = [output_tokens(r)[0] for r in done]
    ins = [input_tokens(r)[0] or 0 for r in done]
    tpots = [tpot(r) for r in done if not math.isnan(tpot(r))]
    per_user = [1 / t for t in tpots if t > 0]
    peak_tokens, peak_concurrency = _peaks(done)
    good = sum(_good(r, slo) for r in done) if slo else None
    servers = sorted({r.server.source for r in done if r.server})
    row: dict[str, Any] = {
        "run": info.run,
        "target": info.name or info.target,
        "url": info.target,
        "backend": info.backend,
        "model": info.model,
        "endpoint": info.endpoint,
        "load": info.point.label,
        "request_rate": info.point.rate,
        "max_concurrency": info.point.concurrency,
        "repetition": info.repetition,
        "num_prompts": info.num_prompts,
        "interrupted": info.interrupted,
        "duration_s": duration,
        "completed": len(done),
        "failed": failed,
        "cancelled": sum(r.status in ("cancelled", "running") for r in records),
        "unsent": sum(r.status in ("unsent", "pending") for r in records),
        "total_input_tokens": sum(ins),
        "total_output_tokens": sum(outs),
        "request_throughput": len(done) / duration if duration > 0 else _NAN,
        "request_goodput": (good / duration if duration > 0 else _NAN) if good is not None else _NAN,
        "output_throughput": sum(outs) / duration if duration > 0 else _NAN,
        "total_token_throughput": (sum(ins) + sum(outs)) / duration if duration > 0 else _NAN,
        "output_tok_s_per_user": float(np.mean(per_user)) if per_user else _NAN,
        "max_output_tokens_per_s": peak_tokens,
        "max_concurrent_requests": peak_concurrency,
    }
    row.update(stats("ttft", [ttft(r) for r in done]))
    row.update(stats("tpot", tpots))
    row.update(stats("itl", [g for r in done for g in itls(r)]))
    row.update(stats("e2el", [e2el(r) for r in done]))
    row["measured"] = "client arrival times: TTFT, TPOT, ITL, E2EL, throughput"
    row["server_timings"] = ", ".join(servers) or "none reported"
    row["token_counts"] = "server" if all(r.output_tokens is not None for r in done) else "chunks (some or all)"
    row["dataset"] = info.dataset_note
    return row
