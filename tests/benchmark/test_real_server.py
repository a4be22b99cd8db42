"""The serving benchmark against a real ``nbllm serve`` with SmolLM2, through its Ollama API and its /v1.

A small sweep (concurrency 1 and 2, two prompts, 8 tokens) must produce the DataFrames, the
vLLM-layout JSON and the plots; and the client's figures, measured from token arrival times, must
agree with the timings the server reports itself in the final chunk of the Ollama API.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from nbllm.benchmark import BenchSpec, DatasetSpec, run_benchmark
from nbllm.runtime import Runtime
from nbllm.store import ModelStore
from tests.cli.support import ServeProcess, free_port, nbllm
from tests.support.models import install_model

MODEL = "smollm2:135m"
log = logging.getLogger(__name__)


@pytest.fixture(scope="module")
def root(real_runtime: Runtime, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A home whose store (``models``) holds SmolLM2."""
    root = tmp_path_factory.mktemp("bench-serve")
    source = real_runtime.store.get(MODEL)
    assert source.model_path is not None
    install_model(ModelStore(root / "models"), MODEL, source.model_path, template=source.template, params=source.params)
    return root


@pytest.fixture(scope="module")
def serve(root: Path) -> Iterator[ServeProcess]:
    """``nbllm serve`` in a child process (its own CPU time, not the test's), SmolLM2 in its store."""
    env = {"OLLAMA_HOST": f"127.0.0.1:{free_port()}", "OLLAMA_MODELS": str(root / "models"), "NBLLM_HOME": str(root)}
    server = ServeProcess(env, root / "serve.log")
    try:
        yield server.wait_ready()
    finally:
        server.stop()
        server.kill()


def _spec(target: str, **kwargs: object) -> BenchSpec:
    base: dict[str, object] = {
        "targets": (target,),
        "models": (MODEL,),
        "dataset": DatasetSpec(num_prompts=2, input_len=32, output_len=8),
        "concurrency": (1, 2),
        "options": {"temperature": 0, "seed": 1},
        "warmup": 1,
    }
    base.update(kwargs)
    return BenchSpec(**base)  # type: ignore[arg-type]


@pytest.mark.model
@pytest.mark.parametrize("api", ["ollama", "openai"])
def test_sweep_produces_frames_json_and_plots(serve: ServeProcess, api: str, tmp_path: Path) -> None:
    target = serve.url if api == "ollama" else f"openai+{serve.url}/v1"
    result = run_benchmark(_spec(target, endpoint="chat" if api == "openai" else "generate"))
    runs, req = result.runs, result.requests
    assert list(runs["load"]) == ["c=1", "c=2"] and (runs["completed"] == 2).all() and (runs["failed"] == 0).all()
    assert len(req) == 4 and (req["output_tokens"].between(2, 8)).all()
    assert (req["output_tokens_source"] == "server").all() and (req["input_tokens_source"] == "server").all()
    assert (req["ttft_ms"] > 0).all() and (req["e2el_ms"] > req["ttft_ms"]).all()
    assert (runs["output_throughput"] > 0).all() and (runs["max_concurrent_requests"] == [1, 2]).all()
    # nbllm's Ollama API reports its own timings; its /v1 (as any OpenAI server) does not
    assert req["server_ttft_ms"].notna().all() == (api == "ollama")
    paths = result.save(tmp_path)
    saved = [json.loads(p.read_text()) for p in paths if p.suffix == ".json"]
    assert [r["max_concurrency"] for r in saved] == [1, 2] and all(r["completed"] == 2 for r in saved)
    assert {p.name for p in paths if p.suffix == ".png"} == {
        "throughput_vs_concurrency.png",
        "latency_vs_load.png",
        "latency_cdf.png",
        "pareto.png",
    }
    log.info("%s sweep:\n%s", api, result.summary_text())


@pytest.mark.model
def test_client_figures_agree_with_the_servers_own_timings(serve: ServeProcess) -> None:
    """At concurrency 1, TPOT from arrival times matches eval_duration / (eval_count - 1) within 5%. TTFT from
    arrival times is the server's (total_duration - eval_duration) plus the HTTP round trip: never less (5 ms
    allowed for the final chunk's own bookkeeping), and at most 5% or 25 ms more on this busy 2-core machine.

    Speculation is off here: with it, a step can emit several tokens in one chunk, and arrival times then
    say when bursts came, not when each token was made (a CI run saw 6.5 ms against the server's 10.8)."""
    spec = _spec(
        serve.url,
        concurrency=(1,),
        dataset=DatasetSpec(num_prompts=2, input_len=32, output_len=24),
        options={"temperature": 0, "seed": 1, "draft_num_predict": 0},
    )
    req = run_benchmark(spec).requests
    done = req[req["output_tokens"] >= 8]
    assert len(done) >= 1, req[["output_tokens", "done_reason"]]
    for _, row in done.iterrows():
        log.info(
            "TTFT client %.1f server %.1f ms; TPOT client %.2f server %.2f ms",
            row["ttft_ms"],
            row["server_ttft_ms"],
            row["tpot_ms"],
            row["server_tpot_ms"],
        )
        assert row["tpot_ms"] == pytest.approx(row["server_tpot_ms"], rel=0.05)
        assert -5 <= row["ttft_ms"] - row["server_ttft_ms"] <= max(25, 0.05 * row["server_ttft_ms"])


@pytest.mark.model
def test_nbllm_bench_host_local_runs_in_its_own_process(root: Path, tmp_path: Path) -> None:
    """``nbllm bench --host local``: the CLI's own engine, no server (OLLAMA_HOST points at nothing)."""
    env = {"OLLAMA_MODELS": str(root / "models"), "NBLLM_HOME": str(tmp_path), "OLLAMA_HOST": "127.0.0.1:9"}
    args = ["bench", MODEL, "--host", "local", "-n", "1", "--input-len", "16", "--output-len", "4", "--json"]
    result = nbllm(*args, "--warmup", "0", "--no-progress", "-o", "temperature=0", env=env)
    assert result.returncode == 0, result.stderr
    (run,) = json.loads(result.stdout)
    assert run["backend"] == "local" and run["completed"] == 1 and run["failed"] == 0
