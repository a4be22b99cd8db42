"""Use cases: generate and chat, streamed as Ollama's response chunks with its timing stats."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import replace
from typing import Any, TypeVar

from nbllm.engine import Engine, FinalStats, Pending, SamplingParams, TokenChunk
from nbllm.errors import ContextLengthExceeded, InvalidRequest, TemplateError, UnsupportedCapability
from nbllm.options import Options
from nbllm.runtime import GenerationRecord, Runtime
from nbllm.schema import (
    ChatRequest,
    ChatResponse,
    GenerateRequest,
    GenerateResponse,
    Message,
    TokenLogprob,
    now_timestamp,
)
from nbllm.schema.generate import Logprob
from nbllm.service.common import keep_alive_of, load_spec, model_options, resolve_model
from nbllm.service.constraints import Constraints, chat_constraints, format_only, to_tool_calls
from nbllm.service.prompts import ModelTemplate, capabilities, model_template
from nbllm.store import LocalModel
from nbllm.store.gguf import GGUFInfo

T = TypeVar("T")

__all__ = ["chat", "collect_chat", "collect_generate", "generate", "settled"]


def _check_common(
    model: LocalModel, info: GGUFInfo, name: str, *, think: bool | str | None, top_logprobs: int | None
) -> list[str]:
    if top_logprobs is not None and not 0 <= top_logprobs <= 20:
        raise InvalidRequest("top_logprobs must be between 0 and 20")
    caps = capabilities(model, info)
    if "completion" not in caps:
        raise InvalidRequest(f'"{name}" does not support generate')
    if think and "thinking" not in caps:
        raise UnsupportedCapability(f'"{name}" does not support thinking')
    return caps


def generate(
    rt: Runtime, req: GenerateRequest, *, cancel: threading.Event | None = None
) -> Iterator[GenerateResponse | Pending]:
    """``/api/generate``: yields text chunks, then a final chunk with ``done: true`` and the stats
    (and, inside an ``engine.NoWait`` block, PENDING where it would wait for the engine)."""
    started = time.perf_counter_ns()
    model = resolve_model(rt, req.model)
    if req.raw and (req.template or req.system or req.context):
        raise InvalidRequest("raw mode does not support template, system, or context")
    keep_alive = keep_alive_of(req.keep_alive)
    info = rt.store.gguf(model)
    caps = _check_common(model, info, req.model, think=req.think, top_logprobs=req.top_logprobs)
    if req.suffix and "insert" not in caps:
        raise UnsupportedCapability(f"{model.name.full} does not support insert")
    if req.images and "vision" not in caps:
        raise UnsupportedCapability(f"{model.name.full} does not support vision")
    template = model_template(model, info, req.template)
    constraints = format_only(req.format)
    options = model_options(model, req.options)
    spec = load_spec(rt, model, info, options)
    if req.debug_render_only:
        text = req.prompt if req.raw else _generate_text(template, model, req)
        yield _rendered(GenerateResponse, req.model, text, len(req.images or []))
        return
    if not req.prompt and not req.images and not req.suffix:
        yield _load_or_unload(rt, req.model, model, spec, keep_alive, GenerateResponse, cancel)
        return
    with rt.scheduler.acquire(model.name.display, model, spec, keep_alive, cancel=cancel) as runner:
        load_ns = time.perf_counter_ns() - started
        engine = runner.engine
        if req.raw:
            tokens = engine.tokenize(req.prompt)
        else:
            prefix = engine.detokenize(req.context) if req.context else ""
            tokens = _tokens(engine, prefix + _generate_text(template, model, req))
        tokens = _fit(tokens, engine, truncate=req.truncate)
        params = _sampling(
            options,
            engine,
            logprobs=req.logprobs,
            top_logprobs=req.top_logprobs,
            shift=req.shift,
            constraints=constraints,
        )
        for event in engine.generate(tokens, params, cancel=cancel):
            if isinstance(event, Pending):
                yield event
            elif isinstance(event, TokenChunk):
                yield GenerateResponse(
                    model=req.model,
                    created_at=now_timestamp(),
                    response=event.text,
                    logprobs=_logprobs(event) if req.logprobs else None,
                )
            else:
                _observe(rt, model, event, started)
                yield GenerateResponse(
                    model=req.model,
                    created_at=now_timestamp(),
                    response=event.text,
                    done=True,
                    done_reason=event.done_reason,
                    context=None if req.raw else list(event.tokens),
                    **_metrics(event, started, load_ns),
                )


def chat(rt: Runtime, req: ChatRequest, *, cancel: threading.Event | None = None) -> Iterator[ChatResponse | Pending]:
    """``/api/chat``: yields message deltas, then a final chunk with ``done: true`` and the stats
    (and, inside an ``engine.NoWait`` block, PENDING where it would wait for the engine)."""
    started = time.perf_counter_ns()
    model = resolve_model(rt, req.model)
    keep_alive = keep_alive_of(req.keep_alive)
    info = rt.store.gguf(model)
    caps = _check_common(model, info, req.model, think=req.think, top_logprobs=req.top_logprobs)
    if req.tools and "tools" not in caps:
        raise UnsupportedCapability(f"{model.name.full} does not support tools")
    if any(m.images for m in req.messages or []) and "vision" not in caps:
        raise UnsupportedCapability(f"{model.name.full} does not support vision")
    options = model_options(model, req.options)
    spec = load_spec(rt, model, info, options)
    if not req.messages:
        yield _load_or_unload(rt, req.model, model, spec, keep_alive, ChatResponse, cancel)
        return
    template = model_template(model, info)
    messages = _conversation(model, req.messages)
    tools = [t.model_dump(exclude_none=True) for t in req.tools] if req.tools else None
    constraints = chat_constraints(template, tools, req.tool_choice, req.format)
    shown_tools = tools if req.tool_choice != "none" else None
    if req.debug_render_only:
        images = sum(len(m.images or []) for m in req.messages)
        yield _rendered(ChatResponse, req.model, template.chat(messages, shown_tools), images)
        return
    with rt.scheduler.acquire(model.name.display, model, spec, keep_alive, cancel=cancel) as runner:
        load_ns = time.perf_counter_ns() - started
        engine = runner.engine
        tokens = _chat_tokens(engine, template, messages, shown_tools, truncate=req.truncate)
        params = _sampling(
            options,
            engine,
            logprobs=req.logprobs,
            top_logprobs=req.top_logprobs,
            shift=req.shift,
            constraints=constraints,
        )
        parser = constraints.parser()
        n_calls = 0
        for event in engine.generate(tokens, params, cancel=cancel):
            if isinstance(event, Pending):
                yield event
                continue
            content, calls = parser.feed(event.text) if parser else (event.text, [])
            if isinstance(event, FinalStats) and parser is not None:
                content += parser.finish()
            tool_calls = to_tool_calls(calls, n_calls) or None
            n_calls += len(calls)
            message = Message(role="assistant", content=content, tool_calls=tool_calls)
            if isinstance(event, TokenChunk):
                yield ChatResponse(
                    model=req.model,
                    created_at=now_timestamp(),
                    message=message,
                    logprobs=_logprobs(event) if req.logprobs else None,
                )
            else:
                _observe(rt, model, event, started)
                yield ChatResponse(
                    model=req.model,
                    created_at=now_timestamp(),
                    message=message,
                    done=True,
                    done_reason=event.done_reason,
                    **_metrics(event, started, load_ns),
                )


def _generate_text(template: ModelTemplate, model: LocalModel, req: GenerateRequest) -> str:
    """The templated prompt of a generate request (the model's MESSAGEs unless ``context`` continues)."""
    try:
        return template.generate(
            req.prompt,
            system=req.system if req.system is not None else model.system,
            suffix=req.suffix,
            messages=[] if req.context else list(model.messages),
        )
    except TemplateError as exc:
        if req.template:  # the request's own template failed: a 400, not the server's error
            raise InvalidRequest(f"invalid template: {exc.message}") from None
        raise


def _rendered(cls: Any, name: str, text: str, images: int) -> Any:
    """The answer to ``_debug_render_only``: the exact prompt, nothing generated."""
    extra: dict[str, Any] = {"message": Message(role="assistant", content="")} if cls is ChatResponse else {}
    info = {"rendered_template": text, "image_count": images}
    return cls(model=name, created_at=now_timestamp(), done=True, debug_info=info, **extra)


def _load_or_unload(
    rt: Runtime,
    name: str,
    model: LocalModel,
    spec: Any,
    keep_alive: float | None,
    cls: Any,
    cancel: threading.Event | None,
) -> Any:
    """An empty request loads the model (``done_reason: load``), or unloads it with keep_alive 0."""
    extra: dict[str, Any] = {"message": Message(role="assistant", content="")} if cls is ChatResponse else {}
    if keep_alive == 0:
        rt.scheduler.expire(model)
        return cls(model=name, created_at=now_timestamp(), done=True, done_reason="unload", **extra)
    with rt.scheduler.acquire(model.name.display, model, spec, keep_alive, cancel=cancel):
        pass
    return cls(model=name, created_at=now_timestamp(), done=True, done_reason="load", **extra)


def _conversation(model: LocalModel, messages: Sequence[Message]) -> list[dict[str, Any]]:
    """The model's MESSAGEs and SYSTEM (unless the request brings its own system message) + the request."""
    out: list[dict[str, Any]] = []
    if model.system and not (messages and messages[0].role == "system"):
        out.append({"role": "system", "content": model.system})
    out.extend(dict(m) for m in model.messages)
    out.extend(m.model_dump(exclude_none=True) for m in messages)
    return out


def _tokens(engine: Engine, text: str) -> list[int]:
    """Tokenize a rendered prompt; don't add a BOS token the template already wrote."""
    bos = engine.info.bos_text
    return engine.tokenize(text, add_special=not (bos and text.startswith(bos)), parse_special=True)


def _fit(tokens: list[int], engine: Engine, *, truncate: bool | None) -> list[int]:
    n_ctx = engine.info.n_ctx
    if len(tokens) < n_ctx:
        return tokens
    if truncate is False:
        raise ContextLengthExceeded(len(tokens), n_ctx)
    keep = n_ctx // 2  # keep the start (instructions) and the most recent half, as llama-server does
    return tokens[:4] + tokens[len(tokens) - (keep - 4) :]


def _chat_tokens(
    engine: Engine,
    template: ModelTemplate,
    messages: list[dict[str, Any]],
    tools: list[dict[str, Any]] | None,
    *,
    truncate: bool | None,
) -> list[int]:
    """Render and tokenize; if too long, drop the oldest turns (never system messages or the last one)."""
    n_ctx = engine.info.n_ctx
    current = list(messages)
    while True:
        tokens = _tokens(engine, template.chat(current, tools))
        if len(tokens) < n_ctx:
            return tokens
        if truncate is False:
            raise ContextLengthExceeded(len(tokens), n_ctx)
        droppable = [i for i, m in enumerate(current[:-1]) if m.get("role") != "system"]
        if not droppable:
            return _fit(tokens, engine, truncate=truncate)
        del current[droppable[0]]


def _sampling(
    options: Options,
    engine: Engine,
    *,
    logprobs: bool | None,
    top_logprobs: int | None,
    shift: bool | None,
    constraints: Constraints,
) -> SamplingParams:
    """Runtime options in the engine's terms. An unlimited num_predict is capped at 10 x num_ctx, as
    Ollama does, so a model stuck repeating itself under context shifting still ends."""
    params = SamplingParams.from_options(
        options,
        logprobs=bool(logprobs),
        top_logprobs=top_logprobs or 0,
        shift=shift is not False,
        grammar=constraints.grammar,
        grammar_triggers=constraints.triggers,
    )
    if params.num_predict <= 0:
        params = replace(params, num_predict=10 * engine.info.n_ctx)
    return params


def _observe(rt: Runtime, model: LocalModel, stats: FinalStats, started: int) -> None:
    """Report a finished generation to the runtime's observers (monitoring), once per request."""
    if rt.observers:
        total = time.perf_counter_ns() - started
        record = GenerationRecord(
            model=model.name.display,
            prompt_tokens=stats.prompt_eval_count,
            cached_tokens=stats.cached_tokens,
            generated_tokens=stats.eval_count,
            time_to_first_token=max(0, total - stats.eval_duration) / 1e9,
            decode_seconds=stats.eval_duration / 1e9,
            done_reason=stats.done_reason,
            draft_tokens=stats.draft_count,
            draft_accepted_tokens=stats.draft_accepted_count,
        )
        rt.observe(record)


def _metrics(stats: FinalStats, started: int, load_ns: int) -> dict[str, Any]:
    """The final chunk's stats. ``prompt_eval_count`` is the whole prompt, as Ollama counts it, even where
    a cached prefix was reused (``prompt_cached_count``, an nbllm extra); the duration is the real one."""
    return {
        "total_duration": time.perf_counter_ns() - started,
        "load_duration": load_ns or None,
        "prompt_eval_count": stats.prompt_eval_count + stats.cached_tokens or None,
        "prompt_cached_count": stats.cached_tokens or None,
        "prompt_eval_duration": stats.prompt_eval_duration or None,
        "eval_count": stats.eval_count or None,
        "eval_duration": stats.eval_duration or None,
        "draft_count": stats.draft_count or None,
        "draft_accepted_count": stats.draft_accepted_count if stats.draft_count else None,
    }


def _logprobs(chunk: TokenChunk) -> list[TokenLogprob] | None:
    lp = chunk.logprob
    if lp is None:
        return None
    top = [Logprob(token=t, logprob=v, bytes=list(b)) for t, v, b in lp.top] or None
    return [TokenLogprob(token=lp.token, logprob=lp.logprob, bytes=list(lp.bytes), top_logprobs=top)]


def settled(chunks: Iterator[T | Pending]) -> Iterator[T]:
    """A use case's chunks for a consumer that waits for them: without PENDING (which only comes inside
    an ``engine.NoWait`` block); closing this closes ``chunks``."""
    try:
        for chunk in chunks:
            if not isinstance(chunk, Pending):
                yield chunk
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()


def collect_generate(chunks: Iterator[GenerateResponse | Pending]) -> GenerateResponse:
    """One response from a stream (``stream: false``): text and logprobs concatenated, final stats kept."""
    text: list[str] = []
    logprobs: list[TokenLogprob] = []
    last: GenerateResponse | None = None
    for chunk in settled(chunks):
        text.append(chunk.response)
        logprobs.extend(chunk.logprobs or [])
        last = chunk
    assert last is not None
    return last.model_copy(update={"response": "".join(text), "logprobs": logprobs or None})


def collect_chat(chunks: Iterator[ChatResponse | Pending]) -> ChatResponse:
    """One response from a chat stream: content, thinking, tool calls and logprobs concatenated."""
    content: list[str] = []
    thinking: list[str] = []
    calls: list[Any] = []
    logprobs: list[TokenLogprob] = []
    last: ChatResponse | None = None
    for chunk in settled(chunks):
        content.append(chunk.message.content)
        thinking.append(chunk.message.thinking or "")
        calls.extend(chunk.message.tool_calls or [])
        logprobs.extend(chunk.logprobs or [])
        last = chunk
    assert last is not None
    message = Message(
        role="assistant", content="".join(content), thinking="".join(thinking) or None, tool_calls=calls or None
    )
    return last.model_copy(update={"message": message, "logprobs": logprobs or None})
