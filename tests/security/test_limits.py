"""Request bodies: a JSON body over NBLLM_MAX_REQUEST_SIZE is refused (413) before it is parsed;
blob uploads are exempt (they stream to disk and are verified), and an interrupted one leaves nothing."""

from __future__ import annotations

import hashlib
import json
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from nbllm.config import Settings
from nbllm.server import BackgroundServer
from nbllm.server import app as app_module

LIMIT = 4096


def _big_prompt(size: int) -> dict[str, object]:
    return {"model": "tiny", "prompt": "x" * size, "stream": False}


def test_the_default_limit() -> None:
    assert Settings().max_request_size == 64 << 20


@pytest.mark.parametrize("path", ["/api/generate", "/api/chat", "/api/create", "/api/show", "/api/pull"])
def test_a_body_over_the_limit_is_413(make_client: Callable[..., TestClient], path: str) -> None:
    client = make_client(max_request_size=LIMIT)
    resp = client.post(path, json=_big_prompt(LIMIT))
    assert resp.status_code == 413
    assert resp.json() == {
        "error": f"request body too large: the limit is {LIMIT} bytes (raise NBLLM_MAX_REQUEST_SIZE to allow more)"
    }


def test_a_body_under_the_limit_is_served(make_client: Callable[..., TestClient]) -> None:
    client = make_client(max_request_size=LIMIT)
    body = _big_prompt(LIMIT - 200)
    assert len(json.dumps(body)) <= LIMIT
    resp = client.post("/api/generate", json=body)
    assert resp.status_code == 200 and resp.json()["done"]


def test_a_chunked_body_is_counted_as_it_arrives(make_client: Callable[..., TestClient]) -> None:
    client = make_client(max_request_size=LIMIT)

    def chunks() -> Iterator[bytes]:  # no Content-Length: the size is only known by reading
        yield b'{"model": "tiny", "prompt": "'
        for _ in range(100):
            yield b"x" * 1000
        yield b'"}'

    resp = client.post("/api/generate", content=chunks())
    assert resp.status_code == 413 and "NBLLM_MAX_REQUEST_SIZE" in resp.json()["error"]
    small = client.post("/api/generate", content=iter([b'{"model": "tiny", ', b'"prompt": "hi", "stream": false}']))
    assert small.status_code == 200


def test_openai_routes_answer_in_openai_shape(make_client: Callable[..., TestClient]) -> None:
    client = make_client(max_request_size=LIMIT)
    resp = client.post(
        "/v1/chat/completions", json={"model": "tiny", "messages": [{"role": "user", "content": "x" * LIMIT}]}
    )
    assert resp.status_code == 413 and "NBLLM_MAX_REQUEST_SIZE" in resp.json()["error"]["message"]


def test_the_default_limit_refuses_a_huge_body(app_client: TestClient) -> None:
    resp = app_client.post("/api/generate", content=b"{" + b" " * (64 << 20) + b"}")
    assert resp.status_code == 413


def test_blob_uploads_are_not_limited(make_client: Callable[..., TestClient]) -> None:
    client = make_client(max_request_size=LIMIT)
    data = bytes(range(256)) * 1024  # 256 KiB, far over the JSON limit
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    assert client.post(f"/api/blobs/{digest}", content=data).status_code == 201
    assert client.head(f"/api/blobs/{digest}").status_code == 200


def test_answers_kept_by_path_stay_right_through_a_flood_of_new_paths(
    make_client: Callable[..., TestClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whether a request may stream its body is kept per path (matching the route table each time costs
    ~50 µs); a client sending endless new paths only makes the server start afresh, never answer wrong."""
    monkeypatch.setattr(app_module, "_KNOWN_PATHS", 16)
    client = make_client(max_request_size=LIMIT)
    data = bytes(range(256)) * 64  # 16 KiB: over the JSON limit
    for round_ in range(3):
        for i in range(40):  # (over the 16 kept: the table empties twice a round)
            assert client.post(f"/api/nothing-{round_}-{i}", content=b"{}").status_code == 404
        digest = "sha256:" + hashlib.sha256(data + bytes([round_])).hexdigest()
        assert client.post(f"/api/blobs/{digest}", content=data + bytes([round_])).status_code == 201
        assert client.post("/api/generate", json=_big_prompt(LIMIT)).status_code == 413
        assert client.post("/api/generate", json=_big_prompt(100)).status_code == 200


def test_zero_means_no_limit(make_client: Callable[..., TestClient]) -> None:
    client = make_client(max_request_size=0)
    assert client.post("/api/generate", json=_big_prompt(1 << 20)).status_code == 200


# ── blob uploads over a real socket ─────────────────────────────────────────────────────────────


def _store_files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_a_mismatched_upload_leaves_nothing(make_server: Callable[..., BackgroundServer]) -> None:
    server = make_server()
    root = server.runtime.store.root
    before = _store_files(root)
    data = b"\x00garbage" * 300_000  # 2.4 MB in many chunks
    claimed = "sha256:" + hashlib.sha256(b"something else").hexdigest()
    resp = httpx.post(f"{server.url}/api/blobs/{claimed}", content=data, timeout=60)
    assert resp.status_code == 400 and "digest mismatch" in resp.json()["error"]
    assert _store_files(root) == before


def test_an_interrupted_upload_leaves_nothing(make_server: Callable[..., BackgroundServer]) -> None:
    server = make_server()
    root = server.runtime.store.root
    before = _store_files(root)
    data = b"half a blob " * 200_000
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        head = f"POST /api/blobs/{digest} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {len(data)}\r\n\r\n"
        sock.sendall(head.encode() + data[: len(data) // 2])
    # the server notices the disconnect, drops its temporary file, and keeps serving
    assert httpx.head(f"{server.url}/api/blobs/{digest}").status_code == 404
    deadline = time.monotonic() + 10
    while _store_files(root) != before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _store_files(root) == before
    assert httpx.post(f"{server.url}/api/blobs/{digest}", content=data).status_code == 201
