"""Log probabilities of generated tokens, computed from llama.cpp's logits without copying them."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from nbllm.engine.base import TokenLogprob

__all__ = ["token_logprob"]


def token_logprob(logits: np.ndarray[Any, Any], token: int, top: int, piece: Callable[[int], bytes]) -> TokenLogprob:
    """Log-softmax of the raw logits at one position: the chosen token's value and the ``top`` best."""
    peak = float(logits.max())
    lse = peak + math.log(float(np.exp(logits - peak).sum()))
    best: tuple[tuple[str, float, tuple[int, ...]], ...] = ()
    if top > 0:
        idx = np.argpartition(logits, -top)[-top:]
        idx = idx[np.argsort(logits[idx])[::-1]]
        best = tuple(_entry(int(i), float(logits[i]) - lse, piece) for i in idx)
    raw = piece(token)
    return TokenLogprob(
        token=raw.decode("utf-8", errors="replace"),
        logprob=float(logits[token]) - lse,
        bytes=tuple(raw),
        top=best,
    )


def _entry(token: int, logprob: float, piece: Callable[[int], bytes]) -> tuple[str, float, tuple[int, ...]]:
    raw = piece(token)
    return raw.decode("utf-8", errors="replace"), logprob, tuple(raw)
