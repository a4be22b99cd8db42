"""bench.ttft_path: a request's marks and steps from probe events; the probes wrap what exists and unwrap."""

from __future__ import annotations

import asyncio

import starlette.applications
import starlette.routing

from bench import ttft_path, ttft_probe
from nbllm.engine.llama import batching
from nbllm.runtime import Runtime
from nbllm.server.app import create_app
from nbllm.server.streaming import RAW_SEND
from nbllm.service import inference

MS = 1_000_000


def _events(*, stash: bool, batches: int) -> list[tuple[int, str, str]]:
    """One request's server events (ms), with noise before it and a wake-up that is not the first token's."""
    t = [
        (1, "wake>", "MainThread"),  # the story's stream, before the request
        (12, "asgi", "MainThread"),
        (13, "route>", "MainThread"),
        (14, "produce>", "s"),
        (15, "prepare>", "s"),
        (16, "prepare<", "s"),
        (17, "tokenize>", "s"),
        (19, "tokenize<", "s"),
        (20, "submit>", "s"),
        (21, "submit<", "s"),
        (22, "wake>", "MainThread"),  # the hand-off to the loop, not the token's wake-up
        (23, "admit>", "d"),
        (27, "admit<", "d"),
    ]
    if stash:
        t += [(24, "stash>", "d"), (26, "stash<", "d")]
    at = 28
    for _ in range(batches):
        t += [(at, "decode>", "d"), (at + 100, "decode<", "d")]
        at += 101
    t += [(at + 1, "post>", "d"), (at + 2, "decode>", "d"), (at + 3, "wake>", "MainThread")]
    t += [(at + 4, "send", "MainThread"), (at + 5, "sent", "MainThread"), (at + 50, "decode<", "d")]
    return [(ms * MS, name, thread) for ms, name, thread in t]


def test_the_steps_of_one_request_follow_its_marks() -> None:
    events = _events(stash=True, batches=1)
    spans = ttft_path.spans_of(ttft_path.marks_of(events, 10 * MS, 136 * MS))
    assert spans["request in"] == 2.0
    assert spans["FastAPI"] == 1.0
    assert spans["tokenize"] == 3.0  # from prepare's end: rendering is in it
    assert spans["decode thread wakes"] == 2.0
    assert spans["RAM-cache copy"] == 2.0
    assert spans["admission"] == 2.0  # 4 ms in _admit, less the copy
    assert spans["prefill"] == 100.0
    assert spans["sample and post"] == 2.0
    assert spans["event loop wakes"] == 2.0  # the wake-up after the post, not the hand-off's before it
    assert spans["first line out"] == 2.0
    assert spans["to the client"] == 2.0


def test_a_prompt_of_two_batches_is_one_prefill_and_an_empty_slot_copies_nothing() -> None:
    events = _events(stash=False, batches=2)
    spans = ttft_path.spans_of(ttft_path.marks_of(events, 10 * MS, 237 * MS))
    assert spans["prefill"] == 201.0  # both llama_decode calls and the Python between them
    assert spans["RAM-cache copy"] == 0.0
    assert spans["admission"] == 4.0


def test_a_request_that_missed_the_probed_path_is_an_error_not_zeros() -> None:
    events = [e for e in _events(stash=False, batches=1) if e[1] != "tokenize<"]
    try:
        ttft_path.marks_of(events, 10 * MS, 136 * MS)
    except ValueError as exc:
        assert "tokenize<" in str(exc)
    else:
        raise AssertionError("a missing mark went unnoticed")


def test_the_summary_has_every_step_with_its_interval() -> None:
    rounds = [(10 * MS, 136 * MS, {"prompt_eval_duration": 104 * MS})] * 6
    summary = ttft_path.summarize(rounds, _events(stash=True, batches=1))
    assert summary["medians"]["TTFT"]["median"] == 126.0
    assert summary["medians"]["overhead"]["median"] == 22.0
    assert summary["medians"]["prefill"]["ci95"] == [100.0, 100.0]
    assert "| RAM-cache copy | 2.000 |" in ttft_path.table(summary)


