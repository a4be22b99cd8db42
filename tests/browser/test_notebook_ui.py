"""The notebook as a user sees it: JupyterLab in Chromium, the real engine on SmolLM2, assertions on the page.

One notebook is run cell by cell through JupyterLab's own commands (module fixture ``lab_run``):
the pull, the in-kernel server, a streamed answer, a stopped answer, a tool call re-run with edited
arguments, ``%ps --watch``. Then the kernel is shut down, the notebook saved and the page reloaded,
and the saved file is converted with ``jupyter nbconvert --to html``. The tests check what was on the
page at each step. Notebook 7's UI is checked once, on a small notebook of its own.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import nbformat
import pytest

from tests.browser.lab import JupyterServer, LabPage

pytestmark = [pytest.mark.model, pytest.mark.slow]

CELLS = {
    "load": "%load_ext nbllm",
    "pull": "%pull smollm2:135m",
    "serve": "srv = %serve --port 0\nsrv",
    "log": "%serve --port 0 --log server.log",
    "quiet": "x = 1",
    "pull_error": "%pull 127.0.0.1:9/library/x:1",
    "chat": "%%chat -o temperature=0 -o num_predict=160\nWrite a short story about a lighthouse by the sea.",
    "stop": "%%chat --new -o temperature=0 -o num_predict=3000\nList the numbers from 1 to 500, separated by commas.",
    "tool_def": (
        "def add(a: int, b: int) -> int:\n"
        '    """Add two integers.\n\n    Args:\n        a: The first number.\n        b: The second number.\n    """\n'
        "    return a + b"
    ),
    "tools": (
        "%%chat --new --thread tools --tools add --tool-choice required -o temperature=0 -o num_predict=48\n"
        "What is 17 + 25? Use the add tool."
    ),
    "ps": "view = %ps --watch --interval 0.5\nview",
}
NAMES = list(CELLS)
REPRS = ("ToolCallInspector(", "PsView(", "PullProgress(", "VBox(children")
WIDGET_ERROR = "Error displaying widget"


def _index(name: str) -> int:
    return NAMES.index(name)


def _notebook(path: Path, cells: dict[str, str]) -> None:
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(src) for src in cells.values()])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
    nbformat.write(nb, path)


def _nbconvert(path: Path, out: Path) -> str:
    subprocess.run(
        [sys.executable, "-m", "nbconvert", "--to", "html", str(path), "--output-dir", str(out)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    return (out / f"{path.stem}.html").read_text()


def _watch_stream(lab: LabPage, index: int, timeout: float = 120.0) -> list[str]:
    """Distinct texts of a cell's output while it runs, read from the DOM every 50 ms."""
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = lab.output_text(index)
        if not seen or text != seen[-1]:
            seen.append(text)
        if lab.page.evaluate(f"() => window.__nbllm.done[{index}] === true"):
            return seen
        time.sleep(0.05)
    raise TimeoutError(f"cell {index} still running after {timeout:.0f} s")


def _outside_pull(url: str) -> str:
    req = urllib.request.Request(
        f"{url}/api/pull", data=json.dumps({"model": "127.0.0.1:9/library/x:1"}).encode(), method="POST"
    )
    with urllib.request.urlopen(req, timeout=60) as resp:
        body: str = resp.read().decode()
    return body


def _stop_and_rerun(lab: LabPage, seen: dict[str, Any], shots: Path) -> None:
    """Stop a long answer with the toolbar's interrupt button; re-run the tool call with other arguments."""
    stop = _index("stop")
    lab.run(stop, wait=False)
    lab.page.wait_for_function(  # the answer is streaming (no placeholder or "waiting…" status any more)
        f"() => {{ const cell = document.querySelectorAll('.jp-Notebook .jp-Cell')[{stop}];"
        " const o = cell.querySelector('.jp-OutputArea');"
        " return o.innerText.length > 40 && !o.innerText.includes('…'); }"
    )
    button = lab.page.locator("[data-command='notebook:interrupt-kernel']")
    if button.count():  # the toolbar's Stop button
        button.first.click()
    else:
        lab.command("notebook:interrupt-kernel")
    lab.wait_done(stop, 60)
    lab.page.wait_for_timeout(500)
    seen["stop_text"] = lab.output_text(stop)
    lab.cell_shot(shots, stop, "cell-stop")
    seen["stop_stderr"] = lab.output(stop).locator("[data-mime-type='application/vnd.jupyter.stderr']").count()
    lab.run(_index("tool_def"))
    tools = _index("tools")
    lab.run(tools)
    boxes = lab.output(tools).locator("textarea")
    boxes.first.wait_for()
    seen["tool_result_before"] = boxes.nth(1).input_value()
    boxes.first.fill('{"a": 100, "b": 23}')
    lab.output(tools).locator("button", has_text="Re-run").first.click()
    lab.page.wait_for_function(
        f"() => document.querySelectorAll('.jp-Notebook .jp-Cell')[{tools}]"
        ".querySelectorAll('textarea')[1].value === '123'",
        timeout=30_000,
    )
    seen["tool_result_after"] = boxes.nth(1).input_value()
    seen["tool_box_width"] = boxes.first.evaluate("e => e.getBoundingClientRect().width")


