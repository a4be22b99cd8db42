"""A conversation's history tokenized once: each turn tokenizes only what is new.

A chat sends the whole conversation again on every turn, and llama.cpp tokenized all of it again: 8 ms for
a 2,570-token history on this project's 2-core machine, on every turn, before anything else could start.

Before it tokenizes, llama.cpp cuts a prompt at the texts of its special tokens (``tokenizer_st_partition``)
and then tokenizes each piece of text between them on its own. SPM and BPE vocabularies carry nothing from
one piece to the next except "the previous piece was a special token", and a tokenization that starts
without BOS assumes that too. So when a prompt starts with a prefix that ends in a special token ``B``, its
tokens are the prefix's tokens followed by the rest's tokens, the rest tokenized without BOS. Three things
must hold for that:

- ``B`` is matched wherever its text appears. No special token at least as long as ``B`` (llama.cpp matches
  the longer ones first) contains ``B``'s text, starts with the end of it, or ends with the start of it; nor
  does ``B`` itself (two of its occurrences could overlap).
- ``B`` does not take the whitespace after it (``RSTRIP``).
- The vocabulary adds no EOS or SEP at the end (``add_eos``/``add_sep``).

:func:`boundaries` picks the special tokens for which all three hold. :class:`HistoryTokens` tokenizes a
prompt stretch by stretch between them, keeps recent prompts with their tokens, and gives a new prompt the
tokens of the longest stretch it shares with one of them: the turns before its last one.
``tests/engine/test_history_tokens.py`` compares its output with llama.cpp's whole-prompt tokenization on
both of the project's models, over conversations and over hostile strings.
"""

from __future__ import annotations

import bisect
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import llama_cpp as L

__all__ = ["HistoryTokens", "boundaries", "special_tokens"]

_SPECIAL = L.LLAMA_TOKEN_ATTR_CONTROL | L.LLAMA_TOKEN_ATTR_USER_DEFINED | L.LLAMA_TOKEN_ATTR_UNKNOWN
"""The tokens llama.cpp cuts a prompt at (its ``cache_special_tokens``)."""
_KEEP = 16
"""Prompts kept (least recently used go first)..."""
_KEEP_BYTES = 8 << 20
"""...and at most this much of their text."""


def special_tokens(vocab: object, n_vocab: int) -> tuple[dict[bytes, int], list[bytes]]:
    """The text and attributes of every token llama.cpp cuts a prompt at, and the texts of the end-of-generation
    tokens (one pass over the vocabulary: ~26 ms for 49,152 tokens here, ~0.2 s for Gemma's 262,144; the model
    runs it in a thread of its own after loading)."""
    specials: dict[bytes, int] = {}
    ends: list[bytes] = []
    for token in range(n_vocab):
        attr = int(L.llama_vocab_get_attr(vocab, token))
        if attr & _SPECIAL:
            text = bytes(L.llama_vocab_get_text(vocab, token) or b"")
            if text:
                specials[text] = attr
                if L.llama_vocab_is_eog(vocab, token):
                    ends.append(text)
    return specials, ends


def boundaries(specials: Mapping[bytes, int], among: Iterable[bytes] | None = None) -> list[bytes]:
    """Of ``among`` (default: all the special texts), those a prompt may be cut after (see the module's
    docstring), longest first. The model offers its end-of-turn tokens: every chat template ends a message with
    one, and a vocabulary may have thousands of special tokens (Gemma's ``<unusedN>``, HTML tags, runs of
    spaces) that no prompt needs to be cut at."""
    out = []
    by_length = sorted(specials, key=len, reverse=True)
    for b in specials if among is None else among:
        attr = specials.get(b)
        if attr is None or attr & L.LLAMA_TOKEN_ATTR_RSTRIP or any(b.startswith(b[i:]) for i in range(1, len(b))):
            continue  # (not special, takes the whitespace after it, or could overlap itself: "aba" in "ababa")
        clash = False
        for s in by_length:
            if len(s) < len(b):
                break  # (a shorter one is matched after b: it cannot take b's text)
            if s != b and (b in s or any(s.startswith(b[i:]) or s.endswith(b[:i]) for i in range(1, len(b)))):
                clash = True
                break
        if not clash:
            out.append(b)
    return sorted(out, key=len, reverse=True)


@dataclass(frozen=True)
class _Kept:
    """A prompt up to its last cut point, with its tokens and how many of them each cut point ends."""

    data: bytes
    add_special: bool
    cuts: tuple[int, ...]
    """Byte offsets just after each boundary token, ascending; the last is ``len(data)``."""
    counts: tuple[int, ...]
    """Tokens of ``data[:cut]`` for each cut."""
    tokens: tuple[int, ...]


def _shared(a: bytes, b: bytes) -> int:
    """Length of the longest common prefix (a binary search of slice comparisons: memcmp, not a Python loop)."""
    lo, hi = 0, min(len(a), len(b))
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if a[:mid] == b[:mid]:
            lo = mid
        else:
            hi = mid - 1
    return lo


