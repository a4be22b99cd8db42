"""Speculative decoding with a draft model, on the real models over HTTP: a Modelfile ``DRAFT`` uploaded and
shown, greedy answers identical with the draft model drafting and not (SmolLM2 drafting for itself: nearly
every draft token accepted), a draft with another vocabulary (Gemma 3 for SmolLM2) refused at create and
at load, and hostile draft requests refused with the store left as it was.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from nbllm import service
from nbllm.client import Client
from nbllm.config import Settings
from nbllm.engine.base import FinalStats, LoadSpec, SamplingParams
from nbllm.engine.llama.engine import LlamaEngine
from nbllm.errors import InvalidRequest, ModelLoadError
from nbllm.remote.modelfile_request import prepare_create
from nbllm.runtime import Runtime
from nbllm.schema import PullRequest
from nbllm.server import BackgroundServer
from nbllm.store.digest import digest_bytes
from nbllm.store.manifests import MEDIA_DRAFT, MEDIA_MODEL, Layer
from nbllm.store.modelfile import parse_modelfile
from tests.support.index_server import IndexServer

pytestmark = pytest.mark.model

SMOL, GEMMA, DRAFTED = "smollm2:135m", "gemma3:270m", "smol-drafted"
PROMPTS = [
    "Repeat exactly: the quick brown fox jumps over the lazy dog, twice.",
    "Why is the sky blue?",
]
OPTIONS = {"temperature": 0, "num_predict": 40, "num_ctx": 1024}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, package_index: IndexServer) -> Iterator[tuple[Runtime, str]]:
    root: Path = tmp_path_factory.mktemp("draft")
    settings = Settings(home=root / "home", models=root / "models", package_index=(package_index.url,), num_parallel=1)
    runtime = Runtime.from_settings(settings)
    for name in (SMOL, GEMMA):
        for _ in service.pull(runtime, PullRequest(model=name)):
            pass
    server = BackgroundServer(runtime, port=0).start()
    yield runtime, server.url
    server.stop()
    runtime.close()


@pytest.fixture(scope="module")
def http(served: tuple[Runtime, str]) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=served[1], timeout=300) as client:
        yield client


@pytest.fixture(scope="module")
def drafted(served: tuple[Runtime, str], smollm2_gguf: Path) -> str:
    """SmolLM2 with its own GGUF as the draft, created the way ``nbllm create`` does: Modelfile, upload, create."""
    modelfile = parse_modelfile(f"FROM {SMOL}\nDRAFT ./{smollm2_gguf.name}\n")
    with Client(served[1]) as client:
        prepared = prepare_create(modelfile, base_dir=smollm2_gguf.parent, upload=client.create_blob, model=DRAFTED)
        assert prepared.request.draft_files == {smollm2_gguf.name: client.create_blob(smollm2_gguf)}
        statuses = [event.status for event in client.create(prepared.request)]
    assert statuses[-1] == "success"
    return DRAFTED


def ask(http: httpx.Client, model: str, prompt: str, draft: int, *, chat: bool, n: int = 0) -> dict[str, Any]:
    options = {**OPTIONS, "draft_num_predict": draft, **({"num_predict": n} if n else {})}
    body: dict[str, Any] = {"messages": [{"role": "user", "content": prompt}]} if chat else {"prompt": prompt}
    path = "/api/chat" if chat else "/api/generate"
    resp = http.post(path, json={"model": model, "stream": False, "options": options, **body})
    assert resp.status_code == 200, resp.text
    data: dict[str, Any] = resp.json()
    return data


def answer(data: dict[str, Any]) -> tuple[str, int, Any]:
    text = data["message"]["content"] if "message" in data else data["response"]
    return text, data["eval_count"], data.get("context")


def models(runtime: Runtime) -> set[str]:
    return {m.name.display for m in runtime.store.models()}


def test_create_and_show_round_trip(http: httpx.Client, served: tuple[Runtime, str], drafted: str) -> None:
    runtime = served[0]
    model = runtime.store.get(drafted)
    weights, draft = model.manifest.layer(MEDIA_MODEL), model.manifest.layer(MEDIA_DRAFT)
    assert weights is not None and draft is not None and draft.digest == weights.digest  # the same file
    assert model.config["draft"] == {"model_format": "gguf", "architecture": "llama"}
    shown = http.post("/api/show", json={"model": drafted}).json()
    assert f"\nDRAFT {runtime.store.blobs.path(draft.digest)}\n" in shown["modelfile"]
    # a model made FROM it keeps its draft; ps counts the draft's memory once it is loaded
    http.post(
        "/api/create", json={"model": "smol-drafted-2", "from": drafted, "system": "Be brief."}
    ).raise_for_status()
    assert runtime.store.get("smol-drafted-2").manifest.layer(MEDIA_DRAFT) == draft


@pytest.mark.parametrize("chat", [False, True])
def test_greedy_answers_are_the_same_with_the_draft_model_and_nearly_all_drafts_accepted(
    http: httpx.Client, drafted: str, *, chat: bool
) -> None:
    for prompt in PROMPTS:
        ask(http, drafted, prompt, 0, chat=chat, n=1)  # the prompt in the cache: both runs start alike
        off = ask(http, drafted, prompt, 0, chat=chat)
        assert "draft_count" not in off
        on = ask(http, drafted, prompt, -1, chat=chat)  # the default with a draft model: 4 tokens a step
        assert answer(on) == answer(off), (prompt, chat)
        # every step drafts (even where prompt lookup finds nothing), and the model agrees with itself
        assert on["draft_count"] >= on["eval_count"] // 2
        assert on["draft_accepted_count"] >= 0.9 * on["draft_count"]


def test_a_draft_with_another_vocabulary_is_refused_at_create(http: httpx.Client, served: tuple[Runtime, str]) -> None:
    runtime = served[0]
    before = models(runtime)
    gemma = runtime.store.get(GEMMA).model_digest
    for fields in ({"draft": GEMMA}, {"draft_files": {"gemma.gguf": gemma}}):
        resp = http.post("/api/create", json={"model": "mismatched", "from": SMOL, **fields})
        assert resp.status_code == 400, resp.text
        error = resp.json()["error"]
        assert "vocabulary differs" in error and "'gpt2' in the model and 'llama' in the draft" in error, error
    assert models(runtime) == before and runtime.store.blobs.has(gemma or "")


def test_a_mismatched_draft_in_a_stored_manifest_is_refused_at_load_naming_the_token(
    http: httpx.Client, served: tuple[Runtime, str]
) -> None:
    runtime = served[0]  # a manifest not made by create (pulled, copied by hand): the engine checks too
    smol, gemma = runtime.store.get(SMOL), runtime.store.get(GEMMA)
    weights = gemma.manifest.layer(MEDIA_MODEL)
    assert weights is not None
    layers = [*smol.manifest.layers, Layer(mediaType=MEDIA_DRAFT, digest=weights.digest, size=weights.size)]
    runtime.store.write_model(runtime.store.parse_name("by-hand"), layers, dict(smol.config))
    resp = http.post("/api/generate", json={"model": "by-hand", "prompt": "hi", "options": OPTIONS, "stream": False})
    assert resp.status_code == 500
    error = resp.json()["error"]
    assert "the draft model's vocabulary differs from the model's: token 0 is '<|endoftext|>' in the model" in error
    assert ask(http, SMOL, "hi", 0, chat=False, n=2)["eval_count"] == 2  # the server goes on serving


def test_hostile_draft_requests_are_400s_and_leave_the_store_as_it_was(
    http: httpx.Client, served: tuple[Runtime, str]
) -> None:
    runtime = served[0]
    junk = b"not a model at all"
    junk_digest = digest_bytes(junk)
    http.post(f"/api/blobs/{junk_digest}", content=junk).raise_for_status()
    smol = runtime.store.get(SMOL).model_digest
    cases = [
        ({"draft_files": {"../escape.gguf": smol}}, "file path must be relative"),
        ({"draft_files": {"d.gguf": "sha256:" + "0" * 64}}, "not found"),
        ({"draft_files": {"d.gguf": junk_digest}}, "is not a GGUF file"),
        ({"draft_files": {"a.gguf": smol, "b.gguf": smol}}, "one GGUF file"),
        ({"draft": "no-such-model"}, "draft model 'no-such-model' not found"),
        ({"draft": "../../etc/passwd"}, "invalid"),
        ({"draft_quantize": "q8_0"}, "--draft-quantize requires a DRAFT model"),
    ]
    before = models(runtime)
    for fields, message in cases:
        resp = http.post("/api/create", json={"model": "hostile", "from": SMOL, **fields})
        assert resp.status_code == 400, (fields, resp.text)
        assert message in resp.json()["error"], (fields, resp.text)
    assert models(runtime) == before
    assert not runtime.store.blobs.has(junk_digest)  # a blob uploaded for a failed create is not kept
    assert ask(http, SMOL, "hi", 0, chat=False, n=2)["eval_count"] == 2


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("DRAFT ./missing.gguf", "DRAFT ./missing.gguf: no such file"),
        ("DRAFT ./notes.txt", "is not a GGUF file or safetensors weights; nothing was uploaded"),
        ("DRAFT ./", "must be one GGUF file, not a directory"),
    ],
)
def test_bad_draft_lines_fail_before_any_upload(tmp_path: Path, line: str, message: str) -> None:
    (tmp_path / "notes.txt").write_text("hello")
    uploaded: list[Path] = []

    def upload(path: Path) -> str:
        uploaded.append(path)
        return "sha256:" + "0" * 64

    with pytest.raises(InvalidRequest, match=message):
        prepare_create(parse_modelfile(f"FROM smollm2\n{line}\n"), base_dir=tmp_path, upload=upload)
    assert uploaded == []


def test_a_model_name_or_digest_as_draft(tmp_path: Path) -> None:
    digest = "sha256:" + "a" * 64
    named = prepare_create(parse_modelfile("FROM x\nDRAFT smollm2:135m\n"), base_dir=tmp_path, upload=str)
    assert named.request.draft == "smollm2:135m" and named.request.draft_files is None
    by_digest = prepare_create(parse_modelfile(f"FROM x\nDRAFT {digest}\n"), base_dir=tmp_path, upload=str)
    assert by_digest.request.draft_files == {f"sha256-{'a' * 64}": digest}


def test_the_engine_loads_and_frees_both_models(smollm2_gguf: Path) -> None:
    engine = LlamaEngine(LoadSpec(path=smollm2_gguf, num_ctx=256, draft=smollm2_gguf))
    drafter = engine._drafter
    assert drafter is not None
    final = [e for e in engine.generate(engine.tokenize("Hello"), SamplingParams(temperature=0, num_predict=12))]
    stats = final[-1]
    assert isinstance(stats, FinalStats) and stats.draft_count > 0
    engine.close()
    assert drafter.model.ptr is None and drafter._ctx is None


def test_the_engine_refuses_a_draft_of_another_vocabulary(smollm2_gguf: Path, served: tuple[Runtime, str]) -> None:
    gemma = served[0].store.get(GEMMA).model_path
    assert gemma is not None
    with pytest.raises(ModelLoadError, match=r"token 0 is '<\|endoftext\|>' in the model and '<pad>' in the draft"):
        LlamaEngine(LoadSpec(path=smollm2_gguf, num_ctx=256, draft=gemma))


def test_the_memory_estimate_counts_the_drafts_weights_and_kv_cache(served: tuple[Runtime, str], drafted: str) -> None:
    """The scheduler decides what fits by the estimate: the draft adds its weights and a KV cache as large."""
    from nbllm.options import Options
    from nbllm.service.common import load_spec
    from nbllm.store.gguf import kv_cache_bytes

    runtime = served[0]
    plain, with_draft = (runtime.store.get(name) for name in (SMOL, drafted))
    assert with_draft.draft is not None
    info = runtime.store.gguf(plain)
    options = Options(num_ctx=1024)
    base, both = (load_spec(runtime, model, info, options) for model in (plain, with_draft))
    assert both.parallel == base.parallel == 1
    assert with_draft.size - plain.size >= with_draft.draft.stat().st_size  # the layers: the draft's weights too
    assert both.memory_estimate - with_draft.size == base.memory_estimate - plain.size + kv_cache_bytes(info, 1024)
