"""The stream hand-off between a use case's thread and the event loop (nbllm.server.streaming)."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

import nbllm.server.feed as feeds
from nbllm.engine import FinalStats, Pending, SamplingParams, TokenChunk
from nbllm.engine.llama.request import Request
from nbllm.errors import Cancelled, EngineError, InvalidRequest
from nbllm.runtime import Runtime
from nbllm.server import BackgroundServer, watch
from nbllm.server.feed import DONE
from nbllm.server.streaming import Feed, FeedResponse


def _render(item: object) -> str:
    return f"{item}\n"


def _fail(exc: BaseException) -> str:
    return f"error: {exc}\n"


async def _body(feed: Feed) -> str:
    """The body ``FeedResponse`` sends for the feed, as an ASGI server would see it."""
    items = await feed.first()
    sent: list[dict[str, object]] = []

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    async def receive() -> dict[str, object]:  # (the client never leaves)
        await asyncio.Event().wait()
        return {}

    response = FeedResponse(feed, items, _render, _fail, end="end\n", media_type="text/plain")
    await response({"type": "http", "asgi": {"spec_version": "2.4"}}, receive, send)
    assert sent[0]["type"] == "http.response.start"
    assert sent[-1] == {"type": "http.response.body", "body": b"", "more_body": False}
    assert all(m["more_body"] and m["body"] for m in sent[1:-1])  # (no empty writes)
    return b"".join(m["body"] for m in sent[1:]).decode()  # type: ignore[misc]


def test_items_arrive_in_order_with_the_end_marker() -> None:
    async def main() -> str:
        return await _body(Feed(lambda cancel: iter(range(5))))

    assert asyncio.run(main()) == "0\n1\n2\n3\n4\nend\n"


def test_an_error_before_the_first_item_is_raised_and_a_later_one_is_the_last_line() -> None:
    def early(cancel: threading.Event) -> Iterator[int]:
        raise InvalidRequest("bad option")

    def late(cancel: threading.Event) -> Iterator[int]:
        yield 1
        raise InvalidRequest("went wrong")

    async def main() -> str:
        with pytest.raises(InvalidRequest, match="bad option"):
            await Feed(early).first()
        return await _body(Feed(late))

    assert asyncio.run(main()) == "1\nerror: went wrong\n"  # no end marker after a failure


def test_what_piles_up_while_the_loop_is_busy_comes_in_one_take() -> None:
    def make(cancel: threading.Event) -> Iterator[int]:
        yield 0
        time.sleep(0.2)  # the loop is past its first take by now
        yield from range(1, 10)

    async def main() -> tuple[list[object], list[object]]:
        feed = Feed(make)
        first = await feed.first()
        time.sleep(0.5)  # the loop is busy elsewhere while the other nine and the end arrive
        return first, await feed.take()

    first, rest = asyncio.run(main())
    assert first == [0] and rest[:9] == list(range(1, 10)) and len(rest) == 10  # nine items and the end at once


def test_a_slow_client_holds_the_producer_back_and_leaving_cancels_and_closes_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(feeds, "BACKLOG", 8)
    made: list[int] = []
    closed = threading.Event()
    cancels: list[threading.Event] = []

    def make(cancel: threading.Event) -> Iterator[int]:
        try:
            for i in range(1000):
                made.append(i)
                yield i
        finally:
            closed.set()  # runs in the producer's thread when the feed closes the generator

    async def main() -> None:
        feed = Feed(make)
        cancels.append(feed.cancel)
        taken = len(await feed.first())
        await asyncio.sleep(0.3)  # the client reads nothing for a while
        assert len(made) <= taken + 8 + 1  # what it took, the backlog, and the item waiting for room
        feed.close()  # the client went away
        assert await asyncio.to_thread(closed.wait, 5)

    asyncio.run(main())
    assert cancels[0].is_set() and len(made) < 30


def test_the_server_runs_on_uvloop_and_httptools(real_runtime: Runtime) -> None:
    """Both are dependencies: against asyncio and h11 they cut the server's CPU per streamed token outside
    llama.cpp's threads by 15-30% (bench: serving CPU), and on this machine that CPU comes out of the decode."""
    with BackgroundServer(real_runtime) as server:
        uvicorn_server = server._server
        assert uvicorn_server is not None
        loop = uvicorn_server.servers[0].get_loop()
        assert type(loop).__module__.startswith("uvloop"), type(loop)
        protocol = uvicorn_server.config.http_protocol_class  # (nbllm's guarded subclass of it: server/connections.py)
        assert "HttpToolsProtocol" in [cls.__name__ for cls in protocol.__mro__]
        assert httpx.get(server.url + "/api/version").status_code == 200


