"""``NbllmMagics``: the line magics (``%pull``, ``%list``, ``%show``, ``%ps``, ``%stop``, ``%rm``, ``%serve``,
``%timings``, ``%threads``, ``%bench``) and the cell magics (``%%chat``, ``%%generate``).

Each magic declares its flags with IPython's ``@magic_arguments``/``@argument`` (``%chat?`` shows
the generated help), parses its line into a typed args object (:mod:`nbllm.notebook.magic_args`)
and hands it to its handler. nbllm errors surface as IPython ``UsageError``: one line, no
traceback, and the cell still counts as failed for nbclient/papermill. Options are traitlets:
``%config NbllmMagics.default_model = "gemma3:270m"``.
"""

from __future__ import annotations

import dataclasses
from collections import ChainMap
from collections.abc import Callable
from typing import Any, cast

from IPython.core import magic as _ipython_magic
from IPython.core.error import UsageError
from IPython.core.magic import Magics, magics_class
from traitlets import Bool, Dict, Float, Int, Unicode

from nbllm.client import BaseClient
from nbllm.errors import NbllmError
from nbllm.notebook.bench_args import BenchArgs, bench_arguments
from nbllm.notebook.display import LiveDisplay, Note, server_note
from nbllm.notebook.interpolation import CellErrors, interpolate, strip_markers
from nbllm.notebook.magic_args import (
    ArgumentDecorator,
    ChatArgs,
    ModelArgs,
    PsArgs,
    PullArgs,
    ServeArgs,
    ShowArgs,
    ThreadsArgs,
    TimingsArgs,
    argument,
    cell_arguments,
    help_option,
    host_option,
    magic_arguments,
    parse_line,
    show_field_options,
)
from nbllm.notebook.magic_errors import friendly, quiet_interrupt
from nbllm.notebook.session import NotebookSession
from nbllm.schema import GenerateRequest

__all__ = ["NbllmMagics", "quiet_interrupt"]

# IPython types its markers as "the function, or a decorator" (they also take a name); ours take the function
line_magic = cast(ArgumentDecorator, _ipython_magic.line_magic)
cell_magic = cast(ArgumentDecorator, _ipython_magic.cell_magic)


