"""service.embed: /api/embed (normalised, truncated, batched) and the legacy /api/embeddings."""

from __future__ import annotations

import math

import pytest

from nbllm.errors import InvalidRequest
from nbllm.runtime import Runtime
from nbllm.schema import EmbeddingsRequest, EmbedRequest
from nbllm.service import embed, embeddings, ps


def _norm(vector: list[float]) -> float:
    return math.sqrt(sum(v * v for v in vector))


def test_each_input_gets_a_unit_vector(fake_runtime: Runtime) -> None:
    resp = embed(fake_runtime, EmbedRequest(model="tiny", input=["one", "two", "three"]))
    assert len(resp.embeddings) == 3 and all(math.isclose(_norm(v), 1.0) for v in resp.embeddings)
    assert resp.prompt_eval_count == len("one") + len("two") + len("three")  # the fake's tokens are characters


def test_no_input_loads_the_model_and_embeds_nothing(fake_runtime: Runtime) -> None:
    assert embed(fake_runtime, EmbedRequest(model="tiny", input="")).embeddings == []
    assert [m.name for m in ps(fake_runtime).models] == ["tiny:latest"]


def test_an_input_that_is_not_text_is_a_400(fake_runtime: Runtime) -> None:
    with pytest.raises(InvalidRequest, match="invalid input type"):
        embed(fake_runtime, EmbedRequest(model="tiny", input=[1, 2]))


def test_dimensions_truncate_then_renormalise(fake_runtime: Runtime) -> None:
    [vector] = embed(fake_runtime, EmbedRequest(model="tiny", input="hello", dimensions=3)).embeddings
    assert len(vector) == 3 and math.isclose(_norm(vector), 1.0)


def test_dimensions_below_one_are_a_400(fake_runtime: Runtime) -> None:
    with pytest.raises(InvalidRequest, match="dimensions must be greater than 0"):
        embed(fake_runtime, EmbedRequest(model="tiny", input="hello", dimensions=0))


def test_a_long_input_is_cut_to_the_context(fake_runtime: Runtime) -> None:
    resp = embed(fake_runtime, EmbedRequest(model="tiny", input="x" * 100, options={"num_ctx": 16}))
    assert resp.prompt_eval_count == 16


def test_truncate_false_refuses_a_long_input(fake_runtime: Runtime) -> None:
    req = EmbedRequest(model="tiny", input="x" * 100, truncate=False, options={"num_ctx": 16})
    with pytest.raises(InvalidRequest, match="the input length exceeds the context length"):
        embed(fake_runtime, req)


def test_the_legacy_endpoint_embeds_one_prompt(fake_runtime: Runtime) -> None:
    assert len(embeddings(fake_runtime, EmbeddingsRequest(model="tiny", prompt="hello")).embedding) == 8


def test_the_legacy_endpoint_answers_an_empty_prompt_with_no_vector(fake_runtime: Runtime) -> None:
    assert embeddings(fake_runtime, EmbeddingsRequest(model="tiny", prompt="")).embedding == []
