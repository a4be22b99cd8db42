"""Client mistakes are 4xx with a clear message, never a 5xx: names too long for a filesystem, odd file
names, files that are not what they are called, templates that fail only when run. Failed creates
leave nothing behind and name no server path; leftovers of old downloads go at startup; what nbllm
writes into the store is readable by its user only. Over HTTP against a server on loopback.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from nbllm.config import Settings
from nbllm.engine.fake import FakeEngineFactory
from nbllm.runtime import Runtime
from nbllm.server import BackgroundServer
from nbllm.store import ModelName
from nbllm.store.digest import digest_bytes
from nbllm.store.manifests import MEDIA_TEMPLATE
from tests.cli.support import nbllm
from tests.conftest import CHATML
from tests.support.hf_models import make_hf_model
from tests.support.models import install_model
from tests.support.tiny_gguf import write_tiny_gguf

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

TALLY: Counter[str] = Counter()
"""Adversarial requests sent and 5xx answers seen, over the module (printed at its end with -s)."""


@pytest.fixture(scope="module", autouse=True)
def _report() -> Iterator[None]:
    yield
    print(f"\nadversarial requests: {TALLY['sent']}, 5xx answers: {TALLY['5xx']}")


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


@pytest.fixture
def runtime(tmp_path: Path, home: Path) -> Iterator[Runtime]:
    """A FakeEngine runtime (these are the edge's and the store's answers) with ``tiny``."""
    rt = Runtime.from_settings(Settings(home=home, models=home / "models"), engine_factory=FakeEngineFactory())
    install_model(rt.store, "tiny", write_tiny_gguf(tmp_path / "tiny.gguf"), template=CHATML)
    yield rt
    rt.close()


Send = Callable[..., requests.Response]


@pytest.fixture
def send(server: BackgroundServer) -> Send:
    """``send(method, path, body)``: one adversarial request; a 5xx fails the test at once."""

    def go(method: str, path: str, body: dict[str, Any]) -> requests.Response:
        resp = requests.request(method, server.url + path, json=body, timeout=60)
        TALLY["sent"] += 1
        if resp.status_code >= 500:
            TALLY["5xx"] += 1
        assert resp.status_code < 500, f"{method} {path} {json.dumps(body)[:300]} -> {resp.status_code} {resp.text}"
        return resp

    return go


def _upload(url: str, data: bytes) -> str:
    digest = digest_bytes(data)
    assert requests.post(f"{url}/api/blobs/{digest}", data=data, timeout=30).status_code in (200, 201)
    return digest


# ---------------------------------------------------------------- model names

_ODD = st.sampled_from(["", ".", "..", "a" * 255, "a" * 256, "é" * 128, "\ud800", "a\x00b", "x" * 300, "-", "_"])
_PART = st.one_of(
    st.text(min_size=0, max_size=300),
    st.text(alphabet="abcXYZ019_.-:", min_size=1, max_size=400),
    _ODD,
)
_NAMES = st.builds(
    lambda parts, tag: "/".join(parts) + (f":{tag}" if tag is not None else ""),
    st.lists(_PART, min_size=1, max_size=4),
    st.none() | _PART,
)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@example("h" * 300 + "/library/x:latest")
@example("h" * 255 + "/library/x:latest")
@example("h" * 256 + "/" + "n" * 80 + "/" + "m" * 80 + ":" + "t" * 80)
@given(name=_NAMES)
def test_model_names_never_make_a_5xx(send: Send, name: str) -> None:
    send("POST", "/api/show", {"model": name})
    send("POST", "/api/copy", {"source": "tiny", "destination": name})
    send("POST", "/api/copy", {"source": name, "destination": "copied"})
    send("POST", "/api/create", {"model": name, "from": "tiny", "stream": False})
    send("DELETE", "/api/delete", {"model": name})
    if not ModelName.is_valid(name):  # (a valid one would go to the network)
        resp = send("POST", "/api/pull", {"model": name, "stream": False})
        assert resp.status_code == 400


def test_a_host_part_too_long_for_a_file_name_says_so(send: Send) -> None:
    name = "h" * 300 + "/library/x"
    for method, path, body in [
        ("POST", "/api/show", {"model": name}),
        ("POST", "/api/copy", {"source": "tiny", "destination": name}),
        ("DELETE", "/api/delete", {"model": name}),
    ]:
        resp = send(method, path, body)
        assert resp.status_code == 400 and "invalid" in resp.json()["error"], resp.text


# ---------------------------------------------------------------- create: files and templates


@pytest.mark.parametrize(
    "path",
    ["a\x00b.gguf", "a\nb.gguf", "sub/\x7f.gguf", "x" * 256 + ".gguf", "/".join(["d" * 200] * 6) + "/m.gguf"],
    ids=["nul", "newline", "del", "long-name", "long-path"],
)
def test_odd_file_names_are_a_400(send: Send, server: BackgroundServer, tmp_path: Path, path: str) -> None:
    digest = _upload(server.url, write_tiny_gguf(tmp_path / "w.gguf").read_bytes())
    for field in ("files", "adapters"):
        body = {"model": "m", field: {path: digest}, "stream": False} | (
            {"from": "tiny"} if field == "adapters" else {}
        )
        resp = send("POST", "/api/create", body)
        assert resp.status_code == 400 and "file path" in resp.json()["error"], resp.text


def test_a_file_named_gguf_that_is_not_one(send: Send, server: BackgroundServer, runtime: Runtime) -> None:
    for data, message in [
        (b"hello, I am a text file", "x.gguf is not a GGUF file"),
        (b"GGUF\x03\x00", "x.gguf is not a valid GGUF file"),
        (b"GGUF\x03\x00\x00\x00" + b"\xff" * 64, "x.gguf is not a valid GGUF file"),
    ]:
        digest = _upload(server.url, data)
        resp = send("POST", "/api/create", {"model": "m", "files": {"x.gguf": digest}, "stream": False})
        assert resp.status_code == 400 and message in resp.json()["error"], resp.text
        assert not runtime.store.blobs.has(digest)  # what the failed create was given is not kept
        digest = _upload(server.url, data)
        resp = send(
            "POST", "/api/create", {"model": "m", "from": "tiny", "adapters": {"x.gguf": digest}, "stream": False}
        )
        assert resp.status_code == 400 and message in resp.json()["error"], resp.text


BAD_TEMPLATES = [
    '{{ template "nope" }}',
    '{{ template "nope" . }}',
    "{{ range .Messages }}{{ .Content.Foo }}{{ end }}",
    "{{ index .Messages 7 }}",
    "{{ if .Messages }}",
]


@pytest.mark.parametrize("template", BAD_TEMPLATES)
def test_a_template_that_fails_when_run_is_refused_by_create(send: Send, runtime: Runtime, template: str) -> None:
    resp = send("POST", "/api/create", {"model": "m", "from": "tiny", "template": template, "stream": False})
    assert resp.status_code == 400 and resp.json()["error"].startswith("template error:"), resp.text
    assert runtime.store.find("m") is None


def test_good_templates_still_pass(send: Send, runtime: Runtime) -> None:
    for template in [CHATML, "{{ .Prompt }}", "{{ if .System }}{{ .System }}{{ end }}{{ .Prompt }}{{ .Response }}"]:
        resp = send("POST", "/api/create", {"model": "m", "from": "tiny", "template": template, "stream": False})
        assert resp.status_code == 200, resp.text


@pytest.mark.parametrize("template", BAD_TEMPLATES[1:3])
def test_a_stored_template_that_fails_is_a_400_when_used(
    send: Send, runtime: Runtime, tmp_path: Path, template: str
) -> None:
    """A model made past create's checks (another tool, an older nbllm): chat and generate say what is
    wrong with a 400; show still answers."""
    install_model(runtime.store, "bad", write_tiny_gguf(tmp_path / "bad.gguf"), template=template)
    chat = send("POST", "/api/chat", {"model": "bad", "messages": [{"role": "user", "content": "hi"}], "stream": False})
    assert chat.status_code == 400 and "template" in chat.json()["error"], chat.text
    gen = send("POST", "/api/generate", {"model": "bad", "prompt": "hi", "stream": False})
    assert gen.status_code == 400 and "template" in gen.json()["error"], gen.text
    v1 = send("POST", "/v1/chat/completions", {"model": "bad", "messages": [{"role": "user", "content": "hi"}]})
    assert v1.status_code == 400 and "template" in v1.json()["error"]["message"], v1.text
    shown = send("POST", "/api/show", {"model": "bad"})
    assert shown.status_code == 200 and shown.json()["template"] == template


# ---------------------------------------------------------------- leftovers and leaks


def _failing_creates(url: str, tmp_path: Path) -> list[dict[str, Any]]:
    """Create requests that fail inside the server's work directory or store."""
    hf = make_hf_model(tmp_path / "hf", "qwen2")
    (hf / "tokenizer.json").unlink()
    hf_files = {p.name: _upload(url, p.read_bytes()) for p in sorted(hf.iterdir()) if p.is_file()}
    lora = _upload(url, hf.joinpath("model.safetensors").read_bytes())
    junk = _upload(url, b"\x08\x00\x00\x00\x00\x00\x00\x00{not json")
    return [
        {"model": "m", "files": hf_files},  # a safetensors directory without its tokenizer
        {"model": "m", "from": "tiny", "adapters": {"adapter_model.safetensors": lora}},  # no adapter_config.json
        {"model": "m", "files": {"model.safetensors": junk, "config.json": hf_files["config.json"]}},
        {"model": "m", "files": {"x.gguf": _upload(url, b"GGUF\x03\x00\x00\x00")}},
        {"model": "m", "files": {"x.gguf": "sha256:" + "1" * 64}},
        {"model": "m", "from": "tiny", "template": '{{ template "x" . }}'},
        {"model": "m", "from": "sha256:" + "2" * 64},
    ]


