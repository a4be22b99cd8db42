"""Widgets and timing views without a frontend: state checked directly (ipywidgets' comms are dummies here)."""

from __future__ import annotations

import math
import time
from pathlib import Path

import pytest
from IPython.core.interactiveshell import InteractiveShell
from IPython.utils.capture import capture_output

from nbllm.client import LocalClient
from nbllm.config import Settings
from nbllm.notebook.display import show
from nbllm.notebook.plots import comparison_plot
from nbllm.notebook.timing import COLUMNS, TimingLog, TimingRecord, timing_frame
from nbllm.notebook.tools import ToolBox
from nbllm.notebook.widgets import PsView, PullProgress, ToolCallInspector
from nbllm.runtime import Runtime
from nbllm.schema import Metrics, ModelDetails, ProcessModel, ProcessResponse, ProgressResponse
from tests.support.index_server import IndexServer

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


def test_pull_progress_follows_a_real_pull(tmp_path: Path, package_index: IndexServer) -> None:
    settings = Settings(home=tmp_path / "home", models=tmp_path / "models", package_index=(package_index.url,))
    with Runtime.from_settings(settings) as rt:
        progress = PullProgress("smollm2:135m")
        events = list(LocalClient(rt).pull("smollm2:135m"))
        for event in events:
            progress.feed(event)
    layers = {e.digest: e.total for e in events if e.total is not None}
    assert set(progress.layers) == set(layers)
    for digest, total in layers.items():
        layer = progress.layers[digest]
        assert layer.bar.max == total and layer.bar.value == total and layer.bar.bar_style == "success"
        assert layer.label.value.startswith("100% of ")
    assert len(progress.children) == 1 + len(layers)
    assert progress.done and progress.status.value == "success: smollm2:135m"
    lines = progress.text().splitlines()
    assert lines[0] == "pulling manifest" and lines[-1] == "success"
    assert any(line.endswith("98 MB") and "100%" in line for line in lines)


def test_pull_progress_shows_partial_bytes() -> None:
    progress = PullProgress("m")
    progress.feed(ProgressResponse(status="pulling abc", digest="sha256:abc", total=1000, completed=0))
    progress.feed(ProgressResponse(status="pulling abc", digest="sha256:abc", total=1000, completed=250))
    layer = progress.layers["sha256:abc"]
    assert (layer.bar.value, layer.bar.max) == (250, 1000)
    assert layer.label.value.startswith("25% of 1 KB · ") and layer.label.value.endswith("/s")
    assert not progress.done


def _ps(*names: str) -> ProcessResponse:
    models = [
        ProcessModel(
            name=n,
            model=n,
            size=123_000_000,
            digest="0123456789abcdef" * 4,
            details=ModelDetails(),
            expires_at="2099-01-01T00:00:00Z",
            size_vram=0,
            context_length=4096,
        )
        for n in names
    ]
    return ProcessResponse(models=models)