# ── generations: the decode thread wakes the event loop, which advances the use case itself ─────────


def _stats() -> FinalStats:
    return FinalStats(done_reason="stop", prompt_eval_count=1, prompt_eval_duration=1, eval_count=1, eval_duration=1)


def _use_case(req: Request, where: list[str]) -> Iterator[object]:
    """What a use case does with a generation: PENDING passed on, events made into items, then its tidying up."""
    try:
        for event in req.events():
            if isinstance(event, Pending):
                yield event
                continue
            where.append(threading.current_thread().name)
            yield event.text if isinstance(event, TokenChunk) else f"done:{event.done_reason}"
    finally:
        where.append("end:" + threading.current_thread().name)


def _decode(req: Request, events: list[object], delay: float = 0.02) -> threading.Thread:
    def run() -> None:
        time.sleep(0.1)  # the prompt: the feed's thread has met PENDING and handed the stream to the loop
        for event in events:
            if req.cancel.is_set():
                req.post(Cancelled("request cancelled"))
                return
            req.post(event)  # type: ignore[arg-type]
            time.sleep(delay)

    thread = threading.Thread(target=run, name="decode")
    thread.start()
    return thread


def _request() -> Request:
    return Request([1, 2, 3], SamplingParams(), threading.Event())


def test_a_generation_s_tokens_are_taken_on_the_event_loop_and_its_end_in_a_thread() -> None:
    req, where = _request(), []
    decode = _decode(req, [TokenChunk(text=f"t{i}", token=i) for i in range(5)] + [_stats()])

    async def main() -> tuple[str, str]:
        return threading.current_thread().name, await _body(Feed(lambda cancel: _use_case(req, where)))

    loop_thread, body = asyncio.run(main())
    decode.join()
    assert body == "t0\nt1\nt2\nt3\nt4\ndone:stop\nend\n"
    # each token by the loop, woken by the decode thread; the final stats and what follows them
    # (releasing the model, perhaps unloading it) where blocking is allowed
    assert where == [loop_thread] * 5 + ["nbllm-stream", "end:nbllm-stream"]


def test_each_token_is_one_step_of_the_use_case_on_the_loop() -> None:
    """A generation handing over a token with nothing else ready arms the wake-up there (``NoWait.armed``), so
    the loop stops without stepping the use case again only to hear PENDING: the one PENDING it sees on the
    loop are the hand-over's (the loop looks once, as the first token may be in already) and the end's."""
    req, where, pendings = _request(), [], []
    decode = _decode(req, [TokenChunk(text=f"t{i}", token=i) for i in range(5)] + [_stats()])

    def counted(cancel: threading.Event) -> Iterator[object]:
        for item in _use_case(req, where):
            if isinstance(item, Pending):
                pendings.append(threading.current_thread().name)
            yield item

    async def main() -> tuple[str, str]:
        return threading.current_thread().name, await _body(Feed(counted))

    loop_thread, body = asyncio.run(main())
    decode.join()
    assert body == "t0\nt1\nt2\nt3\nt4\ndone:stop\nend\n"
    assert pendings == ["nbllm-stream", loop_thread, loop_thread]  # (without arming: one more for each token)


