"""The benchmark's arithmetic from known arrival times: a loopback server streams on a fixed schedule."""

from __future__ import annotations

import _thread
import json
import math
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from nbllm.backends import BackendError
from nbllm.benchmark import SLO, BenchSpec, DatasetSpec, run_benchmark
from tests.support.schedule_server import ScheduleServer

TOL_MS = 60.0  # loopback plus a busy 2-core machine's scheduling (a CI run saw one 41 ms stall mid-stream)

# first token at 200 ms, then one every 50 ms, 5 in all: TTFT 200, ITL 50, TPOT 50, E2EL 400 (ms)
MODEL = "t200-g50-n5"


@pytest.fixture(scope="module")
def sched() -> Iterator[ScheduleServer]:
    server = ScheduleServer().start()
    yield server
    server.stop()


def _spec(target: str, **kwargs: object) -> BenchSpec:
    base: dict[str, object] = {
        "targets": (target,),
        "models": (MODEL,),
        "dataset": DatasetSpec(num_prompts=4, input_len=21, output_len=5),
        "warmup": 0,
    }
    base.update(kwargs)
    return BenchSpec(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize("kind", ["ollama", "openai"])
def test_metrics_from_a_fixed_schedule(sched: ScheduleServer, kind: str) -> None:
    target = sched.url if kind == "ollama" else f"openai+{sched.url}/v1"
    result = run_benchmark(_spec(target, concurrency=(1, 2), endpoint="chat" if kind == "openai" else "generate"))
    req, runs = result.requests, result.runs
    assert len(req) == 8 and (req["status"] == "ok").all() and list(runs["max_concurrency"]) == [1, 2]
    assert req["ttft_ms"].to_numpy() == pytest.approx([200.0] * 8, abs=TOL_MS)
    assert req["tpot_ms"].to_numpy() == pytest.approx([50.0] * 8, abs=TOL_MS / 4)
    assert req["itl_mean_ms"].to_numpy() == pytest.approx([50.0] * 8, abs=TOL_MS / 4)
    assert req["e2el_ms"].to_numpy() == pytest.approx([400.0] * 8, abs=TOL_MS)
    assert (req["output_tokens"] == 5).all() and (req["output_tokens_source"] == "server").all()
    # the dataset was sized with the server's tokenizer (2 tokens a word + 1): 21 tokens = 10 words
    assert (req["input_tokens"] == 21).all() and (req["input_tokens_source"] == "server").all()
    for _, run in runs.iterrows():
        assert run["completed"] == 4 and run["failed"] == 0
        # concurrency 1: four requests back to back; concurrency 2: two pairs
        assert run["duration_s"] == pytest.approx(1.6 / run["max_concurrency"], abs=4 * TOL_MS / 1000)
        assert run["request_throughput"] == 4 / run["duration_s"]
        assert run["output_throughput"] == 20 / run["duration_s"]
        assert run["total_token_throughput"] == (4 * 21 + 20) / run["duration_s"]
        assert run["median_ttft_ms"] == pytest.approx(200, abs=TOL_MS)
        assert run["mean_itl_ms"] == pytest.approx(50, abs=TOL_MS / 4)
        assert run["p99_e2el_ms"] == pytest.approx(400, abs=TOL_MS)
        assert run["max_concurrent_requests"] == run["max_concurrency"]
        assert run["output_tok_s_per_user"] == pytest.approx(20, rel=0.15)  # 1 / 50 ms
        assert math.isnan(run["request_goodput"])  # no SLO given
    server_side = req["server_ttft_ms"].notna().all()
    assert server_side == (kind == "ollama")  # the OpenAI format reports no timings: nothing invented
    assert runs["server_timings"].iloc[0] == ("ollama final chunk" if kind == "ollama" else "none reported")


def test_goodput_nobody_and_everybody(sched: ScheduleServer) -> None:
    nobody = run_benchmark(_spec(sched.url, concurrency=(4,), slo=SLO(ttft_ms=1.0))).runs.iloc[0]
    assert nobody["completed"] == 4 and nobody["request_goodput"] == 0
    slo = SLO(ttft_ms=60_000, tpot_ms=60_000)
    everybody = run_benchmark(_spec(sched.url, concurrency=(4,), slo=slo)).runs.iloc[0]
    assert everybody["request_goodput"] == everybody["request_throughput"]
    # TPOT alone decides: 50 ms per token passes a 200 ms objective and fails a 10 ms one
    passes = run_benchmark(_spec(sched.url, concurrency=(4,), slo=SLO(tpot_ms=200))).runs.iloc[0]
    assert passes["request_goodput"] == passes["request_throughput"]
    assert run_benchmark(_spec(sched.url, concurrency=(4,), slo=SLO(tpot_ms=10))).runs.iloc[0]["request_goodput"] == 0


def test_errors_are_counted_not_dropped(sched: ScheduleServer) -> None:
    spec = _spec(sched.url, models=("flaky-t20-g10-n3",), dataset=DatasetSpec(num_prompts=6, input_len=9))
    result = run_benchmark(spec)
    run, req = result.runs.iloc[0], result.requests
    assert (run["completed"], run["failed"]) == (3, 3) and len(req) == 6
    failed = req[req["status"] == "error"]
    assert failed["error"].str.contains("HTTP 500: scheduled failure").all()
    assert failed["ttft_ms"].isna().all() and (failed["output_tokens"] == 0).all()
    assert run["request_throughput"] == 3 / run["duration_s"]  # only completed requests count
    broken = run_benchmark(_spec(sched.url, models=("cut-t20-g10-n5",))).runs.iloc[0]
    assert (broken["completed"], broken["failed"]) == (0, 4)


def test_rate_sweep_paces_arrivals(sched: ScheduleServer) -> None:
    spec = _spec(sched.url, models=("t10-g10-n2",), rates=(4.0,), seed=3, dataset=DatasetSpec(num_prompts=8))
    req = run_benchmark(spec).requests
    starts = req["start_s"].to_numpy()
    assert (starts[1:] >= starts[:-1]).all() and starts[-1] > 0.3  # spread out, not all at once
    again = run_benchmark(spec).requests["start_s"].to_numpy()
    assert again == pytest.approx(starts, abs=0.15)  # the seed fixes the schedule (up to scheduling jitter)


def test_interrupt_keeps_what_was_measured(sched: ScheduleServer) -> None:
    spec = _spec(sched.url, models=("t20-g20-n5",), dataset=DatasetSpec(num_prompts=40, input_len=9))
    timer = threading.Timer(0.8, _thread.interrupt_main)  # Ctrl-C in the calling thread
    timer.start()
    result = run_benchmark(spec)
    timer.join()
    run = result.runs.iloc[0]
    assert result.interrupted and run["interrupted"]
    assert 2 <= run["completed"] < 40 and run["failed"] == 0
    assert (result.requests["status"] == "ok").sum() == run["completed"]
    assert set(result.requests["status"]) <= {"ok", "cancelled", "unsent"}
    assert run["completed"] + run["cancelled"] + run["unsent"] == 40  # every prompt accounted for
    stop = threading.Event()
    threading.Timer(0.5, stop.set).start()  # the notebook's Stop button
    stopped = run_benchmark(spec, stop=stop)
    assert stopped.interrupted and 1 <= stopped.runs.iloc[0]["completed"] < 40


def test_vllm_json_layout_csv_and_plots(sched: ScheduleServer, tmp_path: Path) -> None:
    result = run_benchmark(_spec(sched.url, concurrency=(1, 2), slo=SLO(ttft_ms=60_000), label="sched"))
    paths = result.save(tmp_path)
    names = {p.name for p in paths}
    assert {"requests.csv", "runs.csv", "throughput_vs_concurrency.png", "latency_vs_load.png"} <= names
    assert {"latency_cdf.png", "pareto.png"} <= names
    files = sorted(tmp_path.glob("ollama-inf*.json"))
    assert len(files) == 2
    data = json.loads(files[0].read_text())
    keys = (
        "date backend endpoint_type label model_id tokenizer_id num_prompts request_rate burstiness "
        "max_concurrency duration completed failed total_input_tokens total_output_tokens request_throughput "
        "request_goodput output_throughput total_token_throughput input_lens output_lens ttfts itls latencies "
        "start_times generated_texts errors max_output_tokens_per_s max_concurrent_requests"
    )
    for key in keys.split(" "):
        assert key in data, key
    for metric in ("ttft", "tpot", "itl", "e2el"):
        for stat in ("mean", "median", "std", "p90", "p99"):
            assert isinstance(data[f"{stat}_{metric}_ms"], float)
    assert data["request_rate"] == "inf" and data["label"] == "sched" and data["num_prompts"] == 4
    assert data["burstiness"] == 1.0 and data["max_concurrency"] in (1, 2)
    assert len(data["ttfts"]) == 4 and len(data["itls"][0]) == 4 and data["errors"] == [""] * 4
    assert data["ttfts"][0] == pytest.approx(0.2, abs=TOL_MS / 1000)  # seconds per request, ms aggregated
    assert data["request_goodput"] == data["request_throughput"]
    assert data["generated_texts"][0] == "tok0 tok1 tok2 tok3 tok4 "


def test_prefix_and_jsonl_datasets(sched: ScheduleServer, tmp_path: Path) -> None:
    prefix = DatasetSpec(kind="prefix", num_prompts=4, prefix_len=41, input_len=10, num_prefixes=2, output_len=3)
    result = run_benchmark(_spec(sched.url, models=("t5-g5-n3",), dataset=prefix, endpoint="chat"))
    sent = [r["body"]["messages"] for r in sched.requests[-4:]]
    systems = [m[0]["content"] for m in sent]
    assert systems[0] == systems[2] != systems[1] == systems[3]  # two shared prefixes, round-robin
    assert {len(s.split()) for s in systems} == {20}  # 41 tokens at 2 a word + 1
    assert (result.requests["input_tokens"] == 2 * (20 + 5) + 1).all()  # prefix + suffix, as the server counts
    lines = [{"prompt": "alpha beta", "output_len": 2}, {"prompt": "gamma", "system": "be terse"}]
    path = tmp_path / "prompts.jsonl"
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    jsonl = DatasetSpec(kind="jsonl", path=path, num_prompts=5, output_len=7)
    result = run_benchmark(_spec(sched.url, models=("t5-g5-n3",), dataset=jsonl))
    bodies = [r["body"] for r in sched.requests[-2:]]
    assert [(b["prompt"], b.get("system"), b["options"]["num_predict"]) for b in bodies] == [
        ("alpha beta", None, 2),
        ("gamma", "be terse", 7),
    ]
    assert len(result.requests) == 2 and (result.requests["input_tokens"] == [5, 3]).all()


def test_unreachable_backend() -> None:
    dead = "http://127.0.0.1:18499"  # nothing listens there (this branch's port range)
    with pytest.raises(BackendError, match=r"warm-up failed on http://127\.0\.0\.1:18499 .*ConnectError"):
        run_benchmark(_spec(dead, warmup=1))
    result = run_benchmark(_spec(dead, warmup=0))  # every request fails, and is counted
    run = result.runs.iloc[0]
    assert (run["completed"], run["failed"]) == (0, 4)
    assert result.requests["error"].str.startswith("ConnectError").all()
    assert "assumed 1.5 tokens/word" in run["dataset"]  # no server to count tokens: said so
