"""``nbllm push`` / ``nbllm pull --insecure`` between servers, and ``nbllm pull hf.co/...`` through ``nbllm serve``."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from nbllm.client import Client
from nbllm.config import Settings
from nbllm.engine.fake import FakeEngineFactory
from nbllm.runtime import Runtime
from nbllm.schema import ChatRequest, Message
from nbllm.server import BackgroundServer
from tests.cli.support import free_port, nbllm
from tests.support.hub_server import HubServer
from tests.support.models import install_model
from tests.support.tiny_gguf import write_tiny_gguf


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[BackgroundServer, BackgroundServer]]:
    """Server A with ``tiny``; server B empty (fake engines: nothing here generates)."""
    runtimes = [
        Runtime.from_settings(
            Settings(home=tmp_path / f"{n}-home", models=tmp_path / n), engine_factory=FakeEngineFactory()
        )
        for n in "ab"
    ]
    install_model(runtimes[0].store, "tiny", write_tiny_gguf(tmp_path / "t.gguf"), template="{{ .Prompt }}")
    servers = [BackgroundServer(rt).start() for rt in runtimes]
    yield servers[0], servers[1]
    for server, rt in zip(servers, runtimes, strict=True):
        server.stop()
        rt.close()


def _host(server: BackgroundServer) -> str:
    return server.url.removeprefix("http://")


def test_help_lists_push_and_its_flag() -> None:
    assert re.search(r"^\s+push\s+Push a model to a registry", nbllm("--help").stdout, re.M)
    assert "--insecure" in nbllm("push", "--help").stdout


def test_push_and_pull_between_servers(pair: tuple[BackgroundServer, BackgroundServer]) -> None:
    a, b = pair
    target = f"{_host(b)}/me/tiny:v1"
    assert nbllm("cp", "tiny", target, env={"OLLAMA_HOST": a.url}).returncode == 0
    pushed = nbllm("push", target, "--insecure", env={"OLLAMA_HOST": a.url})
    assert pushed.returncode == 0, pushed.stderr
    lines = pushed.stderr.splitlines()
    assert lines[0] == "retrieving manifest" and lines[-2:] == ["pushing manifest", "success"]
    assert all(re.fullmatch(r"pushing [0-9a-f]{12}\.\.\. 100% ▕█+▏\s+\S+ \S?B", line) for line in lines[1:-2]), lines
    assert "me/tiny:v1" in nbllm("list", env={"OLLAMA_HOST": b.url}).stdout

    pulled = nbllm("pull", f"{_host(a)}/library/tiny", "--insecure", env={"OLLAMA_HOST": b.url})
    assert pulled.returncode == 0, pulled.stderr
    lines = pulled.stderr.splitlines()
    assert lines[0] == "pulling manifest" and lines[-3:] == ["verifying sha256 digest", "writing manifest", "success"]
    assert f"{_host(a)}/library/tiny:latest" in nbllm("list", env={"OLLAMA_HOST": b.url}).stdout


def test_plain_http_needs_insecure(pair: tuple[BackgroundServer, BackgroundServer]) -> None:
    a, b = pair
    target = f"{_host(b)}/me/tiny:v1"
    nbllm("cp", "tiny", target, env={"OLLAMA_HOST": a.url})
    pushed = nbllm("push", target, env={"OLLAMA_HOST": a.url})
    assert pushed.returncode == 1 and pushed.stderr.splitlines()[-1].startswith(f'Error: HEAD "https://{_host(b)}/v2/')
    pulled = nbllm("pull", f"{_host(a)}/library/tiny", env={"OLLAMA_HOST": b.url})
    assert pulled.returncode == 1
    assert pulled.stderr.splitlines()[-1].startswith(f'Error: pull model manifest: Get "https://{_host(a)}/v2/')
    assert b.runtime.store.models() == []


@pytest.fixture
def hub(real_runtime: Runtime, tmp_path: Path) -> Iterator[HubServer]:
    smol = real_runtime.store.get("smollm2:135m").model_path
    assert smol is not None
    server = HubServer()
    server.add_repo("nbllm-tests/SmolLM2-135M-Instruct-GGUF", {"SmolLM2-135M-Instruct-Q4_K_M.gguf": smol})
    server.add_repo("nbllm-tests/private-GGUF", {"p-Q8_0.gguf": write_tiny_gguf(tmp_path / "p.gguf")}, token="hf_tok")
    server.start()
    yield server
    server.stop()


def test_nbllm_serve_pulls_from_hf_endpoint_with_hf_token_and_the_model_chats(hub: HubServer, tmp_path: Path) -> None:
    host = f"127.0.0.1:{free_port()}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NBLLM_", "OLLAMA_", "HF_"))}
    env.update(OLLAMA_HOST=host, OLLAMA_MODELS=str(tmp_path / "models"), NBLLM_HOME=str(tmp_path / "home"),
               HF_ENDPOINT=hub.url, HF_TOKEN="hf_tok", HF_HOME=str(tmp_path / "hf"))  # fmt: skip
    server = subprocess.Popen([sys.executable, "-m", "nbllm", "serve"], env=env, stderr=subprocess.DEVNULL)
    try:
        with Client(host) as client:
            deadline = time.monotonic() + 60
            while not client.heartbeat():
                assert server.poll() is None and time.monotonic() < deadline, "nbllm serve did not start"
                time.sleep(0.1)
            pulled = nbllm("pull", "hf.co/nbllm-tests/SmolLM2-135M-Instruct-GGUF", env={"OLLAMA_HOST": host})
            assert pulled.returncode == 0, pulled.stderr
            assert pulled.stderr.splitlines()[-1] == "success"
            private = nbllm("pull", "huggingface.co/nbllm-tests/private-GGUF:q8_0", env={"OLLAMA_HOST": host})
            assert private.returncode == 0, private.stderr
            names = [m.name for m in client.list_models().models]
            assert sorted(names) == [
                "hf.co/nbllm-tests/SmolLM2-135M-Instruct-GGUF:latest",
                "huggingface.co/nbllm-tests/private-GGUF:q8_0",
            ]
            request = ChatRequest(
                model="hf.co/nbllm-tests/SmolLM2-135M-Instruct-GGUF",
                messages=[Message(role="user", content="Say hi.")],
                options={"temperature": 0, "num_predict": 8},
            )
            answer = client.chat(request, stream=False)
            assert answer.done and answer.message.content.strip()
    finally:
        server.terminate()
        server.wait(30)
    assert hub.downloads("SmolLM2-135M-Instruct-Q4_K_M.gguf")  # it came from the HF_ENDPOINT server