def test_failed_creates_name_no_server_path_and_keep_no_upload(
    send: Send, server: BackgroundServer, runtime: Runtime, home: Path, tmp_path: Path
) -> None:
    before = set(runtime.store.blobs.digests())
    for body in _failing_creates(server.url, tmp_path):
        for stream in (False, True):
            resp = send("POST", "/api/create", {**body, "stream": stream})
            text = resp.text
            assert resp.status_code == 400 or '"error"' in text, text
            assert str(home) not in text and str(tmp_path) not in text and "/tmp/" not in text, text
    assert set(runtime.store.blobs.digests()) == before  # every upload of a failed create removed
    assert not list(runtime.store.tmp_dir.glob("create-*"))


def test_the_cli_uploads_nothing_that_is_not_a_model(
    server: BackgroundServer, runtime: Runtime, tmp_path: Path
) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("password=hunter2\n")
    fake = tmp_path / "model.gguf"
    fake.write_text("not a model either")
    before = set(runtime.store.blobs.digests())
    for line in ("FROM ./secret.txt", "FROM ./model.gguf", "FROM tiny\nADAPTER ./secret.txt"):
        (tmp_path / "Modelfile").write_text(line + "\n")
        done = nbllm("create", "m", "-f", str(tmp_path / "Modelfile"), env={"OLLAMA_HOST": server.url})
        assert done.returncode == 1 and "nothing was uploaded" in done.stderr, done.stderr
    assert set(runtime.store.blobs.digests()) == before
    assert not runtime.store.blobs.has(digest_bytes(secret.read_bytes()))


