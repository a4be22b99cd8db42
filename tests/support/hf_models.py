"""Tiny Hugging Face model directories made on the spot, and a numpy forward pass to check conversions against.

A directory holds what a Hub download holds: ``config.json``, ``tokenizer.json`` (a real byte-level
BPE tokenizer trained here with the ``tokenizers`` library, with the Llama 3 or Qwen2 split regex),
``tokenizer_config.json`` with a chat template, and random weights in ``model.safetensors``.
Nothing is downloaded.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import load_file, save_file
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

Array = np.ndarray[Any, np.dtype[np.float32]]

QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
LLAMA3_SPLIT = QWEN2_SPLIT.replace(r"\p{N}|", r"\p{N}{1,3}|", 1)
CHATML = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
LLAMA3_CHAT = (
    "{{ bos_token }}{% for message in messages %}<|start_header_id|>{{ message['role'] }}<|end_header_id|>\n\n"
    "{{ message['content'] | trim }}<|eot_id|>{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)
CORPUS = [
    "The quick brown fox jumps over the lazy dog. It was 2024 and 1234567 apples were sold.",
    "Large language models turn text into tokens, and tokens into more text, one step at a time.",
    "Hello world! How are you today? I'm fine, thanks; we'll see what they've done.",
    "Jupyter notebooks mix code, prose and results: print('hi') -> hi\n\tindented line\n",
    "Ollama runs models locally; nbllm serves the same API from Python, with llama.cpp underneath.",
    "Numbers: 0 1 2 3 4 5 6 7 8 9 10 42 3.14159 and symbols #$%&*()[]{}<>/\\|~`^_+=-",
] * 4


@dataclass(frozen=True)
class Family:
    """What differs between the families the tests build."""

    architecture: str
    split: str
    specials: tuple[str, ...]
    bos: str | None
    eos: str
    chat_template: str
    biases: bool
    """Q/K/V projections carry biases (Qwen2)."""


LLAMA = Family(
    "LlamaForCausalLM",
    LLAMA3_SPLIT,
    ("<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"),
    "<|begin_of_text|>",
    "<|eot_id|>",
    LLAMA3_CHAT,
    biases=False,
)
QWEN2 = Family(
    "Qwen2ForCausalLM",
    QWEN2_SPLIT,
    ("<|endoftext|>", "<|im_start|>", "<|im_end|>"),
    None,
    "<|im_end|>",
    CHATML,
    biases=True,
)
FAMILIES = {"llama": LLAMA, "qwen2": QWEN2}


def train_tokenizer(family: Family, vocab_size: int = 400) -> Tokenizer:
    """A byte-level BPE tokenizer like the family's, trained on a few sentences, specials appended."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(family.split), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    tok.train_from_iterator(CORPUS, trainer)
    tok.add_special_tokens(list(family.specials))
    if family.bos is not None:
        bos_id = tok.token_to_id(family.bos)
        tok.post_processor = processors.TemplateProcessing(
            single=f"{family.bos} $A", pair=f"{family.bos} $A $B:1", special_tokens=[(family.bos, bos_id)]
        )
    return tok


def train_spm_tokenizer(vocab_size: int = 400) -> Tokenizer:
    """A Llama 2 style tokenizer: BPE over ``▁``-joined words with byte fallback."""
    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tok.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    byte_tokens = [f"<0x{i:02X}>" for i in range(256)]
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size + 259, special_tokens=["<unk>", "<s>", "</s>", *byte_tokens], show_progress=False
    )
    tok.train_from_iterator(CORPUS, trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A $B:1", special_tokens=[("<s>", tok.token_to_id("<s>"))]
    )
    return tok


def _config(family: Family, tok: Tokenizer, dims: dict[str, int], dtype: str) -> dict[str, Any]:
    return {
        "architectures": [family.architecture],
        "model_type": "llama" if family is LLAMA else "qwen2",
        "hidden_size": dims["hidden"],
        "intermediate_size": dims["ffn"],
        "num_hidden_layers": dims["layers"],
        "num_attention_heads": dims["heads"],
        "num_key_value_heads": dims["kv_heads"],
        "max_position_embeddings": 1024,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "vocab_size": dims["vocab"],
        "tie_word_embeddings": bool(dims.get("tie", 0)),
        "bos_token_id": tok.token_to_id(family.bos) if family.bos else None,
        "eos_token_id": tok.token_to_id(family.eos),
        "torch_dtype": dtype,
    }


