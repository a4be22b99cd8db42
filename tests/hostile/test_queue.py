"""``OLLAMA_MAX_QUEUE`` counts every request that waits -- for its model, or, its model loaded, for a
slot -- and refuses the rest at once with Ollama's 503; the waiting ones hold no thread meanwhile.

The real engine on SmolLM2 behind a real server on loopback: one sequence, four places in the queue,
the sequence busy with a long answer while 24 clients ask at once.
"""

from __future__ import annotations

import sys
import threading
import traceback
from collections.abc import Iterator

import httpx
import pytest

from nbllm.config import Settings
from nbllm.runtime import Runtime
from nbllm.server import BackgroundServer
from tests.hostile.abandoned import Vanishing, engine, pending, until
from tests.support.models import install_model

pytestmark = pytest.mark.model

SMOL = "smol"
BUSY = "server busy, please try again.  maximum pending requests exceeded"
QUEUE, CLIENTS = 4, 24
OPTIONS = {"num_ctx": 1024, "temperature": 0}


@pytest.fixture(scope="module")
def url(real_runtime: Runtime, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    smol = real_runtime.store.get("smollm2:135m")
    assert smol.model_path is not None
    root = tmp_path_factory.mktemp("queue")
    settings = Settings(home=root / "home", models=root / "models", num_parallel=1, max_queue=QUEUE)
    runtime = Runtime.from_settings(settings)
    install_model(runtime.store, SMOL, smol.model_path, template=smol.template, params=smol.params)
    with BackgroundServer(runtime) as server:
        yield server.url
    runtime.close()


def ask(url: str, n: int) -> httpx.Response:
    body = {"model": SMOL, "prompt": f"Say {n}.", "stream": False, "options": {**OPTIONS, "num_predict": 2}}
    return httpx.post(url + "/api/generate", json=body, timeout=300)


def threads_in_use_cases() -> int:
    """Threads of this process now inside a generation's use case (blocked on it, or running it)."""
    stacks = [traceback.extract_stack(frame) for frame in sys._current_frames().values()]
    return sum(any(f.filename.endswith("nbllm/service/inference.py") for f in stack) for stack in stacks)


def test_every_waiting_request_counts_against_the_queue_limit(url: str) -> None:
    assert ask(url, 0).status_code == 200  # the model is loaded
    long = {**OPTIONS, "num_predict": 100_000}
    blocker = Vanishing(url, "/api/generate", {"model": SMOL, "prompt": "Count to a million.", "options": long})
    blocker.first_chunk()  # the one sequence is busy

    answers: dict[int, httpx.Response] = {}

    def client(n: int) -> None:
        answers[n] = ask(url, n)

    clients = [threading.Thread(target=client, args=(n,), name=f"client-{n}") for n in range(CLIENTS)]
    for thread in clients:
        thread.start()
    until(lambda: len(answers) >= CLIENTS - QUEUE, timeout=60)  # the refusals come at once
    until(lambda: engine(url) == (1, QUEUE))  # the others wait for the slot...
    assert pending(url) == QUEUE
    refused = [r for r in answers.values() if r.status_code == 503]
    assert len(refused) == CLIENTS - QUEUE, [r.status_code for r in answers.values()]
    assert all(r.json() == {"error": BUSY} for r in refused)
    assert threads_in_use_cases() == 0  # ...holding no thread
    assert httpx.get(url + "/api/tags", timeout=10).status_code == 200  # nor starving anyone else

    # one more, streamed or on /v1, is refused too while the queue is full
    streamed = Vanishing(url, "/api/chat", {"model": SMOL, "messages": [{"role": "user", "content": "Hi"}]})
    assert streamed.first_chunk().startswith(b"HTTP/1.1 503")
    streamed.close()
    v1 = {"model": SMOL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}
    resp = httpx.post(url + "/v1/chat/completions", json=v1, timeout=60)
    assert resp.status_code == 503 and resp.json()["error"]["message"] == BUSY

    blocker.close()  # the slot frees: the four waiting get their answers
    for thread in clients:
        thread.join(300)
    served = [r for r in answers.values() if r.status_code != 503]
    assert len(served) == QUEUE and all(r.status_code == 200 and r.json()["done"] for r in served)
    until(lambda: engine(url) == (0, 0) and pending(url) == 0, timeout=60)
