"""A model directory exactly as Ollama writes it, used through OLLAMA_MODELS: list, show and chat.

The directory holds the real SmolLM2 GGUF, manifests as Ollama's ``json.Marshal`` writes them, a Go
template, a params layer, a license, a model made with ``ollama create`` (a system layer), a blob
under the legacy ``sha256:<hex>`` name, partial-download leftovers and an unreferenced blob.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

import ollama
import pytest

from nbllm.config import Settings
from nbllm.runtime import Runtime
from nbllm.server import BackgroundServer

TEMPLATE = """{{- range $i, $_ := .Messages }}
{{- $last := eq (len (slice $.Messages $i)) 1 -}}
<|im_start|>{{ .Role }}
{{ .Content }}{{ if not $last }}<|im_end|>
{{ end }}
{{- if and (ne .Role "assistant") $last }}<|im_end|>
<|im_start|>assistant
{{ end }}
{{- end }}"""
PARAMS = {"stop": ["<|im_start|>", "<|im_end|>"]}
SYSTEM = "You are a pirate. Answer in one short sentence."


def _blob(blobs: Path, data: bytes, *, legacy: bool = False) -> dict[str, object]:
    hexdigest = hashlib.sha256(data).hexdigest()
    (blobs / (("sha256:" if legacy else "sha256-") + hexdigest)).write_bytes(data)
    return {"digest": f"sha256:{hexdigest}", "size": len(data)}


def _manifest(root: Path, name: tuple[str, ...], layers: list[dict[str, object]], config: dict[str, object]) -> None:
    blobs = root / "blobs"
    config_blob = _blob(blobs, json.dumps(config, separators=(",", ":")).encode())
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json", **config_blob},
        "layers": layers,
    }
    path = root.joinpath("manifests", *name)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(manifest, separators=(",", ":")))  # Go's json.Marshal: compact, field order


@pytest.fixture(scope="module")
def ollama_models(real_runtime: Runtime, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``~/.ollama/models`` as Ollama leaves it after ``pull smollm2:135m`` and ``create pirate``."""
    root = tmp_path_factory.mktemp("ollama") / "models"
    blobs = root / "blobs"
    blobs.mkdir(parents=True)
    smol = real_runtime.store.get("smollm2:135m")
    assert smol.model_path is not None and smol.model_digest is not None
    weights = {"digest": smol.model_digest, "size": smol.model_path.stat().st_size}
    os.link(smol.model_path, blobs / ("sha256-" + smol.model_digest[7:]))
    model = {"mediaType": "application/vnd.ollama.image.model", **weights}
    template = {"mediaType": "application/vnd.ollama.image.template", **_blob(blobs, TEMPLATE.encode(), legacy=True)}
    license_ = {"mediaType": "application/vnd.ollama.image.license", **_blob(blobs, b"Apache License 2.0\n")}
    params = {"mediaType": "application/vnd.ollama.image.params", **_blob(blobs, json.dumps(PARAMS).encode())}
    config = {"model_format": "gguf", "model_family": "llama", "model_families": ["llama"], "model_type": "134.52M",
              "file_type": "Q4_1", "architecture": "amd64", "os": "linux"}  # fmt: skip
    layers = [model, template, license_, params]
    rootfs = {"type": "layers", "diff_ids": [x["digest"] for x in layers]}
    _manifest(root, ("registry.ollama.ai", "library", "smollm2", "135m"), layers, {**config, "rootfs": rootfs})
    system = {"mediaType": "application/vnd.ollama.image.system", **_blob(blobs, SYSTEM.encode())}
    greedy = {"mediaType": "application/vnd.ollama.image.params",
              **_blob(blobs, json.dumps({**PARAMS, "temperature": 0, "num_predict": 8}).encode())}  # fmt: skip
    created = [{**model, "from": "registry.ollama.ai/library/smollm2:135m"}, template, license_, system, greedy]
    _manifest(root, ("registry.ollama.ai", "library", "pirate", "latest"), created, config)
    (blobs / f"sha256-{'e' * 64}-partial").write_bytes(b"\0" * 10)  # an interrupted pull of something else
    (blobs / f"sha256-{'e' * 64}-partial-0").write_text('{"N":0,"Offset":0,"Size":10,"Completed":10}')
    _blob(blobs, b"nothing refers to me")
    return root


@pytest.fixture(scope="module")
def server(ollama_models: Path) -> Iterator[BackgroundServer]:
    mp = pytest.MonkeyPatch()
    mp.setenv("OLLAMA_MODELS", str(ollama_models))
    try:
        settings = Settings.from_env()
    finally:
        mp.undo()
    assert settings.models_dir == ollama_models
    rt = Runtime.from_settings(settings)
    srv = BackgroundServer(rt).start()
    yield srv
    srv.stop()
    rt.close()


@pytest.fixture
def client(server: BackgroundServer) -> Iterator[ollama.Client]:
    c = ollama.Client(host=server.url)
    yield c
    c._client.close()


def test_startup_fixes_legacy_blob_names_and_prunes_like_ollama(server: BackgroundServer, ollama_models: Path) -> None:
    names = sorted(p.name for p in (ollama_models / "blobs").iterdir())
    assert not [n for n in names if n.startswith("sha256:")]
    unreferenced = "sha256-" + hashlib.sha256(b"nothing refers to me").hexdigest()
    assert unreferenced not in names
    template = "sha256-" + hashlib.sha256(TEMPLATE.encode()).hexdigest()
    assert template in names


def test_list_and_show(client: ollama.Client) -> None:
    listed = {m.model: m for m in client.list().models}
    assert set(listed) == {"smollm2:135m", "pirate:latest"}
    assert listed["smollm2:135m"].details.family == "llama"
    assert listed["smollm2:135m"].details.quantization_level == "Q4_1"
    shown = client.show("smollm2:135m")
    assert shown.template == TEMPLATE and shown.license == "Apache License 2.0\n"
    assert shown.parameters is not None and 'stop                           "<|im_end|>"' in shown.parameters
    assert shown.modelinfo is not None and shown.modelinfo["general.architecture"] == "llama"
    pirate = client.show("pirate")
    assert pirate.modelfile is not None and SYSTEM in pirate.modelfile  # ollama-python has no ShowResponse.system
    assert pirate.parameters is not None and "num_predict" in pirate.parameters


def test_chat_with_ollamas_go_template_and_params(client: ollama.Client) -> None:
    answer = client.chat("pirate", messages=[{"role": "user", "content": "Where is the treasure?"}])
    assert answer.done and answer.message.content.strip()
    assert answer.eval_count is not None and answer.eval_count <= 8  # the params layer's num_predict
    generated = client.generate("smollm2:135m", prompt="Name a colour.", options={"temperature": 0, "num_predict": 8})
    assert generated.done and generated.response.strip()