def _weights(config: dict[str, Any], family: Family, seed: int, scale: float) -> dict[str, Array]:
    rng = np.random.default_rng(seed)
    hidden, ffn = config["hidden_size"], config["intermediate_size"]
    heads, kv = config["num_attention_heads"], config["num_key_value_heads"]
    head_dim = hidden // heads

    def mat(rows: int, cols: int) -> Array:
        return (rng.standard_normal((rows, cols)) * scale).astype(np.float32)

    w: dict[str, Array] = {"model.embed_tokens.weight": mat(config["vocab_size"], hidden)}
    for i in range(config["num_hidden_layers"]):
        p = f"model.layers.{i}."
        w[p + "self_attn.q_proj.weight"] = mat(heads * head_dim, hidden)
        w[p + "self_attn.k_proj.weight"] = mat(kv * head_dim, hidden)
        w[p + "self_attn.v_proj.weight"] = mat(kv * head_dim, hidden)
        w[p + "self_attn.o_proj.weight"] = mat(hidden, heads * head_dim)
        if family.biases:
            for proj, rows in (("q", heads * head_dim), ("k", kv * head_dim), ("v", kv * head_dim)):
                w[p + f"self_attn.{proj}_proj.bias"] = (rng.standard_normal(rows) * scale).astype(np.float32)
        w[p + "mlp.gate_proj.weight"] = mat(ffn, hidden)
        w[p + "mlp.up_proj.weight"] = mat(ffn, hidden)
        w[p + "mlp.down_proj.weight"] = mat(hidden, ffn)
        w[p + "input_layernorm.weight"] = (1 + rng.standard_normal(hidden) * 0.1).astype(np.float32)
        w[p + "post_attention_layernorm.weight"] = (1 + rng.standard_normal(hidden) * 0.1).astype(np.float32)
    w["model.norm.weight"] = (1 + rng.standard_normal(hidden) * 0.1).astype(np.float32)
    if not config["tie_word_embeddings"]:
        w["lm_head.weight"] = mat(config["vocab_size"], hidden)
    return w


def make_hf_model(
    directory: Path,
    family: str = "llama",
    *,
    hidden: int = 64,
    ffn: int = 128,
    layers: int = 2,
    heads: int = 4,
    kv_heads: int = 2,
    tie: bool = False,
    seed: int = 0,
    scale: float = 0.15,
    shards: int = 1,
    tokenizer: Tokenizer | None = None,
) -> Path:
    """Write a tiny model directory of ``family`` (``llama`` or ``qwen2``); return it."""
    fam = FAMILIES[family]
    directory.mkdir(parents=True, exist_ok=True)
    tok = tokenizer or train_tokenizer(fam)
    tok.save(str(directory / "tokenizer.json"))
    vocab = tok.get_vocab_size() + 6  # padded, as real checkpoints often are
    dims = {"hidden": hidden, "ffn": ffn, "layers": layers, "heads": heads, "kv_heads": kv_heads, "vocab": vocab}
    config = _config(fam, tok, {**dims, "tie": int(tie)}, "float32")
    (directory / "config.json").write_text(json.dumps(config, indent=2))
    tok_config = {"bos_token": fam.bos, "eos_token": fam.eos, "chat_template": fam.chat_template}
    (directory / "tokenizer_config.json").write_text(json.dumps(tok_config, indent=2))
    (directory / "generation_config.json").write_text(json.dumps({"eos_token_id": config["eos_token_id"]}))
    weights = _weights(config, fam, seed, scale)
    names = sorted(weights)
    if shards == 1:
        save_file(weights, str(directory / "model.safetensors"))
        return directory
    index: dict[str, str] = {}
    for k in range(shards):
        part = f"model-{k + 1:05d}-of-{shards:05d}.safetensors"
        chunk = {n: weights[n] for n in names[k::shards]}
        save_file(chunk, str(directory / part))
        index.update(dict.fromkeys(chunk, part))
    (directory / "model.safetensors.index.json").write_text(json.dumps({"weight_map": index}))
    return directory


def load_weights(directory: Path) -> dict[str, Array]:
    """Every tensor of a model directory, as float32."""
    out: dict[str, Array] = {}
    for path in sorted(directory.glob("*.safetensors")):
        out.update(load_file(str(path)))
    return out


