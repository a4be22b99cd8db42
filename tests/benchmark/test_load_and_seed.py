"""Load shapes and reproducibility: burstiness, repetitions, and the seed fixing prompts and arrivals."""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import pytest

from nbllm.benchmark import BenchSpec, DatasetSpec, run_benchmark
from nbllm.benchmark.load import arrival_offsets
from tests.support.schedule_server import ScheduleServer


@pytest.fixture(scope="module")
def sched() -> Iterator[ScheduleServer]:
    server = ScheduleServer().start()
    yield server
    server.stop()


def _cv(burstiness: float) -> float:
    """The coefficient of variation of the gaps: 1 for Poisson, 1/sqrt(shape) for gamma."""
    gaps = np.diff(arrival_offsets(20_000, 10.0, burstiness, np.random.default_rng(5)))
    assert gaps.mean() == pytest.approx(0.1, rel=0.03)  # the rate holds at every burstiness
    return float(gaps.std() / gaps.mean())


def test_burstiness_shapes_the_gaps_at_the_same_rate() -> None:
    assert _cv(1.0) == pytest.approx(1.0, rel=0.05)
    assert _cv(0.25) == pytest.approx(2.0, rel=0.08)  # burstier
    assert _cv(4.0) == pytest.approx(0.5, rel=0.05)  # more even
    first = arrival_offsets(50, 2.0, 0.5, np.random.default_rng(1))
    assert first == arrival_offsets(50, 2.0, 0.5, np.random.default_rng(1)) and first[0] == 0.0


def test_repetitions_and_the_seed(sched: ScheduleServer) -> None:
    spec = BenchSpec(
        targets=(sched.url,),
        models=("t5-g5-n2",),
        dataset=DatasetSpec(num_prompts=3, input_len=9, output_len=2),
        concurrency=(1, 2),
        repeat=2,
        warmup=0,
        seed=7,
    )
    sched.requests.clear()
    result = run_benchmark(spec)
    runs = result.runs
    assert list(runs["load"]) == ["c=1", "c=1", "c=2", "c=2"] and list(runs["repetition"]) == [0, 1, 0, 1]
    assert (runs["completed"] == 3).all() and len(result.requests) == 12
    prompts = [r["body"]["prompt"] for r in sched.requests if r["body"].get("stream")]
    assert len(prompts) == 12 and len(set(prompts)) == 12  # fresh prompts per run: no accidental cache hits
    sched.requests.clear()
    run_benchmark(spec)
    assert sorted(r["body"]["prompt"] for r in sched.requests if r["body"].get("stream")) == sorted(prompts)
    sched.requests.clear()
    run_benchmark(BenchSpec(**{**spec.__dict__, "seed": 8}))
    assert not {r["body"]["prompt"] for r in sched.requests if r["body"].get("stream")} & set(prompts)
    assert math.isfinite(float(runs["output_throughput"].iloc[0]))
