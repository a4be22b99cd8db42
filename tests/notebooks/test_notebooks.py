"""The walkthrough notebooks as files: saved with their outputs, small, tagged for nbval, linked correctly.

Running them is ``scripts/test``'s nbval step (``pytest -p tests.notebooks.harness --nbval notebooks``);
these checks are what can go wrong in the files themselves.
"""

from __future__ import annotations

import configparser
import re
from pathlib import Path

import nbformat
import pytest

from tests.notebooks.harness import NOTEBOOKS, REPO, SANITIZE

PATHS = sorted(NOTEBOOKS.glob("*.ipynb"))
NBVAL_TAGS = {"nbval-ignore-output", "nbval-skip", "nbval-check-output", "raises-exception"}
MAX_BYTES = 1_000_000


def test_the_five_walkthroughs_exist() -> None:
    names = [p.name for p in PATHS]
    for prefix in ("01-quickstart", "02-rest-api-walkthrough", "03-compare-models", "04-tool-calling"):
        assert any(n.startswith(prefix) for n in names), names
    assert "05-how-chat-templates-work.ipynb" in names


@pytest.mark.parametrize("path", PATHS, ids=lambda p: p.name)
def test_saved_with_outputs_and_no_errors(path: Path) -> None:
    """Executed top to bottom (``python -m tests.notebooks.execute``), so GitHub shows every result."""
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata["kernelspec"]["name"] == "python3"
    code = [c for c in nb.cells if c.cell_type == "code"]
    counts = [c.execution_count for c in code]
    assert None not in counts, f"{path.name}: cells not executed: {[i for i, n in enumerate(counts) if n is None]}"
    assert counts == list(range(1, len(code) + 1)), f"{path.name}: not run in order in one kernel"
    errors = [o for c in code for o in c.outputs if o.output_type == "error"]
    assert not errors, f"{path.name} was saved with an error: {errors[0].ename}: {errors[0].evalue}"
    assert any(c.outputs for c in code)


@pytest.mark.parametrize("path", PATHS, ids=lambda p: p.name)
def test_small_enough_to_read_on_github(path: Path) -> None:
    assert path.stat().st_size < MAX_BYTES, f"{path.name} is {path.stat().st_size} bytes"


@pytest.mark.parametrize("path", PATHS, ids=lambda p: p.name)
def test_nbval_markers_are_cell_tags(path: Path) -> None:
    """Tags, not ``# NBVAL_*`` comments (the first line of a ``%%chat`` cell must be the magic)."""
    nb = nbformat.read(path, as_version=4)
    for i, cell in enumerate(nb.cells):
        tags = set(cell.metadata.get("tags", []))
        assert tags <= NBVAL_TAGS, f"{path.name} cell {i}: unknown tags {tags - NBVAL_TAGS}"
        assert "NBVAL_" not in cell.source, f"{path.name} cell {i}: use a cell tag instead of an NBVAL comment"
        if cell.cell_type == "code" and cell.source.lstrip().startswith(("%%chat", "%%generate")):
            assert "nbval-ignore-output" in tags or "nbval-skip" in tags, f"{path.name} cell {i}: answers vary"


@pytest.mark.parametrize("path", PATHS, ids=lambda p: p.name)
def test_some_outputs_are_checked(path: Path) -> None:
    """Deterministic outputs (rendered prompts, JSON with sanitized times) stay compared, not all ignored."""
    nb = nbformat.read(path, as_version=4)
    checked = [c for c in nb.cells if c.cell_type == "code" and c.outputs and not c.metadata.get("tags", [])]
    assert checked, f"{path.name}: every output is ignored by nbval"


