"""Speculative decoding with a draft model, measured in-process: SmolLM2 drafting for itself against no draft.

python -m bench.draft_model --gguf SmolLM2-135M-Instruct.Q4_1.gguf --rounds 7 --out bench/results/FILE.json

Three engines over the same GGUF, each loaded once: plain decoding (``draft_num_predict: 0``), prompt lookup
(automatic mode, no draft model) and a draft model (the same GGUF, ``draft_num_predict: -1``: up to 4 tokens a
step). Two greedy prompts: input-grounded (repeat a code listing with one change) and open-ended. Rounds
alternate the conditions, one warm-up round is not counted, and each figure is the decode rate of the engine's
own stats (``eval_count / eval_duration``, prefill excluded) as a median with a 95% CI over rounds. Each
prompt has engines of its own, so the counted rounds decode over a prompt both models have cached; the
warm-up round's draft-model rate (the draft model reads the whole prompt before its first guess, inside
the decode time) is reported apart as ``cold``.

A draft that is the target itself accepts nearly every token but costs as much per token as the target:
this measures the mechanics' overhead, not a useful speed-up (which needs a draft many times cheaper).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from bench.workloads import median, median_ci
from nbllm.engine.base import FinalStats, LoadSpec, SamplingParams
from nbllm.engine.llama.engine import LlamaEngine

_CODE = "\n".join(
    f"def handler_{i}(request, store):\n"
    f'    """Answer request kind {i} from the store."""\n'
    f"    value = store.get(request.key_{i}, default=None)\n"
    f"    if value is None:\n"
    f"        raise KeyError(request.key_{i})\n"
    f"    return value * {i + 1}\n"
    for i in range(6)
)
PROMPTS = {
    "grounded": "<|im_start|>user\nRepeat this code exactly, but rename `store` to `cache` everywhere:\n\n"
    + _CODE
    + "<|im_end|>\n<|im_start|>assistant\n",
    "open-ended": "<|im_start|>user\nWrite a short story about a lighthouse keeper who finds a message in a "
    "bottle.<|im_end|>\n<|im_start|>assistant\n",
}
CONDITIONS = {"plain": 0, "prompt lookup": -1, "draft model": -1}


def run_once(engine: LlamaEngine, prompt: str, draft: int, n: int) -> dict[str, float]:
    """One greedy completion: decode tokens/s and the draft counts."""
    params = SamplingParams(temperature=0, num_predict=n, draft=draft)
    final = None
    for event in engine.generate(engine.tokenize(prompt), params):
        if isinstance(event, FinalStats):
            final = event
    assert final is not None
    return {
        "tok_s": final.eval_count / (final.eval_duration / 1e9),
        "tokens": final.eval_count,
        "drafted": final.draft_count,
        "accepted": final.draft_accepted_count,
    }


def main(argv: list[str] | None = None) -> int:
    """Run the rounds and print (and optionally write) the results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gguf", type=Path, required=True)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--tokens", type=int, default=192)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    # an engine per condition and prompt: each prompt stays in its own cache (and the draft model's), so that
    # every counted round decodes over a cached prompt; the draft model's first pass is reported apart (cold)
    spec = LoadSpec(path=args.gguf, num_ctx=2048, parallel=1)
    engines = {
        (cond, name): LlamaEngine(replace(spec, draft=args.gguf) if cond == "draft model" else spec)
        for cond in CONDITIONS
        for name in PROMPTS
    }
    load_before = os.getloadavg()
    samples: dict[str, dict[str, list[dict[str, float]]]] = {p: {c: [] for c in CONDITIONS} for p in PROMPTS}
    cold: dict[str, float] = {}
    try:
        for r in range(args.rounds + 1):  # round 0 warms the caches (both models' prompt prefixes) and is dropped
            order = list(CONDITIONS) if r % 2 else list(reversed(CONDITIONS))
            for prompt_name, prompt in PROMPTS.items():
                for cond in order:
                    result = run_once(engines[cond, prompt_name], prompt, CONDITIONS[cond], args.tokens)
                    if r:
                        samples[prompt_name][cond].append(result)
                    elif cond == "draft model":
                        cold[prompt_name] = result["tok_s"]
    finally:
        for engine in engines.values():
            engine.close()
    load_after = os.getloadavg()
    summary: dict[str, Any] = {
        "load_before": load_before,
        "load_after": load_after,
        "rounds": args.rounds,
        "cold": cold,
    }
    for prompt_name, by_cond in samples.items():
        plain = median([s["tok_s"] for s in by_cond["plain"]])
        for cond, runs in by_cond.items():
            rates = [s["tok_s"] for s in runs]
            drafted = sum(s["drafted"] for s in runs)
            accepted = sum(s["accepted"] for s in runs)
            rate, ci = median(rates), median_ci(rates) or (0.0, 0.0)
            acceptance = accepted / drafted if drafted else None
            summary[f"{prompt_name} / {cond}"] = {
                "tok_s": rate,
                "ci": ci,
                "ratio_to_plain": rate / plain if plain else 0.0,
                "acceptance": acceptance,
                "drafted_per_token": drafted / max(1, sum(s["tokens"] for s in runs)),
            }
            acc = f"{acceptance:.0%}" if acceptance is not None else "-"
            ratio = rate / plain if plain else 0.0
            print(
                f"{prompt_name:<11} {cond:<14} {rate:7.1f} tok/s (95% CI {ci[0]:.1f}-{ci[1]:.1f})"
                f"  x{ratio:.2f}  acceptance {acc}"
            )
    print("draft model, first request over each prompt (cold):", {k: round(v, 1) for k, v in cold.items()}, "tok/s")
    print(f"load average before {load_before}, after {load_after}")
    if args.out:
        args.out.write_text(json.dumps({"samples": samples, "summary": summary}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
