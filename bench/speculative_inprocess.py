"""Speculation's costs in-process (no server): a step's cost by tokens, and drafts forced on/off by concurrency.

python -m bench.speculative_inprocess --model SMOLLM2.gguf --out costs.json

1. The cost curve: one llama_decode of ``seqs`` sequences x (1 + k) tokens each over a 400-token context,
   median of repeated steps, relative to a one-token step (what ``DRAFT_COST``/``BATCH_COST`` in
   ``nbllm/engine/llama/lookup.py`` come from).
2. The inversion: S = 1, 2, 4, 8 concurrent input-grounded greedy requests (``bench.speculative.GROUNDED``
   with a distinct first line each) through the engine's decode loop, drafts of 8 forced, off, and the
   automatic mode, alternating rounds; aggregate tokens/s.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import llama_cpp as L

from bench.speculative import GROUNDED
from nbllm.engine.base import FinalStats, LoadSpec, SamplingParams, TokenChunk
from nbllm.engine.llama.engine import LlamaEngine
from nbllm.engine.llama.native import amx_kernels

CONTEXT = 400


def batch_decoder(ctx: Any, batch: Any) -> Callable[[list[tuple[int, int, int, bool]]], None]:
    """A function that decodes ``(token, position, sequence id, logits wanted)`` items in one ``llama_decode``."""

    def decode(items: list[tuple[int, int, int, bool]]) -> None:
        for i, (token, pos, seq, out) in enumerate(items):
            batch.token[i], batch.pos[i], batch.n_seq_id[i], batch.logits[i] = token, pos, 1, out
            batch.seq_id[i][0] = seq
        batch.n_tokens = len(items)
        assert L.llama_decode(ctx, batch) == 0

    return decode


def cost_curve(model_path: Path, threads: int) -> dict[str, float]:
    """Milliseconds of one decode step by ``"{seqs}x{tokens per seq}"``."""
    mp = L.llama_model_default_params()
    mp.use_extra_bufts = not amx_kernels()  # (as nbllm loads it)
    model = L.llama_model_load_from_file(str(model_path).encode(), mp)
    cp = L.llama_context_default_params()
    cp.n_ctx, cp.n_batch, cp.n_ubatch, cp.n_seq_max = 4096, 512, 512, 8
    cp.n_threads = cp.n_threads_batch = threads
    ctx = L.llama_init_from_model(model, cp)
    mem = L.llama_get_memory(ctx)
    batch = L.llama_batch_init(512, 0, 1)
    decode = batch_decoder(ctx, batch)

    for seq in range(8):
        for start in range(0, CONTEXT, 256):
            decode([(100 + j % 500, j, seq, False) for j in range(start, min(CONTEXT, start + 256))])

    def step_ms(seqs: int, k: int, reps: int) -> float:
        times = []
        for _ in range(reps):
            items = [(200 + j, CONTEXT + j, s, True) for s in range(seqs) for j in range(1 + k)]
            t = time.perf_counter()
            decode(items)
            times.append(time.perf_counter() - t)
            for s in range(seqs):
                L.llama_memory_seq_rm(mem, s, CONTEXT, -1)
        return statistics.median(times) * 1000

    step_ms(1, 0, 5)
    out = {}
    for seqs in (1, 2, 4, 8):
        for k in (0, 1, 2, 3, 4, 8, 16, 24, 32, 48):
            if seqs * (1 + k) <= 512:
                out[f"{seqs}x{1 + k}"] = step_ms(seqs, k, 31 if seqs * (1 + k) < 64 else 11)
    L.llama_batch_free(batch)
    L.llama_free(ctx)
    L.llama_model_free(model)
    return out


def concurrent(
    eng: LlamaEngine, prompts: list[list[int]], params: Callable[[int], SamplingParams]
) -> tuple[float, list[tuple[int, int] | None]]:
    """Generate for every prompt at once (a thread each, ``params(i)`` for prompt i) through the decode loop:
    aggregate tokens/s, and each request's (drafted, accepted) from its final stats."""
    counts = [0] * len(prompts)
    stats: list[tuple[int, int] | None] = [None] * len(prompts)

    def one(i: int) -> None:
        for ev in eng.generate(prompts[i], params(i)):
            if isinstance(ev, TokenChunk):
                counts[i] += 1
            elif isinstance(ev, FinalStats):
                stats[i] = (ev.draft_count, ev.draft_accepted_count)

    workers = [threading.Thread(target=one, args=(i,)) for i in range(len(prompts))]
    started = time.perf_counter()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return sum(counts) / (time.perf_counter() - started), stats


def inversion(model_path: Path, threads: int, rounds: int, n: int) -> dict[str, Any]:
    """Aggregate tokens/s by ``"{S}:{draft_num_predict}"``, and each run's (drafted, accepted) per request."""
    eng = LlamaEngine(LoadSpec(path=model_path, num_ctx=1024, parallel=8, num_thread=threads))
    prompts = [eng.tokenize(GROUNDED.replace("user\n", f"user\nClient {k}. ", 1), add_special=False) for k in range(8)]

    def run(s: int, draft: int) -> tuple[float, list[Any]]:
        return concurrent(eng, prompts[:s], lambda i: SamplingParams(temperature=0, num_predict=n, draft=draft))

    for p in prompts:  # every prompt cached, and every batch shape warmed up once
        list(eng.generate(p, SamplingParams(temperature=0, num_predict=1, draft=0)))
    run(1, 8)
    out: dict[str, Any] = {"rates": {}, "stats": {}, "load": []}
    for s in (1, 2, 4, 8):
        for r in range(rounds):
            for draft in (8, 0, -1) if r % 2 == 0 else (-1, 0, 8):
                rate, stats = run(s, draft)
                out["rates"].setdefault(f"{s}:{draft}", []).append(rate)
                out["stats"].setdefault(f"{s}:{draft}", []).append(stats)
            out["load"].append(os.getloadavg()[0])
    eng.close()
    return out


def main(argv: list[str] | None = None) -> None:
    """Measure both and write a JSON file."""
    p = argparse.ArgumentParser(prog="python -m bench.speculative_inprocess", description=__doc__)
    p.add_argument("--model", type=Path, required=True, help="SmolLM2-135M-Instruct's GGUF")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--tokens", type=int, default=128)
    p.add_argument("--out", type=Path, required=True)
    a = p.parse_args(argv)
    result: dict[str, Any] = {"load_before": os.getloadavg()}
    result["cost_ms"] = cost_curve(a.model, a.threads)
    result["inversion"] = inversion(a.model, a.threads, a.rounds, a.tokens)
    result["load_after"] = os.getloadavg()
    a.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
