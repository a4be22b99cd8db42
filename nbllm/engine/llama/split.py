"""A long prompt tokenized in pieces, on several threads at once, with exactly llama.cpp's result.

A fresh prompt must be tokenized before anything else can start. llama.cpp's BPE tokenizer is slow when it
runs cold, because the generation before it has pushed its tables out of the caches: 2.4 ms for a 500-token
prompt both on this project's 2-core machine and on the H200 machine's host, and 18 ms for 7,600 tokens here.
Each call runs on one thread, and ``llama_tokenize`` releases the GIL. A long prompt (``2 * MIN_PIECE`` bytes
or more) is split while llama.cpp leaves CPUs free: on a CPU only when the model is idle, since pieces
tokenized beside llama.cpp's spinning threads took longer than the whole. With a GPU, all but one CPU are
free.

Why the pieces give the same tokens. A BPE vocabulary whose tokenizer model is ``gpt2`` (SmolLM2, Llama 3,
Qwen and most others) is tokenized like this:

1. The prompt is cut at the texts of the special tokens.
2. Each stretch of text between them is split into words by the pre-tokenizer's regular expressions.
3. Each word is merged on its own.

No merge crosses a word's edge. The expressions of the GPT-2 family end a run of letters at a space, and
start the next word with that space: in ``"ab cd"`` the words are ``"ab"`` and ``" cd"``. So a prompt cut
just before a single space that has an ASCII letter on each side gives, piece by piece, the words the whole
prompt gives, provided nothing else joins the two sides:

- No special token's text may contain that letter-space-letter window. Such a token could match across the
  cut.
- No special token that takes the whitespace after it (``RSTRIP``) may end with an ASCII letter. Such a token
  right before the cut would strip the next piece's leading space only when the prompt is whole.
- The vocabulary adds no EOS or SEP at the end. Only the first piece is tokenized with BOS.

:func:`why_not_split` tests all of that and then tries it once after loading, on a text that mixes prose, code,
numbers, contractions, non-Latin scripts and the vocabulary's own special tokens, cut at every allowed
point. Any difference leaves the model on whole-prompt tokenization. SPM vocabularies (Gemma, Llama 2) are
never split: their merges are not bounded by a pre-tokenizer. ``tests/engine/test_split_tokens.py`` compares
the pieces with llama.cpp's whole-prompt tokenization over generated texts.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import Executor, ThreadPoolExecutor, wait
from itertools import pairwise

import llama_cpp as L

__all__ = ["MAX_PIECES", "MIN_PIECE", "SplitTokens", "cut_points", "special_clash", "why_not_split"]

MAX_PIECES = 8
"""Pieces a prompt is split into at most (the caller's thread and 7 of a shared pool)."""
MIN_PIECE = 8192
"""Bytes a piece holds at least: about 1,500 tokens of English. Shorter pieces gained nothing here. Cold,
after the caches were flushed, on 2 idle cores, tokenizing in two pieces against whole took 0.97-1.04× as
long for 500 to 2,900 tokens (2.5-15 KB) and 1.2-1.6× less for 3,800 to 7,600 (20-40 KB): 18.1 ms became
11.2 for the longest."""

_CUT = re.compile(rb"(?<=[A-Za-z]) (?=[A-Za-z])")
"""Where a prompt may be cut: just before a single space between two ASCII letters."""
_JOIN = re.compile(rb"[A-Za-z] [A-Za-z]")

_SAMPLE = (
    "The lighthouse keeper's log, written in 1887, said it's been a quiet week. They'd seen 3 ships, "
    "12,500 gulls and one whale! Don't ask why; we'll never know.\n\n"
    "def tokenize(text: str) -> list[int]:\n    return [ord(c) for c in text if c.isalpha()]  # a comment\n\n"
    "Résumé naïve café; Ελληνικά κείμενα; русский текст; 日本語の文章と中文的句子; 한국어 문장 🙂🚀.\n"
    "URL https://example.org/a?b=c&d=e, e-mail someone@example.org, tabs\tand  double  spaces.\n"
    "Numbers 3.14159 and 2718281828459045 and -42 and 1e-9. CamelCaseWords and snake_case_words.\n"
    "<b>HTML</b> and **markdown** and `code` and $x^2$ and {json: [1, 2]}\n"
)


def cut_points(data: bytes, pieces: int) -> list[int]:
    """Up to ``pieces - 1`` offsets to cut ``data`` at, ascending. Each is the first allowed cut at or after
    an even share of the bytes, and each piece holds at least :data:`MIN_PIECE` bytes."""
    cuts: list[int] = []
    for i in range(1, pieces):
        at = max(len(data) * i // pieces, (cuts[-1] if cuts else 0) + MIN_PIECE)
        m = _CUT.search(data, at)
        if m is None or len(data) - m.start() < MIN_PIECE:
            break
        cuts.append(m.start())
    return cuts


class SplitTokens:
    """``tokenize(data, add_special)`` as llama.cpp gives it for the whole prompt. A long prompt is tokenized
    in pieces, the first on the calling thread and the others on a shared pool. Thread-safe."""

    _pool: Executor | None = None
    _pool_lock = threading.Lock()

    def __init__(self, raw: Callable[[bytes, bool], list[int]], threads: Callable[[], int]) -> None:
        self._raw = raw
        """llama.cpp's tokenization of bytes (special tokens parsed; BOS if the flag says so)."""
        self.threads = threads
        """How many threads a prompt may be split over now (1: it is tokenized whole)."""
        self.split = 0
        """Prompts tokenized in pieces."""

    @classmethod
    def _executor(cls) -> Executor:
        with cls._pool_lock:
            if cls._pool is None:
                # (its threads start as pieces come, and stay)
                cls._pool = ThreadPoolExecutor(MAX_PIECES - 1, thread_name_prefix="nbllm-tokenize")
            return cls._pool

    def tokenize(self, data: bytes, add_special: bool) -> list[int]:  # noqa: FBT001 - llama.cpp's own flag
        """The prompt's tokens."""
        threads = min(self.threads(), MAX_PIECES)
        cuts = cut_points(data, min(threads, len(data) // MIN_PIECE)) if threads > 1 else []
        if not cuts:
            return self._raw(data, add_special)
        pool = self._executor()
        rest = [pool.submit(self._raw, data[a:b], False) for a, b in pairwise([*cuts, len(data)])]  # noqa: FBT003
        try:
            tokens = self._raw(data[: cuts[0]], add_special)
        finally:
            wait(rest)  # no piece outlives the call: the model may be freed once it returns
        for piece in rest:
            tokens += piece.result()
        self.split += 1
        return tokens


def special_clash(specials: Mapping[bytes, int]) -> str | None:
    """A special token that could join the two sides of a cut, said in words (``None``: none could)."""
    for text, attr in specials.items():
        if _JOIN.search(text):
            return f"special token {text!r} holds a letter-space-letter"
        if attr & L.LLAMA_TOKEN_ATTR_RSTRIP and text[-1:].isalpha():
            return f"special token {text!r} ends with a letter and takes the whitespace after it"
    return None


def why_not_split(
    vocab: object, specials: Mapping[bytes, int], raw: Callable[[bytes, bool], list[int]], tokenizer_model: str
) -> str | None:
    """Why this vocabulary's prompts may not be split (``None``: they may). ``specials`` maps the texts of the
    tokens llama.cpp cuts a prompt at to their attributes (``history.special_tokens``)."""
    if int(L.llama_vocab_type(vocab)) != L.LLAMA_VOCAB_TYPE_BPE or tokenizer_model != "gpt2":
        return f"not a GPT-2-style BPE vocabulary (tokenizer {tokenizer_model or '?'})"
    if L.llama_vocab_get_add_eos(vocab) or L.llama_vocab_get_add_sep(vocab):
        return "the vocabulary adds EOS or SEP at the end"
    clash = special_clash(specials)
    if clash is not None:
        return clash
    sample = _SAMPLE.encode()
    chosen = sorted(specials, key=lambda t: (len(t), t))[:8]  # the vocabulary's own special tokens, a few
    sample += b"".join(b"word " + t + b" next word " for t in chosen) + sample
    for add_special in (True, False):
        whole = raw(sample, add_special)
        cuts = [m.start() for m in _CUT.finditer(sample)]
        bounds = [0, *cuts, len(sample)]
        pieces = [
            t for i in range(len(bounds) - 1) for t in raw(sample[bounds[i] : bounds[i + 1]], add_special and i == 0)
        ]
        if pieces != whole:
            return "tokenizing the sample in pieces differs from tokenizing it whole"
    return None
