"""Arguments of the magics: IPython's ``magic_arguments`` parsers, read into frozen dataclasses.

Each magic declares its flags on its method with ``@magic_arguments()`` and ``@argument`` (so
``%chat?`` shows the generated help); :func:`parse_line` parses a line with that parser and builds
the magic's dataclass (its ``from_namespace``), the typed value its handler receives. A bad line
raises IPython's ``UsageError`` (the message, then the usage); ``-h`` raises :class:`ShowHelp`.
"""

from __future__ import annotations

import argparse
import shlex
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar, cast

from IPython.core import magic_arguments as _ipython_args
from IPython.core.error import UsageError
from IPython.core.magic_arguments import ArgDecorator, MagicArgumentParser

from nbllm.errors import InvalidOption
from nbllm.options import parse_parameter

__all__ = [
    "THINK_LEVELS",
    "ArgumentDecorator",
    "ChatArgs",
    "ModelArgs",
    "PsArgs",
    "PullArgs",
    "ServeArgs",
    "ShowArgs",
    "ShowHelp",
    "ThreadsArgs",
    "TimingsArgs",
    "argument",
    "cell_arguments",
    "help_option",
    "host_option",
    "magic_arguments",
    "options_option",
    "parse_line",
    "parse_options",
    "parse_think",
    "show_field_options",
]

SHOW_FIELDS = ("license", "modelfile", "parameters", "system", "template")
THINK_LEVELS = ("low", "medium", "high")
"""``--think LEVEL``; ``true``/``false`` (any case) turn thinking on or off."""


F = TypeVar("F", bound=Callable[..., Any])


class ArgumentDecorator(Protocol):
    """What IPython's ``@magic_arguments()`` and ``@argument(...)`` are (IPython leaves them untyped)."""

    def __call__(self, fn: F, /) -> F: ...


def magic_arguments(name: str | None = None) -> ArgumentDecorator:
    """IPython's ``@magic_arguments`` (typed): builds the magic's parser and makes its help the docstring."""
    return cast(ArgumentDecorator, _ipython_args.magic_arguments(name))  # type: ignore[no-untyped-call]


def argument(*args: Any, **kwargs: Any) -> ArgumentDecorator:
    """IPython's ``@argument`` (typed): ``add_argument(*args, **kwargs)`` on the magic's parser."""
    return cast(ArgumentDecorator, _ipython_args.argument(*args, **kwargs))  # type: ignore[no-untyped-call]


