"""Bad small layers (params, messages, template, config that are not what their media type says).

They are refused where they enter the store (``PUT /v2/.../manifests/...``); one that is in a store
anyway (an older nbllm wrote it, another tool, a damaged disk) breaks only its own model: listings
go on (``/api/tags``, ``/v1/models``, ``nbllm list``), the model can be shown and removed, running it
is a clear 400, and ``nbllm verify`` names it. All over HTTP against a server on loopback.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from nbllm.config import Settings
from nbllm.engine.fake import FakeEngineFactory
from nbllm.prompt.template_check import check_template
from nbllm.runtime import Runtime
from nbllm.server import BackgroundServer
from nbllm.store import ModelName, ModelStore
from nbllm.store.manifests import (
    MEDIA_CONFIG,
    MEDIA_MESSAGES,
    MEDIA_PARAMS,
    MEDIA_SYSTEM,
    MEDIA_TEMPLATE,
    Layer,
    Manifest,
)
from nbllm.store.verify import verify_store
from tests.cli.support import nbllm
from tests.conftest import CHATML
from tests.support.models import install_model
from tests.support.tiny_gguf import write_tiny_gguf

BAD_LAYERS = [
    (MEDIA_PARAMS, b"not json"),
    (MEDIA_PARAMS, b"5"),
    (MEDIA_PARAMS, b"[1,2]"),
    (MEDIA_PARAMS, b'"text"'),
    (MEDIA_MESSAGES, b"not json"),
    (MEDIA_MESSAGES, b"5"),
    (MEDIA_MESSAGES, b"[1,2]"),
    (MEDIA_MESSAGES, b'{"role": "user"}'),
    (MEDIA_MESSAGES, b'[{"role": "user", "content": 5}]'),
    (MEDIA_MESSAGES, b'[{"content": "hi"}]'),
    (MEDIA_TEMPLATE, b"\xff\xfe not utf-8"),
    (MEDIA_SYSTEM, b"\xc3\x28"),
]
IDS = [f"{media.rsplit('.', 1)[-1]}-{i}" for i, (media, _) in enumerate(BAD_LAYERS)]


@pytest.fixture
def store_root(tmp_path: Path) -> Path:
    return tmp_path / "models"


@pytest.fixture
def runtime(tmp_path: Path, store_root: Path) -> Iterator[Runtime]:
    """A runtime over FakeEngines (these tests are about the store and the edge) with ``tiny``."""
    rt = Runtime.from_settings(Settings(home=tmp_path / "home", models=store_root), engine_factory=FakeEngineFactory())
    install_model(rt.store, "tiny", write_tiny_gguf(tmp_path / "tiny.gguf"), template=CHATML)
    yield rt
    rt.close()


def _upload(url: str, data: bytes) -> str:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    resp = requests.post(f"{url}/api/blobs/{digest}", data=data, timeout=30)
    assert resp.status_code in (200, 201), resp.text
    return digest


def _broken_manifest(url: str, store: ModelStore, media: str, data: bytes) -> Manifest:
    """tiny's manifest with one more small layer holding ``data`` (uploaded through the API)."""
    tiny = store.get("tiny").manifest
    bad = Layer(mediaType=media, digest=_upload(url, data), size=len(data))
    layers = [layer for layer in tiny.layers if layer.mediaType != media] + [bad]
    return Manifest(config=tiny.config, layers=layers)


def _names(resp: requests.Response) -> set[str]:
    assert resp.status_code == 200, resp.text
    body = resp.json()
    return {m["name"] for m in body["models"]} if "models" in body else {m["id"] for m in body["data"]}


