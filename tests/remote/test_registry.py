"""The registry client (pull and push) against nbllm's own /v2/ server, through a recording proxy."""

from __future__ import annotations

import fcntl
import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from nbllm.config import Settings
from nbllm.engine.fake import FakeEngineFactory
from nbllm.errors import DigestMismatch, ModelNotFound, PullError, PushError
from nbllm.remote.registry import RegistryClient, pull_model, push_model
from nbllm.runtime import Runtime
from nbllm.schema import ProgressResponse
from nbllm.server import BackgroundServer
from nbllm.store import ModelName, ModelStore
from tests.support.models import install_model
from tests.support.registry_proxy import RegistryProxy
from tests.support.tiny_gguf import write_tiny_gguf

BIG = 4 << 20  # bytes of padding after the tiny GGUF header: a model layer worth resuming


@pytest.fixture
def source(tmp_path: Path) -> Iterator[BackgroundServer]:
    """A server whose store has ``me/tiny:v1`` (a 4 MiB model layer, template, params)."""
    rt = Runtime.from_settings(Settings(home=tmp_path / "src-home", models=tmp_path / "src"),
                               engine_factory=FakeEngineFactory())  # fmt: skip
    gguf = write_tiny_gguf(tmp_path / "big.gguf")
    with gguf.open("ab") as fh:
        fh.write(hashlib.sha256(b"x").digest() * (BIG // 32))
    install_model(rt.store, "me/tiny:v1", gguf, template="{{ .Prompt }}", params={"temperature": 0.5})
    server = BackgroundServer(rt).start()
    yield server
    server.stop()
    rt.close()


@pytest.fixture
def proxy(source: BackgroundServer) -> Iterator[RegistryProxy]:
    p = RegistryProxy(source.url).start()
    yield p
    p.stop()


@pytest.fixture
def dest(tmp_path: Path) -> ModelStore:
    return ModelStore(tmp_path / "dest")


def _name(proxy: RegistryProxy, model: str = "me/tiny:v1") -> ModelName:
    return ModelName.parse(f"{proxy.host}/{model}")


def pull(store: ModelStore, name: ModelName, **kw: object) -> list[ProgressResponse]:
    with RegistryClient(insecure=True, **kw) as registry:  # type: ignore[arg-type]
        return list(pull_model(store, name, registry))


def _source_store(source: BackgroundServer) -> ModelStore:
    return source.runtime.store


def _big_digest(source: BackgroundServer) -> str:
    model = _source_store(source).get("me/tiny:v1")
    assert model.model_digest is not None
    return model.model_digest


def test_pull_moves_the_model_whole_with_ollamas_statuses(
    source: BackgroundServer, proxy: RegistryProxy, dest: ModelStore
) -> None:
    name = _name(proxy)
    events = pull(dest, name)
    statuses = [e.status for e in events]
    src = _source_store(source).manifests.read(ModelName.parse("me/tiny:v1"))
    assert src is not None
    layers = [*src.manifest.layers, src.manifest.config]
    assert statuses[0] == "pulling manifest"
    assert statuses[-3:] == ["verifying sha256 digest", "writing manifest", "success"]
    pulled = [s for s in statuses if s.startswith("pulling ") and s != "pulling manifest"]
    assert list(dict.fromkeys(pulled)) == [f"pulling {layer.digest[7:19]}" for layer in layers]
    for layer in layers:
        last = [e for e in events if e.digest == layer.digest][-1]
        assert last.total == last.completed == layer.size
        assert dest.blobs.path(layer.digest).read_bytes() == _source_store(source).blobs.path(layer.digest).read_bytes()
    copy = dest.manifests.read(name)
    assert copy is not None and copy.manifest.to_bytes() == src.manifest.to_bytes()
    model = dest.get(name)
    assert model.template == "{{ .Prompt }}" and model.params == {"temperature": 0.5}
    assert not list(dest.blobs.root.glob("*-partial"))


def test_layers_download_in_parallel_and_present_layers_are_skipped(proxy: RegistryProxy, dest: ModelStore) -> None:
    proxy.rate = 16 << 20  # the big layer takes ~0.25 s: the small ones arrive meanwhile
    pull(dest, _name(proxy))
    assert proxy.max_in_flight >= 2
    before = len(proxy.blob_gets())
    events = pull(dest, _name(proxy, "me/tiny:v1"))
    assert len(proxy.blob_gets()) == before  # nothing downloaded again
    for event in events:
        if event.digest:
            assert event.completed == event.total


def test_a_dropped_connection_is_resumed_with_a_range_request(
    source: BackgroundServer, proxy: RegistryProxy, dest: ModelStore
) -> None:
    proxy.cut_after = 1 << 20
    pull(dest, _name(proxy))
    digest = _big_digest(source)
    gets = [r for r in proxy.blob_gets() if digest in r[1]]
    assert [r[2] for r in gets] == [None, f"bytes={1 << 20}-"]
    assert dest.blobs.has(digest) and dest.find(_name(proxy)) is not None


def test_a_partial_left_by_a_killed_pull_is_resumed(
    source: BackgroundServer, proxy: RegistryProxy, dest: ModelStore
) -> None:
    digest = _big_digest(source)
    data = _source_store(source).blobs.path(digest).read_bytes()
    partial = dest.blobs.root / ("sha256-" + digest[7:] + "-partial")
    partial.write_bytes(data[: len(data) // 2])
    pull(dest, _name(proxy))
    gets = [r for r in proxy.blob_gets() if digest in r[1]]
    assert [r[2] for r in gets] == [f"bytes={len(data) // 2}-"]
    assert dest.blobs.path(digest).read_bytes() == data
    assert not partial.exists()


def test_wrong_bytes_are_refused_and_nothing_is_stored(
    source: BackgroundServer, proxy: RegistryProxy, dest: ModelStore
) -> None:
    proxy.corrupt = True
    with pytest.raises(DigestMismatch, match="digest mismatch"):
        pull(dest, _name(proxy))
    assert dest.manifests.read(_name(proxy)) is None
    assert not dest.blobs.has(_big_digest(source))
    assert dest.models() == []
    proxy.corrupt = False
    pull(dest, _name(proxy))  # whatever the failed pull left behind does not spoil the next one
    assert dest.blobs.has(_big_digest(source))


def test_a_failed_pull_lets_go_of_the_downloads_still_running(
    source: BackgroundServer, proxy: RegistryProxy, dest: ModelStore
) -> None:
    """A pull that fails on one layer while another is still downloading returns with that download ended.

    Before, the other download kept reading until its next block (or the 30 s read timeout) and held its
    partial file's lock, so a second pull of the model in the same server waited for it.
    """
    proxy.corrupt = True  # the small layers arrive at once and fail verification
    proxy.rate = 256 << 10  # the 4 MiB layer would take 16 s
    with pytest.raises(DigestMismatch):
        pull(dest, _name(proxy))
    partial = dest.blobs.root / ("sha256-" + _big_digest(source)[7:] + "-partial")
    assert partial.exists()  # what was received is kept, to resume from
    with partial.open("rb") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)  # BlockingIOError: a download still holds it
    proxy.corrupt, proxy.rate = False, None
    pull(dest, _name(proxy))
    assert dest.blobs.has(_big_digest(source)) and not partial.exists()


def test_a_corrupt_partial_is_discarded_and_downloaded_again(
    source: BackgroundServer, proxy: RegistryProxy, dest: ModelStore
) -> None:
    digest = _big_digest(source)
    partial = dest.blobs.root / ("sha256-" + digest[7:] + "-partial")
    partial.write_bytes(b"\0" * 1000)
    pull(dest, _name(proxy))
    gets = [r for r in proxy.blob_gets() if digest in r[1]]
    assert [r[2] for r in gets] == ["bytes=1000-", None]  # resumed, failed verification, started over
    assert dest.blobs.has(digest) and not partial.exists()


def test_pull_errors_read_as_ollamas(proxy: RegistryProxy, dest: ModelStore) -> None:
    with pytest.raises(PullError, match=r"^pull model manifest: file does not exist$"):
        pull(dest, _name(proxy, "me/nothing:v1"))
    with (
        RegistryClient(insecure=False) as registry,
        pytest.raises(PullError, match=r'^pull model manifest: Get "https://127\.0\.0\.1:\d+/v2/me/tiny/manifests/v1"'),
    ):
        list(pull_model(dest, _name(proxy), registry))
    assert dest.models() == []


def test_a_bearer_challenge_is_answered_with_a_token(proxy: RegistryProxy, dest: ModelStore) -> None:
    proxy.token = "s3cret"
    pull(dest, _name(proxy))
    assert any(path.startswith("/token?") and "service=test" in path for _, path, _ in proxy.requests)
    assert dest.find(_name(proxy)) is not None


def test_a_changed_model_is_pulled_again_and_its_unused_layers_removed(
    source: BackgroundServer, proxy: RegistryProxy, dest: ModelStore, tmp_path: Path
) -> None:
    pull(dest, _name(proxy))
    old = dest.get(_name(proxy)).manifest
    src = _source_store(source)
    model_path = src.get("me/tiny:v1").model_path
    assert model_path is not None
    install_model(src, "me/tiny:v1", model_path, template="{{ .System }} {{ .Prompt }}")
    statuses = [e.status for e in pull(dest, _name(proxy))]
    assert "removing unused layers" in statuses
    new = dest.get(_name(proxy))
    assert new.template == "{{ .System }} {{ .Prompt }}"
    for digest in old.digests() - new.manifest.digests():
        assert not dest.blobs.has(digest)


@pytest.fixture
def target(tmp_path: Path) -> Iterator[BackgroundServer]:
    rt = Runtime.from_settings(Settings(home=tmp_path / "dst-home", models=tmp_path / "dst"),
                               engine_factory=FakeEngineFactory())  # fmt: skip
    server = BackgroundServer(rt).start()
    yield server
    server.stop()
    rt.close()


def push(store: ModelStore, name: ModelName, **kw: object) -> list[ProgressResponse]:
    with RegistryClient(insecure=True, failure=PushError, **kw) as registry:  # type: ignore[arg-type]
        return list(push_model(store, name, registry))


def test_push_uploads_in_parts_and_skips_what_the_registry_has(
    source: BackgroundServer, target: BackgroundServer
) -> None:
    proxy = RegistryProxy(target.url).start()
    try:
        store = _source_store(source)
        name = ModelName.parse(f"{proxy.host}/me/pushed:v2")
        store.copy("me/tiny:v1", name)
        events = push(store, name, part_size=1 << 20)
        statuses = list(dict.fromkeys(e.status for e in events))
        manifest = store.manifests.read(name)
        assert manifest is not None
        layers = [*manifest.manifest.layers, manifest.manifest.config]
        assert statuses == ["retrieving manifest", *(f"pushing {x.digest[7:19]}" for x in layers),
                            "pushing manifest", "success"]  # fmt: skip
        patches = [r for r in proxy.requests if r[0] == "PATCH"]
        assert len(patches) >= 5  # the 4 MiB layer went in 1 MiB parts
        received = target.runtime.store.get("me/pushed:v2")
        assert received.manifest.to_bytes() == manifest.manifest.to_bytes()
        for layer in layers:
            assert (
                target.runtime.store.blobs.path(layer.digest).read_bytes()
                == store.blobs.path(layer.digest).read_bytes()
            )
        uploads = len([r for r in proxy.requests if r[0] == "POST"])
        again = push(store, name)
        assert len([r for r in proxy.requests if r[0] == "POST"]) == uploads  # every blob: HEAD says present
        assert all(e.completed == e.total for e in again if e.digest)
    finally:
        proxy.stop()


def test_push_errors(source: BackgroundServer, target: BackgroundServer) -> None:
    store = _source_store(source)
    host = target.url.removeprefix("http://")
    with pytest.raises(ModelNotFound):
        push(store, ModelName.parse(f"{host}/me/absent:v1"))
    name = ModelName.parse(f"{host}/me/tiny:v1")
    store.copy("me/tiny:v1", name)
    with RegistryClient(insecure=False, failure=PushError) as registry, pytest.raises(PushError, match="https://"):
        list(push_model(store, name, registry))
    assert target.runtime.store.models() == []
