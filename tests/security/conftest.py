"""Servers with security settings of a test's choosing (over FakeEngines: these tests are about the edge)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from nbllm.config import Settings
from nbllm.engine.fake import FakeEngineFactory
from nbllm.runtime import Runtime
from nbllm.server import BackgroundServer, create_app
from tests.conftest import CHATML
from tests.support.models import install_model
from tests.support.tiny_gguf import write_tiny_gguf

MakeRuntime = Callable[..., Runtime]


@pytest.fixture
def make_runtime(tmp_path: Path) -> Iterator[MakeRuntime]:
    """``make_runtime(**settings)``: a FakeEngine runtime with the model ``tiny`` and those settings."""
    runtimes: list[Runtime] = []

    def make(**overrides: Any) -> Runtime:
        root = tmp_path / f"rt{len(runtimes)}"
        runtime = Runtime.from_settings(
            Settings(home=root / "home", models=root / "models", **overrides), engine_factory=FakeEngineFactory()
        )
        install_model(runtime.store, "tiny", write_tiny_gguf(root / "tiny.gguf"), template=CHATML)
        runtimes.append(runtime)
        return runtime

    yield make
    for runtime in runtimes:
        runtime.close()


@pytest.fixture
def make_client(make_runtime: MakeRuntime) -> Iterator[Callable[..., TestClient]]:
    """``make_client(**settings)``: a TestClient of an app with those settings (no socket, no Host guard)."""
    with ExitStack() as stack:

        def make(**overrides: Any) -> TestClient:
            return stack.enter_context(TestClient(create_app(make_runtime(**overrides))))

        yield make


@pytest.fixture
def make_server(make_runtime: MakeRuntime) -> Iterator[Callable[..., BackgroundServer]]:
    """``make_server(host=..., **settings)``: a real server on a free port of ``host`` (127.0.0.1 by default)."""
    servers: list[BackgroundServer] = []

    def make(host: str = "127.0.0.1", **overrides: Any) -> BackgroundServer:
        server = BackgroundServer(make_runtime(**overrides), host=host, port=0).start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()
