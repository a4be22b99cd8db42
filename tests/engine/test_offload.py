"""The offload estimate (Ollama's rules) with device descriptions as data: no GPU needed."""

from __future__ import annotations

import pytest

from nbllm.engine.offload import (
    CUDA_MINIMUM,
    Device,
    ModelFacts,
    OffloadRequest,
    attention_settings,
    cpu_build_warning,
    facts_from_gguf,
    plan_offload,
)
from nbllm.service import processor_label

MiB = 1 << 20
GiB = 1 << 30
# ten blocks of 100 MiB, a 50 MiB output layer, 10 KiB of f16 KV cache per token (1 MiB per block at 1024)
FACTS = ModelFacts(layer_bytes=(100 * MiB,) * 10, output_bytes=50 * MiB, kv_bytes_per_token=10 * 1024)
REQ = OffloadRequest(num_ctx=1024)
KV = 10 * MiB
GRAPH = 25 * MiB  # the largest of Ollama's estimates here: a quarter of a block
TOTAL = 10 * 100 * MiB + 50 * MiB + KV + GRAPH
CPU = Device(index=0, name="CPU", description="AMD EPYC", kind="cpu", total=64 * GiB, free=60 * GiB)


def gpu(index: int, free: int, total: int = 80 * GiB, name: str | None = None) -> Device:
    name = name or f"CUDA{index}"
    return Device(index=index, name=name, description="NVIDIA H200", kind="gpu", total=total, free=free)


def room_for(layers: int, *, extra: int = 0) -> int:
    """Free memory that holds the reserve, the graph and ``layers`` blocks (with their KV), and no more."""
    block = 101 * MiB
    return CUDA_MINIMUM + block + GRAPH + layers * block + 50 * MiB + extra  # (less than one more block)


def test_one_big_gpu_takes_every_layer_and_the_whole_size() -> None:
    plan = plan_offload([CPU, gpu(1, 70 * GiB)], FACTS, REQ)
    assert (plan.gpu_layers, plan.total_layers, plan.layers) == (11, 11, {1: 11})
    assert plan.fits
    assert plan.total_bytes == TOTAL and plan.kv_bytes == KV and plan.graph_bytes == GRAPH
    assert plan.vram_bytes == plan.total_bytes  # size_vram == size
    assert processor_label(plan.total_bytes, plan.vram_bytes) == "100% GPU"
    assert plan.device_names() == ("CUDA1",)
    assert plan.main_device == 0  # llama.cpp counts the GPUs only


def test_main_gpu_and_tensor_split_count_gpus_as_llama_cpp_does() -> None:
    igpu = Device(index=0, name="Vulkan0", description="Radeon iGPU", kind="igpu", total=8 * GiB, free=8 * GiB)
    devices = [igpu, CPU, gpu(2, 30 * GiB), gpu(3, 70 * GiB)]  # an integrated GPU is left out beside discrete ones
    plan = plan_offload(devices, FACTS, REQ)
    assert plan.layers == {3: 11} and plan.main_device == 1
    spread = plan_offload(devices, FACTS, OffloadRequest(num_ctx=1024, spread=True))
    assert spread.layers == {3: 6, 2: 5} and spread.tensor_split(3) == [5.0, 6.0, 0.0]
    only = plan_offload([CPU, igpu], FACTS, REQ)  # no discrete GPU: the integrated one is used
    assert only.layers == {0: 11} and only.main_device == 0


def test_a_small_gpu_takes_what_fits_and_ps_shows_the_split() -> None:
    plan = plan_offload([CPU, gpu(1, room_for(5))], FACTS, REQ)
    assert plan.gpu_layers == 5 and plan.layers == {1: 5}
    assert not plan.fits
    assert plan.vram_bytes == 5 * 101 * MiB + GRAPH  # its blocks with their KV, and the graph
    assert processor_label(plan.total_bytes, plan.vram_bytes) == "51%/49% CPU/GPU"
    assert plan.device_names() == ("CUDA1", "CPU")


def test_a_gpu_without_room_for_the_graph_and_two_blocks_is_not_used() -> None:
    plan = plan_offload([CPU, gpu(1, CUDA_MINIMUM + GRAPH + 150 * MiB)], FACTS, REQ)
    assert plan.gpu_layers == 0 and plan.vram_bytes == 0
    assert processor_label(plan.total_bytes, plan.vram_bytes) == "100% CPU"


def test_num_gpu_zero_is_cpu_only_and_a_number_caps_the_layers() -> None:
    none = plan_offload([gpu(0, 70 * GiB)], FACTS, OffloadRequest(num_ctx=1024, num_gpu=0))
    assert (none.gpu_layers, none.vram_bytes, none.fits) == (0, 0, True)
    three = plan_offload([gpu(0, 70 * GiB)], FACTS, OffloadRequest(num_ctx=1024, num_gpu=3))
    assert three.gpu_layers == 3 and three.fits  # what was asked for
    assert three.vram_bytes == 3 * 101 * MiB + GRAPH


