"""Pulling GGUFs from a Hugging Face Hub look-alike on loopback, through huggingface_hub."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from huggingface_hub import hf_hub_download

from nbllm import service
from nbllm.config import Settings
from nbllm.errors import DigestMismatch, PullError, RegistryUnreachable
from nbllm.remote.hf import HubOptions, pull_hf_model
from nbllm.remote.registry import RegistryClient
from nbllm.runtime import Runtime
from nbllm.schema import ChatRequest, Message, ProgressResponse, ShowRequest
from nbllm.service.registry import pull_remote
from nbllm.store import ModelName, ModelStore
from nbllm.store.gguf import read_gguf
from nbllm.store.hub_library import find_hub_entry
from tests.support.hub_server import HubServer
from tests.support.tiny_gguf import write_tiny_gguf

SMOL_REPO = "nbllm-tests/SmolLM2-135M-Instruct-GGUF"
SMOL_Q4 = "SmolLM2-135M-Instruct-Q4_K_M.gguf"
SMOL_Q8 = "SmolLM2-135M-Instruct-Q8_0.gguf"
TINY_REPO = "nbllm-tests/tiny-GGUF"
PRIVATE_REPO = "nbllm-tests/private-GGUF"
TOKEN = "hf_test_token"
QWEN_REPO = "Qwen/Qwen3-0.6B-GGUF"
R1_REPO = "bartowski/DeepSeek-R1-Distill-Qwen-1.5B-GGUF"
R1_Q4 = "DeepSeek-R1-Distill-Qwen-1.5B-Q4_K_M.gguf"


@pytest.fixture(scope="module")
def hub(real_runtime: Runtime, tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubServer]:
    """Three repositories: SmolLM2 (the real GGUF as Q4_K_M, a tiny one as Q8_0), one without Q4_K_M, one private."""
    smol = real_runtime.store.get("smollm2:135m").model_path
    assert smol is not None
    root = tmp_path_factory.mktemp("hub")
    (root / "README.md").write_text("# test repository\n")
    (root / "params").write_text(json.dumps({"temperature": 0.1, "stop": ["<|im_end|>"]}))
    (root / "system").write_text("You are a test.")
    server = HubServer()
    server.add_repo(SMOL_REPO, {SMOL_Q4: smol, SMOL_Q8: write_tiny_gguf(root / "q8.gguf", context_length=8192),
                                "README.md": root / "README.md"})  # fmt: skip
    server.add_repo(TINY_REPO, {"tiny-Q8_0.gguf": write_tiny_gguf(root / "t8.gguf", context_length=1024),
                                "tiny-Q4_0.gguf": write_tiny_gguf(root / "t4.gguf", context_length=512),
                                "params": root / "params", "system": root / "system"})  # fmt: skip
    server.add_repo(PRIVATE_REPO, {"p-Q4_K_M.gguf": write_tiny_gguf(root / "p.gguf", context_length=256)}, token=TOKEN)
    # the repositories of two built-in thinking names (SmolLM2's real weights stand in for Qwen3's)
    server.add_repo(QWEN_REPO, {"Qwen3-0.6B-Q8_0.gguf": smol, "README.md": root / "README.md"})
    server.add_repo(R1_REPO, {R1_Q4: write_tiny_gguf(root / "r1-q4.gguf", context_length=128),
                              "DeepSeek-R1-Distill-Qwen-1.5B-Q8_0.gguf": write_tiny_gguf(root / "r1.gguf"),
                              "params": root / "params", "system": root / "system"})  # fmt: skip
    server.start()
    yield server
    server.stop()


@pytest.fixture
def options(hub: HubServer, tmp_path: Path) -> HubOptions:
    return HubOptions(endpoint=hub.url, token=False, cache_dir=tmp_path / "hf-cache")


def pull(store: ModelStore, name: str, options: HubOptions) -> list[ProgressResponse]:
    with RegistryClient() as registry:
        return list(pull_hf_model(store, ModelName.parse(name), registry, hub=options))


def _weights_sha(hub: HubServer, repo: str, filename: str) -> str:
    return "sha256:" + hub.repos[repo].sha256[filename]


def test_default_tag_takes_q4_k_m_and_keeps_the_ggufs_chat_template(
    store: ModelStore, hub: HubServer, options: HubOptions
) -> None:
    events = pull(store, f"hf.co/{SMOL_REPO}", options)
    statuses = list(dict.fromkeys(e.status for e in events))
    digest = _weights_sha(hub, SMOL_REPO, SMOL_Q4)
    assert statuses == ["pulling manifest", f"pulling {digest[7:19]}", "verifying sha256 digest",
                        "writing manifest", "success"]  # fmt: skip
    model = store.get(f"hf.co/{SMOL_REPO}:latest")
    assert model.model_digest == digest and model.template is None  # the GGUF's own template is used
    assert model.model_path is not None and read_gguf(model.model_path).chat_template
    assert model.config["model_family"] == "llama" and model.config["file_type"]
    assert [m.name.display for m in store.models()] == [f"hf.co/{SMOL_REPO}:latest"]


@pytest.mark.parametrize("tag", ["q8_0", "Q8_0", SMOL_Q8])
def test_the_tag_names_a_quant_or_a_file(store: ModelStore, hub: HubServer, options: HubOptions, tag: str) -> None:
    pull(store, f"hf.co/{SMOL_REPO}:{tag}", options)
    assert store.get(f"hf.co/{SMOL_REPO}:{tag}").model_digest == _weights_sha(hub, SMOL_REPO, SMOL_Q8)


def test_without_q4_k_m_a_reasonable_quant_is_chosen_and_repo_files_become_layers(
    store: ModelStore, hub: HubServer, options: HubOptions
) -> None:
    pull(store, f"huggingface.co/{TINY_REPO}", options)
    model = store.get(f"huggingface.co/{TINY_REPO}")
    assert model.model_digest == _weights_sha(hub, TINY_REPO, "tiny-Q4_0.gguf")
    assert model.params == {"temperature": 0.1, "stop": ["<|im_end|>"]} and model.system == "You are a test."


def test_unknown_quant_and_unknown_repo(store: ModelStore, options: HubOptions) -> None:
    with pytest.raises(PullError, match=r"has no GGUF for 'IQ2_XS' \(available: Q4_K_M, Q8_0\)"):
        pull(store, f"hf.co/{SMOL_REPO}:IQ2_XS", options)
    with pytest.raises(PullError, match=r"^pull model manifest: file does not exist"):
        pull(store, "hf.co/nobody/nothing-GGUF", options)
    assert store.models() == []


def test_a_private_repo_needs_the_token(store: ModelStore, hub: HubServer, options: HubOptions) -> None:
    with pytest.raises(PullError, match="set HF_TOKEN"):
        pull(store, f"hf.co/{PRIVATE_REPO}", options)
    pull(store, f"hf.co/{PRIVATE_REPO}", HubOptions(endpoint=hub.url, token=TOKEN, cache_dir=options.cache_dir))
    assert store.get(f"hf.co/{PRIVATE_REPO}").model_digest == _weights_sha(hub, PRIVATE_REPO, "p-Q4_K_M.gguf")


def test_an_interrupted_download_resumes_and_a_second_pull_downloads_nothing(
    store: ModelStore, hub: HubServer, options: HubOptions
) -> None:
    hub.cut_after = 10 << 20
    before = len(hub.downloads(SMOL_Q4))
    pull(store, f"hf.co/{SMOL_REPO}:Q4_K_M", options)
    ranges = [r[2] for r in hub.downloads(SMOL_Q4)[before:]]
    assert ranges == [None, f"bytes={10 << 20}-"]
    assert store.get(f"hf.co/{SMOL_REPO}:Q4_K_M").model_digest == _weights_sha(hub, SMOL_REPO, SMOL_Q4)
    downloads = len(hub.downloads())
    events = pull(store, f"hf.co/{SMOL_REPO}:Q4_K_M", options)
    assert len(hub.downloads()) == downloads
    assert all(e.completed == e.total for e in events if e.digest)


def test_a_file_in_the_hugging_face_cache_is_not_downloaded_again(
    store: ModelStore, hub: HubServer, options: HubOptions
) -> None:
    cached = hf_hub_download(SMOL_REPO, SMOL_Q8, endpoint=hub.url, cache_dir=options.cache_dir, token=False)
    downloads = len(hub.downloads(SMOL_Q8))
    pull(store, f"hf.co/{SMOL_REPO}:Q8_0", options)
    assert len(hub.downloads(SMOL_Q8)) == downloads
    model = store.get(f"hf.co/{SMOL_REPO}:Q8_0")
    assert model.model_path is not None and model.model_path.read_bytes() == Path(cached).read_bytes()


def test_bytes_that_do_not_match_the_hubs_sha256_are_refused(
    store: ModelStore, hub: HubServer, options: HubOptions
) -> None:
    repo = hub.repos[TINY_REPO]
    real = repo.sha256["tiny-Q8_0.gguf"]
    repo.sha256["tiny-Q8_0.gguf"] = "0" * 64
    try:
        with pytest.raises(DigestMismatch):
            pull(store, f"hf.co/{TINY_REPO}:Q8_0", options)
    finally:
        repo.sha256["tiny-Q8_0.gguf"] = real
    assert store.models() == [] and not list(store.blobs.digests())
    assert not list(store.blobs.root.glob("*-partial"))


def test_built_in_thinking_names_come_from_their_hub_repositories_with_ollamas_template(
    settings: Settings, hub: HubServer, options: HubOptions
) -> None:
    rt = Runtime.from_settings(settings)  # a store of its own, the real engine
    try:
        events = list(pull_remote(rt, ModelName.parse("qwen3:0.6b"), insecure=False, hub=options))
        assert events[0].status == "pulling manifest" and events[-1].status == "success"
        qwen, entry = rt.store.get("qwen3:0.6b"), find_hub_entry(ModelName.parse("qwen3:0.6b"))
        assert entry is not None and qwen.model_digest == _weights_sha(hub, QWEN_REPO, "Qwen3-0.6B-Q8_0.gguf")
        assert qwen.template == entry.template() and qwen.params == entry.params and qwen.system is None
        shown = service.show(rt, ShowRequest(model="qwen3:0.6b"))
        assert shown.capabilities is not None and {"completion", "tools", "thinking"} <= set(shown.capabilities)
        list(pull_remote(rt, ModelName.parse("deepseek-r1:1.5b"), insecure=False, hub=options))
        r1 = rt.store.get("deepseek-r1:1.5b")  # the quant the entry names; the repository's own files ignored
        assert r1.model_digest == _weights_sha(hub, R1_REPO, R1_Q4) and r1.system is None
        assert r1.params["stop"][-1] == "<｜Assistant｜>" and "<｜User｜>" in (r1.template or "")
        assert sorted(m.name.display for m in rt.store.models()) == ["deepseek-r1:1.5b", "qwen3:0.6b"]
        ask = [Message(role="user", content="Say hi.")]
        off = ChatRequest(model="qwen3:0.6b", messages=ask, think=False, debug_render_only=True)
        rendered = service.collect_chat(service.chat(rt, off)).debug_info
        # the entry's template, not the GGUF's own (SmolLM2's, which adds its default system prompt); how
        # `think` reaches it is the inference service's part (tests/store/test_hub_library.py renders each state)
        assert rendered is not None and rendered["rendered_template"].startswith("<|im_start|>user\nSay hi.")
        assert "SmolLM" not in rendered["rendered_template"]
        run = ChatRequest(model="qwen3:0.6b", messages=ask, think=False, options={"temperature": 0, "num_predict": 6})
        answer = service.collect_chat(service.chat(rt, run))
        assert answer.done and answer.message.content.strip() and answer.eval_count
    finally:
        rt.close()


@pytest.mark.parametrize("name", ["deepseek-r1:1.5b", "hf.co/nobody/nothing-GGUF"])
def test_an_unreachable_hub_is_one_clear_error_and_stores_nothing(fake_runtime: Runtime, name: str) -> None:
    """huggingface_hub lets its HTTP library's errors out (httpx2's ConnectError here): they become a PullError."""
    nowhere = HubOptions(endpoint="http://127.0.0.1:9", token=False)
    refused = r"^pull model manifest: http://127.0.0.1:9 could not be reached"
    with pytest.raises(RegistryUnreachable, match=refused) as failed:
        list(pull_remote(fake_runtime, ModelName.parse(name), insecure=False, hub=nowhere))
    assert "\n" not in failed.value.message
    assert [m.name.display for m in fake_runtime.store.models()] == ["tiny:latest"]
