"""Prompt lookup: draft tokens for speculative decoding from n-grams of the text so far, no draft model.

Answers grounded in their input ("fix this code", "rewrite this paragraph") repeat long runs of the
prompt. When the last few tokens of a sequence occurred earlier in it, the tokens that followed them
then are a good guess for what follows now. The decode loop feeds that guess (the draft) to the model
together with the sequence's next token, in one ``llama_decode``, and keeps the longest prefix of the
draft that the model's own greedy choices agree with; the output is exactly what decoding one token at
a time gives, only with fewer steps when the guess is right.

A :class:`DraftPolicy` decides how many tokens to draft each step: a fixed number
(``draft_num_predict`` > 0), or, in the automatic mode, the length whose expected accepted tokens best
repay the extra work of verifying them, measured against a step's cost curve; it stands down when no
length pays (low acceptance, or a batch busy enough that its sequences already share the step well).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "AUTO_DRAFT",
    "AUTO_NGRAMS",
    "BATCH_COST",
    "DRAFT_COST",
    "FIXED_NGRAMS",
    "DraftPolicy",
    "PromptLookup",
    "batch_rate",
    "expected_gain",
]

AUTO_DRAFT = -1
"""``draft_num_predict`` for the automatic mode (the default)."""

FIXED_NGRAMS = (4, 3, 2)
"""The suffix lengths looked up for a fixed draft length, longest (most specific) first."""
AUTO_NGRAMS = (12, 8, 4)
"""The automatic mode's: on 2 CPU cores a draft token costs half a step, so only drafts from long matches
pay (SmolLM2, sampled stories: a draft's first token is right 50% of the time after a 2- or 3-token match,
58-82% after 4 to 8; on input-grounded text 98% after 8)."""


class PromptLookup:
    """The tokens of one sequence (prompt, then what it generates) and where each n-gram last occurred.

    >>> lookup = PromptLookup([1, 2, 3, 4, 5, 9, 1, 2, 3])
    >>> lookup.draft(3)
    [4, 5, 9]
    >>> lookup.push(7)
    >>> lookup.draft(3)
    []
    """

    def __init__(self, tokens: Sequence[int], ngrams: Sequence[int] = FIXED_NGRAMS) -> None:
        self._ngrams = tuple(ngrams)
        self._tokens: list[int] = []
        self._next: dict[tuple[int, ...], int] = {}
        """An n-gram -> the index just after its latest occurrence that has a continuation."""
        for token in tokens:
            self.push(token)

    def push(self, token: int) -> None:
        """Append a token (the n-grams ending just before it now have a continuation)."""
        tokens = self._tokens
        end = len(tokens)
        for n in self._ngrams:
            if end >= n:
                self._next[tuple(tokens[end - n : end])] = end
        tokens.append(token)

    def draft(self, k: int) -> list[int]:
        """Up to ``k`` tokens that followed the latest earlier occurrence of the longest matching suffix."""
        tokens = self._tokens
        end = len(tokens)
        for n in self._ngrams:
            if end > n:
                start = self._next.get(tuple(tokens[end - n :]))
                if start is not None:
                    return tokens[start : min(start + k, end)]
        return []


DRAFT_COST = (0.35, 0.5)
"""What drafting ``k`` tokens adds to a step, in single-token steps: ``DRAFT_COST[0] + DRAFT_COST[1] * k``.

Measured with SmolLM2-135M on 2 CPU cores (``bench/results/2026-12-03-speculative-2.md``): a step of
1 + k tokens costs 1.9, 2.3, 5.5, 9.1 and 22 single steps for k = 1, 2, 8, 16 and 48. On a GPU, where a
few more tokens cost almost nothing, these constants are pessimistic: drafting then pays more often.
"""

BATCH_COST = 0.52
"""What each further sequence's token adds to a single-token step (same measurement: 2 sequences 1.52,
4 sequences 2.59 single steps)."""

_PRIOR = (4.0, 0.4)
"""Pseudo-counts before any evidence: draft tokens at risk, of them rejected (a per-token miss rate of 0.1)."""
_DECAY = 0.85
"""Evidence fades by this much per verified draft (a window of about seven drafts)."""
_MARGIN = 1.1
"""Drafting must promise this much more than the batch's throughput without it."""
_MAX_PAUSE = 128
_PROBE = 2
"""Draft tokens of a probe (after a pause)."""
_STREAK_MAX = 63
"""Most tokens a draft grows to while drafts are accepted whole: 2, 4, 8, 16, 32, then 63, a step of 64 tokens.
On this project's 2-core machine a step of 17 tokens costs 8.4-8.8 single steps, one of 33 tokens 15.7-16.5 and
one of 63 tokens 29.7, but one of 64 tokens 15.2 (``bench/results/2026-12-05-step-costs.json``; where llama.cpp's
CPU code changes its way at 64 tokens was not looked into), so a whole 64-token step yields 4.2 tokens per unit
of work where a 17-token one yields 2.0. Where no such threshold exists (the costs of 2026-12-03), a longer
streak is level or better on the replayed answers (``bench.speculative_replay``)."""
_ESTIMATE_MAX = 32
"""Longest draft the miss-rate estimate picks (streaks go further)."""


