"""Ollama's model lifecycle on the real engine, over HTTP: keep_alive and expiry, eviction at
``OLLAMA_MAX_LOADED_MODELS`` (idle models first, busy ones waited for), and a full queue's 503.

One server over a store of its own holding SmolLM2 and Gemma 3 (pulled from the loopback index), with
room for one loaded model, one request waiting in the scheduler and one sequence per model, so each
rule comes into play with two small models and short durations.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest

from nbllm import service
from nbllm.config import Settings
from nbllm.runtime import Runtime
from nbllm.schema import PullRequest
from nbllm.server import BackgroundServer
from tests.support.index_server import IndexServer
from tests.support.metrics import parse, value

pytestmark = pytest.mark.model

SMOL, GEMMA = "smollm2:135m", "gemma3:270m"
BUSY = "server busy, please try again.  maximum pending requests exceeded"


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory, package_index: IndexServer) -> Iterator[str]:
    root: Path = tmp_path_factory.mktemp("lifecycle")
    settings = Settings(
        home=root / "home",
        models=root / "models",
        package_index=(package_index.url,),
        max_loaded_models=1,
        max_queue=1,
        num_parallel=1,
    )
    runtime = Runtime.from_settings(settings)
    for name in (SMOL, GEMMA):
        for _ in service.pull(runtime, PullRequest(model=name)):
            pass
    server = BackgroundServer(runtime, port=0).start()
    yield server.url
    server.stop()
    runtime.close()


@pytest.fixture
def http(url: str) -> Iterator[httpx.Client]:
    """A client on a server with nothing loaded (each test starts from an empty ``/api/ps``)."""
    with httpx.Client(base_url=url, timeout=300) as client:
        for name in loaded(client):
            assert client.post("/api/generate", json={"model": name, "keep_alive": 0}).status_code == 200
        assert until(lambda: not loaded(client))
        yield client


def loaded(http: httpx.Client) -> dict[str, dict[str, Any]]:
    return {m["name"]: m for m in http.get("/api/ps").json()["models"]}


def until(cond: Callable[[], bool], timeout: float = 60.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.05)
    return bool(cond())


def generate(http: httpx.Client, model: str, **extra: Any) -> httpx.Response:
    body = {"model": model, "prompt": "Hi", "stream": False, "options": {"num_predict": 2, "temperature": 0}}
    return http.post("/api/generate", json=body | extra)


def pending(http: httpx.Client) -> float:
    """Requests waiting in the scheduler for a model (to load, or for room), as ``/metrics`` reports them."""
    samples = parse(http.get("/metrics").text)
    assert ("nbllm_scheduler_pending", frozenset()) in samples
    return value(samples, "nbllm_scheduler_pending")


def test_a_model_stays_for_its_keep_alive_then_unloads(http: httpx.Client) -> None:
    assert generate(http, SMOL, keep_alive="4s").status_code == 200
    idle_since = datetime.now(timezone.utc)
    expires = datetime.fromisoformat(loaded(http)[SMOL]["expires_at"])
    # computed when the model went idle: its last request's end + 4 s
    assert idle_since + timedelta(seconds=3) < expires < idle_since + timedelta(seconds=4.5)
    time.sleep(1)
    assert SMOL in loaded(http)  # not before its time
    assert until(lambda: SMOL not in loaded(http), timeout=30)
    assert datetime.now(timezone.utc) > expires - timedelta(seconds=0.5)


def test_negative_keep_alive_is_forever_and_zero_unloads_now(http: httpx.Client) -> None:
    assert generate(http, SMOL).status_code == 200  # loaded for the default 5 minutes
    expires = datetime.fromisoformat(loaded(http)[SMOL]["expires_at"])
    now = datetime.now(timezone.utc)
    assert now + timedelta(seconds=290) < expires <= now + timedelta(seconds=300)
    assert generate(http, SMOL, keep_alive=-1).status_code == 200  # the loaded model's session changes
    assert datetime.fromisoformat(loaded(http)[SMOL]["expires_at"]).year > 2200
    assert generate(http, SMOL).status_code == 200  # a request without keep_alive leaves it alone
    assert datetime.fromisoformat(loaded(http)[SMOL]["expires_at"]).year > 2200
    resp = http.post("/api/generate", json={"model": SMOL, "keep_alive": 0})
    assert resp.status_code == 200 and resp.json()["done_reason"] == "unload"
    assert until(lambda: not loaded(http), timeout=10)


def test_at_the_limit_an_idle_model_makes_room_and_a_busy_one_is_waited_for(http: httpx.Client) -> None:
    assert generate(http, SMOL, keep_alive="5m").status_code == 200
    assert set(loaded(http)) == {SMOL}
    assert generate(http, GEMMA).status_code == 200  # SmolLM2 is idle: it is unloaded for Gemma 3
    assert set(loaded(http)) == {GEMMA}

    # Gemma 3 busy with a long answer: a request for SmolLM2 waits until it is done
    ended: dict[str, float] = {}
    answers: dict[str, httpx.Response] = {}

    def ask(key: str, model: str, **extra: Any) -> None:
        answers[key] = generate(http, model, **extra)
        ended[key] = time.monotonic()

    # (a base model counting: greedy, it goes on past the 200 tokens asked for)
    long = {"prompt": "1, 2, 3, 4, 5, 6,", "raw": True, "options": {"num_predict": 200, "temperature": 0}}
    busy = threading.Thread(target=ask, args=("gemma", GEMMA), kwargs=long)
    busy.start()
    assert until(lambda: loaded(http).get(GEMMA, {}).get("active_requests") == 1)
    waiting = threading.Thread(target=ask, args=("smol", SMOL))
    waiting.start()
    assert until(lambda: pending(http) == 1)

    # the one place in the queue is taken: the next request is refused at once, whatever its model
    started = time.monotonic()
    refused = generate(http, GEMMA)
    assert refused.status_code == 503 and refused.json() == {"error": BUSY}
    assert time.monotonic() - started < 5
    assert busy.is_alive() and waiting.is_alive()

    busy.join(240)
    waiting.join(240)
    assert answers["gemma"].status_code == 200 and answers["gemma"].json()["eval_count"] == 200
    assert answers["smol"].status_code == 200 and answers["smol"].json()["done"] is True
    assert ended["gemma"] <= ended["smol"]
    assert set(loaded(http)) == {SMOL}
    assert pending(http) == 0
    assert generate(http, SMOL).status_code == 200  # and the server goes on serving
