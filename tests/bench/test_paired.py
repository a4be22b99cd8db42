"""The side-by-side workload: alternating rounds and each server's serving CPU, on two real servers."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any, cast

import pytest

from bench import report, servers, workloads
from nbllm.runtime import Runtime


def test_serving_cpu_leaves_out_the_two_busiest_threads() -> None:
    before = (10.0, {"1": 5.0, "2": 3.0, "3": 1.0, "4": 0.5})
    after = (14.5, {"1": 7.0, "2": 4.5, "3": 1.25, "4": 0.5, "9": 0.25})  # 9 started meanwhile
    # 4.5 s in all, 2.0 + 1.5 of it in the two busiest threads
    assert workloads._serving_cpu(before, after) == 1.0


def test_median_ci_is_the_binomial_order_statistics_interval() -> None:
    assert workloads.median_ci([1.0, 2.0, 3.0, 4.0, 5.0]) is None  # 1/32 > 2.5%: five rounds bound nothing
    assert workloads.median_ci([float(i) for i in range(6, 0, -1)]) == (1.0, 6.0)  # 1/64 <= 2.5% < 7/64
    # 41 rounds: P(at most 13 of 41 below the median) = 1.4% <= 2.5% < 3.0% for 14, so the 14th and the 28th
    assert workloads.median_ci([float(i) for i in range(1, 42)]) == (14.0, 28.0)
    one_bad_round = [1.02] * 40 + [0.2]  # a round disturbed by something else counts as just one round below
    assert workloads.median_ci(one_bad_round) == (1.02, 1.02)


def test_a_lead_needs_its_interval_above_one() -> None:
    assert report._side_by_side("t", [1.05] * 21)[2] is True
    assert report._side_by_side("t", [0.97, 1.04] * 10 + [1.01])[2] == "level (the CI spans 1.0)"
    assert report._side_by_side("t", [0.9] * 21)[2] is False
    assert report._side_by_side("t", [1.2] * 5)[2] == "not judged"  # five rounds bound nothing


def test_ceiling_rounds_alternate_and_pair_each_ratio_within_its_round(monkeypatch: pytest.MonkeyPatch) -> None:
    """The bookkeeping of the rounds against llama-batched-bench (the measurements are stand-ins here; the real
    ones run in ``python -m bench``, with a llama.cpp build that CI does not have)."""
    calls: list[str] = []
    speed = iter([1.0] * 4 + [2.0] * 8)  # the machine doubles its speed after round 0: ratios must not care

    def engine(model: Path, *, sizes: list[int], n: int, runs: int, ctx: int, threads: int) -> dict[str, Any]:
        calls.extend(f"engine{b}" for b in sizes)
        return {"decode": {str(b): [10.0 * b * pace] for b in sizes}}

    def http(server: object, texts: list[str], n: int, *, ctx: int) -> tuple[float, list[float]]:
        calls.append(f"http{len(texts)}")
        return 1.0, [pace] * len(texts)

    def ceiling(peer: object, model: Path, *, sizes: list[int], n: int, threads: int) -> dict[int, float]:
        calls.extend(f"bb{b}" for b in sizes)
        return {b: 20.0 * b * pace for b in sizes}

    pace = 1.0

    def stamp(*args: object, **kwargs: object) -> None:
        nonlocal pace
        pace = next(speed)

    monkeypatch.setattr(workloads, "stream", lambda *a, **k: None)
    monkeypatch.setattr(workloads, "engine_batched", lambda *a, **k: (stamp(), engine(*a, **k))[1])
    monkeypatch.setattr(workloads, "concurrent", http)
    monkeypatch.setattr(workloads, "decode_only", lambda timings: 4.0 * sum(timings))
    monkeypatch.setattr(workloads, "batched_bench", lambda *a, **k: (stamp(), ceiling(*a, **k))[1])
    out = workloads.ceiling_paired(
        cast(Any, None), cast(Any, None), Path("m"), sizes=[1, 8], n=16, rounds=3, ctx=64, threads=2
    )
    ours1, ours8 = ["engine1", "http1"], ["engine8", "http8"]
    # each B back to back with its own batched-bench run, the order alternating round by round
    assert calls == [*ours1, "bb1", *ours8, "bb8", "bb1", *ours1, "bb8", *ours8, *ours1, "bb1", *ours8, "bb8"]
    assert out["8"]["engine_ratios"] == [0.5] * 3 and out["1"]["http_ratios"] == [0.2] * 3
    assert out["1"]["ceiling"] == [20.0, 40.0, 40.0]  # round 0 at one speed, rounds 1 and 2 at the other


def test_cpu_reads_this_process_and_its_threads() -> None:
    stop = threading.Event()
    native: list[int] = []

    def spin() -> None:
        native.append(threading.get_native_id())
        while not stop.is_set():
            pass

    thread = threading.Thread(target=spin)
    first = servers.cpu(os.getpid())
    thread.start()
    time.sleep(0.5)
    stop.set()
    thread.join()
    deadline = time.monotonic() + 5  # join() returns a moment before the kernel drops the thread's task entry
    while str(native[0]) in os.listdir(f"/proc/{os.getpid()}/task") and time.monotonic() < deadline:
        time.sleep(0.01)
    total, threads = servers.cpu(os.getpid())
    assert str(os.getpid()) in threads and len(threads) == len(os.listdir(f"/proc/{os.getpid()}/task"))
    assert total - first[0] >= 0.2  # the spinning thread ended, and its CPU still counts in the total
    assert total >= sum(threads.values())


def test_paired_rounds_on_two_real_servers(real_runtime: Runtime, tmp_path: Path) -> None:
    store = real_runtime.store.root
    a = servers.nbllm(store, parallel=2, threads=2, log=tmp_path / "a.log")
    try:
        b = servers.nbllm(store, parallel=2, threads=2, log=tmp_path / "b.log")
    except BaseException:
        a.stop()
        raise
    try:
        a.model = b.model = "smollm2:135m"
        out = workloads.paired(a, b, clients=[1, 2], n=64, rounds=2, ctx=512)
    finally:
        a.stop()
        b.stop()
    assert set(out) == {"1", "2"}
    for d in out.values():
        assert len(d["ours"]) == len(d["theirs"]) == len(d["ratios"]) == 2
        assert all(rate > 0 for rate in d["ours"] + d["theirs"])
        # both stream over HTTP: each spends CPU outside its decode threads, and far less than a decode step
        # (256 tokens a side: ~75 ms of serving CPU, well above the 10 ms clock tick /proc counts in)
        assert all(0 < us < 20_000 for us in d["serving_us_per_token"].values()), d["serving_us_per_token"]


def test_peak_memory_is_recorded_only_for_a_server_that_loaded_its_model(monkeypatch: pytest.MonkeyPatch) -> None:
    """A server with no client count to run at (8 slots, one client asked for) never loads the model: a peak RSS
    of the bare process must not be reported as its memory."""
    import argparse

    from bench.__main__ import _measure

    class Stand:
        name = "nbllm (np=8)"

        def memory(self) -> tuple[int, int]:
            return 60_000_000, 61_000_000

    monkeypatch.setattr(workloads, "concurrency", lambda *a, **k: {"1": {}})
    a = argparse.Namespace(runs=1, ctx=64, tokens=16)
    m: dict[str, Any] = {"decode": {}, "ttft": {}, "concurrency": {}, "memory": {}}
    _measure(cast(Any, Stand()), m, a, [], single=False)
    assert m["memory"] == {} and m["concurrency"] == {}
    _measure(cast(Any, Stand()), m, a, [8], single=False)
    assert m["memory"] == {"nbllm (np=8)": 61_000_000} and m["concurrency"] == {"nbllm (np=8)": {"1": {}}}
