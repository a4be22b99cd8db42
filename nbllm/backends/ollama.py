"""An Ollama-API host (nbllm or Ollama): ``/api/generate`` and ``/api/chat``, NDJSON streams.

The final chunk (``done: true``) carries the server's own counts and nanosecond timings. With
nbllm's (and llama-server's) meaning, ``eval_duration`` runs from the first generated token to the
last and ``total_duration - eval_duration`` is the server's time to first token.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncGenerator
from typing import Any, Literal

from nbllm.backends.base import BackendError, GenRequest, ServerTimings, StreamEnd, StreamEvent, Token
from nbllm.backends.http import HttpBackend

__all__ = ["OllamaBackend", "ollama_body", "ollama_end"]

_NS = 1e-9


def ollama_body(req: GenRequest) -> tuple[str, dict[str, Any]]:
    """The path and JSON body of a streamed ``/api/chat`` or ``/api/generate`` request."""
    options = dict(req.options)
    if req.max_tokens is not None:
        options["num_predict"] = req.max_tokens
    body: dict[str, Any] = {"model": req.model, "stream": True, "options": options}
    if req.chat:
        messages = [{"role": "system", "content": req.system}] if req.system is not None else []
        body["messages"] = [dict(m) for m in req.messages] or [*messages, {"role": "user", "content": req.prompt}]
        return "/api/chat", body
    body["prompt"] = req.prompt
    if req.system is not None:
        body["system"] = req.system
    return "/api/generate", body


def _seconds(data: dict[str, Any], key: str) -> float | None:
    value = data.get(key)
    return value * _NS if isinstance(value, (int, float)) else None


def ollama_end(data: dict[str, Any], arrival: float) -> StreamEnd:
    """The :class:`StreamEnd` of a final (``done: true``) chunk."""
    total, decode = _seconds(data, "total_duration"), _seconds(data, "eval_duration")
    server = ServerTimings(
        source="ollama final chunk",
        ttft_s=total - decode if total is not None and decode is not None else None,
        prompt_eval_s=_seconds(data, "prompt_eval_duration"),
        decode_s=decode,
        decode_tokens=data.get("eval_count"),
        load_s=_seconds(data, "load_duration"),
    )
    has_timings = any(v is not None for v in (total, decode, server.prompt_eval_s))
    return StreamEnd(
        arrival=arrival,
        input_tokens=data.get("prompt_eval_count"),
        output_tokens=data.get("eval_count"),
        cached_tokens=data.get("prompt_cached_count"),
        done_reason=data.get("done_reason"),
        server=server if has_timings else None,
    )


def _pieces(data: dict[str, Any]) -> tuple[str, str]:
    """``(thinking, text)`` of a chunk (thinking tokens are output tokens too)."""
    message = data.get("message")
    if isinstance(message, dict):  # /api/chat
        return str(message.get("thinking") or ""), str(message.get("content") or "")
    return str(data.get("thinking") or ""), str(data.get("response") or "")


class OllamaBackend(HttpBackend):
    """An Ollama-API server (nbllm or Ollama)."""

    kind: Literal["ollama", "openai", "local"] = "ollama"

    async def stream(self, req: GenRequest) -> AsyncGenerator[StreamEvent, None]:
        """Stream one request's NDJSON lines as tokens, then the final chunk's counts and timings."""
        path, body = ollama_body(req)
        async with self._http.stream("POST", path, json=body) as response:
            await self._raise_for_status(response)
            async for line in response.aiter_lines():
                arrival = time.perf_counter()
                if not line.strip():
                    continue
                data = json.loads(line)
                if not isinstance(data, dict):
                    raise BackendError(f"unexpected stream line: {line[:200]}")
                if "error" in data:
                    raise BackendError(f"error in stream: {data['error']}")
                thinking, text = _pieces(data)
                if thinking or text:
                    yield Token(text, arrival, thinking)
                if data.get("done"):
                    yield ollama_end(data, arrival)
                    return
        raise BackendError("the stream ended without a final (done) chunk")

    async def count_tokens(self, model: str, text: str) -> int | None:
        """``prompt_eval_count`` of a raw one-token generation of ``text`` (the model's own tokenizer)."""
        body = {"model": model, "prompt": text, "raw": True, "stream": False, "options": {"num_predict": 1}}
        data = await self._post_json("/api/generate", body)
        count = data.get("prompt_eval_count")
        return int(count) if isinstance(count, int) else None