@pytest.mark.parametrize(("media", "data"), BAD_LAYERS, ids=IDS)
def test_a_manifest_with_a_bad_layer_is_refused_when_pushed(
    server: BackgroundServer, runtime: Runtime, media: str, data: bytes
) -> None:
    manifest = _broken_manifest(server.url, runtime.store, media, data)
    resp = requests.put(f"{server.url}/v2/me/broken/manifests/latest", data=manifest.to_bytes(), timeout=30)
    assert resp.status_code == 400, resp.text
    error = resp.json()["errors"][0]
    assert error["code"] == "MANIFEST_INVALID"
    assert media.rsplit(".", 1)[-1] in str(error["detail"])  # it says which layer
    assert runtime.store.find("me/broken") is None
    assert _names(requests.get(f"{server.url}/api/tags", timeout=30)) == {"tiny:latest"}


def test_a_bad_config_blob_is_refused_when_pushed(server: BackgroundServer, runtime: Runtime) -> None:
    tiny = runtime.store.get("tiny").manifest
    config = Layer(mediaType=MEDIA_CONFIG, digest=_upload(server.url, b"[1, 2]"), size=6)
    manifest = Manifest(config=config, layers=tiny.layers)
    resp = requests.put(f"{server.url}/v2/me/broken/manifests/latest", data=manifest.to_bytes(), timeout=30)
    assert resp.status_code == 400 and "config" in str(resp.json()["errors"][0]["detail"])


def test_a_text_layer_too_large_to_be_one_is_refused(server: BackgroundServer, runtime: Runtime) -> None:
    """The weights blob named as a system prompt: refused by its size, not read into memory."""
    tiny = runtime.store.get("tiny").manifest
    weights = tiny.layers[0]
    huge = Layer(mediaType=MEDIA_SYSTEM, digest=weights.digest, size=weights.size)
    from nbllm.store import layer_contents

    assert weights.size > 0
    limit = layer_contents.MAX_SMALL_LAYER
    layer_contents.MAX_SMALL_LAYER = weights.size - 1  # the tiny GGUF is small; pretend the limit is lower
    try:
        manifest = Manifest(config=tiny.config, layers=[*tiny.layers, huge])
        resp = requests.put(f"{server.url}/v2/me/huge/manifests/latest", data=manifest.to_bytes(), timeout=30)
    finally:
        layer_contents.MAX_SMALL_LAYER = limit
    assert resp.status_code == 400 and "too large" in str(resp.json()["errors"][0]["detail"])


@pytest.mark.parametrize(("media", "data"), BAD_LAYERS, ids=IDS)
def test_a_bad_layer_in_the_store_breaks_only_its_model(
    server: BackgroundServer, runtime: Runtime, store_root: Path, media: str, data: bytes
) -> None:
    store = runtime.store
    # in the store already (written past the checks, as an older nbllm or another tool could have)
    store.manifests.write(ModelName.parse("broken"), _broken_manifest(server.url, store, media, data))
    url = server.url
    assert _names(requests.get(f"{url}/api/tags", timeout=30)) == {"tiny:latest", "broken:latest"}
    assert _names(requests.get(f"{url}/v1/models", timeout=30)) == {"tiny:latest", "broken:latest"}
    shown = requests.post(f"{url}/api/show", json={"model": "broken"}, timeout=30)
    assert shown.status_code == 200, shown.text
    chat = requests.post(
        f"{url}/api/chat",
        json={"model": "broken", "messages": [{"role": "user", "content": "hi"}], "stream": False},
        timeout=30,
    )
    assert chat.status_code == 400 and "damaged" in chat.json()["error"] and "nbllm rm broken" in chat.json()["error"]

    report = verify_store(store)
    assert report.broken_models() == ["broken:latest"]
    assert [p.kind for p in report.problems] == ["content"]

    gone = requests.delete(f"{url}/api/delete", json={"model": "broken"}, timeout=30)
    assert gone.status_code == 200, gone.text
    assert _names(requests.get(f"{url}/api/tags", timeout=30)) == {"tiny:latest"}
    assert verify_store(store).ok


