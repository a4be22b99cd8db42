"""A thinking model's answer as a user sees it in JupyterLab: the thinking folded, opened with a click.

No model thinks on PyPI, so the kernel streams scripted chunks that carry ``message.thinking`` (as a
thinking server sends them) through the real ``%%chat`` code path (``run_chat``). The page must show
a collapsed "Thinking…" section above the answer that opens on a click and stays open while the
thinking streams; the finished answer folds it into a ``<details>`` that is closed in the saved
notebook and opens on a click.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import nbformat
import pytest

from tests.browser.lab import JupyterServer, LabPage

pytestmark = [pytest.mark.slow]

SETUP = """
import time
from nbllm.client import BaseClient
from nbllm.notebook.chat import CellContext, run_chat
from nbllm.notebook.magic_args import ChatArgs
from nbllm.notebook.session import NotebookSession
from nbllm.schema import ChatResponse, Message


def chunk(thinking=None, content="", **final):
    message = Message(role="assistant", content=content, thinking=thinking)
    return ChatResponse(model="thinker", created_at="t", message=message, **final)


class Thinker(BaseClient):
    host = "scripted"

    def _chat(self, req):
        for i in range(60):
            time.sleep(0.1)
            yield chunk(thinking=f"step {i}. ")
        for word in ["The ", "answer ", "is ", "42."]:
            time.sleep(0.05)
            yield chunk(content=word)
        yield chunk(done=True, done_reason="stop", eval_count=64, eval_duration=10**9)

    def ps(self):
        raise RuntimeError("a scripted stream: no models to list")


Thinker.__abstractmethods__ = frozenset()
ctx = CellContext(client=Thinker(), session=NotebookSession(), namespace={}, interval=0.05)
""".strip()
CHAT = 'result = run_chat(ctx, ChatArgs(), "thinker", "What is six times seven?")'


def _cell_js(index: int, body: str) -> str:
    return f"() => {{ const cell = document.querySelectorAll('.jp-Notebook .jp-Cell')[{index}]; {body} }}"


@pytest.fixture(scope="module")
def seen(browser: Any, jupyter: JupyterServer, shots: Path) -> dict[str, Any]:
    """Run the scripted answer in JupyterLab, open its thinking while it streams, then the final one."""
    path = jupyter.root / "thinking.ipynb"
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(SETUP), nbformat.v4.new_code_cell(CHAT)])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
    nbformat.write(nb, path)
    out: dict[str, Any] = {}
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    try:
        lab = LabPage(page, jupyter, path.name).open()
        lab.run(0)
        lab.run(1, wait=False)
        header = lab.output(1).locator(".jupyter-widget-Collapse-header")
        header.wait_for(timeout=60_000)
        contents = lab.output(1).locator(".jupyter-widget-Collapse-contents")
        out["live_title"] = header.inner_text().strip()
        out["live_collapsed"] = not contents.is_visible()
        lab.cell_shot(shots, 1, "thinking-live-collapsed")
        header.click()
        page.wait_for_function(_cell_js(1, "return cell.innerText.includes('step 1.');"), timeout=30_000)
        page.wait_for_function(_cell_js(1, "return cell.innerText.includes('step 30.');"), timeout=60_000)
        out["open_while_streaming"] = contents.is_visible()  # after ~30 more updates of the thinking text
        page.wait_for_function(_cell_js(1, "return cell.innerText.includes('The answer');"), timeout=60_000)
        out["title_answering"] = header.inner_text().strip()
        out["open_while_answering"] = contents.is_visible()
        lab.cell_shot(shots, 1, "thinking-live-open")
        lab.wait_done(1, 120)
        details = lab.output(1).locator(".jp-RenderedMarkdown details")
        details.wait_for()
        out["final_open_before"] = details.evaluate("e => e.open")
        out["final_summary"] = details.locator("summary").inner_text().strip()
        out["final_text"] = lab.output_text(1)
        lab.cell_shot(shots, 1, "thinking-final-collapsed")
        details.locator("summary").click()
        out["final_open_after"] = details.evaluate("e => e.open")
        out["final_text_open"] = lab.output_text(1)
        lab.cell_shot(shots, 1, "thinking-final-open")
        lab.command("docmanager:save")
        lab.command("kernelmenu:shutdown")
    except Exception:
        page.screenshot(path=str(shots / "thinking-failure.png"), full_page=True)
        raise
    finally:
        page.close()
    out["saved"] = json.loads(path.read_text())["cells"][1]["outputs"]
    return out


def test_thinking_streams_collapsed_and_opens_on_click(seen: dict[str, Any]) -> None:
    assert seen["live_title"] == "Thinking…"
    assert seen["live_collapsed"] is True
    assert seen["open_while_streaming"] is True  # the kernel's updates do not fold it again
    assert seen["title_answering"] == "Thinking" and seen["open_while_answering"] is True


def test_the_finished_answer_keeps_its_thinking_folded_and_opens_on_click(seen: dict[str, Any]) -> None:
    assert seen["final_summary"] == "Thinking"
    assert seen["final_open_before"] is False
    assert "The answer is 42." in seen["final_text"] and "step 5." not in seen["final_text"]
    assert seen["final_open_after"] is True and "step 5." in seen["final_text_open"]


def test_the_saved_notebook_has_the_folded_markdown_and_no_widget(seen: dict[str, Any]) -> None:
    outputs = seen["saved"]
    assert all("application/vnd.jupyter.widget-view+json" not in o.get("data", {}) for o in outputs)
    markdown = "".join(outputs[-1]["data"]["text/markdown"])
    assert markdown.startswith("<details><summary>Thinking</summary>") and "<details open" not in markdown
