"""``GET /metrics``: Prometheus text that moves by exactly what was served.

Real requests go to a real server on the real model; the exposition is parsed with
prometheus_client's own parser and compared before and after.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from nbllm.config import Settings
from nbllm.engine.fake import FakeEngineFactory
from nbllm.runtime import Runtime
from nbllm.server import BackgroundServer, create_app
from tests.conftest import CHATML
from tests.support.metrics import delta, parse, scrape, value
from tests.support.models import install_model
from tests.support.tiny_gguf import write_tiny_gguf

SMOL = "smollm2:135m"


@pytest.fixture
def server(real_runtime: Runtime) -> Iterator[BackgroundServer]:
    """A server of its own (its own registry) on the session's real runtime."""
    with BackgroundServer(real_runtime) as srv:
        yield srv


def test_counters_move_by_what_was_served(server: BackgroundServer) -> None:
    url = server.url
    before = scrape(url)
    options = {"num_predict": 6, "temperature": 0}
    finals = []
    for prompt in ("Say hello.", "Name a color."):
        resp = httpx.post(
            url + "/api/generate",
            json={"model": SMOL, "prompt": prompt, "stream": False, "options": options},
            timeout=120,
        )
        finals.append(resp.json())
    chat = {"model": SMOL, "messages": [{"role": "user", "content": "Hi!"}], "options": options}
    with httpx.stream("POST", url + "/api/chat", json=chat, timeout=120) as stream:
        lines = [line for line in stream.iter_lines() if line]
    finals.append(httpx.Response(200, content=lines[-1]).json())
    assert httpx.post(url + "/api/embed", json={"model": SMOL, "input": ["a", "b"]}, timeout=120).status_code == 200
    assert httpx.post(url + "/api/show", json={"model": "nope"}).status_code == 404
    assert httpx.get(url + "/api/tags").status_code == 200
    assert httpx.get(url + "/no/such/route").status_code == 404
    after = scrape(url)

    requests = "nbllm_http_requests_total"
    assert delta(before, after, requests, method="POST", route="/api/generate", status="200") == 2
    assert delta(before, after, requests, method="POST", route="/api/chat", status="200") == 1
    assert delta(before, after, requests, method="POST", route="/api/embed", status="200") == 1
    assert delta(before, after, requests, method="POST", route="/api/show", status="404") == 1
    assert delta(before, after, requests, method="GET", route="/api/tags", status="200") == 1
    assert delta(before, after, requests, method="GET", route="other", status="404") == 1  # no path as a label
    assert delta(before, after, requests, method="GET", route="/metrics", status="200") == 1  # the first scrape
    assert delta(before, after, "nbllm_http_request_duration_seconds_count", route="/api/generate") == 2

    assert all(f["done"] and f["eval_count"] >= 2 for f in finals)
    generated = sum(f["eval_count"] for f in finals)
    # prompt_eval_count is the whole prompt; the counters split it into evaluated and reused from the cache
    cached = sum(f.get("prompt_cached_count", 0) for f in finals)
    prompted = sum(f.get("prompt_eval_count", 0) for f in finals) - cached
    assert delta(before, after, "nbllm_generated_tokens_total", model=SMOL) == generated
    assert delta(before, after, "nbllm_prompt_tokens_total", model=SMOL) == prompted
    assert delta(before, after, "nbllm_prompt_cached_tokens_total", model=SMOL) == cached
    reasons = [f["done_reason"] for f in finals]
    for reason in set(reasons):
        assert delta(before, after, "nbllm_generations_total", model=SMOL, done_reason=reason) == reasons.count(reason)

    assert delta(before, after, "nbllm_time_to_first_token_seconds_count", model=SMOL) == 3
    ttft = delta(before, after, "nbllm_time_to_first_token_seconds_sum", model=SMOL)
    total = sum(f["total_duration"] for f in finals) / 1e9
    assert 0 < ttft < total
    assert delta(before, after, "nbllm_decode_tokens_per_second_count", model=SMOL) == 3
    rates = delta(before, after, "nbllm_decode_tokens_per_second_sum", model=SMOL)
    assert rates == pytest.approx(sum(f["eval_count"] / (f["eval_duration"] / 1e9) for f in finals), rel=1e-6)
    assert value(after, "nbllm_decode_tokens_per_second_bucket", model=SMOL, le="+Inf") >= 3


