"""Every generate/chat field the inference issue names, with the real model through the live server."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import ollama
import pytest

from nbllm.server import BackgroundServer
from tests.support.model_facts import ModelFacts

MODEL = "smollm2:135m"
GREEDY = {"temperature": 0, "num_predict": 24}


@pytest.fixture
def http(live_server: BackgroundServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=live_server.url, timeout=180) as client:
        yield client


@pytest.fixture
def client(live_server: BackgroundServer) -> Iterator[ollama.Client]:
    c = ollama.Client(host=live_server.url)
    yield c
    c._client.close()


def post(http: httpx.Client, path: str, **body: object) -> httpx.Response:
    return http.post(path, json={"model": MODEL, "stream": False, **body})


def test_system_template_and_raw(http: httpx.Client) -> None:
    shown = post(
        http,
        "/api/generate",
        prompt="Hi",
        system="S!",
        template="[{{ .System }}|{{ .Prompt }}]",
        _debug_render_only=True,
    ).json()
    assert shown["_debug_info"]["rendered_template"] == "[S!|Hi]"
    raw = post(
        http,
        "/api/generate",
        prompt="<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n",
        raw=True,
        options=GREEDY,
    ).json()
    assert raw["response"] and "context" not in raw


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"prompt": "x", "raw": True, "template": "t"}, "raw mode does not support template, system, or context"),
        ({"prompt": "x", "raw": True, "context": [1, 2]}, "raw mode does not support template, system, or context"),
        ({"prompt": "x", "suffix": "y"}, "registry.ollama.ai/library/smollm2:135m does not support insert"),
        ({"prompt": "x", "images": ["aGVsbG8="]}, "does not support vision"),
        ({"prompt": "x", "think": True}, '"smollm2:135m" does not support thinking'),
        ({"prompt": "x", "top_logprobs": 21}, "top_logprobs must be between 0 and 20"),
        ({"prompt": "x", "options": {"top_k": "many"}}, 'option "top_k" must be of type integer'),
        ({"prompt": "x", "format": "xml"}, "invalid format"),
    ],
)
def test_generate_errors(http: httpx.Client, body: dict[str, object], message: str) -> None:
    resp = post(http, "/api/generate", **body)
    assert resp.status_code == 400 and message in resp.json()["error"]


def test_chat_errors(http: httpx.Client) -> None:
    resp = post(http, "/api/chat", messages=[{"role": "user", "content": "x", "images": ["aGVsbG8="]}])
    assert resp.status_code == 400 and "does not support vision" in resp.json()["error"]
    resp = post(http, "/api/chat", messages=[{"role": "user", "content": "x"}], think="high")
    assert resp.status_code == 400 and "does not support thinking" in resp.json()["error"]
    resp = http.post("/api/chat", json={"messages": []})
    assert resp.status_code == 400 and resp.json()["error"] == "model is required"


def test_context_continues_a_generation(client: ollama.Client, http: httpx.Client) -> None:
    first = client.generate(MODEL, "My favourite colour is green. Remember it.", options=GREEDY)
    assert first.context
    second = client.generate(MODEL, "What is my favourite colour?", context=first.context, options=GREEDY)
    assert second.context and second.context[: len(first.context)] == first.context
    # the whole prompt is counted (as in Ollama); the context's part of it is reused from the cache
    again = post(http, "/api/generate", prompt="What is my favourite colour?", context=first.context, options=GREEDY)
    assert again.json()["prompt_eval_count"] == second.prompt_eval_count
    assert second.prompt_eval_count - again.json()["prompt_cached_count"] < len(first.context)


def test_logprobs(client: ollama.Client, http: httpx.Client) -> None:
    resp = post(http, "/api/generate", prompt="Say yes.", options=GREEDY, logprobs=True, top_logprobs=3).json()
    items = resp["logprobs"]
    assert len(items) == resp["eval_count"]
    for item in items:
        assert item["logprob"] <= 0 and len(item["top_logprobs"]) == 3
        assert item["top_logprobs"][0]["logprob"] >= item["top_logprobs"][-1]["logprob"]
        assert item["top_logprobs"][0]["token"] == item["token"]  # greedy picks the most likely token
    chat = client.chat(MODEL, messages=[{"role": "user", "content": "Say yes."}], options=GREEDY, logprobs=True)
    assert chat.logprobs and len(chat.logprobs) == chat.eval_count


def test_load_time_options_reload_and_runtime_ones_do_not(
    http: httpx.Client, live_server: BackgroundServer, smollm2_facts: ModelFacts
) -> None:
    sched = live_server.runtime.scheduler

    def loaded() -> dict[str, tuple[int, float]]:
        return {v.name: (v.context_length, v.size) for v in sched.ps()}

    post(http, "/api/generate", prompt="Hi", options={**GREEDY, "num_ctx": 2048})
    engine = next(r.engine for r in sched._runners.values())
    post(http, "/api/generate", prompt="Hi", options={**GREEDY, "num_ctx": 2048, "temperature": 0.5, "top_k": 3})
    assert next(r.engine for r in sched._runners.values()) is engine  # runtime options: same instance
    post(http, "/api/generate", prompt="Hi", options={**GREEDY, "num_ctx": 1024})
    assert loaded()[MODEL][0] == 1024
    assert next(r.engine for r in sched._runners.values()) is not engine
    post(http, "/api/generate", prompt="Hi", options={**GREEDY, "num_ctx": 10**6})
    assert loaded()[MODEL][0] == smollm2_facts.context_length  # clamped to the model's trained context


def test_long_conversation_is_truncated_keeping_the_system_prompt(http: httpx.Client) -> None:
    history = [{"role": "system", "content": "You are a pirate."}]
    for i in range(30):
        history += [
            {"role": "user", "content": f"Tell me fact number {i} about the sea, in detail please."},
            {"role": "assistant", "content": "The sea is vast and deep and full of wonders. " * 3},
        ]
    history.append({"role": "user", "content": "Say arr."})
    options = {"num_ctx": 512, "temperature": 0, "num_predict": 8}
    ok = post(http, "/api/chat", messages=history, options=options)
    assert ok.status_code == 200 and ok.json()["prompt_eval_count"] < 512
    refused = post(http, "/api/chat", messages=history, options=options, truncate=False)
    assert refused.status_code == 400 and "exceeds the context length" in refused.json()["error"]


def test_generation_reaching_the_context_shifts_or_stops(http: httpx.Client) -> None:
    base = {
        "prompt": "Write a very long story about the sea.",
        "options": {"num_ctx": 256, "temperature": 0, "num_predict": 400, "repeat_penalty": 1.3},
    }
    shifted = post(http, "/api/generate", **base).json()
    stopped = post(http, "/api/generate", **base, shift=False).json()
    n_ctx = {m["name"]: m["context_length"] for m in http.get("/api/ps").json()["models"]}[MODEL]
    assert stopped["done_reason"] == "length"
    # the context holds n_ctx tokens; the last token sampled is returned without being evaluated
    assert len(stopped["context"]) == n_ctx + 1
    assert shifted["eval_count"] > stopped["eval_count"] or shifted["done_reason"] == "stop"


def test_three_turn_chat_evaluates_only_new_tokens(client: ollama.Client, http: httpx.Client) -> None:
    options = {"temperature": 0, "num_predict": 40, "num_ctx": 4096}
    history: list[dict[str, str]] = [{"role": "system", "content": "You are a patient teacher. " * 20}]
    turns = ["Explain photosynthesis briefly.", "And respiration?", "How are the two linked?"]
    results = []
    for text in turns:
        history.append({"role": "user", "content": text})
        resp = post(http, "/api/chat", messages=history, options=options).json()
        results.append(resp)
        history.append({"role": "assistant", "content": resp["message"]["content"]})
    # prompt_eval_count is the whole prompt, as in Ollama; of it, prompt_cached_count came from the cache
    evaluated = [r["prompt_eval_count"] - r.get("prompt_cached_count", 0) for r in results]
    for later, earlier in zip(results[1:], results, strict=False):
        assert later["prompt_eval_count"] > earlier["prompt_eval_count"]
        assert later["prompt_cached_count"] >= earlier["prompt_eval_count"]  # the earlier turns, reused
    assert all(n < evaluated[0] for n in evaluated[1:])
    # the same third request evaluated from scratch (another num_batch forces a fresh instance)
    cold = client.chat(MODEL, messages=history[:-1], options={**options, "num_batch": 256})
    assert cold.prompt_eval_count == results[2]["prompt_eval_count"]  # the same prompt, counted the same
    assert (results[2]["prompt_eval_duration"] or 0) < (cold.prompt_eval_duration or 0)
