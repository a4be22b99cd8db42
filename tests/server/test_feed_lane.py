"""A generation's plain tokens taken past the layers above the engine (``NoWait.source``/``NoWait.line``):
the event loop turns each into its line without resuming a generator per layer, and the stream is the same,
byte for byte, as the one the layers give."""

from __future__ import annotations

import asyncio
import json
import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

import nbllm.server.feed as feeds
from nbllm.engine import NoWait, TokenChunk, no_wait_handle
from nbllm.engine.llama.request import Request
from nbllm.errors import EngineError
from nbllm.runtime import Runtime
from nbllm.server import BackgroundServer
from nbllm.server.streaming import Feed
from tests.server.test_streaming import _body, _decode, _request, _stats
from tests.server.test_streaming import _use_case as layers_use_case


def _use_case(req: Request, where: list[str], *, lane: bool) -> Iterator[object]:
    """As ``service.inference._stream`` over ``LlamaEngine.generate``: a plain token is its line (here its
    text, as the layers' use case makes it), passed on as is; with ``lane`` the two say so on the consumer's
    handle as they do."""
    handle = no_wait_handle()  # (inside the consumer's block: a generator's body runs on its first step)
    if lane and handle is not None:
        handle.source, handle.line = req, str
    yield from layers_use_case(req, where)


def _run(events: list[object], *, lane: bool, delay: float = 0.02) -> tuple[str, list[str], str]:
    """The body streamed for ``events``, where the use case ran, and the event loop's thread."""
    req, where = _request(), list[str]()
    decode = _decode(req, events, delay)

    async def main() -> tuple[str, str]:
        return threading.current_thread().name, await _body(Feed(lambda cancel: _use_case(req, where, lane=lane)))

    loop_thread, body = asyncio.run(main())
    decode.join()
    return body, where, loop_thread


_TOKENS: list[object] = [TokenChunk(text=f"t{i}", token=i) for i in range(6)]


def test_tokens_are_taken_past_the_use_case_and_the_stream_is_the_same() -> None:
    by_layers, layers_where, loop_thread = _run([*_TOKENS, _stats()], lane=False)
    by_lane, lane_where, _ = _run([*_TOKENS, _stats()], lane=True)
    assert by_lane == by_layers == "t0\nt1\nt2\nt3\nt4\nt5\ndone:stop\nend\n"
    assert layers_where == [loop_thread] * 6 + ["nbllm-stream", "end:nbllm-stream"]  # a token a step of it
    assert lane_where == ["nbllm-stream", "end:nbllm-stream"]  # none: only the last step, in a thread as ever


def test_an_engine_error_after_tokens_taken_past_the_use_case_is_raised_by_it() -> None:
    events: list[object] = [*_TOKENS[:2], EngineError("llama_decode failed")]
    assert _run(events, lane=True)[0] == _run(events, lane=False)[0] == "t0\nt1\nerror: llama_decode failed\n"


