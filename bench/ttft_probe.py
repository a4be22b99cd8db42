"""``python -m bench.ttft_probe serve``: ``nbllm serve`` with a timestamp at each step of a first token's path.

bench.ttft_path runs it and puts the client's own timestamps beside these: on Linux ``time.perf_counter_ns``
reads CLOCK_MONOTONIC, one clock for every process on the machine, so a request can be followed from the
client's send through uvicorn, FastAPI, the use case's thread, the tokenizer, the decode thread and the event
loop back to the client. The probes wrap functions by name (``PROBES``); one that no longer exists fails
the install, so the probe cannot silently measure nothing after a rename.

Each probe costs about a microsecond. The events go to ``$BENCH_TTFT_EVENTS`` (JSON) when the server exits.
"""

from __future__ import annotations

import atexit
import functools
import inspect
import json
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

__all__ = ["EVENTS", "PROBES", "install"]

EVENTS: list[tuple[int, str, str]] = []
"""(perf_counter_ns, label, thread name): ``label>`` on entry, ``label<`` on exit."""

PROBES: list[tuple[str, str, str, bool]] = [
    # (module, attribute path, label, mark the exit too)
    ("nbllm.server.routes_generate", "ndjson_response", "route", False),
    ("nbllm.server.feed", "Feed._produce", "produce", False),
    ("nbllm.service.inference", "_prepare", "prepare", True),
    ("nbllm.engine.llama.engine", "LlamaEngine.tokenize", "tokenize", True),
    ("nbllm.engine.llama.batching", "DecodeLoop.submit", "submit", True),
    ("nbllm.engine.llama.batching", "DecodeLoop._admit", "admit", True),
    ("nbllm.engine.llama.resume", "SlotStates._stash", "stash", True),
    ("nbllm.engine.llama.resume", "SlotStates.stash_ahead", "ahead", True),
    ("nbllm.engine.llama.batching", "DecodeLoop.expect", "expect", True),
    ("llama_cpp", "llama_decode", "decode", True),
    ("nbllm.engine.llama.batching", "Request.post", "post", False),
    ("nbllm.server.feed", "Feed._on_wake", "wake", False),
    ("nbllm.server.connections", "ChunkWriter.__call__", "write", True),
    ("nbllm.server.connections", "SocketSink.write", "sink", True),
]


def _mark(label: str) -> None:
    EVENTS.append((time.perf_counter_ns(), label, threading.current_thread().name))


def _wrapped(f: Callable[..., Any], label: str, *, exit_too: bool) -> Callable[..., Any]:
    if inspect.iscoroutinefunction(f):

        @functools.wraps(f)
        async def probe_async(*args: Any, **kwargs: Any) -> Any:
            _mark(label + ">")
            try:
                return await f(*args, **kwargs)
            finally:
                if exit_too:
                    _mark(label + "<")

        return probe_async

    @functools.wraps(f)
    def probe(*args: Any, **kwargs: Any) -> Any:
        _mark(label + ">")
        try:
            return f(*args, **kwargs)
        finally:
            if exit_too:
                _mark(label + "<")

    return probe


def _asgi_probe(call: Callable[..., Any]) -> Callable[..., Any]:
    """Starlette's app entry (``asgi``) and the response's first body message (``send``, then ``sent``), whichever
    ``send`` it goes to (``streaming.RAW_SEND``)."""
    from nbllm.server.streaming import RAW_SEND

    @functools.wraps(call)
    async def probe(self: Any, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await call(self, scope, receive, send)
            return
        _mark("asgi")
        first = [True]

        def probed(send: Any) -> Callable[[Any], Any]:
            async def sending(message: Any) -> None:
                body = first[0] and message["type"] == "http.response.body"
                if body:
                    first[0] = False
                    _mark("send")
                await send(message)
                if body:
                    _mark("sent")

            return sending

        if RAW_SEND in scope:  # a stream's body chunks go to the server's own send, past the middlewares
            scope[RAW_SEND] = probed(scope[RAW_SEND])
        await call(self, scope, receive, probed(send))

    return probe


def install() -> Callable[[], None]:
    """Wrap every probe's function; returns what undoes it."""
    import importlib

    import starlette.applications

    undo: list[tuple[Any, str, Any]] = []
    app = starlette.applications.Starlette
    undo.append((app, "__call__", app.__call__))
    app.__call__ = _asgi_probe(app.__call__)  # type: ignore[method-assign]
    for module, path, label, exit_too in PROBES:
        owner: Any = importlib.import_module(module)
        *parents, name = path.split(".")
        for parent in parents:
            owner = getattr(owner, parent)
        original = getattr(owner, name)  # AttributeError: a probe whose function was renamed
        undo.append((owner, name, original))
        setattr(owner, name, _wrapped(original, label, exit_too=exit_too))

    def uninstall() -> None:
        for owner, name, original in reversed(undo):
            setattr(owner, name, original)

    return uninstall


def _dump() -> None:
    out = os.environ.get("BENCH_TTFT_EVENTS")
    if out:
        with open(out, "w") as f:
            json.dump(EVENTS, f)


def main() -> None:
    """Install the probes, then run the nbllm CLI with this process's arguments."""
    install()
    atexit.register(_dump)
    from nbllm.cli import main as cli

    sys.argv[0] = "nbllm"
    cli()


if __name__ == "__main__":
    main()
