"""A lone surrogate (JSON's ``"\\ud800"``, which no UTF-8 can encode) in any string of any request body
is a 400 naming the field, never a 500: checked once, when the body is validated (``UnicodeChecked``).

The route/field pairs are built from the app's own OpenAPI document, so a new route or field is
covered without touching this file: for every string a body schema allows (keys of open objects and
``Any`` values included), a body that is otherwise minimal and valid carries the surrogate there.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from nbllm.runtime import Runtime
from nbllm.schema.common import find_lone_surrogate
from nbllm.server import create_app
from nbllm.server.errors import ErrorJSONResponse

LONE = "\ud800"

Schema = dict[str, Any]


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """A TestClient that reports 500s as answers (not as exceptions), over FakeEngines with ``tiny``."""
    from nbllm.config import Settings
    from nbllm.engine.fake import FakeEngineFactory
    from tests.conftest import CHATML
    from tests.support.models import install_model
    from tests.support.tiny_gguf import write_tiny_gguf

    root: Path = tmp_path_factory.mktemp("surrogates")
    settings = Settings(home=root / "home", models=root / "models", package_index=("http://127.0.0.1:9/",))
    runtime = Runtime.from_settings(settings, engine_factory=FakeEngineFactory())
    install_model(runtime.store, "tiny", write_tiny_gguf(root / "tiny.gguf"), template=CHATML)
    with TestClient(create_app(runtime), raise_server_exceptions=False) as test_client:
        yield test_client
    runtime.close()


class _Walker:
    """Minimal values of a schema, and every way to put a lone surrogate into one of its strings."""

    def __init__(self, doc: Schema) -> None:
        self.doc = doc

    def resolve(self, schema: Schema) -> Schema:
        while "$ref" in schema:
            node: Any = self.doc
            for part in schema["$ref"].removeprefix("#/").split("/"):
                node = node[part]
            schema = node
        return schema

    def options(self, schema: Schema) -> list[Schema]:
        schema = self.resolve(schema)
        alternatives = schema.get("anyOf") or schema.get("oneOf")
        if alternatives:
            return [o for alt in alternatives for o in self.options(alt)]
        return [schema]

    def minimal(self, schema: Schema) -> Any:
        for option in self.options(schema):
            kind = option.get("type")
            if kind == "null":
                continue
            if "enum" in option or "const" in option:
                return option.get("const", (option.get("enum") or [None])[0])
            if kind == "object" or "properties" in option:
                props = option.get("properties", {})
                return {name: self.minimal(props[name]) for name in option.get("required", []) if name in props}
            return {"array": [], "string": "tiny", "integer": 1, "number": 1.0, "boolean": False}.get(kind, "tiny")
        return None

    def surrogates(self, schema: Schema) -> Iterator[tuple[str, Any]]:
        """``(field, value)``: a value of ``schema`` whose string at ``field`` is a lone surrogate."""
        seen: set[str] = set()
        for option in self.options(schema):
            for where, value in self._one(option):
                if where not in seen:
                    seen.add(where)
                    yield where, value

    def _one(self, schema: Schema) -> Iterator[tuple[str, Any]]:
        kind = schema.get("type")
        if kind in (None, "string") and not schema.get("properties"):  # a string, or Any (which takes one)
            yield "", LONE
        if kind == "object" or "properties" in schema:
            base = self.minimal(schema) or {}
            for name, prop in schema.get("properties", {}).items():
                for where, value in self.surrogates(prop):
                    yield _join(name, where), {**base, name: value}
            extra = schema.get("additionalProperties")
            if extra:  # an open object: its keys are strings too
                extra_schema: Schema = extra if isinstance(extra, dict) else {}
                yield "<key>", {**base, LONE: self.minimal(extra_schema) or "x"}
                for where, value in self.surrogates(extra_schema):
                    yield _join("<value>", where), {**base, "k": value}
        if kind == "array":
            for where, value in self.surrogates(schema.get("items", {})):
                yield _join("0", where), [value]


def _join(name: str, where: str) -> str:
    return f"{name}.{where}" if where else name


def _cases(app_doc: Schema) -> list[tuple[str, str, str, bytes]]:
    """``(method, path, field, body)`` for every JSON body of the OpenAPI document and every string in it."""
    walker = _Walker(app_doc)
    cases = []
    for path, item in app_doc["paths"].items():
        for method, operation in item.items():
            body = operation.get("requestBody", {}).get("content", {}).get("application/json")
            if body is None:
                continue
            for field, value in walker.surrogates(body["schema"]):
                if field:  # (the body itself being a string is not a request any route takes)
                    cases.append((method.upper(), path, field, json.dumps(value).encode()))
    return cases


def test_every_string_field_of_every_route_answers_400(client: TestClient) -> None:
    cases = _cases(client.app.openapi())  # type: ignore[attr-defined]
    routes = {(method, path) for method, path, _, _ in cases}
    assert {("POST", "/api/chat"), ("POST", "/v1/chat/completions"), ("DELETE", "/api/delete")} <= routes
    assert len(routes) >= 13 and len(cases) >= 100, (len(routes), len(cases))  # the walk found the API
    failures = []
    for method, path, field, body in cases:
        assert b"\\ud800" in body  # raw in the JSON text, as a client sends it
        resp = client.request(method, path, content=body)
        error = resp.json().get("error") if resp.headers.get("content-type") == "application/json" else None
        message = error.get("message") if isinstance(error, dict) else error
        if resp.status_code != 400 or not message or "Unicode" not in message:
            failures.append((method, path, field, resp.status_code, resp.text[:200]))
    server_errors = sum(1 for failure in failures if failure[3] >= 500)
    print(f"\nlone surrogates: {len(cases)} route/field pairs over {len(routes)} routes: {server_errors} 5xx, ", end="")
    print(f"{len(failures)} not a 400 naming the field")
    assert not failures, failures[:20]


@pytest.mark.parametrize("raw", [b'"\\ud800"', b'"\\udfff tail"', b'"\xed\xa0\x80"', b'"ok \\ud83d"'])
def test_each_spelling_of_a_lone_surrogate_is_refused(client: TestClient, raw: bytes) -> None:
    body = b'{"model": "tiny", "messages": [{"role": "user", "content": ' + raw + b"}], " + b'"stream": false}'
    resp = client.post("/api/chat", content=body)
    assert resp.status_code == 400
    assert resp.json() == {
        "error": "invalid value for field 'messages.0.content': not valid Unicode (a lone surrogate code point)"
    }


def test_a_surrogate_pair_is_valid_text(client: TestClient) -> None:
    body = b'{"model": "tiny", "prompt": "a pair: \\ud83d\\ude00", "stream": false}'
    resp = client.post("/api/generate", content=body)
    assert resp.status_code == 200 and resp.json()["done"] is True


def test_openai_routes_answer_in_openai_shape(client: TestClient) -> None:
    body = b'{"model": "tiny", "messages": [{"role": "user", "content": "\\ud800"}]}'
    resp = client.post("/v1/chat/completions", content=body)
    assert resp.status_code == 400
    error = resp.json()["error"]
    assert error["type"] == "invalid_request_error" and "messages.0.content" in error["message"]


def test_an_error_message_quoting_a_surrogate_still_encodes() -> None:
    resp = ErrorJSONResponse({"error": f"model 'x{LONE}y' not found"}, status_code=404)
    assert json.loads(resp.body) == {"error": "model 'x\ufffdy' not found"}  # as Go's encoding/json writes it
    assert find_lone_surrogate({"a": [{"b": f"{LONE}"}]}) == "a.0.b"


def test_a_registry_manifest_with_a_lone_surrogate_is_refused(client: TestClient) -> None:
    """``PUT /v2/.../manifests/...`` is outside the OpenAPI document; pydantic's own JSON parser refuses it."""
    manifest = b'{"schemaVersion": 2, "mediaType": "\\ud800", "config": {}, "layers": []}'
    resp = client.put("/v2/library/tiny/manifests/latest", content=manifest)
    assert resp.status_code == 400 and resp.json()["errors"][0]["code"] == "MANIFEST_INVALID"
