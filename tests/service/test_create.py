"""``create_model`` on a runtime: the store is never left half-written, replaced layers are cleaned up."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from pathlib import Path

import pytest

from nbllm.client import LocalClient
from nbllm.errors import InvalidRequest, ModelNotFound
from nbllm.runtime import Runtime
from nbllm.schema import CreateRequest, ProgressResponse
from nbllm.service import create_model
from nbllm.store.manifests import MEDIA_ADAPTER, MEDIA_MODEL
from tests.support.hf_models import make_hf_model


def run(events: Iterator[ProgressResponse]) -> list[str]:
    return [e.status for e in events]


@pytest.fixture
def local(fake_runtime: Runtime) -> LocalClient:
    return LocalClient(fake_runtime)


def upload_dir(client: LocalClient, directory: Path) -> dict[str, str]:
    return {p.name: client.create_blob(p) for p in sorted(directory.iterdir()) if p.is_file()}


def test_create_blob_in_process(local: LocalClient, fake_runtime: Runtime, tmp_path: Path) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(b"x" * 3_000_000)
    seen: list[tuple[int, int]] = []
    d = local.create_blob(path, progress=lambda sent, total: seen.append((sent, total)))
    assert local.has_blob(d) and fake_runtime.store.blobs.read_bytes(d) == path.read_bytes()
    assert seen[-1] == (3_000_000, 3_000_000) and len(seen) == 3  # 1 MiB chunks
    seen.clear()
    assert local.create_blob(path, progress=lambda s, t: seen.append((s, t))) == d and seen == []  # not resent
    with pytest.raises(InvalidRequest, match="invalid digest format"):
        local.has_blob("sha256:short")


def test_convert_quantize_then_derive_and_replace(local: LocalClient, fake_runtime: Runtime, tmp_path: Path) -> None:
    store = fake_runtime.store
    files = upload_dir(local, make_hf_model(tmp_path / "hf", "llama", hidden=256, ffn=512))
    statuses = run(create_model(fake_runtime, CreateRequest(model="base", files=files)))
    assert statuses[0] == "converting model" and statuses[-1] == "success"
    base = store.get("base")
    assert base.config["file_type"] == "F16" and base.config["model_family"] == "llama"
    assert base.config["model_type"] == "1.39M"  # as Ollama prints a count of weights
    assert not any(store.blobs.has(d) for d in files.values())  # converted uploads are not kept

    statuses = run(create_model(fake_runtime, CreateRequest(model="small", **{"from": "base"}, quantize="Q4_K_M")))
    assert statuses[:1] == ["quantizing F16 model to Q4_K_M"] and "verifying conversion" in statuses
    small = store.get("small")
    assert small.config["file_type"] == "Q4_K_M" and small.config["parent_model"] == "base:latest"
    assert small.size < base.size / 2
    assert small.model_digest != base.model_digest and store.blobs.has(base.model_digest or "")

    # quantization starts only from F16/BF16/F32, and says so before doing anything
    with pytest.raises(InvalidRequest, match="quantization is only supported for F16, BF16 and F32 models"):
        next(create_model(fake_runtime, CreateRequest(model="smaller", **{"from": "small"}, quantize="q4_0")))

    # creating "base" again from the small model replaces it: the F16 weights nothing uses are removed
    old_weights = base.model_digest
    run(create_model(fake_runtime, CreateRequest(model="base", **{"from": "small"}, system="hi")))
    assert store.get("base").model_digest == small.model_digest
    assert old_weights is not None and not store.blobs.has(old_weights)


def test_failures_leave_no_manifest_and_no_files(local: LocalClient, fake_runtime: Runtime, tmp_path: Path) -> None:
    store = fake_runtime.store
    src = make_hf_model(tmp_path / "hf", "qwen2")
    (src / "tokenizer.json").unlink()
    before = set(store.blobs.root.iterdir())
    files = upload_dir(local, src)  # (uploaded for this create only: removed when it fails)
    events = create_model(fake_runtime, CreateRequest(model="broken", files=files))
    assert next(events).status == "converting model"
    with pytest.raises(InvalidRequest, match=r"tokenizer\.json not found"):
        next(events)
    assert store.find("broken") is None
    assert set(store.blobs.root.iterdir()) == before and list(store.tmp_dir.iterdir()) == []


def test_adapters_replace_the_base_models(local: LocalClient, fake_runtime: Runtime, tmp_path: Path) -> None:
    import json

    import numpy as np
    from safetensors.numpy import save_file

    files = upload_dir(local, make_hf_model(tmp_path / "hf", "qwen2"))
    run(create_model(fake_runtime, CreateRequest(model="q", files=files)))
    lora = tmp_path / "lora"
    lora.mkdir()
    a = np.ones((2, 64), dtype=np.float32)
    save_file(
        {"base_model.model.model.layers.0.self_attn.v_proj.lora_A.weight": a,
         "base_model.model.model.layers.0.self_attn.v_proj.lora_B.weight": np.ones((32, 2), dtype=np.float32)},
        str(lora / "adapter_model.safetensors"),
    )  # fmt: skip
    (lora / "adapter_config.json").write_text(json.dumps({"r": 2, "lora_alpha": 4}))
    adapters = upload_dir(local, lora)
    statuses = run(create_model(fake_runtime, CreateRequest(model="q-lora", **{"from": "q"}, adapters=adapters)))
    assert "converting adapter" in statuses
    model = fake_runtime.store.get("q-lora")
    assert len(model.adapters) == 1 and [lyr.mediaType for lyr in model.manifest.layers][:2] == [
        MEDIA_MODEL,
        MEDIA_ADAPTER,
    ]
    # the PEFT files were converted, not kept; a second create uploads them again and replaces the adapter
    assert not any(fake_runtime.store.blobs.has(d) for d in adapters.values())
    adapters = upload_dir(local, lora)
    run(create_model(fake_runtime, CreateRequest(model="q-lora", **{"from": "q-lora"}, adapters=adapters)))
    assert len(fake_runtime.store.get("q-lora").adapters) == 1


def test_unknown_base_and_no_source(fake_runtime: Runtime) -> None:
    with pytest.raises(ModelNotFound):
        deque(create_model(fake_runtime, CreateRequest(model="x", **{"from": "nope"})))
    with pytest.raises(InvalidRequest, match="neither 'from' or 'files' was specified"):
        deque(create_model(fake_runtime, CreateRequest(model="x")))
