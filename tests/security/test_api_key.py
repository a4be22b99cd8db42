"""NBLLM_API_KEY: every route but ``/`` needs ``Authorization: Bearer <key>``; nbllm's own clients send it."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import ollama
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from nbllm.client import Client
from nbllm.config import Settings
from nbllm.errors import NbllmError
from nbllm.notebook.session import NotebookSession
from nbllm.runtime import Runtime
from nbllm.schema import GenerateRequest
from nbllm.server import BackgroundServer
from tests.cli.support import ServeProcess, free_port, nbllm

KEY = "s3cret-key"
GREEDY = "smollm2-greedy:135m"
_PARAMS = {
    "namespace": "library",
    "model": "tiny",
    "reference": "latest",
    "tag": "latest",
    "digest": "sha256:" + "0" * 64,
    "upload_id": "0" * 32,
    "name:path": "tiny",
}


def every_route(app: FastAPI) -> list[tuple[str, str]]:
    """(method, concrete path) of every route the app serves, hidden ones included."""

    def walk(routes: list[Any]) -> Iterator[Any]:
        for route in routes:
            if hasattr(route, "original_router"):  # FastAPI's included routers
                yield from walk(route.original_router.routes)
            else:
                yield route

    out = []
    for route in walk(list(app.routes)):
        path = re.sub(r"\{([^}]+)\}", lambda m: _PARAMS[m.group(1)], route.path)
        out += [(method, path) for method in sorted(route.methods or ())]
    return out


@pytest.fixture
def keyed(make_client: Callable[..., TestClient]) -> TestClient:
    return make_client(api_key=KEY)


def _assert_401(resp: httpx.Response, method: str, path: str) -> None:
    assert resp.status_code == 401, (method, path, resp.status_code, resp.text)
    assert resp.headers["www-authenticate"].startswith("Bearer")
    if method == "HEAD":
        return
    body = resp.json()
    if path.startswith("/v1/"):
        assert body["error"]["code"] == "invalid_api_key" and "API key" in body["error"]["message"]
    elif path.startswith("/v2/"):
        assert body["errors"][0]["code"] == "UNAUTHORIZED"
    else:
        assert set(body) == {"error"} and "NBLLM_API_KEY" in body["error"]


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer wrong", f"Bearer {KEY}x", f"Basic {KEY}", KEY, "Bearer", f"Bearer {KEY[:-1]}"],
    ids=["none", "wrong", "longer", "basic", "no-scheme", "empty", "prefix"],
)
def test_every_route_but_root_needs_the_key(keyed: TestClient, authorization: str | None) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    routes = every_route(keyed.app)  # type: ignore[arg-type]
    assert len(routes) >= 45
    for method, path in routes:
        resp = keyed.request(method, path, headers=headers, json={"model": "tiny"} if method != "GET" else None)
        if path == "/":
            assert resp.status_code == 200
        else:
            _assert_401(resp, method, path)
    assert keyed.get("/api/tags", headers={"Authorization": f"Bearer {KEY}"}).json()["models"]  # nothing deleted


def test_the_right_key_opens_every_route(keyed: TestClient) -> None:
    for scheme in ("Bearer", "bearer", "BEARER"):
        headers = {"Authorization": f"{scheme} {KEY}"}
        for method, path in every_route(keyed.app):  # type: ignore[arg-type]
            if (method, path) == ("DELETE", "/api/delete"):
                continue
            body = {"model": "tiny", "prompt": "hi", "stream": False}
            if path in ("/api/pull", "/api/push"):  # a registry on a closed loopback port: nothing leaves the machine
                body = {"model": "127.0.0.1:9/library/tiny", "insecure": True, "stream": False}
            resp = keyed.request(method, path, headers=headers, json=body)
            assert resp.status_code != 401, (method, path, resp.text)
    resp = keyed.post("/api/generate", headers=headers, json={"model": "tiny", "prompt": "hi", "stream": False})
    assert resp.status_code == 200 and resp.json()["done"]


def test_without_a_key_nothing_is_asked(app_client: TestClient) -> None:
    assert app_client.get("/api/tags").status_code == 200
    assert app_client.get("/api/tags", headers={"Authorization": "Bearer anything"}).status_code == 200


def test_an_empty_key_means_no_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NBLLM_API_KEY", "  ")
    assert Settings.from_env().api_key is None
    monkeypatch.setenv("NBLLM_API_KEY", f'"{KEY}"')
    key = Settings.from_env().api_key
    assert key is not None and key.get_secret_value() == KEY
    assert KEY not in repr(Settings.from_env())  # never logged


# ── nbllm's own clients over a real server on the real model ─────────────────────────────────────


@pytest.fixture(scope="module")
def keyed_server(real_runtime: Runtime, tmp_path_factory: pytest.TempPathFactory) -> Iterator[BackgroundServer]:
    """A server on the real model's store that requires KEY."""
    home = tmp_path_factory.mktemp("keyed")
    runtime = Runtime.from_settings(Settings(home=home, models=real_runtime.settings.models_dir, api_key=KEY))
    with BackgroundServer(runtime) as server:
        yield server
    runtime.close()


