"""The committed walkthrough notebooks as a reader sees them: opened in JupyterLab in Chromium, nothing run.

Every notebook in notebooks/ is copied into a JupyterLab server that offers no kernel at all, opened
with "No Kernel" (so not one cell runs and no widget talks to a kernel), and checked in the DOM
against its saved outputs: as many output areas as saved outputs, each saved PNG an ``<img>`` that
decoded, HTML tables shown as ``<table>``, no output that reads as a Python repr of a widget or
display object (or as ipywidgets' "Error displaying widget"), and no stderr-coloured area where the
notebook saved no stderr. A full-page screenshot of each goes to the screenshots folder. The checker
itself is tested: a copy with one output of each kind broken must be flagged, cell by cell.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import json
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nbformat
import pytest

from tests.browser.lab import JupyterServer, environment

pytestmark = [pytest.mark.slow]

NOTEBOOKS = sorted((Path(__file__).parents[2] / "notebooks").glob("*.ipynb"))
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
# JupyterLab's default order of preference among the MIME types an output carries
MIME_ORDER = (
    WIDGET_VIEW,
    "application/javascript",
    "text/html",
    "text/markdown",
    "text/latex",
    "image/svg+xml",
    "image/bmp",
    "image/png",
    "image/jpeg",
    "image/gif",
    "image/webp",
    "application/json",
    "text/plain",
)
REPRS = re.compile(
    r"\b[VH]Box\(|\bOutput\(\)|<IPython\.core|<ipywidgets|Error displaying widget|Loading widget|\[object Object\]"
)
STALE_BARS = (
    "saved before %bench's bar became a static line when closed (nbllm/notebook/bench.py progress_bar): "
    "re-execute the notebook (python -m tests.notebooks.execute)"
)
MD_TABLE_RULE = re.compile(r"^\s*\|?\s*:?-{3,}:?\s*\|", re.MULTILINE)

# What the page shows, per cell: each top-level output's MIME type, text, tables and images.
_READ_DOM = """
() => [...window.jupyterapp.shell.currentWidget.node.querySelectorAll('.jp-Notebook .jp-Cell')].map((cell) => {
  const area = cell.querySelector('.jp-Cell-outputArea');
  if (!area) return [];
  return [...area.querySelectorAll(':scope > .jp-OutputArea-child')].map((child) => {
    const out = child.querySelector('.jp-OutputArea-output');
    return {
      mime: out ? out.getAttribute('data-mime-type') || '' : '',
      text: out ? out.innerText : '',
      tables: child.querySelectorAll('table').length,
      images: [...child.querySelectorAll('img')].map((img) => img.naturalWidth),
    };
  });
})
"""

_RENDERED = """
(cells) => {
  const panel = window.jupyterapp && window.jupyterapp.shell.currentWidget;
  if (!panel || !panel.context || !panel.context.isReady) return false;
  const shown = panel.node.querySelectorAll('.jp-Notebook .jp-Cell');
  if (shown.length !== cells) return false;
  const imgs = [...panel.node.querySelectorAll('.jp-OutputArea img')];
  return imgs.every((img) => img.complete) && !panel.node.innerText.includes('Loading widget');
}
"""


@dataclass
class Expected:
    """What a saved code cell's outputs must look like on the page."""

    areas: int = 0
    pngs: int = 0
    tables: int = 0
    stderr: int = 0
    widgets: list[int] = field(default_factory=list)  # the areas that hold a widget view


def shown_mime(data: dict[str, Any]) -> str:
    """The MIME type JupyterLab renders for an output's bundle."""
    return next((mime for mime in MIME_ORDER if mime in data), "")


def expected(nb: Any) -> dict[int, Expected]:
    """Per cell index, what its saved outputs must show (streams of one name in a row show as one area)."""
    result: dict[int, Expected] = {}
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "code" or not cell.outputs:
            continue
        want = Expected()
        last_stream = None
        for out in cell.outputs:
            if out.output_type == "stream":
                if out.name != last_stream:
                    want.areas += 1
                    want.stderr += out.name == "stderr"
                last_stream = out.name
                continue
            last_stream = None
            want.areas += 1
            if out.output_type == "error":
                want.stderr += 1
                continue
            data = out.get("data", {})
            mime = shown_mime(data)
            if mime == WIDGET_VIEW:
                want.widgets.append(want.areas - 1)
            want.pngs += mime == "image/png"
            if mime == "text/html":
                want.tables += len(re.findall(r"<table\b", data[mime], re.IGNORECASE))
            elif mime == "text/markdown":
                want.tables += len(MD_TABLE_RULE.findall(data[mime]))
        result[index] = want
    return result


