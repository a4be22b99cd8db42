"""A tiny real HTTP server that streams tokens on a fixed schedule, in Ollama's and OpenAI's formats.

The model name sets the schedule: ``t200-g50-n5`` sends the first token 200 ms after the request
arrives, then one every 50 ms, five in all (each at its deadline from the request's arrival, so
delays do not add up). ``flaky-...`` answers every second request with HTTP 500; ``cut-...``
breaks the stream with an error line after two tokens; ``timed-...`` adds llama-server's
``timings`` object to the OpenAI stream. Prompt token counts are 2 per word plus 1, so the
benchmark's calibration has an exact answer. Runs uvicorn in a daemon thread on a free port.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

# what the final Ollama chunk reports (ns): the test checks they come through untouched
SERVER_TOTAL_NS = 900_000_000
SERVER_EVAL_NS = 600_000_000
SERVER_PROMPT_NS = 250_000_000


@dataclass(frozen=True)
class Schedule:
    """First token after ``ttft`` seconds, then one every ``gap`` seconds, ``n`` in all."""

    ttft: float
    gap: float
    n: int

    @classmethod
    def parse(cls, model: str) -> Schedule:
        found = re.search(r"t(\d+)-g(\d+)-n(\d+)", model)
        if not found:
            return cls(0.01, 0.01, 3)
        return cls(int(found[1]) / 1000, int(found[2]) / 1000, int(found[3]))


def prompt_tokens(text: str) -> int:
    """The server's 'tokenizer': two tokens a word, plus one."""
    return 2 * len(text.split()) + 1


@dataclass
class ScheduleServer:
    """The app, the seen requests (headers included) and the uvicorn thread."""

    requests: list[dict[str, Any]] = field(default_factory=list)
    counter: itertools.count[int] = field(default_factory=itertools.count)
    port: int = 0
    _server: uvicorn.Server | None = None
    _thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def app(self) -> Starlette:
        routes = [
            Route("/api/generate", self._ollama, methods=["POST"]),
            Route("/api/chat", self._ollama, methods=["POST"]),
            Route("/v1/completions", self._openai, methods=["POST"]),
            Route("/v1/chat/completions", self._openai, methods=["POST"]),
        ]
        return Starlette(routes=routes)

    async def _seen(self, request: Request) -> tuple[dict[str, Any], float]:
        arrived = time.perf_counter()
        body = await request.json()
        self.requests.append({"path": request.url.path, "body": body, "headers": dict(request.headers)})
        return body, arrived

    def _failure(self, model: str) -> Response | None:
        if model.startswith("flaky") and next(self.counter) % 2 == 1:
            return JSONResponse({"error": "scheduled failure"}, status_code=500)
        if model.startswith("missing"):
            return JSONResponse({"error": f'model "{model}" not found'}, status_code=404)
        return None

    async def _tokens(self, model: str, arrived: float) -> AsyncIterator[str]:
        sched = Schedule.parse(model)
        for k in range(sched.n):
            await asyncio.sleep(max(0.0, arrived + sched.ttft + k * sched.gap - time.perf_counter()))
            if model.startswith("cut") and k == 2:
                raise RuntimeError("cut")
            yield f"tok{k} "

    async def _ollama(self, request: Request) -> Response:
        body, arrived = await self._seen(request)
        model, chat = body["model"], request.url.path.endswith("chat")
        text = body.get("prompt") or " ".join(m["content"] for m in body.get("messages", []))
        if not body.get("stream", True):
            return JSONResponse(
                {"model": model, "response": "x", "done": True, "prompt_eval_count": prompt_tokens(text)}
            )
        failure = self._failure(model)
        if failure is not None:
            return failure
        sched = Schedule.parse(model)

        def piece(content: str, **extra: Any) -> str:
            data = {"message": {"role": "assistant", "content": content}} if chat else {"response": content}
            return json.dumps({"model": model, **data, **extra}) + "\n"

        async def lines() -> AsyncIterator[str]:
            try:
                async for token in self._tokens(model, arrived):
                    yield piece(token, done=False)
            except RuntimeError:
                yield json.dumps({"error": "stream broke"}) + "\n"
                return
            final = {
                "done": True,
                "done_reason": "length",
                "total_duration": SERVER_TOTAL_NS,
                "load_duration": 1_000_000,
                "prompt_eval_count": prompt_tokens(text),
                "prompt_eval_duration": SERVER_PROMPT_NS,
                "eval_count": sched.n,
                "eval_duration": SERVER_EVAL_NS,
            }
            yield piece("", **final)

        return StreamingResponse(lines(), media_type="application/x-ndjson")

    async def _openai(self, request: Request) -> Response:
        body, arrived = await self._seen(request)
        model, chat = body["model"], request.url.path.endswith("chat/completions")
        text = body.get("prompt") or " ".join(m["content"] for m in body.get("messages", []))
        usage = {"prompt_tokens": prompt_tokens(text), "completion_tokens": Schedule.parse(model).n}
        if not body.get("stream"):
            return JSONResponse({"choices": [{"text": "x"}], "usage": {**usage, "completion_tokens": 1}})
        failure = self._failure(model)
        if failure is not None:
            return failure

        def event(choices: list[dict[str, Any]], **extra: Any) -> str:
            return f"data: {json.dumps({'model': model, 'choices': choices, **extra})}\n\n"

        def choice(content: str, finish: str | None = None) -> dict[str, Any]:
            part = {"delta": {"role": "assistant", "content": content}} if chat else {"text": content}
            return {"index": 0, **part, "finish_reason": finish}

        async def events() -> AsyncIterator[str]:
            if chat:  # a role-only first chunk, as OpenAI and vLLM send: not a token
                yield event([{"index": 0, "delta": {"role": "assistant"}, "finish_reason": None}])
            try:
                async for token in self._tokens(model, arrived):
                    yield event([choice(token)])
            except RuntimeError:
                yield f"data: {json.dumps({'error': {'message': 'stream broke'}})}\n\n"
                return
            yield event([choice("", "length")])
            extra = {"timings": {"prompt_ms": 250.0, "predicted_ms": 600.0, "predicted_n": usage["completion_tokens"]}}
            yield event([], usage=usage, **(extra if model.startswith("timed") else {}))
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    def start(self) -> ScheduleServer:
        config = uvicorn.Config(self.app(), host="127.0.0.1", port=0, log_level="warning", lifespan="off")
        server = uvicorn.Server(config)
        server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
        self._server = server
        self._thread = threading.Thread(target=server.run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("schedule server did not start")
            time.sleep(0.01)
        self.port = server.servers[0].sockets[0].getsockname()[1]
        return self

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(10)
