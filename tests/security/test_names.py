"""Names that try to leave the store (``..``, absolute paths, odd characters) are refused by every route
that takes a model name or a digest -- 400 with ``{"error": ...}`` -- and the store is not touched."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from nbllm.runtime import Runtime

BAD_NAMES = [
    "../../etc/passwd",
    "/etc/passwd",
    "..",
    "../x",
    "a/../../b",
    "library/../../x",
    "x:../../y",
    "x:tag/../..",
    "..\\..\\windows",
    "C:\\models\\x",
    "~/x",
    "%2e%2e/%2e%2e/x",
    "a\x00b",
    "a\nb",
    "a b",
    "a/b/c/d/e",
    ".hidden",
    "-rf",
    "a" * 400,
    "",
]

ROUTES: list[tuple[str, str, Callable[[str], dict[str, Any]]]] = [
    ("POST", "/api/pull", lambda n: {"model": n, "stream": False}),
    ("POST", "/api/push", lambda n: {"model": n, "stream": False}),
    ("POST", "/api/create", lambda n: {"model": n, "from": "tiny", "stream": False}),
    ("POST", "/api/create", lambda n: {"model": "fine", "from": n, "stream": False}),
    ("POST", "/api/copy", lambda n: {"source": n, "destination": "fine"}),
    ("POST", "/api/copy", lambda n: {"source": "tiny", "destination": n}),
    ("DELETE", "/api/delete", lambda n: {"model": n}),
    ("POST", "/api/show", lambda n: {"model": n}),
    ("POST", "/api/generate", lambda n: {"model": n, "prompt": "hi", "stream": False}),
    ("POST", "/api/chat", lambda n: {"model": n, "messages": [{"role": "user", "content": "hi"}], "stream": False}),
    ("POST", "/api/embed", lambda n: {"model": n, "input": "hi"}),
    ("POST", "/api/embeddings", lambda n: {"model": n, "prompt": "hi"}),
    ("POST", "/v1/chat/completions", lambda n: {"model": n, "messages": [{"role": "user", "content": "hi"}]}),
    ("POST", "/v1/completions", lambda n: {"model": n, "prompt": "hi"}),
    ("POST", "/v1/embeddings", lambda n: {"model": n, "input": "hi"}),
]


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file of a directory tree and its bytes."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    """A file outside the store that a traversal would reach."""
    path = tmp_path / "outside.txt"
    path.write_text("do not touch")
    return path


@pytest.mark.parametrize(("method", "path", "body"), ROUTES, ids=[f"{m} {p} {i}" for i, (m, p, _) in enumerate(ROUTES)])
def test_bad_names_are_refused_everywhere(
    app_client: TestClient,
    fake_runtime: Runtime,
    victim: Path,
    method: str,
    path: str,
    body: Callable[[str], dict[str, Any]],
) -> None:
    store = fake_runtime.store.root
    before, outside = snapshot(store), snapshot(victim.parent)
    for name in BAD_NAMES:
        resp = app_client.request(method, path, json=body(name))
        assert resp.status_code == 400, (name, resp.status_code, resp.text)
        error = resp.json()["error"]
        assert error["message"] if path.startswith("/v1/") else error, resp.text
    assert snapshot(store) == before
    assert snapshot(victim.parent) == outside
    assert app_client.get("/api/tags").json()["models"][0]["name"] == "tiny:latest"


# (a literal "../" is resolved by HTTP clients before sending; the encoded forms reach the server)
@pytest.mark.parametrize("name", ["..%2F..%2Fetc%2Fpasswd", "%2e%2e", "library%2F..%2F..%2Fx", "%2Fetc%2Fpasswd"])
def test_openai_model_paths(app_client: TestClient, name: str) -> None:
    resp = app_client.get(f"/v1/models/{name}")
    assert resp.status_code in (400, 404) and resp.json()["error"]["message"]


BAD_DIGESTS = [
    "..",
    "sha256:..",
    "sha256:../../../etc/passwd",
    "sha256-..%2F..%2Fx",
    "sha256:" + "0" * 63,
    "sha256:" + "0" * 65,
    "sha256:" + "g" * 64,
    "sha256:" + "0" * 63 + "/",
    "md5:" + "0" * 32,
    "%2e%2e%2f%2e%2e%2fetc%2fpasswd",
    "/etc/passwd",
]


@pytest.mark.parametrize("digest", BAD_DIGESTS)
def test_bad_blob_digests(app_client: TestClient, fake_runtime: Runtime, digest: str) -> None:
    before = snapshot(fake_runtime.store.root)
    for method in ("HEAD", "POST"):
        resp = app_client.request(method, f"/api/blobs/{digest}", content=b"x")
        assert resp.status_code in (400, 404, 405), (method, digest, resp.status_code)
        if method == "POST" and resp.status_code == 400:
            assert resp.json() == {"error": "invalid digest format"}
    assert snapshot(fake_runtime.store.root) == before


def test_create_refuses_file_names_that_leave_the_store(app_client: TestClient, fake_runtime: Runtime) -> None:
    data = b"GGUF-ish"
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    before = snapshot(fake_runtime.store.root)
    assert app_client.post(f"/api/blobs/{digest}", content=data).status_code == 201  # (a failed create removes it)
    for files in ({"../../evil.gguf": digest}, {"/etc/passwd": digest}, {"m.gguf": "sha256:../../x"}):
        resp = app_client.post("/api/create", json={"model": "fine", "files": files, "stream": False})
        assert resp.status_code == 400, resp.text
    resp = app_client.post(
        "/api/create", json={"model": "fine", "from": "tiny", "adapters": {"../x.gguf": digest}, "stream": False}
    )
    assert resp.status_code == 400
    assert snapshot(fake_runtime.store.root) == before


def test_the_registry_routes(make_client: Callable[..., TestClient]) -> None:
    client = make_client()
    for path in (
        "/v2/library/..%2F..%2Fetc/manifests/latest",
        "/v2/../../etc/tags/list",
        "/v2/library/tiny/manifests/..",
        "/v2/library/tiny/blobs/sha256:..",
    ):
        resp = client.get(path)
        assert 400 <= resp.status_code < 500, (path, resp.status_code, resp.text)
