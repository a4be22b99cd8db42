"""The HTTP API over fake engines: shapes, status codes, error bodies, streaming contract."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from nbllm.engine.fake import FakeEngine, FakeEngineFactory
from nbllm.errors import EngineError


def lines(resp) -> list[dict]:  # type: ignore[no-untyped-def]
    return [json.loads(line) for line in resp.text.splitlines() if line.strip()]


def test_health_and_version(app_client: TestClient) -> None:
    assert app_client.get("/").text == "Ollama is running"
    assert app_client.head("/").status_code == 200
    body = app_client.get("/api/version").json()
    assert body["version"] and body["nbllm"]


def test_generate_streams_ndjson_with_final_stats(app_client: TestClient) -> None:
    resp = app_client.post("/api/generate", json={"model": "tiny", "prompt": "hello"})
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("application/x-ndjson")
    chunks = lines(resp)
    final = chunks[-1]
    assert all(not c["done"] for c in chunks[:-1]) and final["done"] is True
    assert final["done_reason"] == "stop"
    assert final["eval_count"] == len(chunks) - 1
    text = "".join(c["response"] for c in chunks)
    assert text  # the fake echoes the reversed last line of the rendered prompt
    for key in ("total_duration", "load_duration", "prompt_eval_count", "prompt_eval_duration", "eval_duration"):
        assert final[key] > 0
    assert final["total_duration"] >= final["load_duration"] + final["prompt_eval_duration"] + final["eval_duration"]
    assert isinstance(final["context"], list) and final["created_at"].endswith("Z")


def test_generate_non_streaming_concatenates(app_client: TestClient) -> None:
    streamed = "".join(
        c["response"] for c in lines(app_client.post("/api/generate", json={"model": "tiny", "prompt": "abc"}))
    )
    single = app_client.post("/api/generate", json={"model": "tiny", "prompt": "abc", "stream": False}).json()
    assert single["response"] == streamed and single["done"] is True


def test_chat_and_options(app_client: TestClient, fake_factory: FakeEngineFactory) -> None:
    fake_factory.replies.append("one two three")
    body = {
        "model": "tiny",
        "messages": [{"role": "user", "content": "hi"}],
        "stream": False,
        "options": {"num_predict": 2},
    }
    resp = app_client.post("/api/chat", json=body).json()
    assert resp["message"] == {"role": "assistant", "content": "on"}
    assert resp["done_reason"] == "length"
    assert fake_factory.loads[0].prompts[-1] == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"


def test_unlimited_num_predict_stops_at_ten_contexts(app_client: TestClient, fake_factory: FakeEngineFactory) -> None:
    # Ollama caps num_predict -1 (the default) at 10 x num_ctx, so a model that never ends its answer stops.
    fake_factory.replies.append("x" * 1000)
    body = {"model": "tiny", "prompt": "go", "stream": False, "options": {"num_ctx": 64, "num_predict": -1}}
    resp = app_client.post("/api/generate", json=body).json()
    assert (resp["eval_count"], resp["done_reason"], resp["response"]) == (640, "length", "x" * 640)


def test_load_and_unload(app_client: TestClient, fake_factory: FakeEngineFactory) -> None:
    loaded = lines(app_client.post("/api/generate", json={"model": "tiny"}))
    assert loaded == [
        {"model": "tiny", "created_at": loaded[0]["created_at"], "response": "", "done": True, "done_reason": "load"}
    ]
    assert [m["name"] for m in app_client.get("/api/ps").json()["models"]] == ["tiny:latest"]
    unloaded = app_client.post("/api/chat", json={"model": "tiny", "messages": [], "keep_alive": 0, "stream": False})
    assert unloaded.json()["done_reason"] == "unload"
    assert app_client.get("/api/ps").json()["models"] == []
    assert fake_factory.loads[0].closed


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "message"),
    [
        ("POST", "/api/generate", None, 400, "missing request body"),
        ("POST", "/api/generate", "{not json", 400, "invalid JSON"),
        ("POST", "/api/generate", "[]", 400, "expected a JSON object"),
        ("POST", "/api/generate", {"prompt": "x"}, 400, "model is required"),
        ("POST", "/api/generate", {"model": "../../etc/passwd", "prompt": "x"}, 400, "invalid model name"),
        ("POST", "/api/generate", {"model": "nope", "prompt": "x"}, 404, "model 'nope' not found"),
        ("POST", "/api/generate", {"model": "tiny", "prompt": "x", "stream": "yes"}, 400, "stream"),
        (
            "POST",
            "/api/generate",
            {"model": "tiny", "prompt": "x", "raw": True, "system": "s"},
            400,
            "raw mode does not support template, system, or context",
        ),
        (
            "POST",
            "/api/generate",
            {"model": "tiny", "prompt": "x", "top_logprobs": 21},
            400,
            "top_logprobs must be between 0 and 20",
        ),
        (
            "POST",
            "/api/generate",
            {"model": "tiny", "prompt": "x", "options": {"num_ctx": "big"}},
            400,
            'option "num_ctx" must be of type integer',
        ),
        ("POST", "/api/generate", {"model": "tiny", "prompt": "x", "keep_alive": "3600"}, 400, "invalid keep_alive"),
        (
            "POST",
            "/api/chat",
            {
                "model": "tiny",
                "messages": [{"role": "user", "content": "x"}],
                "tools": [{"type": "function", "function": {"name": "f"}}],
            },
            400,
            "registry.ollama.ai/library/tiny:latest does not support tools",
        ),
        ("POST", "/api/chat", {"model": "tiny", "messages": "hello"}, 400, "messages"),
        ("POST", "/api/show", {"model": "nope"}, 404, "model 'nope' not found"),
        ("POST", "/api/show", {}, 400, "model is required"),
        ("POST", "/api/copy", {"source": "nope", "destination": "x"}, 404, 'model "nope" not found'),
        ("POST", "/api/copy", {"source": "tiny", "destination": "a/b/c/d"}, 400, 'destination "a/b/c/d" is invalid'),
        ("DELETE", "/api/delete", {"model": "nope"}, 404, "model 'nope' not found"),
        ("DELETE", "/api/delete", {"model": "/abs"}, 400, 'name "/abs" is invalid'),
        ("POST", "/api/pull", {"model": ".."}, 400, "invalid model name"),
        ("GET", "/api/generate", None, 405, "method not allowed"),
        ("GET", "/api/nothing", None, 404, "page not found"),
    ],
)
def test_bad_input_gets_the_right_status_and_message(
    app_client: TestClient, method: str, path: str, body: object, status: int, message: str
) -> None:
    content = body if isinstance(body, str) else (json.dumps(body) if body is not None else None)
    resp = app_client.request(method, path, content=content)
    assert resp.status_code == status
    assert message in resp.json()["error"]
    assert (
        app_client.post("/api/generate", json={"model": "tiny", "prompt": "still ok", "stream": False}).status_code
        == 200
    )


def test_failure_mid_stream_is_a_final_error_line(
    app_client: TestClient, fake_factory: FakeEngineFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = FakeEngine._emit

    def broken(self, *args, **kwargs) -> Iterator:  # type: ignore[no-untyped-def]
        for i, event in enumerate(original(self, *args, **kwargs)):
            if i == 2:
                raise EngineError("the decoder fell over")
            yield event

    monkeypatch.setattr(FakeEngine, "_emit", broken)
    resp = app_client.post("/api/generate", json={"model": "tiny", "prompt": "a longer prompt"})
    assert resp.status_code == 200
    chunks = lines(resp)
    assert chunks[-1] == {"error": "the decoder fell over", "status": 500} and len(chunks) == 3  # as Ollama writes it


def test_tags_show_copy_delete(app_client: TestClient) -> None:
    tags = app_client.get("/api/tags").json()["models"]
    assert [m["name"] for m in tags] == ["tiny:latest"]
    assert tags[0]["details"]["family"] == "llama" and len(tags[0]["digest"]) == 64
    show = app_client.post("/api/show", json={"model": "tiny"}).json()
    assert show["template"].startswith("{{- range .Messages }}")
    assert show["capabilities"] == ["completion"]
    assert show["model_info"]["general.architecture"] == "llama"
    assert 'stop                           "<|im_end|>"' in show["parameters"]
    assert show["modelfile"].startswith('# Modelfile generated by "ollama show"')
    assert app_client.post("/api/copy", json={"source": "tiny", "destination": "me/copy:v1"}).status_code == 200
    assert {m["name"] for m in app_client.get("/api/tags").json()["models"]} == {"tiny:latest", "me/copy:v1"}
    assert app_client.request("DELETE", "/api/delete", json={"model": "tiny"}).status_code == 200
    assert [m["name"] for m in app_client.get("/api/tags").json()["models"]] == ["me/copy:v1"]
    assert (
        app_client.post("/api/generate", json={"model": "me/copy:v1", "prompt": "x", "stream": False}).status_code
        == 200
    )


def test_create_from_an_existing_model(app_client: TestClient, fake_factory: FakeEngineFactory) -> None:
    body = {
        "model": "me/pirate",
        "from": "tiny",
        "system": "Talk like a pirate.",
        "parameters": {"temperature": 0.3},
        "messages": [{"role": "user", "content": "ahoy"}, {"role": "assistant", "content": "arr"}],
    }
    events = lines(app_client.post("/api/create", json=body))
    statuses = [e["status"] for e in events]
    assert statuses[-2:] == ["writing manifest", "success"]
    assert any(s.startswith("using existing layer sha256:") for s in statuses)
    assert sum(s.startswith("creating new layer sha256:") for s in statuses) == 3
    show = app_client.post("/api/show", json={"model": "me/pirate"}).json()
    assert show["system"] == "Talk like a pirate."
    assert "temperature                    0.3" in show["parameters"] and '"<|im_end|>"' in show["parameters"]
    assert show["details"]["parent_model"] == "tiny:latest"
    app_client.post(
        "/api/chat", json={"model": "me/pirate", "messages": [{"role": "user", "content": "hi"}], "stream": False}
    )
    assert fake_factory.loads[-1].prompts[-1] == (
        "<|im_start|>system\nTalk like a pirate.<|im_end|>\n<|im_start|>user\nahoy<|im_end|>\n"
        "<|im_start|>assistant\narr<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    )
    base = app_client.post("/api/show", json={"model": "tiny"}).json()
    assert "system" not in base  # the base model is untouched


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"model": "x"}, 400, "neither 'from' or 'files' was specified"),
        ({"model": "x", "from": "nope"}, 404, "model 'nope' not found"),
        ({"model": "../x", "from": "tiny"}, 400, "invalid model name"),
        ({"model": "x", "from": "tiny", "parameters": {"num_ctx": "big"}}, 400, "num_ctx"),
    ],
)
def test_create_errors(app_client: TestClient, body: dict[str, object], status: int, message: str) -> None:
    resp = app_client.post("/api/create", json=body)
    assert resp.status_code == status and message in resp.json()["error"]
    assert "x:latest" not in {m["name"] for m in app_client.get("/api/tags").json()["models"]}
