"""Fixtures of the notebook tests: a real IPython shell with the extension loaded over the real runtime."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from IPython.core.interactiveshell import InteractiveShell
from traitlets.config import Config

from nbllm.notebook import load_ipython_extension, unload_ipython_extension
from nbllm.notebook.magics import NbllmMagics
from nbllm.notebook.session import NotebookSession
from nbllm.runtime import Runtime


@pytest.fixture(scope="session")
def shell() -> InteractiveShell:
    """IPython's shell singleton (``display()`` publishes through it), history in memory."""
    config = Config()
    config.HistoryManager.hist_file = ":memory:"
    return InteractiveShell.instance(config=config)


@pytest.fixture
def nb(shell: InteractiveShell, real_runtime: Runtime) -> Iterator[NbllmMagics]:
    """The extension loaded with a session over the real runtime, talking to it in-process."""
    magics = load_ipython_extension(shell, session=NotebookSession(runtime=real_runtime))
    magics.host = "local"
    magics.default_model = "smollm2:135m"
    yield magics
    unload_ipython_extension(shell)
