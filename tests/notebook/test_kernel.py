"""The magics in a real Jupyter kernel (nbclient), with the in-kernel server reached from outside it.

One notebook is executed cell by cell in a fresh kernel (its own model store, pulled with ``%pull``);
between cells the test talks to the kernel's server with ``curl`` and the ``ollama`` client. Every
iopub message nbclient attributes to a cell is recorded, so the tests can see that streamed updates
arrived under the cell that ran them.
"""

from __future__ import annotations

import json
import os
import subprocess
from datetime import datetime
from typing import Any

import nbformat
import ollama
import pytest
from nbclient import NotebookClient

from tests.support.index_server import IndexServer

INTERRUPT_AFTER = 6  # seconds: enough for the first tokens on a busy 2-core machine

CELLS = {
    "load": "%load_ext nbllm",
    "pull": "%pull smollm2:135m",
    "serve": "srv = %serve --port 0\nsrv",
    "chat": "%%chat -o temperature=0 -o num_predict=16\nWhat is the capital of France?",
    "watch": "view = %ps --watch --interval 0.3\nview",
    "interrupt": "%%chat -o temperature=0 -o num_predict=3000\nList the numbers from 1 to 500, separated by commas.",
    "after": "%%chat -o temperature=0 -o num_predict=8\nThanks!",
    "frame": "import nbllm.notebook\nview.stop()\nprint(view.refreshes)\nnbllm.notebook.timings()",
    "plot": "%timings --plot",
    "stop": "%serve stop",
}


