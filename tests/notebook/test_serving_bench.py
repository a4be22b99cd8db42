"""The notebook's serving benchmark (``run_serving_bench``, for ``%bench ... -c 1,2``): hosts, results, plots."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from IPython.core.interactiveshell import InteractiveShell

from nbllm.errors import InvalidRequest
from nbllm.notebook.bench import run_serving_bench, serving_hosts
from nbllm.notebook.session import NotebookSession
from nbllm.runtime import Runtime
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


def test_local_starts_a_server_in_this_kernel(shell: InteractiveShell, fake_runtime: Runtime) -> None:
    session = NotebookSession(runtime=fake_runtime)
    try:
        (url,) = serving_hosts(session, "local")
        assert session.server is not None and url == session.server.url
        assert serving_hosts(session, None) == (url,)  # the running server is the default
        result = run_serving_bench(session, ["tiny"], host="local", num_prompts=2, output_len=4, plots=False)
        assert (result.runs["completed"] == 2).all() and (
            result.requests["server_timings"] == "ollama final chunk"
        ).all()
    finally:
        session.stop_server()
