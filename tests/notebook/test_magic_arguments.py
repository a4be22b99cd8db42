"""The magics' flags through IPython's ``magic_arguments``: help, usage errors, and every flag as before (fast)."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from typing import Any

import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell
from IPython.utils.capture import capture_output

from nbllm.notebook import load_ipython_extension, unload_ipython_extension
from nbllm.notebook.bench_args import BenchArgs
from nbllm.notebook.display import Note
from nbllm.notebook.magic_args import (
    ChatArgs,
    ModelArgs,
    PsArgs,
    PullArgs,
    ServeArgs,
    ShowArgs,
    ShowHelp,
    ThreadsArgs,
    TimingsArgs,
    parse_line,
)
from nbllm.notebook.magics import NbllmMagics
from nbllm.notebook.session import NotebookSession

LINE = {"pull", "list", "show", "ps", "stop", "rm", "serve", "timings", "threads", "bench"}
METHOD = {"list": "list_models"}
INTO: dict[str, type[Any]] = {
    "pull": PullArgs,
    "list": ModelArgs,
    "show": ShowArgs,
    "ps": PsArgs,
    "stop": ModelArgs,
    "rm": ModelArgs,
    "serve": ServeArgs,
    "timings": TimingsArgs,
    "threads": ThreadsArgs,
    "bench": BenchArgs,
    "chat": ChatArgs,
    "generate": ChatArgs,
}

# Every magic's flags (and positionals, by dest) as the hand-built parsers had them.
_CELL = {"model", "-m", "--model", "-s", "--system", "-o", "--option", "--format", "--think", "--keep-alive"}
_CELL |= {"--var", "--no-interp", "--no-stream", "-f", "--output-format", "--host", "-h", "--help"}
FLAGS = {
    "pull": {"model", "--insecure", "--host", "-h", "--help"},
    "list": {"--host", "-h", "--help"},
    "show": {"model", "--license", "--modelfile", "--parameters", "--system", "--template", "-v", "--verbose"}
    | {"--host", "-h", "--help"},
    "ps": {"--watch", "--interval", "--host", "-h", "--help"},
    "stop": {"models", "--host", "-h", "--help"},
    "rm": {"models", "--host", "-h", "--help"},
    "serve": {"action", "--host", "--port", "--log", "-h", "--help"},
    "timings": {"--plot", "--clear", "--last", "-h", "--help"},
    "threads": {"--delete", "-h", "--help"},
    "bench": {"models", "-p", "--prompt", "-n", "--runs", "--num-prompts", "-o", "--option", "--host", "-h", "--help"}
    | {"-c", "--concurrency", "--request-rate", "--burstiness", "--max-concurrency", "--endpoint", "--dataset"}
    | {"--dataset-path", "--input-len", "--output-len", "--prefix-len", "--num-prefixes", "--warmup", "--repeat"}
    | {"--seed", "--slo-ttft", "--slo-tpot", "--slo-e2el", "--api-key-env", "--timeout", "--label", "--out"}
    | {"--no-plots"},
    "chat": _CELL | {"--tools", "--tool-choice", "--thread", "--new", "--persist"},
    "generate": _CELL | {"--raw"},
}


def _method(name: str) -> Any:
    return getattr(NbllmMagics, METHOD.get(name, name))


def parse(name: str, line: str) -> Any:
    """``%name line`` parsed as the magic parses it, into its handler's dataclass."""
    return parse_line(_method(name), line, INTO[name])


@pytest.fixture
def loaded(shell: InteractiveShell) -> Iterator[NbllmMagics]:
    """The extension loaded with a session that is never asked for a backend."""
    magics = load_ipython_extension(shell, session=NotebookSession())
    yield magics
    unload_ipython_extension(shell)


@pytest.mark.parametrize("name", sorted(INTO))
def test_every_magic_keeps_its_flags(name: str) -> None:
    parser: argparse.ArgumentParser = _method(name).parser
    flags = {opt for action in parser._actions for opt in action.option_strings or [action.dest]}
    assert flags == FLAGS[name]


