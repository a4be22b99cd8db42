"""The official ``ollama`` client against a live nbllm server with the real SmolLM2 model."""

from __future__ import annotations

from collections.abc import Iterator

import ollama
import pytest

from nbllm.server import BackgroundServer
from tests.support.model_facts import ModelFacts

MODEL = "smollm2:135m"
GREEDY = {"temperature": 0, "num_predict": 32}


@pytest.fixture
def client(live_server: BackgroundServer) -> Iterator[ollama.Client]:
    c = ollama.Client(host=live_server.url)
    yield c
    c._client.close()


def check_timings(final: ollama.GenerateResponse | ollama.ChatResponse, streamed_tokens: int | None = None) -> None:
    for field in (
        "total_duration",
        "load_duration",
        "prompt_eval_count",
        "prompt_eval_duration",
        "eval_count",
        "eval_duration",
    ):
        value = getattr(final, field)
        assert value is not None and value > 0, field
    assert final.total_duration >= final.load_duration + final.prompt_eval_duration + final.eval_duration
    if streamed_tokens is not None:
        assert final.eval_count == streamed_tokens


def test_pull_streams_progress(client: ollama.Client, smollm2_facts: ModelFacts) -> None:
    events = list(client.pull(MODEL, stream=True))
    assert all(isinstance(e, ollama.ProgressResponse) for e in events)
    statuses = [e.status for e in events]
    assert statuses[0] == "pulling manifest" and statuses[-1] == "success"
    pulled, size = f"pulling {smollm2_facts.short_digest}", smollm2_facts.size
    assert any(e.status == pulled and e.total == e.completed == size for e in events)
    assert client.pull(MODEL).status == "success"


def test_list_and_show(client: ollama.Client, smollm2_facts: ModelFacts) -> None:
    models = {m.model: m for m in client.list().models}
    smol = models[MODEL]
    assert smol.size and smol.size > smollm2_facts.size and smol.details and smol.details.family == "llama"
    assert smol.details.quantization_level == smollm2_facts.quantization
    assert smol.details.parameter_size == "134.52M"
    info = client.show(MODEL)
    assert info.capabilities == ["completion", "tools"]
    assert info.modelinfo and info.modelinfo["llama.context_length"] == smollm2_facts.context_length
    assert info.template and "<|im_start|>" in info.template
    assert info.parameters and "temperature" in info.parameters
    assert info.license and "Apache License" in info.license


def test_generate_non_streaming(client: ollama.Client) -> None:
    resp = client.generate(MODEL, "What is the capital of France? Answer in one word.", options=GREEDY)
    assert isinstance(resp, ollama.GenerateResponse) and resp.done and resp.done_reason in ("stop", "length")
    assert "Paris" in resp.response
    assert resp.context and len(resp.context) > (resp.prompt_eval_count or 0)
    check_timings(resp)


def test_generate_streaming(client: ollama.Client) -> None:
    chunks = list(client.generate(MODEL, "Name three colours.", options=GREEDY, stream=True))
    assert all(isinstance(c, ollama.GenerateResponse) for c in chunks)
    assert [c.done for c in chunks].count(True) == 1 and chunks[-1].done
    check_timings(chunks[-1], streamed_tokens=len(chunks) - 1)
    whole = client.generate(MODEL, "Name three colours.", options=GREEDY)
    assert "".join(c.response for c in chunks) == whole.response


def test_chat_streaming_and_not(client: ollama.Client) -> None:
    messages = [{"role": "user", "content": "Say hello to Ada."}]
    chunks = list(client.chat(MODEL, messages=messages, options=GREEDY, stream=True))
    assert all(isinstance(c, ollama.ChatResponse) and c.message.role == "assistant" for c in chunks)
    check_timings(chunks[-1], streamed_tokens=len(chunks) - 1)
    whole = client.chat(MODEL, messages=messages, options=GREEDY)
    assert whole.message.content == "".join(c.message.content or "" for c in chunks)
    assert "Ada" in whole.message.content
    check_timings(whole)


