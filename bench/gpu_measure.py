"""The GPU check's measurements and report: nbllm and llama-server side by side on one GGUF."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

from bench import prompts, servers, ttft_path, workloads
from bench.clients import stream
from bench.env import Peer
from bench.gpu_build import Build
from bench.report import _side_by_side
from bench.workloads import median, median_ci

TTFT_SENTENCES = 112
"""About 2,000 tokens of prose (28 sentences are about 500)."""
TTFT_LONG_SENTENCES = 200
"""About 3,400 tokens: within the bench's 4,096-token context."""


def ttft_paired(
    ours: servers.Server, peer: servers.Server, *, rounds: int, ctx: int, sentences: int = TTFT_SENTENCES
) -> dict[str, Any]:
    """Time to first token of a fresh ~2k-token prompt (``sentences`` of prose), alternating; each server's TTFT
    less its own prefill."""
    out: dict[str, Any] = {"ours": [], "theirs": [], "ours_prefill": [], "theirs_prefill": [], "sentences": sentences}
    for r in range(rounds):
        for side in ("ours", "theirs") if r % 2 == 0 else ("theirs", "ours"):
            server = ours if side == "ours" else peer
            text = f"[{side} {r} {time.time_ns()}] " + prompts.long_prompt(sentences)
            timing = stream(server, text, 4, ctx=ctx)
            out[side].append(timing.ttft)
            out[f"{side}_prefill"].append(timing.server.get("prompt_eval_duration", 0.0) / 1e9)
    out["ours_overhead_ms"] = [1000 * (t - p) for t, p in zip(out["ours"], out["ours_prefill"], strict=True)]
    out["theirs_overhead_ms"] = [1000 * (t - p) for t, p in zip(out["theirs"], out["theirs_prefill"], strict=True)]
    return out


def cpu_per_token(ours: servers.Server, peer: servers.Server, *, rounds: int, n: int, ctx: int) -> dict[str, Any]:
    """Each server's whole process CPU per token streamed (every thread: on a GPU the CPU threads idle)."""
    out: dict[str, Any] = {"ours": [], "theirs": [], "ours_rate": [], "theirs_rate": []}
    for r in range(rounds):
        for side in ("ours", "theirs") if r % 2 == 0 else ("theirs", "ours"):
            server = ours if side == "ours" else peer
            before = server.cpu()[0]
            timing = stream(server, prompts.STORY, n, ctx=ctx)
            out[side].append(1e6 * (server.cpu()[0] - before) / max(timing.tokens, 1))
            out[f"{side}_rate"].append(timing.rate)
    return out


def _pyspy(work: Path) -> str | None:
    found = shutil.which("py-spy")
    local = work / "site" / "bin" / "py-spy"
    return found or (str(local) if local.is_file() else None)


def profile(
    ours: servers.Server, work: Path, out: Path, *, seconds: float, ctx: int, clients: int = 1
) -> dict[str, Any]:
    """Sample nbllm's Python threads with py-spy while ``clients`` clients stream: where a token's CPU goes."""
    tool = _pyspy(work)
    if tool is None or seconds <= 0:
        return {"skipped": "py-spy not found" if tool is None else "--profile-s 0"}
    raw = out / ("pyspy-raw.txt" if clients == 1 else f"pyspy-raw-{clients}.txt")
    raw.unlink(missing_ok=True)
    # --native: the C frames under a ctypes call (llama_decode, the CUDA runtime) are where a GPU's time hides;
    # it pauses the process for each sample, so 100 samples a second
    cmd = [tool, "record", "-p", str(ours.proc.pid), "-d", str(max(1, round(seconds))), "-r", "100", "-f", "raw"]
    cmd += ["-o", str(raw), "--threads", "--native"]
    spy = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    started = time.monotonic()

    def client(_: int) -> int:
        done = 0
        while spy.poll() is None and time.monotonic() - started < seconds + 30:
            done += stream(ours, prompts.STORY, 1500, ctx=ctx).tokens
        return done

    with ThreadPoolExecutor(clients) as pool:
        tokens = sum(pool.map(client, range(clients)))
    try:
        said = spy.communicate(timeout=30)[0].decode(errors="replace")[-2000:]
    except subprocess.TimeoutExpired:
        spy.kill()
        said = "py-spy did not finish" + spy.communicate()[0].decode(errors="replace")[-2000:]
    if not raw.is_file():
        return {"error": said}
    return {"tokens": tokens, "clients": clients, "py_spy": said, **summarize(raw.read_text())}


