"""Parsing the benchmark's text flags (shared by ``nbllm bench`` and ``%bench``): lists and key=value options."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from nbllm.benchmark.spec import SLO, BenchSpec, DatasetSpec

__all__ = ["parse_concurrency", "parse_option_pairs", "parse_rates", "spec_from_flags"]


def _items(text: str | Iterable[str]) -> list[str]:
    parts = text.split(",") if isinstance(text, str) else [p for t in text for p in t.split(",")]
    return [p.strip() for p in parts if p.strip()]


def parse_concurrency(text: str | Iterable[str]) -> tuple[int, ...]:
    """``"1,2,4,8"`` (or repeated values) as concurrency levels.

    >>> parse_concurrency("1,2, 4")
    (1, 2, 4)
    """
    try:
        levels = tuple(int(p) for p in _items(text))
    except ValueError:
        raise ValueError(f"concurrency must be whole numbers like 1,2,4,8, not {text!r}") from None
    if any(c < 1 for c in levels):
        raise ValueError("concurrency levels must be at least 1")
    return levels


def parse_rates(text: str | Iterable[str]) -> tuple[float, ...]:
    """``"0.5,1,inf"`` as request rates (requests/s; ``inf`` sends all at once).

    >>> parse_rates("0.5,2,inf")
    (0.5, 2.0, inf)
    """
    try:
        rates = tuple(float(p) for p in _items(text))
    except ValueError:
        raise ValueError(f"request rates must be numbers like 0.5,1,inf, not {text!r}") from None
    if any(not (r > 0) or math.isnan(r) for r in rates):
        raise ValueError("request rates must be positive")
    return rates


def parse_option_pairs(pairs: Iterable[str]) -> dict[str, Any]:
    """``["temperature=0", "stop=[\\"x\\"]", "mirostat=off"]``: values read as JSON where they parse, else text.

    >>> parse_option_pairs(["temperature=0", "top_k=40", "name=abc"])
    {'temperature': 0, 'top_k': 40, 'name': 'abc'}
    """
    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"options are key=value, not {pair!r}")
        try:
            options[key.strip()] = json.loads(value)
        except ValueError:
            options[key.strip()] = value
    return options


def spec_from_flags(
    models: Iterable[str],
    hosts: Iterable[str],
    *,
    endpoint: str = "generate",
    dataset: str = "random",
    dataset_path: str | Path | None = None,
    num_prompts: int = 16,
    input_len: int = 128,
    output_len: int = 64,
    prefix_len: int = 256,
    num_prefixes: int = 1,
    concurrency: str | Iterable[str] = (),
    request_rate: str | Iterable[str] = (),
    burstiness: float = 1.0,
    max_concurrency: int | None = None,
    warmup: int = 1,
    repeat: int = 1,
    seed: int = 0,
    slo_ttft: float | None = None,
    slo_tpot: float | None = None,
    slo_e2el: float | None = None,
    option: Iterable[str] | Mapping[str, Any] = (),
    api_key_env: str | None = "OPENAI_API_KEY",
    key_envs: Mapping[str, str | None] | None = None,
    names: Mapping[str, str] | None = None,
    timeout: float = 600.0,
    label: str | None = None,
) -> BenchSpec:
    """A checked :class:`BenchSpec` from ``nbllm bench``'s flags (the same names in ``%bench``); ValueError if wrong."""
    if endpoint not in ("generate", "chat") or dataset not in ("random", "prefix", "jsonl"):
        raise ValueError(f"unknown endpoint {endpoint!r} or dataset {dataset!r}")
    data = DatasetSpec(
        kind=dataset,  # type: ignore[arg-type]
        num_prompts=num_prompts,
        input_len=input_len,
        output_len=output_len,
        prefix_len=prefix_len,
        num_prefixes=num_prefixes,
        path=Path(dataset_path) if dataset_path else None,
    )
    spec = BenchSpec(
        targets=tuple(hosts),
        models=tuple(models),
        dataset=data,
        concurrency=parse_concurrency(concurrency),
        rates=parse_rates(request_rate),
        burstiness=burstiness,
        max_concurrency=max_concurrency,
        endpoint=endpoint,  # type: ignore[arg-type]
        warmup=warmup,
        repeat=repeat,
        seed=seed,
        slo=SLO(slo_ttft, slo_tpot, slo_e2el),
        options=dict(option) if isinstance(option, Mapping) else parse_option_pairs(option),
        timeout=timeout,
        api_key_env=api_key_env,
        key_envs=dict(key_envs or {}),
        given_names=dict(names or {}),
        label=label,
    )
    spec.validate()
    return spec
