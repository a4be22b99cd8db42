"""A Hugging Face ``tokenizer.json`` as GGUF tokenizer metadata (what llama.cpp tokenizes with).

Two kinds are read: byte-level BPE (GPT-2 style: Llama 3, Qwen2, SmolLM, Mistral Nemo ...), written
as ``tokenizer.ggml.model = "gpt2"`` with its merges, and BPE with byte fallback (the SentencePiece
style of Llama 2, Mistral and TinyLlama), written as ``"llama"`` with scores. llama.cpp re-implements
each pre-tokenizer and picks it by the name in ``tokenizer.ggml.pre``; the name is found here by
comparing the tokenizer's split regex with the ones llama.cpp implements (its converter hashes a
tokenization by ``transformers`` instead, which nbllm does not depend on). Special token ids,
the add-BOS flag, merges and the chat template come from ``gguf.SpecialVocab``.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gguf

from nbllm.errors import InvalidRequest

__all__ = ["Vocab", "add_vocab", "load_vocab"]

log = logging.getLogger(__name__)

# Split regexes of the pre-tokenizers llama.cpp implements (src/llama-vocab.cpp quotes the originals).
_GPT2_REGEX = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)"
_PRE_BY_REGEX = {
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
    r"|\s+(?!\S)|\s+": "llama-bpe",
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
    r"|\s+(?!\S)|\s+": "qwen2",
    _GPT2_REGEX: "gpt-2",
}
# What a model family uses when its regex is not one of the above (logged, as it may tokenize differently).
_PRE_BY_ARCH = {"llama": "llama-bpe", "qwen2": "qwen2"}
_BYTE_TOKEN = re.compile(r"<0x[0-9A-Fa-f]{2}>")


@dataclass(frozen=True)
class Vocab:
    """The token table of a model, as GGUF stores it."""

    model: str
    """``gpt2`` (byte-level BPE) or ``llama`` (SentencePiece-style BPE with byte fallback)."""
    pre: str | None
    """llama.cpp's pre-tokenizer name (``gpt2`` vocabularies only)."""
    tokens: list[str]
    types: list[int]
    scores: list[float] | None = None
    add_space_prefix: bool | None = None


def _pre_tokenizer_kinds(node: Any) -> list[dict[str, Any]]:
    """The pre-tokenizer steps of a tokenizer.json, flattened out of Sequences."""
    if not isinstance(node, dict):
        return []
    if node.get("type") == "Sequence":
        return [step for sub in node.get("pretokenizers", []) for step in _pre_tokenizer_kinds(sub)]
    return [node]


def _pre_name(tokenizer: dict[str, Any], arch: str) -> str:
    steps = _pre_tokenizer_kinds(tokenizer.get("pre_tokenizer"))
    regexes = [s.get("pattern", {}).get("Regex") for s in steps if s.get("type") == "Split"]
    if any(s.get("type") == "ByteLevel" and s.get("use_regex", True) for s in steps):
        regexes.append(_GPT2_REGEX)
    digits = any(s.get("type") == "Digits" and s.get("individual_digits") for s in steps)
    if digits and regexes == [_GPT2_REGEX]:
        return "smollm"
    if len(regexes) == 1 and regexes[0] in _PRE_BY_REGEX:
        return _PRE_BY_REGEX[regexes[0]]
    fallback = _PRE_BY_ARCH.get(arch, "default")
    log.warning("unrecognised pre-tokenizer %s; using llama.cpp's %r (tokenization may differ)", regexes, fallback)
    return fallback


def _id_table(tokenizer: dict[str, Any], vocab_size: int) -> tuple[dict[int, str], dict[int, bool]]:
    """Token text by id, and for added tokens whether they are special."""
    vocab = tokenizer.get("model", {}).get("vocab")
    if not isinstance(vocab, dict):
        raise InvalidRequest("tokenizer.json has no model.vocab table")
    by_id = {int(i): str(t) for t, i in vocab.items()}
    added: dict[int, bool] = {}
    for item in tokenizer.get("added_tokens") or []:
        by_id[int(item["id"])] = str(item["content"])
        added[int(item["id"])] = bool(item.get("special"))
    if by_id and max(by_id) >= vocab_size:
        raise InvalidRequest(f"tokenizer has token id {max(by_id)} but the model's vocab_size is {vocab_size}")
    return by_id, added


def load_vocab(directory: Path, vocab_size: int, arch: str) -> Vocab:
    """Read ``tokenizer.json`` into the GGUF token table (padded with unused tokens to ``vocab_size``)."""
    path = directory / "tokenizer.json"
    if not path.is_file():
        if (directory / "tokenizer.model").is_file():
            raise InvalidRequest(
                "only tokenizer.model (SentencePiece) was found; nbllm converts tokenizers from tokenizer.json "
                "(save the tokenizer with a fast tokenizer: AutoTokenizer.from_pretrained(...).save_pretrained(...))"
            )
        raise InvalidRequest("tokenizer.json not found: the model directory must include its tokenizer")
    tokenizer = json.loads(path.read_text(encoding="utf-8"))
    model = tokenizer.get("model", {})
    if model.get("type") != "BPE":
        raise InvalidRequest(f"unsupported tokenizer type {model.get('type')!r}; nbllm converts BPE tokenizers")
    by_id, added = _id_table(tokenizer, vocab_size)
    byte_fallback = bool(model.get("byte_fallback"))
    tokens: list[str] = []
    types: list[int] = []
    for i in range(vocab_size):
        text = by_id.get(i)
        if text is None:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
            continue
        tokens.append(text)
        types.append(_token_type(text, i, added, byte_fallback=byte_fallback, unk=model.get("unk_token")))
    if not byte_fallback:
        return Vocab("gpt2", _pre_name(tokenizer, arch), tokens, types)
    # SentencePiece merges the pair whose result scores highest; ranking by id keeps the BPE merge order.
    scores = [0.0 if t != gguf.TokenType.NORMAL else -float(i) for i, t in enumerate(types)]
    normalizer = json.dumps(tokenizer.get("normalizer") or {}) + json.dumps(tokenizer.get("pre_tokenizer") or {})
    space_prefix = '"Prepend"' in normalizer or '"prepend_scheme": "first"' in normalizer
    return Vocab("llama", None, tokens, types, scores, add_space_prefix=space_prefix)


def _token_type(text: str, i: int, added: dict[int, bool], *, byte_fallback: bool, unk: Any) -> int:
    if byte_fallback and _BYTE_TOKEN.fullmatch(text):
        return gguf.TokenType.BYTE
    if unk is not None and text == unk:
        return gguf.TokenType.UNKNOWN
    if i in added:
        return gguf.TokenType.CONTROL if added[i] else gguf.TokenType.USER_DEFINED
    return gguf.TokenType.NORMAL


def add_vocab(writer: gguf.GGUFWriter, vocab: Vocab, directory: Path) -> None:
    """Write the token table, merges, special token ids and chat template."""
    writer.add_tokenizer_model(vocab.model)
    if vocab.pre is not None:
        writer.add_tokenizer_pre(vocab.pre)
    writer.add_token_list(vocab.tokens)
    writer.add_token_types(vocab.types)
    if vocab.scores is not None:
        writer.add_token_scores(vocab.scores)
    if vocab.add_space_prefix is not None:
        writer.add_bool(gguf.Keys.Tokenizer.ADD_PREFIX, vocab.add_space_prefix)
    special = gguf.SpecialVocab(directory, load_merges=vocab.model == "gpt2", n_vocab=len(vocab.tokens))
    special.add_to_gguf(writer, quiet=True)