@pytest.mark.parametrize(
    ("name", "line", "expected"),
    [
        ("pull", "m --insecure --host h", PullArgs(model="m", insecure=True, host="h")),
        ("list", "--host local", ModelArgs(host="local")),
        ("show", "m --parameters -v", ShowArgs(model="m", field="parameters", verbose=True)),
        ("show", "m --license --system", ShowArgs(model="m", field="system")),  # the last field given
        ("ps", "--watch --interval 0.5", PsArgs(watch=True, interval=0.5)),
        ("stop", "a b", ModelArgs(models=("a", "b"))),
        ("rm", "a --host h", ModelArgs(models=("a",), host="h")),
        ("serve", "", ServeArgs()),
        ("serve", "status", ServeArgs(action="status")),
        ("serve", "--host 0.0.0.0 --port 0 --log s.log", ServeArgs(host="0.0.0.0", port=0, log="s.log")),
        ("timings", "--plot --last 2", TimingsArgs(plot=True, last=2)),
        ("timings", "--clear", TimingsArgs(clear=True)),
        (
            "bench",
            "a b -p 'Hi there' -n 2 -o temperature=0",
            BenchArgs(models=("a", "b"), prompt="Hi there", runs=2, options={"temperature": 0.0, "num_predict": 128}),
        ),
        ("bench", "a --runs 1", BenchArgs(models=("a",), runs=1, options={"num_predict": 128})),
        ("bench", "a --host h", BenchArgs(models=("a",), options={"num_predict": 128}, host="h", hosts=("h",))),
        (  # any serving flag: nbllm bench's benchmark, -n its prompts per run, -o its options, --host repeatable
            "bench",
            "a b -c 1,2 -c 4 -n 8 --output-len 16 -o temperature=0 --host h1 --host openai+h2 --out d --no-plots",
            BenchArgs(
                models=("a", "b"),
                hosts=("h1", "openai+h2"),
                serving={
                    "concurrency": ["1,2", "4"],
                    "output_len": 16,
                    "num_prompts": 8,
                    "option": {"temperature": 0.0},
                },
                out="d",
                plots=False,
            ),
        ),
        (
            "bench",
            "a --request-rate 0.5,inf --burstiness 0.5 --max-concurrency 4 --endpoint chat --dataset prefix"
            " --prefix-len 32 --num-prefixes 2 --input-len 8 --warmup 0 --repeat 2 --seed 7 --slo-ttft 500"
            " --slo-tpot 50 --slo-e2el 9000 --api-key-env K --timeout 30 --label L",
            BenchArgs(
                models=("a",),
                serving={
                    "request_rate": ["0.5,inf"],
                    "burstiness": 0.5,
                    "max_concurrency": 4,
                    "endpoint": "chat",
                    "dataset": "prefix",
                    "prefix_len": 32,
                    "num_prefixes": 2,
                    "input_len": 8,
                    "warmup": 0,
                    "repeat": 2,
                    "seed": 7,
                    "slo_ttft": 500.0,
                    "slo_tpot": 50.0,
                    "slo_e2el": 9000.0,
                    "api_key_env": "K",
                    "timeout": 30.0,
                    "label": "L",
                    "option": {},
                },
            ),
        ),
        (
            "bench",
            "a --dataset jsonl --dataset-path p.jsonl",
            BenchArgs(models=("a",), serving={"dataset": "jsonl", "dataset_path": "p.jsonl", "option": {}}),
        ),
        ("chat", "", ChatArgs()),
        ("chat", "m -m a --keep-alive 5m --var r", ChatArgs(models=("m", "a"), keep_alive="5m", var="r")),
        ("chat", "--no-interp --no-stream -f md", ChatArgs(interpolate=False, stream=False)),
        ("chat", "-f json", ChatArgs(output="json", format="json")),
        ("chat", "--think", ChatArgs(think=True)),
        ("chat", "--think qwen3", ChatArgs(models=("qwen3",), think=True)),  # a model after --think, as before
        ("chat", "qwen3 --think high", ChatArgs(models=("qwen3",), think="high")),
        ("chat", "--think=LOW qwen3", ChatArgs(models=("qwen3",), think="low")),
        ("chat", "--think false", ChatArgs(think=False)),
        ("chat", "--think true m", ChatArgs(models=("m",), think=True)),
        ("generate", "m --raw -s S --think medium", ChatArgs(models=("m",), raw=True, system="S", think="medium")),
    ],
)
def test_each_magic_parses_its_flags_into_its_handlers_dataclass(name: str, line: str, expected: Any) -> None:
    assert parse(name, line) == expected


