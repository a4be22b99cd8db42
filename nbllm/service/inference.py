"""Use cases: generate and chat, streamed as Ollama's response chunks with its timing stats.

Both run the same steps: ``_prepare`` (resolve the model, check the request against what the model
can do, options, load spec, ``think`` as Ollama resolves it) and ``_stream`` (acquire the model,
tokenize, sample, split the output into thinking, content and tool calls). They differ only in how
the prompt is built and in the shape of a chunk.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any, overload

from nbllm.engine import Engine, FinalStats, LoadSpec, Pending, SamplingParams, TokenChunk, no_wait_handle
from nbllm.errors import InvalidRequest, TemplateError, UnsupportedCapability
from nbllm.options import Options
from nbllm.prompt.thinking import ThinkValue, check_think, split_thinking, think_on
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
from nbllm.schema.lines import LineWriter
from nbllm.service.collect import collect_chat, collect_generate, settled
from nbllm.service.common import keep_alive_of, load_spec, model_options, resolve_model
from nbllm.service.constraints import Constraints, chat_constraints, format_only
from nbllm.service.context import chat_tokens, fit, prompt_tokens
from nbllm.service.output import OutputSplitter, Piece, thinking_parser
from nbllm.service.prompts import ModelTemplate, capabilities, model_template
from nbllm.store import LocalModel
from nbllm.store.gguf import GGUFInfo

__all__ = ["chat", "collect_chat", "collect_generate", "generate", "settled"]

_OLD_THINKING_STRIPPED = ("qwen3", "deepseek-r1")
"""Models whose earlier turns lose their ``<think>`` text (Ollama's ``filterThinkTags``): family or name."""


@dataclass(frozen=True)
class _Prepared:
    """A checked request: the model, what it can do, how to load and sample it."""

    model: LocalModel
    info: GGUFInfo
    caps: list[str]
    keep_alive: float | None
    options: Options
    spec: LoadSpec
    think: ThinkValue
    """``think`` as Ollama resolves it: on for a thinking model that was not told."""
    tags: tuple[str, str]
    """The model's thinking tags when it thinks on this request (else empty)."""
    started: int


@dataclass(slots=True)
class _Step:
    """One chunk to send: a piece of output, its token (for logprobs), or the final stats."""

    piece: Piece
    token: TokenChunk | None = None
    final: FinalStats | None = None
    metrics: dict[str, Any] | None = None


def _prepare(rt: Runtime, req: GenerateRequest | ChatRequest) -> _Prepared:
    """What generate and chat check and work out before anything loads."""
    started = time.perf_counter_ns()
    think = check_think(req.think)
    model = resolve_model(rt, req.model)
    if isinstance(req, GenerateRequest) and req.raw and (req.template or req.system or req.context):
        raise InvalidRequest("raw mode does not support template, system, or context")
    keep_alive = keep_alive_of(req.keep_alive)
    info = rt.store.gguf(model)
    if req.top_logprobs is not None and not 0 <= req.top_logprobs <= 20:
        raise InvalidRequest("top_logprobs must be between 0 and 20")
    caps = capabilities(model, info)
    if "completion" not in caps:
        raise InvalidRequest(f'"{req.model}" does not support generate')
    if "thinking" in caps:
        think = True if think is None else think  # thinking models think unless told not to
    elif think_on(think):
        raise UnsupportedCapability(f'"{req.model}" does not support thinking')
    tags = model_template(model, info).thinking_tags if think_on(think) else ("", "")
    options = model_options(model, req.options)
    spec = load_spec(rt, model, info, options)
    return _Prepared(model, info, caps, keep_alive, options, spec, think, tags, started)


def _stream(
    rt: Runtime,
    p: _Prepared,
    req: GenerateRequest | ChatRequest,
    render: Callable[[Engine], tuple[str, list[int]]],
    constraints: Constraints,
    cancel: threading.Event | None,
    fast: LineWriter | None = None,
) -> Iterator[_Step | str | Pending]:
    """Generate and split: thinking is sent as chunks of its own, before the content it ends with.

    With ``fast`` (the route's line writer) and nothing to split (no thinking, no tool calls), a token's
    chunk comes as its line, with no piece or step made for it: the per-token path's shortest way."""
    with rt.scheduler.acquire(p.model.name.display, p.model, p.spec, p.keep_alive, cancel=cancel) as runner:
        load_ns = time.perf_counter_ns() - p.started
        engine = runner.engine
        prompt, tokens = render(engine)
        params = _sampling(
            p.options,
            engine,
            logprobs=req.logprobs,
            top_logprobs=req.top_logprobs,
            shift=req.shift,
            constraints=constraints,
        )
        splitter = OutputSplitter(thinking_parser(p.think, p.tags, prompt), constraints.parser())
        line = fast.line if fast is not None and splitter.thinking is None and splitter.tools is None else None
        events = engine.generate(tokens, params, cancel=cancel)
        handle = no_wait_handle()
        if handle is not None:  # (a plain token is ``line(event.text)`` below, passed on as is; None: not so)
            handle.line = line
            handle.line_anywhere = line is not None and getattr(fast, "ANY_THREAD", False)
        for event in events:
            if line is not None and event.__class__ is TokenChunk:
                yield line(event.text)  # (what the splitter would pass on whole, as the line the route sends)
                continue
            if isinstance(event, Pending):
                yield event
                continue
            final = event if isinstance(event, FinalStats) else None
            piece = splitter.take(event.text, final=final is not None)
            token = event if isinstance(event, TokenChunk) else None
            if final is None and piece.empty and splitter.thinking is not None and not req.logprobs:
                continue  # held back until the parser knows what it is (as Ollama)
            if piece.thinking and (piece.content or piece.tool_calls or final is not None):
                yield _Step(Piece(thinking=piece.thinking), token)
                piece, token = Piece(content=piece.content, tool_calls=piece.tool_calls), None
            if final is None:
                yield _Step(piece, token)
                continue
            _observe(rt, p.model, final, p.started)
            yield _Step(piece, token, final, _metrics(final, p.started, load_ns))


@overload
def generate(
    rt: Runtime, req: GenerateRequest, *, cancel: threading.Event | None = None, lines: None = None
) -> Iterator[GenerateResponse | Pending]: ...
@overload
def generate(
    rt: Runtime, req: GenerateRequest, *, cancel: threading.Event | None = None, lines: LineWriter
) -> Iterator[GenerateResponse | str | Pending]: ...
def generate(
    rt: Runtime, req: GenerateRequest, *, cancel: threading.Event | None = None, lines: LineWriter | None = None
) -> Iterator[GenerateResponse | str | Pending]:
    """``/api/generate``: yields text (and thinking) chunks, then a final chunk with ``done: true`` and
    the stats (and, inside an ``engine.NoWait`` block, PENDING where it would wait for the engine).

    With ``lines`` a plain chunk (text or thinking, no logprobs) comes as the line ``lines`` writes for
    it (the bytes the route would send for its model) without building the model: a stream's per-token path.
    """
    p = _prepare(rt, req)
    if req.suffix and "insert" not in p.caps:
        raise UnsupportedCapability(f"{p.model.name.full} does not support insert")
    if req.images and "vision" not in p.caps:
        raise UnsupportedCapability(f"{p.model.name.full} does not support vision")
    template = model_template(p.model, p.info, req.template)
    constraints = format_only(req.format)
    if req.debug_render_only:
        text = req.prompt if req.raw else _generate_text(template, p, req)
        yield _bare(req, done=True, debug_info={"rendered_template": text, "image_count": len(req.images or [])})
        return
    if not req.prompt and not req.images and not req.suffix:
        yield _load_or_unload(rt, p, req, cancel)
        return

    def render(engine: Engine) -> tuple[str, list[int]]:
        if req.raw:
            return req.prompt, fit(engine.tokenize(req.prompt), engine, truncate=req.truncate)
        prefix = engine.detokenize(req.context) if req.context else ""
        text = prefix + _generate_text(template, p, req)
        return text, fit(prompt_tokens(engine, text), engine, truncate=req.truncate)

    fast = lines if not req.logprobs else None
    for step in _stream(rt, p, req, render, constraints, cancel, fast):
        if not isinstance(step, _Step):  # PENDING, or a token's line
            yield step
            continue
        if fast is not None and step.final is None:
            yield fast.line(step.piece.content, step.piece.thinking or None)
            continue
        chunk = _bare(req, response=step.piece.content, thinking=step.piece.thinking or None)
        if step.token is not None and req.logprobs:
            chunk.logprobs = _logprobs(step.token)
        if step.final is not None:
            context = None if req.raw else list(step.final.tokens)
            done = {"done": True, "done_reason": step.final.done_reason, "context": context}
            chunk = chunk.model_copy(update={**done, **(step.metrics or {})})
        yield chunk


@overload
def chat(
    rt: Runtime, req: ChatRequest, *, cancel: threading.Event | None = None, lines: None = None
) -> Iterator[ChatResponse | Pending]: ...
@overload
def chat(
    rt: Runtime, req: ChatRequest, *, cancel: threading.Event | None = None, lines: LineWriter
) -> Iterator[ChatResponse | str | Pending]: ...
def chat(
    rt: Runtime, req: ChatRequest, *, cancel: threading.Event | None = None, lines: LineWriter | None = None
) -> Iterator[ChatResponse | str | Pending]:
    """``/api/chat``: yields message deltas (thinking first), then a final chunk with ``done: true`` and
    the stats (and, inside an ``engine.NoWait`` block, PENDING where it would wait for the engine).

    With ``lines`` a plain delta (text or thinking: no tool calls, no logprobs) comes as the line
    ``lines`` writes for it, as ``generate``'s does.
    """
    p = _prepare(rt, req)
    if req.tools and "tools" not in p.caps:
        raise UnsupportedCapability(f"{p.model.name.full} does not support tools")
    if any(m.images for m in req.messages or []) and "vision" not in p.caps:
        raise UnsupportedCapability(f"{p.model.name.full} does not support vision")
    if not req.messages:
        yield _load_or_unload(rt, p, req, cancel)
        return
    template = model_template(p.model, p.info)
    messages = _conversation(p.model, req.messages)
    tools = [t.model_dump(exclude_none=True) for t in req.tools] if req.tools else None
    constraints = chat_constraints(template, tools, req.tool_choice, req.format)
    shown_tools = tools if req.tool_choice != "none" else None
    if req.debug_render_only:
        images = sum(len(m.images or []) for m in req.messages)
        text = template.chat(messages, shown_tools, think=p.think)
        yield _bare(req, done=True, debug_info={"rendered_template": text, "image_count": images})
        return

    def render(engine: Engine) -> tuple[str, list[int]]:
        return chat_tokens(engine, template, messages, shown_tools, think=p.think, truncate=req.truncate)

    fast = lines if not req.logprobs else None
    for step in _stream(rt, p, req, render, constraints, cancel, fast):
        if not isinstance(step, _Step):  # PENDING, or a token's line
            yield step
            continue
        piece = step.piece
        if fast is not None and step.final is None and not piece.tool_calls:
            yield fast.line(piece.content, piece.thinking or None)
            continue
        calls = piece.tool_calls or None
        chunk = _bare(
            req,
            message=Message(role="assistant", content=piece.content, thinking=piece.thinking or None, tool_calls=calls),
        )
        if step.token is not None and req.logprobs:
            chunk.logprobs = _logprobs(step.token)
        if step.final is not None:
            done = {"done": True, "done_reason": step.final.done_reason}
            chunk = chunk.model_copy(update={**done, **(step.metrics or {})})
        yield chunk


@overload
def _bare(req: GenerateRequest, **fields: Any) -> GenerateResponse: ...
@overload
def _bare(req: ChatRequest, **fields: Any) -> ChatResponse: ...
def _bare(req: GenerateRequest | ChatRequest, **fields: Any) -> GenerateResponse | ChatResponse:
    """A chunk of the request's kind, stamped now (a chat chunk has an assistant message)."""
    if isinstance(req, ChatRequest):
        fields.setdefault("message", Message(role="assistant", content=""))
        return ChatResponse(model=req.model, created_at=now_timestamp(), **fields)
    return GenerateResponse(model=req.model, created_at=now_timestamp(), **fields)


def _generate_text(template: ModelTemplate, p: _Prepared, req: GenerateRequest) -> str:
    """The templated prompt of a generate request (the model's MESSAGEs unless ``context`` continues)."""
    try:
        return template.generate(
            req.prompt,
            system=req.system if req.system is not None else p.model.system,
            suffix=req.suffix,
            messages=[] if req.context else list(p.model.messages),
            think=p.think,
        )
    except TemplateError as exc:
        if req.template:  # the request's own template failed: a 400, not the server's error
            raise InvalidRequest(f"invalid template: {exc.message}") from None
        raise


@overload
def _load_or_unload(
    rt: Runtime, p: _Prepared, req: GenerateRequest, cancel: threading.Event | None
) -> GenerateResponse: ...
@overload
def _load_or_unload(rt: Runtime, p: _Prepared, req: ChatRequest, cancel: threading.Event | None) -> ChatResponse: ...
def _load_or_unload(
    rt: Runtime, p: _Prepared, req: GenerateRequest | ChatRequest, cancel: threading.Event | None
) -> GenerateResponse | ChatResponse:
    """An empty request loads the model (``done_reason: load``), or unloads it with keep_alive 0."""
    if p.keep_alive == 0:
        rt.scheduler.expire(p.model)
        return _bare(req, done=True, done_reason="unload")
    with rt.scheduler.acquire(p.model.name.display, p.model, p.spec, p.keep_alive, cancel=cancel):
        pass
    return _bare(req, done=True, done_reason="load")


def _conversation(model: LocalModel, messages: Sequence[Message]) -> list[dict[str, Any]]:
    """The model's MESSAGEs and SYSTEM (unless the request brings its own system message) + the request."""
    out: list[dict[str, Any]] = []
    if model.system and not (messages and messages[0].role == "system"):
        out.append({"role": "system", "content": model.system})
    out.extend(dict(m) for m in model.messages)
    out.extend(m.model_dump(exclude_none=True) for m in messages)
    if model.config.get("model_family") in _OLD_THINKING_STRIPPED or model.name.model in _OLD_THINKING_STRIPPED:
        last_user = max((i for i, m in enumerate(out) if m.get("role") == "user"), default=-1)
        for i, m in enumerate(out[:last_user]):
            if m.get("role") == "assistant":
                out[i] = {**m, "content": split_thinking(str(m.get("content") or ""), "<think>", "</think>")[1]}
    return out


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
