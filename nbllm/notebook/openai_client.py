"""``OpenAIClient``: the notebook's client interface over an OpenAI-compatible host (``openai+http://host/v1``).

``%%chat``, ``%%generate``, ``%bench`` and the side-by-side comparison stream ``ChatResponse`` /
``GenerateResponse`` chunks from a :class:`~nbllm.client.BaseClient`. This adapter sends the same
requests to ``/chat/completions`` and ``/completions`` through :class:`nbllm.backends.OpenAIBackend`
(SSE parsed by httpx-sse, every event stamped with its arrival time) and yields the same chunks: one
per streamed piece of text, then a final ``done`` chunk with the token counts of the stream's
``usage``. Such servers report no timings, so the final chunk's ``eval_duration`` (first token to
last) and ``total_duration`` (request sent to the stream's end) are measured from arrival times in
this kernel, and it says so (``measured="client arrival"``, a column of ``%timings``); llama-server's
``timings`` object is used instead when the server sends one. Streamed tool calls (``--tools``) are
joined and handed over in the final chunk. Model management (``%pull``, ``%ps``, ``%show``, ``%rm``,
``%stop``, ...) has no OpenAI equivalent and fails with one line.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncGenerator, Iterator, Mapping
from typing import Any, NoReturn

from nbllm.backends import DEFAULT_API_KEY_ENV, BackendError, GenRequest, StreamEnd, Token, open_backend
from nbllm.backends.url import parse_backend_url
from nbllm.client import BaseClient
from nbllm.config import Settings
from nbllm.errors import InvalidRequest, NbllmError
from nbllm.schema import (
    ChatRequest,
    ChatResponse,
    CreateRequest,
    GenerateRequest,
    GenerateResponse,
    ListResponse,
    Message,
    ProcessResponse,
    ProgressResponse,
    PullRequest,
    PushRequest,
    ShowResponse,
    ToolCall,
    ToolCallFunction,
    VersionResponse,
)
from nbllm.schema.common import now_timestamp

__all__ = ["CLIENT_ARRIVAL", "OpenAIChatResponse", "OpenAIClient", "OpenAIGenerateResponse", "is_openai_host"]

CLIENT_ARRIVAL = "client arrival"
"""``measured`` of figures taken from the arrival times of the stream's events in this kernel."""

_OPTION_NAMES = {"num_predict": "max_tokens", "repeat_penalty": "repetition_penalty"}
"""Ollama option names that OpenAI-compatible servers spell differently; the others are sent as they are."""


class OpenAIChatResponse(ChatResponse):
    """A chat chunk from an OpenAI-compatible host; the final one says where its durations were measured."""

    measured: str = CLIENT_ARRIVAL
    """``"client arrival"`` (this kernel's arrival times) or ``"server"`` (llama-server's ``timings``)."""


class OpenAIGenerateResponse(GenerateResponse):
    """A completion chunk from an OpenAI-compatible host (see :class:`OpenAIChatResponse`)."""

    measured: str = CLIENT_ARRIVAL
    """``"client arrival"`` or ``"server"``."""


def is_openai_host(host: str) -> bool:
    """Whether ``host`` names an OpenAI-compatible server (``openai+URL``).

    >>> is_openai_host("openai+http://127.0.0.1:8000/v1"), is_openai_host("http://127.0.0.1:11434")
    (True, False)
    """
    return host.strip().startswith("openai+")


def _message(m: Message) -> dict[str, Any]:
    """An Ollama chat message in OpenAI's format (tool calls' arguments as a JSON string)."""
    out: dict[str, Any] = {"role": m.role, "content": m.content}
    if m.tool_calls:
        out["tool_calls"] = [
            {
                "id": c.id or f"call_{i}",
                "type": "function",
                "function": {"name": c.function.name, "arguments": json.dumps(c.function.arguments)},
            }
            for i, c in enumerate(m.tool_calls)
        ]
    if m.role == "tool" and m.tool_call_id:
        out["tool_call_id"] = m.tool_call_id
    return out


