"""The memo of resolved models (service.common): it serves a model only while its manifest is the same."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from nbllm.engine.fake import FakeEngineFactory
from nbllm.runtime import Runtime
from nbllm.service.common import resolve_model
from nbllm.store.digest import digest_bytes
from nbllm.store.manifests import MEDIA_SYSTEM, Layer
from nbllm.store.names import ModelName
from tests.support.models import install_model
from tests.support.tiny_gguf import write_tiny_gguf


def _generate(client: TestClient, model: str) -> Any:
    return client.post("/api/generate", json={"model": model, "prompt": "hi", "stream": False})


def _create(client: TestClient, model: str, **fields: Any) -> None:
    response = client.post("/api/create", json={"model": model, "from": "tiny", "stream": False, **fields})
    assert response.status_code == 200, response.text


def test_an_unchanged_manifest_is_resolved_once_and_a_rewritten_one_again(fake_runtime: Runtime) -> None:
    first = resolve_model(fake_runtime, "tiny")
    assert resolve_model(fake_runtime, "tiny") is first  # memoized: not parsed again
    assert first.model_path is not None and first.system is None
    install_model(fake_runtime.store, "tiny", first.model_path, system="now with a system prompt")
    again = resolve_model(fake_runtime, "tiny")
    assert again is not first
    assert again.system == "now with a system prompt"


def test_a_model_replaced_by_create_is_the_one_the_next_request_uses(
    app_client: TestClient, fake_factory: FakeEngineFactory
) -> None:
    _create(app_client, "m", system="the first system prompt")
    for _ in range(2):  # the second request is served from the memo
        assert _generate(app_client, "m").status_code == 200
        assert "the first system prompt" in fake_factory.loads[-1].prompts[-1]
    _create(app_client, "m", system="the second system prompt")
    assert _generate(app_client, "m").status_code == 200
    prompt = fake_factory.loads[-1].prompts[-1]
    assert "the second system prompt" in prompt and "the first" not in prompt


def test_a_removed_model_is_a_404_on_the_next_request(app_client: TestClient) -> None:
    _create(app_client, "m", system="s")
    assert _generate(app_client, "m").status_code == 200
    assert app_client.request("DELETE", "/api/delete", json={"model": "m"}).status_code == 200
    response = _generate(app_client, "m")
    assert response.status_code == 404
    assert response.json() == {"error": "model 'm' not found"}


def test_weights_replaced_under_a_name_by_another_process_are_loaded(
    app_client: TestClient, fake_runtime: Runtime, fake_factory: FakeEngineFactory, tmp_path: Path
) -> None:
    """A manifest written outside the server (``nbllm create`` in another process writes the same file)."""
    assert _generate(app_client, "tiny").status_code == 200
    before = fake_factory.loads[-1].spec.path
    other = write_tiny_gguf(tmp_path / "other.gguf", chat_template="{{ messages }}")
    install_model(fake_runtime.store, "tiny", other)
    assert _generate(app_client, "tiny").status_code == 200
    after = fake_factory.loads[-1].spec.path
    assert after != before
    assert after.read_bytes() == other.read_bytes()


def test_a_damaged_model_is_not_memoized_so_a_repaired_blob_is_seen(
    app_client: TestClient, fake_runtime: Runtime, fake_factory: FakeEngineFactory
) -> None:
    store = fake_runtime.store
    text = b"a system prompt whose blob is missing"
    system = Layer(mediaType=MEDIA_SYSTEM, digest=digest_bytes(text), size=len(text))
    manifest = store.get("tiny").manifest
    store.manifests.write(ModelName.parse("broken"), manifest.model_copy(update={"layers": [*manifest.layers, system]}))
    for _ in range(2):
        response = _generate(app_client, "broken")
        assert response.status_code == 400
        assert "is damaged" in json.loads(response.text)["error"]
    store.blobs.put_bytes(text)  # repaired (e.g. pulled again): the same manifest now names a readable layer
    assert _generate(app_client, "broken").status_code == 200
    assert text.decode() in fake_factory.loads[-1].prompts[-1]
