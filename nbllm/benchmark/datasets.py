"""Benchmark prompts: random text of a given token length, a shared-prefix set, or a user's JSONL.

Random prompts are pseudo-words (consonant-vowel syllables) drawn from a seeded generator. Their
length in tokens is set with the model's own tokenizer, through the server: two probes of known
word counts give tokens per word and the fixed overhead (``prompt_eval_count`` of a raw
``/api/generate``, or ``usage.prompt_tokens`` of ``/v1/completions``), and each prompt gets the
word count that hits the target. That is approximate (a word's tokens vary), so every request
records the input token count the server reported for it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nbllm.backends import Backend, BackendError
from nbllm.benchmark.spec import DatasetSpec

__all__ = ["Prompt", "TokenScale", "build_prompts", "calibrate", "load_jsonl", "random_text"]

_CONSONANTS = list("bdfghklmnprstvz")
_VOWELS = list("aeiou")
_PROBE_WORDS = (48, 176)
FALLBACK_TOKENS_PER_WORD = 1.5
"""Assumed when the server counts no prompt tokens (then input lengths are rough)."""


@dataclass(frozen=True)
class Prompt:
    """One benchmark prompt."""

    text: str
    system: str | None = None
    output_len: int | None = None
    input_len: int | None = None
    """Intended prompt tokens (random/prefix datasets), before the server's own count."""


@dataclass(frozen=True)
class TokenScale:
    """Tokens for ``words`` pseudo-words: ``intercept + per_word * words``, and how that was found."""

    per_word: float
    intercept: float
    note: str

    def words_for(self, tokens: int) -> int:
        """Words that make about ``tokens`` tokens."""
        return max(1, round((tokens - self.intercept) / self.per_word))


def random_text(rng: np.random.Generator, words: int) -> str:
    """``words`` pseudo-words of 1-3 syllables, space-separated."""
    syllables = rng.integers(1, 4, size=words)
    parts = []
    for count in syllables:
        cons = rng.choice(_CONSONANTS, size=count)
        vows = rng.choice(_VOWELS, size=count)
        parts.append("".join(c + v for c, v in zip(cons, vows, strict=True)))
    return " ".join(parts)


async def calibrate(backend: Backend, model: str, seed: int = 0) -> TokenScale:
    """Tokens per pseudo-word for ``model``, counted by the server (or the fallback, said so)."""
    rng = np.random.default_rng([seed, 7919])
    counts = []
    try:
        for words in _PROBE_WORDS:
            counts.append(await backend.count_tokens(model, random_text(rng, words)))
    except BackendError as exc:
        note = f"the server counted no tokens ({exc}); assumed {FALLBACK_TOKENS_PER_WORD} tokens/word"
        return TokenScale(FALLBACK_TOKENS_PER_WORD, 0.0, note)
    low, high = counts
    if low is None or high is None or high <= low:
        note = f"the server reported no prompt token counts; assumed {FALLBACK_TOKENS_PER_WORD} tokens/word"
        return TokenScale(FALLBACK_TOKENS_PER_WORD, 0.0, note)
    per_word = (high - low) / (_PROBE_WORDS[1] - _PROBE_WORDS[0])
    intercept = max(0.0, low - per_word * _PROBE_WORDS[0])
    note = f"input lengths set with the server's tokenizer: {per_word:.2f} tokens/word + {intercept:.0f}"
    return TokenScale(per_word, intercept, note)


def load_jsonl(path: Path, limit: int | None = None, output_len: int | None = None) -> list[Prompt]:
    """Prompts from a JSONL file: ``{"prompt": ..., "system": ..., "output_len": ...}`` a line."""
    prompts = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except ValueError as exc:
            raise ValueError(f"{path}:{number}: not JSON: {exc}") from None
        if not isinstance(item, dict) or not isinstance(item.get("prompt"), str):
            raise ValueError(f'{path}:{number}: expected an object with a "prompt" string')
        length = item.get("output_len", item.get("max_tokens", output_len))
        prompts.append(Prompt(item["prompt"], item.get("system"), int(length) if length is not None else None))
        if limit is not None and len(prompts) >= limit:
            break
    if not prompts:
        raise ValueError(f"{path}: no prompts")
    return prompts


def build_prompts(spec: DatasetSpec, scale: TokenScale, seed: int | list[int]) -> list[Prompt]:
    """The dataset's prompts (random and prefix sets drawn from ``seed``; a JSONL file as it is)."""
    if spec.kind == "jsonl":
        assert spec.path is not None
        return load_jsonl(spec.path, spec.num_prompts, spec.output_len)
    rng = np.random.default_rng(seed)
    if spec.kind == "random":
        words = scale.words_for(spec.input_len)
        return [Prompt(random_text(rng, words), None, spec.output_len, spec.input_len) for _ in range(spec.num_prompts)]
    # the prefixes come from the base seed only, so every run shares them (to show prefix caching)
    prefix_rng = np.random.default_rng([seed if isinstance(seed, int) else seed[0], 104729])
    prefixes = [random_text(prefix_rng, scale.words_for(spec.prefix_len)) for _ in range(spec.num_prefixes)]
    words = max(1, round(spec.input_len / scale.per_word))
    total = spec.prefix_len + spec.input_len
    return [
        Prompt(random_text(rng, words), prefixes[i % len(prefixes)], spec.output_len, total)
        for i in range(spec.num_prompts)
    ]
