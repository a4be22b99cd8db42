"""verify_store: every blob a manifest names is re-hashed; missing, short and corrupt blobs are reported."""

from __future__ import annotations

from pathlib import Path

import pytest

from nbllm.errors import InvalidModelName, ModelNotFound
from nbllm.store import ModelStore
from nbllm.store.verify import verify_store
from tests.support.models import install_model
from tests.support.tiny_gguf import write_tiny_gguf


@pytest.fixture
def two_models(store: ModelStore, tmp_path: Path) -> ModelStore:
    """``a`` and ``b`` share their weights; ``b`` has a template layer of its own."""
    gguf = write_tiny_gguf(tmp_path / "w.gguf")
    install_model(store, "a", gguf)
    install_model(store, "b", gguf, template="{{ .Prompt }}")
    return store


def _weights(store: ModelStore) -> Path:
    path = store.get("a").model_path
    assert path is not None
    return path


def test_an_intact_store(two_models: ModelStore) -> None:
    hashed: list[int] = []
    report = verify_store(two_models, progress=hashed.append)
    assert report.ok and report.problems == ()
    assert report.models == ("a:latest", "b:latest")
    files = {p.name for p in two_models.blobs.root.iterdir()}
    assert report.blobs == len(files)  # the shared weights are hashed once
    assert report.bytes_hashed == sum(p.stat().st_size for p in two_models.blobs.root.iterdir()) == sum(hashed)


def test_a_flipped_byte(two_models: ModelStore) -> None:
    weights = _weights(two_models)
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0x01
    weights.write_bytes(bytes(data))
    report = verify_store(two_models)
    assert not report.ok
    [problem] = report.problems
    assert problem.kind == "corrupt" and problem.models == ("a:latest", "b:latest")
    assert problem.digest == "sha256:" + weights.name.removeprefix("sha256-")
    assert report.broken_models() == ["a:latest", "b:latest"]


def test_a_truncated_blob(two_models: ModelStore) -> None:
    weights = _weights(two_models)
    size = weights.stat().st_size
    weights.write_bytes(weights.read_bytes()[: size // 3])
    [problem] = verify_store(two_models).problems
    assert problem.kind == "size" and f"the manifest says {size}" in problem.detail


def test_a_missing_blob_and_one_model_only(two_models: ModelStore) -> None:
    template = next(
        layer
        for layer in two_models.manifests.read(two_models.parse_name("b")).manifest.layers
        if "template" in layer.mediaType
    )  # type: ignore[union-attr]
    two_models.blobs.path(template.digest).unlink()
    assert verify_store(two_models, ["a"]).ok  # a does not use it
    [problem] = verify_store(two_models, ["b"]).problems
    assert (problem.kind, problem.models) == ("missing", ("b:latest",))


def test_an_unreadable_manifest(two_models: ModelStore) -> None:
    path = next(
        p for p in two_models.manifests.root.rglob("*") if p.is_file() and p.name == "latest" and p.parent.name == "a"
    )
    path.write_text("{not json")
    report = verify_store(two_models)
    assert [p.kind for p in report.problems] == ["manifest"] and report.broken_models() == ["a:latest"]


def test_names(two_models: ModelStore) -> None:
    with pytest.raises(ModelNotFound):
        verify_store(two_models, ["nope"])
    with pytest.raises(InvalidModelName):
        verify_store(two_models, ["../../etc/passwd"])


def test_it_changes_nothing(two_models: ModelStore) -> None:
    weights = _weights(two_models)
    weights.write_bytes(weights.read_bytes()[:100])
    before = {p: p.read_bytes() for p in two_models.root.rglob("*") if p.is_file()}
    verify_store(two_models)
    assert {p: p.read_bytes() for p in two_models.root.rglob("*") if p.is_file()} == before
