"""The store facade: manifests, copy, delete, prune; atomic manifest writes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nbllm.errors import ModelNotFound, StoreError
from nbllm.store import ModelName, ModelStore
from nbllm.store.manifests import MEDIA_MODEL, Layer
from tests.support.models import install_model
from tests.support.tiny_gguf import write_tiny_gguf


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    return write_tiny_gguf(tmp_path / "t.gguf")


def test_layout_is_ollamas(store: ModelStore, tiny: Path) -> None:
    install_model(store, "me/tiny:v1", tiny, template="{{ .Prompt }}", system="be nice", params={"temperature": 0.1})
    path = store.root / "manifests" / "registry.ollama.ai" / "me" / "tiny" / "v1"
    manifest = json.loads(path.read_text())
    assert manifest["schemaVersion"] == 2
    assert manifest["mediaType"] == "application/vnd.docker.distribution.manifest.v2+json"
    assert manifest["config"]["mediaType"] == "application/vnd.docker.container.image.v1+json"
    types = [layer["mediaType"] for layer in manifest["layers"]]
    assert types == [
        "application/vnd.ollama.image.model",
        "application/vnd.ollama.image.template",
        "application/vnd.ollama.image.system",
        "application/vnd.ollama.image.params",
    ]
    for layer in [manifest["config"], *manifest["layers"]]:
        assert (store.root / "blobs" / layer["digest"].replace(":", "-")).stat().st_size == layer["size"]
    model = store.get("me/tiny:v1")
    assert (model.template, model.system, model.params) == ("{{ .Prompt }}", "be nice", {"temperature": 0.1})


def test_text_layers_are_read_once_and_a_new_version_is_seen(
    store: ModelStore, tiny: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    install_model(store, "tiny:v1", tiny, template="{{ .Prompt }}", system="be nice")
    reads: list[str] = []
    read_bytes = store.blobs.read_bytes
    monkeypatch.setattr(store.blobs, "read_bytes", lambda digest: (reads.append(digest), read_bytes(digest))[1])
    assert store.get("tiny:v1").system == "be nice"
    first = len(reads)  # the config and the two text layers
    assert store.get("tiny:v1").template == "{{ .Prompt }}" and len(reads) == first  # all of them cached
    install_model(store, "tiny:v1", tiny, template="{{ .Prompt }}", system="be brief")  # same name, new layer
    assert store.get("tiny:v1").system == "be brief"


def test_lookup_is_case_insensitive(store: ModelStore, tiny: Path) -> None:
    install_model(store, "Tiny:Latest", tiny)
    assert store.get("tiny").name.display == "Tiny:Latest"


def test_copy_and_delete_share_and_free_blobs(store: ModelStore, tiny: Path) -> None:
    install_model(store, "tiny", tiny, template="T")
    store.copy("tiny", "other:v2")
    weights = store.get("tiny").model_digest
    store.delete("tiny")
    assert store.find("tiny") is None
    assert weights is not None and store.blobs.has(weights)  # still used by other:v2
    store.delete("other:v2")
    assert list(store.blobs.digests()) == []
    assert not (store.root / "manifests" / "registry.ollama.ai").exists()


def test_missing_model(store: ModelStore) -> None:
    with pytest.raises(ModelNotFound, match="model 'nope' not found"):
        store.get("nope")
    with pytest.raises(ModelNotFound):
        store.delete("nope")


def test_refuses_manifest_over_missing_blob(store: ModelStore) -> None:
    layer = Layer(mediaType=MEDIA_MODEL, digest="sha256:" + "0" * 64, size=1)
    with pytest.raises(StoreError):
        store.write_model(ModelName.parse("broken"), [layer], {})
    assert store.models() == []


def test_prune_removes_only_unreferenced(store: ModelStore, tiny: Path) -> None:
    install_model(store, "tiny", tiny)
    orphan = store.blobs.put_bytes(b"orphan")
    assert store.prune() == [orphan]
    assert store.get("tiny").model_path is not None


def test_interrupted_manifest_write_keeps_old_manifest(
    store: ModelStore, tiny: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    install_model(store, "tiny", tiny, system="old")
    old = store.get("tiny").digest
    import os

    def boom(*args: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        install_model(store, "tiny", tiny, system="new")
    monkeypatch.undo()
    assert store.get("tiny").digest == old
    leftovers = [p for p in (store.root / "manifests").rglob(".tmp-*")]
    assert leftovers == []
