"""The in-process ceiling: llama-cpp-python's high-level API, run inside a peer's interpreter.

Prints one JSON object: decode tokens/s (greedy, streamed) and prefill seconds for a long prompt.
Usage: python raw.py MODEL_PATH N_CTX THREADS N_TOKENS RUNS PROMPT_FILE LONG_PROMPT_FILE
"""

from __future__ import annotations

import json
import sys
import time

from llama_cpp import Llama
from plain_buffers import plain_buffers  # type: ignore[import-not-found]  # (beside this script: its folder is on the path)


def main() -> None:
    model, n_ctx, threads, n, runs, prompt_file, long_file = sys.argv[1:8]
    plain_buffers()  # (where llama.cpp has AMX kernels: as nbllm loads the model)
    llm = Llama(
        model,
        n_ctx=int(n_ctx),
        n_threads=int(threads),
        n_threads_batch=int(threads),
        n_batch=512,
        verbose=False,
        seed=0,
    )
    with open(prompt_file) as fh:
        prompt = fh.read()
    with open(long_file) as fh:
        long_prompt = fh.read()
    rates, prefills, tokens = [], [], []
    llm.create_completion(prompt, max_tokens=8, temperature=0)  # warm up
    for i in range(int(runs)):
        llm.reset()
        first = last = 0.0
        count = 0
        for _ in llm.create_completion(prompt, max_tokens=int(n), temperature=0, stream=True):
            now = time.perf_counter()
            first = first or now
            last = now
            count += 1
        rates.append((count - 1) / (last - first) if count > 1 else 0.0)
        tokens.append(count)
        llm.reset()
        text = f"[{i}] " + long_prompt  # a fresh prefix every run: nothing cached
        t0 = time.perf_counter()
        llm.create_completion(text, max_tokens=1, temperature=0)
        prefills.append(time.perf_counter() - t0)
    n_long = len(llm.tokenize(long_prompt.encode()))
    print(json.dumps({"decode_rates": rates, "tokens": tokens, "prefill_s": prefills, "long_prompt_tokens": n_long}))


if __name__ == "__main__":
    main()
