"""GPU-aware scheduling with simulated devices and FakeEngines: placement at load time, eviction when a
model would not fit in VRAM, partial offload alone, and what ``/api/ps`` reports."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from nbllm.config import Settings
from nbllm.engine import LoadSpec
from nbllm.engine.fake import FakeEngineFactory
from nbllm.engine.offload import CUDA_MINIMUM, Device, ModelFacts
from nbllm.placement import Placer, read_facts
from nbllm.runtime import Runtime
from nbllm.scheduler import Scheduler
from nbllm.server import create_app
from nbllm.store import LocalModel, ModelStore
from tests.support.models import install_model
from tests.support.tiny_gguf import write_tiny_gguf

MiB = 1 << 20
FACTS = ModelFacts(layer_bytes=(100 * MiB,) * 10, output_bytes=50 * MiB, kv_bytes_per_token=1024)
TOTAL_VRAM = 2500 * MiB  # one model (1.05 GiB, 1.6 with the reserve) fits; two do not


class Card:
    """A simulated GPU whose free memory is its total less what the loaded fake engines hold."""

    def __init__(self, factory: FakeEngineFactory, total: int = TOTAL_VRAM) -> None:
        self.factory, self.total = factory, total

    def __call__(self) -> list[Device]:
        used = sum(e.info.vram_bytes for e in self.factory.loads if not e.closed)
        cpu = Device(index=0, name="CPU", description="cpu", kind="cpu", total=64 << 30, free=60 << 30)
        free = self.total - used
        return [cpu, Device(index=1, name="CUDA0", description="NVIDIA T4", kind="gpu", total=self.total, free=free)]


@pytest.fixture
def models(store: ModelStore, tmp_path: Path) -> list[LocalModel]:
    for i in range(2):
        install_model(store, f"m{i}", write_tiny_gguf(tmp_path / f"m{i}.gguf", context_length=1000 + i))
    return [store.get("m0"), store.get("m1")]


def scheduler(factory: FakeEngineFactory, settings: Settings, card: Card) -> Scheduler:
    place = Placer(settings, card, facts=lambda _path: FACTS)
    return Scheduler(factory, default_keep_alive=300.0, max_loaded=3, max_queue=8, place=place)


def spec(model: LocalModel, **kw: object) -> LoadSpec:
    assert model.model_path is not None
    return LoadSpec(path=model.model_path, num_ctx=1024, **kw)  # type: ignore[arg-type]


def test_a_model_that_fits_goes_wholly_to_the_gpu(models: list[LocalModel], settings: Settings) -> None:
    factory = FakeEngineFactory()
    s = scheduler(factory, settings, Card(factory))
    with s.acquire("m0", models[0], spec(models[0]), None):
        (view,) = s.ps()
        assert view.size_vram == view.size > 0 and view.devices == ("CUDA0",)
        assert factory.loads[0].spec.offload is not None and factory.loads[0].spec.offload.gpu_layers == 11
    s.close()


def test_a_second_model_that_would_not_fit_in_vram_evicts_the_idle_one(
    models: list[LocalModel], settings: Settings
) -> None:
    factory = FakeEngineFactory()
    s = scheduler(factory, settings, Card(factory))
    with s.acquire("m0", models[0], spec(models[0]), None):
        pass  # m0 stays loaded, idle
    with s.acquire("m1", models[1], spec(models[1]), None):
        assert [v.name for v in s.ps()] == ["m1"]  # m0 was unloaded to make room
        assert factory.loads[0].closed
        assert s.ps()[0].size_vram == s.ps()[0].size  # and m1 got the whole GPU
    s.close()


def test_room_for_both_keeps_both(models: list[LocalModel], settings: Settings) -> None:
    factory = FakeEngineFactory()
    s = scheduler(factory, settings, Card(factory, total=8000 * MiB))
    with s.acquire("m0", models[0], spec(models[0]), None):
        pass
    with s.acquire("m1", models[1], spec(models[1]), None):
        assert sorted(v.name for v in s.ps()) == ["m0", "m1"]
    s.close()


def test_a_model_too_big_for_the_gpu_alone_loads_partly_offloaded(models: list[LocalModel], settings: Settings) -> None:
    factory = FakeEngineFactory()
    small = CUDA_MINIMUM + 700 * MiB
    s = scheduler(factory, settings, Card(factory, total=small))
    with s.acquire("m0", models[0], spec(models[0]), None):
        (view,) = s.ps()
        assert 0 < view.size_vram < view.size and view.devices == ("CUDA0", "CPU")
    s.close()


def test_num_gpu_zero_and_the_cpu_library_keep_it_on_the_cpu(models: list[LocalModel], settings: Settings) -> None:
    factory = FakeEngineFactory()
    s = scheduler(factory, settings, Card(factory))
    with s.acquire("m0", models[0], spec(models[0], num_gpu=0), None):
        assert s.ps()[0].size_vram == 0 and factory.loads[0].spec.offload is None
    s.close()
    cpu = Runtime.from_settings(
        settings.model_copy(update={"llm_library": "cpu"}), engine_factory=factory, devices=Card(factory)
    )
    assert cpu.devices() == []
    cpu.close()


@pytest.fixture
def gpu_client(settings: Settings, tmp_path: Path) -> Iterator[TestClient]:
    factory = FakeEngineFactory()
    rt = Runtime.from_settings(settings, engine_factory=factory, devices=Card(factory))
    install_model(rt.store, "tiny", write_tiny_gguf(tmp_path / "tiny.gguf"))  # sized from its real GGUF header
    with TestClient(create_app(rt)) as client:
        yield client
    rt.close()


def test_api_ps_reports_the_gpu(gpu_client: TestClient) -> None:
    body = {"model": "tiny", "prompt": "hi", "stream": False, "options": {"num_predict": 2, "num_ctx": 64}}
    assert gpu_client.post("/api/generate", json=body).status_code == 200
    (model,) = gpu_client.get("/api/ps").json()["models"]
    assert model["size_vram"] == model["size"] > 0
    assert model["processor"] == "100% GPU" and model["devices"] == ["CUDA0"]


def test_the_facts_of_a_real_model_add_up_to_its_weights(smollm2_gguf: Path) -> None:
    facts = read_facts(smollm2_gguf)
    assert facts.n_layer == 30 and (facts.head_count, facts.head_count_kv) == (9, 3)
    assert facts.kv_bytes_per_token == 2 * 30 * 3 * (64 + 64)  # f16, layers, KV heads, K and V width
    data = smollm2_gguf.stat().st_size - read_gguf_offset(smollm2_gguf)
    weights = sum(facts.layer_bytes) + facts.output_bytes
    assert 0 <= data - weights < 272 * 32  # every tensor's bytes, but the alignment padding between them


def read_gguf_offset(path: Path) -> int:
    import gguf

    return int(gguf.GGUFReader(str(path)).data_offset)