def test_the_probes_wrap_the_functions_they_name_and_put_them_back() -> None:
    before = (starlette.applications.Starlette.__call__, inference._prepare, batching.DecodeLoop._admit)
    uninstall = ttft_probe.install()
    try:
        assert inference._prepare is not before[1]
        assert batching.DecodeLoop._admit.__wrapped__ is before[2]  # type: ignore[attr-defined]
        ttft_probe.EVENTS.clear()
        ttft_probe._mark("x")
        assert [e[1] for e in ttft_probe.EVENTS] == ["x"]
    finally:
        uninstall()
        ttft_probe.EVENTS.clear()
    assert (starlette.applications.Starlette.__call__, inference._prepare, batching.DecodeLoop._admit) == before


def test_a_token_the_loop_took_without_a_wake_up_of_its_own_counts_no_wake_up() -> None:
    # the loop was still busy with the hand-off's wake-up when the token came: it took the token with it
    events = [e for e in _events(stash=False, batches=1) if not (e[1] == "wake>" and e[0] == 132 * MS)]
    events.append((135 * MS, "wake>", "MainThread"))  # the next token's, after the first line went out
    spans = ttft_path.spans_of(ttft_path.marks_of(events, 10 * MS, 136 * MS))
    assert spans["event loop wakes"] == 0.0
    assert spans["first line out"] == 4.0  # from the post to the line's write


def test_a_write_that_returned_after_the_client_read_the_line_ends_at_its_start() -> None:
    # the client had the line at 134 ms, before the server's write call returned (135 ms: outside the window)
    events = [(t + (1 * MS if name == "sent" else 0), name, th) for t, name, th in _events(stash=False, batches=1)]
    spans = ttft_path.spans_of(ttft_path.marks_of(events, 10 * MS, 134 * MS))
    assert spans["first line out"] == 1.0  # the wake-up at 132, the write's start at 133
    assert spans["to the client"] == 1.0


def test_the_first_line_is_marked_when_it_goes_to_the_servers_own_send(fake_runtime: Runtime) -> None:
    """A stream's body chunks go to ``streaming.RAW_SEND``, past the middlewares: the probe follows them there
    (before it did, every request of a real run failed with "no 'sent'")."""
    sent: list[dict[str, object]] = []
    marks: list[str] = []

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def endpoint(scope: dict[str, object], receive: object, send: object) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})  # type: ignore[operator]
        await scope[RAW_SEND]({"type": "http.response.body", "body": b"line\n", "more_body": True})  # type: ignore[operator]
        marks.extend(e[1] for e in ttft_probe.EVENTS)  # (what the probe saw of the line, before the end)
        await send({"type": "http.response.body", "body": b"", "more_body": False})  # type: ignore[operator]

    app = create_app(fake_runtime)  # (the app's class and middlewares, with a route of this test's)
    app.router.routes.clear()
    app.router.routes.append(starlette.routing.Mount("/", app=endpoint))
    uninstall = ttft_probe.install()
    try:
        ttft_probe.EVENTS.clear()
        scope = {
            "type": "http",
            "method": "GET",
            "path": "/x",
            "raw_path": b"/x",
            "query_string": b"",
            "headers": [(b"host", b"127.0.0.1")],
            "client": ("127.0.0.1", 1),
            "server": ("127.0.0.1", 11434),
        }
        asyncio.run(app(scope, receive, send))
    finally:
        uninstall()
        ttft_probe.EVENTS.clear()
    assert sent[1]["body"] == b"line\n"
    assert marks == ["asgi", "send", "sent"]


def test_beside_a_peer_the_rounds_alternate_and_say_what_came_before_each_prompt(fake_runtime: Runtime) -> None:
    """``--llama-bin``: bench.pertoken's order, reversed every round, so nbllm runs twice in a row every other
    round (after its own last prompt) and after the peer's turn (a pause) in the others."""
    import os
    import subprocess
    from typing import cast

    from bench import servers
    from nbllm.server import BackgroundServer

    live = BackgroundServer(fake_runtime, port=0).start()
    this = cast("subprocess.Popen[bytes]", type("ThisProcess", (), {"pid": os.getpid()})())

    def side(name: str) -> servers.Server:
        return servers.Server(name=name, kind="ollama", url=live.url, proc=this, started=0.0, model="tiny")

    try:
        requests, after, peer_ms = ttft_path.run_beside(side("nbllm"), side("peer"), 4, tokens=4)
    finally:
        live.stop()
    assert after == ["a pause", "a pause", "its own last prompt", "a pause"]
    assert len(requests) == len(peer_ms) == 4
    assert all(sent < first for sent, first, _ in requests)
    assert all(final.get("done") for _, _, final in requests)
