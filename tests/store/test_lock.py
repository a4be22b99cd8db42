"""The store lock and pins, across threads and processes; what a startup prune leaves to live writers."""

from __future__ import annotations

import json
import multiprocessing
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from nbllm.errors import StoreError
from nbllm.service.layers import Workspace
from nbllm.store import ModelName, ModelStore
from nbllm.store.digest import digest_bytes
from nbllm.store.manifests import MEDIA_MODEL, Layer, Manifest
from tests.support.models import install_model
from tests.support.tiny_gguf import write_tiny_gguf

pytestmark = pytest.mark.skipif(os.name == "nt", reason="the cross-process parts use flock")


@pytest.fixture(autouse=True)
def _spawnable_main(monkeypatch: pytest.MonkeyPatch) -> None:
    """A spawned child reads ``__main__.__spec__``: an in-process IPython shell (the notebook tests) puts a
    ``__main__`` without one in ``sys.modules``; None tells multiprocessing to leave the child's main alone."""
    if not hasattr(sys.modules["__main__"], "__spec__"):
        monkeypatch.setattr(sys.modules["__main__"], "__spec__", None, raising=False)


def _pin_and_wait(root: str, digest: str, pinned: Any, release: Any) -> None:
    """Another process: pin ``digest``, say so, and hold it until told (or die holding it)."""
    store = ModelStore(Path(root))
    with store.pin() as pin:
        pin.add([digest])
        pinned.set()
        release.wait(60)


def _hold_lock(root: str, held: Any, release: Any) -> None:
    store = ModelStore(Path(root))
    with store.lock.held():
        held.set()
        release.wait(60)


def test_a_pin_in_another_process_keeps_a_blob_until_that_process_ends(store: ModelStore) -> None:
    digest = store.blobs.put_bytes(b"a finished download, its manifest not written yet")
    ctx = multiprocessing.get_context("spawn")
    pinned, release = ctx.Event(), ctx.Event()
    child = ctx.Process(target=_pin_and_wait, args=(str(store.root), digest, pinned, release))
    child.start()
    try:
        assert pinned.wait(60)
        assert store.drop_unreferenced([digest]) == [] and store.prune() == []
        assert store.blobs.has(digest)
    finally:
        child.kill()  # dies holding the pin: its file stays, its lock goes
        child.join(30)
    assert list((store.root / ".nbllm-pins").iterdir())
    assert store.prune() == [digest]  # a dead process's pin protects nothing
    assert not list((store.root / ".nbllm-pins").iterdir())


def test_a_released_pin_protects_nothing(store: ModelStore) -> None:
    digest = store.blobs.put_bytes(b"x")
    with store.pin() as pin:
        pin.add([digest])
        assert store.drop_unreferenced([digest]) == []
    assert store.drop_unreferenced([digest]) == [digest]


def test_the_lock_excludes_another_process(store: ModelStore) -> None:
    ctx = multiprocessing.get_context("spawn")
    held, release = ctx.Event(), ctx.Event()
    child = ctx.Process(target=_hold_lock, args=(str(store.root), held, release))
    child.start()
    order: list[str] = []
    try:
        assert held.wait(60)

        def take() -> None:
            with store.lock.held():
                order.append("acquired")

        waiter = threading.Thread(target=take)
        waiter.start()
        time.sleep(0.3)  # room for a wrong early acquisition to show up in `order`
        order.append("released")
        release.set()
        waiter.join(30)
    finally:
        child.join(30)
    assert order == ["released", "acquired"]


def test_the_lock_is_reentrant_and_excludes_other_threads(store: ModelStore) -> None:
    order: list[str] = []

    def other() -> None:
        with store.lock.held():
            order.append("other")

    with store.lock.held(), store.lock.held():
        waiter = threading.Thread(target=other)
        waiter.start()
        time.sleep(0.1)
        order.append("mine")
    waiter.join(10)
    assert order == ["mine", "other"]


def test_put_manifest_refuses_missing_blobs(store: ModelStore) -> None:
    config = store.blobs.put_bytes(b"{}")
    manifest = Manifest(
        config=Layer(mediaType="c", digest=config, size=2),
        layers=[Layer(mediaType=MEDIA_MODEL, digest=digest_bytes(b"never stored"), size=12)],
    )
    with pytest.raises(StoreError, match="not in the store"):
        store.put_manifest(ModelName.parse("m"), manifest)
    assert store.find("m") is None


def test_an_unreadable_manifest_keeps_the_blobs_its_text_names(store: ModelStore, tmp_path: Path) -> None:
    install_model(store, "m", write_tiny_gguf(tmp_path / "t.gguf"))
    path = store.manifests.root / "registry.ollama.ai/library/m/latest"
    raw = json.loads(path.read_bytes())
    raw["layers"][0]["size"] = "not a number"  # damaged: no longer a valid manifest
    path.write_text(json.dumps(raw))
    assert store.prune() == []
    assert all(store.blobs.has(layer["digest"]) for layer in raw["layers"])


def test_startup_clean_up_leaves_live_writers_and_removes_dead_ones(store: ModelStore) -> None:
    writer = store.blobs.writer()
    writer.write(b"half of an upload")
    dead = store.blobs.root / ".tmp-crashed.blob"
    dead.write_bytes(b"left by a crash")
    ws = Workspace(store)
    (ws.dir / "model.gguf").write_bytes(b"converting")
    dead_dir = store.tmp_dir / "create-crashed"
    dead_dir.mkdir()
    store.prune()
    assert not dead.exists() and not dead_dir.exists()
    assert (ws.dir / "model.gguf").exists()
    writer.write(b" and the rest")
    digest = writer.commit()
    assert store.blobs.read_bytes(digest) == b"half of an upload and the rest"
    ws.close()
    assert store.drop_unreferenced([digest]) == [digest]
