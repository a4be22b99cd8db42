"""Creating models every way with the official ``ollama`` client, then chatting with them on llama.cpp.

The live server runs the real engine. Models come from safetensors directories made in the test
(converted on the server), from a GGUF file, from a blob digest and from an existing model, with
quantization and a LoRA adapter; every one is then used through ``/api/chat`` or ``/api/generate``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import ollama
import pytest

from nbllm.server import BackgroundServer
from tests.support.hf_models import make_hf_model, write_lora_gguf

GREEDY = {"temperature": 0, "num_predict": 8}


@pytest.fixture
def client(live_server: BackgroundServer) -> Iterator[ollama.Client]:
    c = ollama.Client(host=live_server.url)
    created = {m.model for m in c.list().models}
    yield c
    for m in c.list().models:  # leave the shared server as it was: nothing of ours loaded or stored
        if m.model not in created:
            c.generate(m.model or "", keep_alive=0)
            c.delete(m.model or "")
    c._client.close()


def upload_dir(client: ollama.Client, directory: Path) -> dict[str, str]:
    return {p.name: client.create_blob(p) for p in sorted(directory.iterdir()) if p.is_file()}


def statuses(events: Iterator[ollama.ProgressResponse]) -> list[str]:
    return [e.status or "" for e in events]


@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_from_a_safetensors_directory_then_chat(client: ollama.Client, tmp_path: Path, family: str) -> None:
    files = upload_dir(client, make_hf_model(tmp_path / family, family))
    seen = statuses(client.create(f"conv-{family}", files=files, parameters=GREEDY, stream=True))
    assert seen[0] == "converting model" and seen[-2:] == ["writing manifest", "success"]
    info = client.show(f"conv-{family}")
    assert info.details and info.details.family == family and info.details.quantization_level == "F16"
    assert info.template and "message['role']" in info.template  # the chat template travelled into the GGUF
    assert info.modelinfo and info.modelinfo["general.architecture"] == family
    reply = client.chat(f"conv-{family}", messages=[{"role": "user", "content": "hello"}])
    assert reply.done and reply.eval_count == 8 and reply.prompt_eval_count and reply.prompt_eval_count > 5


def test_quantized_on_create_is_smaller_and_still_generates(client: ollama.Client, tmp_path: Path) -> None:
    src = make_hf_model(tmp_path / "hf", "qwen2", hidden=256, ffn=512)
    files = upload_dir(client, src)
    client.create("q-f16", files=files)
    events = list(client.create("q-q4km", files=upload_dir(client, src), quantize="q4_K_M", stream=True))
    bars = [e for e in events if e.status == "quantizing F16 model to Q4_K_M"]
    assert bars and bars[-1].completed == bars[-1].total and "verifying conversion" in statuses(iter(events))
    sizes = {m.model: m.size for m in client.list().models}
    assert sizes["q-q4km:latest"] < 0.5 * sizes["q-f16:latest"]
    assert client.show("q-q4km").details.quantization_level == "Q4_K_M"  # type: ignore[union-attr]
    out = client.generate("q-q4km", "The quick brown fox", options=GREEDY)
    assert out.done and out.eval_count == 8


def test_from_gguf_file_digest_and_existing_model(client: ollama.Client, tmp_path: Path) -> None:
    files = upload_dir(client, make_hf_model(tmp_path / "hf", "llama"))
    client.create("seed-model", files=files)
    gguf_path = Path(client.show("seed-model").modelfile.splitlines()[4].removeprefix("FROM "))  # type: ignore[union-attr]
    digest = client.create_blob(gguf_path)  # already on the server: the client sends it, the server keeps one copy
    assert statuses(client.create("from-file", files={"model.gguf": digest}, stream=True))[0] == "parsing GGUF"
    client.create("from-digest", from_=digest, system="Reply tersely.")
    derived = client.create("from-model", from_="from-digest", parameters={"num_predict": 3, "temperature": 0})
    assert derived.status == "success"
    info = client.show("from-model")
    assert 'SYSTEM """Reply tersely."""' in (info.modelfile or "")
    assert info.details and info.details.parent_model == "from-digest:latest"
    for name in ("from-file", "from-digest", "from-model"):
        out = client.generate(name, "hi", options={"num_predict": 3, "temperature": 0})
        assert out.done and out.eval_count == 3, name


def test_lora_adapter_changes_the_output(client: ollama.Client, tmp_path: Path) -> None:
    files = upload_dir(client, make_hf_model(tmp_path / "hf", "llama"))
    client.create("lora-base", files=files)
    rng = np.random.default_rng(11)
    pairs = {
        f"blk.{i}.{w}": (rng.standard_normal((4, n_in)).astype(np.float32), rng.standard_normal((n_out, 4)))
        for i in (0, 1)
        for w, n_in, n_out in (("ffn_down.weight", 128, 64), ("attn_output.weight", 64, 64))
    }
    lora = write_lora_gguf(tmp_path / "lora.gguf", "llama", pairs, alpha=8.0)  # type: ignore[arg-type]
    result = client.create("lora-tuned", from_="lora-base", adapters={"lora.gguf": client.create_blob(lora)})
    assert result.status == "success"
    assert "ADAPTER " in (client.show("lora-tuned").modelfile or "")
    prompt = "The quick brown fox jumps over"
    base = client.generate("lora-base", prompt, options={"temperature": 0, "num_predict": 16})
    tuned = client.generate("lora-tuned", prompt, options={"temperature": 0, "num_predict": 16})
    again = client.generate("lora-base", prompt, options={"temperature": 0, "num_predict": 16})
    assert base.context == again.context  # greedy decoding is repeatable ...
    assert base.context != tuned.context  # ... and the adapter changes what the model says


def test_blob_upload_over_http(client: ollama.Client, live_server: BackgroundServer) -> None:
    data = b"0123456789" * 200_000
    good = "sha256:" + hashlib.sha256(data).hexdigest()
    bad = "sha256:" + hashlib.sha256(b"other").hexdigest()
    with httpx.Client(base_url=live_server.url) as http:
        assert http.head(f"/api/blobs/{bad}").status_code == 404
        resp = http.post(f"/api/blobs/{bad}", content=iter([data[:1000], data[1000:]]))
        assert resp.status_code == 400 and resp.json()["error"].startswith(f'digest mismatch, expected "{bad}"')
        assert http.head(f"/api/blobs/{bad}").status_code == 404 and http.head(f"/api/blobs/{good}").status_code == 404
        assert http.post(f"/api/blobs/{good}", content=data).status_code == 201
        assert http.head(f"/api/blobs/{good}").status_code == 200
    with pytest.raises(ollama.ResponseError) as info:
        client.create("bad-path", files={"../escape.gguf": good})
    assert info.value.status_code == 400 and "file path must be relative" in info.value.error
