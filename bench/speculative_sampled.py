"""Sampled open-ended requests in-process (no server): the automatic mode against off, and what it drafted.

``python -m bench.speculative_sampled --model SMOLLM2.gguf --rounds 8 --out sampled.json``

S = 1 and 4 concurrent story openings (``bench.prompts.story``), temperature 0.8 with a seed per client and
round (the same for both modes), 128 tokens each, through the engine's decode loop; auto
(``draft_num_predict`` -1) and off (0) alternate inside each round. Prints each round's aggregate tokens/s,
the ratio and every request's (drafted, accepted) counts: with no draft made the two modes do the same work,
so their spread is the machine's noise.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
from pathlib import Path
from typing import Any

from bench.prompts import story
from bench.speculative_inprocess import concurrent
from nbllm.engine.base import LoadSpec, SamplingParams
from nbllm.engine.llama.engine import LlamaEngine

TOKENS = 128


def _chatml(text: str) -> str:
    return f"<|im_start|>user\n{text}<|im_end|>\n<|im_start|>assistant\n"


def measure(model: Path, rounds: int, threads: int) -> dict[str, Any]:
    """Per ``"{S}:{draft}"``: each round's tokens/s and the requests' (drafted, accepted)."""
    eng = LlamaEngine(LoadSpec(path=model, num_ctx=1024, parallel=8, num_thread=threads))
    prompts = [eng.tokenize(_chatml(story(k)), add_special=False) for k in range(4)]

    def run(s: int, draft: int, seed: int) -> tuple[float, list[Any]]:
        def params(i: int) -> SamplingParams:
            return SamplingParams(temperature=0.8, seed=seed * 100 + i, num_predict=TOKENS, draft=draft)

        rate, stats = concurrent(eng, prompts[:s], params)
        return rate, list(stats)

    for p in prompts:  # every prompt cached, every batch shape warmed up once
        list(eng.generate(p, SamplingParams(temperature=0, num_predict=1, draft=0)))
    run(4, 0, 999)
    run(1, -1, 998)
    out: dict[str, Any] = {}
    for s in (1, 4):
        for r in range(rounds):
            for draft in (-1, 0) if r % 2 == 0 else (0, -1):
                rate, stats = run(s, draft, r)
                out.setdefault(f"{s}:{draft}", []).append({"rate": rate, "drafts": stats, "load": os.getloadavg()[0]})
            auto, off = out[f"{s}:-1"][-1], out[f"{s}:0"][-1]
            ratio = auto["rate"] / off["rate"]
            shown = f"auto {auto['rate']:.1f} off {off['rate']:.1f} tok/s, ratio {ratio:.3f}"
            print(f"S={s} round {r}: {shown}, auto drafted/accepted {auto['drafts']}", flush=True)
        ratios = [a["rate"] / o["rate"] for a, o in zip(out[f"{s}:-1"], out[f"{s}:0"], strict=True)]
        out[f"ratio:{s}"] = {"median": statistics.median(ratios), "min": min(ratios), "max": max(ratios)}
        print(f"S={s}: auto/off median {statistics.median(ratios):.3f} (min {min(ratios):.3f}, max {max(ratios):.3f})")
    eng.close()
    return out


def main(argv: list[str] | None = None) -> None:
    """Run and write the JSON."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, required=True, help="SmolLM2-135M-Instruct's GGUF")
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    result = measure(args.model, args.rounds, args.threads)
    args.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