def _session(lab: LabPage, seen: dict[str, Any], shots: Path) -> None:
    lab.run(_index("load"))
    pull = _index("pull")
    lab.record(pull, ".widget-hprogress")  # the bars (their label is their text) live only while the pull runs
    lab.run(pull)
    seen["pull_bar_labels"] = lab.recorded()
    seen["pull_text"] = lab.output_text(pull)
    lab.run(_index("serve"))
    url = re.search(r"http://127\.0\.0\.1:\d+", lab.output_text(_index("serve")))
    assert url is not None, lab.output_text(_index("serve"))
    lab.run(_index("log"))
    lab.run(_index("quiet"))
    seen["outside_pull"] = _outside_pull(url.group(0))
    lab.page.wait_for_timeout(1500)  # time for a stray log line to arrive
    seen["quiet_text"] = lab.output_text(_index("quiet"))
    log_file = lab.server.root / "server.log"
    seen["server_log"] = log_file.read_text() if log_file.exists() else ""
    lab.run(_index("pull_error"))
    seen["pull_error_text"] = lab.output_text(_index("pull_error"))
    chat = _index("chat")
    lab.run(chat, wait=False)
    seen["chat_reads"] = _watch_stream(lab, chat)
    seen["chat_markdown"] = lab.output(chat).locator(".jp-RenderedMarkdown").all_inner_texts()
    seen["chat_stats"] = lab.output(chat).locator(".jp-RenderedMarkdown sub").all_inner_texts()
    _stop_and_rerun(lab, seen, shots)
    ps = _index("ps")
    lab.run(ps)
    lab.page.wait_for_function(
        f"() => document.querySelectorAll('.jp-Notebook .jp-Cell')[{ps}].innerText.includes('smollm2:135m')"
    )
    seen["ps_live"] = lab.output_text(ps)
    lab.shot(shots, "lab-1-live")
    lab.cell_shot(shots, _index("tools"), "cell-tools-live")
    lab.cell_shot(shots, ps, "cell-ps-live")


def _reopen(lab: LabPage, server: JupyterServer, seen: dict[str, Any], shots: Path, saved: Path) -> None:
    """Save; shut the kernel down; save again; reload the page (a fresh kernel, no widget models)."""
    lab.command("docmanager:save")
    shutil.copy(saved, saved.with_name("saved-live.ipynb"))  # as saved while the widgets were live
    lab.command("kernelmenu:shutdown")
    tools = _index("tools")
    try:  # the kernel's last messages turn live widgets into their static copy
        lab.page.wait_for_function(
            f"() => !document.querySelectorAll('.jp-Notebook .jp-Cell')[{tools}].querySelector('textarea')",
            timeout=15_000,
        )
    except Exception:
        seen["frozen_at_shutdown"] = False
    lab.command("docmanager:save")
    lab.open()  # the page loaded again
    lab.page.wait_for_timeout(3000)  # the widget manager restores (and reports missing models)
    seen["reopened_page"] = lab.page.locator(".jp-Notebook").inner_text()
    seen["reopened_tools"] = lab.output_text(tools)
    seen["reopened_ps"] = lab.output_text(_index("ps"))
    lab.shot(shots, "lab-2-reopened")
    lab.cell_shot(shots, tools, "cell-tools-reopened")
    lab.cell_shot(shots, _index("ps"), "cell-ps-reopened")
    lab.cell_shot(shots, _index("quiet"), "cell-quiet-reopened")
    lab.cell_shot(shots, _index("pull_error"), "cell-pull-error-reopened")
    lab.command("kernelmenu:shutdown")


