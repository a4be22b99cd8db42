"""The real engine behind a real server under abuse: absurd options, clients that vanish mid-stream,
weights deleted or corrupt, a context that cannot fit in memory. Always an answer or a clear error
(never a 5xx for a request's own values, never a dead server)."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from nbllm.config import Settings
from nbllm.runtime import Runtime
from nbllm.server import BackgroundServer
from tests.support.model_facts import ModelFacts
from tests.support.models import install_model
from tests.support.tiny_gguf import write_tiny_gguf

pytestmark = pytest.mark.model

SMOL = "smollm2:135m"
BIG = 10**30

ABSURD: list[dict[str, Any]] = [
    {"num_ctx": -5},
    {"num_ctx": 0},
    {"num_ctx": 1},
    {"num_ctx": 10**9},
    {"num_ctx": BIG},
    {"temperature": -1},
    {"temperature": 1e308},
    {"temperature": float("nan")},
    {"top_k": 10**9},
    {"top_k": -5},
    {"top_k": BIG},
    {"top_p": 5},
    {"top_p": float("-inf")},
    {"min_p": -3},
    {"min_p": 2},
    {"typical_p": -1},
    {"seed": -(2**70)},
    {"seed": 2**70},
    {"repeat_last_n": -5},
    {"repeat_last_n": BIG},
    {"repeat_penalty": -1, "presence_penalty": 1e30, "frequency_penalty": -1e30},
    {"num_keep": -100},
    {"num_keep": 10**9},
    {"stop": [""]},
    {"num_batch": 0},
    {"num_batch": -1},
    {"num_batch": BIG},
    {"num_thread": 100_000},
    {"num_thread": -100},
    {"num_gpu": BIG},
    {"main_gpu": -1},
    {"main_gpu": 99},
    {"seed": float("nan")},
    {"num_predict": "lots"},
]


def _post(url: str, path: str, body: dict[str, Any], timeout: float = 120) -> httpx.Response:
    # json.dumps writes NaN/Infinity, which Python's JSON parser (and so the server) accepts
    return httpx.post(url + path, content=json.dumps(body), timeout=timeout)


@pytest.mark.parametrize("options", ABSURD, ids=lambda o: json.dumps(o)[:40])
def test_absurd_options_get_an_answer_or_a_400(live_server: BackgroundServer, options: dict[str, Any]) -> None:
    body = {"model": SMOL, "prompt": "Say hi.", "stream": False, "options": {"num_predict": 3, **options}}
    resp = _post(live_server.url, "/api/generate", body)
    assert resp.status_code in (200, 400), resp.text
    data = resp.json()
    if resp.status_code == 400:
        assert data["error"] and "option" in data["error"]
    else:
        assert data["done"] is True and "error" not in data
    assert httpx.get(live_server.url + "/").text == "Ollama is running"


NAN = float("nan")
ABSURD_FIELDS: list[tuple[str, dict[str, Any]]] = [
    ("/api/generate", {"keep_alive": NAN}),
    ("/api/generate", {"keep_alive": 1e308}),
    ("/api/generate", {"keep_alive": -1e308}),
    ("/api/generate", {"keep_alive": "99999999999h"}),
    ("/api/generate", {"logprobs": True, "top_logprobs": 10**9}),
    ("/api/generate", {"think": "ultra"}),
    ("/api/generate", {"format": {"type": "object", "properties": {"a": {"type": "integer", "minimum": 1e308}}}}),
    ("/api/generate", {"format": {"type": "string", "pattern": "(((("}}),
    ("/api/generate", {"format": {"$ref": "#/nowhere"}}),
    ("/api/generate", {"format": "yaml"}),
    ("/api/generate", {"images": ["!!!not base64"]}),
    ("/api/generate", {"context": [-1, 5]}),  # llama.cpp aborts the process on an unknown token id
    ("/api/generate", {"context": [10**30]}),
    ("/api/generate", {"template": "{{ range }}"}),
    ("/api/generate", {"template": "{{ .Nope.Deeper }}"}),
    ("/api/generate", {"suffix": "x" * 20, "raw": True}),
    ("/api/chat", {"messages": [{"role": "bogus", "content": "hi"}]}),
    ("/api/chat", {"messages": [{"role": "user", "content": "hi", "images": ["AAAA"]}]}),
    ("/api/chat", {"messages": [{"role": "tool", "content": "", "tool_call_id": "x" * 1000}]}),
    ("/api/chat", {"messages": [{"role": "user", "content": "hi"}], "tools": [{"type": "function", "function": {}}]}),
    ("/api/embed", {"input": [""]}),
    ("/api/embed", {"input": "hi", "dimensions": 10**9}),
    ("/api/embed", {"input": "hi", "dimensions": -1}),
    ("/api/embed", {"input": [[1, 2, 3]]}),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "max_tokens": -5}),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "max_tokens": "ten"}),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2.5}),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "temperature": NAN, "n": 5}),
    ("/v1/completions", {"prompt": "hi", "logprobs": 10**6}),
    ("/v1/embeddings", {"input": "hi", "dimensions": 0}),
]


@pytest.mark.parametrize(
    ("path", "fields"), ABSURD_FIELDS, ids=lambda v: json.dumps(v)[:40] if isinstance(v, dict) else v
)
def test_absurd_fields_get_an_answer_or_a_400(live_server: BackgroundServer, path: str, fields: dict[str, Any]) -> None:
    body: dict[str, Any] = {"model": SMOL, "prompt": "Hi", "input": "Hi", "stream": False, **fields}
    if path.endswith(("/api/chat", "/chat/completions")):
        body.setdefault("messages", [{"role": "user", "content": "Hi"}])
    body["options"] = {"num_predict": 3}
    resp = _post(live_server.url, path, body)
    assert resp.status_code in (200, 400), resp.text
    if resp.status_code == 400:
        error = resp.json()["error"]
        assert error["message"] if path.startswith("/v1/") else error, resp.text
    assert httpx.get(live_server.url + "/").text == "Ollama is running"


def _active(url: str) -> int:
    models = httpx.get(url + "/api/ps").json()["models"]
    return sum(m.get("active_requests", 0) for m in models)


def _open_stream(url: str, path: str, body: dict[str, Any]) -> socket.socket:
    """Send a streaming request over a raw socket and wait for its first chunk (the slot is busy)."""
    host, port = url.removeprefix("http://").split(":")
    payload = json.dumps(body).encode()
    sock = socket.create_connection((host, int(port)), timeout=60)
    head = f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
    sock.sendall(head.encode() + f"Content-Length: {len(payload)}\r\n\r\n".encode() + payload)
    received = b""
    while b'"done":false' not in received and b'"delta"' not in received:
        chunk = sock.recv(4096)
        assert chunk, received
        received += chunk
    return sock


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/api/generate", {"prompt": "Count from one to a million."}),
        ("/api/chat", {"messages": [{"role": "user", "content": "Count from one to a million."}]}),
        ("/v1/chat/completions", {"stream": True, "messages": [{"role": "user", "content": "Count to a million."}]}),
    ],
)
def test_a_client_vanishing_mid_stream_frees_its_slot(
    live_server: BackgroundServer, path: str, body: dict[str, Any]
) -> None:
    request = {"model": SMOL, **body, "options": {"num_predict": 10**12, "temperature": 0}}
    if path.startswith("/v1/"):
        request = {**request, "max_tokens": 10**6}
    sock = _open_stream(live_server.url, path, request)
    assert _active(live_server.url) >= 1
    sock.close()  # vanish without a word
    deadline = time.monotonic() + 30  # a token or two; generous for a loaded CI machine
    while _active(live_server.url) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _active(live_server.url) == 0
    ok = _post(
        live_server.url,
        "/api/generate",
        {"model": SMOL, "prompt": "Hi", "stream": False, "options": {"num_predict": 2}},
    )
    assert ok.status_code == 200 and ok.json()["done"] is True
    # no reference to the model leaked: an unload request empties /api/ps (it waits for references)
    assert _post(live_server.url, "/api/generate", {"model": SMOL, "keep_alive": 0}).status_code == 200
    deadline = time.monotonic() + 30
    while httpx.get(live_server.url + "/api/ps").json()["models"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert httpx.get(live_server.url + "/api/ps").json()["models"] == []


@pytest.fixture
def own_server(real_runtime: Runtime, tmp_path: Path) -> Iterator[BackgroundServer]:
    """A server over a store of its own holding a copy of smollm2 (its files may be broken at will)."""
    smol = real_runtime.store.get(SMOL)
    assert smol.model_path is not None
    gguf = tmp_path / "smol.gguf"
    gguf.write_bytes(smol.model_path.read_bytes())
    runtime = Runtime.from_settings(Settings(home=tmp_path / "home", models=tmp_path / "models", num_parallel=1))
    install_model(runtime.store, "smol", gguf, template=smol.template, params=smol.params)
    server = BackgroundServer(runtime).start()
    yield server
    server.stop()
    runtime.close()


def _generate(server: BackgroundServer, model: str = "smol", **extra: Any) -> httpx.Response:
    body = {"model": model, "prompt": "Hello", "stream": False, "options": {"num_predict": 2}, **extra}
    return _post(server.url, "/api/generate", body)


def test_weights_deleted_while_loaded(own_server: BackgroundServer) -> None:
    assert _generate(own_server).status_code == 200
    model = own_server.runtime.store.get("smol")
    assert model.model_path is not None
    weights = model.model_path.read_bytes()
    model.model_path.unlink()  # the loaded model keeps its mapping; the store has lost the file
    resp = _generate(own_server)
    assert resp.status_code == 400, resp.text
    assert "no weights in the store" in resp.json()["error"]
    assert [m["name"] for m in httpx.get(own_server.url + "/api/ps").json()["models"]] == ["smol:latest"]
    assert httpx.get(own_server.url + "/api/tags").status_code == 200
    model.model_path.write_bytes(weights)  # pulled again
    assert _generate(own_server).status_code == 200


def _damage(data: bytes, how: str) -> bytes:
    out = bytearray(data)
    if how == "truncated":
        return bytes(out[: len(out) // 2])
    if how == "garbage-header":
        out[:4] = b"NOPE"
    else:  # the metadata and tensor table zeroed
        out[8:65536] = bytes(65536 - 8)
    return bytes(out)


@pytest.mark.parametrize("damage", ["truncated", "garbage-header", "zeroed-metadata"])
def test_a_broken_gguf_is_a_clear_load_error(own_server: BackgroundServer, tmp_path: Path, damage: str) -> None:
    smol = own_server.runtime.store.get("smol")
    assert smol.model_path is not None
    # a model of its own (a distinct blob), whose file is then damaged in the store
    install_model(own_server.runtime.store, damage, write_tiny_gguf(tmp_path / "t.gguf"), template=smol.template)
    victim = own_server.runtime.store.get(damage)
    assert victim.model_path is not None
    victim.model_path.write_bytes(_damage(smol.model_path.read_bytes(), damage))
    for path in ("/api/generate", "/api/chat", "/api/embed"):
        body = {"model": damage, "prompt": "Hi", "input": "Hi", "messages": [{"role": "user", "content": "Hi"}]}
        resp = _post(own_server.url, path, {**body, "stream": False})
        assert 400 <= resp.status_code < 600 and resp.status_code != 502, (path, resp.text)
        message = resp.json()["error"]
        assert "GGUF" in message or "unable to load model" in message, message
    assert _generate(own_server).status_code == 200  # the good model still answers
    assert httpx.get(own_server.url + "/api/tags").status_code == 200


def test_a_context_larger_than_memory_is_a_clear_error(
    real_runtime: Runtime, tmp_path: Path, smollm2_facts: ModelFacts
) -> None:
    # 256 slots of smollm2's full 8192-token context want ~48 GiB of KV cache
    smol = real_runtime.store.get(SMOL)
    assert smol.model_path is not None
    runtime = Runtime.from_settings(Settings(home=tmp_path / "h", models=tmp_path / "m", num_parallel=256))
    install_model(runtime.store, "smol", smol.model_path, template=smol.template)
    with BackgroundServer(runtime) as server:
        resp = _generate(server, options={"num_ctx": smollm2_facts.context_length, "num_predict": 2})
        assert resp.status_code == 500
        assert "memory" in resp.json()["error"]
        assert httpx.get(server.url + "/").status_code == 200
    runtime.close()
