"""Scheduler rules with FakeEngines: sharing, keep_alive, expiry, eviction, reloads, queue limit."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from nbllm.engine import LoadSpec
from nbllm.engine.fake import FakeEngineFactory
from nbllm.errors import Cancelled, ModelLoadError, ServerBusy
from nbllm.scheduler import Scheduler
from nbllm.store import LocalModel, ModelStore
from tests.support.models import install_model
from tests.support.tiny_gguf import write_tiny_gguf


@pytest.fixture
def models(store: ModelStore, tmp_path: Path) -> list[LocalModel]:
    out = []
    for i in range(3):
        install_model(store, f"m{i}", write_tiny_gguf(tmp_path / f"m{i}.gguf", context_length=1000 + i))
        out.append(store.get(f"m{i}"))
    return out


def spec(model: LocalModel, **kw: object) -> LoadSpec:
    assert model.model_path is not None
    return LoadSpec(path=model.model_path, num_ctx=64, **kw)  # type: ignore[arg-type]


def make(factory: FakeEngineFactory, **kw: float) -> Scheduler:
    args = {"default_keep_alive": 300.0, "max_loaded": 3, "max_queue": 512} | kw
    return Scheduler(factory, **args)  # type: ignore[arg-type]


def wait_for(cond, timeout: float = 3.0) -> bool:  # type: ignore[no-untyped-def]
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.01)
    return False


def test_loaded_runner_is_shared(models: list[LocalModel], fake_factory: FakeEngineFactory) -> None:
    s = make(fake_factory)
    with s.acquire("m0", models[0], spec(models[0]), None) as a, s.acquire("m0", models[0], spec(models[0]), None) as b:
        assert a is b
    assert len(fake_factory.loads) == 1
    s.close()


def test_keep_alive_zero_unloads_when_idle(models: list[LocalModel], fake_factory: FakeEngineFactory) -> None:
    s = make(fake_factory)
    with s.acquire("m0", models[0], spec(models[0]), 0):
        assert s.is_loaded(models[0])
    assert not s.is_loaded(models[0]) and fake_factory.loads[0].closed
    s.close()


def test_expiry_after_idle_duration(models: list[LocalModel], fake_factory: FakeEngineFactory) -> None:
    s = make(fake_factory, default_keep_alive=0.3)
    with s.acquire("m0", models[0], spec(models[0]), None):
        time.sleep(0.5)  # busy runners never expire
        assert s.is_loaded(models[0])
    view = s.ps()[0]
    assert 0 < (view.expires_at.timestamp() - time.time()) <= 0.35
    assert wait_for(lambda: not s.is_loaded(models[0]))
    assert s.ps() == []
    s.close()


def test_negative_keep_alive_is_forever_and_sticks(models: list[LocalModel], fake_factory: FakeEngineFactory) -> None:
    s = make(fake_factory)
    with s.acquire("m0", models[0], spec(models[0]), float("inf")):
        pass
    with s.acquire("m0", models[0], spec(models[0]), None):  # no keep_alive: keeps the session
        pass
    assert s.ps()[0].expires_at.year > 2300
    s.close()


def test_idle_model_is_evicted_at_the_limit(models: list[LocalModel], fake_factory: FakeEngineFactory) -> None:
    s = make(fake_factory, max_loaded=2)
    for m in models:
        with s.acquire(m.name.display, m, spec(m), None):
            pass
    loaded = [v.name for v in s.ps()]
    assert len(loaded) == 2 and "m2:latest" in loaded
    assert sum(e.closed for e in fake_factory.loads) == 1
    s.close()


def test_busy_model_is_waited_for(models: list[LocalModel], fake_factory: FakeEngineFactory) -> None:
    s = make(fake_factory, max_loaded=1)
    order: list[str] = []
    with s.acquire("m0", models[0], spec(models[0]), None):
        t = threading.Thread(
            target=lambda: (s.acquire("m1", models[1], spec(models[1]), None).__enter__(), order.append("m1"))
        )
        t.start()
        time.sleep(0.2)
        order.append("m0 done")
    t.join(3)
    assert order == ["m0 done", "m1"]
    s.close()


def test_load_time_option_change_reloads(models: list[LocalModel], fake_factory: FakeEngineFactory) -> None:
    s = make(fake_factory)
    with s.acquire("m0", models[0], spec(models[0]), None):
        pass
    with s.acquire("m0", models[0], spec(models[0], num_batch=64), None) as r:
        assert r.spec.num_batch == 64
    assert len(fake_factory.loads) == 2 and fake_factory.loads[0].closed
    s.close()


def test_queue_limit_is_a_busy_error(models: list[LocalModel]) -> None:
    slow = FakeEngineFactory(load_delay=0.5)
    s = make(slow, max_queue=1)
    errors: list[Exception] = []

    def first() -> None:
        with s.acquire("m0", models[0], spec(models[0]), None):
            pass

    t = threading.Thread(target=first)
    t.start()
    assert wait_for(lambda: s.pending == 1)  # the first request waits for its model's load
    try:
        with s.acquire("m1", models[1], spec(models[1]), None):
            pass
    except ServerBusy as exc:
        errors.append(exc)
    t.join()
    assert errors and "maximum pending requests exceeded" in str(errors[0])
    assert s.pending == 0
    s.close()


def test_requests_waiting_for_a_slot_count_against_the_queue(models: list[LocalModel]) -> None:
    s = make(FakeEngineFactory(), max_queue=2)
    m, sp = models[0], spec(models[0], parallel=2)
    with s.acquire("m0", m, sp, None), s.acquire("m0", m, sp, None):  # both slots: nobody waits
        assert s.pending == 0
        with s.acquire("m0", m, sp, None), s.acquire("m0", m, sp, None):  # two wait for a slot
            assert s.pending == 2
            with pytest.raises(ServerBusy, match="maximum pending requests exceeded"), s.acquire("m0", m, sp, None):
                pass
        with s.acquire("m0", m, sp, None):  # room again
            assert s.pending == 1
    assert s.pending == 0
    s.close()


def test_a_cancelled_request_stops_waiting_for_its_model(models: list[LocalModel]) -> None:
    s = make(FakeEngineFactory(), max_loaded=1)
    cancel = threading.Event()
    outcome: list[BaseException] = []

    def waiter() -> None:
        try:
            with s.acquire("m1", models[1], spec(models[1]), None, cancel=cancel):
                pass
        except Cancelled as exc:
            outcome.append(exc)

    with s.acquire("m0", models[0], spec(models[0]), None):  # the one place is busy: m1 waits
        t = threading.Thread(target=waiter)
        t.start()
        assert wait_for(lambda: s.pending == 1)
        cancel.set()
        t.join(1.0)
        assert not t.is_alive() and outcome and s.pending == 0
    assert not s.is_loaded(models[1])
    s.close()


def test_close_unloads_everything(models: list[LocalModel], fake_factory: FakeEngineFactory) -> None:
    s = make(fake_factory)
    for m in models[:2]:
        with s.acquire(m.name.display, m, spec(m), None):
            pass
    s.close()
    assert all(e.closed for e in fake_factory.loads)


def _memory(limit: int, scheduler_ref: list[Scheduler]) -> Callable[[], int]:
    """Free memory = limit minus what loaded runners are estimated to take (as the OS would report)."""
    return lambda: limit - sum(r.spec.memory_estimate for r in scheduler_ref[0]._runners.values())


def test_a_model_that_does_not_fit_evicts_idle_ones(models: list[LocalModel], fake_factory: FakeEngineFactory) -> None:
    ref: list[Scheduler] = []
    s = Scheduler(fake_factory, default_keep_alive=300, max_loaded=3, max_queue=512, free_memory=_memory(1000, ref))
    ref.append(s)
    with s.acquire("m0", models[0], spec(models[0], memory_estimate=600), None):
        pass
    with s.acquire("m1", models[1], spec(models[1], memory_estimate=300), None):
        pass
    assert {v.name for v in s.ps()} == {"m0", "m1"}  # both fit
    with s.acquire("m2", models[2], spec(models[2], memory_estimate=700), None):
        pass
    assert {v.name for v in s.ps()} == {"m1", "m2"}  # m0 (idle, first by name) made room; m1 still fits
    s.close()


def test_a_model_too_big_even_alone_is_refused(models: list[LocalModel], fake_factory: FakeEngineFactory) -> None:
    s = Scheduler(fake_factory, default_keep_alive=300, max_loaded=3, max_queue=512, free_memory=lambda: 1 << 30)
    too_big = r"requires more system memory \(8.0 GiB\) than is available \(1.0 GiB\)"
    with (
        pytest.raises(ModelLoadError, match=too_big),
        s.acquire("m0", models[0], spec(models[0], memory_estimate=8 << 30), None),
    ):
        pass
    assert fake_factory.loads == []
    s.close()


def test_loads_are_first_come_first_served(models: list[LocalModel]) -> None:
    slow = FakeEngineFactory(load_delay=0.2)
    s = make(slow, max_loaded=1)
    order: list[str] = []
    done = threading.Barrier(4)

    def use(i: int) -> None:
        with s.acquire(f"m{i}", models[i], spec(models[i]), None):
            order.append(f"m{i}")
            time.sleep(0.05)
        done.wait()

    threads = []
    for i in range(3):
        threads.append(threading.Thread(target=use, args=(i,)))
        threads[-1].start()
        time.sleep(0.03)  # arrival order m0, m1, m2
    done.wait(timeout=10)
    assert order == ["m0", "m1", "m2"]
    s.close()
