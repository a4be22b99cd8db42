"""Helpers for the use-case tests: models with the template, params or GGUF a test needs, over FakeEngines."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from nbllm.runtime import Runtime
from tests.support.models import install_model
from tests.support.tiny_gguf import write_tiny_gguf

AddModel = Callable[..., str]


@pytest.fixture
def add_model(fake_runtime: Runtime, tmp_path: Path) -> AddModel:
    """``add_model(name, template=..., params=..., chat_template=..., pooling=...)`` stores a tiny model."""

    def add(name: str, *, chat_template: str | None = None, pooling: bool = False, **layers: Any) -> str:
        gguf = write_tiny_gguf(tmp_path / f"{name}.gguf", chat_template=chat_template, pooling=pooling)
        install_model(fake_runtime.store, name, gguf, **layers)
        return name

    return add
