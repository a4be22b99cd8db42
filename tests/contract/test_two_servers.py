"""Two live nbllm servers on the real engine: push from one to the other, pull back, kill a pull halfway.

Driven with the official ``ollama`` client and the ``nbllm`` command, as a user would.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import ollama
import pytest

from nbllm.config import Settings
from nbllm.runtime import Runtime
from nbllm.server import BackgroundServer
from nbllm.store import ModelName, ModelStore
from tests.support.registry_proxy import RegistryProxy

MODEL = "smollm2:135m"
GREEDY = {"temperature": 0, "num_predict": 8}


def copy_model(src: ModelStore, dst: ModelStore, name: str) -> None:
    """Put a model of one store into another (hard links, as the blobs are immutable)."""
    stored = src.manifests.read(ModelName.parse(name))
    assert stored is not None
    for digest in stored.manifest.digests():
        target = dst.blobs.path(digest)
        if not target.exists():
            os.link(src.blobs.path(digest), target)
    dst.manifests.write(stored.name, stored.manifest)


@pytest.fixture(scope="module")
def servers(real_runtime: Runtime, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[BackgroundServer, ...]]:
    """A has smollm2:135m; B starts empty. Both run llama.cpp."""
    root = tmp_path_factory.mktemp("two-servers")
    runtimes = [Runtime.from_settings(Settings(home=root / f"{n}-home", models=root / n)) for n in "ab"]
    copy_model(real_runtime.store, runtimes[0].store, MODEL)
    started = [BackgroundServer(rt).start() for rt in runtimes]
    yield tuple(started)
    for server, rt in zip(started, runtimes, strict=True):
        server.stop()
        rt.close()


@pytest.fixture
def connect() -> Iterator[object]:
    """``connect(server)``: an ollama.Client of a server, closed after the test."""
    clients: list[ollama.Client] = []

    def make(server: BackgroundServer) -> ollama.Client:
        clients.append(ollama.Client(host=server.url))
        return clients[-1]

    yield make
    for c in clients:
        c._client.close()


def host_of(server: BackgroundServer) -> str:
    return server.url.removeprefix("http://")


def test_push_moves_a_model_whole_and_it_answers_there(servers: tuple[BackgroundServer, ...], connect: Any) -> None:
    a, b = servers
    client_a, client_b = connect(a), connect(b)
    target = f"{host_of(b)}/me/smol:v1"
    client_a.copy(MODEL, target)
    events = list(client_a.push(target, insecure=True, stream=True))
    assert all(isinstance(e, ollama.ProgressResponse) for e in events)
    statuses = list(dict.fromkeys(e.status for e in events))
    manifest = a.runtime.store.get(target).manifest
    layers = [*manifest.layers, manifest.config]
    assert statuses == ["retrieving manifest", *(f"pushing {x.digest[7:19]}" for x in layers),
                        "pushing manifest", "success"]  # fmt: skip
    listed = {m.model: m for m in client_b.list().models}
    assert "me/smol:v1" in listed
    assert listed["me/smol:v1"].digest == a.runtime.store.get(target).digest
    answer = client_b.chat("me/smol:v1", messages=[{"role": "user", "content": "Say hi."}], options=GREEDY)
    assert answer.done and answer.message.content.strip()
    again = client_a.push(target, insecure=True)  # every layer is already there: nothing is uploaded
    assert again.status == "success"


def _partial(store: ModelStore, digest: str) -> Path:
    return store.blobs.root / ("sha256-" + digest[7:] + "-partial")


def _wait_for(condition: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


class TagsWatcher(threading.Thread):
    """Polls /api/tags; whenever ``name`` is listed, checks that every blob it needs is complete."""

    def __init__(self, server: BackgroundServer, name: str) -> None:
        super().__init__(daemon=True)
        self.server, self.name = server, name
        self.seen_incomplete: list[str] = []
        self.seen = False
        self.halt = threading.Event()

    def run(self) -> None:
        store = self.server.runtime.store
        with httpx.Client(base_url=self.server.url) as http:
            while not self.halt.is_set():
                names = [m["name"] for m in http.get("/api/tags").json()["models"]]
                if self.name in names:
                    self.seen = True
                    model = store.get(self.name)
                    for layer in [*model.manifest.layers, model.manifest.config]:
                        path = store.blobs.path(layer.digest)
                        if not path.is_file() or path.stat().st_size != layer.size:
                            self.seen_incomplete.append(layer.digest)
                time.sleep(0.02)


def nbllm_pull(name: str, server: BackgroundServer) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NBLLM_", "OLLAMA_"))}
    env["OLLAMA_HOST"] = server.url
    return subprocess.Popen(
        [sys.executable, "-m", "nbllm", "pull", name, "--insecure"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_a_pull_killed_halfway_resumes_verifies_and_never_shows_a_partial_model(
    servers: tuple[BackgroundServer, ...], connect: Any
) -> None:
    a, b = servers
    digest = a.runtime.store.get(MODEL).model_digest
    assert digest is not None
    size = a.runtime.store.blobs.size(digest)
    for m in b.runtime.store.models():  # start from nothing: no blob of the model on B
        b.runtime.store.delete(m.name)
    assert not b.runtime.store.blobs.has(digest)
    proxy = RegistryProxy(a.url).start()
    name = f"{proxy.host}/library/{MODEL}"
    watcher = TagsWatcher(b, name)
    watcher.start()
    try:
        proxy.rate = 25 << 20  # ~4 s for the whole GGUF: time to kill the pull in the middle
        first = nbllm_pull(name, b)
        partial = _partial(b.runtime.store, digest)
        _wait_for(lambda: partial.exists() and partial.stat().st_size >= 16 << 20, 30, "the download to start")
        first.send_signal(signal.SIGKILL)
        first.communicate(timeout=10)
        stalled: list[int] = []

        def stopped() -> bool:  # the server notices the client left and stops downloading
            stalled.append(partial.stat().st_size)
            return len(stalled) > 25 and stalled[-1] == stalled[-25]

        _wait_for(stopped, 15, "the server to stop the abandoned pull")
        have = stalled[-1]
        assert 16 << 20 <= have < size
        assert not watcher.seen and not b.runtime.store.blobs.has(digest)

        proxy.rate = None
        second = nbllm_pull(name, b)
        output, _ = second.communicate(timeout=120)
        assert second.returncode == 0, output
        assert "verifying sha256 digest" in output and output.rstrip().endswith("success")
        gets = [r for r in proxy.blob_gets() if digest in r[1]]
        assert gets[0][2] is None and gets[-1][2] == f"bytes={have}-", gets
        _wait_for(lambda: watcher.seen, 5, "the model to be listed")
    finally:
        watcher.halt.set()
        watcher.join(5)
        proxy.stop()
    assert watcher.seen_incomplete == []
    assert b.runtime.store.blobs.path(digest).read_bytes() == a.runtime.store.blobs.path(digest).read_bytes()
    assert not list(b.runtime.store.blobs.root.glob("*-partial"))
    shown = connect(b).show(name)
    assert shown.template and shown.details.family == "llama"
