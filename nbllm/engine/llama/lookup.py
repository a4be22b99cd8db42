"""Prompt lookup: draft tokens for speculative decoding from n-grams of the text so far, no draft model.

Answers grounded in their input ("fix this code", "rewrite this paragraph") repeat long runs of the
prompt. When the last few tokens of a sequence occurred earlier in it, the tokens that followed them
then are a good guess for what follows now. The decode loop feeds that guess (the draft) to the model
together with the sequence's next token, in one ``llama_decode``, and keeps the longest prefix of the
draft that the model's own greedy choices agree with; the output is exactly what decoding one token at
a time gives, only with fewer steps when the guess is right.

A :class:`DraftPolicy` decides how many tokens to draft each step: a fixed number
(``draft_num_predict`` > 0), or, in the automatic mode, a length that grows while drafts are accepted,
shrinks when they are not, pauses drafting for a while after misses, and stops when the batch is busy
(verifying drafts for several sequences at once costs more than it saves).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

__all__ = ["AUTO_DRAFT", "DraftPolicy", "PromptLookup"]

AUTO_DRAFT = -1
"""``draft_num_predict`` for the automatic mode (the default)."""

_NGRAMS = (4, 3, 2)
"""The suffix lengths looked up, longest (most specific) first."""


class PromptLookup:
    """The tokens of one sequence (prompt, then what it generates) and where each n-gram last occurred.

    >>> lookup = PromptLookup([1, 2, 3, 4, 5, 9, 1, 2, 3])
    >>> lookup.draft(3)
    [4, 5, 9]
    >>> lookup.push(7)
    >>> lookup.draft(3)
    []
    """

    def __init__(self, tokens: Sequence[int]) -> None:
        self._tokens: list[int] = []
        self._next: dict[tuple[int, ...], int] = {}
        """An n-gram -> the index just after its latest occurrence that has a continuation."""
        for token in tokens:
            self.push(token)

    def push(self, token: int) -> None:
        """Append a token (the n-grams ending just before it now have a continuation)."""
        tokens = self._tokens
        end = len(tokens)
        for n in _NGRAMS:
            if end >= n:
                self._next[tuple(tokens[end - n : end])] = end
        tokens.append(token)

    def draft(self, k: int) -> list[int]:
        """Up to ``k`` tokens that followed the latest earlier occurrence of the longest matching suffix."""
        tokens = self._tokens
        end = len(tokens)
        for n in _NGRAMS:
            if end > n:
                start = self._next.get(tuple(tokens[end - n :]))
                if start is not None:
                    return tokens[start : min(start + k, end)]
        return []


@dataclass
class DraftPolicy:
    """How many tokens one sequence drafts per step: fixed, or adapted to how well its drafts do."""

    limit: int
    """Most tokens a step drafts."""
    auto: bool
    """Adapt the length, pause after misses and stand down when the batch is busy."""
    busy: int = 1
    """Automatic mode drafts only while at most this many sequences are generating."""
    length: int = field(init=False)
    _pause: int = 0
    _cooldown: int = 0

    def __post_init__(self) -> None:
        self.length = self.limit

    @classmethod
    def for_request(cls, draft_num_predict: int, *, auto_limit: int, busy: int) -> DraftPolicy | None:
        """The policy for a request's ``draft_num_predict`` (None: no speculation)."""
        if draft_num_predict == 0 or (draft_num_predict < 0 and auto_limit <= 0):
            return None
        if draft_num_predict < 0:
            return cls(limit=auto_limit, auto=True, busy=busy)
        return cls(limit=draft_num_predict, auto=False)

    def want(self, generating: int) -> int:
        """Tokens to draft this step, with ``generating`` sequences in the batch (0: do not draft)."""
        if not self.auto:
            return self.limit
        if generating > self.busy:
            return 0
        if self._pause:
            self._pause -= 1
            return 0
        return self.length

    def update(self, drafted: int, accepted: int) -> None:
        """Learn from one verified draft (automatic mode)."""
        if not self.auto or drafted == 0:
            return
        if accepted == drafted:
            self.length = min(self.limit, self.length * 2)
            self._cooldown = 0
        elif accepted:
            self.length = max(1, accepted + 1)
            self._cooldown = 0
        else:  # a miss: draft less, and after misses at length 1 pause, longer each time
            if self.length == 1:
                self._cooldown = min(64, max(2, self._cooldown * 2))
                self._pause = self._cooldown
            self.length = max(1, self.length // 2)
