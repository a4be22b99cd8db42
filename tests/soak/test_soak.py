"""A bounded load soak on loopback: 8 clients mixing chat, generate, embed, tags, ps, show and pulls
against ``nbllm serve`` on the real model, for ``NBLLM_SOAK_SECONDS`` (60 by default; several minutes
for a real soak: ``NBLLM_SOAK_SECONDS=300 python -m pytest tests/soak -s``).

What must hold: no request fails (every answer 2xx, every stream ends with ``done``), the server's
resident memory after warm-up stays within a few percent, its ``/metrics`` request counts agree
with what the clients sent, and it still shuts down cleanly. The figures are printed.
"""

from __future__ import annotations

import json
import os
import random
import statistics
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.cli.support import ServeProcess, free_port, nbllm
from tests.support.index_server import IndexServer

pytestmark = [pytest.mark.slow, pytest.mark.model]

SMOL = "smollm2:135m"
SECONDS = float(os.environ.get("NBLLM_SOAK_SECONDS", "60"))
CLIENTS = 8
RSS_TOLERANCE = 0.05  # growth allowed from the end of warm-up to the end of the run


@dataclass
class Tally:
    """What the clients did, shared between their threads."""

    sent: Counter[str] = field(default_factory=Counter)
    by_route: Counter[str] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)
    tokens: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, kind: str, route: str, tokens: int = 0) -> None:
        with self.lock:
            self.sent[kind] += 1
            self.by_route[route] += 1
            self.tokens += tokens

    def fail(self, what: str) -> None:
        with self.lock:
            self.errors.append(what)


def _ndjson(resp: httpx.Response) -> list[dict[str, object]]:
    return [json.loads(line) for line in resp.iter_lines() if line.strip()]


def _chat(http: httpx.Client, rng: random.Random) -> tuple[str, int]:
    words = rng.choice(["a color", "a fruit", "a number", "an animal", "a city"])
    body = {
        "model": SMOL,
        "messages": [{"role": "user", "content": f"Name {words}."}],
        "options": {"num_predict": rng.randint(4, 24), "temperature": rng.random()},
    }
    if rng.random() < 0.5:
        with http.stream("POST", "/api/chat", json=body) as resp:
            resp.raise_for_status()
            lines = _ndjson(resp)
        last = lines[-1]
        assert last.get("done") is True and "error" not in last, last
        return "/api/chat", int(last["eval_count"])  # type: ignore[call-overload]
    data = http.post("/api/chat", json={**body, "stream": False}).raise_for_status().json()
    assert data["done"] and data["message"]["role"] == "assistant", data
    return "/api/chat", int(data["eval_count"])


def _generate(http: httpx.Client, rng: random.Random) -> tuple[str, int]:
    body = {"model": SMOL, "prompt": f"Write {rng.randint(2, 9)} words.", "stream": False}
    body["options"] = {"num_predict": rng.randint(4, 24), "seed": rng.randint(0, 1000)}
    data = http.post("/api/generate", json=body).raise_for_status().json()
    assert data["done"] and isinstance(data["response"], str), data
    return "/api/generate", int(data["eval_count"])


def _embed(http: httpx.Client, rng: random.Random) -> tuple[str, int]:
    inputs = [f"sentence number {rng.randint(0, 99)}" for _ in range(rng.randint(1, 3))]
    data = http.post("/api/embed", json={"model": SMOL, "input": inputs}).raise_for_status().json()
    assert len(data["embeddings"]) == len(inputs) and len(data["embeddings"][0]) == 576, data.keys()
    return "/api/embed", 0


def _tags(http: httpx.Client, rng: random.Random) -> tuple[str, int]:
    names = [m["name"] for m in http.get("/api/tags").raise_for_status().json()["models"]]
    assert SMOL in names, names
    return "/api/tags", 0


def _ps(http: httpx.Client, rng: random.Random) -> tuple[str, int]:
    http.get("/api/ps").raise_for_status()
    return "/api/ps", 0


def _show(http: httpx.Client, rng: random.Random) -> tuple[str, int]:
    data = http.post("/api/show", json={"model": SMOL}).raise_for_status().json()
    assert data["details"]["family"] == "llama", data["details"]
    return "/api/show", 0


