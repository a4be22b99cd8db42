"""``/openapi.json`` describes what the server does: request bodies from the schema models, Ollama's
400 error shape (not FastAPI's 422), unique operation ids, the raw blob upload, the bearer key."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from nbllm.config import Settings
from nbllm.runtime import Runtime
from nbllm.server import create_app


def test_the_document(app_client: TestClient) -> None:
    doc = app_client.get("/openapi.json").json()  # filterwarnings=error: no duplicate-id warning either
    operations = [(path, method, op) for path, ops in doc["paths"].items() for method, op in ops.items()]
    assert len(operations) >= 23
    ids = [op["operationId"] for _, _, op in operations]
    assert len(ids) == len(set(ids))
    schemas = doc["components"]["schemas"]
    assert "HTTPValidationError" not in schemas
    for path, _, op in operations:
        assert "422" not in op["responses"]
        ref = op["responses"]["400"]["content"]["application/json"]["schema"]["$ref"]
        assert ref.endswith("/OpenAIError" if path.startswith("/v1/") else "/ErrorResponse")
        assert "security" not in op
    assert schemas["ErrorResponse"]["required"] == ["error"]
    chat = doc["paths"]["/api/chat"]["post"]["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    assert {"model", "messages", "tools", "format", "options", "stream"} <= set(
        schemas[chat.split("/")[-1]]["properties"]
    )
    blob = doc["paths"]["/api/blobs/{digest}"]["post"]["requestBody"]["content"]
    assert blob == {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}


def test_the_key_is_documented(tmp_path: Path) -> None:
    runtime = Runtime.from_settings(Settings(home=tmp_path / "h", models=tmp_path / "m", api_key="k"))
    doc = create_app(runtime).openapi()
    assert doc["components"]["securitySchemes"] == {"bearer": {"type": "http", "scheme": "bearer"}}
    for ops in doc["paths"].values():
        for op in ops.values():
            assert op["security"] == [{"bearer": []}] and "401" in op["responses"]
