"""llama.cpp's quantizer: smaller files of the asked type that still generate; nothing partial left behind."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from nbllm.engine import LoadSpec, SamplingParams, TokenChunk
from nbllm.engine.llama import LlamaEngine
from nbllm.engine.quantize import QUANTIZATION_TYPES, parse_quantization, quantize_model
from nbllm.errors import EngineError, InvalidRequest
from nbllm.store.convert import convert_model
from nbllm.store.gguf import read_gguf
from tests.support.hf_models import log_softmax, make_hf_model, reference_logits


@pytest.fixture(scope="module")
def f16_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A converted F16 llama model 256 wide (so that K-quants apply to every matrix), and its source."""
    root = tmp_path_factory.mktemp("quantize")
    src = make_hf_model(root / "hf", "llama", hidden=256, ffn=512, heads=4, kv_heads=2, scale=0.08)
    return convert_model(src, root / "f16.gguf").path, src


def test_parse_quantization() -> None:
    assert parse_quantization("q4_k_m") == "Q4_K_M" and parse_quantization(" Q8_0 ") == "Q8_0"
    assert parse_quantization("q5_K") == "Q5_K_M"
    with pytest.raises(InvalidRequest, match=r"unsupported quantization type q9_9 - supported types are Q4_0, "):
        parse_quantization("q9_9")
    assert "Q4_K_M" in QUANTIZATION_TYPES and "IQ2_XXS" not in QUANTIZATION_TYPES  # needs an importance matrix


@pytest.mark.parametrize(("target", "tensor_type"), [("q4_K_M", "Q4_K"), ("q8_0", "Q8_0"), ("q4_0", "Q4_0")])
def test_quantized_model_is_smaller_and_still_generates(
    f16_model: tuple[Path, Path], tmp_path: Path, target: str, tensor_type: str
) -> None:
    f16, src = f16_model
    out = tmp_path / "q.gguf"
    written = list(quantize_model(f16, out, target, interval=0.01))
    assert written and written[-1] <= out.stat().st_size
    info = read_gguf(out, tensors=True)
    assert info.file_type == target.upper()
    assert out.stat().st_size < 0.6 * f16.stat().st_size
    assert {t["name"]: t["type"] for t in info.tensors}["blk.0.attn_q.weight"] == tensor_type
    assert [p.name for p in tmp_path.iterdir()] == ["q.gguf"]  # the temporary file was renamed, not copied
    engine = LlamaEngine(LoadSpec(path=out, num_ctx=128))
    try:
        ids = engine.tokenize("The quick brown fox")
        params = SamplingParams(temperature=0, num_predict=1, logprobs=True, top_logprobs=3)
        first = next(e for e in engine.generate(ids, params) if isinstance(e, TokenChunk))
        events = list(engine.generate(ids, SamplingParams(temperature=0, num_predict=10)))
    finally:
        engine.close()
    assert sum(isinstance(e, TokenChunk) for e in events) == 10
    # still the same model: its best guess is close to what the full-precision weights say
    assert first.logprob is not None
    expected = np.sort(log_softmax(reference_logits(src, ids)))[::-1][0]
    assert abs(first.logprob.top[0][1] - expected) < 0.5


def test_a_failed_quantization_leaves_nothing(tmp_path: Path) -> None:
    bad = tmp_path / "not.gguf"
    bad.write_bytes(b"this is not a GGUF file" * 100)
    out = tmp_path / "out.gguf"
    with pytest.raises(EngineError, match=r"could not quantize not\.gguf to q8_0"):
        list(quantize_model(bad, out, "q8_0"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["not.gguf"]


def test_stopping_early_waits_and_cleans_up(f16_model: tuple[Path, Path], tmp_path: Path) -> None:
    steps = quantize_model(f16_model[0], tmp_path / "q.gguf", "q4_0", interval=0.0001)
    next(steps, None)
    steps.close()  # the caller went away: the quantizer is waited for and its output removed
    assert list(tmp_path.iterdir()) == []
