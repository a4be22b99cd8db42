"""Streaming clients that time one request the way a user sees it: first token, token rate, total."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass

import httpx

from bench.servers import Server


@dataclass(frozen=True)
class Timing:
    """One streamed request, measured at the client."""

    ttft: float
    """Seconds from sending the request to the first generated token."""
    tokens: int
    """Tokens received."""
    decode_s: float
    """Seconds from the first token to the last."""
    total: float
    """Seconds from sending the request to the end of the stream."""
    server: dict[str, float]
    """What the server reported about itself (prompt/eval counts and durations), if anything."""
    stamps: tuple[float, ...] = ()
    """``time.perf_counter()`` at the arrival of each token."""

    @property
    def rate(self) -> float:
        """Decode tokens/s after the first token."""
        return (self.tokens - 1) / self.decode_s if self.tokens > 1 and self.decode_s > 0 else 0.0


def _body(server: Server, prompt: str, n: int, ctx: int) -> tuple[str, dict[str, object]]:
    if server.kind == "ollama":
        options = {"temperature": 0, "num_predict": n, "num_ctx": ctx, "seed": 0}
        return "/api/generate", {
            "model": server.model,
            "prompt": prompt,
            "raw": True,
            "stream": True,
            "options": options,
        }
    if server.kind == "openai":
        return "/v1/completions", {"model": "m", "prompt": prompt, "max_tokens": n, "temperature": 0, "stream": True}
    return "/completion", {"prompt": prompt, "n_predict": n, "temperature": 0, "stream": True, "cache_prompt": True}


def _tokens_in(server: Server, line: str) -> tuple[int, dict[str, float] | None]:
    """Tokens carried by one stream line, and the server's stats if this is the last line."""
    if server.kind == "ollama":
        data = json.loads(line)
        if data.get("done"):
            keys = ("prompt_eval_count", "prompt_eval_duration", "eval_count", "eval_duration", "load_duration")
            stats = {k: float(data.get(k, 0)) for k in keys}
            # tokens evaluated (llama-server's prompt_n): the whole prompt less what came from the cache
            stats["prompt_eval_count"] -= float(data.get("prompt_cached_count", 0))
            return 0, stats
        return 1, None
    if not line.startswith("data: ") or line == "data: [DONE]":
        return 0, None
    data = json.loads(line[6:])
    if server.kind == "openai":
        return (1 if data.get("choices") and data["choices"][0].get("text") is not None else 0), None
    if data.get("stop"):
        t = data.get("timings", {})
        return (1 if data.get("content") else 0), {
            "prompt_eval_count": t.get("prompt_n", 0),
            "prompt_eval_duration": t.get("prompt_ms", 0) * 1e6,
            "eval_count": t.get("predicted_n", 0),
            "eval_duration": t.get("predicted_ms", 0) * 1e6,
        }
    return 1, None


def stream(server: Server, prompt: str, n: int, *, ctx: int, http: httpx.Client | None = None) -> Timing:
    """Send one streaming completion and time it."""
    path, body = _body(server, prompt, n, ctx)
    own = http is None
    client = http or httpx.Client(timeout=600)
    start = time.perf_counter()
    first = last = 0.0
    count = 0
    stamps: list[float] = []
    stats: dict[str, float] = {}
    try:
        with client.stream("POST", server.url + path, json=body) as resp:
            resp.raise_for_status()
            for line in resp.iter_lines():
                if not line.strip():
                    continue
                got, final = _tokens_in(server, line)
                if got:
                    now = time.perf_counter()
                    first = first or now
                    last = now
                    count += got
                    stamps += [now] * got
                if final is not None:
                    stats = final
    finally:
        if own:
            client.close()
    end = time.perf_counter()
    return Timing(
        ttft=(first or end) - start,
        tokens=count,
        decode_s=last - first,
        total=end - start,
        server=stats,
        stamps=tuple(stamps),
    )


def decode_only(timings: list[Timing]) -> float:
    """Aggregate tokens/s once every stream has its first token, as llama-batched-bench's S_TG counts.

    The tokens that arrive after the last stream's first token, over the time from then to the last token:
    prompt evaluation is left out, so this is the like-for-like peer of S_TG (and of bench/engine.py).
    """
    firsts = [t.stamps[0] for t in timings if t.stamps]
    if not firsts:
        return 0.0
    start, end = max(firsts), max(t.stamps[-1] for t in timings if t.stamps)
    after = sum(1 for t in timings for s in t.stamps if s > start)
    return after / (end - start) if end > start else 0.0


def concurrent(server: Server, prompts: list[str], n: int, *, ctx: int) -> tuple[float, list[Timing]]:
    """Run the prompts at once, one client each; (wall seconds, timings)."""
    results: list[Timing | None] = [None] * len(prompts)
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            results[i] = stream(server, prompts[i], n, ctx=ctx)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(prompts))]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    if errors:
        raise RuntimeError(f"{len(errors)} request(s) failed: {errors[0]}")
    return wall, [r for r in results if r is not None]
