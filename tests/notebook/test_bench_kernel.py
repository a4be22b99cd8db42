"""``%bench`` serving mode in a real Jupyter kernel (nbclient): a widget progress bar, and the Stop button
(a kernel interrupt) ends the benchmark and keeps every request measured so far. No model: the
requests go to a loopback server that streams on a fixed schedule, from this test's process."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbclient import NotebookClient

from tests.support.schedule_server import ScheduleServer

PROMPTS = 200  # 0.1 s each at concurrency 1: far more than the seconds before the interrupt
STOP_AFTER = 5  # seconds, the kernel start excluded (nbclient times each cell)
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


@pytest.fixture(scope="module")
def sched() -> Iterator[ScheduleServer]:
    server = ScheduleServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def run(sched: ScheduleServer, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    home: Path = tmp_path_factory.mktemp("bench-kernel")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NBLLM_", "OLLAMA_"))}
    env.update(NBLLM_HOME=str(home), OLLAMA_HOST="127.0.0.1:9")
    cells = {
        "load": "%load_ext nbllm",
        "bench": f"r = %bench t10-g20-n5 --host {sched.url} -c 1 -n {PROMPTS} --warmup 0 --no-plots",
        "after": "print(r.interrupted, int(r.runs.iloc[0]['completed']), len(r.requests))",
    }
    nb = nbformat.v4.new_notebook(
        cells=[nbformat.v4.new_code_cell(src, metadata={"name": name}) for name, src in cells.items()]
    )
    client = NotebookClient(
        nb,
        kernel_name="python3",
        timeout=120,
        timeout_func=lambda cell: STOP_AFTER if cell.metadata.get("name") == "bench" else 120,
        interrupt_on_timeout=True,
        allow_error_names=["KeyboardInterrupt"],
    )
    with client.setup_kernel(env=env):
        for index, cell in enumerate(nb.cells):
            client.execute_cell(cell, index)
        client.set_widgets_metadata()
    return {"nb": nb, "cells": dict(zip(cells, nb.cells, strict=True))}


def test_stop_keeps_the_requests_measured_so_far(run: dict[str, Any]) -> None:
    bench = run["cells"]["bench"]
    assert not [o for o in bench.outputs if o["output_type"] == "error"]  # no traceback: a result
    (printed,) = [o["text"] for o in run["cells"]["after"].outputs if o["output_type"] == "stream"]
    interrupted, completed, rows = printed.split()
    assert interrupted == "True" and 5 <= int(completed) < PROMPTS
    assert int(rows) == PROMPTS  # every prompt has its row: ok, cancelled or unsent


def test_the_progress_bar_is_a_widget(run: dict[str, Any]) -> None:
    bench = run["cells"]["bench"]
    assert any(WIDGET_VIEW in o.get("data", {}) for o in bench.outputs), bench.outputs
    state = run["nb"].metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    bars = [w["state"] for w in state.values() if w["model_name"] in ("FloatProgressModel", "IntProgressModel")]
    assert any(b["max"] == PROMPTS and 5 <= b["value"] < PROMPTS for b in bars), bars
