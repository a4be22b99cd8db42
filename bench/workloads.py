"""The measurements: decode rate, time to first token, concurrency, multi-turn prefix cache, cold start."""

from __future__ import annotations

import json
import math
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench import prompts
from bench.clients import concurrent, decode_only, stream
from bench.env import Peer
from bench.servers import Server


def median(values: list[float]) -> float:
    """Median (0 for nothing)."""
    return statistics.median(values) if values else 0.0


def median_ci(values: list[float], level: float = 0.95) -> tuple[float, float] | None:
    """A confidence interval for the median that assumes nothing about the distribution (None if too few).

    Each value falls below the true median with probability 1/2, so the number below it is binomial: the
    interval runs from the k-th smallest to the k-th largest value, k as large as that distribution allows.
    One round disturbed by something else on the machine moves it no more than any other round.
    """
    n = len(values)
    tail = (1 - level) / 2
    k, below = 0, 0.0
    while k < n and below + math.comb(n, k) / 2**n <= tail:
        below += math.comb(n, k) / 2**n
        k += 1
    if k == 0:
        return None
    ordered = sorted(values)
    return ordered[k - 1], ordered[n - k]


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def decode(server: Server, *, n: int, runs: int, ctx: int) -> dict[str, Any]:
    """Single-stream decode of ``n`` tokens, greedy, through the server's streaming API."""
    stream(server, prompts.STORY, 8, ctx=ctx)  # warm up (and load)
    timings = [stream(server, prompts.STORY, n, ctx=ctx) for _ in range(runs)]
    return {"rates": [t.rate for t in timings], "tokens": [t.tokens for t in timings]}


def ttft(server: Server, *, runs: int, ctx: int) -> dict[str, Any]:
    """Time to first token for a ~500-token prompt nobody has seen (a fresh prefix each run)."""
    values, own_prefill = [], []
    for i in range(runs):
        text = f"[{server.name} {i} {time.time_ns()}] " + prompts.long_prompt()
        timing = stream(server, text, 4, ctx=ctx)
        values.append(timing.ttft)
        if timing.server.get("prompt_eval_duration"):  # the server's own prefill time for this very request
            own_prefill.append(timing.server["prompt_eval_duration"] / 1e9)
    return {"ttft": values, "server_prefill": own_prefill}


def concurrency(server: Server, *, clients: list[int], n: int, runs: int, ctx: int) -> dict[str, Any]:
    """Aggregate tokens/s and per-request latency with 1, 2, 4, 8 simultaneous streaming clients."""
    out: dict[str, Any] = {}
    for k in clients:
        aggs, decodes, latencies = [], [], []
        for r in range(runs):
            texts = [prompts.story(100 * r + i + k * 1000) for i in range(k)]
            wall, timings = concurrent(server, texts, n, ctx=ctx)
            aggs.append(sum(t.tokens for t in timings) / wall)
            decodes.append(decode_only(timings))
            latencies += [t.total for t in timings]
        out[str(k)] = {
            "aggregate": aggs,
            "decode": decodes,
            "p50": percentile(latencies, 0.5),
            "p95": percentile(latencies, 0.95),
        }
    return out


def paired(ours: Server, peer: Server, *, clients: list[int], n: int, rounds: int, ctx: int) -> dict[str, Any]:
    """nbllm and a peer, both running, measured in alternating order round after round.

    This machine's speed drifts by ±15% over minutes, more than the difference being measured; a ratio
    taken within one round (seconds apart, the order alternating) cancels most of it. One client: decode
    tokens/s of a single stream; more: aggregate tokens/s, prompt evaluation included.

    Each server's *serving CPU* is measured too: the CPU its process spends outside its two busiest
    threads (llama.cpp's compute threads, one of them the decode loop) per token streamed, over all
    rounds. That is the HTTP and streaming layer's cost, which on a machine with as many cores as
    llama.cpp has threads comes out of the decode.
    """
    for server in (ours, peer):
        stream(server, prompts.STORY, 8, ctx=ctx)  # both loaded and warm
    out: dict[str, Any] = {}
    for k in clients:
        rates: tuple[list[float], list[float]] = ([], [])
        serving = [0.0, 0.0]
        tokens = [0, 0]
        for r in range(rounds):
            texts = [prompts.story(7_000 + 100 * r + i) for i in range(k)]
            for side in (0, 1) if r % 2 == 0 else (1, 0):
                server = (ours, peer)[side]
                before = server.cpu()
                if k == 1:
                    timing = stream(server, prompts.STORY, 2 * n, ctx=ctx)
                    rate, count = timing.rate, timing.tokens
                else:
                    wall, timings = concurrent(server, texts, n, ctx=ctx)
                    count = sum(t.tokens for t in timings)
                    rate = count / wall
                serving[side] += _serving_cpu(before, server.cpu())
                tokens[side] += count
                rates[side].append(rate)
        mine, theirs = rates
        out[str(k)] = {
            "peer": peer.name,
            "ours": mine,
            "theirs": theirs,
            "ratios": [a / b for a, b in zip(mine, theirs, strict=True) if b],
            "serving_us_per_token": {
                "ours": 1e6 * serving[0] / max(tokens[0], 1),
                "theirs": 1e6 * serving[1] / max(tokens[1], 1),
            },
        }
    return out


