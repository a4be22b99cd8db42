"""``%bench``: compare models' eval timings, or benchmark serving under load.

``run_bench`` (``%bench MODEL MODEL ... --prompt TEXT -n RUNS``): the same prompt N times per model,
then a plot. Runs are sequential (each model measured alone), each a fresh one-message chat, so the
first run of a model shows its load time and later runs its warm speed. Every run joins ``%timings``.

``run_serving_bench`` (``%bench MODEL... -c 1,2,4,8 ...``, the flags of ``nbllm bench``): the serving
benchmark of :mod:`nbllm.benchmark` against this kernel's engine (``--host local``, no HTTP), its
server, or any Ollama-API or OpenAI-compatible host, with a tqdm.auto progress bar; interrupting the
kernel (Ctrl-C, the stop button) ends it early and still returns the requests measured so far.
"""

from __future__ import annotations

import base64
import html
import io
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from nbllm.client import Client
from nbllm.errors import InvalidRequest
from nbllm.notebook.answer import Answer
from nbllm.notebook.bench_args import BenchArgs
from nbllm.notebook.chat import CellContext, as_nbllm_error, chat_source, keep_timing, stream_answer
from nbllm.notebook.display import LiveDisplay, markdown_table, show
from nbllm.notebook.plots import model_stats
from nbllm.notebook.session import LOCAL, NotebookSession
from nbllm.notebook.timing import TimingRecord, timing_frame
from nbllm.schema import ChatRequest, Message

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

    from nbllm.benchmark import BenchResult
    from nbllm.benchmark.runner import ProgressBar

__all__ = ["run_bench", "run_serving_bench", "serving_hosts"]

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


def _progress(done: int, total: int, model: str, last: TimingRecord | None) -> dict[str, str]:
    text = f"bench: run {done}/{total} · {model}" + (f" · last: {last.summary()}" if last else "")
    return {"text/plain": text, "text/markdown": f"<sub>{text}</sub>"}


def summary_markdown(frame: pd.DataFrame) -> str:
    """Mean ± sd of generation speed, and mean stage times, per model."""
    stats = model_stats(frame)
    rows = [
        [
            str(model),
            str(int(row["runs"])),
            f"{row['eval_tok_s']:.1f} ± {row['eval_tok_s_std']:.1f}",
            f"{row['prompt_tok_s']:.1f}",
            f"{row['ttft_s']:.2f}",
            f"{row['load_s']:.2f}",
            f"{row['prompt_eval_s']:.2f}",
            f"{row['eval_s']:.2f}",
        ]
        for model, row in stats.iterrows()
    ]
    headers = ["model", "runs", "tok/s", "prompt tok/s", "first token (s)", "load (s)", "prompt eval (s)", "gen (s)"]
    return markdown_table(headers, rows)


def run_bench(ctx: CellContext, args: BenchArgs) -> pd.DataFrame:
    """Run the benchmark, show the summary table and the plot; return the runs as a timing DataFrame."""
    records: list[TimingRecord] = []
    total = len(args.models) * args.runs
    progress = LiveDisplay(interval=0.0)
    progress.show(_progress(0, total, args.models[0], None), raw=True)
    for model in args.models:
        for _ in range(args.runs):
            req = ChatRequest(
                model=model, messages=[Message(role="user", content=args.prompt)], options=dict(args.options)
            )
            answer = Answer(model=model, started_at=0.0)
            interrupted = stream_answer(ctx, answer, chat_source(ctx.client, req), lambda: None, probe=False)
            record = answer.timing(kind="bench", host=ctx.client.host, cell=ctx.cell, interrupted=interrupted)
            keep_timing(ctx, answer, record)
            if interrupted:
                progress.finish(_progress(len(records), total, model, None))
                raise KeyboardInterrupt
            if answer.error is not None:
                progress.finish({"text/plain": ""})
                raise as_nbllm_error(answer.error)
            records.append(record)
            progress.update(_progress(len(records), total, model, record), force=True)
    frame = timing_frame(records)
    table = summary_markdown(frame)
    meta = {"nbllm": {"kind": "bench", "prompt": args.prompt, "options": dict(args.options), "runs": args.runs}}
    progress.finish({"text/markdown": table, "text/plain": table}, meta)
    show(frame.plot(title=f"{args.runs} run(s) per model: {args.prompt[:60]}"))
    return frame


