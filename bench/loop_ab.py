"""The event loop's CPU a streamed token, two nbllm checkouts side by side: a quick A/B of a per-token change.

python -m bench.loop_ab --store bench/.peers/store --model smollm2-nospec --base /tmp/base --rounds 8 --out X.json

bench.pertoken measures a server's whole serving CPU against llama-server; this measures only the thread that
runs the event loop (the server process's main thread), where a token's hand-off, line and socket write run,
so a change to that path shows with less noise. Both servers are up at once; each round streams ``--tokens``
greedy tokens from each, the order alternating, and reads the thread's ``/proc/.../schedstat`` before and
after. Reported: each server's median µs a token, and the per-round ratio (this checkout ÷ ``--base``) with
its 95% confidence interval. One llama.cpp process at a time: run it on an idle machine.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from bench import prompts
from bench.clients import stream
from bench.pertoken import _nbllm, thread_ns
from bench.workloads import median, median_ci


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--store", type=Path, required=True, help="the model store (its models/ directory)")
    ap.add_argument("--model", default="smollm2-nospec")
    ap.add_argument("--base", type=Path, required=True, help="the other checkout (a worktree of the commit before)")
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--tokens", type=int, default=512)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args(argv)
    logs = a.out.with_suffix("")
    sides = {
        "this": _nbllm(a.store, a.model, threads=a.threads, log=Path(f"{logs}-this.log")),
        "base": _nbllm(a.store, a.model, threads=a.threads, log=Path(f"{logs}-base.log"), tree=a.base),
    }
    loop: dict[str, list[float]] = {name: [] for name in sides}
    try:
        for server in sides.values():
            stream(server, prompts.STORY, 32, ctx=2048)  # the load and the warm-up
        for r in range(a.rounds):
            for name in list(sides) if r % 2 == 0 else list(sides)[::-1]:
                server = sides[name]
                pid = str(server.proc.pid)
                before = thread_ns(server.proc.pid)[pid]
                tokens = stream(server, prompts.STORY, a.tokens, ctx=2048).tokens
                loop[name].append((thread_ns(server.proc.pid)[pid] - before) / 1e3 / max(tokens, 1))
            print(r, {name: round(values[-1], 1) for name, values in loop.items()}, flush=True)
    finally:
        for server in sides.values():
            server.stop()
    ratios = [t / b for t, b in zip(loop["this"], loop["base"], strict=True)]
    result = {
        "command": "python -m bench.loop_ab " + " ".join(argv if argv is not None else sys.argv[1:]),
        "loop_us_per_token": {name: {"values": v, "median": median(v)} for name, v in loop.items()},
        "ratio_this_over_base": {"values": ratios, "median": median(ratios), "ci95": median_ci(ratios)},
    }
    a.out.write_text(json.dumps(result, indent=1))
    print(json.dumps({k: v for k, v in result.items() if k != "command"}, indent=1)[:2000])


if __name__ == "__main__":
    main()