def _pull(http: httpx.Client, rng: random.Random) -> tuple[str, int]:
    with http.stream("POST", "/api/pull", json={"model": SMOL}) as resp:
        resp.raise_for_status()
        lines = _ndjson(resp)
    assert lines[-1] == {"status": "success"}, lines[-3:]
    return "/api/pull", 0


MIX: list[tuple[Callable[[httpx.Client, random.Random], tuple[str, int]], int]] = [
    (_chat, 30),
    (_generate, 25),
    (_embed, 15),
    (_tags, 10),
    (_ps, 10),
    (_show, 6),
    (_pull, 4),
]


def _client(url: str, seed: int, stop: threading.Event, tally: Tally) -> None:
    rng = random.Random(seed)
    actions, weights = zip(*MIX, strict=True)
    with httpx.Client(base_url=url, timeout=120) as http:
        while not stop.is_set():
            action = rng.choices(actions, weights)[0]
            try:
                route, tokens = action(http, rng)
            except Exception as exc:  # counted, reported, failed on below
                tally.fail(f"{action.__name__}: {type(exc).__name__}: {exc}"[:300])
                continue
            tally.add(action.__name__.strip("_"), route, tokens)


def _rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def _served(url: str) -> Counter[str]:
    """2xx answers per route, from the server's own /metrics."""
    out: Counter[str] = Counter()
    for family in text_string_to_metric_families(httpx.get(url + "/metrics").text):
        for sample in family.samples:
            if sample.name == "nbllm_http_requests_total" and sample.labels["status"].startswith("2"):
                out[sample.labels["route"]] += int(sample.value)
    return out


def test_soak(tmp_path: Path, package_index: IndexServer, capsys: pytest.CaptureFixture[str]) -> None:
    host = f"127.0.0.1:{free_port()}"
    env = {"NBLLM_HOME": str(tmp_path / "home"), "NBLLM_PACKAGE_INDEX": package_index.url}
    assert nbllm("pull", SMOL, env=env).returncode == 0  # into the store, before the server starts
    env["OLLAMA_HOST"] = host
    server = ServeProcess(env, tmp_path / "serve.log").wait_ready()
    pid = server.proc.pid
    try:
        tally = Tally()
        stop = threading.Event()
        threads = [threading.Thread(target=_client, args=(server.url, i, stop, tally)) for i in range(CLIENTS)]
        started = time.monotonic()
        for thread in threads:
            thread.start()
        warmup = min(20.0, SECONDS / 3)
        samples: list[tuple[float, int]] = []
        while (elapsed := time.monotonic() - started) < SECONDS:
            samples.append((elapsed, _rss(pid)))
            time.sleep(1.0)
        stop.set()
        for thread in threads:
            thread.join(timeout=180)
        duration = time.monotonic() - started
        after_warmup = [rss for t, rss in samples if warmup <= t < warmup + 10]
        at_end = [rss for _, rss in samples[-5:]]
        warm, end = statistics.median(after_warmup), statistics.median(at_end)
        peak = max(rss for _, rss in samples)
        served = _served(server.url)
        deadline = time.monotonic() + 10  # a stream is counted when its handler returns, just after its last byte
        while any(served[r] != n for r, n in tally.by_route.items()) and time.monotonic() < deadline:
            time.sleep(0.2)
            served = _served(server.url)
        with capsys.disabled():
            mib = 1 << 20
            print(
                f"\nsoak: {duration:.0f}s, {CLIENTS} clients, {sum(tally.sent.values())} requests "
                f"({', '.join(f'{k} {v}' for k, v in sorted(tally.sent.items()))}), {tally.tokens} tokens generated, "
                f"{len(tally.errors)} errors; server RSS after warm-up {warm / mib:.1f} MiB, at the end "
                f"{end / mib:.1f} MiB ({(end - warm) / warm:+.2%}), peak {peak / mib:.1f} MiB"
            )
        assert tally.errors == [], tally.errors[:10]
        assert all(thread.is_alive() is False for thread in threads)
        assert set(tally.sent) == {"chat", "generate", "embed", "tags", "ps", "show", "pull"}, tally.sent
        assert end <= warm * (1 + RSS_TOLERANCE), (warm, end)
        for route, count in tally.by_route.items():
            assert served[route] == count, (route, served[route], count)
        assert httpx.get(server.url + "/api/ps").json()["models"][0]["name"] == SMOL
    finally:
        status = server.stop()
    assert status == 0, server.log()[-2000:]