def problems(nb: Any, dom: list[list[dict[str, Any]]]) -> list[str]:
    """Every way the page (``dom``, read by ``_READ_DOM``) differs from what the saved notebook ``nb`` shows."""
    found: list[str] = []
    if len(dom) != len(nb.cells):
        return [f"{len(dom)} cells on the page, {len(nb.cells)} saved"]
    want = expected(nb)
    for index, outputs in enumerate(dom):
        exp = want.get(index, Expected())
        where = f"cell {index}"
        if len(outputs) != exp.areas:
            found.append(f"{where}: {len(outputs)} output areas shown, {exp.areas} saved")
        images = [width for out in outputs for width in out["images"]]
        if len(images) < exp.pngs or sum(width > 0 for width in images) < exp.pngs:
            found.append(f"{where}: {exp.pngs} saved PNGs, images shown with naturalWidth {images}")
        tables = sum(out["tables"] for out in outputs)
        if tables < exp.tables:
            found.append(f"{where}: {exp.tables} saved tables, {tables} <table> shown")
        stderr = sum(out["mime"] == "application/vnd.jupyter.stderr" for out in outputs)
        if stderr > exp.stderr:
            found.append(f"{where}: {stderr} stderr-coloured areas, {exp.stderr} saved stderr streams")
        for area in exp.widgets if len(outputs) == exp.areas else []:
            if outputs[area]["mime"] == "text/plain":  # neither the widget nor a static text/html or markdown copy
                text = outputs[area]["text"]
                found.append(f"{where}: a widget shown as its text/plain repr: {text[:120]!r}")
        for out in outputs:
            match = REPRS.search(out["text"])
            if match:
                found.append(f"{where}: a repr shown ({out['mime']}): {out['text'][:120]!r}")
    return found