def test_the_cli_lists_verifies_and_removes_a_damaged_model(
    server: BackgroundServer, runtime: Runtime, store_root: Path
) -> None:
    store = runtime.store
    store.manifests.write(ModelName.parse("broken"), _broken_manifest(server.url, store, MEDIA_PARAMS, b"[1,2]"))
    env = {"OLLAMA_HOST": server.url, "OLLAMA_MODELS": str(store_root)}
    listed = nbllm("list", env=env)
    assert listed.returncode == 0, listed.stderr
    assert "broken:latest" in listed.stdout and "tiny:latest" in listed.stdout
    verified = nbllm("verify", env=env)
    assert verified.returncode == 1
    assert "tiny:latest: ok" in verified.stdout
    assert "broken:latest: content: sha256:" in verified.stdout and "params layer" in verified.stdout
    removed = nbllm("rm", "broken", env=env)
    assert removed.returncode == 0, removed.stderr
    assert nbllm("verify", env=env).returncode == 0


def test_a_missing_text_blob_does_not_break_the_listing(server: BackgroundServer, runtime: Runtime) -> None:
    store = runtime.store
    store.manifests.write(ModelName.parse("broken"), _broken_manifest(server.url, store, MEDIA_SYSTEM, b"be brief"))
    store.blobs.delete("sha256:" + hashlib.sha256(b"be brief").hexdigest())
    assert _names(requests.get(f"{server.url}/api/tags", timeout=30)) == {"tiny:latest", "broken:latest"}
    assert requests.delete(f"{server.url}/api/delete", json={"model": "broken"}, timeout=30).status_code == 200


def test_an_unreadable_manifest_can_be_removed(server: BackgroundServer, runtime: Runtime) -> None:
    path = runtime.store.manifests.root / "registry.ollama.ai" / "library" / "junk" / "latest"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"layers": 5}))
    assert _names(requests.get(f"{server.url}/api/tags", timeout=30)) == {"tiny:latest"}
    shown = requests.post(f"{server.url}/api/show", json={"model": "junk"}, timeout=30)
    assert str(runtime.store.root) not in shown.text  # (a damaged manifest: no server path in the answer)
    gone = requests.delete(f"{server.url}/api/delete", json={"model": "junk"}, timeout=30)
    assert gone.status_code == 200, gone.text
    assert not path.exists()


def test_a_pull_from_a_hostile_registry_is_refused(server: BackgroundServer, runtime: Runtime, tmp_path: Path) -> None:
    """The registry (an nbllm server whose store holds a damaged model) serves a manifest with a params
    layer that is not JSON: the pulling server refuses it and its listings go on."""
    store = runtime.store
    store.manifests.write(ModelName.parse("broken"), _broken_manifest(server.url, store, MEDIA_PARAMS, b"[1,2]"))
    settings = Settings(home=tmp_path / "dest-home", models=tmp_path / "dest")
    with Runtime.from_settings(settings, engine_factory=FakeEngineFactory()) as dest_rt:
        dest = BackgroundServer(dest_rt, port=0).start()
        try:
            host = server.url.removeprefix("http://")
            body = {"model": f"{host}/library/broken", "insecure": True, "stream": False}
            resp = requests.post(f"{dest.url}/api/pull", json=body, timeout=60)
            assert resp.status_code == 500 and "damaged model" in resp.json()["error"], resp.text
            assert "params layer" in resp.json()["error"]
            assert dest_rt.store.find(f"{host}/library/broken") is None
            assert _names(requests.get(f"{dest.url}/api/tags", timeout=30)) == set()
        finally:
            dest.stop()


def test_verify_checks_that_a_template_works(runtime: Runtime, tmp_path: Path) -> None:
    install_model(runtime.store, "bad", write_tiny_gguf(tmp_path / "bad.gguf"), template='{{ template "nope" . }}')
    report = verify_store(runtime.store, check_template=check_template)
    assert report.broken_models() == ["bad:latest"]
    [problem] = report.problems
    assert problem.kind == "content" and 'template "nope" not defined' in problem.detail
