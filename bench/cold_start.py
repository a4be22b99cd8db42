"""A server's cold start against another checkout's, in alternating rounds: ready, then the first model load.

python -m bench.cold_start --baseline CHECKOUT --store STORE --rounds 24 --out bench/results/2026-12-05-cold-start.json

Each round starts ``nbllm serve`` from this checkout and from ``--baseline`` (the order alternating), times it
until it answers ``/``, then a load-only ``/api/generate`` of ``--model``, and stops it. Per-round ratios,
median with its 95% CI. (``import nbllm`` and ``nbllm --help`` are whole commands: ``farm-bench --vs`` times
those.)
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import httpx

from bench import servers
from bench.workloads import median, median_ci


def main(argv: list[str] | None = None) -> None:
    """Run the rounds and write a JSON file."""
    p = argparse.ArgumentParser(prog="python -m bench.cold_start", description=__doc__)
    p.add_argument("--baseline", type=Path, required=True)
    p.add_argument("--store", type=Path, default=Path(__file__).parent / ".peers" / "store")
    p.add_argument("--model", default="smollm2:135m")
    p.add_argument("--rounds", type=int, default=24)
    p.add_argument("--out", type=Path, required=True)
    a = p.parse_args(argv)
    store, out = a.store.resolve(), a.out.resolve()
    trees: dict[str, Path | None] = {"this": None, "baseline": a.baseline.resolve()}
    times: dict[str, dict[str, list[float]]] = {name: {"ready": [], "load": []} for name in trees}
    for r in range(a.rounds):
        for name in list(trees) if r % 2 == 0 else list(reversed(trees)):
            with servers.checkout(trees[name]):
                server = servers.nbllm(store, parallel=4, threads=2, log=out.with_suffix(".log"))
            try:
                started = time.perf_counter()
                httpx.post(server.url + "/api/generate", json={"model": a.model}, timeout=300).raise_for_status()
                times[name]["load"].append(time.perf_counter() - started)
                times[name]["ready"].append(server.ready_s)
            finally:
                server.stop()
    result: dict[str, Any] = {"args": {k: str(v) for k, v in vars(a).items()}, "seconds": times}
    for step in ("ready", "load"):
        ratios = [x / y for x, y in zip(times["this"][step], times["baseline"][step], strict=True)]
        result[step] = {
            "this": median(times["this"][step]),
            "baseline": median(times["baseline"][step]),
            "ratio": median(ratios),
            "ci95": median_ci(ratios),
        }
    out.write_text(json.dumps(result, indent=1))
    print(json.dumps({k: v for k, v in result.items() if k != "seconds"}, indent=1))


if __name__ == "__main__":
    main()
