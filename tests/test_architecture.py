"""Layering (R1), quarantined imports (R2), one reader of the environment (R11), size limits (R4)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "nbllm"

# layer of each top-level module/package of nbllm (lower may not import higher)
LAYERS = {
    "_version": 0,
    "errors": 0,
    "config": 0,
    "schema": 0,
    "duration": 0,
    "options": 0,
    "humanize": 0,
    "system": 0,
    "store": 1,
    "engine": 1,
    "prompt": 1,
    "scheduler": 2,
    "runtime": 2,
    "placement": 2,
    "service": 2,
    "server": 3,
    "client": 3,
    "backends": 3,
    "benchmark": 3,
    "cli": 3,
    "notebook": 3,
    "__main__": 4,
    "__init__": 4,
}
# edges that may use other edges: the CLI and the notebook drive servers and clients
EDGE_USES = {
    "cli": ("client", "server", "backends", "benchmark"),
    "notebook": ("client", "server", "backends", "benchmark"),
    "benchmark": ("backends",),
}
# third-party modules and the only places allowed to import them
QUARANTINE = {
    "llama_cpp": ("engine/llama/", "engine/grammar.py", "engine/quantize.py"),
    "starlette": ("server/",),
    "fastapi": ("server/",),
    "uvicorn": ("server/", "cli/serve.py"),
    "click": ("cli/",),
    "IPython": ("notebook/",),
    "ipywidgets": ("notebook/",),
    "traitlets": ("notebook/",),
    "httpx": (
        "client.py",
        "store/pull.py",
        "store/registry.py",
        "store/transfer.py",
        "backends/",
        "benchmark/runner.py",
    ),
    "httpx_sse": ("backends/",),
    "huggingface_hub": ("store/hf.py",),
}


def _modules() -> list[Path]:
    return sorted(p for p in PKG.rglob("*.py"))


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return names


def _layer(path: Path) -> int:
    rel = path.relative_to(PKG)
    return LAYERS[rel.parts[0].removesuffix(".py")]


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PKG)))
def test_imports_respect_layers(path: Path) -> None:
    own = _layer(path)
    rel = str(path.relative_to(PKG))
    for name in _imports(path):
        parts = name.split(".")
        if parts[0] == "nbllm" and len(parts) > 1:
            target = LAYERS[parts[1]]
            assert target <= own, f"{rel} (layer {own}) imports {name} (layer {target})"
            edge = rel.split("/")[0].removesuffix(".py")
            if own == 3 and target == 3 and parts[1] != edge:
                assert parts[1] in EDGE_USES.get(edge, ()), f"{rel} imports another edge: {name}"
        root = parts[0]
        if root in QUARANTINE:
            assert rel.startswith(QUARANTINE[root]), f"{rel} imports {root}; allowed only in {QUARANTINE[root]}"


def test_only_config_reads_the_environment() -> None:
    offenders = []
    for path in _modules():
        text = path.read_text()
        rel = str(path.relative_to(PKG))
        if ("os.environ" in text or "os.getenv" in text) and rel != "config.py":
            offenders.append(rel)
    assert offenders == []


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PKG)))
def test_size_limits(path: Path) -> None:
    lines = path.read_text().splitlines()
    assert len(lines) <= 600, f"{path.name} has {len(lines)} lines (hard limit 600)"
    tree = ast.parse("\n".join(lines))
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            length = (node.end_lineno or node.lineno) - node.lineno + 1
            assert length <= 100, f"{path.name}:{node.name} is {length} lines (hard cap 100)"