def _partial(root: Path, data: bytes, *, age: float) -> Path:
    path = root / f"sha256-{hashlib.sha256(data).hexdigest()}-partial"
    path.write_bytes(data[: len(data) // 2])
    os.utime(path, (time.time() - age, time.time() - age))
    return path


def test_abandoned_partial_downloads_go_at_startup(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "home", models=tmp_path / "models")
    rt = Runtime.from_settings(settings, engine_factory=FakeEngineFactory())
    install_model(rt.store, "tiny", write_tiny_gguf(tmp_path / "tiny.gguf"))
    blobs = rt.store.blobs.root
    old = [_partial(blobs, b"old download %d" % i, age=3 * 86400) for i in range(82)]
    recent = _partial(blobs, b"a pull that stopped an hour ago", age=3600)
    weights = rt.store.get("tiny").model_path
    assert weights is not None
    complete = _partial(blobs, weights.read_bytes(), age=60)  # tiny's weights: finished by a later pull
    locked = _partial(blobs, b"a pull running in another process", age=3 * 86400)
    wheel = rt.store.tmp_dir / "llm_x-1.0-py3-none-any.whl.partial"
    wheel.parent.mkdir(parents=True, exist_ok=True)
    wheel.write_bytes(b"PK")
    os.utime(wheel, (time.time() - 3 * 86400,) * 2)
    with locked.open("rb") as fh:
        if fcntl is not None:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        rt.startup()
    assert not any(p.exists() for p in old) and not complete.exists() and not wheel.exists()
    assert recent.exists()  # resumable
    assert locked.exists() or fcntl is None  # a download holds it
    rt.close()


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_what_nbllm_writes_is_not_world_readable(send: Send, server: BackgroundServer, runtime: Runtime) -> None:
    store = runtime.store
    assert _mode(store.root) == 0o700 and _mode(store.blobs.root) == 0o700 and _mode(store.manifests.root) == 0o700
    digest = _upload(server.url, b"an upload")
    assert _mode(store.blobs.path(digest)) == 0o600
    resp = send("POST", "/api/create", {"model": "me/mine:v1", "from": "tiny", "system": "be brief", "stream": False})
    assert resp.status_code == 200, resp.text
    model = store.get("me/mine:v1")
    manifest = store.manifests.find(model.name)
    assert manifest is not None and _mode(manifest) == 0o600
    assert _mode(manifest.parent) == 0o700 and _mode(manifest.parent.parent) == 0o700  # me/, mine/
    for d in model.manifest.digests():
        assert _mode(store.blobs.path(d)) == 0o600, d


def test_an_existing_store_keeps_its_modes(tmp_path: Path) -> None:
    """A store Ollama made (0755 directories) is used as it is: nbllm does not take it away from others."""
    root = tmp_path / "ollama-models"
    (root / "blobs").mkdir(parents=True)
    (root / "manifests").mkdir()
    for d in (root, root / "blobs", root / "manifests"):
        d.chmod(0o755)
    rt = Runtime.from_settings(Settings(home=tmp_path / "home", models=root), engine_factory=FakeEngineFactory())
    install_model(rt.store, "tiny", write_tiny_gguf(tmp_path / "tiny.gguf"))
    assert all(_mode(d) == 0o755 for d in (root, root / "blobs", root / "manifests"))
    rt.close()


def test_on_the_real_engine_a_failing_template_is_a_400_and_serving_goes_on(
    live_server: BackgroundServer, real_runtime: Runtime
) -> None:
    """SmolLM2 through a real server: create refuses the template; a model that has one anyway (written
    past create) answers 400 on chat and generate, 200 on show; the good model goes on answering."""
    url, store, bad = live_server.url, real_runtime.store, '{{ template "nope" . }}'
    body = {"model": "h18-bad-template", "from": "smollm2:135m", "template": bad, "stream": False}
    resp = requests.post(f"{url}/api/create", json=body, timeout=120)
    assert resp.status_code == 400 and "template error" in resp.json()["error"], resp.text
    smol = store.get("smollm2:135m")
    layers = [layer for layer in smol.manifest.layers if layer.mediaType != MEDIA_TEMPLATE]
    store.write_model(ModelName.parse("h18-bad-template"), [*layers, store.add_text_layer(MEDIA_TEMPLATE, bad)], {})
    try:
        hi = [{"role": "user", "content": "hi"}]
        chat = requests.post(f"{url}/api/chat", json={"model": "h18-bad-template", "messages": hi, "stream": False})
        assert chat.status_code == 400 and "template" in chat.json()["error"], chat.text
        gen = requests.post(f"{url}/api/generate", json={"model": "h18-bad-template", "prompt": "hi", "stream": False})
        assert gen.status_code == 400 and "template" in gen.json()["error"], gen.text
        assert requests.post(f"{url}/api/show", json={"model": "h18-bad-template"}).status_code == 200
        good = {"model": "smollm2:135m", "messages": hi, "stream": False, "options": {"num_predict": 4, "num_ctx": 256}}
        answer = requests.post(f"{url}/api/chat", json=good, timeout=300)
        assert answer.status_code == 200 and answer.json()["done"] and answer.json()["message"]["content"], answer.text
    finally:
        assert requests.delete(f"{url}/api/delete", json={"model": "h18-bad-template"}).status_code == 200