@pytest.fixture(scope="module")
def no_kernel_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JupyterServer]:
    """JupyterLab over copies of the notebooks, offering no kernel (so none can start and run a cell)."""
    home = tmp_path_factory.mktemp("saved-notebooks")
    root = home / "notebooks"
    root.mkdir()
    for path in NOTEBOOKS:
        shutil.copy(path, root / path.name)
    config = home / "jupyter" / "config"
    config.mkdir(parents=True)
    no_specs = {"KernelSpecManager": {"allowed_kernelspecs": ["no-such-kernel"]}}
    (config / "jupyter_server_config.json").write_text(json.dumps(no_specs))
    server = JupyterServer(root, environment(home, "http://127.0.0.1:9")).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def reader(browser: Any, no_kernel_lab: JupyterServer) -> Iterator[Any]:
    """One page for the module, on which each notebook is opened in turn."""
    context = browser.new_context(viewport={"width": 1280, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(60_000)
    yield page
    context.close()


def open_and_read(page: Any, server: JupyterServer, name: str, cells: int, shots: Path) -> list[list[dict[str, Any]]]:
    """Open ``name`` with No Kernel, wait until rendered, take a full-length screenshot; the DOM's outputs."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    page.goto(server.page_url(name) + "&reset")  # a fresh workspace: no notebook opened before comes back
    page.wait_for_function("() => window.jupyterapp && window.jupyterapp.shell.currentWidget")
    page.locator(".jp-Dialog button", has_text="No Kernel").click()
    with contextlib.suppress(PlaywrightTimeout):  # not all there after 30 s: the checks below say what is missing
        page.wait_for_function(_RENDERED, arg=cells, timeout=30_000)
    dom: list[list[dict[str, Any]]] = page.evaluate(_READ_DOM)
    _shoot(page, shots, Path(name).stem)
    assert server.api("GET", "/api/kernels") == [], "a kernel started"
    return dom


def _shoot(page: Any, shots: Path, name: str) -> None:
    """Make the page as tall as the notebook (it scrolls inside its panel) and screenshot all of it."""
    page.evaluate("async () => { await window.jupyterapp.commands.execute('application:toggle-left-area'); }")
    height = page.evaluate(
        "() => { const s = window.jupyterapp.shell.currentWidget.node.querySelector('.jp-WindowedPanel-outer');"
        " return s.scrollHeight - s.clientHeight + window.innerHeight; }"
    )
    page.set_viewport_size({"width": 1280, "height": min(int(height) + 40, 30_000)})
    page.wait_for_timeout(300)
    shots.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(shots / f"saved-{name}.png"), full_page=True)
    page.set_viewport_size({"width": 1280, "height": 1000})
    page.evaluate("async () => { await window.jupyterapp.commands.execute('application:toggle-left-area'); }")


def _params() -> list[Any]:
    """The notebooks; 06 as saved shows its %bench progress bars as tqdm's first line (see ``STALE_BARS``)."""
    return [
        pytest.param(path, marks=pytest.mark.xfail(reason=STALE_BARS, strict=True)) if _stale_bars(path) else path
        for path in NOTEBOOKS
    ]


def _stale_bars(path: Path) -> bool:
    """Whether ``path`` was saved with a tqdm widget whose only copy is its first line (``0%| | 0/N``)."""
    for cell in nbformat.read(path, as_version=4).cells:
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            if shown_mime(data) == WIDGET_VIEW and re.match(r"\s*0%\|", data.get("text/plain", "")):
                return True
    return False


@pytest.mark.parametrize("path", _params(), ids=[p.stem for p in NOTEBOOKS])
def test_saved_notebook_renders_its_outputs_without_a_kernel(
    path: Path, reader: Any, no_kernel_lab: JupyterServer, shots: Path
) -> None:
    nb = nbformat.read(path, as_version=4)
    assert expected(nb), f"{path.name} is committed without outputs"
    dom = open_and_read(reader, no_kernel_lab, path.name, len(nb.cells), shots)
    assert problems(nb, dom) == []


def _break(nb: Any) -> dict[str, int]:
    """Break one output of each kind in ``nb`` (in place); the cell index of each."""
    broken: dict[str, int] = {}
    for index, cell in enumerate(nb.cells):
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            mime = shown_mime(data)
            if "png" not in broken and mime == "image/png":
                data["image/png"] = base64.b64encode(b"not a png at all").decode()
                broken["png"] = index
            elif "table" not in broken and mime == "text/html" and "<table" in data["text/html"]:
                data["text/plain"] = data.pop("text/html")  # the HTML shown as text
                broken["table"] = index
            elif "repr" not in broken and mime == "text/markdown":
                out["data"] = {"text/plain": "VBox(children=(HTML(value='answer'), Output()))"}
                broken["repr"] = index
            elif "widget" not in broken and mime == "text/markdown" and not MD_TABLE_RULE.search(data[mime]):
                view = {"model_id": "0" * 32, "version_major": 2, "version_minor": 0}  # a model saved nowhere
                out["data"] = {WIDGET_VIEW: view, "text/plain": "  0%|          | 0/64 [00:00<?, ?req/s]"}
                broken["widget"] = index
            elif "stderr" not in broken and out.output_type == "stream" and out.name == "stdout":
                out.name = "stderr"
                broken["stderr"] = index
            elif "areas" not in broken and out.output_type == "execute_result" and index not in broken.values():
                cell.outputs.append(copy.deepcopy(out))
                broken["areas"] = index
                break
    return broken


def test_checker_flags_each_kind_of_broken_output(
    reader: Any, no_kernel_lab: JupyterServer, shots: Path, tmp_path: Path
) -> None:
    source = next(p for p in NOTEBOOKS if p.name == "01-quickstart.ipynb")
    nb = nbformat.read(source, as_version=4)
    mutated = copy.deepcopy(nb)
    broken = _break(mutated)
    assert set(broken) == {"png", "table", "repr", "stderr", "areas", "widget"}, broken
    nbformat.write(mutated, no_kernel_lab.root / "broken.ipynb")
    dom = open_and_read(reader, no_kernel_lab, "broken.ipynb", len(nb.cells), shots / "broken")
    found = problems(nb, dom)  # the page of the broken copy against the notebook as committed
    hints = {"png": "PNGs", "table": "tables", "repr": "a repr shown", "stderr": "stderr", "areas": "output areas"}
    widget = broken.pop("widget")
    for kind, index in broken.items():
        assert any(f"cell {index}: " in line and hints[kind] in line for line in found), (kind, index, found)
    assert len(found) == len(broken), found
    # a widget saved without a static copy: flagged against the broken notebook itself
    own = problems(mutated, dom)
    assert any(line.startswith(f"cell {widget}: a widget shown as its text/plain repr") for line in own), own
