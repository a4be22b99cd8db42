"""A generation's lines written from the event loop's wake-up for each token (``Feed.attach``,
``connections.SYNC_WRITE``), with the response's task woken only for what it must do itself."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

from nbllm.engine import TokenChunk
from nbllm.runtime import Runtime
from nbllm.server import BackgroundServer, connections
from nbllm.server.connections import SYNC_WRITE
from nbllm.server.streaming import Feed, FeedResponse
from tests.server.test_streaming import _decode, _fail, _render, _request, _stats, _use_case

_TOKENS = [f"t{i}" for i in range(12)]
_WHOLE = "".join(f"{t}\n" for t in _TOKENS) + "done:stop\nend\n"


def _response(
    feed: Feed, items: list[object], accept: Callable[[], bool], render: Callable[[object], str] = _render
) -> tuple[list[tuple[str, bytes]], Callable[[], object]]:
    """What reaches the socket, in order: ("write", chunk) from the wake-ups, ("send", chunk) from the task."""
    log: list[tuple[str, bytes]] = []
    paused = threading.Event()  # (a write refused: the send that follows waits for the client)

    def write(body: bytes) -> bool:
        assert threading.current_thread() is threading.main_thread()  # on the event loop, as uvicorn's transport
        if not accept():
            paused.set()
            return False
        log.append(("write", body))
        return True

    async def send(message: dict[str, object]) -> None:
        if message["type"] == "http.response.body":
            if paused.is_set():  # as uvicorn's send waiting for a paused client: tokens come in meanwhile
                paused.clear()
                await asyncio.sleep(0.05)
            log.append(("send", message["body"]))  # type: ignore[arg-type]

    async def receive() -> dict[str, object]:  # (the client never leaves)
        await asyncio.Event().wait()
        return {}

    response = FeedResponse(feed, items, render, _fail, end="end\n", media_type="text/plain")
    scope = {"type": "http", SYNC_WRITE: write}
    return log, lambda: response(scope, receive, send)


def _stream(accept: Callable[[], bool], render: Callable[[object], str] = _render) -> list[tuple[str, bytes]]:
    req, where = _request(), list[str]()
    decode = _decode(req, [TokenChunk(text=t, token=i) for i, t in enumerate(_TOKENS)] + [_stats()])

    async def main() -> list[tuple[str, bytes]]:
        feed = Feed(lambda cancel: _use_case(req, where))
        log, respond = _response(feed, await feed.first(), accept, render)
        await respond()  # type: ignore[misc]
        return log

    log = asyncio.run(main())
    decode.join()
    return log


def test_once_the_response_is_under_way_the_wake_ups_write_the_tokens_and_the_task_the_end() -> None:
    log = _stream(lambda: True)
    assert b"".join(chunk for _, chunk in log).decode() == _WHOLE
    writes = [chunk for how, chunk in log if how == "write"]
    assert len(writes) >= len(_TOKENS) - 2  # (the first token goes out with the response's start)
    assert all(b"done" not in chunk and b"end" not in chunk for chunk in writes)  # the last line is the task's
    assert log[-1] == ("send", b"")  # and the response's end


def test_a_chunk_the_socket_cannot_take_now_goes_to_the_task_in_its_place() -> None:
    """``write`` says False (the client is not reading: uvicorn's flow control paused): the task sends those
    lines, and waits for the client as ``send`` does; the tokens that come in meanwhile wait for it (nothing
    is written past a chunk still being sent): nothing is lost or reordered."""
    turns = iter([True, False, False, True, False] * 10)
    log = _stream(lambda: next(turns))
    assert b"".join(chunk for _, chunk in log).decode() == _WHOLE
    assert {how for how, _ in log} == {"write", "send"}


def test_a_line_that_fails_to_render_fails_the_response_as_without_direct_writes() -> None:
    def render(item: object) -> str:
        if item == "t5":
            raise ValueError("cannot render t5")
        return _render(item)

    with pytest.raises(ValueError, match="cannot render t5"):
        _stream(lambda: True, render)


def test_a_response_that_is_not_streamed_over_a_feed_is_not_written_in_passing() -> None:
    """``collected_response`` drains a feed without ``attach``: every item comes to the awaiting task."""

    def make(cancel: threading.Event) -> Iterator[int]:
        yield from range(5)

    async def main() -> list[object]:
        return await Feed(make).drain()

    assert asyncio.run(main()) == [0, 1, 2, 3, 4]


def _cycle(**state: object) -> SimpleNamespace:
    written: list[bytes] = []
    defaults = {"disconnected": False, "response_started": True, "response_complete": False, "chunked_encoding": True}
    return SimpleNamespace(
        flow=SimpleNamespace(write_paused=state.pop("write_paused", False)),
        transport=SimpleNamespace(write=written.append),
        written=written,
        **{**defaults, **state},
    )


@pytest.mark.parametrize(
    "state",
    [
        {"write_paused": True},
        {"disconnected": True},
        {"response_started": False},
        {"response_complete": True},
        {"chunked_encoding": False},
        {"chunked_encoding": None},  # (HEAD, or a response not yet started)
    ],
)
def test_the_writer_writes_only_when_uvicorns_send_would_write_at_once(state: dict[str, object]) -> None:
    cycle = _cycle(**state)
    assert connections._chunk_writer(cycle)(b"hello") is False
    assert cycle.written == []


def test_the_writer_frames_a_chunk_as_http_1_1_does() -> None:
    cycle = _cycle()
    assert connections._chunk_writer(cycle)(b"hello, world\n") is True
    assert cycle.written == [b"d\r\nhello, world\n\r\n"]


def test_on_a_real_server_the_tokens_lines_are_written_in_passing(
    real_runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """uvicorn with nbllm's protocol: the scope has the writer, the tokens' lines go through it, and the stream
    is the unstreamed answer, line for line."""
    writes: list[bytes] = []
    made = connections._chunk_writer

    def counted(cycle: object) -> Callable[[bytes], bool]:
        write = made(cycle)

        def counting(body: bytes) -> bool:
            ok = write(body)
            if ok:
                writes.append(body)
            return ok

        return counting

    monkeypatch.setattr(connections, "_chunk_writer", counted)
    body = {"model": "smollm2:135m", "prompt": "Tell me about bread.", "options": {"temperature": 0, "num_predict": 48}}
    with BackgroundServer(real_runtime) as server, httpx.Client(base_url=server.url, timeout=120) as http:
        whole = http.post("/api/generate", json={**body, "stream": False}).json()
        writes.clear()
        with http.stream("POST", "/api/generate", json=body) as resp:
            lines = [line for line in resp.iter_lines() if line]
    assert whole["eval_count"] == 48 and len(lines) == 49
    assert len(writes) >= 40  # the first token goes with the start, the last line with the end
    assert b"".join(writes).decode().splitlines() == lines[len(lines) - 1 - len(writes) : -1]
    assert "".join(httpx.Response(200, content=line).json()["response"] for line in lines) == whole["response"]


def test_on_a_real_server_a_client_that_stops_reading_gets_every_line_when_it_reads_again(
    real_runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A client that stops reading mid-answer (small socket buffers, ~3 KB lines): the socket fills, uvicorn
    pauses writing, the writer refuses and the response's task sends and waits instead. Meanwhile the server
    answers others; when the client reads again, it gets the whole answer, in order, as if it had never
    stalled."""
    refused: list[bool] = []
    made = connections._chunk_writer

    def watched(cycle: Any) -> Callable[[bytes], bool]:
        write = made(cycle)
        sock = cycle.transport.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)  # (a slow link: the kernel holds little)

        def watching(body: bytes) -> bool:
            if cycle.flow.write_paused:
                refused.append(True)
            return write(body)

        return watching

    monkeypatch.setattr(connections, "_chunk_writer", watched)
    body = {
        "model": "smollm2:135m",
        "prompt": "Write a long story about a lighthouse keeper.",
        "options": {"temperature": 0, "num_predict": 200, "num_ctx": 1024},
        "logprobs": True,
        "top_logprobs": 20,  # (~3 KB a line: the socket's buffers fill within the answer)
    }
    with BackgroundServer(real_runtime) as server, httpx.Client(base_url=server.url, timeout=120) as http:
        whole = http.post("/api/generate", json={**body, "stream": False}).json()
        chunks = stalled_stream(http, body, lambda: bool(refused))
    assert chunks[-1]["done"] and chunks[-1]["eval_count"] == whole["eval_count"]
    assert "".join(c["response"] for c in chunks) == whole["response"]
    assert [c["logprobs"][0]["token"] for c in chunks[:-1]] == [p["token"] for p in whole["logprobs"]]


