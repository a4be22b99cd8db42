"""The stream hand-off between a use case's thread and the event loop (nbllm.server.streaming)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from nbllm.errors import InvalidRequest
from nbllm.runtime import Runtime
from nbllm.server import BackgroundServer, streaming
from nbllm.server.streaming import Feed, stream_lines


def _render(item: object) -> str:
    return f"{item}\n"


def _fail(exc: BaseException) -> str:
    return f"error: {exc}\n"


async def _body(feed: Feed) -> str:
    items = await feed.first()
    return "".join([part async for part in stream_lines(feed, items, _render, _fail, end="end\n")])


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
    monkeypatch.setattr(streaming, "_BACKLOG", 8)
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
        assert uvicorn_server.config.http_protocol_class.__name__ == "HttpToolsProtocol"
        assert httpx.get(server.url + "/api/version").status_code == 200