def test_ps_view_refreshes_until_stopped_then_leaves_a_static_table(shell: InteractiveShell) -> None:
    calls: list[float] = []

    def fetch() -> ProcessResponse:
        calls.append(time.monotonic())
        if len(calls) == 3:
            raise ConnectionError("server went away")
        return _ps(*(f"m{i}:1b" for i in range(len(calls) // 4 + 1)))

    with capture_output() as cap:
        view = PsView(fetch, interval=0.05).start()
        show(view)
        deadline = time.monotonic() + 5
        while view.refreshes < 6 and time.monotonic() < deadline:
            time.sleep(0.02)
        view.stop()
    assert not view.running and view.refreshes >= 6
    assert "m1:1b" in view.table.value and "<th" in view.table.value and "text-align:right" in view.table.value
    assert view.footer.value.startswith("stopped at")
    count = view.refreshes
    time.sleep(0.15)
    assert view.refreshes == count
    first, *updates = cap.outputs
    assert WIDGET_VIEW in first.data and "m0:1b" in first.data["text/html"]
    assert first.data["text/plain"].splitlines()[0].split() == ["NAME", "ID", "SIZE", "PROCESSOR", "CONTEXT", "UNTIL"]
    assert "PsView(" not in first.data["text/plain"]
    assert updates and all(u.update and u.transient == first.transient for u in updates)
    assert len(updates) < view.refreshes  # sent only when the table changed
    final = updates[-1].data
    assert WIDGET_VIEW not in final  # stopped: the output is the static table alone
    assert "m1:1b" in final["text/html"] and "stopped at" in final["text/plain"]
    view.close()


def test_tool_inspector_output_holds_the_calls_as_text_kept_current(shell: InteractiveShell) -> None:
    def add(a: int, b: int) -> int:
        """Add two numbers."""
        return a + b

    toolbox = ToolBox.of([add])
    inspector = ToolCallInspector(toolbox)
    with capture_output() as cap:
        show(inspector)
        card = inspector.add(toolbox.call("add", {"a": 1, "b": 2}))
        card.arguments.value = '{"a": 40, "b": 2}'
        card.rerun.click()
        inspector.freeze()
    first, *updates = cap.outputs
    assert WIDGET_VIEW in first.data and first.data["text/plain"] == "tool calls (0)"
    assert [WIDGET_VIEW in u.data for u in updates] == [True, True, False]  # added, re-run, frozen
    assert all(u.update and u.transient == first.transient for u in updates)
    added, rerun = updates[0].data, updates[1].data
    assert '"a": 1' in added["text/plain"] and "result: 3" in added["text/plain"]
    assert (
        '"a": 40' in rerun["text/plain"] and "result: 42" in rerun["text/plain"] and "re-run 1×" in rerun["text/plain"]
    )
    assert "<pre>42</pre>" in rerun["text/html"] and "ToolCallInspector(" not in rerun["text/plain"]
    assert updates[2].data["text/html"] == rerun["text/html"]
    assert card.arguments.layout.width == "100%" and card.result.rows >= 2


def test_pull_progress_and_stream_columns_carry_a_static_copy() -> None:
    progress = PullProgress("smollm2:135m")
    assert progress._repr_mimebundle_()["text/plain"] == "pulling smollm2:135m"
    progress.feed(ProgressResponse(status="pulling manifest"))
    progress.feed(ProgressResponse(status="pulling b1e2c3d4e5f6", digest="sha256:b1e2c3d4e5f6", total=10, completed=5))
    bar = progress.layers["sha256:b1e2c3d4e5f6"].bar
    assert bar.description == "pulling b1e2c3d4e5f6" and bar.style.description_width == "initial"
    bundle = progress._repr_mimebundle_()
    assert WIDGET_VIEW in bundle and bundle["text/plain"] == "pulling manifest\npulling b1e2c3d4e5f6...  50% 10 B"


def _record(model: str, eval_tokens: int, eval_s: float, *, load_s: float = 0.5) -> TimingRecord:
    metrics = Metrics(
        total_duration=int((load_s + 0.2 + eval_s) * 1e9),
        load_duration=int(load_s * 1e9),
        prompt_eval_count=20,
        prompt_eval_duration=int(0.2e9),
        eval_count=eval_tokens,
        eval_duration=int(eval_s * 1e9),
    )
    return TimingRecord.from_metrics(model, metrics, ttft_s=0.3, wall_s=load_s + 0.2 + eval_s + 0.01)


def test_timing_record_from_the_final_chunk() -> None:
    record = _record("m", 50, 0.5)
    assert (record.eval_tok_s, record.prompt_tok_s, record.prompt_tokens) == (100.0, 100.0, 20.0)
    assert (record.load_s, record.eval_s, record.ttft_s) == (0.5, 0.5, 0.3)
    assert record.total_s == pytest.approx(1.2)
    cut = TimingRecord.from_metrics("m", None, ttft_s=None, wall_s=1.0, interrupted=True)
    assert math.isnan(cut.eval_tok_s) and math.isnan(cut.ttft_s)
    assert cut.metadata()["eval_tok_s"] is None and cut.metadata()["interrupted"] is True
    assert "interrupted" in cut.summary()


def test_timing_frame_and_comparison_plot() -> None:
    log = TimingLog()
    for record in (_record("a", 50, 0.5), _record("a", 60, 0.5, load_s=0.0), _record("b", 20, 1.0)):
        log.add(record)
    frame = log.frame()
    assert list(frame.columns) == COLUMNS and len(frame) == 3
    assert type(frame[frame["model"] == "a"]).__name__ == "TimingFrame"  # slicing keeps .plot()
    plot = frame.plot(title="demo")
    stats = plot.stats
    assert stats.loc["a", "runs"] == 2 and stats.loc["a", "eval_tok_s"] == pytest.approx(110.0)
    assert stats.loc["a", "eval_tok_s_std"] == pytest.approx(math.sqrt(200))
    assert stats.loc["b", "eval_tok_s_std"] == 0.0
    speed, stages = plot.figure.axes
    assert [t.get_text() for t in speed.get_yticklabels()] == ["a", "b"]
    assert len(stages.patches) == 3 * 2  # load, prompt eval and generation bars for two models
    assert stages.get_legend() is None  # the legend is the figure's, under the bars, never over them
    (legend,) = plot.figure.legends
    assert [t.get_text() for t in legend.get_texts()] == ["load", "prompt eval", "generation"]
    assert plot.figure.get_facecolor() == (1.0, 1.0, 1.0, 1.0) and plot.figure.get_linewidth() > 0  # a frame
    assert plot._repr_mimebundle_()["text/plain"] == "<nbllm timing comparison: a, b>"
    with pytest.raises(ValueError, match="no timings to plot"):
        comparison_plot(timing_frame([]))