def summarize(raw: str, top: int = 15) -> dict[str, Any]:
    """py-spy's raw stacks: samples per thread, and each thread's busiest frames (self and inclusive)."""
    threads: dict[str, dict[str, Any]] = {}
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = stack.split(";")
        t = threads.setdefault(frames[0], {"samples": 0, "self": {}, "lines": {}, "inclusive": {}})
        t["samples"] += int(count)
        names = [f.rsplit(":", 1)[0] + ")" if ":" in f else f for f in frames[1:]]
        if names:
            t["self"][names[-1]] = t["self"].get(names[-1], 0) + int(count)
            python = [f for f in frames[1:] if f.endswith(")") and ".py:" in f]  # the innermost Python line
            if python:
                t["lines"][python[-1]] = t["lines"].get(python[-1], 0) + int(count)
        for n in set(names):
            t["inclusive"][n] = t["inclusive"].get(n, 0) + int(count)
    for t in threads.values():
        for key in ("self", "lines", "inclusive"):
            t[key] = dict(sorted(t[key].items(), key=lambda kv: -kv[1])[:top])
    return {"threads": dict(sorted(threads.items(), key=lambda kv: -kv[1]["samples"]))}


def ttft_steps(store: Path, name: str, work: Path, *, rounds: int, pause: float) -> dict[str, Any]:
    """``bench.ttft_path`` on this build: each step of a first token's path, medians with their 95% CI."""
    out = work / f"ttft-path-{pause:g}.json"
    ttft_path.main(
        ["--store", str(store), "--model", name, "--rounds", str(rounds), "--pause", str(pause), "--out", str(out)]
    )
    result = json.loads(out.read_text())
    return {"command": result["command"], "pause": pause, "medians": result["medians"]}


def load_extra(ours: servers.Server, names: list[str]) -> dict[str, Any]:
    """Load each model (an empty prompt loads without generating) and say how long it took."""
    out = {}
    for name in names:
        r = httpx.post(ours.url + "/api/generate", json={"model": name, "prompt": ""}, timeout=300)
        out[name] = {"status": r.status_code, "body": r.json() if r.status_code == 200 else r.text[:500]}
    return out


def _stage(results: dict[str, Any], key: str, stage: Callable[[], Any], save: Callable[[dict[str, Any]], None]) -> None:
    """One measurement into ``results[key]`` (its error instead, so the stages after it still run), then save."""
    try:
        results[key] = stage()
    except Exception as exc:  # one failed stage must not lose the others on a scarce GPU
        results[key] = {"error": f"{type(exc).__name__}: {exc}"}
        print(f"stage {key} failed: {exc!r}", flush=True)
    save(results)


