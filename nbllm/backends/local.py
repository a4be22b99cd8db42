"""nbllm in this process as a backend: the service layer's own chunks, no HTTP in between.

Each request runs :func:`nbllm.service.chat` or :func:`nbllm.service.generate` on a thread of its
own (the engine's calls block), and hands every chunk to the caller's event loop as it is made;
its arrival time is taken on that thread the moment the service yields it, so TTFT and
inter-token intervals measure the engine and the service, not a transport. The final chunk's
counts and timings are the same Ollama fields a server would send, read by the same code as the
Ollama-API backend. Closing the stream early (a timeout, Ctrl-C) sets the request's cancel flag,
which stops the engine at its next token.
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time
from collections.abc import AsyncGenerator, Callable, Iterator
from typing import Any, Literal

from nbllm.backends.base import BackendError, GenRequest, StreamEvent, Token
from nbllm.backends.ollama import ollama_end
from nbllm.errors import NbllmError
from nbllm.runtime import Runtime
from nbllm.schema import ChatRequest, ChatResponse, GenerateRequest, GenerateResponse, Message

__all__ = ["LOCAL_SOURCE", "LocalBackend", "local_request"]

LOCAL_SOURCE = "nbllm in-process final stats"
"""``ServerTimings.source`` of the in-process backend: the engine's own stats of the request."""

_Chunk = ChatResponse | GenerateResponse
_END = object()


def local_request(req: GenRequest) -> ChatRequest | GenerateRequest:
    """The service's request for ``req``: the same fields the Ollama-API backend sends."""
    options = dict(req.options)
    if req.max_tokens is not None:
        options["num_predict"] = req.max_tokens
    if req.chat:
        turns = [dict(m) for m in req.messages] or [
            *([{"role": "system", "content": req.system}] if req.system is not None else []),
            {"role": "user", "content": req.prompt},
        ]
        return ChatRequest(model=req.model, messages=[Message(**m) for m in turns], options=options, stream=True)
    return GenerateRequest(model=req.model, prompt=req.prompt, system=req.system, options=options, stream=True)


def _pieces(chunk: _Chunk) -> tuple[str, str]:
    """``(thinking, content)`` of a chunk."""
    if isinstance(chunk, ChatResponse):
        return chunk.message.thinking or "", chunk.message.content
    return chunk.thinking or "", chunk.response


class LocalBackend:
    """The engine of this process (``--host local``), reached through the service layer."""

    kind: Literal["ollama", "openai", "local"] = "local"
    url = "local"

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    def __repr__(self) -> str:
        return "LocalBackend('local')"

    def _chunks(self, request: ChatRequest | GenerateRequest, cancel: threading.Event) -> Iterator[_Chunk]:
        from nbllm import service  # the use cases, imported when a request runs (never at import time)

        if isinstance(request, ChatRequest):
            return service.settled(service.chat(self.runtime, request, cancel=cancel))
        return service.settled(service.generate(self.runtime, request, cancel=cancel))

    def _produce(
        self,
        request: ChatRequest | GenerateRequest,
        cancel: threading.Event,
        put: Callable[[Any], None],
    ) -> None:
        """The worker thread: every chunk with its arrival time, then ``_END`` (or the error)."""
        chunks: Iterator[_Chunk] | None = None
        try:
            chunks = self._chunks(request, cancel)
            for chunk in chunks:
                put((chunk, time.perf_counter()))
                if cancel.is_set():
                    break
        except BaseException as exc:  # handed to the caller's loop, raised there
            put(exc)
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()
            put(_END)

    async def stream(self, req: GenRequest) -> AsyncGenerator[StreamEvent, None]:
        """Run ``req`` on the engine and yield its tokens as they are made, then the final stats."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Any] = asyncio.Queue()
        cancel = threading.Event()

        def put(item: Any) -> None:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, item)
            except RuntimeError:  # the loop closed: nobody is reading any more
                cancel.set()

        request = local_request(req)
        worker = threading.Thread(target=self._produce, args=(request, cancel, put), name="nbllm-local", daemon=True)
        worker.start()
        try:
            while (item := await queue.get()) is not _END:
                if isinstance(item, BaseException):
                    raise BackendError(item.message if isinstance(item, NbllmError) else repr(item)) from None
                chunk, arrival = item
                thinking, content = _pieces(chunk)
                if thinking or content:
                    yield Token(content, arrival, thinking)
                if chunk.done:
                    end = ollama_end(chunk.model_dump(exclude_none=True), arrival)
                    server = dataclasses.replace(end.server, source=LOCAL_SOURCE) if end.server else None
                    yield dataclasses.replace(end, server=server)
                    return
            raise BackendError("the engine's stream ended without its final stats")
        finally:
            cancel.set()

    async def count_tokens(self, model: str, text: str) -> int | None:
        """Prompt tokens of ``text`` sent raw (a one-token generation), by the model's own tokenizer."""
        from nbllm import service

        request = GenerateRequest(model=model, prompt=text, raw=True, stream=False, options={"num_predict": 1})
        try:
            done = await asyncio.to_thread(lambda: service.collect_generate(service.generate(self.runtime, request)))
        except NbllmError as exc:
            raise BackendError(exc.message) from None
        return done.prompt_eval_count

    async def aclose(self) -> None:
        """Nothing to close: the runtime belongs to whoever made it."""
