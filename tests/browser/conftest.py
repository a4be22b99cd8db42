"""Fixtures of the browser tests: one JupyterLab server per module, Debian's Chromium driven by Playwright.

Chromium is found at ``$NBLLM_CHROMIUM`` or on the PATH (``chromium``); scripts/test installs it.
Without it the tests fail, unless ``NBLLM_SKIP_BROWSER=1`` says to skip them. Screenshots (the
ones the tests take, and one of every failure) go to ``$NBLLM_BROWSER_SHOTS``, by default
tests/browser/screenshots/ (not tracked by git).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.browser.lab import JupyterServer, chromium_args, environment
from tests.support.index_server import IndexServer

SHOTS = Path(os.environ.get("NBLLM_BROWSER_SHOTS", Path(__file__).with_name("screenshots")))


def _chromium() -> str:
    path = os.environ.get("NBLLM_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        if os.environ.get("NBLLM_SKIP_BROWSER") == "1":
            pytest.skip("NBLLM_SKIP_BROWSER=1 and no Chromium")
        pytest.fail("Chromium not found (apt-get install chromium, or NBLLM_CHROMIUM=path; NBLLM_SKIP_BROWSER=1 skips)")
    return path


@pytest.fixture(scope="module")
def shots() -> Path:
    """Where screenshots go."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    return SHOTS


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """A headless Chromium (a fresh profile of its own) under Playwright."""
    executable = _chromium()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("playwright is missing: pip install -e '.[test]'")
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=executable, args=chromium_args())
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def jupyter(tmp_path_factory: pytest.TempPathFactory, package_index: IndexServer) -> Iterator[JupyterServer]:
    """JupyterLab over a directory of its own; kernels get a throwaway store and the loopback index."""
    home = tmp_path_factory.mktemp("browser")
    root = home / "notebooks"
    root.mkdir()
    server = JupyterServer(root, environment(home, package_index.url)).start()
    yield server
    server.stop()
