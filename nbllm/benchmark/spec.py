"""What a serving benchmark runs: targets, models, a dataset, load points, SLOs (frozen values)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

__all__ = ["SLO", "BenchSpec", "DatasetSpec", "LoadPoint"]


@dataclass(frozen=True)
class LoadPoint:
    """One load level: requests sent at ``rate`` per second (inf: all at once), at most ``concurrency`` in flight."""

    rate: float = math.inf
    concurrency: int | None = None
    """Most requests in flight at once (None: no limit)."""

    @property
    def label(self) -> str:
        """``c=4``, ``rate=2/s`` or ``rate=2/s c=8``."""
        if math.isinf(self.rate):
            return f"c={self.concurrency}" if self.concurrency else "c=all"
        tail = f" c={self.concurrency}" if self.concurrency else ""
        return f"rate={self.rate:g}/s{tail}"


@dataclass(frozen=True)
class SLO:
    """Service-level objectives for goodput, in milliseconds (None: not part of the objective)."""

    ttft_ms: float | None = None
    tpot_ms: float | None = None
    e2el_ms: float | None = None

    def __bool__(self) -> bool:
        return any(v is not None for v in (self.ttft_ms, self.tpot_ms, self.e2el_ms))

    def as_dict(self) -> dict[str, float]:
        """``{"ttft": 500.0, "tpot": 50.0}``: vLLM's ``--goodput`` pairs."""
        pairs = {"ttft": self.ttft_ms, "tpot": self.tpot_ms, "e2el": self.e2el_ms}
        return {k: v for k, v in pairs.items() if v is not None}


@dataclass(frozen=True)
class DatasetSpec:
    """Where prompts come from: ``random``, ``prefix`` (a shared system prompt) or a ``jsonl`` file."""

    kind: Literal["random", "prefix", "jsonl"] = "random"
    num_prompts: int = 16
    input_len: int = 128
    """Prompt tokens (random), or the random suffix after the shared prefix (prefix)."""
    output_len: int = 64
    """Tokens to generate (num_predict / max_tokens); a JSONL line may set its own."""
    prefix_len: int = 256
    """Tokens of the shared system prompt (prefix)."""
    num_prefixes: int = 1
    """Distinct shared prefixes, assigned round-robin (prefix)."""
    path: Path | None = None
    """The JSONL file (jsonl): one object a line with ``prompt`` and optional ``system``, ``output_len``."""


@dataclass(frozen=True)
class BenchSpec:
    """A whole benchmark: every target x model x load point x repetition is one run."""

    targets: tuple[str, ...]
    """Backend URLs: ``http://host:11434`` (Ollama API) or ``openai+http://host:8000/v1``."""
    models: tuple[str, ...]
    dataset: DatasetSpec = field(default_factory=DatasetSpec)
    concurrency: tuple[int, ...] = ()
    """Fixed-concurrency sweep: each level sends every prompt at once with that many in flight."""
    rates: tuple[float, ...] = ()
    """Request-rate sweep (requests/s; inf: all at once), Poisson arrivals unless ``burstiness`` != 1."""
    burstiness: float = 1.0
    """Gamma shape of the inter-arrival times: 1 is Poisson, below 1 burstier, above 1 more even."""
    max_concurrency: int | None = None
    """Cap on requests in flight during the rate sweep."""
    endpoint: Literal["generate", "chat"] = "generate"
    warmup: int = 1
    """Unmeasured requests sent to each target and model before its runs."""
    repeat: int = 1
    seed: int = 0
    slo: SLO = field(default_factory=SLO)
    options: Mapping[str, Any] = field(default_factory=dict)
    timeout: float = 600.0
    """Seconds one request may take before it counts as failed."""
    api_key_env: str | None = "OPENAI_API_KEY"
    """The variable holding an OpenAI-compatible target's key (the key itself is never kept)."""
    key_envs: Mapping[str, str | None] = field(default_factory=dict)
    """Per-target overrides of ``api_key_env`` (a named host profile's variable)."""
    given_names: Mapping[str, str] = field(default_factory=dict)
    """Names of targets that came from a host profile (the profile's name), for legends and frames."""
    label: str | None = None

    def target_names(self) -> dict[str, str]:
        """Each target's short name: its profile's, ``local``, or ``host:port`` (see :mod:`nbllm.benchmark.names`)."""
        from nbllm.benchmark.names import target_names

        return target_names(self.targets, self.given_names)

    def key_env(self, target: str) -> str | None:
        """The variable holding ``target``'s key."""
        return self.key_envs.get(target, self.api_key_env)

    def load_points(self) -> list[LoadPoint]:
        """The concurrency sweep, then the rate sweep; concurrency 1 if neither is given."""
        points = [LoadPoint(concurrency=c) for c in self.concurrency]
        points += [LoadPoint(rate=r, concurrency=self.max_concurrency) for r in self.rates]
        return points or [LoadPoint(concurrency=1)]

    def validate(self) -> None:
        """Raise ValueError on an impossible spec."""
        if not self.targets or not self.models:
            raise ValueError("give at least one target and one model")
        if any(c < 1 for c in self.concurrency) or (self.max_concurrency is not None and self.max_concurrency < 1):
            raise ValueError("concurrency must be at least 1")
        if any(not r > 0 for r in self.rates):
            raise ValueError("request rates must be positive (inf for all at once)")
        if not self.burstiness > 0:
            raise ValueError("burstiness must be positive")
        if self.dataset.num_prompts < 1 or self.repeat < 1 or self.warmup < 0:
            raise ValueError("num_prompts and repeat must be at least 1, warmup at least 0")
        data = self.dataset
        if min(data.input_len, data.output_len, data.prefix_len, data.num_prefixes) < 1:
            raise ValueError("input, output and prefix lengths and the number of prefixes must be at least 1")
        if not self.timeout > 0:
            raise ValueError("the timeout must be positive")
        if self.dataset.kind == "jsonl" and self.dataset.path is None:
            raise ValueError("the jsonl dataset needs a path")
