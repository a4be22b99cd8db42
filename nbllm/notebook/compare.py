"""``%%chat -m A -m B``: several models answer the same cell side by side, then a comparison table.

All requests run at once (one worker each). While they stream, a :class:`StreamColumns` widget
shows one column per model with live stats; at the end it is replaced by a static bundle: each
answer under its model's heading, then the comparison table. The conversation is used as context
but not extended (a comparison is a side trip).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from typing import Any

from nbllm.errors import Cancelled, InvalidRequest
from nbllm.notebook.answer import Answer, ChatResult, render_body
from nbllm.notebook.chat import (
    CellContext,
    Interrupted,
    as_nbllm_error,
    chat_source,
    generate_source,
    prepare_thread,
    resolve_format,
)
from nbllm.notebook.display import LiveDisplay, markdown_table
from nbllm.notebook.magic_args import ChatArgs
from nbllm.notebook.streaming import StreamPump
from nbllm.notebook.timing import TimingRecord
from nbllm.schema import ChatRequest, GenerateRequest, Message

__all__ = ["comparison_markdown", "run_compare"]


def _num(value: float, fmt: str) -> str:
    return "–" if value is None or math.isnan(value) else format(value, fmt)


def comparison_markdown(records: list[TimingRecord]) -> str:
    """The comparison table: tokens, speed, first token, total per model."""
    rows = [
        [
            r.model,
            _num(r.eval_tokens, ".0f"),
            _num(r.eval_tok_s, ".1f"),
            _num(r.prompt_tok_s, ".1f"),
            _num(r.ttft_s, ".2f"),
            _num(r.load_s, ".2f"),
            _num(r.total_s if not math.isnan(r.total_s) else r.wall_s, ".2f"),
            r.done_reason or ("interrupted" if r.interrupted else "–"),
        ]
        for r in records
    ]
    headers = ["model", "tokens", "tok/s", "prompt tok/s", "first token (s)", "load (s)", "total (s)", "done"]
    return markdown_table(headers, rows)


def _requests(args: ChatArgs, models: list[str], prompt: str, kind: str, ctx: CellContext) -> list[Any]:
    fmt = resolve_format(args.format, ctx.namespace)
    common: dict[str, Any] = {
        "format": fmt,
        "options": dict(args.options) or None,
        "think": True if args.think else None,
        "keep_alive": args.keep_alive,
    }
    if kind == "generate":
        return [GenerateRequest(model=m, prompt=prompt, system=args.system, raw=args.raw, **common) for m in models]
    messages = [*prepare_thread(ctx.session, args), Message(role="user", content=prompt)]
    return [ChatRequest(model=m, messages=messages, **common) for m in models]


def run_compare(ctx: CellContext, args: ChatArgs, models: list[str], prompt: str, kind: str) -> list[ChatResult]:
    """Stream every model's answer into its column; finish with the answers and the comparison table."""
    from nbllm.notebook.widgets.stream import StreamColumns

    if args.tools:
        raise InvalidRequest("--tools works with one model at a time")
    requests = _requests(args, models, prompt, kind, ctx)
    columns = StreamColumns(models)
    display = LiveDisplay(interval=ctx.interval, live=args.stream)
    display.show(columns)
    pump: StreamPump[Any] = StreamPump([_source(ctx, r) for r in requests]).start()
    answers = [Answer(model=m, started_at=pump.started_at[i]) for i, m in enumerate(models)]
    interrupted = _consume(pump, answers, columns, ctx.interval)
    records = []
    for answer in answers:
        record = answer.timing(kind=kind, host=ctx.client.host, cell=ctx.cell, interrupted=interrupted)
        ctx.session.timings.add(record)
        records.append(record)
    bundle, results = _final(ctx, answers, records, interrupted=interrupted, as_json=args.format is not None)
    meta = {
        "nbllm": {
            "models": models,
            "kind": kind,
            "host": ctx.client.host,
            "options": dict(args.options),
            "timings": [r.metadata() for r in records],
            "interrupted": interrupted,
            **ctx.extra_metadata,
        }
    }
    display.finish(bundle, meta)
    if interrupted:
        raise Interrupted(results)
    failed = [a.error for a in answers if a.error is not None and not isinstance(a.error, Cancelled)]
    if len(failed) == len(answers):  # every model failed: the cell fails (one or some failing is shown)
        raise as_nbllm_error(failed[0])
    return results


def _consume(pump: StreamPump[Any], answers: list[Answer], columns: Any, interval: float) -> bool:
    """Feed every stream's chunks to its answer, redrawing changed columns; True when interrupted."""
    dirty: set[int] = set()
    last_draw = 0.0
    try:
        for event in pump.events(tick=min(0.05, interval)):
            if event is not None:
                answer = answers[event.source]
                answer.started_at = pump.started_at[event.source]
                if event.error is not None:
                    answer.error = event.error
                elif event.item is not None:
                    answer.feed(event.item, event.at)
                dirty.add(event.source)
            if dirty and time.monotonic() - last_draw >= interval:
                _draw(columns, answers, dirty)
                last_draw = time.monotonic()
    except KeyboardInterrupt:
        pump.stop()
        return True
    return False


def _source(ctx: CellContext, req: ChatRequest | GenerateRequest) -> Callable[[], Iterator[Any]]:
    return chat_source(ctx.client, req) if isinstance(req, ChatRequest) else generate_source(ctx.client, req)


def _draw(columns: Any, answers: list[Answer], dirty: set[int]) -> None:
    for index in sorted(dirty):
        answer = answers[index]
        text = render_body([answer], [], partial=True)
        if answer.error is not None:
            text += f"\n\n**error:** {answer.error}"
        columns.set_markdown(index, text)
        columns.set_status(index, answer.timing().summary() if answer.final is not None else answer.live_status())
    dirty.clear()


def _final(
    ctx: CellContext, answers: list[Answer], records: list[TimingRecord], *, interrupted: bool, as_json: bool
) -> tuple[dict[str, str], list[ChatResult]]:
    sections, plain, results = [], [], []
    for answer, record in zip(answers, records, strict=True):
        body = render_body([answer], [], as_json=as_json, partial=interrupted)
        if answer.error is not None:
            body += f"\n\n**error:** {getattr(answer.error, 'message', answer.error)}"
        sections.append(f"### {answer.model}\n\n{body or '*(empty answer)*'}")
        plain.append(f"== {answer.model} ==\n{body}")
        results.append(
            ChatResult(
                model=answer.model,
                text=answer.text,
                thinking=answer.thought,
                timings=[record],
                interrupted=interrupted,
                markdown=body,
            )
        )
    table = comparison_markdown(records)
    markdown = "\n\n".join(sections) + "\n\n---\n\n" + table
    return {"text/markdown": markdown, "text/plain": "\n\n".join(plain) + "\n\n" + table}, results
