"""docs/api.md against the code: every request model and its fields, every route, and Ollama's endpoints.

Each ``Request model: `X``` section's table must list every field of ``X`` (by its wire name), and a
field documented as supported must be one the model has; every route of the app (each method) must
be in the endpoint table, and every endpoint documented as served must be a route.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
from pathlib import Path

import pytest
from pydantic import BaseModel

import nbllm.schema
from nbllm.config import Settings
from nbllm.engine.fake import FakeEngineFactory
from nbllm.runtime import Runtime
from nbllm.server import create_app
from nbllm.server.app import _flatten

DOC = Path(__file__).resolve().parents[1] / "docs" / "api.md"
STATUSES = {"supported", "extension", "refused", "ignored", "n/a"}
SERVED = {"supported", "extension"}
OLLAMA_ENDPOINTS = [  # Ollama v0.33's route table (server/routes.go), /api and /v1
    ("GET", "/"),
    ("GET", "/api/version"),
    ("GET", "/api/status"),
    ("POST", "/api/generate"),
    ("POST", "/api/chat"),
    ("POST", "/api/embed"),
    ("POST", "/api/embeddings"),
    ("POST", "/api/pull"),
    ("POST", "/api/push"),
    ("POST", "/api/create"),
    ("HEAD", "/api/blobs/{digest}"),
    ("POST", "/api/blobs/{digest}"),
    ("POST", "/api/copy"),
    ("DELETE", "/api/delete"),
    ("POST", "/api/show"),
    ("GET", "/api/tags"),
    ("GET", "/api/ps"),
    ("POST", "/api/me"),
    ("POST", "/api/signout"),
    ("DELETE", "/api/user/keys/{encodedKey}"),
    ("POST", "/api/experimental/web_search"),
    ("POST", "/api/experimental/web_fetch"),
    ("GET", "/api/experimental/model-recommendations"),
    ("POST", "/v1/chat/completions"),
    ("POST", "/v1/completions"),
    ("POST", "/v1/embeddings"),
    ("POST", "/v1/responses"),
    ("POST", "/v1/audio/transcriptions"),
    ("GET", "/v1/models"),
    ("GET", "/v1/models/{name:path}"),
    ("POST", "/v1/messages"),
]


def _rows(text: str) -> list[list[str]]:
    """The body rows of the markdown tables in ``text``, each cell stripped (and unquoted of backticks)."""
    rows = []
    for line in text.splitlines():
        if not line.startswith("|") or set(line) <= set("|-: "):
            continue
        cells = [c.strip().strip("`") for c in line.strip().strip("|").split("|")]
        if cells[0] in ("Field", "Method"):
            continue
        rows.append(cells)
    return rows


def _sections() -> dict[str, list[list[str]]]:
    """Each documented request model's table rows."""
    out: dict[str, list[list[str]]] = {}
    for section in DOC.read_text().split("\n### ")[1:]:
        named = re.search(r"^Request model: `(\w+)`$", section, re.MULTILINE)
        if named:
            assert named.group(1) not in out, f"{named.group(1)} documented twice"
            out[named.group(1)] = _rows(section)
    return out


def _request_models() -> dict[str, type[BaseModel]]:
    """Every request body model of the schema package (the classes named ``*Request``)."""
    found: dict[str, type[BaseModel]] = {}
    for info in pkgutil.iter_modules(nbllm.schema.__path__):
        module = importlib.import_module(f"nbllm.schema.{info.name}")
        for name, cls in vars(module).items():
            if (
                inspect.isclass(cls)
                and issubclass(cls, BaseModel)
                and cls.__module__ == module.__name__
                and name.endswith("Request")
                and not name.startswith("_")
            ):
                found[name] = cls
    return found


def _wire_names(model: type[BaseModel]) -> set[str]:
    return {field.alias or name for name, field in model.model_fields.items()}


def _endpoints() -> dict[tuple[str, str], str]:
    """(method, path) of the endpoint table, each with its status."""
    table = DOC.read_text().split("## Endpoints", 1)[1].split("\n## ", 1)[0]
    out = {}
    for methods, path, status, *_ in _rows(table):
        for method in methods.split(","):
            out[(method.strip(), path)] = status
    return out


def test_every_request_model_is_documented() -> None:
    assert set(_sections()) == set(_request_models())


@pytest.mark.parametrize("name", sorted(_request_models()))
def test_fields_of_the_model_and_the_doc_agree(name: str) -> None:
    model, rows = _request_models()[name], _sections()[name]
    documented = {row[0]: row[1] for row in rows}
    assert all(status in STATUSES for status in documented.values()), documented
    missing = _wire_names(model) - set(documented)
    assert not missing, f"fields of {name} missing from docs/api.md: {sorted(missing)}"
    served = {field.split(".")[0].split("[")[0] for field, status in documented.items() if status == "supported"}
    stale = served - _wire_names(model)
    assert not stale, f"docs/api.md says {name} supports fields it does not have: {sorted(stale)}"


def test_every_route_is_documented_and_every_served_endpoint_is_a_route(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "home", models=tmp_path / "models", metrics=True)
    runtime = Runtime.from_settings(settings, engine_factory=FakeEngineFactory())
    try:
        app = create_app(runtime)
        routes = {(method, route.path) for route in _flatten(app.router.routes) for method in route.methods or ()}
    finally:
        runtime.close()
    documented = _endpoints()
    assert all(status in STATUSES for status in documented.values()), documented
    assert not routes - set(documented), f"routes missing from docs/api.md: {sorted(routes - set(documented))}"
    served = {endpoint for endpoint, status in documented.items() if status in SERVED}
    assert not served - routes, f"docs/api.md lists endpoints that are not routes: {sorted(served - routes)}"
    unserved = {endpoint for endpoint, status in documented.items() if status not in SERVED}
    assert not unserved & routes, f"docs/api.md says these are not served: {sorted(unserved & routes)}"


def test_every_ollama_endpoint_has_a_status() -> None:
    documented = _endpoints()
    assert [e for e in OLLAMA_ENDPOINTS if e not in documented] == []