def test_no_gpu_means_no_offload() -> None:
    plan = plan_offload([CPU], FACTS, REQ)
    assert plan.gpu_layers == 0 and plan.layers == {} and plan.vram_bytes == 0


def test_gpu_overhead_is_kept_free_on_each_gpu() -> None:
    free = room_for(5, extra=300 * MiB)
    assert plan_offload([gpu(0, free)], FACTS, REQ).gpu_layers == 8  # 300 MiB more (and the 50 spare) hold three
    kept = plan_offload([gpu(0, free)], FACTS, OffloadRequest(num_ctx=1024, overhead=300 * MiB))
    assert kept.gpu_layers == 5


def test_one_gpu_that_fits_is_preferred_unless_spread() -> None:
    devices = [gpu(0, 70 * GiB), gpu(1, 60 * GiB)]
    alone = plan_offload(devices, FACTS, REQ)
    assert alone.layers == {0: 11}
    spread = plan_offload(devices, FACTS, OffloadRequest(num_ctx=1024, spread=True))
    assert spread.layers == {0: 6, 1: 5}  # round-robin, the output layer last
    assert spread.main_device is None
    assert spread.tensor_split(4) == [6.0, 5.0, 0.0, 0.0]
    assert spread.vram_bytes == spread.total_bytes


def test_a_model_too_big_for_either_gpu_is_split_across_both() -> None:
    devices = [gpu(0, room_for(6)), gpu(1, room_for(6))]
    plan = plan_offload(devices, FACTS, REQ)
    assert plan.gpu_layers == 11 and plan.fits
    assert sorted(plan.layers) == [0, 1] and sum(plan.layers.values()) == 11
    assert plan.device_names() == ("CUDA0", "CUDA1")


def test_context_and_parallel_grow_the_kv_cache() -> None:
    plan = plan_offload([gpu(0, 70 * GiB)], FACTS, OffloadRequest(num_ctx=4096, parallel=4))
    assert plan.kv_bytes == 16 * KV


@pytest.mark.parametrize(("kv", "fa", "want_kv", "warned"), [
    ("q8_0", True, "q8_0", False),
    ("q4_0", True, "q4_0", False),
    ("q8_0", None, "f16", True),
    ("q8_0", False, "f16", True),
    ("f16", None, "f16", False),
])  # fmt: skip
def test_a_quantized_kv_cache_needs_flash_attention_on(
    kv: str,
    fa: bool | None,  # noqa: FBT001 - a parameter of the table
    want_kv: str,
    warned: bool,  # noqa: FBT001
) -> None:
    got_kv, got_fa, warnings = attention_settings(kv, fa)
    assert (got_kv, got_fa, bool(warnings)) == (want_kv, fa, warned)
    plan = plan_offload([gpu(0, 70 * GiB)], FACTS, OffloadRequest(num_ctx=1024, kv_cache_type=kv, flash_attention=fa))
    assert plan.kv_cache_type == want_kv and plan.flash_attention is fa
    assert plan.kv_bytes == (KV * 34 // 64 if want_kv == "q8_0" else KV * 18 // 64 if want_kv == "q4_0" else KV)
    if warned:
        assert "OLLAMA_FLASH_ATTENTION" in plan.warnings[0]


def test_facts_from_a_gguf_tensor_table() -> None:
    metadata = {
        "general.architecture": "llama",
        "llama.block_count": 2,
        "llama.embedding_length": 64,
        "llama.attention.head_count": 4,
        "llama.attention.head_count_kv": 2,
    }
    tensors = [
        {"name": "token_embd.weight", "type": "Q8_0", "shape": [64, 100]},  # 200 blocks of 34 bytes
        {"name": "blk.0.attn_q.weight", "type": "F16", "shape": [64, 64]},
        {"name": "blk.0.attn_norm.weight", "type": "F32", "shape": [64]},
        {"name": "blk.1.attn_q.weight", "type": "Q4_1", "shape": [64, 64]},  # 128 blocks of 20 bytes
        {"name": "output_norm.weight", "type": "F32", "shape": [64]},
    ]
    facts = facts_from_gguf(metadata, tensors)
    assert facts.layer_bytes == (64 * 64 * 2 + 64 * 4, 128 * 20)
    assert facts.output_bytes == 64 * 4 + 200 * 34  # no output.weight: the tied embeddings count
    assert facts.kv_bytes_per_token == 2 * 2 * 2 * (16 + 16)  # f16, layers, kv heads, K and V width
    assert (facts.head_count, facts.head_count_kv) == (4, 2)


def test_the_cpu_build_warning_names_the_fix() -> None:
    warning = cpu_build_warning([CPU], "NVIDIA")
    assert warning is not None and "NVIDIA" in warning and 'CMAKE_ARGS="-DGGML_CUDA=on"' in warning
    assert "docs/gpu.md" in warning
    assert cpu_build_warning([CPU, gpu(1, 70 * GiB)], "NVIDIA") is None  # a GPU build: nothing to say
    assert cpu_build_warning([CPU], None) is None  # no GPU here either