def run(
    a: argparse.Namespace,
    build: Build,
    model: Path,
    store: Path,
    name: str,
    *,
    extra: list[str] | None = None,
    save: Callable[[dict[str, Any]], None] = lambda _results: None,
) -> dict[str, Any]:
    """Start both servers, measure (``save`` after each stage), stop them."""
    log = a.work / "servers.log"
    threads = os.cpu_count() or 2
    peer = Peer("llama.cpp", Path(sys.executable), build.bin_dir)
    ours = servers.nbllm(store, parallel=a.parallel, threads=threads, log=log)
    ours.model = name
    results: dict[str, Any] = {"model": {"path": str(model), "bytes": model.stat().st_size}}
    results["config"] = {"parallel": a.parallel, "ctx": a.ctx, "tokens": a.tokens, "rounds": a.rounds}
    with servers.running(ours):
        theirs = servers.llama_server(
            peer, model, n_ctx=a.ctx, parallel=a.parallel, threads=threads, log=log, gpu_layers=999
        )
        with servers.running(theirs):
            stages: list[tuple[str, Callable[[], Any]]] = [
                (
                    "paired",
                    lambda: workloads.paired(
                        ours, theirs, clients=[1, a.parallel], n=a.tokens // 2, rounds=a.rounds, ctx=a.ctx
                    ),
                ),
                ("ttft", lambda: ttft_paired(ours, theirs, rounds=a.rounds, ctx=a.ctx)),
                (  # ~3,400 tokens, ~18 KB: long enough to be tokenized in pieces (engine/llama/split.py)
                    "ttft_long",
                    lambda: ttft_paired(ours, theirs, rounds=a.rounds, ctx=a.ctx, sentences=TTFT_LONG_SENTENCES),
                ),
                ("loaded", lambda: load_extra(ours, extra or [])),
                ("ps", lambda: httpx.get(ours.url + "/api/ps", timeout=30).json()),
                ("cpu_per_token", lambda: cpu_per_token(ours, theirs, rounds=5, n=1024, ctx=a.ctx)),
            ]
            for key, stage in stages:
                _stage(results, key, stage, save)
        _stage(results, "profile", lambda: profile(ours, a.work, a.out, seconds=a.profile_s, ctx=a.ctx), save)
        _stage(
            results,
            f"profile_{a.parallel}",
            lambda: profile(ours, a.work, a.out, seconds=a.profile_s, ctx=a.ctx, clients=a.parallel),
            save,
        )
    # the TTFT's steps, back to back and after a reader's pause (the idle loop keeps the slot's state beforehand)
    for pause in (0.0, 0.5):
        _stage(
            results,
            f"ttft_steps_{pause:g}",
            lambda pause=pause: ttft_steps(store, name, a.work, rounds=a.rounds, pause=pause),
            save,
        )
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
    for k, d in sorted(((k, d) for k, d in paired.items() if k.isdigit()), key=lambda kv: int(kv[0])):
        ci = median_ci(d["ratios"])
        cpu = d.get("serving_us_per_token", {})
        cells = [k, f"{median(d['ours']):.1f}", f"{median(d['theirs']):.1f}", f"{median(d['ratios']):.3f}"]
        cells[-1] += f" ({ci[0]:.3f}–{ci[1]:.3f})" if ci else ""
        cells.append(f"{cpu.get('ours', 0):.0f} / {cpu.get('theirs', 0):.0f}")
        lines.append("| " + " | ".join(cells) + " |")
    for key, size in (("ttft", "~2k-token"), ("ttft_long", "~3.4k-token")):
        t_ = results.get(key, {})
        if not t_.get("ours"):
            continue
        lines += ["", f"## Time to first token, fresh {size} prompt (ms, medians)", ""]
        lines += ["| server | TTFT | its own prefill | overhead |", "|---|---|---|---|"]
        for side, label in (("ours", "nbllm"), ("theirs", "llama-server")):
            t, p, o = (median(t_[k]) for k in (side, f"{side}_prefill", f"{side}_overhead_ms"))
            lines.append(f"| {label} | {1000 * t:.1f} | {1000 * p:.1f} | {o:+.1f} |")
    cpu = results.get("cpu_per_token", {})
    if cpu.get("ours") and cpu.get("theirs"):
        lines += ["", "## Whole-process CPU per token, one client, 1,024 tokens (medians)", ""]
        lines += ["| server | CPU µs/token | decode tokens/s |", "|---|---|---|"]
        for side, label in (("ours", "nbllm"), ("theirs", "llama-server")):
            lines.append(f"| {label} | {median(cpu[side]):.0f} | {median(cpu[side + '_rate']):.1f} |")
    for key in ("ttft_steps_0", "ttft_steps_0.5"):
        steps = results.get(key, {})
        if steps.get("medians"):
            pause = steps.get("pause", 0)
            lines += [
                "",
                f"## A first token's path, step by step ({'back to back' if not pause else f'{pause:g} s pause'})",
                "",
            ]
            lines += [f"`{steps['command']}` (~500-token prompt; ms)", ""]
            if not pause:  # (engine.copies_while_tokenizing: on where llama.cpp leaves two CPUs free)
                lines += [
                    "With CPUs free, a fresh prompt's RAM-cache copy is made while it is tokenized: back to back,"
                    " the copy step is then ~0, and `tokenize` shows what the copy beside it cost the tokenizer.",
                    "",
                ]
            lines.append(ttft_path.table({"medians": steps["medians"]}))
    for key in sorted(k for k in results if k == "profile" or k.startswith("profile_")):
        prof = results[key]
        if not prof.get("threads"):
            continue
        who = f"{prof.get('clients', 1)} client{'s' if prof.get('clients', 1) != 1 else ''}"
        title = f"Where nbllm's Python threads spend their time (py-spy, {who}, {prof.get('tokens')} tokens)"
        lines += ["", f"## {title}", ""]
        for thread, t in list(prof["threads"].items())[:4]:
            lines += [f"{thread}: {t['samples']} samples; busiest frames (self):", ""]
            lines += [f"- {n}: {c} ({100 * c / t['samples']:.0f}%)" for n, c in list(t["self"].items())[:8]]
            lines += ["", "innermost Python lines:", ""]
            lines += [f"- {n}: {c} ({100 * c / t['samples']:.0f}%)" for n, c in list(t["lines"].items())[:8]]
            lines.append("")
    failed = {k: v["error"] for k, v in results.items() if isinstance(v, dict) and "error" in v}
    if failed:
        lines += ["", "## Stages that failed", ""] + [f"- {k}: {e[:500]}" for k, e in failed.items()]
    return lines
