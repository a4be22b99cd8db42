"""The magics against an OpenAI-compatible host (``--host openai+URL/v1``): a schedule server for the timing
arithmetic, and nbllm's own ``/v1`` on a real server with SmolLM2."""

from __future__ import annotations

import gc
import json
import math
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import uvicorn
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.routing import Route

from nbllm.backends import BackendError, GenRequest
from nbllm.notebook import load_ipython_extension, unload_ipython_extension
from nbllm.notebook.magics import NbllmMagics
from nbllm.notebook.openai_client import CLIENT_ARRIVAL, OpenAIClient
from nbllm.notebook.session import NotebookSession
from nbllm.schema import ChatRequest, Message
from nbllm.server import BackgroundServer
from tests.notebook.shellrun import cell, line
from tests.support.schedule_server import ScheduleServer, prompt_tokens

KEY_ENV = "NBLLM_TEST_OPENAI_HOST_KEY"
SECRET = "sk-test-never-shown-4711"


@pytest.fixture(scope="module")
def sched() -> Iterator[ScheduleServer]:
    server = ScheduleServer().start()
    yield server
    server.stop()


@pytest.fixture
def nb_openai(shell: InteractiveShell, sched: ScheduleServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[NbllmMagics]:
    """The extension with every magic pointed at the schedule server's /v1, its key in KEY_ENV."""
    monkeypatch.setenv(KEY_ENV, SECRET)
    magics = load_ipython_extension(shell, session=NotebookSession())
    magics.host = f"openai+{sched.url}/v1"
    magics.api_key_env = KEY_ENV
    yield magics
    unload_ipython_extension(shell)


def test_chat_timings_from_arrival_times(
    shell: InteractiveShell, nb_openai: NbllmMagics, sched: ScheduleServer
) -> None:
    sched.requests.clear()
    run = cell(shell, "chat", "t200-g50-n5 --new -o num_predict=5 -o temperature=0 --var r", "one two three")
    result = shell.user_ns["r"]
    assert result.text == "tok0 tok1 tok2 tok3 tok4 "
    (seen,) = sched.requests
    assert seen["path"] == "/v1/chat/completions"
    assert seen["body"]["messages"] == [{"role": "user", "content": "one two three"}]
    assert seen["body"]["max_tokens"] == 5 and seen["body"]["temperature"] == 0
    assert seen["headers"]["authorization"] == f"Bearer {SECRET}"
    record = result.timings[0]
    assert record.measured == CLIENT_ARRIVAL and record.host == nb_openai.host
    assert record.prompt_tokens == prompt_tokens("one two three") and record.eval_tokens == 5
    # the server sends the first token 200 ms after the request, then one every 50 ms: 4 gaps, 200 ms
    assert 0.19 <= record.ttft_s < 0.5
    assert 0.19 <= record.eval_s < 0.35
    assert record.eval_tok_s == pytest.approx(5 / record.eval_s)
    assert record.total_s >= record.ttft_s + record.eval_s - 0.01
    assert math.isnan(record.load_s) and math.isnan(record.prompt_eval_s)  # not measurable here: left empty
    frame = line(shell, "timings").result
    assert frame.iloc[-1]["measured"] == CLIENT_ARRIVAL
    assert "client arrival" in frame._repr_html_()  # the note under the table says what it means
    assert SECRET not in repr(run.outputs) + run.stdout + repr(nb_openai.session._clients)


def test_server_timings_are_used_when_sent(shell: InteractiveShell, nb_openai: NbllmMagics) -> None:
    cell(shell, "chat", "timed-t20-g10-n3 --new --var r", "hi")
    record = shell.user_ns["r"].timings[0]
    assert record.measured == "server" and record.eval_s == pytest.approx(0.6) and record.prompt_eval_s == 0.25


def test_generate_uses_completions(shell: InteractiveShell, nb_openai: NbllmMagics, sched: ScheduleServer) -> None:
    sched.requests.clear()
    cell(shell, "generate", "t10-g10-n3 --system S -o num_predict=3 --var r", "Once upon")
    assert shell.user_ns["r"].text == "tok0 tok1 tok2 "
    (seen,) = sched.requests
    assert seen["path"] == "/v1/completions" and seen["body"]["prompt"] == "S\n\nOnce upon"
    assert shell.user_ns["r"].timings[0].kind == "generate"


def test_side_by_side_compares_on_the_same_host(shell: InteractiveShell, nb_openai: NbllmMagics) -> None:
    run = cell(shell, "chat", "-m t50-g10-n3 -m t20-g10-n4 --new --var r", "hi")
    assert "| model | tokens | tok/s |" in run.final.data["text/markdown"]
    results = shell.user_ns["r"]
    assert [r.text for r in results] == ["tok0 tok1 tok2 ", "tok0 tok1 tok2 tok3 "]
    assert all(r.timings[0].measured == CLIENT_ARRIVAL for r in results)


@pytest.mark.parametrize(
    ("magic", "args", "what"),
    [("pull", "m", "%pull"), ("ps", "", "%ps"), ("show", "m", "%show"), ("list", "", "%list"), ("stop", "m", "%stop")],
)
def test_management_fails_in_one_line(
    shell: InteractiveShell, nb_openai: NbllmMagics, magic: str, args: str, what: str
) -> None:
    with pytest.raises(UsageError, match=f"{what}.* not available on an OpenAI-compatible host"):
        line(shell, magic, args)


def test_errors_are_one_line(shell: InteractiveShell, nb_openai: NbllmMagics) -> None:
    with pytest.raises(UsageError, match='HTTP 404: model "missing-x" not found'):
        cell(shell, "chat", "missing-x --new", "hi")
    dead = OpenAIClient("openai+http://127.0.0.1:9/v1")
    with pytest.raises(BackendError, match=r"no answer from http://127\.0\.0\.1:9/v1"):
        list(dead._stream(GenRequest(model="m", prompt="x")))


def test_real_nbllm_v1(shell: InteractiveShell, live_server: BackgroundServer) -> None:
    """%%chat and %%generate through nbllm's own /v1 on a real server with SmolLM2; %timings from arrival times."""
    magics = load_ipython_extension(shell, session=NotebookSession())
    try:
        host = f"openai+{live_server.url}/v1"
        cell(shell, "chat", f"smollm2:135m --host {host} --new -o temperature=0 -o num_predict=8 --var r", "Hi")
        chat = shell.user_ns["r"]
        assert chat.text.strip()
        record = chat.timings[0]
        assert record.measured == CLIENT_ARRIVAL and record.host == host
        assert record.eval_tokens is not None and 1 <= record.eval_tokens <= 8 and record.prompt_tokens
        assert 0 < record.ttft_s <= record.total_s and record.eval_s > 0
        cell(shell, "generate", f"smollm2:135m --host {host} -o temperature=0 -o num_predict=6 --var g", "The sky is")
        gen = shell.user_ns["g"]
        assert gen.text.strip() and gen.timings[0].kind == "generate" and 1 <= gen.timings[0].eval_tokens <= 6
        frame = line(shell, "timings").result
        assert list(frame["measured"]) == [CLIENT_ARRIVAL, CLIENT_ARRIVAL]
        assert magics.session.timings.records()[-1].host == host
    finally:
        unload_ipython_extension(shell)


def test_a_stream_closed_early_leaves_nothing_pending(sched: ScheduleServer, caplog: pytest.LogCaptureFixture) -> None:
    """Stopping an answer (an interrupt closes the stream) closes the transport's streams in their own loop."""
    client = OpenAIClient(f"openai+{sched.url}/v1")
    stream = client.chat(ChatRequest(model="t10-g50-n6", messages=[Message(role="user", content="hi")]))
    assert next(stream).message.content == "tok0 "
    stream.close()
    gc.collect()
    assert "Task was destroyed" not in caplog.text
    assert [
        c.done for c in client.chat(ChatRequest(model="t1-g1-n2", messages=[Message(role="user", content="x")]))
    ] == [
        False,
        False,
        True,
    ]


def test_bench_comparison_on_an_openai_host(shell: InteractiveShell, nb_openai: NbllmMagics) -> None:
    """The model comparison (%bench without serving flags) runs on the same adapter, its rows client-measured."""
    frame = line(shell, "bench", "t10-g5-n3 t10-g5-n4 -n 2 --prompt Hi").result
    assert frame.groupby("model").size().to_dict() == {"t10-g5-n3": 2, "t10-g5-n4": 2}
    assert set(frame["measured"]) == {CLIENT_ARRIVAL} and list(frame["eval_tokens"]) == [3, 3, 4, 4]


class ToolServer:
    """An OpenAI-compatible server that calls ``add`` (its arguments in two fragments), then answers the result."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        app = Starlette(routes=[Route("/v1/chat/completions", self.chat, methods=["POST"])])
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
        self.server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    async def chat(self, request: Request) -> StreamingResponse:
        body = await request.json()
        self.bodies.append(body)
        if body["messages"][-1]["role"] == "tool":
            deltas = [{"content": f"It is {body['messages'][-1]['content']}."}]
        else:
            call = {
                "index": 0,
                "id": "call_7",
                "type": "function",
                "function": {"name": "add", "arguments": '{"a": 2,'},
            }
            deltas = [{"tool_calls": [call]}, {"tool_calls": [{"index": 0, "function": {"arguments": ' "b": 3}'}}]}]
        events = [{"choices": [{"index": 0, "delta": d, "finish_reason": None}]} for d in deltas]
        events.append({"choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 4}})
        text = "".join(f"data: {json.dumps(e)}\n\n" for e in events) + "data: [DONE]\n\n"
        return StreamingResponse(iter([text]), media_type="text/event-stream")

    def __enter__(self) -> str:
        self.thread.start()
        while not self.server.started:
            time.sleep(0.01)
        return f"openai+http://127.0.0.1:{self.server.servers[0].sockets[0].getsockname()[1]}/v1"

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)


def test_tool_calls_round_trip(shell: InteractiveShell, nb_openai: NbllmMagics) -> None:
    """--tools on an OpenAI-compatible host: the streamed call is joined, run, and its result sent back."""

    def add(a: int, b: int) -> int:
        """Add two numbers."""
        return a + b

    shell.user_ns["add"] = add
    tools = ToolServer()
    with tools as host:
        cell(shell, "chat", f"m --host {host} --new --tools add --var r", "What is 2 + 3?")
    result = shell.user_ns["r"]
    assert result.text == "It is 5." and [c.name for c in result.tool_calls] == ["add"]
    first, second = tools.bodies
    assert first["tools"][0]["function"]["name"] == "add"
    assert second["messages"][-2]["tool_calls"][0]["function"] == {"name": "add", "arguments": '{"a": 2, "b": 3}'}
    assert second["messages"][-1] == {"role": "tool", "content": "5", "tool_call_id": "call_7"}