@magics_class
class NbllmMagics(Magics):
    """nbllm's magics; one instance per loaded extension, holding the notebook's :class:`NotebookSession`."""

    default_model = Unicode("smollm2:135m", help="Model used when a cell names none.").tag(config=True)
    host = Unicode("", help="Server of every magic ('' = %serve's, else OLLAMA_HOST, else 'local').").tag(config=True)
    update_interval = Float(0.1, help="Seconds between updates of a streaming answer.").tag(config=True)
    stream = Bool(default_value=True, help="Stream answers (False: only the final answer, for CI).").tag(config=True)
    interpolate = Bool(default_value=True, help="Replace {name} in cells by notebook variables.").tag(config=True)
    show_stats = Bool(default_value=True, help="Show model and speed under each answer.").tag(config=True)
    max_tool_rounds = Int(8, help="Most rounds of tool calls in one %%chat cell.").tag(config=True)
    api_key_env = Unicode(
        "OPENAI_API_KEY", help="Environment variable with the API key of openai+URL hosts (never shown)."
    ).tag(config=True)
    hosts = Dict(
        help="Hosts for --host NAME: {name: URL or {'url': URL, 'api_key_env': VAR}} (and NBLLM_HOME/hosts.ini)."
    ).tag(config=True)

    def __init__(self, shell: Any = None, *, session: NotebookSession | None = None, **kwargs: Any) -> None:
        super().__init__(shell=shell, **kwargs)
        self.session = session or NotebookSession()
        self.shadowed: dict[str, Any] = {}
        """Line magics of the same names that loading replaced (IPython's ``%rm`` alias), restored on unload."""
        self.shadowed_aliases: list[tuple[str, str]] = []
        """IPython default aliases of the same names, kept from being re-defined while loaded."""
        self.errors = CellErrors()
        """Errors of failed cells, for ``{Err}`` in prompts (recorded by a ``post_run_cell`` callback)."""
        self.last_host: str | None = None
        """The backend of the last cell magic, to say once when it changes (after ``%serve stop``)."""
        self.host_notes: dict[str, str] = {}  # {server URL: note} of --host words no profile had (for errors)
        self.magics["line"]["list"] = self.list_models  # `list` is a builtin: the method has another name

    # -- plumbing ---------------------------------------------------------------------------------

    def _client(self, host: str | None) -> BaseClient:
        from nbllm.notebook.hosts import host_notes, resolve_magic_host

        given = host or self.host or None
        self.host_notes.update(host_notes([given], self.hosts, self.session.settings))
        url, self.session.api_key_env = resolve_magic_host(
            given, self.hosts, self.session.settings, self.api_key_env or None
        )
        return self.session.client(url)

    def _context(self, client: BaseClient) -> Any:
        from nbllm.notebook.chat import CellContext

        return CellContext(
            client=client,
            session=self.session,
            namespace=self.shell.user_ns if self.shell is not None else {},
            interval=self.update_interval,
            show_stats=self.show_stats,
            max_tool_rounds=self.max_tool_rounds,
            cell=getattr(self.shell, "execution_count", None),
            set_next_input=self._set_next_input if self.shell is not None else None,
        )

    # -- line magics: flags, then the handler ------------------------------------------------------

    @line_magic
    @friendly
    @magic_arguments()
    @help_option
    @argument("model")
    @argument("--insecure", action="store_true", help="use an insecure registry")
    @host_option
    def pull(self, line: str) -> None:
        """Pull a model, with a live progress bar."""
        self._pull(parse_line(self.pull, line, PullArgs))

    @friendly
    @magic_arguments("list")
    @help_option
    @host_option
    def list_models(self, line: str) -> Any:
        """List local models (a DataFrame)."""
        return self._list(parse_line(self.list_models, line, ModelArgs))

    @line_magic
    @friendly
    @magic_arguments()
    @help_option
    @argument("model")
    @show_field_options
    @argument("-v", "--verbose", action="store_true", help="show more model information")
    @host_option
    def show(self, line: str) -> Any:
        """Show information about a model."""
        return self._show(parse_line(self.show, line, ShowArgs))

    @line_magic
    @friendly
    @magic_arguments()
    @help_option
    @argument("--watch", action="store_true", help="a live view refreshed every --interval seconds")
    @argument("--interval", type=float, default=1.0)
    @host_option
    def ps(self, line: str) -> Any:
        """List running models (a DataFrame; --watch refreshes live)."""
        return self._ps(parse_line(self.ps, line, PsArgs))

    @line_magic
    @friendly
    @magic_arguments()
    @help_option
    @argument("models", nargs="+")
    @host_option
    def stop(self, line: str) -> Note:
        """Stop (unload) a running model."""
        return self._stop(parse_line(self.stop, line, ModelArgs))

    @line_magic
    @friendly
    @magic_arguments()
    @help_option
    @argument("models", nargs="+")
    @host_option
    def rm(self, line: str) -> Note:
        """Remove models."""
        return self._rm(parse_line(self.rm, line, ModelArgs))

    @line_magic
    @friendly
    @magic_arguments()
    @help_option
    @argument("action", nargs="?", default="start", choices=("start", "stop", "status"))
    @argument("--host", default=None, help="address to bind (default from OLLAMA_HOST: 127.0.0.1)")
    @argument("--port", type=int, default=None, help="port (default 11434; 0 picks a free one)")
    @argument("--log", default=None, metavar="FILE", help="append the server's log to FILE (else it is dropped)")
    def serve(self, line: str) -> Any:
        """Start (or stop) the API server in a background thread of this kernel."""
        return self._serve(parse_line(self.serve, line, ServeArgs))

    @line_magic
    @friendly
    @magic_arguments()
    @help_option
    @argument("--plot", action="store_true", help="draw the comparison instead")
    @argument("--clear", action="store_true", help="forget the stats kept so far")
    @argument("--last", type=int, default=None, help="only the last N responses")
    def timings(self, line: str) -> Any:
        """Timing stats of every response (a DataFrame)."""
        return self._timings(parse_line(self.timings, line, TimingsArgs))

    @line_magic
    @friendly
    @magic_arguments()
    @help_option
    @argument("--delete", default=None, metavar="NAME", help="delete a saved thread")
    def threads(self, line: str) -> Any:
        """Saved conversations (%%chat --persist): name, model, turns, bytes, last change (a DataFrame)."""
        from nbllm.notebook.threads import threads_magic

        return threads_magic(self.session, parse_line(self.threads, line, ThreadsArgs))

    @line_magic
    @friendly
    @magic_arguments()
    @help_option
    @bench_arguments
    def bench(self, line: str) -> Any:
        """Compare models on one prompt (N runs each, then a plot), or benchmark serving under load (-c, ...)."""
        return self._bench(parse_line(self.bench, line, BenchArgs))

    # -- cell magics --------------------------------------------------------------------------------

    @cell_magic
    @friendly
    @magic_arguments()
    @help_option
    @cell_arguments("chat")
    def chat(self, line: str, cell: str) -> Note | None:
        """Send the cell to a model; the answer streams into the cell as Markdown."""
        self._cell("chat", parse_line(self.chat, line, ChatArgs), cell)
        return None

    @cell_magic
    @friendly
    @magic_arguments()
    @help_option
    @cell_arguments("generate")
    def generate(self, line: str, cell: str) -> Note | None:
        """Send the cell to a model as a raw completion; the answer streams into the cell as Markdown."""
        self._cell("generate", parse_line(self.generate, line, ChatArgs), cell)
        return None

    def _cell(self, kind: str, args: ChatArgs, cell: str) -> None:
        from nbllm.notebook.chat import Interrupted, run_chat, run_generate
        from nbllm.notebook.compare import run_compare

        args = dataclasses.replace(args, stream=args.stream and self.stream)
        prompt = strip_markers(cell)
        if args.interpolate and self.interpolate and self.shell is not None:
            prompt = interpolate(prompt, ChainMap(self.shell.user_ns, {"Err": self.errors}))
        prompt = prompt.strip("\n")
        if not prompt.strip():
            raise UsageError(f"the cell is empty: write the {'message' if kind == 'chat' else 'prompt'} under %%{kind}")
        ctx = self._context(self._client(args.host))
        if args.persist:
            from nbllm.notebook.threads import resume_thread

            args = resume_thread(self.session, args, self.default_model, ctx.client.host)
        models = list(args.models) or [self.default_model]
        self._say_backend(ctx.client.host)
        try:
            if len(models) > 1:
                result: Any = run_compare(ctx, args, models, prompt, kind)
            elif kind == "chat":
                result = run_chat(ctx, args, models[0], prompt)
            else:
                result = run_generate(ctx, args, models[0], prompt)
        except Interrupted as exc:
            if args.var and self.shell is not None:
                self.shell.user_ns[args.var] = exc.result
            self._keep_widgets(exc.result)
            raise KeyboardInterrupt from None
        self._keep_widgets(result)
        if args.var and self.shell is not None:
            self.shell.user_ns[args.var] = result

    def _set_next_input(self, text: str) -> None:
        if self.shell is not None:
            self.shell.set_next_input(text, replace=False)

    def _say_backend(self, host: str) -> None:
        from nbllm.notebook.chat import backend_note
        from nbllm.notebook.display import show

        note = backend_note(self.last_host, host)
        self.last_host = host
        if note is not None:
            show(Note(note))

    def _keep_widgets(self, result: Any) -> None:
        """Hand the cell's live widgets (tool inspectors) to the session, which freezes them at shutdown."""
        for item in result if isinstance(result, list) else [result]:
            inspector = getattr(item, "inspector", None)
            if inspector is not None:
                self.session.keep(inspector)

    # -- handlers -----------------------------------------------------------------------------------

    def _pull(self, args: PullArgs) -> None:
        from nbllm.notebook.streaming import StreamPump
        from nbllm.notebook.widgets.progress import PullProgress

        client = self._client(args.host)
        progress = PullProgress(args.model)
        live = LiveDisplay(interval=self.update_interval)
        live.show(progress)
        pump: StreamPump[Any] = StreamPump([lambda: client.pull(args.model, insecure=args.insecure)]).start()
        error: BaseException | None = None
        try:
            for event in pump.events():
                if event is not None and event.error is not None:
                    error = event.error
                elif event is not None and event.item is not None:
                    progress.feed(event.item)
        except KeyboardInterrupt:
            pump.stop()
            live.finish({"text/plain": progress.text() + "\ninterrupted"})
            raise
        text = progress.text()  # an error is shown once, by the UsageError below
        live.finish({"text/plain": text, "text/markdown": f"```\n{text}\n```"}, {"nbllm": {"pull": args.model}})
        if error is not None:
            raise error if isinstance(error, NbllmError) else NbllmError(str(error))

    def _list(self, args: ModelArgs) -> Any:
        from nbllm.notebook.tables import models_frame

        return models_frame(self._client(args.host).list_models())

    def _show(self, args: ShowArgs) -> Any:
        from nbllm.notebook.show import ShowView

        resp = self._client(args.host).show(args.model, verbose=args.verbose)
        return ShowView(args.model, resp, field=args.field, verbose=args.verbose)

    def _ps(self, args: PsArgs) -> Any:
        from nbllm.notebook.tables import ps_frame

        client = self._client(args.host)
        if not args.watch:
            return ps_frame(client.ps())
        from nbllm.notebook.widgets.ps import PsView

        view = PsView(client.ps, interval=args.interval).start()
        self.session.keep(view)
        return view

    def _stop(self, args: ModelArgs) -> Note:
        client = self._client(args.host)
        for model in args.models:
            client.generate(GenerateRequest(model=model, keep_alive=0), stream=False)
        return Note("stopped " + ", ".join(args.models))

    def _rm(self, args: ModelArgs) -> Note:
        client = self._client(args.host)
        for model in args.models:
            client.delete(model)
        return Note("\n".join(f"deleted '{m}'" for m in args.models))

    def _serve(self, args: ServeArgs) -> Any:
        actions: dict[str, Callable[[], Any]] = {
            "start": lambda: server_note(self.session.serve(args.host, args.port, log=args.log).url),
            "stop": self._serve_stop,
            "status": self._serve_status,
        }
        return actions[args.action]()

    def _serve_stop(self) -> Note:
        url = self.session.stop_server()
        return Note(f"stopped the server at {url}" if url else "no server is running in this kernel")

    def _serve_status(self) -> Any:
        server = self.session.server
        if server is None or not server.running:
            return Note("no server is running in this kernel (start one with %serve)")
        return server_note(server.url)

    def _timings(self, args: TimingsArgs) -> Any:
        if args.clear:
            self.session.timings.clear()
            return Note("timings cleared")
        frame = self.session.timings.frame()
        if args.last is not None:
            frame = frame.tail(args.last)
        return frame.plot() if args.plot else frame

    def _bench(self, args: BenchArgs) -> Any:
        from nbllm.notebook.bench import run_bench, run_serving_bench

        if args.serving is None:
            return run_bench(self._context(self._client(args.host)), args)
        from nbllm.notebook.hosts import host_notes, resolve_hosts

        flags = {"api_key_env": self.api_key_env or None, **args.serving}
        given = args.hosts or ((self.host,) if self.host else ())
        settings, key_env = self.session.settings, flags["api_key_env"]
        self.host_notes.update(host_notes(given, self.hosts, settings))
        hosts, flags["key_envs"], flags["names"] = resolve_hosts(given, self.hosts, settings, key_env)
        return run_serving_bench(self.session, args.models, host=hosts or None, out=args.out, plots=args.plots, **flags)