def _rms(x: Array, w: Array, eps: float) -> Array:
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w


def _rope(x: Array, theta: float, *, halves: bool) -> Array:
    """Rotary embedding on (heads, T, d): ``halves`` = Hugging Face's rotate_half, else adjacent pairs."""
    d = x.shape[-1]
    ang = np.arange(x.shape[1])[:, None] * theta ** (-np.arange(0, d, 2) / d)[None, :]
    cos, sin = np.cos(ang), np.sin(ang)
    if halves:
        a, b = x[..., : d // 2], x[..., d // 2 :]
        return np.concatenate([a * cos - b * sin, b * cos + a * sin], axis=-1)
    a, b = x[..., 0::2], x[..., 1::2]
    out = np.empty_like(x)
    out[..., 0::2], out[..., 1::2] = a * cos - b * sin, b * cos + a * sin
    return out


def reference_logits(
    directory: Path, ids: list[int], *, halves: bool = True, deltas: dict[str, Array] | None = None
) -> Array:
    """Logits of the last position, computed as ``transformers`` would (F16-rounded weights, float32 math).

    ``halves=False`` applies rotary to adjacent pairs instead: what llama.cpp would compute had the
    converter not permuted Q and K. ``deltas`` are added to weights (a merged LoRA).
    """
    cfg = json.loads((directory / "config.json").read_text())
    raw = load_weights(directory)
    w = {k: (v.astype(np.float16).astype(np.float32) if v.ndim == 2 else v) for k, v in raw.items()}
    for k, d in (deltas or {}).items():
        w[k] = w[k] + d
    hidden, heads, kv = cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_key_value_heads"]
    hd, eps, theta, n = hidden // heads, cfg["rms_norm_eps"], cfg["rope_theta"], len(ids)
    x = w["model.embed_tokens.weight"][ids]
    mask = np.triu(np.full((n, n), -np.inf), 1)
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        h = _rms(x, w[p + "input_layernorm.weight"], eps)
        proj = {
            s: h @ w[p + f"self_attn.{s}_proj.weight"].T + w.get(p + f"self_attn.{s}_proj.bias", 0.0) for s in "qkv"
        }
        q = _rope(proj["q"].reshape(n, heads, hd).transpose(1, 0, 2), theta, halves=halves)
        k = _rope(proj["k"].reshape(n, kv, hd).transpose(1, 0, 2), theta, halves=halves)
        v = proj["v"].reshape(n, kv, hd).transpose(1, 0, 2)
        k, v = np.repeat(k, heads // kv, axis=0), np.repeat(v, heads // kv, axis=0)
        att = q @ k.transpose(0, 2, 1) / np.sqrt(hd) + mask
        att = np.exp(att - att.max(-1, keepdims=True))
        att /= att.sum(-1, keepdims=True)
        x = x + (att @ v).transpose(1, 0, 2).reshape(n, hidden) @ w[p + "self_attn.o_proj.weight"].T
        h = _rms(x, w[p + "post_attention_layernorm.weight"], eps)
        gate = h @ w[p + "mlp.gate_proj.weight"].T
        x = x + ((gate / (1 + np.exp(-gate))) * (h @ w[p + "mlp.up_proj.weight"].T)) @ w[p + "mlp.down_proj.weight"].T
    x = _rms(x, w["model.norm.weight"], eps)
    head = w.get("lm_head.weight", w["model.embed_tokens.weight"])
    logits: Array = x[-1] @ head.T
    return logits


def log_softmax(logits: Array) -> Array:
    """Log probabilities from logits."""
    z = logits - logits.max()
    out: Array = z - np.log(np.exp(z).sum())
    return out


def write_lora_gguf(path: Path, arch: str, pairs: dict[str, tuple[Array, Array]], alpha: float) -> Path:
    """A LoRA adapter GGUF as llama.cpp reads it: ``{gguf weight name: (A rank×in, B out×rank)}``."""
    import gguf

    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, alpha)
    for name, (a, b) in pairs.items():
        writer.add_tensor(f"{name}.lora_a", np.ascontiguousarray(a, dtype=np.float32))
        writer.add_tensor(f"{name}.lora_b", np.ascontiguousarray(b, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
