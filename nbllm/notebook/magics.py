"""``NbllmMagics``: the line magics (``%pull``, ``%list``, ``%show``, ``%ps``, ``%stop``, ``%rm``, ``%serve``,
``%timings``, ``%bench``) and the cell magics (``%%chat``, ``%%generate``).

Each magic parses its line into a typed args object (:mod:`nbllm.notebook.magic_args`) and is
dispatched through a table. nbllm errors surface as IPython ``UsageError``: one line, no
traceback, and the cell still counts as failed for nbclient/papermill. Options are traitlets:
``%config NbllmMagics.default_model = "gemma3:270m"``.
"""

from __future__ import annotations

import dataclasses
import functools
from collections import ChainMap
from collections.abc import Callable
from typing import Any, TypeVar

from IPython.core.error import UsageError
from IPython.core.magic import Magics, cell_magic, line_magic, magics_class
from traitlets import Bool, Float, Int, Unicode

from nbllm.client import BaseClient
from nbllm.errors import NbllmError, NotFound
from nbllm.notebook.display import LiveDisplay, Note, Rich
from nbllm.notebook.interpolation import CellErrors, interpolate, strip_markers
from nbllm.notebook.magic_args import HelpRequested, MagicArgumentError, parse
from nbllm.notebook.session import NotebookSession
from nbllm.schema import GenerateRequest

__all__ = ["NbllmMagics"]

F = TypeVar("F", bound=Callable[..., Any])