def test_an_engine_error_is_raised_in_a_thread_and_is_the_last_line() -> None:
    req, where = _request(), []
    decode = _decode(req, [TokenChunk(text="t0", token=0), EngineError("llama_decode failed")])

    async def main() -> str:
        return await _body(Feed(lambda cancel: _use_case(req, where)))

    assert asyncio.run(main()) == "t0\nerror: llama_decode failed\n"
    decode.join()
    assert where == ["MainThread", "end:nbllm-stream"]


def test_leaving_a_generation_cancels_it_and_closes_it_in_a_thread() -> None:
    req, where = _request(), []
    decode = _decode(req, [TokenChunk(text=f"t{i}", token=i) for i in range(500)])

    async def main() -> list[object]:
        feed = Feed(lambda cancel: _use_case(req, where))
        items = await feed.first()
        feed.close()  # the client went away
        return items

    items = asyncio.run(main())
    decode.join(5)
    assert not decode.is_alive() and req.cancel.is_set()
    assert items and where[-1] == "end:nbllm-stream-close"  # the use case's tidying up, off the event loop
    assert len(where) < 50


def test_a_slow_client_leaves_a_generation_s_events_with_the_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(feeds, "BACKLOG", 4)
    req, where = _request(), []
    decode = _decode(req, [TokenChunk(text=f"t{i}", token=i) for i in range(40)] + [_stats()], delay=0.0)

    async def main() -> tuple[int, str]:
        feed = Feed(lambda cancel: _use_case(req, where))
        first = await feed.first()
        await asyncio.sleep(0.5)  # the client reads nothing; the loop is free and the decode is done
        waiting = req.out.qsize()
        rest = [first]
        while not rest[-1] or rest[-1][-1] is not DONE:
            rest.append(await feed.take())
        text = "".join(str(i) for part in rest for i in part if i is not DONE)
        return waiting, text

    waiting, text = asyncio.run(main())
    decode.join()
    assert waiting >= 40 - 4 - 4  # the loop took the backlog's worth and left the rest in the engine's queue
    assert text == "".join(f"t{i}" for i in range(40)) + "done:stop"


def test_a_real_server_streams_a_generation_from_the_event_loop(real_runtime: Runtime) -> None:
    """On the real engine: once the stream is under way no stream thread is left (the loop advances it), and
    the streamed text is what the same request gives unstreamed (greedy)."""
    body = {
        "model": "smollm2:135m",
        "prompt": "Write a very long story about a dragon who learns to bake bread.",
        "options": {"temperature": 0, "num_predict": 300},  # ~3 s here: the check midway is well before the end
    }
    with BackgroundServer(real_runtime) as server, httpx.Client(base_url=server.url, timeout=120) as http:
        whole = http.post("/api/generate", json={**body, "stream": False}).json()
        parts: list[str] = []
        threads_midway: list[str] = ["not looked"]
        with http.stream("POST", "/api/generate", json=body) as resp:
            assert resp.status_code == 200
            for line in resp.iter_lines():
                chunk = json.loads(line)
                parts.append(chunk["response"])
                if len(parts) == 8:  # well before the end: the start thread has handed the stream over
                    deadline = time.monotonic() + 1
                    while True:
                        threads_midway = [t.name for t in threading.enumerate() if t.name.startswith("nbllm-stream")]
                        if not threads_midway or time.monotonic() > deadline:
                            break
                        time.sleep(0.01)
        assert chunk["done"] and chunk["eval_count"] == whole["eval_count"] == 300
    assert threads_midway == []
    assert "".join(parts) == whole["response"]


