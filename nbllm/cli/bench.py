"""``nbllm bench MODEL...``: a serving benchmark (as ``vllm bench serve``) against Ollama-API or OpenAI hosts."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any

import click

from nbllm.cli.main import cli

if TYPE_CHECKING:
    from nbllm.benchmark import BenchResult, BenchSpec
    from nbllm.config import Settings

__all__ = ["bench"]

_HOST_HELP = (
    "Backend: http://host:11434 (Ollama API), openai+http://host:8000/v1, a profile name of "
    "NBLLM_HOME/hosts.ini (else a bare word is an Ollama host name), or local (this process, no HTTP); "
    "repeat to compare (default OLLAMA_HOST)"
)


_OUTPUT_FLAGS = ("out_dir", "no_plots", "no_progress", "as_json")


def _spec(models: tuple[str, ...], flags: dict[str, Any], settings: Settings) -> BenchSpec:
    from nbllm.backends import BackendError
    from nbllm.backends.profiles import load_profiles, resolve_host
    from nbllm.benchmark.flags import spec_from_flags

    given = {k: v for k, v in flags.items() if k not in (*_OUTPUT_FLAGS, "host")}
    hosts, given["key_envs"], given["names"] = [], {}, {}
    try:
        profiles = load_profiles(settings.home)
        for host in flags["host"] or (settings.host.url,):
            url, given["key_envs"][url] = resolve_host(host, profiles, api_key_env=flags["api_key_env"])
            hosts.append(url)
            if host.strip() in profiles:
                given["names"][url] = host.strip()
        return spec_from_flags(models, hosts, **given)
    except (ValueError, BackendError) as exc:
        raise click.UsageError(str(exc)) from None


def _no_profile_notes(hosts: tuple[str, ...], settings: Settings) -> dict[str, str]:
    from nbllm.backends.profiles import is_profile_name, load_profiles, no_profile_note
    from nbllm.config import parse_host

    words = [h for h in hosts if is_profile_name(h)]
    profiles = load_profiles(settings.home) if words else {}
    return {parse_host(w.strip()).url: note for w in words if (note := no_profile_note(w, profiles))}


def _run(spec: BenchSpec, progress: Any, settings: Settings) -> BenchResult:
    """Run the benchmark; ``--host local`` gets a runtime of this process (its models unloaded at the end)."""
    from nbllm.backends import LOCAL
    from nbllm.benchmark import run_benchmark
    from nbllm.runtime import Runtime

    if LOCAL not in spec.targets:
        return run_benchmark(spec, progress=progress, settings=settings)
    with Runtime.from_settings(settings) as runtime:
        return run_benchmark(spec, progress=progress, settings=settings, runtime=runtime)


@cli.command(use="bench MODEL [MODEL...]", env=("OLLAMA_HOST",))
@click.argument("models", nargs=-1, required=True)
@click.option("--host", multiple=True, help=_HOST_HELP)
@click.option(
    "--endpoint",
    type=click.Choice(["generate", "chat"]),
    default="generate",
    help="API to call: generate (/api/generate, /v1/completions) or chat",
)
@click.option(
    "--dataset",
    type=click.Choice(["random", "prefix", "jsonl"]),
    default="random",
    help="Prompts: random text, prefix (a shared system prompt, to show prefix caching) or jsonl",
)
@click.option(
    "--dataset-path",
    default=None,
    help='JSONL file for --dataset jsonl: {"prompt": ..., "system": ..., "output_len": ...} a line',
)
@click.option("-n", "--num-prompts", type=int, default=16, help="Requests per run")
@click.option(
    "--input-len",
    type=int,
    default=128,
    help="Prompt tokens (random) or per-request suffix tokens (prefix), sized with the server's tokenizer",
)
@click.option(
    "--output-len",
    type=int,
    default=64,
    help="Tokens to generate per request (num_predict / max_tokens)",
)
@click.option(
    "--prefix-len",
    type=int,
    default=256,
    help="Tokens of the shared system prompt (--dataset prefix)",
)
@click.option(
    "--num-prefixes",
    type=int,
    default=1,
    help="Distinct shared prompts, used round-robin (--dataset prefix)",
)
@click.option(
    "-c",
    "--concurrency",
    multiple=True,
    help="Concurrency sweep, e.g. 1,2,4,8: all prompts at once, this many in flight (default 1)",
)
@click.option(
    "--request-rate",
    multiple=True,
    help="Request-rate sweep in requests/s, e.g. 0.5,1,inf: Poisson arrivals unless --burstiness",
)
@click.option(
    "--burstiness",
    type=float,
    default=1.0,
    help="Gamma shape of inter-arrival times: 1 Poisson, <1 burstier, >1 more even",
)
@click.option(
    "--max-concurrency",
    type=int,
    default=None,
    help="Cap on requests in flight during the rate sweep",
)
@click.option("--warmup", type=int, default=1, help="Unmeasured requests per target and model before measuring")
@click.option("--repeat", type=int, default=1, help="Repetitions of each load point")
@click.option("--seed", type=int, default=0, help="Seed of the prompts and arrival times")
@click.option(
    "--slo-ttft", type=float, default=None, help="Goodput objective: time to first token at most this many ms"
)
@click.option(
    "--slo-tpot", type=float, default=None, help="Goodput objective: time per output token at most this many ms"
)
@click.option("--slo-e2el", type=float, default=None, help="Goodput objective: end-to-end latency at most this many ms")
@click.option(
    "-o",
    "--option",
    multiple=True,
    help="Model option key=value (Ollama options / OpenAI body), e.g. temperature=0; repeatable",
)
@click.option(
    "--api-key-env",
    default="OPENAI_API_KEY",
    help="Environment variable holding an OpenAI-compatible backend's API key (never printed)",
)
@click.option(
    "--timeout",
    type=float,
    default=600.0,
    help="Seconds a request may take before it counts as failed",
)
@click.option("--label", default=None, help="Label of the results (vLLM JSON 'label'; default the backend type)")
@click.option(
    "--out",
    "out_dir",
    default=None,
    help="Directory for requests.csv, runs.csv, one vLLM-layout JSON per run and PNG plots",
)
@click.option("--no-plots", is_flag=True, help="With --out, skip the PNG plots")
@click.option("--no-progress", is_flag=True, help="Hide the progress bar")
@click.option(
    "--json", "as_json", is_flag=True, help="Print the runs as JSON (vLLM's layout, without per-request lists)"
)
def bench(models: tuple[str, ...], **flags: Any) -> None:
    """Benchmark serving: TTFT, TPOT, ITL, latency, throughput and goodput under load."""
    from tqdm import tqdm

    from nbllm.backends import BackendError
    from nbllm.config import Settings

    settings = Settings.from_env()
    spec = _spec(models, flags, settings)
    progress = None if flags["no_progress"] else (lambda total: tqdm(total=total, unit="req", file=sys.stderr))
    try:
        result = _run(spec, progress, settings)
    except BackendError as exc:  # a --host word no profile has was read as a host name: say so
        notes = _no_profile_notes(flags["host"], settings)
        raise BackendError(" ".join([exc.message, *(n for url, n in notes.items() if url in exc.message)])) from None
    if flags["out_dir"]:
        paths = result.save(flags["out_dir"], with_plots=not flags["no_plots"])
        click.echo(f"wrote {len(paths)} files to {flags['out_dir']}", err=True)
    if flags["as_json"]:
        detail = ("input_lens", "output_lens", "ttfts", "itls", "latencies", "start_times", "generated_texts")
        runs = [{k: v for k, v in run.items() if k not in detail} for run in result.vllm_json()]
        click.echo(json.dumps(runs, indent=2))
    else:
        click.echo(result.summary_text())
    if result.interrupted:
        click.echo("interrupted: the table shows the requests measured before Ctrl-C", err=True)
        raise click.exceptions.Exit(130)
