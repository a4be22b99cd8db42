"""An OpenAI-compatible host: ``/chat/completions`` and ``/completions`` under a base URL, SSE streams.

Requests ask for ``stream_options.include_usage`` so the last event carries the token counts. Such
servers report no timings in the OpenAI format; llama-server adds a ``timings`` object, which is
read when present. The SSE framing is parsed by httpx-sse (a small, maintained library) rather
than by hand.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncGenerator
from typing import Any, Literal

from httpx_sse import aconnect_sse

from nbllm.backends.base import BackendError, GenRequest, ServerTimings, StreamEnd, StreamEvent, Token
from nbllm.backends.http import HttpBackend

__all__ = ["OpenAIBackend", "llama_server_timings", "openai_body"]


def openai_body(req: GenRequest) -> tuple[str, dict[str, Any]]:
    """The path (under the base URL) and JSON body of a streamed completion or chat completion."""
    body: dict[str, Any] = {
        "model": req.model,
        "stream": True,
        "stream_options": {"include_usage": True},
        **dict(req.options),
    }
    if req.max_tokens is not None:
        body["max_tokens"] = req.max_tokens
    if req.chat:
        messages = [{"role": "system", "content": req.system}] if req.system is not None else []
        body["messages"] = [dict(m) for m in req.messages] or [*messages, {"role": "user", "content": req.prompt}]
        return "/chat/completions", body
    body["prompt"] = req.prompt if req.system is None else f"{req.system}\n\n{req.prompt}"
    return "/completions", body


def llama_server_timings(timings: dict[str, Any]) -> ServerTimings:
    """llama-server's ``timings`` object (milliseconds) as :class:`ServerTimings`."""

    def seconds(key: str) -> float | None:
        value = timings.get(key)
        return value / 1000 if isinstance(value, (int, float)) else None

    return ServerTimings(
        source="llama-server timings",
        ttft_s=seconds("prompt_ms"),
        prompt_eval_s=seconds("prompt_ms"),
        decode_s=seconds("predicted_ms"),
        decode_tokens=timings.get("predicted_n"),
    )


def _add_tool_calls(calls: dict[int, dict[str, str]], choice: dict[str, Any]) -> None:
    """Join the pieces of streamed tool calls (``delta.tool_calls``: id and name once, arguments in fragments)."""
    for piece in (choice.get("delta") or {}).get("tool_calls") or ():
        call = calls.setdefault(int(piece.get("index") or 0), {"id": "", "name": "", "arguments": ""})
        function = piece.get("function") or {}
        call["id"] = piece.get("id") or call["id"]
        call["name"] = function.get("name") or call["name"]
        call["arguments"] += function.get("arguments") or ""


def _choice_pieces(choice: dict[str, Any]) -> tuple[str, str]:
    """``(reasoning, text)`` of a streamed choice: Ollama and nbllm send ``delta.reasoning``, vLLM and
    llama-server ``delta.reasoning_content``."""
    if "text" in choice:  # /completions
        return str(choice.get("reasoning") or choice.get("reasoning_content") or ""), str(choice.get("text") or "")
    delta = choice.get("delta") or {}
    reasoning = delta.get("reasoning_content") or delta.get("reasoning") or ""
    return str(reasoning), str(delta.get("content") or "")


class OpenAIBackend(HttpBackend):
    """An OpenAI-compatible server (vLLM, llama-server, LiteLLM, nbllm's /v1, ...)."""

    kind: Literal["ollama", "openai", "local"] = "openai"

    async def stream(self, req: GenRequest) -> AsyncGenerator[StreamEvent, None]:
        """Stream one request's SSE events as tokens, then the usage (and llama-server timings, if sent)."""
        path, body = openai_body(req)
        usage: dict[str, Any] = {}
        timings: dict[str, Any] | None = None
        finish: str | None = None
        calls: dict[int, dict[str, str]] = {}
        arrival = time.perf_counter()
        async with aconnect_sse(self._http, "POST", path, json=body) as source:
            await self._raise_for_status(source.response)
            async for event in source.aiter_sse():
                arrival = time.perf_counter()
                if event.data.strip() == "[DONE]":
                    break
                if not event.data.strip():
                    continue
                data = json.loads(event.data)
                if "error" in data:
                    err = data["error"]
                    raise BackendError(f"error in stream: {err.get('message', err) if isinstance(err, dict) else err}")
                for choice in data.get("choices") or ():
                    reasoning, text = _choice_pieces(choice)
                    if reasoning or text:
                        yield Token(text, arrival, reasoning)
                    _add_tool_calls(calls, choice)
                    finish = choice.get("finish_reason") or finish
                usage = data.get("usage") or usage
                timings = data.get("timings") or timings
            else:
                if not usage and finish is None:
                    raise BackendError("the stream ended without [DONE] or a final chunk")
        details = usage.get("prompt_tokens_details") or {}
        yield StreamEnd(
            arrival=arrival,
            input_tokens=usage.get("prompt_tokens"),
            output_tokens=usage.get("completion_tokens"),
            cached_tokens=details.get("cached_tokens") if isinstance(details, dict) else None,
            done_reason=finish,
            server=llama_server_timings(timings) if timings else None,
            tool_calls=tuple(calls[i] for i in sorted(calls)),
        )

    async def count_tokens(self, model: str, text: str) -> int | None:
        """``usage.prompt_tokens`` of a one-token completion of ``text``."""
        data = await self._post_json("/completions", {"model": model, "prompt": text, "max_tokens": 1})
        usage = data.get("usage") or {}
        count = usage.get("prompt_tokens") if isinstance(usage, dict) else None
        return int(count) if isinstance(count, int) else None
