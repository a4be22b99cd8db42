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
    "remote": 2,
    "scheduler": 2,
    "runtime": 2,
    "placement": 2,
    "service": 2,
    "server": 3,
    "client": 3,
    "cli": 3,
    "notebook": 3,
    "__main__": 4,
    "__init__": 4,
}
# edges that may use other edges: the CLI and the notebook drive servers and clients
EDGE_USES = {"cli": ("client", "server"), "notebook": ("client", "server")}
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
    "httpx": ("client.py", "remote/"),
    "huggingface_hub": ("remote/hf.py",),
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


# --- the store is pure, network code lives in nbllm.remote (issue #22 item 2) -------------------
HTTP_CLIENTS = ("httpx", "urllib.request", "requests", "http.client", "huggingface_hub", "urllib3", "aiohttp")
REMOTE_MAY_USE = {"remote", "store"} | {name for name, layer in LAYERS.items() if layer == 0}


def test_store_is_offline_and_remote_sits_between_store_and_service() -> None:
    """``nbllm.store`` imports no HTTP client (nor ``nbllm.remote``); ``nbllm.remote`` builds on the
    store and the base layer only, and only service-layer modules and edges use it."""
    store_offenders, remote_offenders, users = [], [], set()
    for path in _modules():
        rel = str(path.relative_to(PKG))
        for name in _imports(path):
            if rel.startswith("store/") and (name.startswith(HTTP_CLIENTS) or name.startswith("nbllm.remote")):
                store_offenders.append(f"{rel}: {name}")
            parts = name.split(".")
            if rel.startswith("remote/") and parts[0] == "nbllm" and parts[1:2] and parts[1] not in REMOTE_MAY_USE:
                remote_offenders.append(f"{rel}: {name}")
            if name.startswith("nbllm.remote") and not rel.startswith("remote/"):
                users.add(rel.split("/")[0])
    assert store_offenders == []
    assert remote_offenders == []
    assert all(LAYERS[user.removesuffix(".py")] >= LAYERS["remote"] for user in users), users
    assert LAYERS["store"] < LAYERS["remote"] <= LAYERS["service"]


def _module_name(path: Path) -> str:
    name = ".".join(("nbllm", *path.relative_to(PKG).with_suffix("").parts))
    return name.removesuffix(".__init__")


def _runtime_imports(path: Path, modules: set[str]) -> set[str]:
    """The modules a module imports when it runs, function-level imports included (not TYPE_CHECKING's);
    ``from package import module`` is an import of the module, not of the package's ``__init__``."""
    tree = ast.parse(path.read_text())
    typing_only = {
        id(inner)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        for inner in ast.walk(node)
    }
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                inner = f"{node.module}.{alias.name}"
                found.add(inner if inner in modules else node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
    return found


def test_no_import_cycles() -> None:
    """No two modules import each other, directly or around a loop (issue #22 item 5: cli/session <-> cli/slash)."""
    modules = {_module_name(p): p for p in _modules()}
    graph = {n: {m for m in _runtime_imports(p, set(modules)) if m in modules and m != n} for n, p in modules.items()}
    cycles = []
    for start in graph:  # a path from a module's imports back to itself
        seen, todo = set(), list(graph[start])
        while todo:
            name = todo.pop()
            if name == start:
                cycles.append(start)
                break
            if name not in seen:
                seen.add(name)
                todo.extend(graph[name])
    assert cycles == []