@pytest.mark.parametrize("path", PATHS, ids=lambda p: p.name)
def test_links_to_files_of_the_repository_exist(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type != "markdown":
            continue
        for target in re.findall(r"\]\(([^)\s#]+)(?:#[^)]*)?\)", cell.source):
            if "://" not in target:
                assert (path.parent / target).exists(), f"{path.name} links to missing {target}"


def test_sanitizers_are_valid_regexes_nbval_can_read() -> None:
    """nbval reads ``regex:``/``replace:`` line pairs; each must compile and each section must have both."""
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(SANITIZE)
    assert parser.sections()
    for section in parser.sections():
        re.compile(parser[section]["regex"])
        assert "replace" in parser[section]
    text = SANITIZE.read_text()
    pairs = re.findall(r"^regex: (.*)$\n^replace: (.*)$", text, flags=re.MULTILINE)
    assert len(pairs) == len(parser.sections())


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('"created_at":"2026-11-24T21:46:27.056195Z"', '"created_at":"TIMESTAMP"'),
        ("modified 2024-09-26T12:14:31.129442163+08:00", "modified TIMESTAMP"),
        ('"eval_duration": 42740000,', '"eval_duration": N,'),
        (
            "smollm2:135m    aa3d6c4c4d78    98 MB     10 seconds ago",
            "smollm2:135m    aa3d6c4c4d78    98 MB     SOME TIME ago",
        ),
        ("4 minutes from now", "SOME TIME from now"),
        ("FROM /tmp/nbllm-notebooks-a_ffg6x6/nbllm/models/blobs/x", "FROM TMPDIR/nbllm/models/blobs/x"),
        ("http://127.0.0.1:38685/api", "http://127.0.0.1:PORT/api"),
    ],
)
def test_sanitizers_mask_what_varies(text: str, expected: str) -> None:
    pairs = re.findall(r"^regex: (.*)$\n^replace: (.*)$", SANITIZE.read_text(), flags=re.MULTILINE)
    for regex, replace in pairs:
        text = re.sub(regex, replace, text)
    assert text == expected


def test_readme_points_to_the_notebooks() -> None:
    assert "notebooks/" in (REPO / "README.md").read_text()


def test_scripts_test_runs_every_notebook_with_nbval() -> None:
    """``.ci/run`` runs ``scripts/test``: its second pytest run executes notebooks/ with nbval and our sanitizers."""
    script = (REPO / "scripts" / "test").read_text().replace("\\\n", " ")  # join continued lines
    command = next(line for line in script.splitlines() if "--nbval" in line)
    for part in ("-p tests.notebooks.harness", "--nbval ", f"--nbval-sanitize-with {SANITIZE.relative_to(REPO)}"):
        assert part in command, part
    assert command.rstrip().endswith(" notebooks") and NOTEBOOKS.is_dir()


def test_the_serving_benchmark_walkthrough_bounds_its_load_and_stops_what_it_starts() -> None:
    """06 sweeps 1-8 users on both models with bounded answers, tags what varies, and stops every server."""
    nb = nbformat.read(NOTEBOOKS / "06-benchmark-servers.ipynb", as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    benches = [c for c in code if "%bench " in c.source]
    assert {m for c in benches for m in ("smollm2:135m", "gemma3:270m") if m in c.source} == {
        "smollm2:135m",
        "gemma3:270m",
    }
    for cell in benches:
        assert "-c 1,2,4,8" in cell.source and re.search(r"--output-len \d\d\b", cell.source), cell.source
        assert "--host {server.url} --host {peer.url}" in cell.source, "nbllm and the peer, the same requests"
        assert "nbval-ignore-output" in cell.metadata.get("tags", []), "timings vary"
    starts = [c for c in code if "start_peer(" in c.source and "def start_peer" not in c.source]
    assert starts and all("nbval-ignore-output" in c.metadata.get("tags", []) for c in starts), "the peer varies"
    stops = sum(c.source.count("peer.stop()") for c in code)
    assert stops == len(starts), "each peer is stopped once its model is done"
    assert "atexit.register" in "".join(c.source for c in code), "and on a failure, when the kernel exits"
    assert code[-2].source.rstrip().endswith("%serve stop")


def test_under_the_harness_a_magic_s_usage_error_fails_its_cell() -> None:
    """A real kernel in the harness's environment: a magic that fails (here ``%bench`` with its arguments wrong)
    leaves an error output, which is what nbval fails a cell on; IPython alone prints it to stderr only."""
    from nbclient import NotebookClient

    from tests.notebooks.harness import notebook_environment

    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell("%load_ext nbllm"),
        nbformat.v4.new_code_cell("%bench smollm2:135m -n 0"),
        nbformat.v4.new_code_cell("print('after')"),
    ]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    with notebook_environment():
        NotebookClient(nb, timeout=120, allow_errors=True).execute()
    failed = [o for o in nb.cells[1].outputs if o.output_type == "error"]
    assert [(o.ename, o.evalue) for o in failed] == [("UsageError", "-n must be at least 1")]
    assert [o.output_type for o in nb.cells[0].outputs + nb.cells[2].outputs] == ["stream"]
