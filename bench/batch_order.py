"""What a step costs by the order and the slots of its sequences, per-sequence KV streams against unified.

python -m bench.batch_order --model SMOLLM2.gguf --out bench/results/2026-12-05-batch-order.json

One context of ``--slots`` sequences (``num_ctx`` cells each), every sequence holding ``--held`` tokens; then
one-token steps of the sequences in each order below, median of ``--reps`` steps (each step's tokens removed
again after it). Run once with ``kv_unified`` off (llama.cpp's default, and nbllm's) and once with it on.
``docs/batching.md`` explains the numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

import llama_cpp as L

from bench.speculative_inprocess import batch_decoder
from nbllm.engine.llama.native import amx_kernels

ORDERS = [
    [0],
    [0, 1, 2, 3],
    [4, 5, 6, 7],
    [1, 0, 2, 3],
    [0, 2, 1, 3],
    [3, 2, 1, 0],
    [0, 2, 4, 6],
    [0, 1, 2, 3, 4, 5, 6, 7],
    [7, 6, 5, 4, 3, 2, 1, 0],
]


def measure(
    model: Any, *, unified: bool, slots: int, num_ctx: int, held: int, threads: int, reps: int
) -> dict[str, float]:
    """Milliseconds of a one-token step, by the sequence ids in batch order (``"3,2,1,0"``)."""
    cp = L.llama_context_default_params()
    cp.n_ctx, cp.n_batch, cp.n_ubatch, cp.n_seq_max = num_ctx * slots, 512, 512, slots
    cp.n_threads = cp.n_threads_batch = threads
    cp.kv_unified = unified
    ctx = L.llama_init_from_model(model, cp)
    mem = L.llama_get_memory(ctx)
    batch = L.llama_batch_init(512, 0, 1)
    decode = batch_decoder(ctx, batch)

    for seq in range(slots):
        decode([(100 + j % 500, j, seq, False) for j in range(held)])

    def step_ms(order: list[int]) -> float:
        times = []
        for _ in range(reps):
            started = time.perf_counter()
            decode([(200, held, seq, True) for seq in order])
            times.append(time.perf_counter() - started)
            for seq in order:
                L.llama_memory_seq_rm(mem, seq, held, -1)
        return statistics.median(times) * 1000

    step_ms([0, 1, 2, 3])  # warm
    out = {",".join(map(str, order)): step_ms(order) for order in ORDERS if max(order) < slots}
    L.llama_batch_free(batch)
    L.llama_free(ctx)
    return out


def main(argv: list[str] | None = None) -> None:
    """Measure both layouts and write a JSON file."""
    p = argparse.ArgumentParser(prog="python -m bench.batch_order", description=__doc__)
    p.add_argument("--model", type=Path, required=True, help="SmolLM2-135M-Instruct's GGUF")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--slots", type=int, default=8)
    p.add_argument("--num-ctx", type=int, default=2048)
    p.add_argument("--held", type=int, default=176, help="tokens each sequence holds")
    p.add_argument("--reps", type=int, default=15)
    p.add_argument("--out", type=Path, required=True)
    a = p.parse_args(argv)
    L.llama_backend_init()
    mp = L.llama_model_default_params()
    mp.use_extra_bufts = not amx_kernels()  # (as nbllm loads it)
    model = L.llama_model_load_from_file(str(a.model).encode(), mp)
    result: dict[str, Any] = {"load_before": os.getloadavg(), "args": {k: str(v) for k, v in vars(a).items()}}
    for unified in (False, True):
        result["unified" if unified else "streams"] = measure(
            model, unified=unified, slots=a.slots, num_ctx=a.num_ctx, held=a.held, threads=a.threads, reps=a.reps
        )
    result["load_after"] = os.getloadavg()
    L.llama_model_free(model)
    a.out.write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
