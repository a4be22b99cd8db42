"""``%%chat`` and ``%%generate``: stream one answer into the cell, run the tool loop, keep the thread.

The request is read by a worker (:class:`StreamPump`); the cell thread renders what arrives at
most every ``interval`` seconds and ends with a static Markdown bundle carrying the model, options
and timings in its metadata. A kernel interrupt stops the request at once and keeps the partial
answer on screen; the interrupted exchange is not added to the conversation (as ``ollama run``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from nbllm.client import IN_PROCESS, BaseClient
from nbllm.errors import Cancelled, InvalidRequest, NbllmError
from nbllm.notebook.answer import Answer, ChatResult, render_body
from nbllm.notebook.display import LiveDisplay, escape_html, show
from nbllm.notebook.live_answer import LiveAnswer
from nbllm.notebook.magic_args import ChatArgs
from nbllm.notebook.outputs import final_bundle, live_bundle
from nbllm.notebook.session import NotebookSession
from nbllm.notebook.streaming import StreamPump
from nbllm.notebook.timing import TimingRecord
from nbllm.notebook.tools import ToolBox, ToolCallRecord
from nbllm.schema import ChatRequest, ChatResponse, GenerateRequest, GenerateResponse, Message

__all__ = [
    "CellContext",
    "Interrupted",
    "as_nbllm_error",
    "backend_note",
    "keep_timing",
    "live_bundle",
    "prepare_thread",
    "resolve_format",
    "resolve_tools",
    "run_chat",
    "run_generate",
]

log = logging.getLogger(__name__)


class Interrupted(Exception):
    """The kernel interrupted a generation; ``result`` is what was shown (a list for side-by-side models)."""

    def __init__(self, result: ChatResult | list[ChatResult]) -> None:
        super().__init__("interrupted")
        self.result = result


@dataclass
class CellContext:
    """What a cell magic run needs from the magics: backend, session, namespace and display settings."""

    client: BaseClient
    session: NotebookSession
    namespace: dict[str, Any]
    interval: float = 0.1
    show_stats: bool = True
    max_tool_rounds: int = 8
    cell: int | None = None
    extra_metadata: dict[str, Any] = field(default_factory=dict)
    set_next_input: Callable[[str], None] | None = None
    """Puts text into a new cell below (``-f code``); None outside a shell."""


def resolve_format(value: str | None, namespace: dict[str, Any]) -> str | dict[str, Any] | None:
    """``json``, or a JSON schema held by a variable (a dict, or a pydantic model class)."""
    if value is None or value == "json":
        return value
    if value not in namespace:
        raise InvalidRequest(f"--format must be 'json' or the name of a variable holding a JSON schema, not {value!r}")
    obj = namespace[value]
    schema = obj.model_json_schema() if hasattr(obj, "model_json_schema") else obj
    if not isinstance(schema, dict):
        raise InvalidRequest(
            f"variable {value!r} holds {type(obj).__name__}, not a JSON schema (dict or pydantic model)"
        )
    return schema


def resolve_tools(names: Iterable[str], namespace: dict[str, Any]) -> ToolBox | None:
    """The notebook functions named in ``--tools``."""
    names = list(names)
    if not names:
        return None
    missing = [n for n in names if not callable(namespace.get(n))]
    if missing:
        raise InvalidRequest(f"--tools: no function named {', '.join(missing)} in the notebook")
    return ToolBox.of(namespace[n] for n in names)


def _metadata(ctx: CellContext, args: ChatArgs, model: str, kind: str, records: list[TimingRecord]) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "model": model,
        "kind": kind,
        "host": ctx.client.host,
        "options": dict(args.options),
        "timings": [r.metadata() for r in records],
        "interrupted": any(r.interrupted for r in records),
        **ctx.extra_metadata,
    }
    if kind == "chat":
        meta["thread"] = args.thread
    return {"nbllm": meta}


def _footer(model: str, records: list[TimingRecord]) -> str:
    if not records:
        return f"{model}"
    last = records[-1]
    return f"{model} · {last.summary()}" + (f" · {len(records)} rounds" if len(records) > 1 else "")


def keep_timing(ctx: CellContext, answer: Answer, record: TimingRecord) -> None:
    """Add a response's stats to ``%timings``: only a finished answer, or one interrupted (marked so)."""
    if answer.finished or record.interrupted:
        ctx.session.timings.add(record)


def backend_note(previous: str | None, host: str) -> str | None:
    """One line when the cell magics' backend changed since the last answer (as after ``%serve stop``)."""
    if previous is None or previous == host:
        return None
    if host == IN_PROCESS:
        return "answering in this kernel (in-process): no server is in use now; %serve starts one"
    return f"answering through the server at {host}"


