"""One digest, two spellings: ``sha256-<hex>`` and ``sha256:<hex>`` name the same blob everywhere (issue #18, item 2).

A client may name a blob either way (``/api/create`` ``files`` and ``adapters``, ``/api/blobs``, a
registry manifest, a manifest an older version wrote). Before the fix the string was stored as sent
and compared as a string, so deleting one model removed another's weights, a restart pruned a live
model's blob, and ``verify`` called an intact blob corrupt. Driven through a real server on loopback
(FakeEngines for speed; one test chats with SmolLM2 on llama.cpp).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hyp_settings
from hypothesis import strategies as st

from nbllm.config import Settings
from nbllm.engine.fake import FakeEngineFactory
from nbllm.runtime import Runtime
from nbllm.server import BackgroundServer
from nbllm.store import ModelName
from nbllm.store.local import ModelStore
from nbllm.store.manifests import MEDIA_ADAPTER, MEDIA_MODEL, Layer
from nbllm.store.verify import verify_store
from tests.conftest import CHATML
from tests.support.hf_models import write_lora_gguf
from tests.support.models import install_model
from tests.support.tiny_gguf import write_tiny_gguf

HEX = hashlib.sha256(b"x").hexdigest()


def spell(hex_: str, prefix: str, case: str, pad: tuple[str, str]) -> str:
    """A digest as a careless client might write it."""
    body = {"lower": hex_, "upper": hex_.upper(), "mixed": hex_[:32].upper() + hex_[32:]}[case]
    return f"{pad[0]}{prefix}{body}{pad[1]}"


SPELLINGS = st.tuples(
    st.sampled_from(["sha256:", "sha256-"]),
    st.sampled_from(["lower", "lower", "upper", "mixed"]),
    st.tuples(st.sampled_from(["", " ", "\t", "\n "]), st.sampled_from(["", " ", "\n"])),
)


class Store:
    """A real server over FakeEngines, its runtime, and an HTTP client."""

    def __init__(self, root: Path) -> None:
        self.settings = Settings(home=root / "home", models=root / "models")
        self.rt = Runtime.from_settings(self.settings, engine_factory=FakeEngineFactory())
        self.server = BackgroundServer(self.rt, port=0).start()
        self.http = httpx.Client(base_url=self.server.url, timeout=30)

    def blob(self, digest: str) -> Path:
        return self.rt.store.blobs.path(digest)

    def chat(self, model: str) -> httpx.Response:
        body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "stream": False}
        return self.http.post("/api/chat", json=body)

    def restarted(self) -> ModelStore:
        """A new runtime over the same store, started as a server starts (prune on)."""
        rt = Runtime.from_settings(self.settings, engine_factory=FakeEngineFactory())
        rt.startup()
        rt.close()
        return rt.store

    def close(self) -> None:
        self.http.close()
        self.server.stop()
        self.rt.close()


@pytest.fixture
def live(tmp_path: Path) -> Iterator[Store]:
    s = Store(tmp_path)
    install_model(s.rt.store, "a", write_tiny_gguf(tmp_path / "a.gguf"), template=CHATML)
    yield s
    s.close()


def weights(store: ModelStore, name: str) -> str:
    digest = store.get(name).model_digest
    assert digest is not None
    return digest


def test_layer_digests_are_normalised_on_validation() -> None:
    for given_ in (f"sha256-{HEX}", f"sha256:{HEX}", f"  sha256-{HEX}\n"):
        assert Layer(mediaType=MEDIA_MODEL, digest=given_, size=1).digest == f"sha256:{HEX}"
    for bad in (f"sha256:{HEX.upper()}", "sha256:xyz", f"md5:{HEX}", f"sha256:{HEX}0", ""):
        with pytest.raises(ValueError, match="digest"):
            Layer(mediaType=MEDIA_MODEL, digest=bad, size=1)


def test_create_files_in_any_spelling_never_costs_another_model_its_weights(live: Store, tmp_path: Path) -> None:
    a_digest = weights(live.rt.store, "a")
    a_hex = a_digest.removeprefix("sha256:")

    @given(spelling=SPELLINGS)
    @hyp_settings(max_examples=16, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    def check(spelling: tuple[str, str, tuple[str, str]]) -> None:
        digest = spell(a_hex, *spelling)
        resp = live.http.post("/api/create", json={"model": "b", "files": {"model.gguf": digest}, "stream": False})
        if spelling[1] != "lower":  # upper-case hex is refused, the same way everywhere
            assert resp.status_code == 400 and resp.json() == {"error": "invalid digest format"}
            assert live.http.head(f"/api/blobs/{digest.strip()}").status_code == 400
        else:
            assert resp.status_code == 200, resp.text
            assert verify_store(live.rt.store).ok  # no false "corrupt"
            restarted = live.restarted()  # a restart with pruning keeps every blob of b
            assert all(restarted.blobs.has(d) for d in restarted.get("b").manifest.digests())
            assert live.http.request("DELETE", "/api/delete", json={"model": "b"}).status_code == 200
        assert live.blob(a_digest).is_file()
        assert live.chat("a").status_code == 200
        assert verify_store(live.rt.store).ok

    check()


def test_create_adapters_in_any_spelling_keeps_the_other_users_of_the_adapter(live: Store, tmp_path: Path) -> None:
    rank = np.ones((1, 8), dtype=np.float32)
    lora = write_lora_gguf(tmp_path / "lora.gguf", "llama", {"blk.0.attn_q.weight": (rank, rank.T)}, 1.0)
    uploaded = live.http.post(
        f"/api/blobs/sha256-{hashlib.sha256(lora.read_bytes()).hexdigest()}", content=lora.read_bytes()
    )
    assert uploaded.status_code == 201
    digest = "sha256:" + hashlib.sha256(lora.read_bytes()).hexdigest()
    assert live.blob(digest).is_file()  # the dash spelling in the URL stored the blob under its one name
    body = {"model": "d", "from": "a", "adapters": {"lora.gguf": digest}, "stream": False}
    assert live.http.post("/api/create", json=body).status_code == 200

    @given(spelling=SPELLINGS)
    @hyp_settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    def check(spelling: tuple[str, str, tuple[str, str]]) -> None:
        spelled = spell(digest.removeprefix("sha256:"), *spelling)
        body = {"model": "c", "from": "a", "adapters": {"lora.gguf": spelled}, "stream": False}
        resp = live.http.post("/api/create", json=body)
        if spelling[1] != "lower":
            assert resp.status_code == 400 and resp.json() == {"error": "invalid digest format"}
            return
        assert resp.status_code == 200, resp.text
        assert [x.digest for x in live.rt.store.get("c").manifest.layers if x.mediaType == MEDIA_ADAPTER] == [digest]
        assert live.http.request("DELETE", "/api/delete", json={"model": "c"}).status_code == 200
        assert live.blob(digest).is_file()  # d still has its adapter
        assert verify_store(live.rt.store, ["d"]).ok

    check()
    assert live.restarted().get("d").adapters[0].is_file()


def test_blob_routes_take_either_spelling(live: Store) -> None:
    data = b"some bytes"
    hex_ = hashlib.sha256(data).hexdigest()
    assert live.http.head(f"/api/blobs/sha256-{hex_}").status_code == 404
    assert live.http.post(f"/api/blobs/sha256-{hex_}", content=data).status_code == 201
    assert live.http.post(f"/api/blobs/sha256:{hex_}", content=data).status_code == 200  # already here
    assert live.http.head(f"/api/blobs/sha256:{hex_}").status_code == 200
    assert [p.name for p in live.rt.store.blobs.root.iterdir() if hex_ in p.name] == [f"sha256-{hex_}"]
    assert live.http.post(f"/api/blobs/sha256-{hex_.upper()}", content=data).status_code == 400


def _write_raw(store: ModelStore, name: str, manifest: dict) -> None:  # type: ignore[type-arg]
    """A manifest file as an older nbllm (or a careless tool) left it: digests spelled with a dash."""
    path = store.manifests.root.joinpath(*ModelName.parse(name).parts())
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(json.dumps(manifest).encode())


def _dashed(store: ModelStore, name: str) -> dict:  # type: ignore[type-arg]
    raw = json.loads(store.manifests.read(ModelName.parse(name)).manifest.to_bytes())  # type: ignore[union-attr]
    for layer in [raw["config"], *raw["layers"]]:
        layer["digest"] = layer["digest"].replace(":", "-")
    return raw


def test_a_dash_spelled_manifest_on_disk_is_referenced_verified_and_kept(live: Store) -> None:
    store = live.rt.store
    _write_raw(store, "old", _dashed(store, "a"))
    raw = (store.manifests.root / "registry.ollama.ai/library/old/latest").read_bytes()
    stored = store.manifests.read(ModelName.parse("old"))
    assert stored is not None and stored.digest == hashlib.sha256(raw).hexdigest()  # its model digest is unchanged
    assert store.referenced() == store.get("a").manifest.digests()
    report = verify_store(store)
    assert report.ok and report.models == ("a:latest", "old:latest"), report.problems
    assert live.http.request("DELETE", "/api/delete", json={"model": "a"}).status_code == 200
    restarted = live.restarted()
    assert all(restarted.blobs.has(d) for d in restarted.get("old").manifest.digests())
    assert live.chat("old").status_code == 200


def test_prune_replaced_compares_normalised_digests(live: Store) -> None:
    store = live.rt.store
    _write_raw(store, "x", _dashed(store, "a"))  # x (dash-spelled) and a share every blob
    old = store.manifests.read(ModelName.parse("x"))
    assert old is not None
    other = write_tiny_gguf(live.blob(weights(store, "a")).parent.parent / "other.gguf", context_length=4096)
    install_model(store, "x", other)  # x moves to new weights, as a pull of a new version would
    new = store.get("x").manifest
    list(store.prune_replaced(old.manifest, new, prune=True))
    assert verify_store(store).ok and live.chat("a").status_code == 200


def test_a_registry_manifest_in_the_dash_spelling_is_stored_normalised(live: Store) -> None:
    raw = _dashed(live.rt.store, "a")
    resp = live.http.put("/v2/me/copy/manifests/latest", content=json.dumps(raw).encode())
    assert resp.status_code == 201, resp.text
    stored = live.rt.store.get("me/copy")
    assert all(layer.digest.startswith("sha256:") for layer in [stored.manifest.config, *stored.manifest.layers])
    assert live.http.request("DELETE", "/api/delete", json={"model": "me/copy"}).status_code == 200
    assert verify_store(live.rt.store).ok and live.chat("a").status_code == 200


@pytest.mark.model
def test_end_to_end_smollm2_keeps_chatting_after_a_dash_spelled_copy_is_deleted(live_server: BackgroundServer) -> None:
    with httpx.Client(base_url=live_server.url, timeout=120) as http:
        digest = _smol_weights(live_server)
        dashed = "sha256-" + digest.removeprefix("sha256:")
        body = {"model": "smol-dash", "files": {"model.gguf": dashed}, "stream": False}
        assert http.post("/api/create", json=body).status_code == 200
        http.request("DELETE", "/api/delete", json={"model": "smol-dash"}).raise_for_status()
        chat = {
            "model": "smollm2:135m",
            "messages": [{"role": "user", "content": "Say hi"}],
            "stream": False,
            "options": {"num_predict": 4, "temperature": 0},
            "keep_alive": 0,
        }
        resp = http.post("/api/chat", json=chat)
        assert resp.status_code == 200, resp.text
        assert resp.json()["message"]["content"]


def _smol_weights(server: BackgroundServer) -> str:
    digest = server.runtime.store.get("smollm2:135m").model_digest
    assert digest is not None
    return digest