class _Client:
    """An ASGI ``receive`` whose client stays until ``leave()`` (then ``http.disconnect``), or whose
    connection fails (``receive`` raises) with ``fail=True``."""

    def __init__(self, *, fail: bool = False) -> None:
        self.gone = asyncio.Event()
        self.fail = fail

    async def receive(self) -> dict[str, object]:
        await self.gone.wait()
        if self.fail:
            raise OSError("connection reset")
        return {"type": "http.disconnect"}


@pytest.mark.parametrize("fail", [False, True], ids=["disconnect", "receive-fails"])
def test_work_watched_in_its_own_task_ends_at_once_when_the_client_leaves(*, fail: bool) -> None:
    async def main() -> None:
        client = _Client(fail=fail)
        cancelled = asyncio.Event()

        async def work() -> str:
            try:
                await asyncio.Event().wait()  # (a generation that never ends by itself)
            except asyncio.CancelledError:
                cancelled.set()
                raise
            return "never"

        asyncio.get_running_loop().call_later(0.05, client.gone.set)
        me = asyncio.current_task()
        assert me is not None
        assert await watch.unless_gone(client.receive, work()) == (False, None)
        assert cancelled.is_set()
        await asyncio.sleep(0.01)  # the task goes on: the cancellation it used is not left pending
        assert me.cancelling() == 0

    asyncio.run(main())


def test_work_that_ends_first_returns_its_result_in_the_same_task_and_stops_the_watch() -> None:
    async def main() -> None:
        client = _Client()
        me = asyncio.current_task()
        tasks: list[asyncio.Task[object] | None] = []

        async def work() -> str:
            tasks.append(asyncio.current_task())
            await asyncio.sleep(0.01)
            return "done"

        assert await watch.unless_gone(client.receive, work()) == (True, "done")
        assert tasks == [me]  # awaited in place: no task of its own, no loop turn after it
        client.gone.set()  # a client leaving now (its request is answered) cancels nothing
        await asyncio.sleep(0.05)
        assert me is not None and me.cancelling() == 0

    asyncio.run(main())


def test_a_cancellation_from_elsewhere_goes_through_the_watch() -> None:
    async def main() -> None:
        client = _Client()
        inner = asyncio.ensure_future(watch.unless_gone(client.receive, asyncio.Event().wait()))
        await asyncio.sleep(0.01)
        inner.cancel()  # (the server shutting down)
        with pytest.raises(asyncio.CancelledError):
            await inner

    asyncio.run(main())


def test_a_shutdown_at_the_moment_the_client_leaves_is_not_swallowed() -> None:
    async def main() -> None:
        client = _Client()
        inner = asyncio.ensure_future(watch.unless_gone(client.receive, asyncio.Event().wait()))
        await asyncio.sleep(0.01)
        client.gone.set()
        while not inner.cancelling():  # the watcher runs: it cancels the work's task ...
            await asyncio.sleep(0)
        assert not inner.done()
        inner.cancel()  # ... and the server shuts down before that task runs again
        with pytest.raises(asyncio.CancelledError):
            await inner

    asyncio.run(main())


def test_a_streamed_response_whose_client_leaves_closes_its_feed_and_returns() -> None:
    def make(cancel: threading.Event) -> Iterator[int]:
        i = 0
        while not cancel.is_set():
            time.sleep(0.005)
            i += 1
            yield i

    async def main() -> None:
        feed = Feed(make)
        items = await feed.first()
        client = _Client()
        sent: list[dict[str, object]] = []

        async def send(message: dict[str, object]) -> None:
            sent.append(message)
            if len(sent) == 5:
                client.gone.set()

        response = FeedResponse(feed, items, _render, _fail, media_type="text/plain")
        await asyncio.wait_for(response({"type": "http"}, client.receive, send), 10)  # returns, raises nothing
        assert feed.cancel.is_set()  # the engine's flag: the request stops
        assert sent[0]["type"] == "http.response.start" and len(sent) < 50
        assert {"type": "http.response.body", "body": b"", "more_body": False} not in sent  # cut, not ended

    asyncio.run(main())