def probe_loading(client: BaseClient, answer: Answer) -> None:
    """Mark ``answer`` as loading when its model is not loaded yet (asked in a daemon thread)."""

    def probe() -> None:
        name = answer.model if ":" in answer.model.rsplit("/", 1)[-1] else f"{answer.model}:latest"
        try:
            loaded = {m.name or m.model for m in client.ps().models}
        except Exception:  # the request itself will report an unreachable server
            log.debug("ps failed; not showing the load", exc_info=True)
            return
        answer.loading = name not in loaded and answer.first_at is None

    threading.Thread(target=probe, name="nbllm-load-probe", daemon=True).start()


def chat_source(client: BaseClient, req: ChatRequest) -> Callable[[], Iterator[ChatResponse]]:
    """A stream factory for :class:`StreamPump` (the request is sent from the worker thread)."""
    return lambda: client.chat(req)


def generate_source(client: BaseClient, req: GenerateRequest) -> Callable[[], Iterator[GenerateResponse]]:
    """A stream factory for :class:`StreamPump`."""
    return lambda: client.generate(req)


def stream_answer(
    ctx: CellContext,
    answer: Answer,
    make: Callable[[], Iterable[Any]],
    redraw: Callable[[], None],
    *,
    probe: bool = True,
) -> bool:
    """Stream one response into ``answer``; True when the kernel interrupted it."""
    if probe:
        probe_loading(ctx.client, answer)
    pump: StreamPump[Any] = StreamPump([make]).start()
    answer.started_at = pump.started_at[0] or answer.started_at
    try:
        for event in pump.events(tick=min(0.05, ctx.interval)):
            if event is None:
                redraw()
                continue
            answer.started_at = pump.started_at[0]
            if event.error is not None:
                answer.error = event.error
            elif event.item is not None:
                answer.feed(event.item, event.at)
                redraw()
    except KeyboardInterrupt:
        pump.stop()
        return True
    return False


def _finish(
    ctx: CellContext,
    args: ChatArgs,
    display: LiveAnswer,
    bodies: tuple[str, str],
    last: Answer,
    footer: str,
    metadata: dict[str, Any],
) -> dict[str, Any]:
    """Show the final bundle (in ``-f``'s format); a failed request raises after keeping what had streamed.

    ``bodies`` is the answer rendered as Markdown and as plain text (:func:`render_body`).
    """
    err = last.error
    body, plain = bodies
    if err is None or isinstance(err, Cancelled):
        bundle = final_bundle(
            args.output,
            markdown=body,
            text=last.text,
            plain=plain,
            footer=footer,
            show_stats=ctx.show_stats,
            set_next_input=ctx.set_next_input if not metadata["nbllm"]["interrupted"] else None,
        )
        display.finish(bundle, metadata)
        return bundle
    message = err.message if isinstance(err, NbllmError) else f"{type(err).__name__}: {err}"
    if body:
        bundle = final_bundle(
            "markdown",
            markdown=f"{body}\n\n**error:** {escape_html(message)}",
            text=last.text,
            plain=f"{plain}\n\nerror: {message}",
            footer=footer,
            show_stats=ctx.show_stats,
        )
        display.finish(bundle, metadata)
    else:
        display.finish({"text/plain": ""})
    raise as_nbllm_error(err)


def as_nbllm_error(err: BaseException) -> NbllmError:
    """An error from a stream as an NbllmError (shown as one line by the magics)."""
    if isinstance(err, NbllmError):
        return err
    wrapped = NbllmError(f"{type(err).__name__}: {err}")
    wrapped.__cause__ = err
    return wrapped


def prepare_thread(session: NotebookSession, args: ChatArgs) -> list[Message]:
    """The conversation a cell continues (empty with ``--new``), with ``-s SYSTEM`` as its first message."""
    history = [] if args.new else list(session.threads.get(args.thread, []))
    if args.system is not None:
        history = [m for m in history if m.role != "system"]
        history.insert(0, Message(role="system", content=args.system))
    return history


