"""``%%chat -m A -m B``: several models answer the same cell side by side, then a comparison table.

All requests run at once (one worker each). The answers stream into one output area as columns,
one per model under its name and live status, and stay in the same columns when they end, with the
comparison table below: the layout does not move from the first token to the final output. The
columns are an HTML table holding Markdown (blank lines around each answer), which JupyterLab,
Notebook, VS Code and GitHub render side by side; ``text/plain`` has the answers one after another.
The conversation is used as context but not extended (a comparison is a side trip).
"""

from __future__ import annotations

import html
import math
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
    keep_timing,
    prepare_thread,
    probe_loading,
    resolve_format,
)
from nbllm.notebook.display import LiveDisplay, escape_html, markdown_table
from nbllm.notebook.magic_args import ChatArgs
from nbllm.notebook.streaming import StreamPump
from nbllm.notebook.timing import TimingRecord
from nbllm.schema import ChatRequest, GenerateRequest, Message

__all__ = ["columns_markdown", "comparison_markdown", "run_compare"]


def _num(value: float | None, fmt: str) -> str:
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
        "think": args.think,
        "keep_alive": args.keep_alive,
    }
    if kind == "generate":
        return [GenerateRequest(model=m, prompt=prompt, system=args.system, raw=args.raw, **common) for m in models]
    messages = [*prepare_thread(ctx.session, args), Message(role="user", content=prompt)]
    return [ChatRequest(model=m, messages=messages, **common) for m in models]


def columns_markdown(titles: list[str], statuses: list[str], bodies: list[str]) -> str:
    """One column per model: its name and status on top, its answer (Markdown) below.

    >>> print(columns_markdown(["a"], ["3 tokens"], ["*hi*"]))
    <table>
    <tr>
    <th>a<br><sub>3 tokens</sub></th>
    </tr>
    <tr>
    <td valign="top" width="100%">
    <BLANKLINE>
    *hi*
    <BLANKLINE>
    </td>
    </tr>
    </table>
    """
    width = 100 // max(1, len(titles))
    heads = [f"<th>{html.escape(t)}<br><sub>{html.escape(s)}</sub></th>" for t, s in zip(titles, statuses, strict=True)]
    cells = [f'<td valign="top" width="{width}%">\n\n{body}\n\n</td>' for body in bodies]
    return "\n".join(["<table>", "<tr>", *heads, "</tr>", "<tr>", *cells, "</tr>", "</table>"])


def run_compare(ctx: CellContext, args: ChatArgs, models: list[str], prompt: str, kind: str) -> list[ChatResult]:
    """Stream every model's answer into its column; finish with the answers in place and the comparison table."""
    if args.tools:
        raise InvalidRequest("--tools works with one model at a time")
    requests = _requests(args, models, prompt, kind, ctx)
    answers = [Answer(model=m, started_at=0.0) for m in models]
    display = LiveDisplay(interval=ctx.interval, live=args.stream)
    display.show(_live(answers), raw=True)
    for answer in answers:
        probe_loading(ctx.client, answer)
    pump: StreamPump[Any] = StreamPump([_source(ctx, r) for r in requests]).start()
    interrupted = _consume(pump, answers, display, ctx.interval)
    records = []
    for answer in answers:
        record = answer.timing(kind=kind, host=ctx.client.host, cell=ctx.cell, interrupted=interrupted)
        keep_timing(ctx, answer, record)
        records.append(record)
    bundle, results = _final(answers, records, interrupted=interrupted, as_json=args.format is not None)
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


def _consume(pump: StreamPump[Any], answers: list[Answer], display: LiveDisplay, interval: float) -> bool:
    """Feed every stream's chunks to its answer, redrawing (throttled) as they come; True when interrupted."""
    try:
        for event in pump.events(tick=min(0.05, interval)):
            if event is not None:
                answer = answers[event.source]
                answer.started_at = pump.started_at[event.source]
                if event.error is not None:
                    answer.error = event.error
                elif event.item is not None:
                    answer.feed(event.item, event.at)
            display.update(lambda: _live(answers))
    except KeyboardInterrupt:
        pump.stop()
        return True
    return False


def _source(ctx: CellContext, req: ChatRequest | GenerateRequest) -> Callable[[], Iterator[Any]]:
    return chat_source(ctx.client, req) if isinstance(req, ChatRequest) else generate_source(ctx.client, req)


def _error_line(answer: Answer, *, markdown: bool = True) -> str:
    if answer.error is None or isinstance(answer.error, Cancelled):
        return ""
    message = str(getattr(answer.error, "message", answer.error))
    return f"\n\n**error:** {escape_html(message)}" if markdown else f"\nerror: {message}"


def _live(answers: list[Answer]) -> dict[str, str]:
    """The columns while streaming (the same layout as the final output)."""
    statuses = [a.timing().summary() if a.finished else a.live_status() for a in answers]
    bodies = [render_body([a], [], partial=True) + _error_line(a) for a in answers]
    plain = "\n\n".join(f"== {a.model} == [{s}]\n{a.text}" for a, s in zip(answers, statuses, strict=True))
    return {"text/markdown": columns_markdown([a.model for a in answers], statuses, bodies), "text/plain": plain}


def _final(
    answers: list[Answer], records: list[TimingRecord], *, interrupted: bool, as_json: bool
) -> tuple[dict[str, str], list[ChatResult]]:
    bodies, plain, results = [], [], []
    for answer, record in zip(answers, records, strict=True):
        body = render_body([answer], [], as_json=as_json, partial=interrupted) + _error_line(answer)
        bodies.append(body or "*(empty answer)*")
        plain.append(f"== {answer.model} ==\n{answer.text}{_error_line(answer, markdown=False)}")
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
    columns = columns_markdown([a.model for a in answers], [r.summary() for r in records], bodies)
    markdown = columns + "\n\n" + table
    return {"text/markdown": markdown, "text/plain": "\n\n".join(plain) + "\n\n" + table}, results
