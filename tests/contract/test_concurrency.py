"""Parallel requests on one loaded model: batched decoding gives each stream what it would get alone."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from nbllm.server import BackgroundServer

MODEL = "smollm2:135m"
REQUESTS = [
    ("Name three rivers in Europe.", {"temperature": 0, "num_predict": 40}),
    ("What is a prime number?", {"temperature": 0, "num_predict": 24, "seed": 5}),
    ("Describe the colour blue.", {"temperature": 0, "num_predict": 32, "top_k": 10}),
    ("Write a haiku about snow.", {"temperature": 0, "num_predict": 48, "stop": ["\n\n"]}),
    ("Why do cats purr?", {"temperature": 0, "num_predict": 36, "repeat_penalty": 1.2}),
    ("List four planets.", {"temperature": 0, "num_predict": 28, "top_p": 0.5}),
]


@pytest.fixture
def http(live_server: BackgroundServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=live_server.url, timeout=300) as client:
        yield client


def ask(http: httpx.Client, prompt: str, options: dict[str, object]) -> str:
    body = {"model": MODEL, "messages": [{"role": "user", "content": prompt}], "options": options, "stream": False}
    resp = http.post("/api/chat", json=body)
    assert resp.status_code == 200, resp.text
    return str(resp.json()["message"]["content"])


def test_concurrent_streams_equal_their_solo_runs(http: httpx.Client) -> None:
    together: dict[int, str] = {}
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            together[i] = ask(http, *REQUESTS[i])
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(REQUESTS))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(240)
    assert not errors and len(together) == len(REQUESTS)
    alone = [ask(http, *req) for req in REQUESTS]
    assert [together[i] for i in range(len(REQUESTS))] == alone


def test_ps_shows_active_and_queued_requests(http: httpx.Client, live_server: BackgroundServer) -> None:
    parallel = 4
    http.post("/api/generate", json={"model": MODEL, "keep_alive": "5m"})  # loaded with the default slots
    threads = [
        threading.Thread(
            target=ask, args=(http, f"Tell a long story number {i}.", {"temperature": 0, "num_predict": 160})
        )
        for i in range(parallel + 2)
    ]
    for t in threads:
        t.start()
    seen: set[tuple[int, int]] = set()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and any(t.is_alive() for t in threads):
        for m in http.get("/api/ps").json()["models"]:
            if m["name"] == MODEL:
                seen.add((m["active_requests"], m["queued_requests"]))
        time.sleep(0.05)
    for t in threads:
        t.join(120)
    assert (parallel, 2) in seen or (parallel, 1) in seen
    final = {m["name"]: m for m in http.get("/api/ps").json()["models"]}[MODEL]
    assert final["active_requests"] == 0 and final["queued_requests"] == 0
