"""Resuming a ~2,000-token conversation from a KV snapshot against evaluating it again: time to first token.

python -m bench.kv_resume --gguf SMOLLM2.gguf --rounds 7 --out bench/results/2026-12-03-kv-snapshots.json

A conversation (a system prompt and several turns, ~2,000 tokens) is answered once by an engine with KV
snapshots on, which persists its state. Then, in alternating rounds, the next turn is asked of a freshly
loaded engine (as after a restart) that either resumes from a copy of that snapshot directory or has no
snapshots and evaluates the whole conversation. The load is not timed; TTFT runs from the request to its
first token, in the engine (no HTTP), so the difference is the history's evaluation against reading,
checking and restoring its state.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.workloads import median, median_ci
from nbllm.engine import FinalStats, LoadSpec, SamplingParams, TokenChunk
from nbllm.engine.llama import LlamaEngine
from nbllm.store.snapshots import SnapshotStore

GREEDY = SamplingParams(temperature=0, num_predict=8, draft=0)
_PARAGRAPH = (
    "The river rises in the hills above the town, runs through the old mill race, and reaches the sea after "
    "forty kilometres of farmland, marsh and dunes; the survey of {n} counted its bridges, weirs and fords. "
)


def conversation(turns: int) -> str:
    """A ChatML conversation of ``turns`` user/assistant exchanges, ending with a new question."""
    parts = ["<|im_start|>system\nYou are a careful assistant who summarises survey notes.<|im_end|>\n"]
    for i in range(turns):
        notes = "".join(_PARAGRAPH.format(n=1900 + 10 * i + j) for j in range(3))
        parts.append(f"<|im_start|>user\nSurvey notes {i}:\n{notes}<|im_end|>\n")
        parts.append(f"<|im_start|>assistant\nNoted: survey {i} describes the river and its crossings.<|im_end|>\n")
    return "".join(parts)


def ask(engine: LlamaEngine, text: str) -> tuple[float, FinalStats]:
    """(seconds to the first token, final stats)."""
    start = time.perf_counter()
    first = 0.0
    final = None
    for event in engine.generate(engine.tokenize(text), GREEDY):
        if isinstance(event, TokenChunk) and not first:
            first = time.perf_counter() - start
        elif isinstance(event, FinalStats):
            final = event
    assert final is not None
    return first, final


def load(gguf: Path, snapshots: Path | None, num_ctx: int) -> LlamaEngine:
    store = SnapshotStore(snapshots, 8 << 30) if snapshots is not None else None
    return LlamaEngine(LoadSpec(path=gguf, num_ctx=num_ctx, parallel=1, ram_cache=0, snapshots=store))


def run(gguf: Path, rounds: int, turns: int, num_ctx: int, work: Path) -> dict[str, Any]:
    history = conversation(turns)
    pristine = work / "pristine"
    engine = load(gguf, pristine, num_ctx)
    try:
        _, first = ask(engine, history + "<|im_start|>assistant\n")
        answer = engine.detokenize(list(first.tokens[-first.eval_count :])) if first.eval_count else ""
        n_history = len(first.tokens)
    finally:
        engine.close()
    question = history + f"<|im_start|>assistant\n{answer}<|im_end|>\n<|im_start|>user\nSummarise.<|im_end|>\n"
    question += "<|im_start|>assistant\n"
    samples: dict[str, list[dict[str, Any]]] = {"resume": [], "evaluate": []}
    for r in range(rounds):
        order = ["resume", "evaluate"] if r % 2 == 0 else ["evaluate", "resume"]
        for mode in order:
            snap_dir = None
            if mode == "resume":
                snap_dir = work / f"round{r}"
                shutil.copytree(pristine, snap_dir)
            engine = load(gguf, snap_dir, num_ctx)
            try:
                ttft, final = ask(engine, question)
            finally:
                engine.close()
            samples[mode].append(
                {
                    "ttft_s": ttft,
                    "prompt_tokens": final.prompt_eval_count + final.cached_tokens,
                    "cached_tokens": final.cached_tokens,
                    "prompt_eval_duration_s": final.prompt_eval_duration / 1e9,
                    "text": final.text,
                }
            )
    return {"history_tokens": n_history, "samples": samples}


def summary(result: dict[str, Any]) -> dict[str, Any]:
    resume = [s["ttft_s"] for s in result["samples"]["resume"]]
    evaluate = [s["ttft_s"] for s in result["samples"]["evaluate"]]
    ratios = [e / r for e, r in zip(evaluate, resume, strict=True)]
    return {
        "resume_ttft_median_s": median(resume),
        "resume_ttft_ci": median_ci(resume),
        "evaluate_ttft_median_s": median(evaluate),
        "evaluate_ttft_ci": median_ci(evaluate),
        "ratio_median": median(ratios),
        "ratio_ci": median_ci(ratios),
        "ratio_min_max": (min(ratios), max(ratios)),
        "resume_ttft_stdev_s": statistics.pstdev(resume),
    }


def main() -> None:
    """Run the rounds and write the raw JSON (the report is written by hand from it)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gguf", type=Path, required=True)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--turns", type=int, default=11)
    parser.add_argument("--num-ctx", type=int, default=4096)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="kv-resume-") as tmp:
        result = run(args.gguf, args.rounds, args.turns, args.num_ctx, Path(tmp))
    result["summary"] = summary(result)
    result["load_average_before"] = load_before
    result["load_average_after"] = os.getloadavg()
    result["machine"] = {"platform": platform.platform(), "cpus": os.cpu_count()}
    result["command"] = "python -m bench.kv_resume " + " ".join(
        f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items()
    )
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["summary"], indent=2))


if __name__ == "__main__":
    main()