@pytest.mark.parametrize(
    ("name", "line", "message"),
    [
        ("pull", "", "the following arguments are required: model\nusage: pull [-h] [--insecure] [--host HOST] model"),
        ("list", "extra", "unrecognized arguments: extra\nusage: list [-h] [--host HOST]"),
        ("ps", "--interval soon", "argument --interval: invalid float value: 'soon'\nusage: ps "),
        ("serve", "restart", "argument action: invalid choice: 'restart'"),
        ("timings", "--last", "argument --last: expected one argument"),
        ("bench", "a -n 0", "-n must be at least 1"),
        ("bench", "a -c 1 -p Hi", "--prompt is for the model comparison; the serving benchmark takes --dataset"),
        ("bench", "a --host h1 --host h2", "several --host need the serving benchmark (add -c 1)"),
        ("bench", "a --endpoint embed", "argument --endpoint: invalid choice: 'embed'"),
        ("generate", "--tools f", "unrecognized arguments: --tools\nusage: generate "),
        ("chat", "-f html", "argument -f/--output-format: invalid choice: 'html'"),
        ("chat", "-o temperature", "option 'temperature' is not key=value"),
        ("chat", "--think maybe m", "--think takes low, medium, high, true or false (or nothing), not 'maybe'"),
        ("chat", "-s 'unterminated", "cannot split the line: No closing quotation"),
    ],
)
def test_bad_flags_are_usage_errors_with_a_clear_message(name: str, line: str, message: str) -> None:
    with pytest.raises(UsageError) as info:
        parse(name, line)
    assert str(info.value).startswith(message)


def test_a_bad_flag_fails_the_cell_with_one_usage_line(shell: InteractiveShell, loaded: NbllmMagics) -> None:
    with capture_output():
        line = shell.run_cell("%pull --bogus m")
        cell = shell.run_cell("%%chat --think maybe m\nHi")
    assert isinstance(line.error_in_exec, UsageError)
    assert (
        str(line.error_in_exec) == "unrecognized arguments: --bogus\nusage: pull [-h] [--insecure] [--host HOST] model"
    )
    assert isinstance(cell.error_in_exec, UsageError) and "not 'maybe'" in str(cell.error_in_exec)


@pytest.mark.parametrize("name", sorted(INTO))
def test_question_mark_shows_the_generated_help_and_the_docstring(
    shell: InteractiveShell, loaded: NbllmMagics, name: str
) -> None:
    prefix = "%" if name in LINE else "%%"
    with capture_output() as cap:
        shell.run_line_magic("pinfo", f"{prefix}{name}")
    method = _method(name)
    assert f"usage: {name} [-h]" in cap.stdout
    docstring_first_line = method.__doc__.split("\n\n")[1]  # the usage, then the method's own docstring
    assert docstring_first_line in cap.stdout and docstring_first_line.endswith(".")
    for flag in FLAGS[name] - {"model", "models", "action"}:
        assert flag in cap.stdout


def test_dash_h_shows_the_help_instead_of_running(shell: InteractiveShell, loaded: NbllmMagics) -> None:
    with capture_output():
        help_note = shell.run_line_magic("bench", "-h")
        cell_help = shell.run_cell_magic("chat", "-h", "never sent")
    assert isinstance(help_note, Note) and help_note.plain.startswith("usage: bench [-h]")
    assert isinstance(cell_help, Note) and "--think [LEVEL]" in cell_help.plain
    with pytest.raises(ShowHelp, match="usage: rm"):
        parse("rm", "--help")
