"""Thinking on an OpenAI-compatible host: ``delta.reasoning`` (nbllm, Ollama) and ``delta.reasoning_content``
(vLLM, llama-server) feed the same collapsed "Thinking…" section as the local path, not the answer."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
from IPython.core.interactiveshell import InteractiveShell
from IPython.utils.capture import capture_output

from nbllm.backends import GenRequest, StreamEnd, Token
from nbllm.backends.openai import OpenAIBackend
from nbllm.notebook import load_ipython_extension, unload_ipython_extension
from nbllm.notebook.session import NotebookSession
from nbllm.notebook.widgets._fallback import WIDGET_VIEW
from nbllm.runtime import Runtime
from nbllm.server import BackgroundServer
from tests.support.thinking import QUESTION, install_thinker


def _sse(*deltas: dict[str, str]) -> bytes:
    events = [{"choices": [{"index": 0, "delta": d, "finish_reason": None}]} for d in deltas]
    events.append({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}], "usage": {"completion_tokens": 4}})
    return b"".join(f"data: {json.dumps(e)}\n\n".encode() for e in events) + b"data: [DONE]\n\n"


@pytest.mark.parametrize("field", ["reasoning", "reasoning_content"])
def test_both_reasoning_fields_are_thinking_not_text(field: str) -> None:
    body = _sse({field: "I add "}, {field: "4 and 4."}, {"content": "8"}, {field: "!", "content": " ok"})

    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=body, headers={"content-type": "text/event-stream"})

    async def run() -> list[Token | StreamEnd]:
        backend = OpenAIBackend("http://h/v1", transport=httpx.MockTransport(answer))
        try:
            return [e async for e in backend.stream(GenRequest(model="m", prompt="q", chat=True))]
        finally:
            await backend.aclose()

    *tokens, end = asyncio.run(run())
    assert [(t.thinking, t.text) for t in tokens if isinstance(t, Token)] == [
        ("I add ", ""),
        ("4 and 4.", ""),
        ("", "8"),
        ("!", " ok"),  # one event, one arrival: the interval between tokens stays true
    ]
    assert isinstance(end, StreamEnd) and end.output_tokens == 4


@pytest.mark.model
def test_think_on_nbllm_v1_streams_into_the_thinking_section(
    shell: InteractiveShell, live_server: BackgroundServer, real_runtime: Runtime
) -> None:
    model = install_thinker(real_runtime)
    magics = load_ipython_extension(shell, session=NotebookSession())
    host = f"openai+{live_server.url}/v1"
    try:
        with capture_output() as cap:
            shell.run_cell_magic("chat", f"{model} --host {host} --think --new -o temperature=0 --var r", QUESTION)
        result = shell.user_ns["r"]
        assert result.thinking.strip() and result.text.strip(), (result.thinking, result.text)
        assert "<think>" not in result.text and result.thinking.strip() not in result.text
        widgets = [o.data for o in cap.outputs if WIDGET_VIEW in o.data]
        assert widgets, "the thinking widget was never shown"
        assert widgets[0]["text/html"].startswith("<details><summary>Thinking…</summary>")
        body = cap.outputs[-1].data["text/markdown"]
        assert body.startswith("<details><summary>Thinking</summary>") and "<details open" not in body
        assert magics.session.timings.records()[-1].thinking_chunks
        with capture_output():
            shell.run_cell_magic(
                "chat", f"{model} --host {host} --think false --new -o temperature=0 --var off", QUESTION
            )
        off = shell.user_ns["off"]
        assert not off.thinking and off.text.strip() and "<think>" not in off.text
    finally:
        unload_ipython_extension(shell)