def _extras(options: Mapping[str, Any] | None, fmt: Any) -> tuple[int | None, dict[str, Any]]:
    """``max_tokens`` and the other body fields from Ollama's ``options`` and ``format``."""
    body = {_OPTION_NAMES.get(k, k): v for k, v in (options or {}).items()}
    max_tokens = body.pop("max_tokens", None)
    if fmt == "json":
        body["response_format"] = {"type": "json_object"}
    elif isinstance(fmt, dict):
        body["response_format"] = {"type": "json_schema", "json_schema": {"name": "answer", "schema": fmt}}
    return (int(max_tokens) if isinstance(max_tokens, (int, float)) and max_tokens >= 0 else None), body


def _reasoning(think: bool | str | None) -> dict[str, Any]:  # noqa: FBT001 - a request's value, not a flag
    """``--think`` as OpenAI's ``reasoning_effort`` (nbllm and Ollama map it back to ``think``; none when unset).

    >>> _reasoning(True), _reasoning(False), _reasoning("max"), _reasoning(None)
    ({'reasoning_effort': 'medium'}, {'reasoning_effort': 'none'}, {'reasoning_effort': 'xhigh'}, {})
    """
    if think is None:
        return {}
    effort = {True: "medium", False: "none", "max": "xhigh"}.get(think, think)
    return {"reasoning_effort": effort}


def _tool_call(call: Mapping[str, Any]) -> ToolCall:
    """A streamed OpenAI tool call (arguments as JSON text) as the notebook's :class:`ToolCall`."""
    try:
        arguments = json.loads(call["arguments"] or "{}")
    except ValueError:
        raise BackendError(
            f"tool call {call['name']!r}: its arguments are not JSON: {call['arguments'][:200]}"
        ) from None
    if not isinstance(arguments, dict):
        raise BackendError(f"tool call {call['name']!r}: its arguments are not a JSON object")
    return ToolCall(id=call["id"] or None, function=ToolCallFunction(name=call["name"], arguments=arguments))