def test_what_piles_up_is_taken_a_backlog_at_a_time_in_order(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(feeds, "BACKLOG", 4)
    tokens: list[object] = [TokenChunk(text=f"t{i}", token=i) for i in range(40)]
    body, where, _ = _run([*tokens, _stats()], lane=True, delay=0)
    assert body == "".join(f"t{i}\n" for i in range(40)) + "done:stop\nend\n"
    assert where == ["nbllm-stream", "end:nbllm-stream"]


def test_no_token_is_lost_when_the_decode_thread_races_the_wake_up() -> None:
    """Posted with no pause, tokens come in while the loop arms its wake-up: each is taken once, in order."""
    tokens: list[object] = [TokenChunk(text=f"t{i}", token=i) for i in range(3000)]
    for _ in range(3):
        body, _, _ = _run([*tokens, _stats()], lane=True, delay=0)
        assert body == "".join(f"t{i}\n" for i in range(3000)) + "done:stop\nend\n"


class _RacingQueue(queue.SimpleQueue):  # type: ignore[type-arg]
    """The decode thread posting just after the consumer found the queue empty, before it armed its wake-up:
    that post sees no wake-up to call."""

    def __init__(self, req: Request, late: list[object]) -> None:
        self.req, self.late = req, late

    def empty(self) -> bool:
        empty = super().empty()
        if empty and self.late:
            self.req.post(self.late.pop(0))  # type: ignore[arg-type]
        return empty


def test_a_token_posted_while_the_wake_up_is_armed_is_taken_then_not_stranded() -> None:
    req, woken = _request(), list[int]()
    req.out = _RacingQueue(req, [TokenChunk(text="late", token=1)])
    handle = NoWait(lambda: woken.append(1))
    assert req.ready(handle, 8) == (["late"], False)
    assert req.wake is not None and woken == []  # armed for the next one
    req.post(TokenChunk(text="next", token=2))
    assert woken == [1] and req.ready(handle, 8) == (["next"], False)


def test_a_use_case_that_does_not_say_its_line_is_stepped_as_ever() -> None:
    """A source alone (the use case splits thinking or tool calls, or writes logprobs) is not enough."""
    req, where = _request(), list[str]()
    decode = _decode(req, [*_TOKENS, _stats()])

    def make(cancel: threading.Event) -> Iterator[object]:
        handle = no_wait_handle()  # (inside the consumer's block: a generator's body runs on its first step)
        assert handle is not None
        handle.source = req  # (``LlamaEngine.generate``), and no ``line``
        yield from layers_use_case(req, where)

    async def main() -> str:
        return await _body(Feed(make))

    assert asyncio.run(main()) == "t0\nt1\nt2\nt3\nt4\nt5\ndone:stop\nend\n"
    decode.join()
    assert where.count("MainThread") == 6


# ── the real engine and server ───────────────────────────────────────────────────────────────────────


def _ndjson(field: Callable[[dict[str, Any]], str]) -> Callable[[list[str]], str]:
    return lambda lines: "".join(field(json.loads(line)) for line in lines)


def _sse(field: Callable[[dict[str, Any]], str]) -> Callable[[list[str]], str]:
    def texts(lines: list[str]) -> str:
        events = [json.loads(line[6:]) for line in lines if line.startswith("data: {")]
        return "".join(field(e["choices"][0]) for e in events if e["choices"])

    return texts


_PROMPT = "Tell me about bread."
_CHAT = {"messages": [{"role": "user", "content": _PROMPT}]}
_ROUTES: list[tuple[str, dict[str, Any], Callable[[list[str]], str], Callable[[dict[str, Any]], str]]] = [
    ("/api/generate", {"prompt": _PROMPT}, _ndjson(lambda c: c["response"]), lambda w: w["response"]),
    ("/api/chat", _CHAT, _ndjson(lambda c: c["message"]["content"]), lambda w: w["message"]["content"]),
    (
        "/v1/chat/completions",
        {**_CHAT, "max_tokens": 32},
        _sse(lambda c: c["delta"].get("content") or ""),
        lambda w: w["choices"][0]["message"]["content"],
    ),
    (
        "/v1/completions",
        {"prompt": _PROMPT, "max_tokens": 32},
        _sse(lambda c: c["text"]),
        lambda w: w["choices"][0]["text"],
    ),
]


def _counted_ready(monkeypatch: pytest.MonkeyPatch, direct: list[str] | None = None) -> list[str]:
    """The texts ``Request.ready`` hands out from now on, and (into ``direct``) those the decode thread hands
    the feed itself (``Feed._direct``): the tokens taken past the use case, either way."""
    taken: list[str] = []
    ready, handed = Request.ready, feeds.Feed._direct

    def counted(self: Request, handle: Any, limit: int) -> tuple[list[str], bool]:
        texts, more = ready(self, handle, limit)
        taken.extend(texts)
        return texts, more

    def counted_direct(self: feeds.Feed, text: str) -> bool:
        took = handed(self, text)
        if took:
            taken.append(text)
            if direct is not None:
                direct.append(text)
        return took

    monkeypatch.setattr(Request, "ready", counted)
    monkeypatch.setattr(feeds.Feed, "_direct", counted_direct)
    return taken


@pytest.mark.parametrize(
    ("path", "body", "streamed", "answer"), _ROUTES, ids=["generate", "chat", "v1-chat", "v1-completions"]
)
def test_on_the_real_engine_the_tokens_are_taken_past_the_use_case(
    real_runtime: Runtime,
    monkeypatch: pytest.MonkeyPatch,
    path: str,
    body: dict[str, Any],
    streamed: Callable[[list[str]], str],
    answer: Callable[[dict[str, Any]], str],
) -> None:
    """The llama engine's requests are the source and the routes' line writers the lines: almost every token
    is taken past the use case, and the stream says what the unstreamed answer says (and what the same stream
    says with logprobs asked for, each line made by the use case)."""
    direct: list[str] = []
    taken = _counted_ready(monkeypatch, direct)
    body = {"model": "smollm2:135m", **body, "options": {"temperature": 0, "num_predict": 32}, "temperature": 0}
    with BackgroundServer(real_runtime) as server, httpx.Client(base_url=server.url, timeout=120) as http:
        whole = http.post(path, json={**body, "stream": False}).json()
        assert taken == []  # (not streamed: no line writer)
        with http.stream("POST", path, json={**body, "stream": True}) as resp:
            lines = [line for line in resp.iter_lines() if line]
        assert len(taken) >= 28  # (the first tokens may come before the event loop owns the stream)
        assert len(direct) >= 24  # (its line writer keeps no state: the decode thread makes most lines)
        taken.clear()
        with http.stream("POST", path, json={**body, "stream": True, "logprobs": True}) as resp:
            by_use_case = [line for line in resp.iter_lines() if line]
        assert taken == []  # a line with logprobs is the use case's to make
    assert streamed(lines) == streamed(by_use_case) == answer(whole) != ""


def test_on_the_real_engine_a_responses_stream_s_deltas_are_taken_past_the_use_case(
    real_runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``/v1/responses``: its line writer keeps the stream's state (sequence numbers, the open item), so the
    tokens taken past the use case must still number and close the events as the unstreamed answer says."""
    direct: list[str] = []
    taken = _counted_ready(monkeypatch, direct)
    body = {"model": "smollm2:135m", "input": _PROMPT, "max_output_tokens": 32, "temperature": 0}
    with BackgroundServer(real_runtime) as server, httpx.Client(base_url=server.url, timeout=120) as http:
        whole = http.post("/v1/responses", json=body).json()
        with http.stream("POST", "/v1/responses", json={**body, "stream": True}) as resp:
            events = [json.loads(line[6:]) for line in resp.iter_lines() if line.startswith("data: ")]
    assert len(taken) >= 28 and direct == []  # (its numbering is the loop's alone: no line made elsewhere)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    deltas = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
    text = whole["output"][-1]["content"][0]["text"]
    assert deltas == text != "" and events[-1]["response"]["output"][-1]["content"][0]["text"] == text