class RecordingClient(NotebookClient):
    """nbclient, remembering the type of every message it processed for each cell."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.messages: dict[int, list[str]] = {}

    def process_message(self, msg: dict[str, Any], cell: Any, cell_index: int) -> Any:
        self.messages.setdefault(cell_index, []).append(msg["msg_type"])
        return super().process_message(msg, cell, cell_index)


def _curl(url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["curl", "-sf", "--max-time", "20", url], capture_output=True, text=True, timeout=30)


@pytest.fixture(scope="module")
def kernel_run(tmp_path_factory: pytest.TempPathFactory, package_index: IndexServer) -> dict[str, Any]:
    """Execute the notebook; return it, its per-cell messages and what was seen from outside the kernel."""
    home = tmp_path_factory.mktemp("kernel")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NBLLM_", "OLLAMA_"))}
    env.update(NBLLM_HOME=str(home / "home"), NBLLM_MODELS=str(home / "models"), NBLLM_PACKAGE_INDEX=package_index.url)
    names = list(CELLS)
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(CELLS[n], metadata={"name": n}) for n in names])
    client = RecordingClient(
        nb,
        kernel_name="python3",
        timeout=240,
        timeout_func=lambda cell: INTERRUPT_AFTER if cell.metadata.get("name") == "interrupt" else 240,
        interrupt_on_timeout=True,
        allow_error_names=["KeyboardInterrupt"],
        record_timing=True,
    )
    seen: dict[str, Any] = {}
    with client.setup_kernel(env=env):
        for index, cell in enumerate(nb.cells):
            client.execute_cell(cell, index)
            name = names[index]
            if name == "serve":
                url = cell.outputs[0]["metadata"]["nbllm"]["server"]
                seen["url"] = url
                seen["tags"] = _curl(f"{url}/api/tags").stdout
                with ollama.Client(host=url) as outside:
                    answer = outside.chat(
                        model="smollm2:135m",
                        messages=[{"role": "user", "content": "Hi"}],
                        options={"num_predict": 4, "temperature": 0},
                    )
                    seen["ollama_chat"] = answer.message.content
                    seen["ollama_list"] = [m.model for m in outside.list().models]
            elif name == "interrupt":
                seen["ps_after_interrupt"] = _curl(f"{seen['url']}/api/ps")
            elif name == "stop":
                seen["after_stop"] = _curl(f"{seen['url']}/api/tags")
        client.set_widgets_metadata()
    return {"nb": nb, "names": names, "messages": client.messages, "seen": seen}


def _cell(run: dict[str, Any], name: str) -> tuple[Any, list[str]]:
    index = run["names"].index(name)
    return run["nb"].cells[index], run["messages"].get(index, [])


def _displays(cell: Any) -> list[Any]:
    return [o for o in cell.outputs if o["output_type"] in ("display_data", "execute_result")]


def test_pull_shows_a_progress_widget_then_a_static_summary(kernel_run: dict[str, Any]) -> None:
    cell, _ = _cell(kernel_run, "pull")
    (out,) = _displays(cell)
    assert out["data"]["text/plain"].splitlines()[-1] == "success"
    state = kernel_run["nb"].metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    bars = [w["state"] for w in state.values() if w["model_name"] == "IntProgressModel"]
    weights = max(bars, key=lambda b: b["max"])
    assert weights["max"] > 90_000_000 and weights["value"] == weights["max"]  # the 98 MB GGUF, complete


def test_server_in_the_kernel_is_reachable_from_outside(kernel_run: dict[str, Any]) -> None:
    seen = kernel_run["seen"]
    assert seen["url"].startswith("http://127.0.0.1:")
    assert "smollm2:135m" in {m["name"] for m in json.loads(seen["tags"])["models"]}
    assert seen["ollama_chat"]
    assert "smollm2:135m" in seen["ollama_list"]
    assert seen["after_stop"].returncode != 0  # %serve stop closed it
    cell, _ = _cell(kernel_run, "stop")
    assert "stopped the server at " + seen["url"] in _displays(cell)[0]["data"]["text/plain"]


def test_streamed_answer_lands_in_its_own_cell(kernel_run: dict[str, Any]) -> None:
    cell, messages = _cell(kernel_run, "chat")
    (out,) = cell.outputs  # one output area; no stray log lines from the server thread or llama.cpp
    assert out["output_type"] == "display_data"
    text = out["data"]["text/plain"]
    assert text and not text.startswith("smollm2:135m: …")  # the final answer, not the placeholder
    assert out["data"]["text/markdown"]
    meta = out["metadata"]["nbllm"]
    assert meta["host"] == kernel_run["seen"]["url"]  # it went through the in-kernel server
    assert meta["timings"][0]["eval_tokens"] > 0
    assert messages.count("display_data") == 1 and messages.count("update_display_data") >= 1
    wall = meta["timings"][0]["wall_s"]
    assert messages.count("update_display_data") <= wall / 0.1 + 3  # throttled to 10 updates a second
    for other in ("load", "serve", "after"):
        other_cell, _ = _cell(kernel_run, other)
        assert all("France" not in json.dumps(o) for o in other_cell.outputs)


def test_interrupt_stops_promptly_keeps_the_partial_answer_and_the_server(kernel_run: dict[str, Any]) -> None:
    cell, messages = _cell(kernel_run, "interrupt")
    assert "error" not in messages  # no traceback: the partial answer is the cell's only output
    (answer,) = cell.outputs
    assert answer["metadata"]["nbllm"]["interrupted"] is True
    assert answer["data"]["text/plain"].startswith("1, 2, 3")
    execution = cell.metadata["execution"]
    began = datetime.fromisoformat(execution["iopub.execute_input"].replace("Z", "+00:00"))
    ended = datetime.fromisoformat(execution["shell.execute_reply"].replace("Z", "+00:00"))
    assert (ended - began).total_seconds() < INTERRUPT_AFTER + 2.5
    assert kernel_run["seen"]["ps_after_interrupt"].returncode == 0
    after, _ = _cell(kernel_run, "after")
    assert _displays(after)[0]["data"]["text/plain"].strip()


def test_timings_frame_plot_and_live_ps_view(kernel_run: dict[str, Any]) -> None:
    cell, _ = _cell(kernel_run, "frame")
    stdout = "".join(o.get("text", "") for o in cell.outputs if o["output_type"] == "stream")
    assert int(stdout.strip()) >= 2  # the %ps --watch view refreshed in the background
    html = _displays(cell)[0]["data"]["text/html"]
    for column in ("model", "prompt_tokens", "prompt_tok_s", "eval_tokens", "eval_tok_s", "load_s", "ttft_s"):
        assert f"<th>{column}</th>" in html
    plot, _ = _cell(kernel_run, "plot")
    assert _displays(plot)[0]["data"]["image/png"]
    watch, _ = _cell(kernel_run, "watch")
    data = _displays(watch)[0]["data"]  # the live view's output became the last table once view.stop() ran
    assert "application/vnd.jupyter.widget-view+json" not in data and "smollm2:135m" in data["text/plain"]
