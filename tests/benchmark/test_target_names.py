"""Targets keep apart and read short: every plot draws one line per server x model, named by profile or host:port."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from nbllm.benchmark import BenchSpec, DatasetSpec, run_benchmark
from nbllm.benchmark.names import target_names
from nbllm.benchmark.plots import all_plots
from tests.support.schedule_server import ScheduleServer


@pytest.fixture(scope="module")
def sched() -> Iterator[ScheduleServer]:
    server = ScheduleServer().start()
    yield server
    server.stop()


def _legends(figure: object) -> set[str]:
    return {t.get_text() for ax in figure.axes for t in (ax.get_legend().get_texts() if ax.get_legend() else [])}  # type: ignore[attr-defined]


def test_two_servers_keep_their_own_lines_named_short(sched: ScheduleServer, tmp_path: Path) -> None:
    """The same server through both APIs is two targets: the frames, legends and JSON keep them apart."""
    ollama, openai = sched.url, f"openai+{sched.url}/v1"
    hostport = sched.url.removeprefix("http://")
    spec = BenchSpec(
        targets=(ollama, openai),
        models=("t10-g10-n3",),
        dataset=DatasetSpec(num_prompts=2, input_len=8, output_len=3),
        concurrency=(1,),
        warmup=0,
    )
    result = run_benchmark(spec)
    names = [f"ollama {hostport}", f"openai {hostport}"]
    assert list(result.runs["target"]) == names and list(result.runs["url"]) == [ollama, openai]
    assert sorted(set(result.requests["target"])) == names and set(result.requests["url"]) == {ollama, openai}
    plots = all_plots(result.runs, result.requests)
    assert _legends(plots["latency_cdf"]) == {f"t10-g10-n3 @ {n} c=1" for n in names}
    assert _legends(plots["throughput_vs_concurrency"]) == {f"t10-g10-n3 @ {n}" for n in names}
    assert all("://" not in label for fig in plots.values() for label in _legends(fig))
    result.save(tmp_path, with_plots=False)
    saved = [json.loads(p.read_text())["nbllm"] for p in sorted(tmp_path.glob("*.json"))]
    assert {(s["target"], s["url"]) for s in saved} == set(zip(names, (ollama, openai), strict=True))


def test_profile_names_and_local_win_else_host_port() -> None:
    urls = ["local", "openai+http://gpu1:8000/v1", "http://gpu2:11434", "gpu3"]
    assert target_names(urls, {"openai+http://gpu1:8000/v1": "lab"}) == {
        "local": "local",
        "openai+http://gpu1:8000/v1": "lab",
        "http://gpu2:11434": "gpu2:11434",
        "gpu3": "gpu3:11434",
    }
    same = ["openai+http://h:1/v1", "openai+http://h:1/other"]  # even the kind cannot tell them apart
    assert target_names(same) == {u: u for u in same}
