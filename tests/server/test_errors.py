"""One renderer of every error body: the shape follows the route family (Ollama, OpenAI, registry)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from nbllm.config import Settings
from nbllm.engine.fake import FakeEngine, FakeEngineFactory
from nbllm.errors import ContextLengthExceeded, NbllmError, ServerBusy
from nbllm.runtime import Runtime
from nbllm.server import create_app
from nbllm.server.errors import STATUS, render_error, status_for

REGISTRY_VERSION = ("docker-distribution-api-version", "registry/2.0")


def _openai(message: str, kind: str, code: str | None = None) -> dict[str, object]:
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


def test_a_use_case_error_takes_the_shape_of_its_route_family(app_client: TestClient) -> None:
    ollama = app_client.post("/api/show", json={"model": "nothing"})
    assert ollama.status_code == 404 and ollama.json() == {"error": "model 'nothing' not found"}
    openai = app_client.post(
        "/v1/chat/completions", json={"model": "nothing", "messages": [{"role": "user", "content": "hi"}]}
    )
    assert openai.status_code == 404 and openai.json()["error"]["type"] == "not_found_error"
    assert set(openai.json()["error"]) == {"message", "type", "param", "code"}
    registry = app_client.get("/v2/library/nothing/tags/list")
    assert registry.status_code == 404 and registry.headers[REGISTRY_VERSION[0]] == REGISTRY_VERSION[1]
    assert registry.json() == {
        "errors": [
            {
                "code": "NAME_UNKNOWN",
                "message": "repository name not known to registry",
                "detail": {"name": "library/nothing"},
            }
        ]
    }


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/api/nowhere", {"error": "404 page not found"}),
        ("/v1/nowhere", _openai("404 page not found", "not_found_error")),
        ("/v2/a/b/nowhere", {"errors": [{"code": "UNSUPPORTED", "message": "404 page not found", "detail": None}]}),
    ],
)
def test_routing_errors_take_the_shape_of_their_family(app_client: TestClient, path: str, body: object) -> None:
    resp = app_client.get(path)
    assert resp.status_code == 404 and resp.json() == body


def test_validation_errors_take_the_shape_of_their_family(app_client: TestClient) -> None:
    ollama = app_client.post("/api/chat", content=b"[]")
    assert ollama.status_code == 400 and ollama.json() == {"error": "invalid request body: expected a JSON object"}
    openai = app_client.post("/v1/chat/completions", content=b"[]")
    assert openai.status_code == 400
    assert openai.json() == _openai("invalid request body: expected a JSON object", "invalid_request_error")


@pytest.fixture
def keyed(settings: Settings, fake_factory: FakeEngineFactory) -> Iterator[TestClient]:
    keyed_settings = settings.model_copy(update={"api_key": SecretStr("k"), "max_request_size": 64})
    runtime = Runtime.from_settings(keyed_settings, engine_factory=fake_factory)
    with TestClient(create_app(runtime)) as client:
        yield client
    runtime.close()


def test_the_security_middleware_answers_in_the_same_shapes(keyed: TestClient) -> None:
    ollama = keyed.get("/api/tags")
    assert ollama.status_code == 401 and set(ollama.json()) == {"error"} and "NBLLM_API_KEY" in ollama.json()["error"]
    openai = keyed.get("/v1/models").json()["error"]
    assert openai["type"] == "invalid_request_error" and openai["code"] == "invalid_api_key"
    registry = keyed.get("/v2/").json()["errors"][0]
    assert registry["code"] == "UNAUTHORIZED" and "NBLLM_API_KEY" in registry["message"]
    big = keyed.post("/v1/chat/completions", content=b"x" * 100, headers={"Authorization": "Bearer k"})
    assert big.status_code == 413 and big.json()["error"]["type"] == "invalid_request_error"
    big = keyed.put("/v2/library/m/manifests/t", content=b"x" * 100, headers={"Authorization": "Bearer k"})
    assert big.status_code == 413 and big.json()["errors"][0]["code"] == "SIZE_INVALID"


def test_every_status_of_the_table_renders_in_every_family() -> None:
    for cls, status in STATUS.items():
        exc = cls("boom")
        assert status_for(exc) == status
        for path, read in (
            ("/api/x", lambda b: b["error"]),
            ("/v1/x", lambda b: b["error"]["message"]),
            ("/v2/x", lambda b: b["errors"][0]["message"]),
        ):
            resp = render_error(path, exc)
            assert resp.status_code == status and read(json.loads(bytes(resp.body))) == "boom"


@pytest.mark.parametrize(
    ("exc", "status"), [(ContextLengthExceeded(9, 4), 400), (ServerBusy("queue full"), 503), (NbllmError("x"), 500)]
)
def test_a_failure_mid_stream_carries_its_status_as_ollama_writes_it(
    app_client: TestClient, monkeypatch: pytest.MonkeyPatch, exc: NbllmError, status: int
) -> None:
    original = FakeEngine._emit

    def broken(self, *args, **kwargs) -> Iterator:  # type: ignore[no-untyped-def]
        for i, event in enumerate(original(self, *args, **kwargs)):
            if i == 1:
                raise exc
            yield event

    monkeypatch.setattr(FakeEngine, "_emit", broken)
    resp = app_client.post("/api/generate", json={"model": "tiny", "prompt": "a longer prompt"})
    last = json.loads(resp.text.splitlines()[-1])
    assert resp.status_code == 200 and last == {"error": exc.message, "status": status}


def test_an_unexpected_exception_is_a_500_in_the_family_shape() -> None:
    resp = render_error("/v1/chat/completions", RuntimeError("kaput"))
    body = json.loads(bytes(resp.body))
    assert resp.status_code == 500 and body["error"]["type"] == "api_error"
    assert body["error"]["message"] == "internal error: RuntimeError: kaput"