def stalled_stream(http: httpx.Client, body: dict[str, Any], stalled: Callable[[], bool]) -> list[dict[str, Any]]:
    """``/api/generate``'s chunks for ``body``, streamed to a client with a small window that reads nothing until
    ``stalled()`` says the server felt it (within a minute), and checks meanwhile that the server answers others."""
    host, port = str(http.base_url).removeprefix("http://").rstrip("/").split(":")
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # (before connecting: the window stays small)
        sock.connect((host, int(port)))
        payload = json.dumps(body).encode()
        head = f"POST /api/generate HTTP/1.1\r\nhost: {host}:{port}\r\ncontent-type: application/json\r\n"
        sock.sendall(head.encode() + f"content-length: {len(payload)}\r\n\r\n".encode() + payload)
        deadline = time.monotonic() + 60
        while not stalled() and time.monotonic() < deadline:  # the client reads nothing meanwhile
            time.sleep(0.05)
        assert stalled(), "the socket never filled: the test did not stall the client"
        assert http.get("/api/version").status_code == 200  # the server serves others meanwhile
        raw = b""
        while not raw.endswith(b"0\r\n\r\n"):
            chunk = sock.recv(1 << 16)
            assert chunk, "the server closed the connection"
            raw += chunk
    response = httpx.Response(200, headers={"transfer-encoding": "chunked"}, content=_dechunk(raw))
    return [json.loads(line) for line in response.text.splitlines()]


def _dechunk(raw: bytes) -> bytes:
    """The body of a chunked HTTP/1.1 response (its head skipped)."""
    rest = raw.split(b"\r\n\r\n", 1)[1]
    out = b""
    while True:
        size_line, rest = rest.split(b"\r\n", 1)
        size = int(size_line, 16)
        if size == 0:
            return out
        out, rest = out + rest[:size], rest[size + 2 :]