def run_chat(ctx: CellContext, args: ChatArgs, model: str, prompt: str) -> ChatResult:
    """One ``%%chat`` cell with one model: stream, run tool calls until the final answer, keep the thread."""
    toolbox = resolve_tools(args.tools, ctx.namespace)
    fmt = resolve_format(args.format, ctx.namespace)
    history = prepare_thread(ctx.session, args)
    messages = [*history, Message(role="user", content=prompt)]
    display = LiveDisplay(interval=ctx.interval, live=args.stream)
    display.show({"text/plain": f"{model}: …", "text/markdown": f"<sub>{model} …</sub>"}, raw=True)
    inspector = _inspector(toolbox) if toolbox is not None else None
    answers: list[Answer] = []
    calls: list[list[ToolCallRecord]] = []
    records: list[TimingRecord] = []
    live = LiveAnswer(display, interval=ctx.interval)

    def redraw() -> None:
        live.redraw(answers, calls)

    interrupted = False
    for round_no in range(ctx.max_tool_rounds + 1):
        req = _chat_request(args, model, messages, toolbox, fmt, first=round_no == 0)
        answer = Answer(model=model, started_at=0.0)
        answers.append(answer)
        calls.append([])
        interrupted = stream_answer(ctx, answer, chat_source(ctx.client, req), redraw)
        record = answer.timing(kind="chat", host=ctx.client.host, cell=ctx.cell, interrupted=interrupted)
        records.append(record)
        keep_timing(ctx, answer, record)
        if interrupted or answer.error is not None:
            break
        messages.append(answer.message())
        if not answer.tool_calls or toolbox is None:
            break
        calls[-1] = _execute_calls(ctx, toolbox, answer, inspector, messages)
        redraw()
    body = render_body(answers, calls, as_json=fmt is not None, partial=interrupted)
    plain = render_body(answers, calls, as_json=fmt is not None, partial=interrupted, escape=False)
    if answers[-1].tool_calls and not interrupted and answers[-1].error is None:
        stopped = f"\n\n*(stopped after {ctx.max_tool_rounds} rounds of tool calls)*"
        body, plain = body + stopped, plain + stopped
    meta = _metadata(ctx, args, model, "chat", records)
    bundle = _finish(ctx, args, live, (body, plain), answers[-1], _footer(model, records), meta)
    result = ChatResult(
        model=model,
        text=answers[-1].text,
        thinking=answers[-1].thought,
        tool_calls=[c for round_calls in calls for c in round_calls],
        timings=records,
        interrupted=interrupted,
        markdown=bundle.get("text/markdown", body),
        inspector=inspector,
    )
    if interrupted:
        raise Interrupted(result)
    ctx.session.threads[args.thread] = messages
    if args.persist:  # only a completed exchange: an interrupted or failed one raised above
        from nbllm.notebook.threads import save_thread

        save_thread(ctx.session, args, model, messages, ctx.client.host)
    return result


def _chat_request(
    args: ChatArgs, model: str, messages: list[Message], toolbox: ToolBox | None, fmt: Any, *, first: bool
) -> ChatRequest:
    """One round's request; ``--tool-choice`` applies to the first round only (then the model answers)."""
    return ChatRequest(
        model=model,
        messages=list(messages),
        tools=toolbox.tools() if toolbox is not None else None,
        tool_choice=_choice(args.tool_choice) if first else None,
        format=fmt,
        options=dict(args.options) or None,
        think=args.think,
        keep_alive=args.keep_alive,
    )


def _execute_calls(
    ctx: CellContext, toolbox: ToolBox, answer: Answer, inspector: Any, messages: list[Message]
) -> list[ToolCallRecord]:
    """Run the answer's tool calls on the cell thread (their output lands in this cell); add the results."""
    done = []
    for call in answer.tool_calls:
        record = toolbox.call(call.function.name, call.function.arguments, call_id=call.id)
        done.append(record)
        ctx.session.tool_calls.append(record)
        if inspector is not None:
            inspector.add(record)
        messages.append(Message(role="tool", content=record.content, tool_name=record.name, tool_call_id=call.id))
    return done


def _choice(value: str | None) -> str | dict[str, Any] | None:
    if value is None or value in ("auto", "none", "required"):
        return value
    return {"type": "function", "function": {"name": value}}


def _inspector(toolbox: ToolBox) -> Any:
    from nbllm.notebook.widgets.inspector import ToolCallInspector

    inspector = ToolCallInspector(toolbox)
    show(inspector)
    return inspector


def run_generate(ctx: CellContext, args: ChatArgs, model: str, prompt: str) -> ChatResult:
    """One ``%%generate`` cell with one model."""
    fmt = resolve_format(args.format, ctx.namespace)
    req = GenerateRequest(
        model=model,
        prompt=prompt,
        system=args.system,
        raw=args.raw,
        format=fmt,
        options=dict(args.options) or None,
        think=args.think,
        keep_alive=args.keep_alive,
    )
    display = LiveDisplay(interval=ctx.interval, live=args.stream)
    display.show({"text/plain": f"{model}: …", "text/markdown": f"<sub>{model} …</sub>"}, raw=True)
    answer = Answer(model=model, started_at=0.0)
    live = LiveAnswer(display, interval=ctx.interval)

    def redraw() -> None:
        live.redraw([answer], [])

    interrupted = stream_answer(ctx, answer, generate_source(ctx.client, req), redraw)
    record = answer.timing(kind="generate", host=ctx.client.host, cell=ctx.cell, interrupted=interrupted)
    keep_timing(ctx, answer, record)
    bodies = tuple(
        render_body([answer], [], as_json=fmt is not None, partial=interrupted, escape=escape)
        for escape in (True, False)
    )
    meta = _metadata(ctx, args, model, "generate", [record])
    bundle = _finish(ctx, args, live, (bodies[0], bodies[1]), answer, _footer(model, [record]), meta)
    body = bodies[0]
    result = ChatResult(
        model=model,
        text=answer.text,
        thinking=answer.thought,
        timings=[record],
        interrupted=interrupted,
        markdown=bundle.get("text/markdown", body),
    )
    if interrupted:
        raise Interrupted(result)
    return result
