"""The per-token path: serving CPU per token and TTFT overhead, nbllm against llama-server, side by side.

python -m bench.pertoken --llama-bin DIR --rounds 8 --out bench/results/2026-12-03-per-token.json

Every server is up at once (an idle one takes no CPU) and each round measures them one after the other,
the order alternating, so this machine's drift mostly cancels:

1. One streamed greedy completion of ``--tokens`` tokens; the server's *serving CPU* over it: what its
   process spent outside its two busiest threads (llama.cpp's compute threads, one of them the decode
   loop), per token streamed -- the HTTP and streaming layer's cost.
2. Time to first token for a ~500-token prompt nobody has sent before, minus the prefill time the server
   reports for that very request: HTTP, templating, tokenizing, scheduling and delivering the first token.

Each is a median over the rounds with a 95% confidence interval (binomial order statistics). With
``--thread-handoff`` a second nbllm server runs the streaming hand-off without ``NoWait`` (a thread per
stream takes every token from the decode thread and hands it to the event loop): the simpler design
the NoWait protocol is judged against (docs/streaming.md).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from bench import prompts, servers
from bench.clients import stream
from bench.env import Peer
from bench.speculative import servers_model
from bench.workloads import _serving_cpu, median, median_ci

_THREAD_HANDOFF = "bench.pertoken_thread"
"""A module that serves nbllm with the NoWait hand-off switched off (the simpler design, for comparison)."""


def _nbllm(
    store: Path, model: str, *, threads: int, log: Path, module: str = "nbllm", tree: Path | None = None
) -> servers.Server:
    """An nbllm server; ``tree``: another checkout's code (``PYTHONPATH``), e.g. the commit before a change."""
    saved, here = os.environ.get("PYTHONPATH"), Path.cwd()
    if tree is not None:  # (``python -m`` puts its working directory first on the path)
        os.environ["PYTHONPATH"] = str(tree)
        os.chdir(tree)
    try:
        server = servers.nbllm(store.resolve(), parallel=4, threads=threads, log=log.resolve(), module=module)
    finally:
        os.chdir(here)
        if saved is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = saved
    server.model = model
    if module != "nbllm":
        server.name += " thread hand-off"
    if tree is not None:
        server.name += f" baseline {tree}"
    return server


def _summary(values: list[float]) -> dict[str, Any]:
    return {"values": values, "median": median(values), "ci95": median_ci(values)}


def thread_ns(pid: int) -> dict[str, int]:
    """Nanoseconds on the CPU of each live thread of a process (``/proc/…/schedstat``: no tick rounding)."""
    out = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError, ValueError):  # a thread that ended meanwhile
            out[task.name] = int((task / "schedstat").read_text().split()[0])
    return out


def _serving_ns(before: dict[str, int], after: dict[str, int]) -> int:
    """Nanoseconds between two ``thread_ns`` readings outside the two busiest threads (threads that ended
    in between are missed: ``_serving_cpu``, rounded to clock ticks, counts them)."""
    deltas = sorted((ns - before.get(tid, 0) for tid, ns in after.items()), reverse=True)
    return sum(deltas[2:])


def _round(server: servers.Server, *, n: int, ctx: int, tag: str) -> dict[str, float]:
    """Serving CPU µs/token (ticks and schedstat), decode tokens/s and TTFT overhead (ms) of one round."""
    before, before_ns = server.cpu(), thread_ns(server.proc.pid)
    timing = stream(server, prompts.STORY, n, ctx=ctx)
    after_ns, after = thread_ns(server.proc.pid), server.cpu()
    tokens = max(timing.tokens, 1)
    text = f"[{server.name} {tag} {time.time_ns()}] " + prompts.long_prompt()
    first = stream(server, text, 4, ctx=ctx)
    prefill = first.server.get("prompt_eval_duration", 0.0) / 1e9
    return {
        "cpu_us": 1e6 * _serving_cpu(before, after) / tokens,
        "cpu_us_ns": _serving_ns(before_ns, after_ns) / 1e3 / tokens,
        "rate": timing.rate,
        "ttft_ms": 1e3 * (first.ttft - prefill),
    }


