"""llama.cpp's devices through ggml's device API (the real build here: CPU), the settings a plan gives
llama.cpp, the GPU-hardware probe and the warning for a CPU-only build, and the serve start log."""

from __future__ import annotations

import logging
from pathlib import Path

import httpx
import llama_cpp as L
import pytest

from nbllm.config import Settings
from nbllm.engine import LoadSpec
from nbllm.engine.llama.devices import build_info, gpu_hardware, list_devices, log_hardware
from nbllm.engine.llama.native import apply_plan, attention_types
from nbllm.engine.offload import Device, ModelFacts, OffloadRequest, plan_offload
from nbllm.runtime import Runtime
from nbllm.server import BackgroundServer

GiB = 1 << 30
FACTS = ModelFacts(layer_bytes=(GiB // 10,) * 30, output_bytes=GiB // 20, kv_bytes_per_token=4096)


def h200(index: int, free: int = 100 * GiB) -> Device:
    return Device(index=index, name=f"CUDA{index}", description="NVIDIA H200", kind="gpu", total=140 * GiB, free=free)


def test_the_cpu_device_is_listed_with_its_memory() -> None:
    devices = list_devices()
    cpu = [d for d in devices if d.kind == "cpu"]
    assert len(cpu) == 1 and cpu[0].name == "CPU"
    assert cpu[0].description  # the CPU's model name
    assert 0 < cpu[0].free <= cpu[0].total
    assert [d.index for d in devices] == list(range(len(devices)))
    info = build_info()
    assert "CPU" in info.backends
    assert info.gpu_offload == any(d.is_gpu for d in devices)
    assert (Path(info.library) / "libllama.so").exists() or (Path(info.library) / "libllama.dylib").exists()


def test_gpu_hardware_is_seen_without_llama_cpp(tmp_path: Path) -> None:
    assert gpu_hardware(tmp_path, system="Linux", machine="x86_64") is None
    (tmp_path / "proc/driver").mkdir(parents=True)
    (tmp_path / "proc/driver/nvidia").mkdir()
    assert gpu_hardware(tmp_path, system="Linux", machine="x86_64") == "NVIDIA"
    other = tmp_path / "other"
    (other / "dev").mkdir(parents=True)
    (other / "dev/nvidia0").touch()
    assert gpu_hardware(other, system="Linux", machine="x86_64") == "NVIDIA"
    assert gpu_hardware(tmp_path / "none", system="Darwin", machine="arm64") == "Apple silicon (Metal)"


def test_a_gpu_machine_with_a_cpu_build_gets_one_warning(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="nbllm.engine.llama")
    devices = log_hardware(hardware="NVIDIA")  # this build's real device list, a GPU driver simulated
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    if any(d.is_gpu for d in devices):  # (a GPU build says nothing)
        assert warnings == []
        return
    assert len(warnings) == 1
    assert "NVIDIA" in warnings[0].getMessage() and "-DGGML_CUDA=on" in warnings[0].getMessage()
    caplog.clear()
    log_hardware(hardware="")  # no GPU: no warning
    assert [r for r in caplog.records if r.levelno == logging.WARNING] == []


def test_a_plan_on_one_gpu_sets_its_layers_and_no_split(tmp_path: Path) -> None:
    plan = plan_offload([h200(0), h200(1, 120 * GiB)], FACTS, OffloadRequest(num_ctx=2048))
    spec = LoadSpec(path=tmp_path / "m.gguf", offload=plan)
    mp = L.llama_model_default_params()
    assert apply_plan(mp, spec) is None
    assert (mp.n_gpu_layers, mp.split_mode, mp.main_gpu) == (31, L.LLAMA_SPLIT_MODE_NONE, 1)


def test_a_plan_over_two_gpus_sets_the_tensor_split(tmp_path: Path) -> None:
    req = OffloadRequest(num_ctx=2048, spread=True)
    plan = plan_offload([h200(0), h200(1)], FACTS, req)
    spec = LoadSpec(path=tmp_path / "m.gguf", offload=plan)
    mp = L.llama_model_default_params()
    split = apply_plan(mp, spec)
    assert (mp.n_gpu_layers, mp.split_mode) == (31, L.LLAMA_SPLIT_MODE_LAYER)
    assert [split[0], split[1]] == [16.0, 15.0] and list(split[2:]) == [0.0] * (len(split) - 2)


def test_partial_and_cpu_plans_set_n_gpu_layers(tmp_path: Path) -> None:
    small = plan_offload([h200(0, free=2 * GiB)], FACTS, OffloadRequest(num_ctx=2048))
    assert 0 < small.gpu_layers < 31
    mp = L.llama_model_default_params()
    apply_plan(mp, LoadSpec(path=tmp_path / "m.gguf", offload=small))
    assert mp.n_gpu_layers == small.gpu_layers
    none = plan_offload([h200(0)], FACTS, OffloadRequest(num_ctx=2048, num_gpu=0))
    apply_plan(mp, LoadSpec(path=tmp_path / "m.gguf", offload=none))
    assert mp.n_gpu_layers == 0


def test_the_plan_decides_the_kv_cache_type_and_flash_attention(tmp_path: Path) -> None:
    on = plan_offload([h200(0)], FACTS, OffloadRequest(num_ctx=2048, kv_cache_type="q8_0", flash_attention=True))
    assert attention_types(LoadSpec(path=tmp_path / "m", offload=on)) == (L.LLAMA_FLASH_ATTN_TYPE_ENABLED, 8)
    auto = plan_offload([h200(0)], FACTS, OffloadRequest(num_ctx=2048, kv_cache_type="q4_0"))
    assert attention_types(LoadSpec(path=tmp_path / "m", offload=auto)) == (L.LLAMA_FLASH_ATTN_TYPE_AUTO, 1)
    # without a GPU plan the same rule: q8_0 with flash attention on, f16 (1) otherwise
    assert attention_types(LoadSpec(path=tmp_path / "m", kv_cache_type="q8_0", flash_attention=True)) == (1, 8)
    assert attention_types(LoadSpec(path=tmp_path / "m", kv_cache_type="q8_0", flash_attention=False)) == (0, 1)
    assert attention_types(LoadSpec(path=tmp_path / "m", kv_cache_type="q4_0")) == (-1, 1)


def test_serve_logs_the_backends_and_devices_at_start(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    rt = Runtime.from_settings(Settings(home=tmp_path / "home", models=tmp_path / "models"))
    server = BackgroundServer(rt, port=0).start()
    try:
        assert httpx.get(server.url + "/api/version", timeout=10).status_code == 200
    finally:
        server.stop()
        rt.close()
    lines = [r.getMessage() for r in caplog.records if r.name == "nbllm.engine.llama"]
    built = [line for line in lines if "built with" in line]
    assert len(built) == 1 and "CPU" in built[0]
    assert any(line.startswith("device CPU: ") and "GiB total" in line for line in lines)
