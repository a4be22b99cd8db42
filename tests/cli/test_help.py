"""Help pages read like Ollama's (cobra's) — the seed shows ``ollama run -h`` and the serve variables."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from tests.cli.support import nbllm

DOCS = Path(__file__).resolve().parents[2] / "docs" / "cli.md"

# `ollama run -h` as the seed shows it (v0.3.11), with nbllm in place of ollama.
SEED_RUN_HELP = """\
Run a model

Usage:
  nbllm run MODEL [PROMPT] [flags]

Flags:
      --format string      Response format (e.g. json)
  -h, --help               help for run
      --insecure           Use an insecure registry
      --keepalive string   Duration to keep a model loaded (e.g. 5m)
      --nowordwrap         Don't wrap words to the next line automatically
      --verbose            Show timings for response

Environment Variables:
      OLLAMA_HOST                IP Address for the nbllm server (default 127.0.0.1:11434)
      OLLAMA_NOHISTORY           Do not preserve readline history
"""

# The variables of `ollama serve --help` in the seed, in its order.
SEED_SERVE_ENV = [
    ("OLLAMA_DEBUG", "Show additional debug information (e.g. OLLAMA_DEBUG=1)"),
    ("OLLAMA_HOST", "IP Address for the nbllm server (default 127.0.0.1:11434)"),
    ("OLLAMA_KEEP_ALIVE", 'The duration that models stay loaded in memory (default "5m")'),
    ("OLLAMA_MAX_LOADED_MODELS", "Maximum number of loaded models per GPU"),
    ("OLLAMA_MAX_QUEUE", "Maximum number of queued requests"),
    ("OLLAMA_MODELS", "The path to the models directory"),
    ("OLLAMA_NUM_PARALLEL", "Maximum number of parallel requests"),
    ("OLLAMA_NOPRUNE", "Do not prune model blobs on startup"),
    ("OLLAMA_ORIGINS", "A comma separated list of allowed origins"),
    ("OLLAMA_SCHED_SPREAD", "Always schedule model across all GPUs"),
    ("OLLAMA_TMPDIR", "Location for temporary files"),
    ("OLLAMA_FLASH_ATTENTION", "Enabled flash attention"),
    ("OLLAMA_LLM_LIBRARY", "Set LLM library to bypass autodetection"),
    ("OLLAMA_GPU_OVERHEAD", "Reserve a portion of VRAM per GPU (bytes)"),
    ("OLLAMA_LOAD_TIMEOUT", 'How long to allow model loads to stall before giving up (default "5m")'),
]


def _squeeze(text: str) -> list[str]:
    return [re.sub(r" {2,}", "  ", line) for line in text.splitlines()]


def test_run_help_is_the_seeds_page() -> None:
    result = nbllm("run", "-h")
    assert result.returncode == 0
    page = result.stdout
    # Same page, line for line; nbllm's two newer flags (--think, --hidethinking) widen the flag column.
    ours = [line for line in _squeeze(page) if "--think" not in line and "--hidethinking" not in line]
    assert ours == _squeeze(SEED_RUN_HELP)
    # the environment block is byte for byte the seed's
    assert page.endswith(SEED_RUN_HELP[SEED_RUN_HELP.index("\nEnvironment Variables:") :])
    # pflag alignment: descriptions start three columns after the longest flag
    flags = page.split("Flags:\n")[1].split("\n\n")[0].splitlines()
    starts = {len(line) - len(line.split("   ")[-1].lstrip()) for line in flags}
    assert len(starts) == 1, flags


def test_serve_help_lists_the_seeds_variables() -> None:
    page = nbllm("serve", "--help").stdout
    assert page.startswith("Start nbllm\n\nUsage:\n  nbllm serve [flags]\n\nAliases:\n  serve, start\n")
    block = page.split("Environment Variables:\n")[1].splitlines()
    listed = [(line[6:30].strip(), line[33:]) for line in block]
    assert [pair for pair in listed if pair in SEED_SERVE_ENV] == SEED_SERVE_ENV
    for line in block:
        assert re.match(r"^ {6}[A-Z_]{1,24} +\S", line) and line[30:33] == "   ", line


def test_root_help_lists_commands_in_ollamas_order() -> None:
    result = nbllm("--help")
    assert result.returncode == 0 and result.stdout == nbllm().stdout == nbllm("help").stdout
    commands = re.findall(r"^  ([a-z]+) +\S", result.stdout.split("Available Commands:\n")[1].split("\n\n")[0], re.M)
    expected = ["serve", "create", "show", "run", "stop", "pull", "push", "list", "ps", "cp", "rm", "help"]
    assert [c for c in commands if c in expected] == [c for c in expected if c in commands]
    assert {"serve", "show", "run", "stop", "pull", "list", "ps", "cp", "rm", "help"} <= set(commands)
    assert "ls" not in commands and "start" not in commands  # aliases, shown on their command's page
    assert '\nUse "nbllm [command] --help" for more information about a command.\n' in result.stdout
    assert nbllm("ls", "-h").stdout == nbllm("list", "-h").stdout == nbllm("help", "list").stdout
    assert "Aliases:\n  list, ls\n" in nbllm("ls", "-h").stdout


def test_version() -> None:
    assert re.fullmatch(r"nbllm version is \d+\.\d+\.\d+\S*\n", nbllm("-v").stdout)


def test_docs_show_the_current_help() -> None:
    """docs/cli.md quotes the help pages; this keeps them in step with the code."""
    text = DOCS.read_text()
    quoted = re.findall(r"```console\n\$ nbllm (.+?)\n(.*?)```", text, re.S)
    assert {args for args, _ in quoted} >= {"--help", "run --help", "serve --help", "ps --help", "show --help"}
    for args, body in quoted:
        if args.endswith(("--help", "-h")) or args == "help":
            assert nbllm(*args.split()).stdout == body, f"docs/cli.md is stale for `nbllm {args}`"


def test_help_stays_light() -> None:
    """``nbllm --help`` loads no client, server, engine or line editor (R19: heavy imports inside commands)."""
    code = (
        "import sys, nbllm.cli.main; from nbllm.cli import cli\n"
        "heavy = ('httpx', 'pydantic', 'uvicorn', 'fastapi', 'llama_cpp', 'prompt_toolkit', 'nbllm.runtime')\n"
        "print(sorted(m for m in heavy if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout == "[]\n"