def test_the_python_client_sends_the_key(keyed_server: BackgroundServer, monkeypatch: pytest.MonkeyPatch) -> None:
    with Client(keyed_server.url) as anonymous, pytest.raises(NbllmError, match="API key"):
        anonymous.list_models()
    monkeypatch.setenv("NBLLM_API_KEY", KEY)
    with Client(keyed_server.url) as client:
        assert GREEDY in [m.name for m in client.list_models().models]
        answer = client.generate(
            GenerateRequest(model=GREEDY, prompt="Say hello.", options={"num_predict": 4}), stream=False
        )
        assert answer.done and answer.eval_count


def test_the_official_ollama_client_with_a_header(keyed_server: BackgroundServer) -> None:
    with ollama.Client(host=keyed_server.url) as anonymous, pytest.raises(ollama.ResponseError) as denied:
        anonymous.list()
    assert denied.value.status_code == 401
    with ollama.Client(host=keyed_server.url, headers={"Authorization": f"Bearer {KEY}"}) as client:
        reply = client.chat(GREEDY, messages=[{"role": "user", "content": "Hi"}], options={"num_predict": 4})
    assert reply.done and reply.message.role == "assistant"


def test_the_notebook_session_sends_the_key(keyed_server: BackgroundServer, tmp_path: Path) -> None:
    port = keyed_server.port
    session = NotebookSession(settings=Settings(home=tmp_path, host=f"127.0.0.1:{port}", api_key=KEY))
    anonymous = NotebookSession(settings=Settings(home=tmp_path, host=f"127.0.0.1:{port}"))
    try:
        assert GREEDY in [m.name for m in session.client().list_models().models]
        assert GREEDY in [m.name for m in session.client(keyed_server.url).list_models().models]
        with pytest.raises(NbllmError, match="API key"):
            anonymous.client().list_models()
    finally:
        session.close()
        anonymous.close()


def test_nbllm_serve_and_the_cli_with_a_key(real_runtime: Runtime, tmp_path: Path) -> None:
    host = f"127.0.0.1:{free_port()}"
    env = {"OLLAMA_HOST": host, "OLLAMA_MODELS": str(real_runtime.settings.models_dir), "NBLLM_HOME": str(tmp_path)}
    server = ServeProcess({**env, "NBLLM_API_KEY": KEY}, tmp_path / "serve.log").wait_ready()
    try:
        denied = nbllm("list", env=env)
        assert denied.returncode == 1 and "Error: unauthorized" in denied.stderr, denied.stderr
        assert httpx.get(f"http://{host}/api/tags").status_code == 401
        listed = nbllm("list", env={**env, "NBLLM_API_KEY": KEY})
        assert listed.returncode == 0 and GREEDY in listed.stdout, listed.stderr
        shown = nbllm("show", GREEDY, "--parameters", env={**env, "NBLLM_API_KEY": KEY})
        assert shown.returncode == 0 and "num_predict" in shown.stdout, shown.stderr
    finally:
        server.stop()