@pytest.fixture(scope="module")
def lab_run(browser: Any, jupyter: JupyterServer, shots: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """Run the notebook in JupyterLab, save, shut down, reopen; what was seen and the nbconvert outputs."""
    path = jupyter.root / "session.ipynb"
    _notebook(path, CELLS)
    context = browser.new_context(viewport={"width": 1280, "height": 1600})
    page = context.new_page()
    page.set_default_timeout(60_000)
    page.on("dialog", lambda dialog: dialog.accept())  # leaving the page is fine: the notebook is saved
    seen: dict[str, Any] = {}
    lab = LabPage(page, jupyter, path.name)
    started = time.monotonic()
    try:
        lab.open()
        _session(lab, seen, shots)
        _reopen(lab, jupyter, seen, shots, path)
    except Exception:
        page.screenshot(path=str(shots / "FAILED-lab-session.png"), full_page=True)
        raise
    finally:
        context.close()
    seen["seconds"] = time.monotonic() - started
    out = tmp_path_factory.mktemp("html")
    seen["html_live"] = _nbconvert(path.with_name("saved-live.ipynb"), out)
    seen["html"] = _nbconvert(path, out)
    seen["saved"] = nbformat.read(path, as_version=4)
    return seen


def test_pull_shows_progress_bars_as_a_widget_with_full_layer_names(lab_run: dict[str, Any]) -> None:
    labels = lab_run["pull_bar_labels"]  # " [cut]" marks a label shown with an ellipsis (as while it lays out)
    names = {label.removesuffix(" [cut]") for label in labels}
    assert names and all(re.fullmatch(r"pulling [0-9a-f]{12}", name) for name in names), labels
    assert all(name in labels for name in names), labels  # each label was seen whole
    assert lab_run["pull_text"].strip().splitlines()[-1] == "success"


def test_streamed_answer_grows_in_the_page_and_ends_as_markdown_with_stats(lab_run: dict[str, Any]) -> None:
    bodies = [r.strip().rsplit("\n", 1)[0] for r in lab_run["chat_reads"] if r.strip() and "…" not in r]
    assert len(set(bodies)) >= 3 and len(bodies[-1]) > len(bodies[0]) > 0, bodies  # it grew across DOM reads
    (answer,) = lab_run["chat_markdown"]
    (stats,) = lab_run["chat_stats"]
    assert len(answer) > 100 and stats.startswith("smollm2:135m · ")
    assert "tok/s" in stats


def test_stop_leaves_the_partial_answer_and_no_traceback(lab_run: dict[str, Any]) -> None:
    text = lab_run["stop_text"]
    assert len(text) > 40 and "interrupted" in text.splitlines()[-1]
    assert lab_run["stop_stderr"] == 0
    assert "KeyboardInterrupt" not in text and "Traceback" not in text


def test_tool_inspector_rerun_with_edited_arguments_changes_the_result(lab_run: dict[str, Any]) -> None:
    assert lab_run["tool_result_before"] not in ("", "123")
    assert lab_run["tool_result_after"] == "123"
    assert lab_run["tool_box_width"] > 600  # the argument box spans the output, not ~210 px


def test_server_errors_never_land_in_other_cells(lab_run: dict[str, Any]) -> None:
    assert "Connection refused" in lab_run["outside_pull"]  # the server did fail that request
    assert lab_run["quiet_text"].strip() == ""
    assert "ERROR nbllm.server.errors: stream failed: " in lab_run["server_log"]  # %serve --log FILE has it
    errors = lab_run["pull_error_text"]
    assert errors.count("Connection refused") == 1 and "stream failed" not in errors


def test_saved_notebook_reopened_without_its_kernel_shows_static_copies(lab_run: dict[str, Any]) -> None:
    assert "frozen_at_shutdown" not in lab_run
    page = lab_run["reopened_page"]
    assert WIDGET_ERROR not in page and not any(r in page for r in REPRS)
    tools = lab_run["reopened_tools"]
    assert re.search(r"tool calls \(\d\)", tools) and '"a": 100' in tools and "123" in tools
    ps = lab_run["reopened_ps"]
    assert "NAME" in ps and "smollm2:135m" in ps and "stopped at" in ps


def test_nbconvert_html_has_the_answers_and_static_copies_and_no_widget_reprs(lab_run: dict[str, Any]) -> None:
    for key in ("html_live", "html"):  # saved with the widgets live, and after the kernel shut down
        html = lab_run[key]
        assert not any(r in html for r in REPRS), key
        assert re.search(r"tool calls \(\d\)", html) and '"a": 100' in html and "<pre>123</pre>" in html, key
        assert "smollm2:135m" in html and "CONTEXT" in html, key
        assert "KeyboardInterrupt" not in html and "Traceback" not in html, key
        answer = lab_run["chat_markdown"][0].split()[:3]
        assert " ".join(answer) in re.sub(r"\s+", " ", re.sub(r"<[^>]+>", "", html)), key


def test_notebook_7_renders_an_answer_and_a_widget(browser: Any, jupyter: JupyterServer, shots: Path) -> None:
    path = jupyter.root / "nb7.ipynb"
    cells = {
        "load": "%load_ext nbllm",
        "chat": "%%chat -o temperature=0 -o num_predict=16\nSay hello.",
        "ps": "view = %ps --watch --interval 0.5\nview",
    }
    _notebook(path, cells)
    context = browser.new_context(viewport={"width": 1280, "height": 1200})
    page = context.new_page()
    page.set_default_timeout(60_000)
    nb7 = LabPage(page, jupyter, path.name, ui="notebooks")
    try:
        nb7.open()
        for index in range(len(cells)):
            nb7.run(index)
        nb7.output(2).locator(".widget-html table").first.wait_for()
        stats = nb7.output(1).locator(".jp-RenderedMarkdown sub").all_inner_texts()
        table = nb7.output(2).locator(".widget-html").first.inner_text()
        nb7.shot(shots, "notebook7")
        url = page.url
    except Exception:
        page.screenshot(path=str(shots / "FAILED-notebook7.png"), full_page=True)
        raise
    finally:
        context.close()
        for kernel in jupyter.api("GET", "/api/kernels"):
            jupyter.api("DELETE", f"/api/kernels/{kernel['id']}")
    assert "/notebooks/" in url
    assert len(stats) == 1 and stats[0].startswith("smollm2:135m · ")
    assert "smollm2:135m" in table