class ShowHelp(Exception):
    """``-h``/``--help`` was given: ``text`` is the magic's help (the magics show it instead of running)."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text


class _HelpAction(argparse.Action):
    """``-h``: stop parsing with the help (argparse's own would print it and exit the kernel)."""

    def __call__(self, parser: argparse.ArgumentParser, *_args: Any, **_kwargs: Any) -> None:
        raise ShowHelp(parser.format_help())


class _HelpOption(ArgDecorator):
    """Adds ``-h/--help`` and argparse's plain help layout (``usage: NAME ...``, not IPython's reST)."""

    def add_to_parser(self, parser: argparse.ArgumentParser, group: Any) -> None:
        parser.formatter_class = argparse.HelpFormatter
        parser.add_argument("-h", "--help", action=_HelpAction, nargs=0, help="show this help")


help_option = cast(ArgumentDecorator, _HelpOption())
"""Decorator: ``-h/--help`` for a magic (put it right under ``@magic_arguments()``)."""
host_option = argument(
    "--host",
    default=None,
    help="server URL (Ollama or nbllm; openai+URL/v1), a profile of NbllmMagics.hosts, or 'local'",
)
"""Decorator: ``--host URL``."""
options_option = argument(
    "-o", "--option", dest="options", action="append", default=None, metavar="KEY=VALUE", help="a model option"
)
"""Decorator: ``-o key=value`` (repeatable)."""


def cell_arguments(kind: str) -> Callable[[F], F]:
    """Decorator: the flags of ``%%chat`` (``kind="chat"``) or ``%%generate``, in the order of their help."""
    common = [
        argument("model", nargs="?", default=None, help="the model (default: NbllmMagics.default_model)"),
        argument(
            "-m", "--model", dest="more_models", action="append", default=None, metavar="MODEL", help="compare models"
        ),
        argument("-s", "--system", default=None, help="system prompt"),
        options_option,
        argument("--format", default=None, help="'json' or the name of a variable holding a JSON schema"),
        argument(
            "--think",
            nargs="?",
            const=True,
            default=None,
            metavar="LEVEL",
            help="let a thinking model think (shown folded): bare, low, medium, high, or false",
        ),
        argument("--keep-alive", default=None, help="how long the model stays loaded (5m, 0, -1)"),
        argument("--var", default=None, help="also store the result in this variable"),
        argument("--no-interp", action="store_true", help="send {braces} exactly as written"),
        argument("--no-stream", action="store_true", help="show only the final answer"),
        argument(
            "-f",
            "--output-format",
            default="markdown",
            choices=("markdown", "md", "text", "json", "code"),
            help="show the answer as markdown (default), text, json (asks for JSON), or code (into a new cell below)",
        ),
        host_option,
    ]
    if kind == "chat":
        common += [
            argument("--tools", default="", help="comma-separated names of Python functions the model may call"),
            argument("--tool-choice", default=None, help="auto, none, required, or a function name"),
            argument("--thread", default="default", help="conversation to continue"),
            argument("--new", action="store_true", help="start the conversation afresh"),
            argument(
                "--persist",
                action="store_true",
                help="save the thread in NBLLM_HOME/threads after each answer; continue it from there (%%threads)",
            ),
        ]
    else:
        common.append(argument("--raw", action="store_true", help="no prompt template"))

    def decorate(fn: F) -> F:
        for deco in reversed(common):  # decorators apply bottom-up: the help lists them in this order
            fn = deco(fn)
        return fn

    return decorate


def show_field_options(fn: F) -> F:
    """Decorator: ``%show``'s ``--template``, ``--modelfile``, ... (one field each)."""
    for name in reversed(SHOW_FIELDS):
        fn = argument(f"--{name}", dest="field", action="store_const", const=name, help=f"show the {name}")(fn)
    return fn


class _FromNamespace(Protocol):
    @classmethod
    def from_namespace(cls, ns: argparse.Namespace) -> Any: ...


A = TypeVar("A", bound=_FromNamespace)


def parse_line(magic: Callable[..., Any], line: str, into: type[A]) -> A:
    """Parse ``line`` with the parser ``@magic_arguments`` put on ``magic``, into its dataclass ``into``.

    The line is split as a POSIX shell does (``-s 'Be brief.'`` is one word without its quotes);
    IPython's ``parse_argstring`` keeps the quotes.
    """
    parser: MagicArgumentParser = magic.parser  # type: ignore[attr-defined]
    try:
        words = shlex.split(line)
    except ValueError as exc:
        raise UsageError(f"cannot split the line: {exc}") from None
    try:
        ns = parser.parse_args(words)
    except UsageError as exc:  # MagicArgumentParser.error: the message; the usage says what is accepted
        raise UsageError(f"{exc}\n{parser.format_usage().strip()}") from None
    result: A = into.from_namespace(ns)
    return result


def parse_options(pairs: Sequence[str] | None) -> dict[str, Any]:
    """``-o key=value`` pairs as typed model options (a repeated key, such as ``stop``, collects a list).

    >>> parse_options(["temperature=0", "num_predict=20", "stop=a", "stop=b"])
    {'temperature': 0.0, 'num_predict': 20, 'stop': ('a', 'b')}
    """
    raw: dict[str, list[str]] = {}
    for pair in pairs or ():
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"option {pair!r} is not key=value")
        raw.setdefault(key.strip(), []).append(value)
    try:
        parsed = {key: parse_parameter(key, values) for key, values in raw.items()}
    except InvalidOption as exc:
        raise UsageError(str(exc)) from None
    return {k: v for k, v in parsed.items() if v is not None}


def parse_think(value: bool | str | None) -> bool | str | None:  # noqa: FBT001 (argparse's value)
    """``--think``'s value as the API's ``think``: True (bare), False, or a level.

    >>> parse_think(True), parse_think("false"), parse_think("High"), parse_think(None)
    (True, False, 'high', None)
    """
    if value is None or isinstance(value, bool):
        return value
    word = value.strip().lower()
    if word in ("true", "false"):
        return word == "true"
    if word in THINK_LEVELS:
        return word
    raise UsageError(f"--think takes low, medium, high, true or false (or nothing), not {value!r}")


@dataclass(frozen=True)
class ModelArgs:
    """``%stop MODEL``, ``%rm MODEL...``, ``%list`` (models may be empty)."""

    models: tuple[str, ...] = ()
    host: str | None = None

    @classmethod
    def from_namespace(cls, ns: argparse.Namespace) -> ModelArgs:
        """From the parsed line."""
        return cls(models=tuple(getattr(ns, "models", ())), host=ns.host)


@dataclass(frozen=True)
class PullArgs:
    """``%pull MODEL [--insecure]``."""

    model: str
    insecure: bool = False
    host: str | None = None

    @classmethod
    def from_namespace(cls, ns: argparse.Namespace) -> PullArgs:
        """From the parsed line."""
        return cls(model=ns.model, insecure=ns.insecure, host=ns.host)