def _friendly(fn: F) -> F:
    """Turn nbllm and argument errors into one-line UsageErrors; ``-h`` shows the help; interrupts stop quietly."""

    @functools.wraps(fn)
    def wrapper(self: NbllmMagics, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(self, *args, **kwargs)
        except KeyboardInterrupt:
            raise quiet_interrupt(self.shell) from None
        except HelpRequested as exc:
            return Note(exc.text)
        except MagicArgumentError as exc:
            raise UsageError(str(exc)) from None
        except NotFound as exc:
            raise UsageError(f"{exc.message} (pull it with %pull)" if "model" in exc.message else exc.message) from None
        except NbllmError as exc:
            raise UsageError(exc.message) from None

    return wrapper  # type: ignore[return-value]


def quiet_interrupt(shell: Any) -> KeyboardInterrupt:
    """A KeyboardInterrupt that fails the cell (so Run All stops there) but shows no traceback.

    What the magic showed (the partial answer and its "interrupted" footer) stays the cell's only
    output, as Ctrl-C in ``ollama run``. IPython hands exceptions listed in ``custom_exceptions`` to
    ``CustomTB`` instead of printing a traceback; ours is set for this cell only and the previous
    handler is put back when the cell ends.
    """
    exc = KeyboardInterrupt()
    if shell is None or not hasattr(shell, "set_custom_exc") or not hasattr(shell, "events"):
        return exc
    saved_types, saved_handler = shell.custom_exceptions, shell.CustomTB

    def handler(sh: Any, etype: type[BaseException], value: BaseException, tb: Any, tb_offset: Any = None) -> Any:
        if value is exc:
            return None  # the cell fails with nothing printed
        if isinstance(value, saved_types):
            return saved_handler(etype, value, tb, tb_offset=tb_offset)
        sh.showtraceback((etype, value, tb), tb_offset=tb_offset)
        return None

    def restore(*_args: Any) -> None:
        shell.custom_exceptions, shell.CustomTB = saved_types, saved_handler
        shell.events.unregister("post_run_cell", restore)

    shell.set_custom_exc((*saved_types, KeyboardInterrupt), handler)
    shell.events.register("post_run_cell", restore)
    return exc


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
        self.magics["line"]["list"] = self.list_models  # `list` is a builtin: the method has another name
        self._handlers: dict[str, Callable[[Any], Any]] = {
            "pull": self._pull,
            "list": self._list,
            "show": self._show,
            "ps": self._ps,
            "stop": self._stop,
            "rm": self._rm,
            "serve": self._serve,
            "timings": self._timings,
            "bench": self._bench,
        }

    # -- plumbing ---------------------------------------------------------------------------------

    def _client(self, host: str | None) -> BaseClient:
        return self.session.client(host or self.host or None)

    @_friendly
    def _line(self, name: str, line: str) -> Any:
        return self._handlers[name](parse(name, line))

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

    # -- line magics --------------------------------------------------------------------------------

    @line_magic
    def pull(self, line: str) -> Any:
        """%pull MODEL [--insecure] [--host URL]: download a model, with a live progress bar."""
        return self._line("pull", line)

    def list_models(self, line: str) -> Any:
        """%list [--host URL]: local models, as a DataFrame."""
        return self._line("list", line)

    @line_magic
    def show(self, line: str) -> Any:
        """%show MODEL [--template|--modelfile|--parameters|--system|--license] [-v]: model details."""
        return self._line("show", line)

    @line_magic
    def ps(self, line: str) -> Any:
        """%ps [--watch [--interval S]]: running models, as a DataFrame (or a live view)."""
        return self._line("ps", line)

    @line_magic
    def stop(self, line: str) -> Any:
        """%stop MODEL...: unload running models."""
        return self._line("stop", line)

    @line_magic
    def rm(self, line: str) -> Any:
        """%rm MODEL...: delete models from the store."""
        return self._line("rm", line)

    @line_magic
    def serve(self, line: str) -> Any:
        """%serve [--host H] [--port P] [--log FILE] | %serve stop | %serve status: the API server in this kernel."""
        return self._line("serve", line)

    @line_magic
    def timings(self, line: str) -> Any:
        """%timings [--plot] [--last N] [--clear]: timing stats of every response, as a DataFrame."""
        return self._line("timings", line)

    @line_magic
    def bench(self, line: str) -> Any:
        """%bench MODEL [MODEL...] [--prompt TEXT] [-n RUNS] [-o key=value]: compare models, with a plot."""
        return self._line("bench", line)

    # -- cell magics --------------------------------------------------------------------------------

    @cell_magic
    def chat(self, line: str, cell: str) -> None:
        """%%chat [MODEL] [-m MODEL...] [-s SYSTEM] [-o k=v] [--format json|VAR] [--tools f,g] [--thread NAME|--new]."""
        self._cell("chat", line, cell)

    @cell_magic
    def generate(self, line: str, cell: str) -> None:
        """%%generate [MODEL] [-m MODEL...] [-s SYSTEM] [-o k=v] [--format json|VAR] [--raw]: raw completion."""
        self._cell("generate", line, cell)

    @_friendly
    def _cell(self, kind: str, line: str, cell: str) -> None:
        from nbllm.notebook.chat import Interrupted, run_chat, run_generate
        from nbllm.notebook.compare import run_compare

        args = parse(kind, line)
        args = dataclasses.replace(args, stream=args.stream and self.stream)
        prompt = strip_markers(cell)
        if args.interpolate and self.interpolate and self.shell is not None:
            prompt = interpolate(prompt, ChainMap(self.shell.user_ns, {"Err": self.errors}))
        prompt = prompt.strip("\n")
        if not prompt.strip():
            raise UsageError(f"the cell is empty: write the {'message' if kind == 'chat' else 'prompt'} under %%{kind}")
        models = list(args.models) or [self.default_model]
        ctx = self._context(self._client(args.host))
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

    def _pull(self, args: Any) -> None:
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

    def _list(self, args: Any) -> Any:
        from nbllm.notebook.tables import models_frame

        return models_frame(self._client(args.host).list_models())

    def _show(self, args: Any) -> Any:
        from nbllm.notebook.show import ShowView

        resp = self._client(args.host).show(args.model, verbose=args.verbose)
        return ShowView(args.model, resp, field=args.field, verbose=args.verbose)

    def _ps(self, args: Any) -> Any:
        from nbllm.notebook.tables import ps_frame

        client = self._client(args.host)
        if not args.watch:
            return ps_frame(client.ps())
        from nbllm.notebook.widgets.ps import PsView

        view = PsView(client.ps, interval=args.interval).start()
        self.session.keep(view)
        return view

    def _stop(self, args: Any) -> Note:
        client = self._client(args.host)
        for model in args.models:
            client.generate(GenerateRequest(model=model, keep_alive=0), stream=False)
        return Note("stopped " + ", ".join(args.models))

    def _rm(self, args: Any) -> Note:
        client = self._client(args.host)
        for model in args.models:
            client.delete(model)
        return Note("\n".join(f"deleted '{m}'" for m in args.models))

    def _serve(self, args: Any) -> Any:
        actions: dict[str, Callable[[], Any]] = {
            "start": lambda: self._server_note(self.session.serve(args.host, args.port, log=args.log).url),
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
        return self._server_note(server.url)

    @staticmethod
    def _server_note(url: str) -> Rich:
        hostport = url.removeprefix("http://")
        plain = (
            f"nbllm server running at {url}\n"
            f"  curl {url}/api/tags\n"
            f"  ollama.Client(host={url!r})\n"
            f"  OLLAMA_HOST={hostport} nbllm list"
        )
        markdown = (
            f"nbllm server running at **{url}**\n\n```\ncurl {url}/api/tags\n"
            f"ollama.Client(host={url!r})\nOLLAMA_HOST={hostport} nbllm list\n```"
        )
        note = Rich(markdown, plain, metadata={"nbllm": {"server": url}})
        note.url = url  # type: ignore[attr-defined]
        return note

    def _timings(self, args: Any) -> Any:
        if args.clear:
            self.session.timings.clear()
            return Note("timings cleared")
        frame = self.session.timings.frame()
        if args.last is not None:
            frame = frame.tail(args.last)
        return frame.plot() if args.plot else frame

    def _bench(self, args: Any) -> Any:
        from nbllm.notebook.bench import run_bench

        return run_bench(self._context(self._client(args.host)), args)