def test_loaded_models_and_queue_depth(server: BackgroundServer) -> None:
    url = server.url
    body = {"model": SMOL, "prompt": "Warm up.", "stream": False, "options": {"num_predict": 1}}
    assert httpx.post(url + "/api/generate", json=body, timeout=120).status_code == 200
    samples = scrape(url)
    ps = httpx.get(url + "/api/ps").json()["models"]
    assert value(samples, "nbllm_loaded_models") == len(ps) >= 1
    for model in ps:
        assert value(samples, "nbllm_loaded_model_bytes", model=model["name"]) == model["size"]

    # more concurrent requests than the model has slots: the rest wait in its queue
    seen = {"active": 0.0, "queued": 0.0}
    done = threading.Event()

    def one() -> None:
        long = {
            "model": SMOL,
            "prompt": "Count to fifty.",
            "stream": False,
            "options": {"num_predict": 32, "temperature": 0},
        }
        httpx.post(url + "/api/generate", json=long, timeout=300)

    threads = [threading.Thread(target=one) for _ in range(6)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 120
    while any(t.is_alive() for t in threads) and time.monotonic() < deadline and not done.is_set():
        samples = scrape(url)
        seen["active"] = max(seen["active"], value(samples, "nbllm_active_requests", model=SMOL))
        seen["queued"] = max(seen["queued"], value(samples, "nbllm_queue_depth", model=SMOL))
        if seen["active"] + seen["queued"] >= 6:
            done.set()
        time.sleep(0.02)
    for thread in threads:
        thread.join(timeout=300)
    assert seen["active"] >= 1 and seen["queued"] >= 1, seen
    assert seen["active"] + seen["queued"] >= 6, seen
    settled = scrape(url)
    assert value(settled, "nbllm_active_requests", model=SMOL) == 0
    assert value(settled, "nbllm_queue_depth", model=SMOL) == 0


# ── over FakeEngines: the edges of the counting ──────────────────────────────────────────────────


def _client(tmp_path: Path, **overrides: object) -> TestClient:
    settings = Settings(home=tmp_path / "home", models=tmp_path / "models", **overrides)  # type: ignore[arg-type]
    runtime = Runtime.from_settings(settings, engine_factory=FakeEngineFactory())
    install_model(runtime.store, "tiny", write_tiny_gguf(tmp_path / "tiny.gguf"), template=CHATML)
    return TestClient(create_app(runtime))


def test_refused_requests_are_counted(tmp_path: Path) -> None:
    with _client(tmp_path, api_key="k", max_request_size=100) as client:
        auth = {"Authorization": "Bearer k"}
        assert client.get("/api/tags").status_code == 401
        assert client.get("/api/tags", headers={**auth, "Origin": "https://evil.example.com"}).status_code == 403
        assert client.post("/api/chat", headers=auth, content=b"{" + b" " * 200 + b"}").status_code == 413
        assert client.get("/metrics").status_code == 401  # /metrics is behind the key too
        samples = parse(client.get("/metrics", headers=auth).text)
    requests = "nbllm_http_requests_total"
    assert value(samples, requests, method="GET", route="/api/tags", status="401") == 1
    assert value(samples, requests, method="GET", route="/api/tags", status="403") == 1
    assert value(samples, requests, method="POST", route="/api/chat", status="413") == 1
    assert value(samples, requests, method="GET", route="/metrics", status="401") == 1


def test_metrics_can_be_turned_off(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NBLLM_METRICS", "0")
    assert Settings.from_env().metrics is False
    with _client(tmp_path, metrics=False) as client:
        assert client.get("/metrics").status_code == 404
        assert client.get("/api/tags").status_code == 200
        assert "/metrics" not in client.get("/openapi.json").json()["paths"]


def test_two_apps_keep_their_own_http_counts(tmp_path: Path) -> None:
    with _client(tmp_path / "a") as first, _client(tmp_path / "b") as second:
        for _ in range(3):
            first.get("/api/tags")
        second.get("/api/tags")
        a, b = parse(first.get("/metrics").text), parse(second.get("/metrics").text)
    key = {"method": "GET", "route": "/api/tags", "status": "200"}
    assert (value(a, "nbllm_http_requests_total", **key), value(b, "nbllm_http_requests_total", **key)) == (3, 1)