def _serving_cpu(before: tuple[float, dict[str, float]], after: tuple[float, dict[str, float]]) -> float:
    """CPU seconds spent between two ``Server.cpu()`` readings outside the two busiest threads."""
    busiest = sorted((t - before[1].get(tid, 0.0) for tid, t in after[1].items()), reverse=True)[:2]
    return max(0.0, after[0] - before[0] - sum(busiest))


def multiturn(server: Server, *, ctx: int, runs: int = 1) -> dict[str, Any]:
    """nbllm chat: prompt-eval time of turn 5 with the prefix cache, and the same turn evaluated cold.

    Medians of ``runs`` chats (each ends by unloading the model, so the next starts from nothing).
    """
    results = [_chat_five_turns(server, ctx=ctx) for _ in range(runs)]
    out: dict[str, Any] = {key: median([r[key] for r in results]) for key in ("cached_s", "cold_s")}
    out.update(cached_tokens=results[0]["cached_tokens"], cold_tokens=results[0]["cold_tokens"])
    out["speedups"] = [r["cold_s"] / r["cached_s"] for r in results if r["cached_s"]]
    return out


def _chat_five_turns(server: Server, *, ctx: int) -> dict[str, Any]:
    history: list[dict[str, str]] = []
    opts = {"temperature": 0, "num_predict": 32, "num_ctx": ctx}
    turns = []
    with httpx.Client(timeout=600) as http:
        for text in prompts.CHAT_TURNS:
            history.append({"role": "user", "content": text})
            body = {"model": server.model, "messages": history, "stream": False, "options": opts}
            data = http.post(server.url + "/api/chat", json=body).json()
            turns.append(data)
            history.append({"role": "assistant", "content": data["message"]["content"]})
        cold_body = {
            "model": server.model,
            "messages": history[:-1],
            "stream": False,
            "options": {**opts, "num_batch": 511},
        }  # another load-time option: a fresh, empty cache
        cold = http.post(server.url + "/api/chat", json=cold_body).json()
        http.post(server.url + "/api/generate", json={"model": server.model, "keep_alive": 0})
    last = turns[-1]
    return {
        "cached_s": last["prompt_eval_duration"] / 1e9,
        "cached_tokens": _evaluated(last),
        "cold_s": cold["prompt_eval_duration"] / 1e9,
        "cold_tokens": _evaluated(cold),
    }


def _evaluated(answer: dict[str, Any]) -> int:
    """Prompt tokens the server evaluated: the whole prompt less what it reused from its cache."""
    return int(answer["prompt_eval_count"]) - int(answer.get("prompt_cached_count", 0))


