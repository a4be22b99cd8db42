"""``/api/blobs``: verified uploads, nothing stored on a mismatch; ``/api/create`` from uploaded files."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from nbllm.runtime import Runtime
from tests.support.hf_models import make_hf_model
from tests.support.tiny_gguf import write_tiny_gguf


def digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def lines(resp) -> list[dict]:  # type: ignore[no-untyped-def]
    return [json.loads(line) for line in resp.text.splitlines() if line.strip()]


def blob_files(rt: Runtime) -> set[str]:
    return {p.name for p in rt.store.blobs.root.iterdir()}


def upload(client: TestClient, data: bytes) -> str:
    d = digest(data)
    assert client.post(f"/api/blobs/{d}", content=data).status_code in (200, 201)
    return d


def test_head_and_post(app_client: TestClient, fake_runtime: Runtime) -> None:
    data = b"some bytes " * 100_000  # 1.1 MB, streamed in several chunks
    d = digest(data)
    missing = app_client.head(f"/api/blobs/{d}")
    assert missing.status_code == 404
    assert app_client.post(f"/api/blobs/{d}", content=data).status_code == 201
    assert app_client.head(f"/api/blobs/{d}").status_code == 200
    assert fake_runtime.store.blobs.read_bytes(d) == data
    assert app_client.post(f"/api/blobs/{d}", content=data).status_code == 200  # already there
    alt = "sha256-" + d.removeprefix("sha256:")
    assert app_client.head(f"/api/blobs/{alt}").status_code == 200


def test_digest_mismatch_stores_nothing(app_client: TestClient, fake_runtime: Runtime) -> None:
    before = blob_files(fake_runtime)
    claimed = digest(b"what I said I would send")
    resp = app_client.post(f"/api/blobs/{claimed}", content=b"something else")
    assert resp.status_code == 400
    assert resp.json() == {"error": f'digest mismatch, expected "{claimed}", got "{digest(b"something else")}"'}
    assert blob_files(fake_runtime) == before  # no blob under either digest, no temporary file
    assert app_client.head(f"/api/blobs/{claimed}").status_code == 404


@pytest.mark.parametrize("bad", ["sha256:abc", "md5:" + "0" * 32, "sha256:" + "G" * 64, "nothing"])
def test_bad_digests(app_client: TestClient, bad: str) -> None:
    assert app_client.head(f"/api/blobs/{bad}").status_code == 400
    resp = app_client.post(f"/api/blobs/{bad}", content=b"x")
    assert resp.status_code == 400 and resp.json() == {"error": "invalid digest format"}


def test_404_names_the_blob(app_client: TestClient) -> None:
    d = digest(b"absent")
    resp = app_client.get(f"/api/blobs/{d}")  # wrong method
    assert resp.status_code == 405
    with app_client.stream("HEAD", f"/api/blobs/{d}") as head:
        assert head.status_code == 404


def test_create_from_an_uploaded_gguf(app_client: TestClient, fake_runtime: Runtime, tmp_path: Path) -> None:
    data = write_tiny_gguf(tmp_path / "w.gguf", arch="qwen2").read_bytes()
    d = upload(app_client, data)
    body = {"model": "me/uploaded", "files": {"w.gguf": d}, "system": "Be brief.", "parameters": {"top_k": 5}}
    events = lines(app_client.post("/api/create", json=body))
    statuses = [e["status"] for e in events]
    assert statuses[0] == "parsing GGUF" and statuses[-2:] == ["writing manifest", "success"]
    assert f"using existing layer {d}" in statuses
    show = app_client.post("/api/show", json={"model": "me/uploaded"}).json()
    assert show["system"] == "Be brief." and "top_k" in show["parameters"]
    assert show["details"]["family"] == "qwen2" and show["details"]["format"] == "gguf"
    # a file name without .gguf is recognised by its content; FROM a digest names the blob directly
    assert (
        lines(app_client.post("/api/create", json={"model": "noext", "files": {"blob": d}}))[-1]["status"] == "success"
    )
    assert lines(app_client.post("/api/create", json={"model": "bydigest", "from": d}))[-1]["status"] == "success"
    tags = {m["name"]: m for m in app_client.get("/api/tags").json()["models"]}
    assert {"me/uploaded:latest", "noext:latest", "bydigest:latest"} <= set(tags)


def test_create_converts_uploaded_safetensors(app_client: TestClient, fake_runtime: Runtime, tmp_path: Path) -> None:
    src = make_hf_model(tmp_path / "hf", "qwen2")
    files = {p.name: upload(app_client, p.read_bytes()) for p in src.iterdir()}
    events = lines(app_client.post("/api/create", json={"model": "converted", "files": files, "quantize": "q8_0"}))
    statuses = [e["status"] for e in events]
    assert statuses[:2] == ["converting model", "quantizing F16 model to Q8_0"]
    progress = [e for e in events if e["status"] == "quantizing F16 model to Q8_0"]
    assert progress[-1]["completed"] == progress[-1]["total"] > 0
    assert "verifying conversion" in statuses and statuses[-1] == "success"
    details = app_client.post("/api/show", json={"model": "converted"}).json()["details"]
    assert details["family"] == "qwen2" and details["quantization_level"] == "Q8_0"
    # neither the uploaded safetensors nor the unquantized conversion stay in the store
    assert not any(fake_runtime.store.blobs.has(d) for d in files.values())
    model = fake_runtime.store.get("converted")
    assert blob_files(fake_runtime) >= {p.name for p in [model.model_path] if p}
    assert not list(fake_runtime.store.tmp_dir.iterdir())


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"/etc/passwd": "SELF"}, "file path must be relative"),
        ({"../up.gguf": "SELF"}, "file path must be relative"),
        ({"a\\b.gguf": "SELF"}, "file path must be relative"),
        ({"x.gguf": "sha256:" + "1" * 64}, "not found: upload it first"),
        ({"x.gguf": "sha256:nope"}, "invalid digest format"),
        ({"notes.txt": "SELF"}, "unknown type"),
        ({"a.gguf": "GGUF", "b.safetensors": "SELF"}, "mixed model file types"),
        ({"a.gguf": "SELF"}, "a.gguf is not a GGUF file"),
    ],
)
def test_create_rejects_bad_files(
    app_client: TestClient, fake_runtime: Runtime, files: dict[str, str], message: str
) -> None:
    blobs = {"SELF": upload(app_client, b"not a model at all"), "GGUF": upload(app_client, b"GGUF, it says")}
    body = {"model": "bad", "files": {k: blobs.get(v, v) for k, v in files.items()}}
    resp = app_client.post("/api/create", json=body)
    assert resp.status_code == 400 and message in resp.json()["error"]
    assert fake_runtime.store.find("bad") is None


def test_create_adapter_must_be_a_lora_for_the_same_architecture(
    app_client: TestClient, fake_runtime: Runtime, tmp_path: Path
) -> None:
    not_lora = upload(app_client, write_tiny_gguf(tmp_path / "a.gguf", arch="llama").read_bytes())
    events = lines(
        app_client.post("/api/create", json={"model": "x", "from": "tiny", "adapters": {"a.gguf": not_lora}})
    )
    assert "is not a LoRA adapter GGUF" in events[-1]["error"]
    assert fake_runtime.store.find("x") is None


def test_quantize_errors_before_anything_runs(app_client: TestClient, fake_runtime: Runtime) -> None:
    resp = app_client.post("/api/create", json={"model": "x", "from": "tiny", "quantize": "q9_9"})
    assert resp.status_code == 400 and resp.json()["error"].startswith("unsupported quantization type q9_9")
    resp = app_client.post("/api/create", json={"model": "x", "from": "tiny", "template": "{{ .Prompt "})
    assert resp.status_code == 400 and resp.json()["error"].startswith("template error:")
    resp = app_client.post("/api/create", json={"model": "x", "from": "tiny", "requires": "soon"})
    assert resp.status_code == 400 and "semver" in resp.json()["error"]
