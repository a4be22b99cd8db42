"""nbllm's engine in-process, B sequences decoded together: the like-for-like peer of llama-batched-bench.

llama-batched-bench has no HTTP, no client and no other process on the cores; this runs nbllm's
``LlamaEngine`` the same way (B threads submit greedy requests of distinct prompts at once, parallel =
B) so the engine's batching is compared with llama.cpp's own, apart from the server around it.
Prints one JSON object: {"decode": {"B": [tokens/s per run]}, "aggregate": {...}} (see ``batched``).
Usage: python -m bench.engine MODEL_PATH N_CTX THREADS N_TOKENS RUNS B[,B...]
"""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path

from bench import prompts
from nbllm.engine import LoadSpec, SamplingParams, TokenChunk
from nbllm.engine.llama import LlamaEngine


def batched(engine: LlamaEngine, b: int, n: int, run: int) -> tuple[float, float]:
    """``b`` simultaneous greedy requests of ``n`` tokens: (decode tokens/s, tokens/s with the prefill).

    The first is llama-batched-bench's S_TG: tokens produced once every sequence has its first token,
    over the time they took. The second counts every token over the whole wall time, prefill included.
    """
    params = SamplingParams(temperature=0, num_predict=n, seed=0)
    stamps: list[list[float]] = [[] for _ in range(b)]
    prompts_ = [engine.tokenize(prompts.story(10_000 * b + 100 * run + i)) for i in range(b)]

    def go(i: int) -> None:
        for event in engine.generate(prompts_[i], params):
            if isinstance(event, TokenChunk):
                stamps[i].append(time.perf_counter())

    threads = [threading.Thread(target=go, args=(i,)) for i in range(b)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    all_started = max((s[0] for s in stamps if s), default=started)  # a sequence may end at once (EOG)
    end = max((s[-1] for s in stamps if s), default=started)
    after = sum(1 for s in stamps for t in s if t > all_started)
    total = sum(len(s) for s in stamps)
    return (after / (end - all_started) if end > all_started else 0.0), total / (end - started)


def main() -> None:
    model, n_ctx, threads, n, runs, sizes = sys.argv[1:7]
    decode: dict[str, list[float]] = {}
    overall: dict[str, list[float]] = {}
    for b in (int(s) for s in sizes.split(",")):
        spec = LoadSpec(path=Path(model), num_ctx=int(n_ctx), parallel=b, num_thread=int(threads))
        engine = LlamaEngine(spec)
        try:
            batched(engine, b, 8, -1)  # warm up
            results = [batched(engine, b, int(n), r) for r in range(int(runs))]
        finally:
            engine.close()
        decode[str(b)] = [r[0] for r in results]
        overall[str(b)] = [r[1] for r in results]
    print(json.dumps({"decode": decode, "aggregate": overall}))


if __name__ == "__main__":
    main()
