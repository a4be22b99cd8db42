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
    "httpx": ("client.py", "remote/", "backends/", "benchmark/runner.py"),
    "httpx_sse": ("backends/",),
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


# ---------------------------------------------------------------- store, engine and prompt stand apart

# the three packages of layer 1 share only layers 0 (errors, config, schema, ...); the service joins them
INDEPENDENT = ("store", "engine", "prompt")


@pytest.mark.parametrize(
    "path", [p for p in _modules() if p.relative_to(PKG).parts[0] in INDEPENDENT], ids=lambda p: str(p.relative_to(PKG))
)
def test_store_engine_and_prompt_do_not_import_each_other(path: Path) -> None:
    own = path.relative_to(PKG).parts[0]
    for name in _imports(path):  # function-level imports included
        parts = name.split(".")
        if parts[0] == "nbllm" and len(parts) > 1 and parts[1] in INDEPENDENT:
            assert parts[1] == own, f"{path.relative_to(PKG)} imports {name}: {own} may not use {parts[1]}"


# ---------------------------------------------------------------- no import cycles

# cycles that exist today, each with why and what removes it; nothing else may join or add one
KNOWN_CYCLES: dict[frozenset[str], str] = {}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PKG.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _runtime_imports(node: ast.AST, known: set[str]) -> set[str]:
    """nbllm modules imported anywhere under ``node`` (module and function level), not under TYPE_CHECKING.

    ``from nbllm import service`` imports the module nbllm.service, not the package's ``__init__``.
    """
    found: set[str] = set()
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and _is_type_checking(child.test):
            found |= _runtime_imports(ast.Module(body=child.orelse, type_ignores=[]), known)
            continue
        if isinstance(child, ast.Import):
            found |= {a.name for a in child.names if a.name in known}
        elif isinstance(child, ast.ImportFrom) and child.module and child.level == 0:
            subs = {f"{child.module}.{a.name}" for a in child.names}
            found |= subs & known if subs <= known else ({child.module} | subs) & known
        found |= _runtime_imports(child, known)
    return found


def _import_graph() -> dict[str, set[str]]:
    paths = {_module_name(p): p for p in _modules()}
    known = set(paths)
    return {name: _runtime_imports(ast.parse(path.read_text()), known) - {name} for name, path in paths.items()}


def _cycles(graph: dict[str, set[str]]) -> list[frozenset[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[frozenset[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = {stack.pop()}
            while v not in component:
                component.add(stack.pop())
            if len(component) > 1:
                found.append(frozenset(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_cycle_finder_sees_function_level_imports() -> None:
    source = "if TYPE_CHECKING:\n    import b\nelse:\n    import d\ndef f():\n    import c\n"
    assert _runtime_imports(ast.parse(source), {"b", "c", "d"}) == {"c", "d"}
    assert _cycles({"a": {"c"}, "b": set(), "c": {"a"}}) == [frozenset({"a", "c"})]


def test_no_import_cycles() -> None:
    unexplained = [sorted(c) for c in _cycles(_import_graph()) if c not in KNOWN_CYCLES]
    assert unexplained == [], "modules that import each other (at module or function level)"


# ---------------------------------------------------------------- modules over the soft size limit

SOFT_LIMIT = 400
# every module over SOFT_LIMIT lines, and why it is still one module
LONG_MODULES: dict[str, str] = {
    "config.py": "one frozen Settings object with a field per environment variable, and its validators",
    "engine/llama/batching.py": (
        "the decode loop's one state machine (admission, batching, speculative verification, emission share "
        "the slots' state); a request's hand-off to its consumer is engine/llama/request.py"
    ),
    "server/feed.py": (
        "one stream's state machine between the decode thread and the event loop: who owns the generator, who "
        "writes to the socket, and the lock and flags that hand both over (docs/streaming.md, the state machine)"
    ),
}


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PKG)))
def test_a_long_module_has_a_written_reason(path: Path) -> None:
    rel = str(path.relative_to(PKG))
    lines = len(path.read_text().splitlines())
    assert lines <= SOFT_LIMIT or LONG_MODULES.get(rel, "").strip(), (
        f"{rel} has {lines} lines (soft limit {SOFT_LIMIT}): split it, or say why not in LONG_MODULES"
    )


def test_every_long_module_reason_is_still_needed() -> None:
    """A reason whose module was split, shortened or removed goes too, so the table stays true."""
    stale = [
        rel
        for rel in LONG_MODULES
        if not (PKG / rel).is_file() or len((PKG / rel).read_text().splitlines()) <= SOFT_LIMIT
    ]
    assert stale == [], "LONG_MODULES entries for modules now within the soft limit (or gone)"
