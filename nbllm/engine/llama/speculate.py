"""Speculative sampling: verifying a draft for a sampled request without changing its distribution.

A prompt-lookup draft is a deterministic proposal (the drafting distribution is all on the drafted token),
so the standard rule (Leviathan et al. 2023; Chen et al. 2023) reduces to: at each draft position, with
``p`` the request's own distribution there (after its whole sampler chain), accept the drafted token ``x``
with probability ``p(x)``; on the first rejection draw the position's token from ``p`` with ``x`` removed
(renormalised) and stop; when every draft token is accepted, draw one more token from ``p`` at the position
after the last. Each emitted token is then distributed exactly as decoding one token at a time gives.

The draws come from the request's own generator, seeded with its seed: the same seed, the same steps,
the same tokens.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from nbllm.engine.base import SamplingParams
from nbllm.engine.llama.sampling import Shaper, request_seed

__all__ = ["SampledVerifier", "accept_draft"]

Distribution = tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]
"""(token ids, probabilities): a position's distribution over the tokens it can give."""


def _draw(dist: Distribution, rng: np.random.Generator) -> int:
    ids, probs = dist
    cumulative = np.cumsum(probs)
    i = int(np.searchsorted(cumulative, rng.random() * cumulative[-1], side="right"))
    return int(ids[min(i, len(ids) - 1)])


def accept_draft(draft: Sequence[int], dist: Callable[[int], Distribution], rng: np.random.Generator) -> list[int]:
    """The tokens a drafted step emits: the accepted prefix of ``draft`` and one token drawn after it.

    ``dist(j)`` is the target distribution at draft position ``j`` (``j == len(draft)``: the position after
    the last draft token); it is asked for only as far as the verification gets.
    """
    out: list[int] = []
    for j, x in enumerate(draft):
        ids, probs = dist(j)
        hit = ids == x
        p_x = float(probs[hit].sum())
        if rng.random() < p_x:
            out.append(x)
            continue
        rest = np.where(hit, 0.0, probs)  # the residual max(p - q, 0) for q all on x, normalised by _draw
        out.append(_draw((ids, rest), rng))
        return out
    out.append(_draw(dist(len(draft)), rng))
    return out


class SampledVerifier:
    """A sampled request's verifier: its distribution at each draft position and its seeded generator."""

    def __init__(self, params: SamplingParams, n_vocab: int) -> None:
        self._shaper = Shaper(params, n_vocab)
        self._rng = np.random.default_rng(request_seed(params))

    def verify(self, rows: np.ndarray[Any, Any], draft: Sequence[int]) -> list[int]:
        """The tokens to emit, given the logits ``rows`` of the step's next position and of each draft position."""
        return accept_draft(draft, lambda j: self._shaper.distribution(rows[j]), self._rng)

    def close(self) -> None:
        """Release the native stages."""
        self._shaper.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # (at interpreter exit llama.cpp may be gone first)
            self.close()
