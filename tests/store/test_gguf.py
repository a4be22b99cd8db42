"""Reading GGUF headers without loading weights."""

from __future__ import annotations

from pathlib import Path

import pytest

from nbllm.errors import StoreError
from nbllm.store.gguf import kv_cache_bytes, read_gguf
from tests.support.tiny_gguf import write_tiny_gguf


def test_reads_metadata_and_specials(tmp_path: Path) -> None:
    info = read_gguf(write_tiny_gguf(tmp_path / "t.gguf", context_length=1234, chat_template="{{ x }}"))
    assert info.architecture == "llama"
    assert info.context_length == 1234
    assert info.chat_template == "{{ x }}"
    assert info.token_texts["bos"] == "<s>" and info.token_texts["eos"] == "</s>"
    assert info.parameter_count == 32
    assert kv_cache_bytes(info, 100) == 1 * 100 * 2 * (4 + 4) * 2


def test_long_arrays_are_skipped(tmp_path: Path) -> None:
    info = read_gguf(write_tiny_gguf(tmp_path / "t.gguf"), keep_arrays=2)
    assert info.metadata["tokenizer.ggml.tokens"] is None
    assert info.array_lengths["tokenizer.ggml.tokens"] == 4


@pytest.mark.parametrize("cut", [3, 20, 200])
def test_truncated_or_foreign_files_are_clear_errors(tmp_path: Path, cut: int) -> None:
    data = write_tiny_gguf(tmp_path / "t.gguf").read_bytes()
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(data[:cut])
    with pytest.raises(StoreError):
        read_gguf(bad)
    (tmp_path / "txt").write_text("not a model at all")
    with pytest.raises(StoreError, match="not a GGUF"):
        read_gguf(tmp_path / "txt")