class HistoryTokens:
    """``tokenize(data, add_special)`` as llama.cpp gives it (special tokens parsed), reusing the tokens of the
    longest stretch a recent prompt shares with it up to a cut point: the previous turn of a conversation, or
    the turn before the one a user edited. Thread-safe."""

    def __init__(self, raw: Callable[[bytes, bool], list[int]], cut_after: Iterable[bytes]) -> None:
        self._raw = raw
        """llama.cpp's tokenization of bytes (special tokens parsed; BOS if the flag says so)."""
        texts = list(cut_after)
        self._pattern = re.compile(b"|".join(re.escape(t) for t in texts)) if texts else None
        self._kept: OrderedDict[tuple[bool, bytes], _Kept] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.reused = 0
        """Prompts that reused a kept prompt's tokens."""
        self._plain: OrderedDict[bytes, None] = OrderedDict()
        """Recent prompts with no cut point in them (raw completions), only to tell which go on from another."""
        self._plain_bytes = 0

    def tokenize(
        self,
        data: bytes,
        add_special: bool,  # noqa: FBT001 - llama.cpp's own flag
        new: Callable[[], None] | None = None,
    ) -> list[int]:
        """The prompt's tokens. ``new`` is called, before anything is tokenized, when the prompt goes on from no
        recent prompt as a whole: a new conversation (perhaps one that shares the system prompt of others), or a
        prompt with no cut point in it that starts with none of the recent such prompts. A conversation's next
        turn, the same prompt again, a user's edit of the last turn (it goes on from the turn before) or a raw
        prompt that extends the one before does not call it."""
        cuts = [m.end() for m in self._pattern.finditer(data)] if self._pattern is not None else []
        if not cuts:
            if new is not None and not self._plain_goes_on(data):
                new()
            return self._raw(data, add_special)
        found, whole = self._reuse(data, add_special, cuts)
        if new is not None and not whole:
            new()
        tokens: list[int] = []
        counts: list[int] = []
        if found is not None:  # its tokens up to cut i, and how many each of its cuts up to there ends
            i, kept = found
            tokens, counts = list(kept.tokens[: kept.counts[i]]), list(kept.counts[: i + 1])
        for i in range(len(counts), len(cuts)):  # each stretch between cut points on its own, counted
            prev = cuts[i - 1] if i else 0
            tokens += self._raw(data[prev : cuts[i]], add_special and prev == 0)
            counts.append(len(tokens))
        last = cuts[-1]
        self._keep(_Kept(data[:last], add_special, tuple(cuts), tuple(counts), tuple(tokens)))
        tail = self._raw(data[last:], False) if last < len(data) else []  # noqa: FBT003
        return [*tokens, *tail]

    def _reuse(self, data: bytes, add_special: bool, cuts: list[int]) -> tuple[tuple[int, _Kept] | None, bool]:  # noqa: FBT001
        """The kept prompt sharing the most of ``data`` up to a cut point, and that cut's index: a prompt whose
        cut points up to there are ``data``'s own (the same bytes give the same matches; checked all the same).
        And whether ``data`` goes on from a kept prompt as a whole (a conversation's next turn, or the same
        prompt again: its sequence is in a slot, or kept)."""
        best: tuple[int, _Kept] | None = None
        whole = False
        with self._lock:
            entries = [k for k in self._kept.values() if k.add_special == add_special]
        for kept in entries:
            shared = _shared(kept.data, data)
            i = bisect.bisect_right(kept.cuts, shared) - 1  # its last cut within what both share
            if i < 0 or tuple(cuts[: i + 1]) != kept.cuts[: i + 1]:
                continue
            whole = whole or i == len(kept.cuts) - 1
            if best is None or kept.cuts[i] > best[1].cuts[best[0]]:
                best = (i, kept)
        if best is not None:
            with self._lock:
                self.reused += 1
        return best, whole

    def _plain_goes_on(self, data: bytes) -> bool:
        """Whether a prompt with no cut point starts with a recent one (kept from now on, as the most recent)."""
        with self._lock:
            goes_on = any(data.startswith(old) for old in self._plain)
            if data in self._plain:
                self._plain.move_to_end(data)
                return goes_on
            self._plain[data] = None
            self._plain_bytes += len(data)
            while len(self._plain) > _KEEP or self._plain_bytes > _KEEP_BYTES:
                old, _ = self._plain.popitem(last=False)
                self._plain_bytes -= len(old)
        return goes_on

    def _keep(self, kept: _Kept) -> None:
        key = (kept.add_special, kept.data)
        with self._lock:
            if key in self._kept:
                self._kept.move_to_end(key)
                return
            self._kept[key] = kept
            self._bytes += len(kept.data)
            while len(self._kept) > _KEEP or self._bytes > _KEEP_BYTES:
                _, old = self._kept.popitem(last=False)
                self._bytes -= len(old.data)
