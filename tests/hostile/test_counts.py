"""Two answers clients relied on and got wrong: the prompt's size when a prefix came from the cache
(Ollama counts the whole prompt; nbllm says how much was cached in ``prompt_cached_count`` and OpenAI's
``usage.prompt_tokens_details.cached_tokens``), and ``/api/embed`` without input (Ollama: 200, nothing
embedded). The real engine on SmolLM2 through the session's server on loopback.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from nbllm.server import BackgroundServer

pytestmark = pytest.mark.model

SMOL = "smollm2:135m"
OPTIONS = {"num_predict": 2, "temperature": 0}


def post(server: BackgroundServer, path: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(server.url + path, json=body, timeout=300)


@pytest.mark.parametrize("path", ["/api/generate", "/api/chat"])
def test_a_repeated_prompt_counts_whole_with_its_cached_part_apart(live_server: BackgroundServer, path: str) -> None:
    text = f"Name three colours ({path})."
    body: dict[str, Any] = {"model": SMOL, "stream": False, "options": OPTIONS}
    body |= {"prompt": text} if path == "/api/generate" else {"messages": [{"role": "user", "content": text}]}
    first, again = (post(live_server, path, body).json() for _ in range(2))
    assert first["prompt_eval_count"] > 10
    assert again["prompt_eval_count"] == first["prompt_eval_count"]  # not 1: the whole prompt, as Ollama says
    assert again["prompt_cached_count"] == again["prompt_eval_count"] - 1  # all but the last token reused
    assert first.get("prompt_cached_count", 0) < again["prompt_cached_count"]
    assert again["prompt_eval_duration"] > 0


@pytest.mark.parametrize("mode", ["whole", "stream"])
def test_openai_usage_counts_the_whole_prompt_and_reports_the_cached_tokens(
    live_server: BackgroundServer, mode: str
) -> None:
    stream = mode == "stream"
    body = {
        "model": SMOL,
        "messages": [{"role": "user", "content": f"Name three animals (stream {stream})."}],
        "max_tokens": 2,
        "temperature": 0,
        "stream": stream,
        "stream_options": {"include_usage": True} if stream else None,
    }
    usages = []
    for _ in range(2):
        if stream:
            with httpx.stream("POST", live_server.url + "/v1/chat/completions", json=body, timeout=300) as resp:
                events = [line for line in resp.iter_lines() if line.startswith("data: {")]
            usages.append(httpx.Response(200, content=events[-1][6:]).json()["usage"])
        else:
            usages.append(post(live_server, "/v1/chat/completions", body).json()["usage"])
    first, again = usages
    assert again["prompt_tokens"] == first["prompt_tokens"] > 10
    assert again["prompt_tokens_details"]["cached_tokens"] == again["prompt_tokens"] - 1
    assert again["total_tokens"] == again["prompt_tokens"] + again["completion_tokens"]


@pytest.mark.parametrize("value", ["", [], None], ids=["empty-string", "empty-list", "absent"])
def test_embed_without_input_loads_the_model_and_embeds_nothing(live_server: BackgroundServer, value: Any) -> None:
    body: dict[str, Any] = {"model": SMOL} | ({} if value is None else {"input": value})
    resp = post(live_server, "/api/embed", body)
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"model": SMOL, "embeddings": []}  # Ollama's answer, without stats
    assert SMOL in [m["name"] for m in httpx.get(live_server.url + "/api/ps").json()["models"]]


def test_openai_embeddings_of_an_empty_list_is_a_400_as_in_ollama(live_server: BackgroundServer) -> None:
    resp = post(live_server, "/v1/embeddings", {"model": SMOL, "input": []})
    assert resp.status_code == 400
    assert resp.json()["error"]["message"] == "invalid input"