def raw_ceiling(peer: Peer, model: Path, *, n: int, runs: int, ctx: int, threads: int) -> dict[str, Any]:
    """llama-cpp-python's high-level API in-process, in the peer's interpreter."""
    with tempfile.TemporaryDirectory() as tmp:
        story, long = Path(tmp, "story.txt"), Path(tmp, "long.txt")
        story.write_text(prompts.STORY)
        long.write_text(prompts.long_prompt())
        script = Path(__file__).with_name("raw.py")
        out = subprocess.run(
            [
                str(peer.python),
                str(script),
                str(model),
                str(ctx),
                str(threads),
                str(n),
                str(runs),
                str(story),
                str(long),
            ],
            capture_output=True,
            text=True,
            check=True,
            env=peer.env(),
        )
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def engine_batched(model: Path, *, sizes: list[int], n: int, runs: int, ctx: int, threads: int) -> dict[str, Any]:
    """nbllm's engine in this interpreter, B simultaneous requests with parallel = B (bench/engine.py)."""
    args = [str(model), str(ctx), str(threads), str(n), str(runs), ",".join(str(b) for b in sizes)]
    out = subprocess.run(
        [sys.executable, "-m", "bench.engine", *args],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def cold_start(server_ready: float, load_s: float) -> dict[str, float]:
    """`import nbllm`, `nbllm --help`, server ready, model load (seconds, medians of 3)."""

    def timed(args: list[str]) -> float:
        values = []
        for _ in range(3):
            t0 = time.perf_counter()
            subprocess.run(args, capture_output=True, check=True)
            values.append(time.perf_counter() - t0)
        return median(values)

    return {
        "import nbllm": timed([sys.executable, "-c", "import nbllm"]),
        "nbllm --help": timed([sys.executable, "-m", "nbllm", "--help"]),
        "server ready": server_ready,
        "model load": load_s,
    }


def load_time(server: Server) -> float:
    """Seconds nbllm reports to load the model (an empty generate)."""
    with httpx.Client(timeout=600) as http:
        http.post(server.url + "/api/generate", json={"model": server.model, "keep_alive": 0})
        started = time.perf_counter()
        resp = http.post(server.url + "/api/generate", json={"model": server.model, "stream": False})
        resp.raise_for_status()
    return time.perf_counter() - started


def _tool(peer: Peer, name: str, *args: str) -> str:
    """Run one of llama.cpp's programs from the peer's build; its standard output."""
    assert peer.bin_dir is not None
    cmd = [str(peer.bin_dir / name), *args]
    return subprocess.run(cmd, capture_output=True, text=True, check=True, env=peer.env()).stdout


def llama_bench(peer: Peer, model: Path, *, threads: int) -> dict[str, Any]:
    """llama.cpp's llama-bench (prompt processing 512, generation 128) and llama-batched-bench (B = 1, 4, 8)."""
    out: dict[str, Any] = {}
    t = str(threads)
    single = _tool(peer, "llama-bench", "-m", str(model), "-p", "512", "-n", "128", "-t", t, "-o", "json", "-r", "3")
    for row in json.loads(single):
        key = "prefill_512" if row.get("n_prompt") else "decode_128"
        out[key] = float(row.get("avg_ts", 0))
    for b, rate in batched_bench(peer, model, sizes=[1, 4, 8], n=128, threads=threads).items():
        out[f"batched_B{b}"] = rate
    return out


def batched_bench(peer: Peer, model: Path, *, sizes: list[int], n: int, threads: int) -> dict[int, float]:
    """llama-batched-bench's S_TG for each B in ``sizes``: decode tokens/s of B sequences in one batch (128-token
    prompts, ``n`` tokens each)."""
    args = ("-c", "8192", "-b", "512", "-ub", "512", "-npp", "128", "-ntg", str(n), "-npl", ",".join(map(str, sizes)))
    text = _tool(peer, "llama-batched-bench", "-m", str(model), *args, "-t", str(threads), "--output-format", "jsonl")
    rows = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    return {int(row["pl"]): float(row.get("speed_tg", 0)) for row in rows}


def ceiling_paired(
    server: Server, peer: Peer, model: Path, *, sizes: list[int], n: int, rounds: int, ctx: int, threads: int
) -> dict[str, Any]:
    """nbllm against llama-batched-bench (llama.cpp decoding B sequences in one batch: no server, no sampling
    in Python), round by round, the order alternating.

    nbllm's side of a round: its engine in-process (bench/engine.py, a process of its own) and ``server`` over
    HTTP with B clients, decode only; ``server`` (parallel ≥ every B) idles while the others run. Measured
    minutes apart, this machine's drift (±15%) would decide the comparison; within a round it mostly cancels.
    Each B is a round of its own, so what is compared runs back to back (a few seconds apart, not the other B's
    measurements apart).
    """
    stream(server, prompts.STORY, 8, ctx=ctx)  # loaded and warm
    out: dict[str, Any] = {str(b): {"engine": [], "http": [], "ceiling": []} for b in sizes}

    def ours(r: int, b: int) -> None:
        engine = engine_batched(model, sizes=[b], n=n, runs=1, ctx=ctx, threads=threads)["decode"]
        out[str(b)]["engine"].append(engine[str(b)][0])
        texts = [prompts.story(20_000 + 100 * r + i) for i in range(b)]
        out[str(b)]["http"].append(decode_only(concurrent(server, texts, n, ctx=ctx)[1]))

    def theirs(r: int, b: int) -> None:
        out[str(b)]["ceiling"].append(batched_bench(peer, model, sizes=[b], n=n, threads=threads)[b])

    for r in range(rounds):
        for b in sizes:
            for side in (ours, theirs) if r % 2 == 0 else (theirs, ours):
                side(r, b)
    for d in out.values():
        for key in ("engine", "http"):
            d[f"{key}_ratios"] = [a / c for a, c in zip(d[key], d["ceiling"], strict=True) if c]
    return out