def expected_gain(miss: float, k: int) -> float:
    """Extra tokens per unit of extra work of a ``k``-token draft whose tokens each miss with chance ``miss``."""
    hit = 1 - miss
    accepted = k if miss <= 0 else hit * (1 - hit**k) / miss  # the expected accepted prefix
    return accepted / (DRAFT_COST[0] + DRAFT_COST[1] * k)


def batch_rate(generating: int) -> float:
    """Tokens per single-token step a batch of ``generating`` one-token sequences gives (without drafts)."""
    return generating / (1 + BATCH_COST * max(0, generating - 1))


@dataclass
class DraftPolicy:
    """How many tokens one sequence drafts per step: fixed, or the length whose expected gain pays best.

    The automatic mode estimates the chance that a draft token is rejected (fading evidence: of the draft
    tokens that were verified, those rejected; a prefix accepted, then the first miss). A ``k``-token draft
    is then expected to yield :func:`expected_gain` extra tokens per unit of extra work (``DRAFT_COST``);
    the policy drafts the best ``k``, and only when that beats what the batch yields per unit of work without
    drafts (:func:`batch_rate`: with several sequences generating, their tokens already share the step, so
    drafts must do better still, and with enough of them no draft pays). When none pays it pauses, 2, 4,
    ... 128 steps, then probes with a two-token draft to see if the text has turned repetitive.

    Misses in input-grounded text are not spread evenly: an answer copies long runs of its input and
    departs from it at a few places (the renamed word). So a greedy sequence alone in the batch whose last
    draft was accepted whole drafts twice as many tokens next (up to ``_STREAK_MAX``), whatever the
    estimate says; the first miss ends the streak and the estimate decides again. (Replayed through the
    step costs, on SmolLM2's greedy answer to the bench's grounded prompt: 1.23x over no drafts without
    streaks, 1.54x with streaks up to 16, 1.94x up to 63; open-ended stories 0.3% lower. Served, against
    llama-server's defaults: 1.55x with streaks up to 16, 2.49x up to 63:
    ``bench/results/2026-12-05-speculative-streak-63.md``.)
    """

    limit: int
    """Most tokens a step drafts."""
    auto: bool
    """Choose the length by expected gain, and pause when none pays."""
    streaks: bool = True
    """Double the draft after one accepted whole (automatic mode, alone in the batch): for greedy requests.
    A sampled request accepts a draft token only with its probability, so a draft accepted whole says less
    (in-process, SmolLM2's sampled stories at one client: rounds that streaked lost 12-13%)."""
    _verified: float = _PRIOR[0]
    _missed: float = _PRIOR[1]
    _pause: int = 0
    _backoff: int = 0
    _probe: bool = False
    _streak: int = 0
    """The length of the last draft if it was accepted whole (else 0)."""

    @classmethod
    def for_request(cls, draft_num_predict: int, *, auto_limit: int, greedy: bool = True) -> DraftPolicy | None:
        """The policy for a request's ``draft_num_predict`` (None: no speculation)."""
        if draft_num_predict == 0 or (draft_num_predict < 0 and auto_limit <= 0):
            return None
        if draft_num_predict < 0:
            return cls(limit=auto_limit, auto=True, streaks=greedy)
        return cls(limit=draft_num_predict, auto=False)

    @property
    def ngrams(self) -> tuple[int, ...]:
        """The suffix lengths its lookup should match."""
        return AUTO_NGRAMS if self.auto else FIXED_NGRAMS

    def best(self) -> tuple[int, float]:
        """(draft length, expected extra tokens per unit of extra work) of the best length for the miss rate."""
        miss = self._missed / self._verified
        gains = [(expected_gain(miss, k), k) for k in range(1, min(self.limit, _ESTIMATE_MAX) + 1)]
        gain, k = max(gains)
        return k, gain

    def want(self, generating: int) -> int:
        """Tokens to draft this step, with ``generating`` sequences in the batch (0: do not draft)."""
        if not self.auto:
            return self.limit
        if self._streak and generating == 1:
            return min(self.limit, _STREAK_MAX, 2 * self._streak)
        if self._pause:
            self._pause -= 1
            self._probe = self._pause == 0
            return 0
        k, gain = self.best()
        if gain >= _MARGIN * batch_rate(generating):
            return k
        if self._probe and generating == 1:
            return min(_PROBE, self.limit)
        self._backoff = min(_MAX_PAUSE, max(2, self._backoff * 2))
        self._pause = self._backoff
        self._probe = False
        return 0

    def update(self, drafted: int, accepted: int) -> None:
        """Learn from one verified draft (automatic mode)."""
        if not self.auto or drafted == 0:
            return
        self._probe = False
        missed = accepted < drafted
        self._streak = drafted if self.streaks and not missed else 0
        self._verified = _PRIOR[0] + (self._verified - _PRIOR[0]) * _DECAY + accepted + missed
        self._missed = _PRIOR[1] + (self._missed - _PRIOR[1]) * _DECAY + missed
        if self.best()[1] >= _MARGIN:
            self._backoff = 0
