"""Several clients at once: nbllm against llama-server (and a checkout of nbllm before a change), in turn.

python -m bench.paired_clients --llama-bin DIR --store STORE --clients 4 8 --rounds 12 [--baseline CHECKOUT] \
    --out bench/results/2026-12-05-clients-batch-order.json

For each number of clients k: nbllm with ``OLLAMA_NUM_PARALLEL=k``, llama-server with ``-np k`` (and, with
``--baseline``, a second nbllm running that checkout's code, through ``PYTHONPATH``), all up at once; every
round sends k fresh story prompts (``bench.prompts.story``, 128 tokens each, greedy) to each server in turn,
the order rotating round by round. Aggregate tokens/s (prompt evaluation included) per round, and each
round's ratio of nbllm to each other server, median with its 95% CI (``bench.workloads.median_ci``). With
``--cached``, each server first gets the round's prompts once (one token each, untimed), so that the timed
requests come back to slots that hold their prompts, in whatever order they arrive: a second turn of k
conversations at once.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from bench import prompts, servers
from bench.clients import concurrent, stream
from bench.env import Peer
from bench.speculative import servers_model
from bench.workloads import median, median_ci


def compare(sides: list[servers.Server], *, k: int, rounds: int, n: int, ctx: int, cached: bool) -> dict[str, Any]:
    """Aggregate tokens/s of each server by round (``sides[0]`` is nbllm), and nbllm's ratios to the others;
    ``cached``: each server gets the round's prompts once first (one token each, not timed)."""
    for server in sides:
        stream(server, prompts.STORY, 8, ctx=ctx)  # loaded and warm
    rates: dict[str, list[float]] = {s.name: [] for s in sides}
    load: list[float] = []
    for r in range(rounds):
        texts = [prompts.story(9_000 + 100 * r + i) for i in range(k)]
        turn = r % len(sides)
        for server in sides[turn:] + sides[:turn]:
            if cached:
                concurrent(server, texts, 1, ctx=ctx)
            wall, timings = concurrent(server, texts, n, ctx=ctx)
            rates[server.name].append(sum(t.tokens for t in timings) / wall)
        load.append(os.getloadavg()[0])
    ours = sides[0].name
    out: dict[str, Any] = {"rates": rates, "load": load, "medians": {name: median(v) for name, v in rates.items()}}
    for server in sides[1:]:
        ratios = [a / b for a, b in zip(rates[ours], rates[server.name], strict=True) if b]
        out[f"{ours} / {server.name}"] = {"ratios": ratios, "median": median(ratios), "ci95": median_ci(ratios)}
    return out


def main(argv: list[str] | None = None) -> None:
    """Run every client count and write a JSON file."""
    p = argparse.ArgumentParser(prog="python -m bench.paired_clients", description=__doc__)
    p.add_argument("--llama-bin", type=Path, required=True, help="a directory with llama.cpp's llama-server")
    p.add_argument("--store", type=Path, default=Path(__file__).parent / ".peers" / "store")
    p.add_argument("--baseline", type=Path, help="a checkout of nbllm to run beside this one")
    p.add_argument("--clients", type=int, nargs="+", default=[4, 8])
    p.add_argument("--rounds", type=int, default=12)
    p.add_argument("--tokens", type=int, default=128)
    p.add_argument("--ctx", type=int, default=2048)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument(
        "--cached",
        action="store_true",
        help="each round's prompts sent once first, untimed: the timed requests come back to their slots, in the "
        "order they reach the server (a follow-up turn of k conversations)",
    )
    p.add_argument("--out", type=Path, required=True)
    a = p.parse_args(argv)
    a.store, a.out = a.store.resolve(), a.out.resolve()
    model = servers_model(a.store)
    log = a.out.with_suffix(".log")
    peer = Peer("llama.cpp", Path(sys.executable), a.llama_bin)
    result: dict[str, Any] = {"args": {k: str(v) for k, v in vars(a).items()}, "load_before": os.getloadavg()}
    for k in a.clients:
        sides = [servers.nbllm(a.store, parallel=k, threads=a.threads, log=log)]
        try:
            if a.baseline is not None:
                with servers.checkout(a.baseline.resolve()):
                    base = servers.nbllm(a.store, parallel=k, threads=a.threads, log=log)
                base.name = f"nbllm baseline (np={k})"
                sides.append(base)
            sides.append(servers.llama_server(peer, model, n_ctx=a.ctx, parallel=k, threads=a.threads, log=log))
            for server in sides:
                server.model = "smollm2:135m"
            result[str(k)] = compare(sides, k=k, rounds=a.rounds, n=a.tokens, ctx=a.ctx, cached=a.cached)
        finally:
            for server in sides:
                server.stop()
        print(json.dumps({key: v for key, v in result[str(k)].items() if key not in ("rates", "load")}), flush=True)
    result["load_after"] = os.getloadavg()
    a.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
