"""The GPU check's plan without a GPU: what travels, how llama.cpp is built, how nbllm finds that build,
the model made from its header, and the report; ``python -m bench.gpu --dry-run`` builds nothing."""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest

from bench import gpu, gpu_build, gpu_carry, gpu_measure, gpu_model
from nbllm.store.gguf import read_gguf

REPO = Path(__file__).resolve().parents[2]


def _carry(tmp_path: Path) -> Path:
    """A carry folder shaped as bench.gpu_carry writes it (tiny contents)."""
    import gguf

    carry = tmp_path / "carry"
    (carry / "wheels").mkdir(parents=True)
    (carry / "wheels" / "pydantic_settings-2.16.3-py3-none-any.whl").write_bytes(b"")
    with tarfile.open(carry / "llama.cpp.tar.gz", "w:gz"):
        pass
    src = tmp_path / "src.gguf"
    writer = gguf.GGUFWriter(str(src), "llama")
    writer.add_block_count(1)
    writer.add_tensor("token_embd.weight", np.zeros((4, 64), dtype=np.float32))
    writer.add_tensor("blk.0.attn_norm.weight", np.zeros(64, dtype=np.float32))
    writer.add_tensor("blk.0.attn_q.weight", np.zeros((64, 64), dtype=np.float16))
    for step in (writer.write_header_to_file, writer.write_kv_data_to_file, writer.write_tensors_to_file):
        step()
    writer.close()
    gpu_model.header(src, carry / "model-header.gguf")
    return carry


