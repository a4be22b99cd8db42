"""Plain tokens' lines written to the socket by the decode thread itself (``Feed._direct``, ``TokenSource.direct``,
``connections.SocketSink``), where llama.cpp's threads take every CPU: the stream is the same, byte for byte and
in order, whether the socket takes every line, part of one, or the client stops reading or leaves."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

from nbllm.engine import TokenChunk, no_wait_handle
from nbllm.engine.llama.request import Request
from nbllm.errors import EngineError
from nbllm.runtime import Runtime
from nbllm.server import BackgroundServer, connections
from nbllm.server.connections import SYNC_WRITE, ChunkWriter, SocketSink
from nbllm.server.streaming import Feed, FeedResponse
from tests.server.test_feed_writes import stalled_stream
from tests.server.test_streaming import _decode, _fail, _render, _request, _stats
from tests.server.test_streaming import _use_case as layers_use_case


class _Connection:
    """The connection as the feed sees it (``ChunkWriter``'s part): the loop's writer, a sink for the decode
    thread, the loop's spill; every byte lands in one log, in the order written, with who wrote it."""

    def __init__(self, accept: Callable[[], bool], take: Callable[[int], int], fail_after: int = -1) -> None:
        self.accept, self.take, self.fail_after = accept, take, fail_after
        self.log: list[tuple[str, bytes]] = []
        self.refused = threading.Event()  # (the task's send that follows waits for the client)
        self.sinks: list[_Sink] = []

    def __call__(self, body: bytes) -> bool:
        assert threading.current_thread() is threading.main_thread()  # the event loop
        if not self.accept():
            self.refused.set()
            return False
        self.log.append(("loop", body))
        return True

    def idle(self) -> bool:
        return not self.refused.is_set()

    def sink(self) -> _Sink:
        self.sinks.append(_Sink(self))
        return self.sinks[-1]

    def spill(self, data: bytes) -> None:
        assert threading.current_thread() is threading.main_thread()
        self.log.append(("spill", data))


class _Sink:
    def __init__(self, connection: _Connection) -> None:
        self.connection, self.closed, self.writes = connection, False, 0

    def write(self, body: bytes) -> bytes:
        assert threading.current_thread().name == "decode" and not self.closed
        self.writes += 1
        if self.writes == self.connection.fail_after:
            raise BrokenPipeError(32, "Broken pipe")
        taken = self.connection.take(len(body))
        self.connection.log.append(("decode", body[:taken]))
        return body[taken:]

    def close(self) -> None:
        self.closed = True


def _use_case(req: Request, line: Callable[[str], str], *, anywhere: bool, pays: bool) -> Iterator[object]:
    """As ``service.inference._stream`` over ``LlamaEngine.generate``, which say where a plain token's line may
    be made and whether the decode thread should write it."""
    handle = no_wait_handle()  # (inside the consumer's block: a generator's body runs on its first step)
    req.direct_pays = pays
    if handle is not None:
        handle.source, handle.line, handle.line_anywhere = req, line, anywhere
    yield from layers_use_case(req, [])


def _stream(
    texts: list[str],
    connection: _Connection,
    *,
    anywhere: bool = True,
    pays: bool = True,
    delay: float = 0.01,
    line: Callable[[str], str] = str,
) -> Request:
    req = _request()
    decode = _decode(req, [TokenChunk(text=t, token=i) for i, t in enumerate(texts)] + [_stats()], delay)

    async def send(message: dict[str, object]) -> None:
        if message["type"] == "http.response.body":
            if connection.refused.is_set():  # as uvicorn's send waiting for a client that does not read
                await asyncio.sleep(0.02)
                connection.refused.clear()
            connection.log.append(("send", message["body"]))  # type: ignore[arg-type]

    async def receive() -> dict[str, object]:  # (the client never leaves)
        await asyncio.Event().wait()
        return {}

    async def main() -> None:
        feed = Feed(lambda cancel: _use_case(req, line, anywhere=anywhere, pays=pays))
        response = FeedResponse(feed, await feed.first(), _render, _fail, end="end\n", media_type="text/plain")
        await response({"type": "http", SYNC_WRITE: connection}, receive, send)

    asyncio.run(main())
    decode.join()
    return req


def _texts(n: int) -> list[str]:
    return [f"t{i}" for i in range(n)]


def _whole(texts: list[str], end: str = "done:stop\nend\n") -> str:
    return "".join(f"{t}\n" for t in texts) + end


def _body(connection: _Connection) -> str:
    return b"".join(chunk for _, chunk in connection.log).decode()


def _by(connection: _Connection, who: str) -> int:
    return sum(1 for how, _ in connection.log if how == who)


def test_the_decode_thread_writes_the_tokens_lines_itself() -> None:
    texts, connection = _texts(12), _Connection(lambda: True, lambda n: n)
    _stream(texts, connection)
    assert _body(connection) == _whole(texts)
    assert _by(connection, "decode") >= len(texts) - 3  # (the first ones: before the response is under way)
    assert connection.log[-2:] == [("send", b"done:stop\nend\n"), ("send", b"")]  # the end is the task's
    assert len(connection.sinks) == 1 and connection.sinks[0].closed  # one descriptor, let go at the end


def _started(events: list[object], connection: _Connection) -> list[object]:
    """A stream whose response starts as its request reaches the engine (``Feed.first(submitted=True)``, as the
    generation routes do), and whose decode thread posts once the response has started and the task waits; what
    ``first`` returned."""
    req = _request()
    started = threading.Event()
    feed: Feed

    def decode() -> None:
        deadline = time.monotonic() + 5
        while not (started.is_set() and feed._armed) and time.monotonic() < deadline:
            time.sleep(0.001)
        for event in events:
            req.post(event)  # type: ignore[arg-type]
            time.sleep(0.01)

    async def send(message: dict[str, object]) -> None:
        if message["type"] == "http.response.start":
            connection.log.append(("start", b""))
            started.set()
        elif message["type"] == "http.response.body":
            connection.log.append(("send", message["body"]))  # type: ignore[arg-type]

    async def receive() -> dict[str, object]:  # (the client never leaves)
        await asyncio.Event().wait()
        return {}

    async def main() -> list[object]:
        nonlocal feed
        feed = Feed(lambda cancel: _use_case(req, str, anywhere=True, pays=True))
        thread = threading.Thread(target=decode, name="decode")
        thread.start()
        first = await feed.first(submitted=True)
        response = FeedResponse(feed, first, _render, _fail, end="end\n", media_type="text/plain")
        await response({"type": "http", SYNC_WRITE: connection}, receive, send)
        thread.join()
        return first

    return asyncio.run(main())


def test_a_response_starts_as_its_request_reaches_the_engine_and_the_decode_thread_writes_the_first_token() -> None:
    """The generation routes start the response once the request is with the engine, before its prompt is
    evaluated (as llama-server does): the client has the head while the prompt runs, and the response's task
    waits for the first token with nothing in flight, so the decode thread writes that one too (no wake-up of the
    event loop for it)."""
    texts, connection = _texts(6), _Connection(lambda: True, lambda n: n)
    assert _started([TokenChunk(text=t, token=i) for i, t in enumerate(texts)] + [_stats()], connection) == []
    assert connection.log[:2] == [("start", b""), ("decode", b"t0\n")]
    assert _by(connection, "decode") == len(texts) and _body(connection) == _whole(texts)


def test_an_engine_failure_before_the_first_token_of_a_started_response_is_its_last_line() -> None:
    """Once the response has started, a failure of the engine during the prompt (llama_decode's, the model
    unloaded under it) can no longer set the status: it is the stream's error line, as after the first token
    (``docs/streaming.md``). Errors found before the request reaches the engine keep their status."""
    connection = _Connection(lambda: True, lambda n: n)
    _started([EngineError("llama_decode failed with status -3")], connection)
    assert connection.log[0] == ("start", b"")
    assert _body(connection) == "error: llama_decode failed with status -3\n"
    assert _by(connection, "decode") == 0


@pytest.mark.parametrize(("anywhere", "pays"), [(False, True), (True, False)], ids=["keeps-state", "cpu-to-spare"])
def test_the_loop_writes_where_the_line_writer_keeps_state_or_a_cpu_is_free(anywhere: bool, pays: bool) -> None:  # noqa: FBT001
    """``/v1/responses`` numbers its events (its line writer is the loop's alone); a GPU or a spare CPU runs the
    event loop off the decode thread's path: then the wake-ups write, as before."""
    texts, connection = _texts(12), _Connection(lambda: True, lambda n: n)
    _stream(texts, connection, anywhere=anywhere, pays=pays)
    assert _body(connection) == _whole(texts)
    assert _by(connection, "decode") == 0 and _by(connection, "loop") >= len(texts) - 3
    assert connection.sinks == []


def test_what_a_full_socket_does_not_take_goes_out_on_the_loop_before_what_follows() -> None:
    """The socket takes part of a line (its buffer is full): the rest goes to the transport on the event loop,
    and the tokens after it queue and go the same way, until the loop finds the connection idle again."""
    texts, rng = _texts(60), random.Random(1)
    connection = _Connection(lambda: True, lambda n: n if rng.random() < 0.7 else rng.randrange(n))
    _stream(texts, connection)
    assert _body(connection) == _whole(texts)
    assert _by(connection, "spill") > 0 and _by(connection, "decode") > 20


def test_no_byte_is_lost_or_reordered_when_the_decode_thread_races_the_loop() -> None:
    """Posted with no pause, the socket taking parts of lines and the loop's writer refusing at random: the
    decode thread's writes, the spills, the wake-ups' writes and the task's sends interleave every way."""
    texts = _texts(3000)
    for seed in range(3):
        rng = random.Random(seed)
        connection = _Connection(
            lambda: rng.random() < 0.95,  # noqa: B023
            lambda n: n if rng.random() < 0.9 else rng.randrange(n),  # noqa: B023
        )
        _stream(texts, connection, delay=0)
        assert _body(connection) == _whole(texts)
        assert {"decode", "spill", "loop", "send"} <= {how for how, _ in connection.log}


def test_a_client_gone_under_the_decode_thread_costs_a_line_not_the_stream() -> None:
    """The socket says the client is gone (``EPIPE``): that line is dropped, nothing else is written by the
    decode thread, and the stream goes on through the loop (where uvicorn drops what a gone client would get)."""
    texts, connection = _texts(20), _Connection(lambda: True, lambda n: n, fail_after=5)
    _stream(texts, connection)
    lost = [t for t in texts if f"{t}\n" not in _body(connection).splitlines(keepends=True)]
    assert len(lost) == 1 and connection.sinks[0].writes == 5
    assert _body(connection) == _whole([t for t in texts if t not in lost])


def test_a_line_that_fails_on_the_decode_thread_fails_the_stream_as_on_the_loop() -> None:
    def line(text: str) -> str:
        if text == "t7":
            raise ValueError("cannot write t7")
        return text

    texts = _texts(12)
    direct, on_loop = _Connection(lambda: True, lambda n: n), _Connection(lambda: True, lambda n: n)
    _stream(texts, direct, line=line)
    _stream(texts, on_loop, line=line, anywhere=False)
    assert _body(direct) == _body(on_loop) == _whole(texts[:7], "error: cannot write t7\n")
    assert _by(direct, "decode") >= 4


def test_a_client_that_leaves_stops_the_decode_thread_s_writes_at_once() -> None:
    """The client disconnects mid-stream: the sink is closed before the response's task ends (no write after
    it), and the request is cancelled."""
    req = _request()
    decode = _decode(req, [TokenChunk(text=t, token=i) for i, t in enumerate(_texts(300))] + [_stats()])
    connection = _Connection(lambda: True, lambda n: n)
    gone = asyncio.Event()
    ended: list[int] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()

        def take(n: int) -> int:
            if _by(connection, "decode") == 10:
                loop.call_soon_threadsafe(gone.set)
            return n

        connection.take = take
        feed = Feed(lambda cancel: _use_case(req, str, anywhere=True, pays=True))

        async def send(message: dict[str, object]) -> None:
            pass

        async def receive() -> dict[str, object]:
            await gone.wait()
            return {"type": "http.disconnect"}

        response = FeedResponse(feed, await feed.first(), _render, _fail, media_type="text/plain")
        await response({"type": "http", SYNC_WRITE: connection}, receive, send)
        ended.append(len(connection.log))
        await asyncio.sleep(0.2)  # the decode thread goes on until it sees the cancel flag

    asyncio.run(main())
    decode.join()
    assert req.cancel.is_set() and connection.sinks[0].closed
    assert len(connection.log) == ended[0] < 100  # nothing written once the response stopped


# ── the real socket, engine and server ───────────────────────────────────────────────────────────────


def test_a_socket_sink_writes_chunks_through_a_descriptor_of_its_own() -> None:
    """Framed as HTTP/1.1 chunks; what a full socket does not take comes back; once the peer is gone, OSError
    (no SIGPIPE); and the sink's descriptor outlives the connection's own (closed by the loop, its number
    reused)."""
    a, b = socket.socketpair()
    a.setblocking(False)  # noqa: FBT003
    sink = SocketSink(os.dup(a.fileno()))
    assert sink.write(b"hello") == b""
    assert b.recv(64) == b"5\r\nhello\r\n"
    a.close()  # (the event loop's descriptor, closed; the socket stays open through the sink's)
    reused = socket.socket()  # (may take the closed descriptor's number)
    try:
        assert sink.write(b"still b") == b""
        assert b.recv(64) == b"7\r\nstill b\r\n"
        rest = b""
        for _ in range(10_000):  # nobody reads b: its buffers fill
            rest = sink.write(b"x" * 4096)
            if rest:
                break
        assert rest, "the socket never filled"
        b.close()
        default = signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # (as in a process that does not ignore it)
        try:
            with pytest.raises(OSError):  # (and not a SIGPIPE, which would end this process)
                for _ in range(100):
                    sink.write(b"after")
                    time.sleep(0.01)
        finally:
            signal.signal(signal.SIGPIPE, default)
    finally:
        sink.close()
        reused.close()


def _cycle(extra: dict[str, object], buffered: int = 0, **state: object) -> SimpleNamespace:
    transport = SimpleNamespace(get_extra_info=extra.get, get_write_buffer_size=lambda: buffered, write=None)
    defaults = {"disconnected": False, "response_started": True, "response_complete": False, "chunked_encoding": True}
    flow = SimpleNamespace(write_paused=state.pop("write_paused", False))
    return SimpleNamespace(flow=flow, transport=transport, **{**defaults, **state})


def test_a_connection_gives_a_sink_only_where_its_bytes_may_go_to_the_socket_as_they_are_now() -> None:
    a, b = socket.socketpair()
    with a, b:
        sink = ChunkWriter(_cycle({"socket": a})).sink()
        assert isinstance(sink, SocketSink)
        sink.write(b"hi")
        sink.close()
        assert b.recv(16) == b"2\r\nhi\r\n"
        assert ChunkWriter(_cycle({"socket": a, "sslcontext": object()})).sink() is None  # (TLS: the transport's)
        assert ChunkWriter(_cycle({})).sink() is None  # (no socket)
        assert ChunkWriter(_cycle({"socket": a}, buffered=10)).sink() is None  # (it would overtake those bytes)
        assert ChunkWriter(_cycle({"socket": a}, write_paused=True)).sink() is None
        assert ChunkWriter(_cycle({"socket": a}, chunked_encoding=False)).sink() is None


def _counted(monkeypatch: pytest.MonkeyPatch) -> tuple[list[str], list[bytes]]:
    """The tokens written by the decode thread from now on, and what the loop spilled for it."""
    direct: list[str] = []
    spilled: list[bytes] = []
    handed, spill = Feed._direct, ChunkWriter.spill

    def counted(self: Feed, text: str) -> bool:
        took = handed(self, text)
        if took:
            direct.append(text)
        return took

    def counted_spill(self: ChunkWriter, data: bytes) -> None:
        spilled.append(data)
        spill(self, data)

    monkeypatch.setattr(Feed, "_direct", counted)
    monkeypatch.setattr(ChunkWriter, "spill", counted_spill)
    return direct, spilled


def test_on_a_real_server_a_client_that_stalls_gets_every_line_in_order(
    real_runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Plain tokens, written by the decode thread. The client stops reading; the socket (small buffers here)
    fills, the rest of a line goes to the transport, uvicorn pauses, the task waits; the server answers others
    meanwhile; when the client reads again it gets the unstreamed answer, in order."""
    direct, spilled = _counted(monkeypatch)
    made = connections._chunk_writer

    def small(cycle: Any) -> ChunkWriter:
        sock = cycle.transport.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)  # (a slow link: the kernel holds little)
        cycle.transport.set_write_buffer_limits(high=1024)  # (and uvicorn pauses soon)
        return made(cycle)

    monkeypatch.setattr(connections, "_chunk_writer", small)
    body = {
        "model": "smollm2:135m",
        "prompt": "Write a long story about a lighthouse keeper.",
        "options": {"temperature": 0, "num_predict": 300, "num_ctx": 1024},
    }
    with BackgroundServer(real_runtime) as server, httpx.Client(base_url=server.url, timeout=120) as http:
        whole = http.post("/api/generate", json={**body, "stream": False}).json()
        chunks = stalled_stream(http, body, lambda: bool(spilled))
    assert chunks[-1]["done"] and chunks[-1]["eval_count"] == whole["eval_count"] == 300
    assert len(chunks) == 301 and len(direct) >= 10
    assert "".join(c["response"] for c in chunks) == whole["response"]


def _head_and_first_line(http: httpx.Client, route: str, body: dict[str, Any]) -> tuple[float, list[str]]:
    """Seconds from the response's head to its first line, and its lines."""
    with http.stream("POST", route, json=body) as response:
        head = time.perf_counter()
        assert response.status_code == 200
        lines = response.iter_lines()
        first = next(line for line in lines if line.strip())
        after = time.perf_counter() - head
        return after, [first, *(line for line in lines if line.strip())]


def test_on_a_real_server_a_streamed_answer_s_head_comes_while_its_prompt_is_evaluated(real_runtime: Runtime) -> None:
    """The status and headers reach the client once the request is with the engine, not with the first token:
    a prompt nobody sent before (~600 tokens, evaluated for a second or more here) puts most of its evaluation
    between the two, on Ollama's routes and OpenAI's. The first token is then the decode thread's to write."""
    text = " ".join(f"Note {i}: the lighthouse keeper climbed the stairs." for i in range(60))
    with BackgroundServer(real_runtime) as server, httpx.Client(base_url=server.url, timeout=120) as http:
        options = {"temperature": 0, "num_predict": 4, "num_ctx": 1024}
        raw = {"model": "smollm2:135m", "raw": True, "options": options}
        http.post("/api/generate", json={**raw, "prompt": "Hello", "stream": False})  # (the load, before either)
        waited, lines = _head_and_first_line(http, "/api/generate", {**raw, "prompt": f"[{time.time_ns()}] {text}"})
        evaluated = json.loads(lines[-1])["prompt_eval_duration"] / 1e9
        assert evaluated > 0.2 and waited >= 0.5 * evaluated, (waited, evaluated)
        openai = {"model": "smollm2:135m", "max_tokens": 4, "temperature": 0, "stream": True}
        fresh = f"[{time.time_ns()}] {text}"
        waited, lines = _head_and_first_line(http, "/v1/completions", {**openai, "prompt": fresh})
        assert waited >= 0.5 * evaluated and lines[-1] == "data: [DONE]", (waited, evaluated)


def test_on_a_real_server_a_client_that_leaves_mid_answer_is_let_go_and_others_are_served(
    real_runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A client that reads a few lines and closes its socket: the decode thread's next writes fail or land in
    a closed socket, the generation is cancelled, and the next client gets its whole answer."""
    direct, _ = _counted(monkeypatch)
    body = {
        "model": "smollm2:135m",
        "prompt": "Tell me about bread.",
        "options": {"temperature": 0, "num_predict": 400},
    }
    with BackgroundServer(real_runtime) as server, httpx.Client(base_url=server.url, timeout=120) as http:
        with http.stream("POST", "/api/generate", json=body) as resp:
            for n, _ in enumerate(resp.iter_lines()):
                if n == 20:
                    break
        answer = http.post("/api/generate", json={**body, "stream": False, "options": {"num_predict": 16}}).json()
    assert len(direct) >= 10
    assert answer["done"] and answer["eval_count"] == 16 and answer["response"]


def test_on_a_real_server_a_kept_alive_connection_serves_its_next_request_cleanly(
    real_runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a stream written by the decode thread, the next requests on the same connection (streamed, then
    not) get their own answers, whole: nothing of the first stream comes after its end."""
    direct, _ = _counted(monkeypatch)
    ports: list[int] = []

    def port(response: httpx.Response) -> None:
        ports.append(response.extensions["network_stream"].get_extra_info("client_addr")[1])

    body = {"model": "smollm2:135m", "prompt": "Tell me about bread.", "options": {"temperature": 0, "num_predict": 40}}
    with (
        BackgroundServer(real_runtime) as server,
        httpx.Client(base_url=server.url, timeout=120, event_hooks={"response": [port]}) as http,
    ):
        streams = []
        for _ in range(2):
            with http.stream("POST", "/api/generate", json=body) as resp:
                streams.append([json.loads(line) for line in resp.iter_lines() if line])
        whole = http.post("/api/generate", json={**body, "stream": False}).json()
    assert len(set(ports)) == 1 and len(direct) >= 60  # one connection throughout; most lines by the decode thread
    for chunks in streams:
        assert len(chunks) == 41 and chunks[-1]["done"]
        assert "".join(c["response"] for c in chunks) == whole["response"]


def test_tokens_posted_while_the_loop_writes_what_it_took_from_the_queue_never_overtake_it() -> None:
    """The hand-off's two races, set up on purpose: a token queued just before the loop's wake-up arms the decode
    thread's writes (the next one must not be written ahead of it), and a token posted while that wake-up writes
    what it took from the queue (written after that, not in the middle). The decode thread posts in one order;
    the client gets that order."""
    req = _request()
    connection = _Connection(lambda: True, lambda n: n)
    writing_late, after_posted = threading.Event(), threading.Event()
    decode: list[threading.Thread] = []
    waited: list[bool] = []

    def post(text: str) -> None:
        req.post(TokenChunk(text=text, token=len(text)))

    def races() -> None:  # the decode thread
        post("late")  # (the loop is writing t1 and has not armed yet: this one queues)
        deadline = time.monotonic() + 5
        while not feed._armed and time.monotonic() < deadline:
            time.sleep(0.0005)
        post("after")  # (armed now, "late" still queued: queued behind it, at once)
        after_posted.set()
        writing_late.wait(5)
        post("during")  # (the loop is writing what it took: this waits for that write to end)

    def writing(body: bytes) -> bool:  # the loop's wake-up, writing what it took from the queue
        if body == b"t1\n":
            decode.append(threading.Thread(target=races, name="decode"))
            decode[0].start()
            time.sleep(0.05)  # (lets go of the GIL: "late" is posted now)
        elif b"late" in body:
            writing_late.set()
            time.sleep(0.05)  # ("during" is posted now, and must wait)
        return connection(body)

    async def send(message: dict[str, object]) -> None:
        if message["type"] == "http.response.body":
            connection.log.append(("send", message["body"]))  # type: ignore[arg-type]

    async def receive() -> dict[str, object]:
        await asyncio.Event().wait()
        return {}

    def later(*texts: str, wait: float, last: bool = False) -> threading.Thread:
        def run() -> None:
            time.sleep(wait)
            deadline = time.monotonic() + 10
            while last and not decode and time.monotonic() < deadline:  # (the races come first, however slow)
                time.sleep(0.01)
            if decode:
                decode[0].join()
            for text in texts:
                post(text)
                time.sleep(0.02)
            if last:
                req.post(_stats())

        thread = threading.Thread(target=run, name="decode")
        thread.start()
        return thread

    async def main() -> None:
        nonlocal feed
        feed = Feed(lambda cancel: _use_case(req, str, anywhere=True, pays=True))
        arm = feed._arm

        def arm_then_wait() -> None:  # (the loop, ``_sending`` held: the decode thread posts "after" now)
            if not decode:
                return  # (not armed before t1: the loop's wake-up writes it, and the races start in that write)
            arm()
            if feed._armed and not waited:
                waited.append(after_posted.wait(2))

        feed._arm = arm_then_wait  # type: ignore[method-assign]
        later("t0", wait=0.1).join()
        response = FeedResponse(feed, await feed.first(), _render, _fail, end="end\n", media_type="text/plain")
        tail = later("t1", wait=0.1)
        rest = later("t2", "t3", wait=0.5, last=True)
        scope = {"type": "http", SYNC_WRITE: _Writer(writing, connection)}
        await response(scope, receive, send)
        tail.join()
        rest.join()

    feed: Feed
    asyncio.run(main())
    assert waited == [True]  # "after" did not wait for the socket (it was not to be written ahead of "late")
    assert _body(connection) == _whole(["t0", "t1", "late", "after", "during", "t2", "t3"])
    assert _by(connection, "decode") >= 2  # (t2, t3 at least: written by the decode thread)


class _Writer:
    """``_Connection`` with its call replaced (the feed calls ``sinks`` and ``lines``' writer alike)."""

    def __init__(self, call: Callable[[bytes], bool], connection: _Connection) -> None:
        self._call, self._connection = call, connection

    def __call__(self, body: bytes) -> bool:
        return self._call(body)

    def idle(self) -> bool:
        return self._connection.idle()

    def sink(self) -> _Sink:
        return self._connection.sink()

    def spill(self, data: bytes) -> None:
        self._connection.spill(data)
