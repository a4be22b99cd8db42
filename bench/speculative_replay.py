"""Draft policies replayed offline: real greedy and sampled outputs priced with the measured step costs.

python -m bench.speculative_replay --model SMOLLM2.gguf --out replay.json

The engine generates each answer once with drafts off (the prompt cached first, as the bench's repeated
requests find it): the input-grounded prompt of ``bench.speculative``, a "rewrite this paragraph" prompt,
four story openings greedy and the same four sampled at 0.8. Each answer is then replayed: every step the
policy asks for ``k`` tokens, prompt lookup drafts them from what is known so far, the draft is accepted as
far as it equals the answer, and the step is priced by ``STEP_COST`` (a step of ``n`` tokens, in single-token
steps). The speed-up over one token per step is what that policy would give if the costs held. A sampled
answer is replayed as if the draft were accepted where it equals the sampled token (speculative sampling
accepts it with the token's probability instead: a rough proxy). ``oracle`` drafts exactly the tokens that
will be accepted: the ceiling of prompt lookup at these costs.
"""

from __future__ import annotations

import argparse
import bisect
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.prompts import _SENTENCES, story
from bench.speculative import GROUNDED
from bench.speculative_sampled import _chatml
from nbllm.engine.base import LoadSpec, SamplingParams, TokenChunk
from nbllm.engine.llama.engine import LlamaEngine
from nbllm.engine.llama.lookup import AUTO_NGRAMS, DraftPolicy, PromptLookup

STEP_COST = {1: 1.0, 2: 1.90, 3: 2.28, 4: 2.84, 5: 3.85, 9: 5.58, 13: 7.83, 17: 9.18, 25: 13.47, 33: 17.83, 49: 22.29}
"""Single-token steps a step of ``n`` tokens of one sequence costs (SmolLM2-135M, 2 CPU cores, 400-token
context: ``bench/results/2026-12-03-speculative-2.md``); linear in between and beyond."""
_SIZES = sorted(STEP_COST)


def step_cost(n: int) -> float:
    """The cost of a step of ``n`` tokens, interpolated from ``STEP_COST``."""
    if n >= _SIZES[-1]:
        return STEP_COST[_SIZES[-1]] * n / _SIZES[-1]
    j = bisect.bisect_left(_SIZES, n)
    if _SIZES[j] == n:
        return STEP_COST[n]
    lo, hi = _SIZES[j - 1], _SIZES[j]
    return STEP_COST[lo] + (STEP_COST[hi] - STEP_COST[lo]) * (n - lo) / (hi - lo)


def replay(prompt: list[int], out: list[int], length: Callable[[], int], learn: Callable[[int, int], None]) -> float:
    """Speed-up over one token per step of drafting ``length()`` tokens each step (``learn(drafted, accepted)``)."""
    lookup = PromptLookup(prompt + out[:1], AUTO_NGRAMS)  # (the first token comes from the prompt's step)
    i, cost = 1, 0.0
    while i < len(out):
        k = length()
        draft = (lookup.draft(k) if k > 0 else [])[: len(out) - i]
        accepted = 0
        while accepted < len(draft) and draft[accepted] == out[i + accepted]:
            accepted += 1
        cost += step_cost(1 + len(draft))
        if draft:
            learn(len(draft), accepted)
        for token in out[i : i + accepted + 1]:
            lookup.push(token)
        i += accepted + 1
    return (len(out) - 1) / cost if cost else 1.0


def oracle(prompt: list[int], out: list[int]) -> float:
    """Speed-up when each step drafts exactly the tokens that will be accepted."""
    lookup = PromptLookup(prompt + out[:1], AUTO_NGRAMS)
    i, cost = 1, 0.0
    while i < len(out):
        draft = lookup.draft(len(out) - i)
        accepted = 0
        while accepted < len(draft) and draft[accepted] == out[i + accepted]:
            accepted += 1
        cost += step_cost(1 + accepted)
        for token in out[i : i + accepted + 1]:
            lookup.push(token)
        i += accepted + 1
    return (len(out) - 1) / cost if cost else 1.0


def _policy(*, streaks: bool) -> tuple[Callable[[], int], Callable[[int, int], None]]:
    policy = DraftPolicy(limit=32, auto=True, streaks=streaks)
    return (lambda: policy.want(1)), policy.update


def _fixed(k: int) -> tuple[Callable[[], int], Callable[[int, int], None]]:
    return (lambda: k), (lambda drafted, accepted: None)


POLICIES: dict[str, Callable[[], tuple[Callable[[], int], Callable[[int, int], None]]]] = {
    "auto, no streaks": lambda: _policy(streaks=False),
    "auto (streaks)": lambda: _policy(streaks=True),
    "fixed 8": lambda: _fixed(8),
    "fixed 16": lambda: _fixed(16),
    "fixed 48 (llama-server ngram-simple's m)": lambda: _fixed(48),
}


def corpus(model: Path, threads: int) -> list[dict[str, Any]]:
    """The answers to replay, each generated with drafts off after its prompt was cached."""
    eng = LlamaEngine(LoadSpec(path=model, num_ctx=2048, parallel=4, num_thread=threads))
    paragraph = _chatml("Rewrite this paragraph in plain English, keeping every fact:\n\n" + " ".join(_SENTENCES[:8]))
    cases: list[tuple[str, str, int, dict[str, Any]]] = [
        ("grounded", GROUNDED, 256, {"temperature": 0}),
        ("paragraph", paragraph, 200, {"temperature": 0}),
        *((f"story {i}", _chatml(story(30_000 + i)), 128, {"temperature": 0}) for i in range(4)),
        *((f"sampled {i}", _chatml(story(30_000 + i)), 128, {"temperature": 0.8, "seed": i}) for i in range(4)),
    ]
    out = []
    for name, text, n, sampling in cases:
        prompt = eng.tokenize(text, add_special=False)
        list(eng.generate(prompt, SamplingParams(num_predict=1, draft=0, **sampling)))
        events = eng.generate(prompt, SamplingParams(num_predict=n, draft=0, **sampling))
        out.append({"name": name, "prompt": prompt, "out": [e.token for e in events if isinstance(e, TokenChunk)]})
    eng.close()
    return out


def main(argv: list[str] | None = None) -> None:
    """Generate the answers, replay every policy on each, print the table and write the JSON."""
    p = argparse.ArgumentParser(prog="python -m bench.speculative_replay", description=__doc__)
    p.add_argument("--model", type=Path, required=True, help="SmolLM2-135M-Instruct's GGUF")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, required=True)
    a = p.parse_args(argv)
    answers = corpus(a.model, a.threads)
    table: dict[str, dict[str, float]] = {}
    for name, make in POLICIES.items():
        table[name] = {c["name"]: replay(c["prompt"], c["out"], *make()) for c in answers}
    table["oracle (upper bound)"] = {c["name"]: oracle(c["prompt"], c["out"]) for c in answers}
    names = [c["name"] for c in answers]
    print("| policy | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    for policy, row in table.items():
        print(f"| {policy} | " + " | ".join(f"{row[n]:.3f}" for n in names) + " |")
    a.out.write_text(json.dumps({"step_cost": STEP_COST, "speedups": table, "answers": answers}))


if __name__ == "__main__":
    main()