def test_dry_run_prints_the_plan_and_builds_nothing(tmp_path: Path) -> None:
    carry = _carry(tmp_path)
    work = tmp_path / "work"
    out = subprocess.run(
        [sys.executable, "-m", "bench.gpu", "--dry-run", "--carry", str(carry), "--work", str(work)],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    plan = json.loads(out.stdout)
    assert plan["missing"] == [] and plan["wheels"] == ["pydantic_settings-2.16.3-py3-none-any.whl"]
    assert "-DGGML_CUDA=ON" in plan["configure"] and "-DCMAKE_CUDA_ARCHITECTURES=native" in plan["configure"]
    assert plan["build"][-4:] == list(gpu_build.TARGETS)
    assert plan["env"]["LLAMA_CPP_LIB_PATH"] == str(work / "build-cuda" / "bin")
    assert plan["env"]["PYTHONPATH"].split(":") == [str(work / "site"), str(REPO), str(work / "python")]
    assert plan["install"][-1].endswith(".whl") and "--no-index" in plan["install"]
    assert plan["servers"]["llama-server"] == {"-np": 8, "-ngl": 999}
    assert plan["model"]["params"] == {"draft_num_predict": 0}  # made-up weights repeat: no speculation
    assert not work.exists()  # nothing unpacked, built or served


def test_a_missing_carry_is_named(tmp_path: Path) -> None:
    assert gpu.check_carry(tmp_path) == ["llama.cpp.tar.gz", "model-header.gguf", "model-header.json", "wheels/*.whl"]
    with pytest.raises(SystemExit, match="missing from"):
        gpu.main(["--carry", str(tmp_path), "--work", str(tmp_path / "w")])


def test_the_cpu_rehearsal_builds_without_cuda(tmp_path: Path) -> None:
    args = gpu_build.configure_args(tmp_path / "src", tmp_path / "b", cuda=False)
    assert "-DGGML_CUDA=OFF" in args and not any(a.startswith("-DCMAKE_CUDA_ARCHITECTURES") for a in args)
    assert "-DLLAMA_USE_PREBUILT_UI=OFF" in args and "-DLLAMA_OPENSSL=OFF" in args  # nothing fetched


KEPT = (
    "CMakeLists.txt",
    "ggml/src/ggml-cuda/fattn.cu",
    "ggml/src/ggml-cpu/ops.cpp",
    "ggml/src/ggml.c",
    "tools/server/server.cpp",
    "tools/ui/CMakeLists.txt",
    "src/llama.cpp",
    "vendor/cpp-httplib/httplib.h",
)
DROPPED = (
    "models/ggml-vocab-llama-bpe.gguf",
    "docs/build.md",
    "tests/test-backend-ops.cpp",
    "ggml/src/ggml-vulkan/ggml-vulkan.cpp",
    "ggml/src/ggml-metal/ggml-metal.m",
    "tools/ui/src/app.ts",
)


def test_the_vendor_trim_keeps_the_build_and_drops_the_rest() -> None:
    assert [p for p in KEPT if gpu_carry._dropped(p)] == []
    assert [p for p in DROPPED if not gpu_carry._dropped(p)] == []


def test_the_vendor_tarball_renames_every_member_long_names_too(tmp_path: Path) -> None:
    import io

    sdist = tmp_path / "llama_cpp_python-0.3.36.tar.gz"
    long = "ggml/src/ggml-cuda/template-instances/" + "fattn-mma-f16-instance-ncols1_16-ncols2_2" * 2 + ".cu"
    names = {
        "vendor/llama.cpp/CMakeLists.txt": "kept",
        "vendor/llama.cpp/" + long: "kept, name over 100 characters",
        "vendor/llama.cpp/docs/build.md": "dropped",
        "llama_cpp/llama_cpp.py": "the bindings",
        "llama_cpp/server/app.py": "not needed",
        "pyproject.toml": "not needed",
    }
    with tarfile.open(sdist, "w:gz", format=tarfile.PAX_FORMAT) as tar:
        for name, text in names.items():
            info = tarfile.TarInfo("llama_cpp_python-0.3.36/" + name)
            info.size = len(text)
            tar.addfile(info, io.BytesIO(text.encode()))
    out = tmp_path / "out.tar.gz"
    gpu_carry.pack_vendor(sdist, out)
    with tarfile.open(out) as tar:
        names_out = sorted(tar.getnames())
    assert names_out == ["llama.cpp/CMakeLists.txt", "llama.cpp/" + long, "python/llama_cpp/llama_cpp.py"]


def test_the_model_is_remade_from_its_header_with_the_same_layout(tmp_path: Path) -> None:
    carry = _carry(tmp_path)
    made = tmp_path / "made.gguf"
    size = gpu_model.materialize(carry / "model-header.gguf", made)
    assert size == (tmp_path / "src.gguf").stat().st_size
    original, remade = read_gguf(tmp_path / "src.gguf", tensors=True), read_gguf(made, tensors=True)
    assert remade.tensors == original.tensors and remade.metadata == original.metadata
    info = json.loads((carry / "model-header.json").read_text())
    with made.open("rb") as fh:
        norm = next(t for t in info["tensors"] if t["name"] == "blk.0.attn_norm.weight")
        fh.seek(norm["offset"])
        assert np.frombuffer(fh.read(norm["bytes"]), np.float32).tolist() == [1.0] * 64  # norms at 1


def test_the_report_judges_the_targets() -> None:
    results = {
        "config": {"parallel": 8},
        "paired": {
            "1": {"ours": [900.0] * 9, "theirs": [1000.0] * 9, "ratios": [0.95] * 9},
            "8": {"ours": [5000.0] * 9, "theirs": [5200.0] * 9, "ratios": [0.96] * 9},
        },
        "ttft": {k: [0.012] * 3 for k in ("ours", "theirs")}
        | {k: [0.010] * 3 for k in ("ours_prefill", "theirs_prefill")}
        | {k: [2.0] * 3 for k in ("ours_overhead_ms", "theirs_overhead_ms")},
        "ps": {"models": [{"name": "m", "processor": "100% GPU", "size": 5, "size_vram": 5, "devices": ["CUDA0"]}]},
    }
    text = "\n".join(gpu_measure.report_lines(results, "test"))
    assert "| 1 client decode ≥ 0.9× llama-server | 0.950× (95% CI 0.950–0.950) | yes |" in text
    assert "| 8 clients aggregate ≥ 1.0× llama-server -np 8 | 0.960× (95% CI 0.960–0.960) | no |" in text
    assert "TTFT overhead ≤ 5 ms over nbllm's own prefill (~2k tokens) | +2.0 ms | yes |" in text
    assert "100% GPU, size 5, size_vram 5, ['CUDA0'] | yes |" in text


@pytest.mark.parametrize("kind", ["Q5_0", "Q4_K", "Q6_K"])
def test_gemma_s_block_types_are_made_up_with_small_finite_scales(kind: str) -> None:
    import gguf

    size, per = gpu_model._BLOCKS[kind]
    assert (size, per) == gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[kind]][::-1]
    data = gpu_model._blocks(kind, 40 * size, np.random.default_rng(1), norm=False)
    assert len(data) == 40 * size
    values = gguf.dequantize(np.frombuffer(data, np.uint8).reshape(40, size), gguf.GGMLQuantizationType[kind])
    assert values.size == 40 * per and np.isfinite(values).all() and 0 < np.abs(values).max() < 1