@dataclass(frozen=True)
class ShowArgs:
    """``%show MODEL [--template|--modelfile|--parameters|--system|--license] [-v]``."""

    model: str
    field: str | None = None
    verbose: bool = False
    host: str | None = None

    @classmethod
    def from_namespace(cls, ns: argparse.Namespace) -> ShowArgs:
        """From the parsed line."""
        return cls(model=ns.model, field=ns.field, verbose=ns.verbose, host=ns.host)


@dataclass(frozen=True)
class PsArgs:
    """``%ps [--watch [--interval S]]``."""

    watch: bool = False
    interval: float = 1.0
    host: str | None = None

    @classmethod
    def from_namespace(cls, ns: argparse.Namespace) -> PsArgs:
        """From the parsed line (intervals under 0.2 s are raised to it)."""
        return cls(watch=ns.watch, interval=max(0.2, ns.interval), host=ns.host)


@dataclass(frozen=True)
class ServeArgs:
    """``%serve [--host H] [--port P] [--log FILE]``, ``%serve stop``, ``%serve status``."""

    action: str = "start"
    host: str | None = None
    port: int | None = None
    log: str | None = None

    @classmethod
    def from_namespace(cls, ns: argparse.Namespace) -> ServeArgs:
        """From the parsed line."""
        return cls(action=ns.action, host=ns.host, port=ns.port, log=ns.log)


@dataclass(frozen=True)
class TimingsArgs:
    """``%timings [--plot] [--clear] [--last N]``."""

    plot: bool = False
    clear: bool = False
    last: int | None = None

    @classmethod
    def from_namespace(cls, ns: argparse.Namespace) -> TimingsArgs:
        """From the parsed line."""
        return cls(plot=ns.plot, clear=ns.clear, last=ns.last)


@dataclass(frozen=True)
class ThreadsArgs:
    """``%threads [--delete NAME]``."""

    delete: str | None = None

    @classmethod
    def from_namespace(cls, ns: argparse.Namespace) -> ThreadsArgs:
        """From the parsed line."""
        return cls(delete=ns.delete)


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
    persist: bool = False
    """``--persist``: the thread is saved in ``NBLLM_HOME/threads`` and continued from there."""
    think: bool | str | None = None
    """``--think [LEVEL]``: the API's ``think`` (None: the model's default)."""
    raw: bool = False
    keep_alive: str | None = None
    var: str | None = None
    interpolate: bool = True
    stream: bool = True
    host: str | None = None
    output: str = "markdown"
    """``-f/--output-format``: markdown, text, json or code (see :mod:`nbllm.notebook.outputs`)."""

    @classmethod
    def from_namespace(cls, ns: argparse.Namespace) -> ChatArgs:
        """From the parsed line of ``%%chat`` or ``%%generate``."""
        output = "markdown" if ns.output_format == "md" else ns.output_format
        model, think = _model_and_think(ns.model, ns.think)
        models = tuple(m for m in [model, *(ns.more_models or ())] if m)
        if output != "markdown" and len(models) > 1:
            raise UsageError(f"-f {output} works with one model at a time")
        if getattr(ns, "persist", False) and len(models) > 1:
            raise UsageError("--persist works with one model at a time")
        return cls(
            models=models,
            output=output,
            system=ns.system,
            options=parse_options(ns.options),
            format=ns.format if ns.format is not None or output != "json" else "json",
            tools=tuple(t.strip() for t in getattr(ns, "tools", "").split(",") if t.strip()),
            tool_choice=getattr(ns, "tool_choice", None),
            thread=getattr(ns, "thread", "default"),
            new=getattr(ns, "new", False),
            persist=getattr(ns, "persist", False),
            think=think,
            raw=getattr(ns, "raw", False),
            keep_alive=ns.keep_alive,
            var=ns.var,
            interpolate=not ns.no_interp,
            stream=not ns.no_stream,
            host=ns.host,
        )


def _model_and_think(model: str | None, think: bool | str | None) -> tuple[str | None, bool | str | None]:  # noqa: FBT001
    """``--think MODEL`` (as before levels existed): argparse took the model as the level; give it back.

    >>> _model_and_think(None, "qwen3"), _model_and_think("m", "low"), _model_and_think(None, "False")
    (('qwen3', True), ('m', 'low'), (None, False))
    """
    if model is None and isinstance(think, str) and think.strip().lower() not in (*THINK_LEVELS, "true", "false"):
        return think, True
    return model, parse_think(think)
