"""nbllm's /v2/ registry endpoints and /api/push, over ASGI (the fake runtime's ``tiny`` model)."""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import json
from typing import Any

import pytest
from fastapi.testclient import TestClient

from nbllm.runtime import Runtime
from nbllm.service import blobs, distribution
from nbllm.store.digest import digest_bytes
from nbllm.store.manifests import MEDIA_MANIFEST

REPO = "/v2/library/tiny"


def _manifest(app_client: TestClient) -> dict:  # type: ignore[type-arg]
    return json.loads(app_client.get(f"{REPO}/manifests/latest").content)


def test_version_check(app_client: TestClient) -> None:
    resp = app_client.get("/v2/")
    assert resp.status_code == 200 and resp.headers["docker-distribution-api-version"] == "registry/2.0"


def test_manifest_by_tag_and_digest_is_the_stored_file(app_client: TestClient, fake_runtime: Runtime) -> None:
    resp = app_client.get(f"{REPO}/manifests/latest", headers={"Accept": MEDIA_MANIFEST})
    assert resp.status_code == 200 and resp.headers["content-type"] == MEDIA_MANIFEST
    digest = hashlib.sha256(resp.content).hexdigest()
    assert resp.headers["docker-content-digest"] == f"sha256:{digest}"
    listed = app_client.get("/api/tags").json()["models"]
    assert [m["digest"] for m in listed if m["name"] == "tiny:latest"] == [digest]
    assert app_client.get(f"{REPO}/manifests/sha256:{digest}").content == resp.content
    head = app_client.head(f"{REPO}/manifests/latest")
    assert head.status_code == 200 and head.headers["content-length"] == str(len(resp.content))
    assert app_client.get("/v2/library/tiny/tags/list").json() == {"name": "library/tiny", "tags": ["latest"]}


def test_unknown_and_invalid_names(app_client: TestClient) -> None:
    resp = app_client.get("/v2/library/nothing/manifests/latest")
    assert resp.status_code == 404 and resp.json()["errors"][0]["code"] == "MANIFEST_UNKNOWN"
    assert app_client.get("/v2/library/-bad/manifests/latest").json()["errors"][0]["code"] == "NAME_INVALID"
    assert app_client.get("/v2/library/nothing/tags/list").status_code == 404
    assert app_client.get(f"{REPO}/blobs/sha256:xyz").status_code == 400
    assert app_client.get(f"{REPO}/blobs/sha256:{'0' * 64}").json()["errors"][0]["code"] == "BLOB_UNKNOWN"


def test_blobs_are_served_with_ranges(app_client: TestClient, fake_runtime: Runtime) -> None:
    layer = _manifest(app_client)["layers"][0]
    data = fake_runtime.store.blobs.path(layer["digest"]).read_bytes()
    full = app_client.get(f"{REPO}/blobs/{layer['digest']}")
    assert full.status_code == 200 and full.content == data
    assert full.headers["docker-content-digest"] == layer["digest"]
    part = app_client.get(f"{REPO}/blobs/{layer['digest']}", headers={"Range": "bytes=100-"})
    assert part.status_code == 206 and part.content == data[100:]
    assert part.headers["content-range"] == f"bytes 100-{len(data) - 1}/{len(data)}"


def _start(app_client: TestClient, repo: str = "/v2/me/new") -> str:
    resp = app_client.post(f"{repo}/blobs/uploads/")
    assert resp.status_code == 202 and resp.headers["range"] == "0-0"
    return resp.headers["location"]


def test_chunked_upload_is_verified_then_stored(app_client: TestClient, fake_runtime: Runtime) -> None:
    data = b"hello registry " * 1000
    digest = digest_bytes(data)
    location = _start(app_client)
    first = app_client.patch(location, content=data[:4000], headers={"Content-Range": "0-3999"})
    assert first.status_code == 202 and first.headers["range"] == "0-3999"
    skipped = app_client.patch(location, content=data[5000:], headers={"Content-Range": "5000-14999"})
    assert skipped.status_code == 416  # a chunk must continue where the upload stands
    app_client.patch(location, content=data[4000:], headers={"Content-Range": f"4000-{len(data) - 1}"})
    assert not fake_runtime.store.blobs.has(digest)
    done = app_client.put(location, params={"digest": digest})
    assert done.status_code == 201 and done.headers["docker-content-digest"] == digest
    assert fake_runtime.store.blobs.path(digest).read_bytes() == data
    assert app_client.head(f"/v2/me/new/blobs/{digest}").status_code == 200
    assert not list(fake_runtime.store.blobs.root.glob(".tmp-*"))


def test_an_upload_with_a_wrong_digest_is_refused_and_nothing_stored(
    app_client: TestClient, fake_runtime: Runtime
) -> None:
    data = b"the real bytes"
    claimed = digest_bytes(b"other bytes")
    before = set(fake_runtime.store.blobs.digests())
    location = _start(app_client)
    app_client.patch(location, content=data)
    resp = app_client.put(location, params={"digest": claimed})
    assert resp.status_code == 400 and resp.json()["errors"][0]["code"] == "DIGEST_INVALID"
    mono = app_client.post("/v2/me/new/blobs/uploads/", params={"digest": claimed}, content=data)
    assert mono.status_code == 400
    assert set(fake_runtime.store.blobs.digests()) == before
    assert not list(fake_runtime.store.blobs.root.glob(".tmp-*"))
    assert app_client.put(location, params={"digest": claimed}).status_code == 404  # the upload is gone


