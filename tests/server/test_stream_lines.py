"""On a real server: every streamed NDJSON line is the bytes its pydantic model dumps (per-token lines are
written without building the model: ``nbllm.schema.lines``), and the stream adds up to the whole answer."""

from __future__ import annotations

import httpx
import pytest

from nbllm.runtime import Runtime
from nbllm.schema import ChatResponse, GenerateResponse
from nbllm.server import BackgroundServer

_OPTIONS = {"temperature": 0, "num_predict": 24, "num_ctx": 512}


def _lines(http: httpx.Client, path: str, body: dict[str, object]) -> list[str]:
    with http.stream("POST", path, json=body) as resp:
        assert resp.status_code == 200
        raw = resp.read().decode()
    assert raw.endswith("\n")
    return raw.splitlines()


@pytest.mark.parametrize("extra", [{}, {"logprobs": True, "top_logprobs": 2}])
def test_streamed_lines_are_the_models_bytes(real_runtime: Runtime, extra: dict[str, object]) -> None:
    generate = {"model": "smollm2:135m", "prompt": "Name three fruits, with a café émoji 🍓.", "options": _OPTIONS}
    chat = {"model": "smollm2:135m", "messages": [{"role": "user", "content": "Say hello in French."}]}
    with BackgroundServer(real_runtime) as server, httpx.Client(base_url=server.url, timeout=120) as http:
        for path, body, model in (
            ("/api/generate", {**generate, **extra}, GenerateResponse),
            ("/api/chat", {**chat, "options": _OPTIONS, **extra}, ChatResponse),
        ):
            whole = http.post(path, json={**body, "stream": False}).json()
            lines = _lines(http, path, body)
            chunks = [model.model_validate_json(line) for line in lines]
            for line, chunk in zip(lines, chunks, strict=True):
                assert line == chunk.model_dump_json(exclude_none=True, by_alias=True)
            assert chunks[-1].done and not any(c.done for c in chunks[:-1])
            if isinstance(chunks[0], GenerateResponse):
                assert "".join(c.response for c in chunks if isinstance(c, GenerateResponse)) == whole["response"]
            else:
                text = "".join(c.message.content for c in chunks if isinstance(c, ChatResponse))
                assert text == whole["message"]["content"]
            assert len(chunks) > 5
            assert all(c.logprobs for c in chunks[:-1]) == bool(extra)
