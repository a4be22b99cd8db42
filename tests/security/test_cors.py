"""CORS exactly as Ollama: its built-in origins, OLLAMA_ORIGINS additions and wildcards, 403 for the rest."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient

from nbllm.config import Settings
from nbllm.server.security import DEFAULT_ORIGINS, OriginPolicy

ALLOWED_BY_DEFAULT = [
    "http://localhost",
    "https://localhost",
    "http://localhost:3000",
    "https://localhost:8443",
    "http://127.0.0.1",
    "http://127.0.0.1:5173",
    "https://127.0.0.1:1",
    "http://0.0.0.0",
    "http://0.0.0.0:8080",
    "app://obsidian.md",
    "file://",
    "file:///home/me/page.html",
    "tauri://localhost",
    "vscode-webview://1a2b3c",
    "vscode-file://vscode-app",
    "HTTP://LOCALHOST:3000",  # origins compare case-insensitively
]
DENIED_BY_DEFAULT = [
    "https://evil.example.com",
    "http://localhost.evil.com",
    "http://127.0.0.1.nip.io",
    "http://evil.com:11434",
    "http://192.168.1.10:3000",
    "http://[::1]:3000",  # not in Ollama's list either
    "chrome-extension://abcdefghijklmnop",
    "moz-extension://1234",
    "null",  # sandboxed iframes, file:// pages in some browsers
    "ftp://localhost",
]


def test_the_default_list_is_ollamas() -> None:
    hosts = ("localhost", "127.0.0.1", "0.0.0.0")
    expected = {f"{s}://{h}{p}" for h in hosts for s in ("http", "https") for p in ("", ":*")}
    expected |= {f"{scheme}://*" for scheme in ("app", "file", "tauri", "vscode-webview", "vscode-file")}
    assert set(DEFAULT_ORIGINS) == expected and len(DEFAULT_ORIGINS) == len(expected)


@pytest.mark.parametrize("origin", ALLOWED_BY_DEFAULT)
def test_default_origins_are_allowed(app_client: TestClient, origin: str) -> None:
    resp = app_client.get("/api/tags", headers={"Origin": origin})
    assert resp.status_code == 200
    assert resp.headers["access-control-allow-origin"] == origin
    assert "Origin" in resp.headers["vary"]


@pytest.mark.parametrize("origin", DENIED_BY_DEFAULT)
@pytest.mark.parametrize(("method", "path"), [("GET", "/api/tags"), ("POST", "/api/generate"), ("GET", "/")])
def test_other_origins_get_403_with_an_empty_body(app_client: TestClient, origin: str, method: str, path: str) -> None:
    body = {"model": "tiny", "prompt": "hi", "stream": False} if method == "POST" else None
    resp = app_client.request(method, path, headers={"Origin": origin}, json=body)
    assert resp.status_code == 403
    assert resp.content == b""
    assert "access-control-allow-origin" not in resp.headers


def test_a_denied_origin_never_reaches_the_model(app_client: TestClient, fake_runtime: object) -> None:
    resp = app_client.post("/api/generate", headers={"Origin": "https://evil.example.com"}, json={"model": "tiny"})
    assert resp.status_code == 403
    assert app_client.get("/api/ps").json()["models"] == []  # the load request did not load anything


def test_same_origin_requests_are_not_cross_origin(app_client: TestClient) -> None:
    # a page served by the API's own host (Origin == http://<Host>) is not a CORS request
    resp = app_client.get("/api/tags", headers={"Origin": "http://testserver"})
    assert resp.status_code == 200 and "access-control-allow-origin" not in resp.headers


@pytest.mark.parametrize("origin", ["http://localhost:3000", "chrome-extension://abc"])
def test_preflight(make_client: Callable[..., TestClient], origin: str) -> None:
    client = make_client(origins=("chrome-extension://*",), api_key="k")
    headers = {
        "Origin": origin,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type,x-stainless-os",
    }
    resp = client.options("/api/chat", headers=headers)
    assert resp.status_code == 204  # answered before the key is asked for: browsers send no credentials here
    assert resp.headers["access-control-allow-origin"] == origin
    assert "POST" in resp.headers["access-control-allow-methods"].split(",")
    allowed = {h.lower() for h in resp.headers["access-control-allow-headers"].split(",")}
    assert {"authorization", "content-type", "x-stainless-os", "openai-beta"} <= allowed
    assert int(resp.headers["access-control-max-age"]) > 0


def test_preflight_from_a_denied_origin(app_client: TestClient) -> None:
    headers = {"Origin": "https://evil.example.com", "Access-Control-Request-Method": "POST"}
    resp = app_client.options("/api/chat", headers=headers)
    assert resp.status_code == 403 and "access-control-allow-origin" not in resp.headers


def test_ollama_origins_adds_origins_with_wildcards(
    make_client: Callable[..., TestClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OLLAMA_ORIGINS", "chrome-extension://*, https://*.example.com,http://myapp.test:8080")
    settings = Settings.from_env()
    assert settings.origins == ("chrome-extension://*", "https://*.example.com", "http://myapp.test:8080")
    client = make_client(origins=settings.origins)
    verdicts = {
        "chrome-extension://abcdef": 200,
        "https://app.example.com": 200,
        "https://a.b.example.com": 200,
        "http://myapp.test:8080": 200,
        "http://localhost:3000": 200,  # the built-in origins stay
        "https://example.com": 403,  # "*." needs a subdomain
        "http://app.example.com": 403,  # other scheme
        "http://myapp.test:8081": 403,
        "moz-extension://abcdef": 403,
    }
    got = {origin: client.get("/api/tags", headers={"Origin": origin}).status_code for origin in verdicts}
    assert got == verdicts


def test_a_lone_star_allows_every_origin(make_client: Callable[..., TestClient]) -> None:
    client = make_client(origins=("*",))
    for origin in ("https://evil.example.com", "null", "chrome-extension://x"):
        resp = client.get("/api/tags", headers={"Origin": origin})
        assert resp.status_code == 200 and resp.headers["access-control-allow-origin"] == "*"


def test_cors_headers_on_error_answers(make_client: Callable[..., TestClient]) -> None:
    # a browser app must be able to read the error of a request it was allowed to make
    client = make_client(api_key="k")
    resp = client.get("/api/tags", headers={"Origin": "http://localhost:3000"})
    assert resp.status_code == 401 and resp.headers["access-control-allow-origin"] == "http://localhost:3000"
    resp = client.post("/api/show", headers={"Origin": "http://localhost:3000", "Authorization": "Bearer k"}, json={})
    assert resp.status_code == 400 and resp.headers["access-control-allow-origin"] == "http://localhost:3000"


def test_origin_policy_matching() -> None:
    policy = OriginPolicy(["https://*.example.com", "http://exact.test"])
    assert policy.allows("https://x.example.com") and policy.allows("http://exact.test")
    assert not policy.allows("http://exact.test.evil") and not policy.allows("https://.example.com.evil")
    assert not OriginPolicy().allow_all and OriginPolicy(["*"]).allow_all


def test_a_streamed_answer_has_its_cors_headers_and_every_line(app_client: TestClient) -> None:
    # (a stream's chunks skip the middlewares' send wrappers: the start, with the CORS headers, does not)
    origin = "http://localhost:3000"
    body = {"model": "tiny", "prompt": "hi", "options": {"num_predict": 8, "temperature": 0}}
    with app_client.stream("POST", "/api/generate", headers={"Origin": origin}, json=body) as resp:
        lines = [json.loads(line) for line in resp.iter_lines() if line]
    whole = app_client.post("/api/generate", json={**body, "stream": False}).json()
    assert resp.status_code == 200
    assert resp.headers["access-control-allow-origin"] == origin
    assert len(lines) >= 3 and lines[-1]["done"] and not any(line["done"] for line in lines[:-1])
    assert "".join(line["response"] for line in lines) == whole["response"] != ""