def measure(sides: list[servers.Server], *, rounds: int, n: int, ctx: int) -> dict[str, Any]:
    """Alternating rounds over every server; per server the three series and their medians."""
    for server in sides:
        stream(server, prompts.STORY, 8, ctx=ctx)  # loaded and warm
    series: dict[str, dict[str, list[float]]] = {s.name: {} for s in sides}
    for r in range(rounds):
        for server in sides if r % 2 == 0 else list(reversed(sides)):
            for key, value in _round(server, n=n, ctx=ctx, tag=str(r)).items():
                series[server.name].setdefault(key, []).append(value)
        shown = (f"{k}: {v['cpu_us_ns'][-1]:.0f} µs, {v['ttft_ms'][-1]:.1f} ms" for k, v in series.items())
        print(f"round {r}: " + "; ".join(shown), flush=True)
    return {name: {key: _summary(values) for key, values in row.items()} for name, row in series.items()}


def ratios(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per-round ratios of the first server's serving CPU and TTFT overhead to each other server's."""
    names = list(result)
    first = result[names[0]]
    out: dict[str, dict[str, Any]] = {}
    for name in names[1:]:
        other = result[name]
        out[f"{names[0]} / {name}"] = {
            key: _summary([a / b for a, b in zip(first[key]["values"], other[key]["values"], strict=True) if b > 0])
            for key in ("cpu_us", "cpu_us_ns", "ttft_ms")
        }
    return out


def main(argv: list[str] | None = None) -> None:
    """Start the servers, measure, write a JSON file."""
    p = argparse.ArgumentParser(prog="python -m bench.pertoken", description=__doc__)
    p.add_argument("--llama-bin", type=Path, required=True, help="a directory with llama.cpp's llama-server")
    p.add_argument("--store", type=Path, default=Path(__file__).parent / ".peers" / "store")
    p.add_argument("--model", default="smollm2:135m", help="nbllm model (SmolLM2, perhaps other PARAMETERs)")
    p.add_argument("--rounds", type=int, default=8)
    p.add_argument("--tokens", type=int, default=512)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--thread-handoff", action="store_true", help="also measure the hand-off without NoWait")
    p.add_argument("--baseline", type=Path, help="also measure nbllm from this checkout (before/after, same rounds)")
    p.add_argument(
        "--openai",
        action="store_true",
        help="stream nbllm's /v1/completions (the store needs a model named 'm'); TTFT then includes the prefill",
    )
    p.add_argument("--label", default="", help="what this run measures (e.g. the commit)")
    p.add_argument("--out", type=Path, required=True)
    a = p.parse_args(argv)
    log = a.out.with_suffix(".log")
    model = servers_model(a.store)
    started: list[servers.Server] = []
    try:
        started.append(_nbllm(a.store, a.model, threads=a.threads, log=log))
        if a.baseline is not None:
            started.append(_nbllm(a.store, a.model, threads=a.threads, log=log, tree=a.baseline.resolve()))
        if a.thread_handoff:
            started.append(_nbllm(a.store, a.model, threads=a.threads, log=log, module=_THREAD_HANDOFF))
        peer = Peer("llama.cpp", Path(sys.executable), a.llama_bin)
        started.append(servers.llama_server(peer, model, n_ctx=2048, parallel=4, threads=a.threads, log=log))
        result: dict[str, Any] = {
            "label": a.label,
            "command": "python -m bench.pertoken " + " ".join(argv if argv is not None else sys.argv[1:]),
            "rounds": a.rounds,
            "tokens": a.tokens,
            "load_before": os.getloadavg(),
        }
        if a.openai:
            for server in started[:-1]:
                server.kind, server.model = "openai", "m"
        result["servers"] = measure(started, rounds=a.rounds, n=a.tokens, ctx=2048)
        result["load_after"] = os.getloadavg()
        result["ratios"] = ratios(result["servers"])
    finally:
        for server in started:
            server.stop()
    a.out.write_text(json.dumps(result, indent=1))
    for name, row in [*result["servers"].items(), *result["ratios"].items()]:
        print(name, {k: (round(v["median"], 2), v["ci95"]) for k, v in row.items()})


if __name__ == "__main__":
    main()
