"""Arguments of the magics, parsed (``shlex`` + ``argparse``) into frozen dataclasses.

Parsers never exit the kernel: a bad line raises :class:`MagicArgumentError` and ``-h`` raises
:class:`HelpRequested` carrying the help text.
"""

from __future__ import annotations

import argparse
import functools
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NoReturn

from nbllm.errors import InvalidOption
from nbllm.options import parse_parameter

__all__ = [
    "BenchArgs",
    "ChatArgs",
    "HelpRequested",
    "MagicArgumentError",
    "ModelArgs",
    "PsArgs",
    "PullArgs",
    "ServeArgs",
    "ShowArgs",
    "TimingsArgs",
    "parse",
    "parse_options",
]

SHOW_FIELDS = ("license", "modelfile", "parameters", "system", "template")


class MagicArgumentError(ValueError):
    """A magic's line did not parse; the message says why (with the usage)."""


class HelpRequested(Exception):
    """``-h``/``--help`` was given; ``text`` is the help."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise MagicArgumentError(f"{message}\n{self.format_usage().strip()}")

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        raise MagicArgumentError(message or f"%{self.prog} failed")

    def print_help(self, file: Any = None) -> None:
        raise HelpRequested(self.format_help())


def parse_options(pairs: Sequence[str]) -> dict[str, Any]:
    """``-o key=value`` pairs as typed model options (a repeated key, such as ``stop``, collects a list).

    >>> parse_options(["temperature=0", "num_predict=20", "stop=a", "stop=b"])
    {'temperature': 0.0, 'num_predict': 20, 'stop': ('a', 'b')}
    """
    raw: dict[str, list[str]] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise MagicArgumentError(f"option {pair!r} is not key=value")
        raw.setdefault(key.strip(), []).append(value)
    try:
        parsed = {key: parse_parameter(key, values) for key, values in raw.items()}
    except InvalidOption as exc:
        raise MagicArgumentError(str(exc)) from None
    return {k: v for k, v in parsed.items() if v is not None}


@dataclass(frozen=True)
class ModelArgs:
    """``%stop MODEL``, ``%rm MODEL...``, ``%list`` (models may be empty)."""

    models: tuple[str, ...] = ()
    host: str | None = None


@dataclass(frozen=True)
class PullArgs:
    """``%pull MODEL [--insecure]``."""

    model: str
    insecure: bool = False
    host: str | None = None


@dataclass(frozen=True)
class ShowArgs:
    """``%show MODEL [--template|--modelfile|--parameters|--system|--license] [-v]``."""

    model: str
    field: str | None = None
    verbose: bool = False
    host: str | None = None


@dataclass(frozen=True)
class PsArgs:
    """``%ps [--watch [--interval S]]``."""

    watch: bool = False
    interval: float = 1.0
    host: str | None = None


@dataclass(frozen=True)
class ServeArgs:
    """``%serve [--host H] [--port P] [--log FILE]``, ``%serve stop``, ``%serve status``."""

    action: str = "start"
    host: str | None = None
    port: int | None = None
    log: str | None = None


@dataclass(frozen=True)
class TimingsArgs:
    """``%timings [--plot] [--clear] [--last N]``."""

    plot: bool = False
    clear: bool = False
    last: int | None = None


@dataclass(frozen=True)
class BenchArgs:
    """``%bench MODEL [MODEL...] [--prompt TEXT] [-n RUNS] [-o key=value...]``."""

    models: tuple[str, ...]
    prompt: str = "Why is the sky blue?"
    runs: int = 3
    options: dict[str, Any] = field(default_factory=dict)
    host: str | None = None


@dataclass(frozen=True)
class ChatArgs:
    """``%%chat`` and ``%%generate``."""

    models: tuple[str, ...] = ()
    system: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    format: str | None = None
    tools: tuple[str, ...] = ()
    tool_choice: str | None = None
    thread: str = "default"
    new: bool = False
    think: bool = False
    raw: bool = False
    keep_alive: str | None = None
    var: str | None = None
    interpolate: bool = True
    stream: bool = True
    host: str | None = None
    output: str = "markdown"
    """``-f/--output-format``: markdown, text, json or code (see :mod:`nbllm.notebook.outputs`)."""


def _host(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default=None, help="server URL (Ollama or nbllm), or 'local' for this kernel")


def _output_format(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "-f",
        "--output-format",
        default="markdown",
        choices=("markdown", "md", "text", "json", "code"),
        help="show the answer as markdown (default), text, json (asks for JSON), or code (into a new cell below)",
    )


@functools.cache
def _parsers() -> dict[str, argparse.ArgumentParser]:
    parsers: dict[str, argparse.ArgumentParser] = {}

    def new(name: str, description: str) -> argparse.ArgumentParser:
        parser = _Parser(prog=name, description=description, add_help=True)
        parsers[name] = parser
        return parser

    p = new("pull", "Pull a model, with a live progress bar.")
    p.add_argument("model")
    p.add_argument("--insecure", action="store_true", help="use an insecure registry")
    _host(p)
    p = new("list", "List local models (a DataFrame).")
    _host(p)
    p = new("show", "Show information about a model.")
    p.add_argument("model")
    for name in SHOW_FIELDS:
        p.add_argument(f"--{name}", dest="field", action="store_const", const=name, help=f"show the {name}")
    p.add_argument("-v", "--verbose", action="store_true", help="show more model information")
    _host(p)
    p = new("ps", "List running models (a DataFrame; --watch refreshes live).")
    p.add_argument("--watch", action="store_true", help="a live view refreshed every --interval seconds")
    p.add_argument("--interval", type=float, default=1.0)
    _host(p)
    for name, text in (("stop", "Stop (unload) a running model."), ("rm", "Remove models.")):
        p = new(name, text)
        p.add_argument("models", nargs="+")
        _host(p)
    p = new("serve", "Start (or stop) the API server in a background thread of this kernel.")
    p.add_argument("action", nargs="?", default="start", choices=("start", "stop", "status"))
    p.add_argument("--host", default=None, help="address to bind (default from OLLAMA_HOST: 127.0.0.1)")
    p.add_argument("--port", type=int, default=None, help="port (default 11434; 0 picks a free one)")
    p.add_argument("--log", default=None, metavar="FILE", help="append the server's log to FILE (else it is dropped)")
    p = new("timings", "Timing stats of every response (a DataFrame).")
    p.add_argument("--plot", action="store_true", help="draw the comparison instead")
    p.add_argument("--clear", action="store_true", help="forget the stats kept so far")
    p.add_argument("--last", type=int, default=None, help="only the last N responses")
    p = new("bench", "Compare models on one prompt: N runs each, then a plot.")
    p.add_argument("models", nargs="+")
    p.add_argument("-p", "--prompt", default="Why is the sky blue?")
    p.add_argument("-n", "--runs", type=int, default=3)
    p.add_argument("-o", "--option", dest="options", action="append", default=[], metavar="KEY=VALUE")
    _host(p)
    for name in ("chat", "generate"):
        p = new(name, "Send the cell to a model; the answer streams into the cell as Markdown.")
        p.add_argument("model", nargs="?", default=None)
        p.add_argument("-m", "--model", dest="more_models", action="append", default=[], help="compare models")
        p.add_argument("-s", "--system", default=None, help="system prompt")
        p.add_argument("-o", "--option", dest="options", action="append", default=[], metavar="KEY=VALUE")
        p.add_argument("--format", default=None, help="'json' or the name of a variable holding a JSON schema")
        p.add_argument("--think", action="store_true", help="let a thinking model think (shown folded)")
        p.add_argument("--keep-alive", default=None, help="how long the model stays loaded (5m, 0, -1)")
        p.add_argument("--var", default=None, help="also store the result in this variable")
        p.add_argument("--no-interp", action="store_true", help="send {braces} exactly as written")
        p.add_argument("--no-stream", action="store_true", help="show only the final answer")
        _output_format(p)
        _host(p)
        if name == "chat":
            p.add_argument("--tools", default="", help="comma-separated names of Python functions the model may call")
            p.add_argument("--tool-choice", default=None, help="auto, none, required, or a function name")
            p.add_argument("--thread", default="default", help="conversation to continue")
            p.add_argument("--new", action="store_true", help="start the conversation afresh")
        else:
            p.add_argument("--raw", action="store_true", help="no prompt template")
    return parsers


def parse(magic: str, line: str) -> Any:
    """Parse the line of ``%magic`` (or the first line of ``%%magic``) into its args dataclass."""
    parser = _parsers()[magic]
    try:
        words = shlex.split(line)
    except ValueError as exc:
        raise MagicArgumentError(f"cannot split the line: {exc}") from None
    ns = parser.parse_args(words)
    return _BUILDERS[magic](ns)


def _models(ns: argparse.Namespace) -> tuple[str, ...]:
    return tuple(m for m in [ns.model, *ns.more_models] if m)


def _chat(ns: argparse.Namespace) -> ChatArgs:
    output = "markdown" if ns.output_format == "md" else ns.output_format
    models = _models(ns)
    if output != "markdown" and len(models) > 1:
        raise MagicArgumentError(f"-f {output} works with one model at a time")
    return ChatArgs(
        models=models,
        output=output,
        system=ns.system,
        options=parse_options(ns.options),
        format=ns.format if ns.format is not None or output != "json" else "json",
        tools=tuple(t.strip() for t in getattr(ns, "tools", "").split(",") if t.strip()),
        tool_choice=getattr(ns, "tool_choice", None),
        thread=getattr(ns, "thread", "default"),
        new=getattr(ns, "new", False),
        think=ns.think,
        raw=getattr(ns, "raw", False),
        keep_alive=ns.keep_alive,
        var=ns.var,
        interpolate=not ns.no_interp,
        stream=not ns.no_stream,
        host=ns.host,
    )


def _bench(ns: argparse.Namespace) -> BenchArgs:
    if ns.runs < 1:
        raise MagicArgumentError("-n must be at least 1")
    options = parse_options(ns.options)
    options.setdefault("num_predict", 128)  # comparable, bounded runs
    return BenchArgs(models=tuple(ns.models), prompt=ns.prompt, runs=ns.runs, options=options, host=ns.host)


_BUILDERS: dict[str, Any] = {
    "pull": lambda ns: PullArgs(model=ns.model, insecure=ns.insecure, host=ns.host),
    "list": lambda ns: ModelArgs(host=ns.host),
    "show": lambda ns: ShowArgs(model=ns.model, field=ns.field, verbose=ns.verbose, host=ns.host),
    "ps": lambda ns: PsArgs(watch=ns.watch, interval=max(0.2, ns.interval), host=ns.host),
    "stop": lambda ns: ModelArgs(models=tuple(ns.models), host=ns.host),
    "rm": lambda ns: ModelArgs(models=tuple(ns.models), host=ns.host),
    "serve": lambda ns: ServeArgs(action=ns.action, host=ns.host, port=ns.port, log=ns.log),
    "timings": lambda ns: TimingsArgs(plot=ns.plot, clear=ns.clear, last=ns.last),
    "bench": _bench,
    "chat": _chat,
    "generate": _chat,
}
