"""Fixtures shared by the hostile-client tests: a real server on loopback over the test's ``runtime``."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from nbllm.runtime import Runtime
from nbllm.server import BackgroundServer


@pytest.fixture
def server(runtime: Runtime) -> Iterator[BackgroundServer]:
    """A real server on a loopback port, over the runtime the test module defines."""
    srv = BackgroundServer(runtime, port=0).start()
    yield srv
    srv.stop()
