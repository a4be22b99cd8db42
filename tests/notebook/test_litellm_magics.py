"""``%%chat``, ``%timings`` and ``%bench`` through LiteLLM's proxy (from PyPI) in front of two ``nbllm serve``,
reached by a named profile whose key (the proxy's) is only ever named by its environment variable."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from IPython.core.interactiveshell import InteractiveShell

from nbllm.config import Settings
from nbllm.notebook import load_ipython_extension, unload_ipython_extension
from nbllm.notebook.openai_client import CLIENT_ARRIVAL
from nbllm.notebook.session import NotebookSession
from tests.cli.support import ServeProcess
from tests.notebook.shellrun import cell, line
from tests.support.metrics import scrape, value
from tests.support.peers import LiteLLMProxy, peer_models, router_config, start_litellm, two_nbllm

pytestmark = [pytest.mark.model, pytest.mark.slow, pytest.mark.peers]
__all__ = ["peer_models", "two_nbllm"]  # fixtures used here
KEY_ENV = "NBLLM_TEST_FLEET_KEY"


@pytest.fixture(scope="module")
def proxy(two_nbllm: list[ServeProcess], tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiteLLMProxy]:
    proxy = start_litellm(router_config("smollm2", [s.url + "/v1" for s in two_nbllm]), tmp_path_factory.mktemp("ll"))
    yield proxy
    proxy.stop()


def _served(server: ServeProcess) -> float:
    samples = scrape(server.url)
    return sum(
        value(samples, "nbllm_http_requests_total", method="POST", route=route, status="200")
        for route in ("/v1/chat/completions", "/v1/completions")
    )


def test_chat_timings_and_bench_through_the_proxy(
    shell: InteractiveShell,
    proxy: LiteLLMProxy,
    two_nbllm: list[ServeProcess],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(KEY_ENV, proxy.key)
    magics = load_ipython_extension(shell, session=NotebookSession(settings=Settings(home=tmp_path)))
    magics.hosts = {"fleet": {"url": f"openai+{proxy.url}/v1", "api_key_env": KEY_ENV}}
    before = [_served(s) for s in two_nbllm]
    try:
        chat = cell(shell, "chat", "smollm2 --host fleet --new -o temperature=0 -o num_predict=8 --var r", "Say hi")
        record = shell.user_ns["r"].timings[0]
        assert shell.user_ns["r"].text.strip() and record.measured == CLIENT_ARRIVAL and record.eval_tokens
        assert line(shell, "timings").result.iloc[-1]["measured"] == CLIENT_ARRIVAL
        args = "smollm2 --host fleet -c 2 -n 6 --input-len 16 --output-len 8 --warmup 0 --no-plots -o temperature=0"
        bench = line(shell, "bench", args)
        runs = bench.result.runs
        assert list(runs["completed"]) == [6] and list(runs["failed"]) == [0] and list(runs["backend"]) == ["openai"]
        after = [_served(s) for s in two_nbllm]
        assert sum(after) - sum(before) >= 1 + 6 + 2  # the chat, the benchmark and its calibration probes
        assert proxy.key not in repr((chat.outputs, chat.stdout, bench.outputs, bench.stdout, runs.to_csv()))
    finally:
        unload_ipython_extension(shell)
