"""The GPU check's measurements and report: nbllm and llama-server side by side on one GGUF."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from bench import prompts, servers, workloads
from bench.clients import stream
from bench.env import Peer
from bench.gpu_build import Build
from bench.report import _side_by_side
from bench.workloads import median, median_ci

TTFT_SENTENCES = 112
"""About 2,000 tokens of prose (28 sentences are about 500)."""


def ttft_paired(ours: servers.Server, peer: servers.Server, *, rounds: int, ctx: int) -> dict[str, Any]:
    """Time to first token of a fresh ~2k-token prompt, alternating; each server's TTFT less its own prefill."""
    out: dict[str, Any] = {"ours": [], "theirs": [], "ours_prefill": [], "theirs_prefill": []}
    for r in range(rounds):
        for side in ("ours", "theirs") if r % 2 == 0 else ("theirs", "ours"):
            server = ours if side == "ours" else peer
            text = f"[{side} {r} {time.time_ns()}] " + prompts.long_prompt(TTFT_SENTENCES)
            timing = stream(server, text, 4, ctx=ctx)
            out[side].append(timing.ttft)
            out[f"{side}_prefill"].append(timing.server.get("prompt_eval_duration", 0.0) / 1e9)
    out["ours_overhead_ms"] = [1000 * (t - p) for t, p in zip(out["ours"], out["ours_prefill"], strict=True)]
    out["theirs_overhead_ms"] = [1000 * (t - p) for t, p in zip(out["theirs"], out["theirs_prefill"], strict=True)]
    return out


def run(a: argparse.Namespace, build: Build, model: Path, store: Path, name: str) -> dict[str, Any]:
    """Start both servers, measure, stop them."""
    log = a.work / "servers.log"
    threads = os.cpu_count() or 2
    peer = Peer("llama.cpp", Path(sys.executable), build.bin_dir)
    ours = servers.nbllm(store, parallel=a.parallel, threads=threads, log=log)
    ours.model = name
    results: dict[str, Any] = {"model": {"path": str(model), "bytes": model.stat().st_size}}
    with servers.running(ours):
        theirs = servers.llama_server(
            peer, model, n_ctx=a.ctx, parallel=a.parallel, threads=threads, log=log, gpu_layers=999
        )
        with servers.running(theirs):
            results["paired"] = workloads.paired(
                ours, theirs, clients=[1, a.parallel], n=a.tokens // 2, rounds=a.rounds, ctx=a.ctx
            )
            results["ttft"] = ttft_paired(ours, theirs, rounds=a.rounds, ctx=a.ctx)
            results["ps"] = httpx.get(ours.url + "/api/ps", timeout=30).json()
    results["config"] = {"parallel": a.parallel, "ctx": a.ctx, "tokens": a.tokens, "rounds": a.rounds}
    return results


def write(results: dict[str, Any], out: Path, stamp: str) -> Path:
    """``<stamp>.json`` and ``<stamp>.md``; the Markdown's path."""
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stamp}.json").write_text(json.dumps(results, indent=2))
    path = out / f"{stamp}.md"
    path.write_text("\n".join(report_lines(results, stamp)) + "\n")
    return path


def report_lines(results: dict[str, Any], stamp: str) -> list[str]:
    """The Markdown report: targets, then the numbers behind them."""
    paired, ttft, setup = results.get("paired", {}), results.get("ttft", {}), results.get("setup", {})
    parallel = str(results.get("config", {}).get("parallel", 8))
    lines = [f"# nbllm on a GPU — {stamp}", "", f"Setup: {json.dumps(setup)}", "", "## Targets", ""]
    lines += ["| target | measured | met |", "|---|---|---|"]
    rows = []
    if paired.get("1", {}).get("ratios"):
        rows.append(_side_by_side("1 client decode ≥ 0.9× llama-server", paired["1"]["ratios"], 0.9))
    if paired.get(parallel, {}).get("ratios"):
        label = f"{parallel} clients aggregate ≥ 1.0× llama-server -np {parallel}"
        rows.append(_side_by_side(label, paired[parallel]["ratios"], 1.0))
    if ttft.get("ours_overhead_ms"):
        over = median(ttft["ours_overhead_ms"])
        rows.append(("TTFT overhead ≤ 5 ms over nbllm's own prefill (~2k tokens)", f"{over:+.1f} ms", over <= 5))
    for m in results.get("ps", {}).get("models", []):
        label = f"ps: 100% GPU, size_vram == size ({m.get('name')})"
        value = f"{m.get('processor')}, size {m.get('size')}, size_vram {m.get('size_vram')}, {m.get('devices')}"
        rows.append((label, value, m.get("processor") == "100% GPU" and m.get("size") == m.get("size_vram")))
    for label, value, met in rows:
        lines.append(f"| {label} | {value} | {met if isinstance(met, str) else ('yes' if met else 'no')} |")
    lines += [
        "",
        "## Side by side (tokens/s)",
        "",
        "| clients | nbllm | llama-server | ratio (95% CI) | serving CPU µs/token |",
    ]
    lines.append("|---|---|---|---|---|")
    for k, d in sorted(paired.items(), key=lambda kv: int(kv[0])):
        ci = median_ci(d["ratios"])
        cpu = d.get("serving_us_per_token", {})
        cells = [k, f"{median(d['ours']):.1f}", f"{median(d['theirs']):.1f}", f"{median(d['ratios']):.3f}"]
        cells[-1] += f" ({ci[0]:.3f}–{ci[1]:.3f})" if ci else ""
        cells.append(f"{cpu.get('ours', 0):.0f} / {cpu.get('theirs', 0):.0f}")
        lines.append("| " + " | ".join(cells) + " |")
    if ttft:
        lines += ["", "## Time to first token, fresh ~2k-token prompt (ms, medians)", ""]
        lines += ["| server | TTFT | its own prefill | overhead |", "|---|---|---|---|"]
        for side, label in (("ours", "nbllm"), ("theirs", "llama-server")):
            t, p, o = (median(ttft[k]) for k in (side, f"{side}_prefill", f"{side}_overhead_ms"))
            lines.append(f"| {label} | {1000 * t:.1f} | {1000 * p:.1f} | {o:+.1f} |")
    return lines
