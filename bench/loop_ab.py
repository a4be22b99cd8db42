"""The event loop's CPU a streamed token, two nbllm checkouts side by side: a quick A/B of a per-token change.

python -m bench.loop_ab --store bench/.peers/store --model smollm2-nospec --base /tmp/base --rounds 8 --out X.json

bench.pertoken measures a server's whole serving CPU against llama-server; this measures only the thread that
runs the event loop (the server process's main thread), where a token's hand-off, line and socket write run,
so a change to that path shows with less noise. Both servers are up at once; each round streams ``--tokens``
greedy tokens from each, the order alternating, and reads the thread's ``/proc/.../schedstat`` before and
after. Reported: each server's median µs a token, and the per-round ratio (this checkout ÷ ``--base``) with
its 95% confidence interval. One llama.cpp process at a time: run it on an idle machine.

``--decode-side`` also times the decode thread's hand-off of each token (``bench/post_cost.py``) and adds it to
the loop's: what a change that moves work between the two threads costs in all. ``--clients N`` streams N at
once each round and reports the aggregate tokens/s too (the decode thread's share grows with the streams);
``--grounded`` streams an answer that speculative decoding makes several tokens a step.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench import post_cost, prompts, speculative
from bench.clients import stream
from bench.pertoken import _nbllm, thread_ns
from bench.servers import Server
from bench.workloads import median, median_ci


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--store", type=Path, required=True, help="the model store (its models/ directory)")
    ap.add_argument("--model", default="smollm2-nospec")
    ap.add_argument("--base", type=Path, required=True, help="the other checkout (a worktree of the commit before)")
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--tokens", type=int, default=512)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--clients", type=int, default=1, help="concurrent streams a round (at most 4: the slots)")
    ap.add_argument(
        "--grounded",
        action="store_true",
        help="stream bench.speculative's input-grounded prompt from smollm2:135m (its automatic speculation: "
        "several tokens a decode step) instead of a story from --model",
    )
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument(
        "--decode-side",
        action="store_true",
        help="also time the decode thread's hand-off of each token (bench/post_cost.py; --base needs that file)",
    )
    a = ap.parse_args(argv)
    logs = a.out.with_suffix("")
    module = "bench.post_cost" if a.decode_side else "nbllm"
    costs = {name: Path(f"{logs}-{name}.post") for name in ("this", "base")}
    sides = {}
    for name, tree in (("this", None), ("base", a.base)):
        costs[name].unlink(missing_ok=True)
        os.environ["BENCH_POST_COST"] = str(costs[name].resolve())  # (each server reads it at its start)
        log = Path(f"{logs}-{name}.log")
        sides[name] = _nbllm(a.store, a.model, threads=a.threads, log=log, module=module, tree=tree)

    def one(server: Server) -> int:
        """One streamed completion's tokens."""
        if a.grounded:
            return speculative.stream(server.url, "ollama", speculative.GROUNDED, a.tokens)[1]
        return stream(server, prompts.STORY, a.tokens, ctx=2048).tokens

    loop: dict[str, list[float]] = {name: [] for name in sides}
    post: dict[str, list[float]] = {name: [] for name in sides}
    rate: dict[str, list[float]] = {name: [] for name in sides}
    try:
        for server in sides.values():
            stream(server, prompts.STORY, 32, ctx=2048)  # the load and the warm-up
            if a.grounded:
                speculative.stream(server.url, "ollama", speculative.GROUNDED, 8)  # (that model too)
        for r in range(a.rounds):
            for name in list(sides) if r % 2 == 0 else list(sides)[::-1]:
                server = sides[name]
                pid = str(server.proc.pid)
                before, posted = thread_ns(server.proc.pid)[pid], post_cost.read(costs[name])
                started = time.perf_counter()
                with ThreadPoolExecutor(a.clients) as pool:
                    runs = [pool.submit(one, server) for _ in range(a.clients)]
                    tokens = sum(run.result() for run in runs)
                rate[name].append(tokens / (time.perf_counter() - started))  # (aggregate, prefill included)
                loop[name].append((thread_ns(server.proc.pid)[pid] - before) / 1e3 / max(tokens, 1))
                if a.decode_side:
                    post[name].append((post_cost.read(costs[name])[0] - posted[0]) / 1e3 / max(tokens, 1))
            print(r, {name: round(values[-1], 1) for name, values in loop.items()}, flush=True)
            if a.decode_side:
                print("  decode thread's post", {name: round(values[-1], 2) for name, values in post.items()})
    finally:
        for server in sides.values():
            server.stop()
    ratios = [t / b for t, b in zip(loop["this"], loop["base"], strict=True)]
    result: dict[str, object] = {
        "command": "python -m bench.loop_ab " + " ".join(argv if argv is not None else sys.argv[1:]),
        "loop_us_per_token": {name: {"values": v, "median": median(v)} for name, v in loop.items()},
        "ratio_this_over_base": {"values": ratios, "median": median(ratios), "ci95": median_ci(ratios)},
        "clients": a.clients,
        "tokens_per_s": {name: {"values": v, "median": median(v)} for name, v in rate.items()},
    }
    rates = [t / b for t, b in zip(rate["this"], rate["base"], strict=True)]
    result["rate_ratio"] = {"values": rates, "median": median(rates), "ci95": median_ci(rates)}
    if a.decode_side:
        both = {name: [p + q for p, q in zip(post[name], loop[name], strict=True)] for name in sides}
        paired = [t / b for t, b in zip(both["this"], both["base"], strict=True)]
        result["decode_post_us_per_token"] = {name: {"values": v, "median": median(v)} for name, v in post.items()}
        result["loop_plus_post_ratio"] = {"values": paired, "median": median(paired), "ci95": median_ci(paired)}
    a.out.write_text(json.dumps(result, indent=1))
    print(json.dumps({k: v for k, v in result.items() if k != "command"}, indent=1)[:2000])


if __name__ == "__main__":
    main()