def serving_hosts(session: NotebookSession, host: str | Sequence[str] | None) -> tuple[str, ...]:
    """Targets of the serving benchmark: those given (``local``: this kernel's engine, no HTTP); else the
    kernel's server, the one at OLLAMA_HOST if it answers, or this kernel's engine."""
    if isinstance(host, str):
        host = (host,)
    if host:
        return tuple(host)
    if session.server is not None and session.server.running:
        return (session.server.url,)
    client = session.client(None)
    if isinstance(client, Client):
        return (client.host,)
    return (LOCAL,)


def _png(figure: Figure) -> dict[str, str]:
    buf = io.BytesIO()
    figure.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    title = figure.axes[0].get_title() if figure.axes else "plot"
    return {"image/png": base64.b64encode(buf.getvalue()).decode("ascii"), "text/plain": f"<nbllm bench: {title}>"}


def run_serving_bench(
    session: NotebookSession,
    models: Sequence[str],
    *,
    host: str | Sequence[str] | None = None,
    out: str | None = None,
    plots: bool = True,
    stop: threading.Event | None = None,
    **flags: Any,
) -> BenchResult:
    """Run the serving benchmark (``flags``: ``nbllm bench``'s, e.g. ``concurrency="1,2,4"``), show its plots,
    save to ``out`` if given and return the :class:`~nbllm.benchmark.BenchResult` (partial if interrupted)."""
    from nbllm.benchmark import run_benchmark
    from nbllm.benchmark.flags import spec_from_flags

    targets = serving_hosts(session, host)
    try:
        spec = spec_from_flags(models, targets, **flags)
    except (ValueError, TypeError) as exc:
        raise InvalidRequest(f"%bench: {exc}") from None
    result = run_benchmark(
        spec,
        progress=progress_bar,
        stop=stop,
        settings=session.settings,
        runtime=session.runtime if LOCAL in targets else None,
    )
    if out:
        result.save(out, with_plots=plots)
    if plots and not result.runs.empty:
        for figure in result.plots().values():
            show(_png(figure), raw=True)
    return result


def progress_bar(total: int) -> ProgressBar:
    """tqdm.auto's bar for ``total`` requests; in a notebook a widget whose text fallback ends as its last line.

    A widget output's saved ``text/plain`` is tqdm's line as first displayed (``0%| | 0/64``): a saved
    notebook read where the widget cannot be drawn (nbconvert, GitHub, no widget state) would show that,
    so at the end the output is replaced by the same widget with the final line as its fallback.
    """
    from tqdm.auto import tqdm
    from tqdm.notebook import tqdm as notebook_tqdm

    if not issubclass(tqdm, notebook_tqdm):
        bar: ProgressBar = tqdm(total=total, unit="req")
        return bar
    return _StaticOnClose(tqdm(total=total, unit="req", display=False))


class _StaticOnClose:
    """A notebook tqdm bar shown under a display id; ``close`` replaces it with its final line as text."""

    def __init__(self, bar: Any) -> None:
        self._bar = bar
        self._out = LiveDisplay(interval=0.0)
        self._out.show(bar.container)
        bar.displayed = True

    def update(self, n: float | None = 1) -> bool | None:
        """Count ``n`` more finished requests."""
        done: bool | None = self._bar.update(n)
        return done

    def set_description(self, desc: str | None = None) -> None:
        """Say which run is going."""
        self._bar.set_description(desc)

    def close(self) -> None:
        """Finish the bar: the widget stays, its text fallback is the final line (``100%|███| 64/64 [00:30<…]``)."""
        self._bar.close()
        line = str(self._bar)
        # the static copies a reader sees where the widget cannot be drawn (no kernel, nbconvert, GitHub)
        bundle: dict[str, Any] = {"text/plain": line, "text/html": f"<pre>{html.escape(line, quote=False)}</pre>"}
        model_id = getattr(self._bar.container, "model_id", None)
        if model_id:  # (a closed widget has none: then the line alone)
            bundle[WIDGET_VIEW] = {"version_major": 2, "version_minor": 0, "model_id": model_id}
        self._out.finish(bundle)
