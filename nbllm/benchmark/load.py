"""Arrival schedules: all at once, or Poisson / gamma-distributed gaps at a mean request rate."""

from __future__ import annotations

import math

import numpy as np

__all__ = ["arrival_offsets"]


def arrival_offsets(count: int, rate: float, burstiness: float, rng: np.random.Generator) -> list[float]:
    """Seconds after the run's start at which each of ``count`` requests is released.

    Gaps are gamma-distributed with shape ``burstiness`` and mean ``1 / rate`` (shape 1 is a Poisson
    process); an infinite rate releases everything at once.

    >>> arrival_offsets(3, math.inf, 1.0, np.random.default_rng(0))
    [0.0, 0.0, 0.0]
    >>> offsets = arrival_offsets(2000, 4.0, 1.0, np.random.default_rng(0))
    >>> round(offsets[-1] / 2000, 2)  # mean gap 1/rate
    0.25
    """
    if math.isinf(rate):
        return [0.0] * count
    gaps = rng.gamma(shape=burstiness, scale=1.0 / (rate * burstiness), size=count)
    gaps[0] = 0.0  # the first request starts the run
    return [float(x) for x in np.cumsum(gaps)]
