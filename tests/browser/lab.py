"""A JupyterLab server for the browser tests, and the page operations they use.

The server runs in its own process with its own Jupyter config, data, settings and workspace
directories (nothing of the user's), the app exposed as ``window.jupyterapp`` so that the tests run
cells through JupyterLab's own commands, and kernels that inherit an environment pointing at a
throwaway nbllm store and the loopback package index.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

__all__ = ["JupyterServer", "LabPage", "chromium_args", "free_port"]


def free_port() -> int:
    """A free TCP port on loopback."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def chromium_args() -> list[str]:
    """Flags for a headless Chromium that talks to nothing but the test server."""
    return [
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
    ]


_SETTINGS = {
    # no news or update checks (nothing outside is reachable), every cell in the DOM (no windowing)
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false", "checkForUpdates": False},
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
}


class JupyterServer:
    """``jupyter lab`` (which also serves Notebook 7's UI) on a free port, rooted at ``root``."""

    def __init__(self, root: Path, env: dict[str, str]) -> None:
        self.root = root
        self.port = free_port()
        self.token = secrets.token_hex(16)
        self.url = f"http://127.0.0.1:{self.port}"
        home = root.parent / "jupyter"
        for plugin, values in _SETTINGS.items():
            path = home / "settings" / plugin
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(values))
        self.env = {
            **env,
            "JUPYTER_CONFIG_DIR": str(home / "config"),
            "JUPYTER_DATA_DIR": str(home / "data"),
            "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
            "JUPYTERLAB_SETTINGS_DIR": str(home / "settings"),
            "JUPYTERLAB_WORKSPACES_DIR": str(home / "workspaces"),
        }
        self.log_path = root.parent / "jupyter-lab.log"
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 90.0) -> JupyterServer:
        """Start the server and wait until its API answers."""
        cmd = [
            sys.executable,
            "-m",
            "jupyterlab",
            "--no-browser",
            "--allow-root",
            f"--port={self.port}",
            "--ip=127.0.0.1",
            f"--ServerApp.root_dir={self.root}",
            f"--IdentityProvider.token={self.token}",
            "--LabApp.expose_app_in_browser=True",
            "--JupyterNotebookApp.expose_app_in_browser=True",
            "--ServerApp.open_browser=False",
        ]
        with self.log_path.open("wb") as log:
            self._proc = subprocess.Popen(cmd, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"jupyter lab exited: {self.log_path.read_text()[-2000:]}")
            try:
                self.api("GET", "/api/status")
                return self
            except OSError:
                time.sleep(0.3)
        raise RuntimeError(f"jupyter lab did not start in {timeout:.0f} s: {self.log_path.read_text()[-2000:]}")

    def api(self, method: str, path: str) -> Any:
        """Call the server's REST API; the decoded JSON (None for an empty body)."""
        req = urllib.request.Request(self.url + path, method=method, headers={"Authorization": f"token {self.token}"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            body = resp.read()
        return json.loads(body) if body else None

    def page_url(self, path: str, *, ui: str = "lab") -> str:
        """The URL of a notebook in JupyterLab (``ui="lab"``) or Notebook 7 (``ui="notebooks"``)."""
        prefix = "lab/tree" if ui == "lab" else "notebooks"
        return f"{self.url}/{prefix}/{path}?token={self.token}"

    def stop(self) -> None:
        """Stop the server (and its kernels)."""
        if self._proc is None:
            return
        self._proc.terminate()
        try:
            self._proc.wait(30)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait(10)
        self._proc = None


_HELPERS = """
() => {
  const app = window.jupyterapp;
  window.__nbllm = {
    panel: () => app.shell.currentWidget,
    run: (i) => {
      const panel = app.shell.currentWidget;
      panel.content.activeCellIndex = i;
      panel.content.deselectAll();
      window.__nbllm.done = window.__nbllm.done || {};
      window.__nbllm.done[i] = false;
      app.commands.execute('notebook:run-cell').then(() => { window.__nbllm.done[i] = true; });
    },
  };
}
"""


class LabPage:
    """A notebook open in JupyterLab in a Playwright page, driven through JupyterLab's commands."""

    def __init__(self, page: Any, server: JupyterServer, path: str, *, ui: str = "lab") -> None:
        self.page = page
        self.server = server
        self.path = path
        self.ui = ui

    def open(self, timeout: float = 120.0) -> LabPage:
        """Load the notebook and wait until its kernel is idle."""
        self.page.goto(self.server.page_url(self.path, ui=self.ui))
        self.page.wait_for_function("() => window.jupyterapp && window.jupyterapp.shell.currentWidget", timeout=60_000)
        self.page.evaluate(_HELPERS)
        self.wait_kernel_idle(timeout)
        return self

    def wait_kernel_idle(self, timeout: float = 120.0) -> None:
        """Until the notebook's kernel is connected and idle."""
        self.page.wait_for_function(
            "() => { const s = window.__nbllm.panel().sessionContext;"
            " return s.session && s.session.kernel && s.session.kernel.status === 'idle'; }",
            timeout=timeout * 1000,
        )

    def run(self, index: int, *, wait: bool = True, timeout: float = 180.0) -> None:
        """Run cell ``index`` with JupyterLab's run-cell command (and wait until it finished)."""
        self.page.evaluate(f"() => window.__nbllm.run({index})")
        if wait:
            self.wait_done(index, timeout)

    def wait_done(self, index: int, timeout: float = 180.0) -> None:
        """Until the run of cell ``index`` finished."""
        self.page.wait_for_function(f"() => window.__nbllm.done[{index}] === true", timeout=timeout * 1000)

    def record(self, index: int, selector: str) -> None:
        """Start recording the labels of elements matching ``selector`` in cell ``index``'s outputs, however brief.

        A label is the element's ``.widget-label`` (or the element), its text followed by `` [cut]`` when
        it does not fit (shown with an ellipsis).
        """
        self.page.evaluate(
            """([index, selector]) => {
              const seen = window.__nbllm.seen = [];
              const look = () => {
                const cell = document.querySelectorAll('.jp-Notebook .jp-Cell')[index];
                for (const el of cell.querySelectorAll('.jp-OutputArea ' + selector)) {
                  const label = el.querySelector('.widget-label') || el;
                  const text = label.innerText.trim() + (label.scrollWidth > label.clientWidth ? ' [cut]' : '');
                  if (!seen.includes(text)) seen.push(text);
                }
              };
              window.__nbllm.observer = new MutationObserver(look);
              window.__nbllm.observer.observe(document.body, {childList: true, subtree: true, characterData: true});
            }""",
            [index, selector],
        )

    def recorded(self) -> list[str]:
        """Stop recording; the distinct texts seen."""
        seen: list[str] = self.page.evaluate(
            "() => { window.__nbllm.observer.disconnect(); return window.__nbllm.seen; }"
        )
        return seen

    def command(self, name: str) -> None:
        """Execute a JupyterLab command (and wait for it)."""
        self.page.evaluate(f"async () => {{ await window.jupyterapp.commands.execute({name!r}); }}")

    def output(self, index: int) -> Any:
        """The output area of cell ``index`` (a Playwright locator)."""
        return self.page.locator(".jp-Notebook .jp-Cell").nth(index).locator(".jp-OutputArea")

    def output_text(self, index: int) -> str:
        """The text of cell ``index``'s outputs as shown."""
        text: str = self.output(index).inner_text()
        return text.strip()

    def cell_shot(self, folder: Path, index: int, name: str) -> Path:
        """A screenshot of cell ``index`` (scrolled into view) into ``folder``."""
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{name}.png"
        self.page.locator(".jp-Notebook .jp-Cell").nth(index).screenshot(path=str(path))
        return path

    def shot(self, folder: Path, name: str) -> Path:
        """A full-page screenshot into ``folder``."""
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path


def environment(home: Path, package_index: str) -> dict[str, str]:
    """The server's (and so its kernels') environment: no outside NBLLM_*/OLLAMA_*, a throwaway store."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NBLLM_", "OLLAMA_"))}
    env.update(NBLLM_HOME=str(home / "nbllm"), NBLLM_PACKAGE_INDEX=package_index, TMPDIR=str(home / "tmp"))
    (home / "tmp").mkdir(parents=True, exist_ok=True)
    return env
