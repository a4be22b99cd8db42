"""safetensors → GGUF: the reader, the tokenizer, and converted models checked in the real llama.cpp engine.

The models are made here (random weights, a tokenizer trained on the spot). A converted model must
tokenize as the ``tokenizers`` library does and compute the logits a numpy re-implementation of the
Hugging Face forward pass computes; the Q/K permutation check fails if the permutation is dropped.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import pytest
from safetensors.numpy import save_file
from tokenizers import Tokenizer

from nbllm.engine import LoadSpec, SamplingParams, TokenChunk
from nbllm.engine.llama import LlamaEngine
from nbllm.errors import InvalidRequest
from nbllm.store.convert import convert_model
from nbllm.store.convert.lora import convert_adapter
from nbllm.store.convert.safetensors import load_checkpoint, read_safetensors
from nbllm.store.convert.vocab import load_vocab
from nbllm.store.gguf import read_gguf
from tests.support.hf_models import (
    CHATML,
    LLAMA3_CHAT,
    log_softmax,
    make_hf_model,
    reference_logits,
    train_spm_tokenizer,
    write_lora_gguf,
)

TEXTS = [
    "Hello world! How are you today?",
    "The quick brown fox 12345 jumps over 7 dogs.",
    " leading  spaces\n\ttabs and\r\nnewlines\n\n",
    "We'll see what they've DONE; it's 3.14159!",
    "ünïcödé, 中文 and emoji 🙂",
]


@pytest.fixture
def engines() -> Iterator[list[LlamaEngine]]:
    loaded: list[LlamaEngine] = []
    yield loaded
    for engine in loaded:
        engine.close()


def load(engines: list[LlamaEngine], path: Path, *adapters: Path) -> LlamaEngine:
    engine = LlamaEngine(LoadSpec(path=path, num_ctx=256, parallel=1, adapters=tuple(adapters)))
    engines.append(engine)
    return engine


def first_token_logprobs(engine: LlamaEngine, ids: list[int]) -> np.ndarray[Any, Any]:
    """The top-8 log probabilities llama.cpp gives the token after ``ids``, highest first."""
    params = SamplingParams(temperature=0, num_predict=1, logprobs=True, top_logprobs=8)
    chunk = next(e for e in engine.generate(ids, params) if isinstance(e, TokenChunk))
    assert chunk.logprob is not None
    return np.sort(np.array([lp for _, lp, _ in chunk.logprob.top]))[::-1]


def top(logits: np.ndarray[Any, Any], n: int = 8) -> np.ndarray[Any, Any]:
    return np.sort(log_softmax(logits))[::-1][:n]


# ── conversions that llama.cpp runs ────────────────────────────────────────────────────────


@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_converted_model_tokenizes_and_computes_like_transformers(
    family: str, tmp_path: Path, engines: list[LlamaEngine]
) -> None:
    src = make_hf_model(tmp_path / "hf", family)
    result = convert_model(src, tmp_path / "model.gguf")
    assert result.architecture == family and (tmp_path / "model.gguf").is_file()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".tmp")] == []
    engine = load(engines, result.path)
    hf = Tokenizer.from_file(str(src / "tokenizer.json"))
    for text in TEXTS:
        assert engine.tokenize(text) == hf.encode(text).ids, text
    special = "<|im_start|>user\nhi<|im_end|>" if family == "qwen2" else "<|start_header_id|>user<|end_header_id|>"
    assert engine.tokenize(special) == hf.encode(special).ids
    ids = engine.tokenize("The quick brown fox jumps over the lazy dog")
    got = first_token_logprobs(engine, ids)
    assert np.allclose(got, top(reference_logits(src, ids)), atol=0.02), (got, top(reference_logits(src, ids)))
    # the rotary layout matters: llama needs its Q/K rows permuted, qwen2 must be left alone
    wrong = top(reference_logits(src, ids, halves=False))
    assert np.abs(got - wrong).max() > 0.05
    events = list(engine.generate(ids, SamplingParams(temperature=0, num_predict=12)))
    assert sum(isinstance(e, TokenChunk) for e in events) == 12


@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_metadata_tokenizer_and_chat_template_travel(family: str, tmp_path: Path) -> None:
    src = make_hf_model(tmp_path / "hf", family, tie=True)
    info = read_gguf(convert_model(src, tmp_path / "m.gguf").path, keep_arrays=10**6, tensors=True)
    config = json.loads((src / "config.json").read_text())
    md = info.metadata
    assert md["general.architecture"] == family and info.file_type == "F16"
    assert md[f"{family}.embedding_length"] == 64 and md[f"{family}.block_count"] == 2
    assert md[f"{family}.attention.head_count"] == 4 and md[f"{family}.attention.head_count_kv"] == 2
    assert md[f"{family}.context_length"] == 1024
    assert md["tokenizer.ggml.model"] == "gpt2"
    assert md["tokenizer.ggml.pre"] == {"llama": "llama-bpe", "qwen2": "qwen2"}[family]
    assert md["tokenizer.chat_template"] == {"llama": LLAMA3_CHAT, "qwen2": CHATML}[family]
    assert len(md["tokenizer.ggml.tokens"]) == config["vocab_size"] and md["tokenizer.ggml.merges"]
    assert md["tokenizer.ggml.eos_token_id"] == config["eos_token_id"]
    assert ("tokenizer.ggml.add_bos_token" in md and md["tokenizer.ggml.add_bos_token"]) == (family == "llama")
    names = {t["name"]: t for t in info.tensors}
    assert "output.weight" not in names  # tied embeddings: llama.cpp reuses token_embd
    assert names["token_embd.weight"]["type"] == "F16" and names["blk.0.attn_norm.weight"]["type"] == "F32"
    assert names["token_embd.weight"]["shape"] == [64, config["vocab_size"]]
    assert ("blk.1.attn_q.bias" in names) == (family == "qwen2")


def test_bf16_and_sharded_checkpoints(tmp_path: Path, engines: list[LlamaEngine]) -> None:
    src = make_hf_model(tmp_path / "hf", "qwen2", shards=3)
    reference = top(reference_logits(src, [5, 60, 7, 300, 12]))
    # rewrite every shard in BF16 by hand (numpy has no bfloat16): the exact values the reference used
    for shard in src.glob("*.safetensors"):
        tensors = {n: r.load() for n, r in read_safetensors(shard).items()}
        header: dict[str, Any] = {}
        blobs = []
        offset = 0
        for name, arr in tensors.items():
            bits = (arr.astype(np.float32).view(np.uint32) >> 16).astype("<u2").tobytes()
            header[name] = {"dtype": "BF16", "shape": list(arr.shape), "data_offsets": [offset, offset + len(bits)]}
            blobs.append(bits)
            offset += len(bits)
        head = json.dumps(header).encode()
        shard.write_bytes(struct.pack("<Q", len(head)) + head + b"".join(blobs))
    refs = load_checkpoint(src.glob("*.safetensors"))
    assert {r.dtype for r in refs.values()} == {"BF16"} and len({r.path for r in refs.values()}) == 3
    engine = load(engines, convert_model(src, tmp_path / "m.gguf").path)
    got = first_token_logprobs(engine, [5, 60, 7, 300, 12])
    assert np.allclose(got, reference, atol=0.05)  # BF16 rounding of the weights moves logits a little


def test_sentencepiece_style_tokenizer(tmp_path: Path, engines: list[LlamaEngine]) -> None:
    tok = train_spm_tokenizer()
    src = make_hf_model(tmp_path / "hf", "llama", tokenizer=tok)
    config = json.loads((src / "tokenizer_config.json").read_text())
    (src / "tokenizer_config.json").write_text(json.dumps({**config, "bos_token": "<s>", "eos_token": "</s>"}))
    path = convert_model(src, tmp_path / "m.gguf").path
    md = read_gguf(path).metadata
    assert md["tokenizer.ggml.model"] == "llama" and md["tokenizer.ggml.add_space_prefix"] is True
    engine = load(engines, path)
    for text in TEXTS:
        assert engine.tokenize(text) == tok.encode(text).ids, text


def test_llama3_rope_scaling_becomes_rope_freqs(tmp_path: Path, engines: list[LlamaEngine]) -> None:
    src = make_hf_model(tmp_path / "hf", "llama", hidden=128, heads=2, kv_heads=1)
    config = json.loads((src / "config.json").read_text())
    config["rope_scaling"] = {
        "rope_type": "llama3",
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 64,
    }
    (src / "config.json").write_text(json.dumps(config))
    path = convert_model(src, tmp_path / "m.gguf").path
    freqs = {t.name: t for t in gguf.GGUFReader(path).tensors}["rope_freqs.weight"].data
    assert freqs.shape == (32,) and freqs[0] == 1.0 and freqs[-1] == 8.0 and np.all(np.diff(freqs) >= 0)
    events = list(load(engines, path).generate([1, 2, 3], SamplingParams(temperature=0, num_predict=4)))
    assert sum(isinstance(e, TokenChunk) for e in events) == 4


# ── LoRA adapters ───────────────────────────────────────────────────────────────────────────


def _peft_adapter(directory: Path, rank: int, alpha: float, seed: int) -> dict[str, np.ndarray[Any, Any]]:
    """A PEFT LoRA on q_proj, k_proj (permuted for llama) and down_proj; returns the HF weight deltas."""
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True)
    shapes = {"self_attn.q_proj": (64, 64), "self_attn.k_proj": (32, 64), "mlp.down_proj": (64, 128)}
    tensors, deltas = {}, {}
    for layer in (0, 1):
        for module, (out, inp) in shapes.items():
            a = (rng.standard_normal((rank, inp)) * 0.3).astype(np.float32)
            b = (rng.standard_normal((out, rank)) * 0.3).astype(np.float32)
            stem = f"base_model.model.model.layers.{layer}.{module}"
            tensors[f"{stem}.lora_A.weight"], tensors[f"{stem}.lora_B.weight"] = a, b
            deltas[f"model.layers.{layer}.{module}.weight"] = alpha / rank * (b @ a)
    save_file(tensors, str(directory / "adapter_model.safetensors"))
    (directory / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": rank, "lora_alpha": alpha}))
    return deltas


@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_peft_lora_converts_and_llama_cpp_applies_it(family: str, tmp_path: Path, engines: list[LlamaEngine]) -> None:
    src = make_hf_model(tmp_path / "hf", family)
    base = convert_model(src, tmp_path / "base.gguf").path
    deltas = _peft_adapter(tmp_path / "lora", rank=4, alpha=8.0, seed=3)
    adapter = convert_adapter(
        tmp_path / "lora", tmp_path / "lora.gguf", architecture=family, head_count=4, head_count_kv=2
    ).path
    md = read_gguf(adapter).metadata
    assert md["general.type"] == "adapter" and md["adapter.type"] == "lora" and md["adapter.lora.alpha"] == 8.0
    ids = [3, 50, 70, 9, 200, 31]
    plain = first_token_logprobs(load(engines, base), ids)
    adapted = first_token_logprobs(load(engines, base, adapter), ids)
    expected = top(reference_logits(src, ids, deltas=deltas))
    assert np.abs(plain - adapted).max() > 0.05  # the adapter changes the output ...
    assert np.allclose(adapted, expected, atol=0.03)  # ... exactly as merging it into the weights would


def test_lora_gguf_written_by_hand_is_applied(tmp_path: Path, engines: list[LlamaEngine]) -> None:
    src = make_hf_model(tmp_path / "hf", "llama")
    base = convert_model(src, tmp_path / "base.gguf").path
    rng = np.random.default_rng(7)
    a, b = rng.standard_normal((2, 128)).astype(np.float32) * 0.5, rng.standard_normal((64, 2)).astype(np.float32)
    adapter = write_lora_gguf(tmp_path / "lora.gguf", "llama", {"blk.1.ffn_down.weight": (a, b)}, alpha=4.0)
    ids = [3, 50, 70, 9, 200, 31]
    adapted = first_token_logprobs(load(engines, base, adapter), ids)
    expected = top(reference_logits(src, ids, deltas={"model.layers.1.mlp.down_proj.weight": 4.0 / 2 * (b @ a)}))
    assert np.allclose(adapted, expected, atol=0.03)
    assert np.abs(adapted - first_token_logprobs(load(engines, base), ids)).max() > 0.05


def test_adapter_errors(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "adapter_config.json").write_text(json.dumps({"peft_type": "IA3"}))
    with pytest.raises(InvalidRequest, match="only LoRA adapters"):
        convert_adapter(tmp_path / "a", tmp_path / "x.gguf", architecture="llama", head_count=4, head_count_kv=2)
    _peft_adapter(tmp_path / "b", rank=2, alpha=2.0, seed=1)
    with pytest.raises(InvalidRequest, match="cannot be converted"):
        convert_adapter(tmp_path / "b", tmp_path / "x.gguf", architecture="gemma3", head_count=4, head_count_kv=2)


# ── bad input ───────────────────────────────────────────────────────────────────────────────


def test_unsupported_or_incomplete_directories(tmp_path: Path) -> None:
    src = make_hf_model(tmp_path / "hf", "llama")
    dst = tmp_path / "out.gguf"
    config = json.loads((src / "config.json").read_text())
    (src / "config.json").write_text(json.dumps({**config, "architectures": ["GPT2LMHeadModel"]}))
    with pytest.raises(InvalidRequest, match=r"unsupported architecture \['GPT2LMHeadModel'\].*LlamaForCausalLM"):
        convert_model(src, dst)
    (src / "config.json").write_text(json.dumps(config))
    (src / "tokenizer.json").rename(src / "tokenizer.moved")
    with pytest.raises(InvalidRequest, match=r"tokenizer.json not found"):
        convert_model(src, dst)
    (src / "tokenizer.moved").rename(src / "tokenizer.json")
    (src / "config.json").unlink()
    with pytest.raises(InvalidRequest, match=r"config\.json not found"):
        convert_model(src, dst)
    assert not dst.exists() and not list(tmp_path.glob(".tmp-*"))


def test_truncated_safetensors_is_refused(tmp_path: Path) -> None:
    src = make_hf_model(tmp_path / "hf", "llama")
    weights = src / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    with pytest.raises(InvalidRequest, match="does not fit the file"):
        convert_model(src, tmp_path / "out.gguf")
    weights.write_bytes(b"\xff" * 16)
    with pytest.raises(InvalidRequest, match="not a safetensors file"):
        read_safetensors(weights)


def test_a_failure_mid_write_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = make_hf_model(tmp_path / "hf", "llama")
    calls = 0
    original = np.ascontiguousarray

    def failing(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 5:
            raise OSError("disk full")
        return original(*args, **kwargs)

    monkeypatch.setattr("nbllm.store.convert.model.np.ascontiguousarray", failing)
    with pytest.raises(OSError, match="disk full"):
        convert_model(src, tmp_path / "out.gguf")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hf"]


def test_unknown_pre_tokenizer_falls_back_by_family(tmp_path: Path) -> None:
    src = make_hf_model(tmp_path / "hf", "qwen2")
    data = json.loads((src / "tokenizer.json").read_text())
    data["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = r"\w+|\s+"
    (src / "tokenizer.json").write_text(json.dumps(data))
    assert load_vocab(src, 500, "qwen2").pre == "qwen2"
    data["pre_tokenizer"] = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
    (src / "tokenizer.json").write_text(json.dumps(data))
    assert load_vocab(src, 500, "qwen2").pre == "gpt-2"
    data["model"]["type"] = "WordPiece"
    (src / "tokenizer.json").write_text(json.dumps(data))
    with pytest.raises(InvalidRequest, match="unsupported tokenizer type 'WordPiece'"):
        load_vocab(src, 500, "qwen2")