def test_multi_turn_chat_reuses_the_prefix(client: ollama.Client) -> None:
    history = [{"role": "user", "content": "My name is Grace. Remember it."}]
    first = client.chat(MODEL, messages=history, options=GREEDY)
    history += [
        {"role": "assistant", "content": first.message.content},
        {"role": "user", "content": "What is my name?"},
    ]
    body = {"model": MODEL, "messages": history, "options": GREEDY, "stream": False}
    raw = client._client.post("/api/chat", json=body).json()
    second = ollama.ChatResponse.model_validate(raw)  # as the client reads it
    # the whole conversation is counted, as Ollama does...
    assert second.prompt_eval_count is not None and first.prompt_eval_count is not None
    assert second.prompt_eval_count > first.prompt_eval_count + 5
    # ...and nbllm's prompt_cached_count (which the client ignores) says the first turn came from the cache
    assert raw["prompt_cached_count"] >= first.prompt_eval_count


def test_ps_load_and_unload(client: ollama.Client) -> None:
    loaded = client.generate(MODEL, "", keep_alive="10m")
    assert loaded.done and loaded.done_reason == "load" and loaded.response == ""
    running = {m.model: m for m in client.ps().models}
    smol = running[MODEL]
    assert smol.size and smol.size > 98_000_000 and smol.size_vram == 0 and smol.context_length == 4096
    assert smol.expires_at is not None and smol.digest and len(smol.digest) == 64
    unloaded = client.generate(MODEL, "", keep_alive=0)
    assert unloaded.done_reason == "unload"
    assert MODEL not in {m.model for m in client.ps().models}


def test_copy_and_delete(client: ollama.Client) -> None:
    assert client.copy(MODEL, "me/smol-copy:v1").status == "success"
    assert "me/smol-copy:v1" in {m.model for m in client.list().models}
    resp = client.generate("me/smol-copy:v1", "Hi", options={"num_predict": 4, "temperature": 0})
    assert resp.done
    assert client.delete("me/smol-copy:v1").status == "success"
    assert "me/smol-copy:v1" not in {m.model for m in client.list().models}
    assert MODEL in {m.model for m in client.list().models}  # the original's blobs are untouched
    assert client.generate(MODEL, "Hi", options={"num_predict": 2}).done


@pytest.mark.parametrize(
    ("call", "status", "text"),
    [
        (lambda c: c.generate("no-such-model", "hi"), 404, "model 'no-such-model' not found"),
        (lambda c: c.chat("no-such-model", messages=[{"role": "user", "content": "x"}]), 404, "not found"),
        (lambda c: c.show("no-such-model"), 404, "not found"),
        (lambda c: c.generate("bad name!", "hi"), 400, "invalid model name"),
        (lambda c: c.delete("no-such-model"), 404, "not found"),
        (lambda c: c.generate(MODEL, "hi", options={"temperature": "warm"}), 400, "temperature"),
    ],
)
def test_errors_surface_as_response_errors(client: ollama.Client, call, status: int, text: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ollama.ResponseError) as info:
        call(client)
    assert info.value.status_code == status and text in info.value.error
    assert client.generate(MODEL, "ok?", options={"num_predict": 2}).done  # still serving


def test_create_derived_model(client: ollama.Client) -> None:
    events = list(
        client.create(
            "me/smol-brief",
            from_=MODEL,
            system="Answer in exactly one word.",
            parameters={"temperature": 0, "num_predict": 8},
            stream=True,
        )
    )
    assert events[-1].status == "success"
    info = client.show("me/smol-brief")
    assert 'SYSTEM """Answer in exactly one word."""' in (info.modelfile or "")
    assert info.details and info.details.parent_model == MODEL
    resp = client.chat("me/smol-brief", messages=[{"role": "user", "content": "What colour is the sky?"}])
    assert resp.done and (resp.eval_count or 0) <= 8
    client.delete("me/smol-brief")
