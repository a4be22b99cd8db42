"""The notebook's serving benchmark (``run_serving_bench``, for ``%bench ... -c 1,2``): hosts, results, plots."""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell

from nbllm.backends.local import LOCAL_SOURCE
from nbllm.benchmark import BenchResult
from nbllm.errors import InvalidRequest
from nbllm.notebook import load_ipython_extension, unload_ipython_extension
from nbllm.notebook.bench import progress_bar, run_serving_bench, serving_hosts
from nbllm.notebook.magics import NbllmMagics
from nbllm.notebook.session import NotebookSession
from nbllm.runtime import Runtime
from tests.notebook.shellrun import line
from tests.support.schedule_server import ScheduleServer


@pytest.fixture(scope="module")
def sched() -> Iterator[ScheduleServer]:
    server = ScheduleServer().start()
    yield server
    server.stop()


def test_against_a_given_host_with_plots_and_files(
    shell: InteractiveShell, sched: ScheduleServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    session = NotebookSession()
    target = f"openai+{sched.url}/v1"
    result = run_serving_bench(
        session, ["t50-g10-n3"], host=target, concurrency="1,2", num_prompts=3, warmup=0, out=str(tmp_path)
    )
    assert list(result.runs["load"]) == ["c=1", "c=2"] and (result.runs["completed"] == 3).all()
    assert result.runs["median_ttft_ms"].between(40, 120).all()
    assert len(list(tmp_path.glob("*.png"))) == 4 and (tmp_path / "requests.csv").exists()
    bundle = result._repr_mimebundle_()
    assert "t50-g10-n3" in bundle["text/plain"] and "<table" in bundle["text/html"]
    assert "measured by this client" in bundle["text/plain"]
    assert capsys.readouterr().out.count("<nbllm bench:") == 4  # the plots were shown (text/plain here)
    with pytest.raises(InvalidRequest, match="concurrency must be whole numbers"):
        run_serving_bench(session, ["m"], host=target, concurrency="one")
    with pytest.raises(InvalidRequest, match="unexpected keyword argument 'bogus'"):
        run_serving_bench(session, ["m"], host=target, bogus=1)


def test_local_runs_on_this_kernels_engine_without_http(shell: InteractiveShell, fake_runtime: Runtime) -> None:
    session = NotebookSession(runtime=fake_runtime)
    try:
        assert serving_hosts(session, "local") == ("local",)
        result = run_serving_bench(session, ["tiny"], host="local", num_prompts=2, output_len=4, plots=False)
        assert session.server is None  # no server: the engine's own stream
        assert (result.runs["completed"] == 2).all() and list(result.runs["backend"]) == ["local"]
        assert (result.requests["server_timings"] == LOCAL_SOURCE).all()
        url = session.serve(port=0).url
        assert serving_hosts(session, None) == (url,)  # a running %serve is the default
    finally:
        session.stop_server()


def test_bench_magic_with_serving_flags_runs_the_serving_benchmark(
    shell: InteractiveShell, sched: ScheduleServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Any serving flag sends %bench to nbllm bench's benchmark: repeated --host, -n prompts, -o options, --out."""
    monkeypatch.setenv("NBLLM_TEST_BENCH_KEY", "sk-bench-secret")
    magics = load_ipython_extension(shell, session=NotebookSession())
    try:
        sched.requests.clear()
        hosts = f"--host openai+{sched.url}/v1 --host {sched.url}"
        args = "-c 1,2 -n 3 --warmup 0 --output-len 5 -o temperature=0 --api-key-env NBLLM_TEST_BENCH_KEY"
        run = line(shell, "bench", f"t20-g5-n3 {hosts} {args} --endpoint chat --out {tmp_path} --no-plots")
        result = run.result
        assert isinstance(result, BenchResult) and not result.interrupted
        assert sorted(set(result.runs["backend"])) == ["ollama-chat", "openai-chat"]
        assert list(result.runs["completed"]) == [3, 3, 3, 3]  # 2 hosts x c=1,2, 3 prompts each
        streamed = [r for r in sched.requests if r["body"].get("stream")]  # not the tokenizer's calibration
        paths = {r["path"] for r in streamed}
        assert paths == {"/v1/chat/completions", "/api/chat"}
        assert len(streamed) == 12 and all(
            r["body"].get("temperature", r["body"].get("options", {}).get("temperature")) == 0 for r in streamed
        )
        keys = {r["headers"].get("authorization") for r in sched.requests if r["path"].startswith("/v1")}
        assert keys == {"Bearer sk-bench-secret"} and "sk-bench-secret" not in repr(result._repr_mimebundle_())
        assert (tmp_path / "runs.csv").exists() and not list(tmp_path.glob("*.png"))
        assert "image/png" not in str([o.data for o in run.outputs])
        with pytest.raises(UsageError, match="concurrency must be whole numbers"):
            line(shell, "bench", f"m --host {sched.url} -c two")
        assert magics.session.server is None  # a given host: no in-kernel server was started
    finally:
        unload_ipython_extension(shell)


def test_bench_magic_on_the_real_model(shell: InteractiveShell, nb: NbllmMagics) -> None:
    """``%bench smollm2:135m -c 1 -n 2 --output-len 8`` in a kernel shell: this kernel's engine, real requests."""
    run = line(shell, "bench", "smollm2:135m -c 1 -n 2 --output-len 8 --input-len 16 --warmup 0 --no-plots")
    result = run.result
    assert isinstance(result, BenchResult)
    (row,) = result.runs.to_dict("records")
    assert row["completed"] == 2 and row["failed"] == 0 and row["model"] == "smollm2:135m"
    assert (result.requests["output_tokens"] <= 8).all() and (result.requests["ttft_ms"] > 0).all()
    assert nb.session.server is None and row["backend"] == "local"  # --host local: no server, no HTTP


def test_local_beside_another_host_benchmarks_both(
    shell: InteractiveShell, sched: ScheduleServer, fake_runtime: Runtime
) -> None:
    """``%bench tiny --host local --host URL``: this kernel's engine is a target beside the server, not dropped."""
    session = NotebookSession(runtime=fake_runtime)
    given = ["local", f"openai+{sched.url}/v1"]
    assert serving_hosts(session, given) == tuple(given)
    magics = load_ipython_extension(shell, session=session)
    try:
        run = line(
            shell, "bench", f"tiny --host local --host {given[1]} -c 1 -n 2 --warmup 0 --output-len 3 --no-plots"
        )
        result = run.result
        assert isinstance(result, BenchResult)
        assert sorted(set(result.runs["backend"])) == ["local", "openai"]
        assert list(result.runs["completed"]) == [2, 2] and magics.session.server is None
    finally:
        unload_ipython_extension(shell)


def test_progress_bar_in_a_notebook_stays_a_widget_whose_text_is_its_final_line(
    shell: InteractiveShell, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tqdm.auto
    from tqdm.notebook import tqdm as notebook_tqdm

    monkeypatch.setattr(tqdm.auto, "tqdm", notebook_tqdm)  # as tqdm.auto picks in a kernel
    published: list[tuple[dict[str, object], bool, str]] = []

    def publish(
        data: dict[str, object], metadata: object = None, *, transient: Any = None, update: bool = False, **kw: Any
    ) -> None:
        published.append((data, update, (transient or {}).get("display_id", "")))

    monkeypatch.setattr(shell.display_pub, "publish", publish)
    bar = progress_bar(3)
    bar.set_description("c=1")
    for _ in range(3):
        bar.update(1)
    bar.close()
    (first, shown, first_id), (last, updated, last_id) = published[0], published[-1]
    assert "application/vnd.jupyter.widget-view+json" in first and not shown and first_id
    assert updated and last_id == first_id  # the widget's output replaced in place
    assert re.match(r"c=1: 100%\|\S+\| 3/3 \[", str(last["text/plain"])), last  # not tqdm's first line, 0%
    assert last["application/vnd.jupyter.widget-view+json"] == first["application/vnd.jupyter.widget-view+json"]
    assert last["text/html"] == f"<pre>{html.escape(str(last['text/plain']), quote=False)}</pre>"  # a static copy
