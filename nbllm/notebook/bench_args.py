"""``%bench``'s flags: the model comparison (``-n RUNS --prompt TEXT``) and ``nbllm bench``'s serving flags.

Any serving flag (``-c``, ``--request-rate``, ``--dataset``, ``--out``, ...) turns ``%bench`` into the
serving benchmark (:func:`nbllm.notebook.bench.run_serving_bench`), with the names and meanings of
``nbllm bench``; there ``-n`` is the number of prompts per run and ``-o`` the requests' options.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from IPython.core.error import UsageError

from nbllm.notebook.magic_args import argument, parse_options

__all__ = ["DEFAULT_PROMPT", "SERVING_FLAGS", "BenchArgs", "bench_arguments"]

F = TypeVar("F", bound=Callable[..., Any])

DEFAULT_PROMPT = "Why is the sky blue?"
"""The model comparison's prompt unless ``--prompt`` is given."""

SERVING_FLAGS = (
    "concurrency",
    "request_rate",
    "burstiness",
    "max_concurrency",
    "endpoint",
    "dataset",
    "dataset_path",
    "input_len",
    "output_len",
    "prefix_len",
    "num_prefixes",
    "warmup",
    "repeat",
    "seed",
    "slo_ttft",
    "slo_tpot",
    "slo_e2el",
    "api_key_env",
    "timeout",
    "label",
)
"""Destinations of the flags passed on to :func:`nbllm.benchmark.flags.spec_from_flags` (unset: its default)."""

_SERVING = "serving benchmark (any of these runs nbllm bench's benchmark; -n is then the prompts per run)"


def _serving_arguments() -> list[Callable[[F], F]]:
    arg = argument
    return [
        arg("-c", "--concurrency", action="append", default=None, help="concurrency sweep, e.g. 1,2,4,8"),
        arg("--request-rate", action="append", default=None, help="request-rate sweep in requests/s, e.g. 0.5,1,inf"),
        arg("--burstiness", type=float, default=None, help="gamma shape of inter-arrival times (1: Poisson)"),
        arg("--max-concurrency", type=int, default=None, help="cap on requests in flight in a rate sweep"),
        arg("--endpoint", choices=("generate", "chat"), default=None, help="API to call (default generate)"),
        arg("--dataset", choices=("random", "prefix", "jsonl"), default=None, help="prompts (default random)"),
        arg("--dataset-path", default=None, help="JSONL file of prompts for --dataset jsonl"),
        arg("--input-len", type=int, default=None, help="prompt tokens (default 128)"),
        arg("--output-len", type=int, default=None, help="tokens to generate per request (default 64)"),
        arg("--prefix-len", type=int, default=None, help="tokens of the shared prompt (--dataset prefix)"),
        arg("--num-prefixes", type=int, default=None, help="distinct shared prompts (--dataset prefix)"),
        arg("--warmup", type=int, default=None, help="unmeasured requests per target and model (default 1)"),
        arg("--repeat", type=int, default=None, help="repetitions of each load point"),
        arg("--seed", type=int, default=None, help="seed of the prompts and arrival times"),
        arg("--slo-ttft", type=float, default=None, help="goodput: time to first token at most this many ms"),
        arg("--slo-tpot", type=float, default=None, help="goodput: time per output token at most this many ms"),
        arg("--slo-e2el", type=float, default=None, help="goodput: end-to-end latency at most this many ms"),
        arg("--api-key-env", default=None, help="variable with an OpenAI-compatible host's key (never shown)"),
        arg("--timeout", type=float, default=None, help="seconds a request may take before it counts as failed"),
        arg("--label", default=None, help="label of the results (vLLM JSON 'label')"),
        arg("--out", default=None, metavar="DIR", help="write CSVs, vLLM-layout JSON and PNG plots to DIR"),
        arg("--no-plots", action="store_true", help="no plots (shown or written)"),
    ]


def bench_arguments(fn: F) -> F:
    """Decorator: every flag of ``%bench``, in the order of its help."""
    common: list[Callable[[F], F]] = [
        argument("models", nargs="+"),
        argument("-p", "--prompt", default=None, help=f"the comparison's prompt (default {DEFAULT_PROMPT!r})"),
        argument(
            "-n",
            "--runs",
            "--num-prompts",
            type=int,
            default=None,
            help="runs per model (3), or prompts per serving run (16; nbllm bench's --num-prompts)",
        ),
        argument(
            "-o", "--option", dest="options", action="append", default=None, metavar="KEY=VALUE", help="a model option"
        ),
        argument(
            "--host",
            action="append",
            default=None,
            help="server URL (Ollama or nbllm, openai+URL/v1 for an OpenAI-compatible one), a profile of"
            " NbllmMagics.hosts, or 'local' (this kernel);"
            " repeat it to benchmark several servers",
        ),
        *_serving_arguments(),
    ]
    for deco in reversed(common):  # decorators apply bottom-up: the help lists them in this order
        fn = deco(fn)
    return fn


@dataclass(frozen=True)
class BenchArgs:
    """``%bench MODEL [MODEL...] [--prompt TEXT] [-n RUNS] [-o key=value...]``, or with serving flags."""

    models: tuple[str, ...]
    prompt: str = DEFAULT_PROMPT
    runs: int = 3
    options: dict[str, Any] = field(default_factory=dict)
    host: str | None = None
    hosts: tuple[str, ...] = ()
    """Every ``--host`` (the serving benchmark measures each; the comparison takes one)."""
    serving: dict[str, Any] | None = None
    """The serving flags given (``spec_from_flags``' names, ``num_prompts`` and ``option`` included);
    None: the model comparison."""
    out: str | None = None
    plots: bool = True

    @classmethod
    def from_namespace(cls, ns: argparse.Namespace) -> BenchArgs:
        """From the parsed line (the comparison's ``num_predict`` is 128 unless given: comparable, bounded runs)."""
        hosts = tuple(ns.host or ())
        given = {name: getattr(ns, name) for name in SERVING_FLAGS if getattr(ns, name) is not None}
        if ns.runs is not None and ns.runs < 1:
            raise UsageError("-n must be at least 1")
        options = parse_options(ns.options)
        if given or ns.out is not None or ns.no_plots:
            if ns.prompt is not None:
                raise UsageError("--prompt is for the model comparison; the serving benchmark takes --dataset")
            serving = {**given, "option": options}
            if ns.runs is not None:
                serving["num_prompts"] = ns.runs
            return cls(
                models=tuple(ns.models),
                hosts=hosts,
                serving=serving,
                out=ns.out,
                plots=not ns.no_plots,
            )
        if len(hosts) > 1:
            raise UsageError("several --host need the serving benchmark (add -c 1); the comparison takes one")
        options.setdefault("num_predict", 128)
        return cls(
            models=tuple(ns.models),
            prompt=ns.prompt if ns.prompt is not None else DEFAULT_PROMPT,
            runs=ns.runs if ns.runs is not None else 3,
            options=options,
            host=hosts[0] if hosts else None,
            hosts=hosts,
        )
