"""Turning generated token bytes into released text: UTF-8 reassembly and stop strings."""

from __future__ import annotations

import codecs
from collections.abc import Sequence

__all__ = ["StreamText"]


class StreamText:
    """Accumulates token pieces and releases text that can no longer be part of a stop string.

    >>> s = StreamText(["</s>", "User:"])
    >>> s.feed(b"Hello"), s.feed(b" </"), s.feed(b"s> junk")
    ('Hello', ' ', '')
    >>> s.stopped
    True
    >>> s = StreamText([])
    >>> s.feed("é".encode()[:1]), s.feed("é".encode()[1:])
    ('', 'é')
    """

    def __init__(self, stops: Sequence[str]) -> None:
        self._stops = [s for s in stops if s]
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._split = False
        """The decoder holds the first bytes of a character whose rest is in the next piece."""
        self._held = ""
        self.stopped = False
        self.released: list[str] = []

    def feed(self, piece: bytes) -> str:
        """Add a token's bytes; return the text that is now safe to release."""
        if self.stopped:
            return ""
        if self._split:
            text = self._decoder.decode(piece)
            self._split = bool(self._decoder.getstate()[0])
        else:
            try:  # (most pieces are whole characters: no incremental decoder needed)
                text = piece.decode()
            except UnicodeDecodeError:
                text = self._decoder.decode(piece)
                self._split = bool(self._decoder.getstate()[0])
        if not self._stops:
            if text:
                self.released.append(text)
            return text
        self._held += text
        return self._release()

    def _release(self) -> str:
        held = self._held
        cut = -1
        for stop in self._stops:
            index = held.find(stop)
            if index != -1 and (cut == -1 or index < cut):
                cut = index
        if cut != -1:
            self.stopped = True
            self._held = ""
            out = held[:cut]
        else:
            keep = max((_overlap(held, stop) for stop in self._stops), default=0)
            out = held[: len(held) - keep] if keep else held
            self._held = held[len(held) - keep :] if keep else ""
        if out:
            self.released.append(out)
        return out

    def flush(self) -> str:
        """Release whatever is held at the end of generation (a stop-string prefix that never completed)."""
        if self.stopped:
            return ""
        # Bytes of a character cut off by the end of generation are dropped, not shown as U+FFFD.
        out = self._held
        self._held = ""
        self._decoder.reset()
        self._split = False
        if out:
            self.released.append(out)
        return out

    @property
    def text(self) -> str:
        """All text released so far."""
        return "".join(self.released)


def _overlap(text: str, stop: str) -> int:
    """Length of the longest suffix of ``text`` that is a proper prefix of ``stop``."""
    for size in range(min(len(text), len(stop) - 1), 0, -1):
        if text.endswith(stop[:size]):
            return size
    return 0