class OpenAIClient(BaseClient):
    """Chat and completions on an OpenAI-compatible host; its key is read from ``api_key_env`` per request."""

    def __init__(self, host: str, *, settings: Settings | None = None, api_key_env: str | None = None) -> None:
        try:
            self.base = parse_backend_url(host).base
        except BackendError as exc:
            raise NbllmError(exc.message) from None
        self.host = host.strip()
        self._settings = settings
        self.api_key_env = api_key_env or DEFAULT_API_KEY_ENV

    def __repr__(self) -> str:
        return f"OpenAIClient({self.host!r})"

    def close(self) -> None:
        """Nothing to close: each stream opens and closes its own connection pool."""

    def _unsupported(self, what: str) -> NoReturn:
        raise InvalidRequest(
            f"{what} is not available on an OpenAI-compatible host ({self.host}): "
            "it only answers chat and completions; use an Ollama-API host (nbllm or Ollama) for it"
        )

    # -- the streaming calls --------------------------------------------------------------------

    def _events(self, req: GenRequest) -> Iterator[Token | StreamEnd]:
        """The backend's events, driven from this (worker) thread by an event loop of its own."""
        loop = asyncio.new_event_loop()
        backend = open_backend(f"openai+{self.base}", settings=self._settings, api_key_env=self.api_key_env)
        events: AsyncGenerator[Token | StreamEnd, None] = backend.stream(req)
        try:
            while True:
                try:
                    yield loop.run_until_complete(anext(events))
                except StopAsyncIteration:
                    return
                except (NbllmError, GeneratorExit, KeyboardInterrupt):
                    raise
                except Exception as exc:  # the transport's errors (httpx is not imported here)
                    raise BackendError(f"no answer from {self.base}: {type(exc).__name__}: {exc}") from None
        finally:
            loop.run_until_complete(events.aclose())
            loop.run_until_complete(backend.aclose())
            loop.run_until_complete(
                loop.shutdown_asyncgens()
            )  # the transport's inner streams, left open on an early close
            loop.close()

    @staticmethod
    def _final(end: StreamEnd, first: float | None, last: float | None, sent: float) -> dict[str, Any]:
        """The final chunk's counts (from ``usage``) and durations (server's if sent, else from arrival times)."""
        fields: dict[str, Any] = {
            "done": True,
            "done_reason": end.done_reason,
            "prompt_eval_count": end.input_tokens,
            "eval_count": end.output_tokens,
            "total_duration": round((end.arrival - sent) * 1e9),
            "measured": CLIENT_ARRIVAL,
        }
        if end.server is not None and end.server.decode_s is not None:
            fields["eval_duration"] = round(end.server.decode_s * 1e9)
            if end.server.prompt_eval_s is not None:
                fields["prompt_eval_duration"] = round(end.server.prompt_eval_s * 1e9)
            fields["measured"] = "server"
        elif first is not None and last is not None and last > first:
            fields["eval_duration"] = round((last - first) * 1e9)
        return fields

    def _stream(self, req: GenRequest) -> Iterator[tuple[str, str | None, dict[str, Any] | None]]:
        """``(text, thinking, None)`` per piece, then ``("", None, final fields)`` (with ``tool_calls`` when the
        answer made some); ``thinking`` is the piece's reasoning (``delta.reasoning``/``reasoning_content``)."""
        sent = time.perf_counter()
        first: float | None = None
        last: float | None = None
        for event in self._events(req):
            if isinstance(event, Token):
                first = event.arrival if first is None else first
                last = event.arrival
                yield event.text, event.thinking or None, None
            else:
                final = self._final(event, first, last, sent)
                if event.tool_calls:
                    final["tool_calls"] = [_tool_call(c) for c in event.tool_calls]
                yield "", None, final
                return
        raise BackendError("the stream ended without its usage")  # pragma: no cover - the backend raises first

    def _chat(self, req: ChatRequest) -> Iterator[ChatResponse]:
        max_tokens, extras = _extras(req.options, req.format)
        if req.tools:
            extras["tools"] = [t.model_dump(exclude_none=True) for t in req.tools]
        if req.tool_choice is not None:
            extras["tool_choice"] = req.tool_choice
        extras.update(_reasoning(req.think))
        gen = GenRequest(
            model=req.model,
            prompt="",
            chat=True,
            max_tokens=max_tokens,
            options=extras,
            messages=tuple(_message(m) for m in req.messages or ()),
        )
        for text, thinking, final in self._stream(gen):
            calls = final.pop("tool_calls", None) if final else None
            message = Message(role="assistant", content=text, thinking=thinking, tool_calls=calls)
            yield OpenAIChatResponse(
                model=req.model, created_at=now_timestamp(), message=message, **(final or {"done": False})
            )

    def _generate(self, req: GenerateRequest) -> Iterator[GenerateResponse]:
        if not req.prompt:
            self._unsupported("loading or unloading a model (%stop, an empty prompt)")
        max_tokens, extras = _extras(req.options, req.format)
        extras.update(_reasoning(req.think))
        gen = GenRequest(model=req.model, prompt=req.prompt, system=req.system, max_tokens=max_tokens, options=extras)
        for text, thinking, final in self._stream(gen):
            fields = final or {"done": False}
            yield OpenAIGenerateResponse(
                model=req.model, created_at=now_timestamp(), response=text, thinking=thinking, **fields
            )

    # -- what an OpenAI-compatible host cannot do -----------------------------------------------

    def heartbeat(self) -> bool:
        """Assumed to answer: the first request reports an unreachable host in one line."""
        return True

    def version(self) -> VersionResponse:
        """Not available (no version endpoint in the OpenAI API)."""
        self._unsupported("the server version")

    def _pull(self, req: PullRequest) -> Iterator[ProgressResponse]:
        self._unsupported("%pull")

    def _push(self, req: PushRequest) -> Iterator[ProgressResponse]:
        self._unsupported("push")

    def create(self, req: CreateRequest) -> Iterator[ProgressResponse]:
        """Not available."""
        self._unsupported("create")

    def list_models(self) -> ListResponse:
        """Not available (``/models`` lists names only, not Ollama's details)."""
        self._unsupported("%list")

    def show(self, model: str, *, verbose: bool = False, system: str | None = None) -> ShowResponse:
        """Not available."""
        self._unsupported("%show")

    def ps(self) -> ProcessResponse:
        """Not available."""
        self._unsupported("%ps")

    def copy(self, source: str, destination: str) -> None:
        """Not available."""
        self._unsupported("copy")

    def delete(self, model: str) -> None:
        """Not available."""
        self._unsupported("%rm")

    def has_blob(self, digest: str) -> bool:
        """Not available."""
        self._unsupported("blobs")

    def _put_blob(self, chunks: Iterator[bytes], digest: str, size: int) -> None:
        self._unsupported("blobs")