def test_monolithic_upload_and_mount(app_client: TestClient, fake_runtime: Runtime) -> None:
    data = b"monolithic"
    resp = app_client.post("/v2/me/new/blobs/uploads/", params={"digest": digest_bytes(data)}, content=data)
    assert resp.status_code == 201 and fake_runtime.store.blobs.has(digest_bytes(data))
    existing = _manifest(app_client)["layers"][0]["digest"]
    mount = app_client.post("/v2/me/new/blobs/uploads/", params={"mount": existing, "from": "library/tiny"})
    assert mount.status_code == 201 and mount.headers["docker-content-digest"] == existing


def test_a_manifest_is_accepted_only_when_its_blobs_are_present(app_client: TestClient, fake_runtime: Runtime) -> None:
    manifest = _manifest(app_client)
    missing = json.loads(json.dumps(manifest))
    missing["layers"][0]["digest"] = "sha256:" + "1" * 64
    resp = app_client.put("/v2/me/copy/manifests/v1", content=json.dumps(missing))
    assert resp.status_code == 400 and resp.json()["errors"][0]["code"] == "MANIFEST_BLOB_UNKNOWN"
    wrong_size = json.loads(json.dumps(manifest))
    wrong_size["layers"][0]["size"] += 1
    assert app_client.put("/v2/me/copy/manifests/v1", content=json.dumps(wrong_size)).status_code == 400
    assert app_client.put("/v2/me/copy/manifests/v1", content=b"{not json").status_code == 400
    assert "me/copy:v1" not in [m["name"] for m in app_client.get("/api/tags").json()["models"]]
    headers = {"Content-Type": MEDIA_MANIFEST}
    ok = app_client.put("/v2/me/copy/manifests/v1", content=json.dumps(manifest), headers=headers)
    assert ok.status_code == 201
    assert "me/copy:v1" in [m["name"] for m in app_client.get("/api/tags").json()["models"]]
    assert fake_runtime.store.get("me/copy:v1").manifest.digests() == fake_runtime.store.get("tiny").manifest.digests()


def test_api_push_errors(app_client: TestClient) -> None:
    resp = app_client.post("/api/push", json={"model": ""})
    assert resp.status_code == 400 and resp.json() == {"error": "model is required"}
    resp = app_client.post("/api/push", json={"model": "127.0.0.1:9/me/absent:v1", "insecure": True})
    assert resp.status_code == 404 and "not found" in resp.json()["error"]
    resp = app_client.post("/api/push", json={"model": "bad name!"})
    assert resp.status_code == 400 and "invalid model name" in resp.json()["error"]
    app_client.post("/api/copy", json={"source": "tiny", "destination": "127.0.0.1:9/me/tiny:v1"})
    resp = app_client.post("/api/push", json={"model": "127.0.0.1:9/me/tiny:v1", "insecure": True, "stream": False})
    assert resp.status_code == 500 and "127.0.0.1:9" in resp.json()["error"]  # nothing listens on port 9


_PURE = {"repository", "upload_digest"}  # no disk: called on the event loop


def test_every_store_access_of_the_registry_routes_runs_in_a_worker_thread(
    app_client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The routes are adapters over service.distribution and service.blobs; what touches the disk runs
    off the event loop (a thread with no running asyncio loop)."""
    calls: list[str] = []
    for module in (distribution, blobs):
        for name in module.__all__:
            target = getattr(module, name)
            if not inspect.isfunction(target) or name in _PURE:
                continue

            def off_loop(*args: Any, _name: str = name, _target: Any = target, **kwargs: Any) -> Any:
                with pytest.raises(RuntimeError):
                    asyncio.get_running_loop()
                calls.append(_name)
                return _target(*args, **kwargs)

            monkeypatch.setattr(module, name, off_loop)
    manifest = _manifest(app_client)
    data = b"x" * 3000
    location = _start(app_client)
    app_client.patch(location, content=data[:1000], headers={"Content-Range": "0-999"})
    app_client.get(location)
    app_client.put(location, params={"digest": digest_bytes(data)}, content=data[1000:])
    app_client.delete(_start(app_client))
    app_client.post("/v2/me/new/blobs/uploads/", params={"mount": manifest["layers"][0]["digest"]})
    app_client.get(f"{REPO}/blobs/{manifest['layers'][0]['digest']}")
    app_client.get(f"{REPO}/tags/list")
    app_client.put("/v2/me/copy/manifests/v1", content=json.dumps(manifest))
    app_client.head(f"/api/blobs/{digest_bytes(data)}")
    app_client.post(f"/api/blobs/{digest_bytes(b'new')}", content=b"new")
    expected = {n for m in (distribution, blobs) for n in m.__all__ if inspect.isfunction(getattr(m, n))} - _PURE
    assert expected - {"put_blob", "has_blob"} <= set(calls)  # has_blob/put_blob: the in-process client's