def test_the_profile_summary_counts_samples_per_thread_and_frame() -> None:
    raw = "\n".join(
        [
            "thread (0x1);run (nbllm/engine/llama/batching.py:10);decode (llama_cpp/llama_cpp.py:99) 30",
            "thread (0x1);run (nbllm/engine/llama/batching.py:12);sample (nbllm/engine/llama/batching.py:40) 10",
            "thread (0x2);run_forever (asyncio/base_events.py:600);_run_once (asyncio/base_events.py:1900) 5",
            "garbage",
        ]
    )
    s = gpu_measure.summarize(raw)
    assert list(s["threads"]) == ["thread (0x1)", "thread (0x2)"]
    t1 = s["threads"]["thread (0x1)"]
    assert t1["samples"] == 40
    assert t1["self"] == {"decode (llama_cpp/llama_cpp.py)": 30, "sample (nbllm/engine/llama/batching.py)": 10}
    assert t1["inclusive"]["run (nbllm/engine/llama/batching.py)"] == 40  # both lines of run, merged


def test_the_report_shows_cpu_per_token_and_the_profile() -> None:
    cpu = {"ours": [300.0] * 3, "theirs": [200.0] * 3, "ours_rate": [900.0] * 3, "theirs_rate": [1e3] * 3}
    stacks = "thread (0x1);a (x.py:1);b (y.py:2) 8\nthread (0x1);a (x.py:1) 2"
    results = {"cpu_per_token": cpu, "profile": {"tokens": 4500, **gpu_measure.summarize(stacks)}}
    text = "\n".join(gpu_measure.report_lines(results, "test"))
    assert "| nbllm | 300 | 900.0 |" in text and "| llama-server | 200 | 1000.0 |" in text
    assert "thread (0x1): 10 samples" in text and "- b (y.py): 8 (80%)" in text


def test_the_report_shows_the_ttft_steps_and_a_profile_per_client_count() -> None:
    stacks = "thread (0x1);a (x.py:1);b (y.py:2) 8\nthread (0x1);a (x.py:1) 2"
    medians = {"tokenize": {"median": 2.4, "ci95": [1.9, 2.9]}, "overhead": {"median": 6.2, "ci95": None}}
    results = {
        "profile": {"tokens": 4500, "clients": 1, **gpu_measure.summarize(stacks)},
        "profile_8": {"tokens": 24000, "clients": 8, **gpu_measure.summarize(stacks)},
        "ttft_steps_0": {"command": "python -m bench.ttft_path --pause 0.0", "pause": 0.0, "medians": medians},
        "ttft_steps_0.5": {"command": "python -m bench.ttft_path --pause 0.5", "pause": 0.5, "medians": medians},
    }
    text = "\n".join(gpu_measure.report_lines(results, "test"))
    assert "step by step (back to back)" in text and "step by step (0.5 s pause)" in text
    assert "| tokenize | 2.400 | 1.900–2.900 |  |" in text and "| overhead | 6.200 | (too few rounds) |  |" in text
    assert "(py-spy, 1 client, 4500 tokens)" in text and "(py-spy, 8 clients, 24000 tokens)" in text


def test_the_report_can_be_named(tmp_path: Path) -> None:
    assert gpu._args(["--name", "gpu-run2"]).name == "gpu-run2"
    path = gpu_measure.write({"config": {"parallel": 8}}, tmp_path, "gpu-run2")
    assert path == tmp_path / "gpu-run2.md" and (tmp_path / "gpu-run2.json").is_file()
