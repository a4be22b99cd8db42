"""Embeddings through the official client with the real model."""

from __future__ import annotations

import math
from collections.abc import Iterator

import httpx
import ollama
import pytest

from nbllm.server import BackgroundServer
from tests.support.model_facts import ModelFacts

MODEL = "smollm2:135m"


@pytest.fixture
def client(live_server: BackgroundServer) -> Iterator[ollama.Client]:
    c = ollama.Client(host=live_server.url)
    yield c
    c._client.close()


def cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


def test_embed_batch_is_normalised_and_meaningful(client: ollama.Client, smollm2_facts: ModelFacts) -> None:
    texts = ["The cat sat on the mat.", "A kitten was sitting on a rug.", "Quarterly revenue grew by ten percent."]
    resp = client.embed(MODEL, texts)
    assert isinstance(resp, ollama.EmbedResponse) and len(resp.embeddings) == 3
    for vector in resp.embeddings:
        assert len(vector) == smollm2_facts.embedding_length
        assert math.isclose(math.sqrt(sum(v * v for v in vector)), 1.0, rel_tol=1e-4)
    cats, finance = cosine(resp.embeddings[0], resp.embeddings[1]), cosine(resp.embeddings[0], resp.embeddings[2])
    assert cats > finance
    assert resp.prompt_eval_count and resp.prompt_eval_count > 10
    assert resp.total_duration and resp.load_duration is not None
    same = client.embed(MODEL, texts[0]).embeddings[0]
    assert cosine(same, resp.embeddings[0]) > 0.9999  # deterministic, batch or not


def test_dimensions_truncate_and_renormalise(client: ollama.Client) -> None:
    vector = client.embed(MODEL, "hello", dimensions=64).embeddings[0]
    assert len(vector) == 64 and math.isclose(sum(v * v for v in vector), 1.0, rel_tol=1e-4)


def test_truncate_false_refuses_a_long_input(live_server: BackgroundServer) -> None:
    long = "word " * 5000
    with httpx.Client(base_url=live_server.url, timeout=120) as http:
        bad = http.post(
            "/api/embed", json={"model": MODEL, "input": long, "truncate": False, "options": {"num_ctx": 512}}
        )
        assert bad.status_code == 400 and bad.json()["error"] == "the input length exceeds the context length"
        ok = http.post("/api/embed", json={"model": MODEL, "input": long, "options": {"num_ctx": 512}})
        assert ok.status_code == 200 and ok.json()["prompt_eval_count"] == 512
        wrong = http.post("/api/embed", json={"model": MODEL, "input": [1, 2, 3]})
        assert wrong.status_code == 400 and wrong.json()["error"] == "invalid input type"
        empty = http.post("/api/embed", json={"model": MODEL, "input": []}).json()
        assert empty["embeddings"] == []


def test_legacy_embeddings(client: ollama.Client, smollm2_facts: ModelFacts) -> None:
    resp = client.embeddings(MODEL, "The sky is blue.")
    assert len(resp.embedding) == smollm2_facts.embedding_length
    assert not math.isclose(math.sqrt(sum(v * v for v in resp.embedding)), 1.0, rel_tol=1e-3)  # raw, not normalised
    assert client.embeddings(MODEL, "").embedding == []
